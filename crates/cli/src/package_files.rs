//! The files the Debian package ships beside the binary, generated from the command line's own
//! definition so they cannot drift from it: a man page per command, shell completions, and
//! the spec's JSON Schema. Written by the hidden `nftbalance package-files DIR`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Command;
use clap_complete::Shell;

/// Man pages go in section 8: nftbalance changes the system's firewall and routing.
const MAN_SECTION: &str = "8";

/// What nftbalance(8) says beyond the command line (roff, after clap's sections).
const MAIN_PAGE_END: &str = r#".SH "EXIT STATUS"
0 when the command did what it was asked; 1 when a check found a difference
(\fBdiff\fR); 2 on an error (bad input, a kernel refusal), with nothing applied.
.SH FILES
.TP
.I /etc/nftbalance/spec.json
The spec the packaged services use. Examples are in
.IR /usr/share/doc/nftbalance/examples/ .
.TP
.I /usr/share/nftbalance/spec.schema.json
The spec's JSON Schema, for editors (the output of \fBnftbalance schema\fR).
.TP
.I /run/nftbalance/
The journal of an apply under way and the state file of \fBwatch\fR.
.TP
.I /usr/lib/systemd/system/nftbalance.service
Applies the spec at boot; \fInftbalance\-watch.service\fR runs \fBwatch\fR.
Neither is enabled when the package is installed.
.SH ENVIRONMENT
.TP
.B RUST_LOG
How much is logged to standard error: warn (the default), info or debug.
.SH "SEE ALSO"
.BR nft (8),
.BR ip\-rule (8),
.BR conntrack (8),
.BR systemctl (1)
"#;

/// Writes `man/*.8`, `completions/{bash,zsh,fish}/...` and `nftbalance.schema.json` under
/// `dir`; returns the files written.
pub fn write(cmd: Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    man_pages(&cmd, &dir.join("man"), &mut written)?;
    let mut visible = without_hidden(&cmd);
    for (shell, file) in [
        (Shell::Bash, "bash/nftbalance"),
        (Shell::Zsh, "zsh/_nftbalance"),
        (Shell::Fish, "fish/nftbalance.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut visible, "nftbalance", &mut text);
        write_file(&dir.join("completions").join(file), &text, &mut written)?;
    }
    let mut schema = serde_json::to_string_pretty(&nftbalance_spec::json_schema())?;
    schema.push('\n');
    write_file(
        &dir.join("nftbalance.schema.json"),
        schema.as_bytes(),
        &mut written,
    )?;
    Ok(written)
}

/// `nftbalance.8`, then `nftbalance-SUBCOMMAND.8` for every visible subcommand, nested ones
/// too (`nftbalance-a-b.8`).
fn man_pages(cmd: &Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(MAN_SECTION)
        .manual("System Manager's Manual")
        .source(format!("nftbalance {}", env!("CARGO_PKG_VERSION")));
    let mut text = Vec::new();
    man.render(&mut text)?;
    text.extend_from_slice(if cmd.get_name() == "nftbalance" {
        MAIN_PAGE_END.as_bytes()
    } else {
        b".SH \"SEE ALSO\"\n.BR nftbalance (8)\n"
    });
    write_file(&dir.join(man.get_filename()), &text, written)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, written)?;
    }
    Ok(())
}

/// The command without its hidden subcommands, which clap_complete would offer (the top level
/// has no arguments of its own beyond --help and --version).
fn without_hidden(cmd: &Command) -> Command {
    Command::new("nftbalance")
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_subcommand(true)
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

fn write_file(path: &Path, bytes: &[u8], written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    written.push(path.to_path_buf());
    Ok(())
}
