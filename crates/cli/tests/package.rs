//! The Debian package, built by `packaging/build-deb.sh` (what `make deb` runs) around this
//! test build's binary: its contents, its control fields, lintian's verdict, the packaged
//! binary running, and every man page rendering without a groff warning. Needs cargo-deb,
//! lintian and man-db (`make test` installs them); fails, never skips, without them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use nftbalance_testns::repo_root;

/// Files the package must hold (paths in the package, without the leading '/').
const EXPECTED: &[&str] = &[
    "usr/sbin/nftbalance",
    "usr/share/man/man8/nftbalance.8.gz",
    "usr/share/bash-completion/completions/nftbalance",
    "usr/share/zsh/vendor-completions/_nftbalance",
    "usr/share/fish/vendor_completions.d/nftbalance.fish",
    "usr/lib/systemd/system/nftbalance.service",
    "usr/lib/systemd/system/nftbalance-watch.service",
    "usr/share/doc/nftbalance/examples/two-uplinks.json",
    "usr/share/doc/nftbalance/examples/policies-and-health.json",
    "usr/share/doc/nftbalance/copyright",
    "usr/share/doc/nftbalance/changelog.Debian.gz",
    "usr/share/nftbalance/spec.schema.json",
    "etc/nftbalance/README",
];

struct Built {
    dir: PathBuf,
    deb: PathBuf,
    /// The package unpacked (`dpkg-deb -x`).
    root: PathBuf,
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{shown}: {e} (make test installs what the package tests need)")
    });
    assert!(
        out.status.success(),
        "{shown}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Builds the package once for all tests here, in a directory of this process's own.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("release")).unwrap();
        std::fs::copy(
            env!("CARGO_BIN_EXE_nftbalance"),
            dir.join("release/nftbalance"),
        )
        .unwrap();
        let deb = dir.join("nftbalance.deb");
        // --fast: lighter compression; what is packed is the same as `make deb`'s.
        run(Command::new(repo_root().join("packaging/build-deb.sh"))
            .arg(&dir)
            .arg(&deb)
            .arg("--fast")
            .current_dir(repo_root()));
        let root = dir.join("root");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
        Built { dir, deb, root }
    })
}

#[test]
fn package_holds_the_binary_man_pages_completions_units_and_examples() {
    let b = built();
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&b.deb)).stdout);
    let files: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches("./"))
        .collect();
    let missing: Vec<&&str> = EXPECTED.iter().filter(|e| !files.contains(e)).collect();
    assert!(missing.is_empty(), "missing {missing:?} in:\n{listing}");
    // One man page per visible subcommand of this very binary.
    let help = text(&run(Command::new(env!("CARGO_BIN_EXE_nftbalance")).arg("--help")).stdout);
    let subcommands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(subcommands.len() >= 9, "{help}");
    let bash = std::fs::read_to_string(b.root.join(EXPECTED[2])).unwrap();
    for sub in &subcommands {
        let page = format!("usr/share/man/man8/nftbalance-{sub}.8.gz");
        assert!(files.contains(&page.as_str()), "no {page} in:\n{listing}");
        assert!(
            bash.contains(&format!(" {sub}")),
            "bash does not complete {sub}"
        );
    }
    assert!(
        !bash.contains("package-files"),
        "a hidden command is completed"
    );
    let conffiles = b.dir.join("control");
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&b.deb)
        .arg(&conffiles));
    assert_eq!(
        std::fs::read_to_string(conffiles.join("conffiles")).unwrap(),
        "/etc/nftbalance/README\n"
    );
}

#[test]
fn control_fields_name_section_priority_and_the_libraries_linked() {
    let b = built();
    let field = |name: &str| {
        text(&run(Command::new("dpkg-deb").arg("-f").arg(&b.deb).arg(name)).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), "nftbalance");
    assert_eq!(field("Section"), "net");
    assert_eq!(field("Priority"), "optional");
    assert!(field("Maintainer").contains('@'));
    let depends = field("Depends");
    for lib in ["libnftnl11", "libmnl0", "libc6"] {
        assert!(depends.contains(lib), "Depends: {depends}");
    }
}

#[test]
fn packaged_binary_runs() {
    let b = built();
    let out = run(Command::new(b.root.join("usr/sbin/nftbalance")).arg("--version"));
    assert_eq!(
        text(&out.stdout),
        format!("nftbalance {}\n", env!("CARGO_PKG_VERSION"))
    );
    // The packaged schema is the binary's.
    let schema = run(Command::new(b.root.join("usr/sbin/nftbalance")).arg("schema"));
    assert_eq!(
        text(&schema.stdout),
        std::fs::read_to_string(b.root.join("usr/share/nftbalance/spec.schema.json")).unwrap()
    );
}

#[test]
fn lintian_finds_no_errors_or_warnings() {
    let b = built();
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
        .arg(&b.deb)
        .output()
        .expect("lintian (make test installs it)");
    let report = text(&out.stdout);
    assert!(
        out.status.success()
            && !report
                .lines()
                .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian: {}\n{report}{}",
        out.status,
        text(&out.stderr)
    );
}

/// Man's output without its overstrikes ("N\x08N" is a bold N).
fn plain(shown: &str) -> String {
    let mut out = String::new();
    for c in shown.chars() {
        if c == '\x08' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn man_pages_render_without_warnings() {
    let b = built();
    let dir = b.root.join("usr/share/man/man8");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    assert!(pages.len() >= 10, "{pages:?}");
    for page in pages {
        let out = run(Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat"));
        let shown = plain(&text(&out.stdout));
        let name = page.file_name().unwrap().to_string_lossy();
        let command = name.trim_end_matches(".8.gz");
        assert!(
            shown.contains("NAME") && shown.contains(command),
            "{name}:\n{shown}"
        );
        assert!(shown.contains("SYNOPSIS"), "{name}:\n{shown}");
        assert!(out.stderr.is_empty(), "{name}: {}", text(&out.stderr));
    }
}

#[test]
fn units_pass_systemd_analyze() {
    let b = built();
    for unit in ["nftbalance.service", "nftbalance-watch.service"] {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(b.root.join("usr/lib/systemd/system").join(unit))
            .output()
            .expect("systemd-analyze");
        let says = text(&out.stderr);
        // Only what is said of our units counts; the binary is not installed on the host.
        let ours: Vec<&str> = says
            .lines()
            .filter(|l| l.contains("nftbalance"))
            .filter(|l| !l.contains("Command /usr/sbin/nftbalance is not executable"))
            .collect();
        assert!(ours.is_empty(), "{unit}: {says}");
    }
}
