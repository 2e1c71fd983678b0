//! `nftbalance translate --from mwan3`: an OpenWrt `/etc/config/mwan3` (UCI) read as a
//! balancer spec, with a report of what became of every section and option.
//!
//! Pure: reads only the text and the `--define` items it is given; the spec is built as typed
//! values and checked by the spec crate's own parser before it is returned.

mod interfaces;
mod names;
pub mod network;
mod policies;
pub mod report;
mod rules;
pub mod uci;

use nftbalance_spec::{Balance, Family, Method, Spec, Watch, DEFAULT_HASH_SEED, DEFAULT_TABLE};

pub use network::Network;
pub use report::{Entry, Report, What};
pub use uci::{Loc, UciError};

use crate::report::{section_text, value_text};
use crate::uci::{show, Config, Section, UciOption, Value};

/// mwan3's mark mask when `globals.mmx_mask` is not set.
pub const MWAN3_DEFAULT_MASK: u32 = 0x3f00;

/// Why an import stopped (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mwan3Error {
    /// The file is not UCI text.
    #[error(transparent)]
    Uci(#[from] UciError),
    /// A `--define` item is malformed.
    #[error("--define {item}: {message}")]
    Define { item: String, message: String },
    /// Values mwan3 could not use as written, each with its place.
    #[error("{}", join_errors(.0))]
    Invalid(Vec<UciError>),
    /// The spec built is refused by the spec's parser: a bug of the importer.
    #[error("the imported spec is not valid (an importer bug; please report it):\n{0}")]
    Spec(String),
}

fn join_errors(errors: &[UciError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    lines.join("\n")
}

/// A spec and the report of how it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub spec: Spec,
    pub report: Report,
}

/// Reads `text` (the file `file`) and builds the spec, with `net` for the network side.
pub fn import(file: &str, text: &str, net: &Network) -> Result<Import, Mwan3Error> {
    let config = uci::parse(file, text)?;
    let mut cx = Cx {
        file,
        net,
        report: Report::new(file),
        errors: Vec::new(),
    };
    packages(&mut cx, &config);
    let mark_mask = globals(&mut cx, &config);
    let gateways = interfaces::interfaces(&mut cx, &config, mark_mask);
    for name in net.ifaces.keys() {
        if !interfaces::declared(&config, name) && !rules::src_iface_named(&config, name) {
            cx.errors.push(UciError {
                loc: Loc {
                    file: file.into(),
                    line: 1,
                },
                message: format!(
                    "--define names {}, which is neither an interface nor a rule's src_iface \
                     in the file",
                    show(name)
                ),
            });
        }
    }
    if gateways.list.is_empty() {
        let line = (config.sections.iter().rev())
            .find(|s| s.kind == "interface")
            .map_or(1, |s| s.line);
        cx.err(
            line,
            "no enabled interface (mwan3's default for enabled is 0): nftbalance needs at \
             least one gateway"
                .into(),
        );
    }
    let members = policies::members(&mut cx, &config, &gateways);
    let policies = policies::policies(&mut cx, &config, &members, &gateways);
    let balance = rules::rules(&mut cx, &config, &policies);
    if !cx.errors.is_empty() {
        cx.errors.sort_by(|a, b| a.loc.cmp(&b.loc));
        return Err(Mwan3Error::Invalid(cx.errors));
    }
    let spec = Spec {
        table: DEFAULT_TABLE.into(),
        family: Family::Inet,
        mark_mask,
        gateways: gateways.list.into_iter().map(|g| g.gateway).collect(),
        balance,
        snat: true,
        watch: Watch::default(),
        policies: policies.into_spec(),
        hooks: None,
        ha: None,
    };
    let spec = validated(spec)?;
    cx.report.note(
        "mwan3 leaves destinations in connected networks alone (its mwan3_connected set, \
         read at run time); give yours with --define exclude=PREFIX[,PREFIX]"
            .into(),
    );
    cx.report.finish(&config);
    Ok(Import {
        spec,
        report: cx.report,
    })
}

/// The spec crate's parser is the judge: the spec must read back as itself.
fn validated(spec: Spec) -> Result<Spec, Mwan3Error> {
    let json = serde_json::to_string(&spec).map_err(|e| Mwan3Error::Spec(e.to_string()))?;
    match Spec::from_json(&json) {
        Ok(back) if back == spec => Ok(spec),
        Ok(_) => Err(Mwan3Error::Spec(
            "the spec reads back different from what was built".into(),
        )),
        Err(e) => Err(Mwan3Error::Spec(e.to_string())),
    }
}

/// Mapping state: the report so far and the errors found.
pub(crate) struct Cx<'a> {
    pub file: &'a str,
    pub net: &'a Network,
    pub report: Report,
    pub errors: Vec<UciError>,
}

impl Cx<'_> {
    pub fn err(&mut self, line: usize, message: String) {
        self.errors.push(UciError {
            loc: Loc {
                file: self.file.into(),
                line,
            },
            message,
        });
    }

    /// Reports every value of `o`.
    pub fn at(&mut self, s: &Section, o: &UciOption, what: What) {
        for v in &o.values {
            self.value(s, o, v, what.clone());
        }
    }

    pub fn value(&mut self, s: &Section, o: &UciOption, v: &Value, what: What) {
        self.report
            .add(v.line, value_text(s, &o.name, o.list, &v.text), what);
    }

    pub fn section(&mut self, s: &Section, what: What) {
        self.report.add(s.line, section_text(s), what);
    }

    /// The section and every one of its values.
    pub fn whole(&mut self, s: &Section, what: What) {
        self.section(s, what.clone());
        for o in &s.options {
            self.at(s, o, what.clone());
        }
    }

    /// Options of `s` not in `known`: reported as unknown to mwan3.
    pub fn unknown(&mut self, s: &Section, known: &[&str]) {
        for o in &s.options {
            if !known.contains(&o.name.as_str()) {
                let why = format!(
                    "{} is not an option mwan3 reads in a {} section",
                    o.name, s.kind
                );
                self.at(s, o, What::Ignored(why));
            }
        }
    }

    /// A single-valued option's text, `None` when unset or empty (mwan3's shell helpers
    /// treat an empty value as unset). A `list` where mwan3 reads one value is an error.
    pub fn single<'s>(&mut self, s: &'s Section, name: &str) -> Option<(&'s UciOption, &'s str)> {
        let o = s.option(name)?;
        if o.list && o.values.len() > 1 {
            self.err(
                o.values[1].line,
                format!("{name}: mwan3 reads one value here, not a list"),
            );
            return None;
        }
        let v = o.value().text.as_str();
        if v.is_empty() {
            self.at(s, o, What::Ignored("empty: mwan3 uses its default".into()));
            return None;
        }
        Some((o, v))
    }

    /// A boolean as OpenWrt's config_get_bool reads it.
    pub fn boolean(&mut self, s: &Section, name: &str, default: bool) -> bool {
        let Some((o, v)) = self.single(s, name) else {
            return default;
        };
        match v {
            "1" | "on" | "true" | "yes" | "enabled" => true,
            "0" | "off" | "false" | "no" | "disabled" => false,
            _ => {
                self.err(
                    o.value().line,
                    format!("{name}: {} is not a boolean (use 0 or 1)", show(v)),
                );
                default
            }
        }
    }

    /// A whole number in `min..=max`, or `default` when unset.
    pub fn number(&mut self, s: &Section, name: &str, default: u32, min: u32, max: u32) -> u32 {
        let Some((o, v)) = self.single(s, name) else {
            return default;
        };
        match v.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.err(
                    o.value().line,
                    format!("{name}: {} is not a number from {min} to {max}", show(v)),
                );
                default
            }
        }
    }
}

fn packages(cx: &mut Cx<'_>, config: &Config) {
    for (line, name) in &config.packages {
        if name != "mwan3" {
            cx.err(
                *line,
                format!("package {}: this is not an mwan3 configuration", show(name)),
            );
        }
    }
}

/// `config globals`: the mark mask; everything else is reported.
fn globals(cx: &mut Cx<'_>, config: &Config) -> u32 {
    let mut mask = MWAN3_DEFAULT_MASK;
    for s in config.sections.iter().filter(|s| s.kind == "globals") {
        cx.section(s, What::Spec("global settings".into()));
        if let Some((o, v)) = cx.single(s, "mmx_mask") {
            match parse_mask(v) {
                Some(m) if m.count_ones() >= 3 => {
                    mask = m;
                    cx.at(s, o, What::Spec(format!("mark_mask = {m:#x}")));
                }
                _ => cx.err(
                    o.value().line,
                    format!(
                        "mmx_mask: {} is not a mask with at least 3 bits set (mwan3 needs 3)",
                        show(v)
                    ),
                ),
            }
        }
        let why: &[(&str, &str)] = &[
            ("local_source", "the source address of router-originated traffic is the routing table's choice in nftbalance (give gateway addresses with --define IFACE.address)"),
            ("logging", "mwan3 logs rule matches to syslog; nftbalance does not log per selector"),
            ("loglevel", "syslog level of mwan3's own logging"),
            ("rtmon_interval", "mwan3rtmon copies main-table routes into its tables; nftbalance writes each uplink's table itself"),
            ("rt_table_lookup", "extra routing tables mwan3 copies routes from; nftbalance writes each uplink's table itself"),
            ("source_routing", "nftbalance routes by mark and by source address (`ip rule from`) whenever a gateway has an address"),
        ];
        for (name, reason) in why {
            if let Some(o) = s.option(name) {
                cx.at(s, o, What::Ignored((*reason).into()));
            }
        }
        cx.unknown(
            s,
            &[
                "mmx_mask",
                "local_source",
                "logging",
                "loglevel",
                "rtmon_interval",
                "rt_table_lookup",
                "source_routing",
            ],
        );
    }
    mask
}

fn parse_mask(v: &str) -> Option<u32> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Spreads the bits of `id` over the bits set in `mask`, as mwan3's `mwan3_id2mask` does.
pub fn id2mask(id: u32, mask: u32) -> u32 {
    let mut out = 0;
    let mut bit = 0;
    for m in 0..32 {
        if mask >> m & 1 == 1 {
            if id >> bit & 1 == 1 {
                out |= 1 << m;
            }
            bit += 1;
        }
    }
    out
}

/// A balance with mwan3's split (random by weight) and no selectors yet.
pub(crate) fn empty_balance() -> Balance {
    Balance {
        method: Method::Random,
        forward: Vec::new(),
        local: Vec::new(),
        exclude: Vec::new(),
        sticky: None,
        hash_seed: DEFAULT_HASH_SEED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_spread_over_the_mask_as_mwan3_does() {
        assert_eq!(id2mask(1, 0x3f00), 0x100);
        assert_eq!(id2mask(5, 0xaa), 0x22);
        assert_eq!(id2mask(60, 0x3f00), 0x3c00);
    }
}
