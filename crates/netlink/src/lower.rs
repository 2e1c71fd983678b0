//! Lowering of the ruleset model ([`nftbalance_ruleset::Ruleset`]) to one netlink [`Batch`]:
//! the atomic replace of the tool's table, encoded message for message as nft 1.0.6 encodes
//! `nft -f` of the same ruleset's text (`nftbalance_ruleset::nft::render`).
//!
//! Batch order, as nft sends it: the table (create-if-missing, delete, create), every chain,
//! every named set/map followed by its elements, then the rules in chain order, each preceded
//! by the anonymous sets/maps it uses. Chains come before sets because verdict-map elements
//! name chains.
//!
//! What nft 1.0.6 does that this module reproduces (found with `nft --debug=netlink` and by
//! comparing the raw messages nft sends):
//!
//! * `inet` tables: an `ip`/`ip6` header field is preceded by `meta nfproto ipv4|ipv6` once
//!   per rule (not again after an earlier field or `meta nfproto` match of the same family);
//!   `tcp|udp dport` is preceded by `meta l4proto` (in every family).
//! * A prefix match on an address loads only the prefix bytes when the prefix length is a
//!   multiple of 8 (`ip saddr 192.168.9.0/24` is a 3-byte compare), else the whole address
//!   and a `bitwise` mask (`/15`, also `/0`).
//! * A port range is `cmp gte` + `cmp lte`.
//! * Anonymous maps keyed by `numgen`/`jhash`: with a range among the keys the map is an
//!   interval map with big-endian keys and a `byteorder hton` before the lookup; with single
//!   keys only it is a plain map with host-order keys and no `byteorder`.
//! * Interval elements: named sets keep every range's end
//!   element (also where the next range starts); anonymous sets merge adjacent ranges and
//!   anonymous maps drop an end element where the next range starts. A range that runs to the
//!   top of the key space has no end element and carries the element userdata
//!   `NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN`.
//! * Anonymous set sizes (`NFTA_SET_DESC_SIZE`): the element count, for interval sets the
//!   number of interval elements before adjacent end elements are dropped.
//! * An anonymous set with a single element is a plain compare.
//! * Set userdata: key byte order; for maps the data byte order (verdicts: 0, "invalid") and
//!   `DATA_INTERVAL = 0`; anonymous interval sets add `MERGE_ELEMENTS = 1`; anonymous sets
//!   keyed by a header field or `meta` key add its typeof (`tcp dport`: payload, tcp, dport);
//!   anonymous verdict maps add a verdict typeof for the data.
//!
//! `tests/lower.rs` checks all of this against nft itself: the kernel state after `nft -f`, and
//! the messages nft sends (captured with strace) byte for byte, except that nft sends
//! `NFTA_BITWISE_OP = NFT_BITWISE_BOOL` for `&`/`|` expressions where [`Expr::Bitwise`] sends
//! none (the kernel's default is the same operation), `NFT_MSG_NEWTABLE` without
//! `NLM_F_CREATE`, and some attributes in another order.

use std::collections::HashMap;

use nftbalance_nftnl::{
    datatype, interval_elements, reject, set_flags, udata_set, value, BaseChain, Batch, BuildError,
    ByteOrder, ByteorderOp, Chain, ChainType, CmpOp, CtKey, DynsetOp, ElemData, Expr, Family, Hook,
    Interval, IntervalElements, IntervalLayout, MetaKey, NatKind, NumgenKind, PayloadBase, Policy,
    Register, Rule, SetData, SetElem, SetRef, SetSpec, Table, Udata, Verdict,
};
use nftbalance_ruleset as m;

const R1: Register = Register::R1;
const R2: Register = Register::R2;

/// nft's `enum expr_types` values used in set typeof userdata.
const EXPR_VERDICT: u32 = 1;
const EXPR_PAYLOAD: u32 = 7;
const EXPR_META: u32 = 9;

/// The netlink family of a model family.
pub fn family(f: m::Family) -> Family {
    match f {
        m::Family::Inet => Family::Inet,
        m::Family::Ip => Family::Ip,
        m::Family::Ip6 => Family::Ip6,
    }
}

/// Label of the table: `table inet nftbalance`.
pub fn table_label(f: m::Family, table: &str) -> String {
    format!("table {} {table}", f.as_str())
}

/// The atomic replace of the ruleset's table as one batch: the table is created if missing,
/// deleted with everything in it and created again with the ruleset's chains, sets and rules.
/// Other tables are never named. Send it with [`crate::Commit::Yes`]; sending it twice leaves
/// one copy.
///
/// Labels: `table inet nftbalance (ensure|delete)`, `table inet nftbalance`, `chain balance`,
/// `set exclude_v4` / `map ingress_mark` (and `... [elements a..b]` when an element list is
/// split over several messages), `chain balance, rule 3: <rule as nft prints it>`, and for the
/// anonymous sets of a rule the rule's label with ` (anonymous set)` / ` (anonymous map)`.
pub fn replace_batch(rs: &m::Ruleset) -> Result<Batch, BuildError> {
    let mut l = Lowerer {
        rs,
        family: family(rs.family),
        batch: Batch::new(),
        named: HashMap::new(),
    };
    l.batch.replace_table(
        &Table::new(l.family, &rs.table),
        table_label(rs.family, &rs.table),
    )?;
    for chain in &rs.chains {
        l.chain(chain)?;
    }
    for set in &rs.sets {
        l.named_set(set)?;
    }
    for chain in &rs.chains {
        for (i, rule) in chain.rules.iter().enumerate() {
            let label = format!(
                "chain {}, rule {}: {}",
                chain.name,
                i + 1,
                m::nft::rule(rule)
            );
            l.rule(&chain.name, rule, label)?;
        }
    }
    Ok(l.batch)
}

/// What a [`delta_batch`] changes, for the log line of an incremental apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub elements_added: usize,
    pub elements_removed: usize,
    pub sets_added: usize,
    pub sets_removed: usize,
    pub chains_added: usize,
    /// Existing chains flushed and filled again.
    pub chains_refilled: usize,
    pub chains_removed: usize,
    /// Whether a chain with counters (`Rule::counts`) was refilled or removed, so that some
    /// counters start again from zero.
    pub counters_reset: bool,
}

impl Changes {
    /// True when the two rulesets are the same: there is nothing to send.
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "+{} -{} elements, +{} -{} sets, +{} ~{} -{} chains",
            self.elements_added,
            self.elements_removed,
            self.sets_added,
            self.sets_removed,
            self.chains_added,
            self.chains_refilled,
            self.chains_removed
        )
    }
}

/// Why two rulesets cannot be bridged by a delta: the reason, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaError {
    /// The change needs the table re-created (the words say why).
    Unfit(String),
    Build(BuildError),
}

impl std::fmt::Display for DeltaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeltaError::Unfit(why) => f.write_str(why),
            DeltaError::Build(e) => write!(f, "cannot encode the change: {e}"),
        }
    }
}

impl From<BuildError> for DeltaError {
    fn from(e: BuildError) -> Self {
        DeltaError::Build(e)
    }
}

/// Whether `old` can become `new` without re-creating the table, and if not why.
fn delta_fit(old: &m::Ruleset, new: &m::Ruleset) -> Result<(), String> {
    if old.family != new.family || old.table != new.table {
        return Err(format!(
            "the table changes from {} to {}",
            table_label(old.family, &old.table),
            table_label(new.family, &new.table)
        ));
    }
    for s in &new.sets {
        if let Some(o) = old.set(&s.name) {
            let declared = |s: &m::Set| (s.key, s.data, s.interval, s.dynamic, s.size);
            if declared(o) != declared(s) {
                return Err(format!("set {} changes its declaration", s.name));
            }
        }
    }
    for c in &new.chains {
        if old.chain(&c.name).is_some_and(|o| o.base != c.base) {
            return Err(format!(
                "chain {} changes its hook, type or priority",
                c.name
            ));
        }
    }
    Ok(())
}

/// Brings the live table from `old` to `new` in one batch without re-creating it: new chains
/// are added, chains whose rules differ are flushed and filled again, set and map elements
/// are added and removed, sets and chains that are gone are deleted. Unchanged chains keep
/// their counters, and sets their elements (sticky sources included). Right only while the
/// live table is `old`; a change of the table itself, of a set's declaration or of a base
/// chain's hook is [`DeltaError::Unfit`] and needs [`replace_batch`]. An empty batch (with
/// [`Changes::is_empty`]) means the rulesets are the same.
///
/// Order: new chains (verdict-map elements and rules name them), flushes (so nothing refers
/// to what is deleted), new sets, element deletions then additions, rules, deletions.
pub fn delta_batch(old: &m::Ruleset, new: &m::Ruleset) -> Result<(Batch, Changes), DeltaError> {
    delta_fit(old, new).map_err(DeltaError::Unfit)?;
    let mut l = Lowerer {
        rs: new,
        family: family(new.family),
        batch: Batch::new(),
        named: HashMap::new(),
    };
    let mut changes = Changes::default();
    let changed: Vec<&m::Chain> = new
        .chains
        .iter()
        .filter(|c| old.chain(&c.name) != Some(*c))
        .collect();
    let gone: Vec<&m::Chain> = old
        .chains
        .iter()
        .filter(|c| new.chain(&c.name).is_none())
        .collect();
    for c in changed.iter().filter(|c| old.chain(&c.name).is_none()) {
        l.chain(c)?;
        changes.chains_added += 1;
    }
    for c in changed
        .iter()
        .filter(|c| old.chain(&c.name).is_some())
        .chain(&gone)
    {
        l.batch.flush_chain(
            l.family,
            &new.table,
            &c.name,
            format!("chain {} (flush)", c.name),
        )?;
        changes.counters_reset |= old
            .chain(&c.name)
            .is_some_and(|o| o.rules.iter().any(|r| r.counts.is_some()));
    }
    changes.chains_refilled = changed.len() - changes.chains_added;
    for s in &new.sets {
        match old.set(&s.name) {
            // The set exists in the kernel: rules refer to it by name.
            Some(o) => {
                l.named.insert(&s.name, (SetRef::named(s.name.clone()), s));
                l.element_delta(o, s, &mut changes)?;
            }
            None => {
                l.named_set(s)?;
                changes.sets_added += 1;
            }
        }
    }
    for c in &changed {
        for (i, rule) in c.rules.iter().enumerate() {
            let label = format!("chain {}, rule {}: {}", c.name, i + 1, m::nft::rule(rule));
            l.rule(&c.name, rule, label)?;
        }
    }
    for c in &gone {
        let label = format!("chain {} (delete)", c.name);
        l.batch.delete_chain(l.family, &old.table, &c.name, label)?;
        changes.chains_removed += 1;
    }
    for s in old.sets.iter().filter(|s| new.set(&s.name).is_none()) {
        let label = format!(
            "{} {} (delete)",
            if s.is_map() { "map" } else { "set" },
            s.name
        );
        l.batch.delete_set(l.family, &old.table, &s.name, label)?;
        changes.sets_removed += 1;
    }
    Ok((l.batch, changes))
}

/// [`delta_batch`] for watch's changes of availability (which only touch chains).
pub fn update_batch(old: &m::Ruleset, new: &m::Ruleset) -> Result<Batch, BuildError> {
    delta_batch(old, new)
        .map(|(batch, _)| batch)
        .map_err(|e| match e {
            DeltaError::Build(e) => e,
            DeltaError::Unfit(why) => invalid(format!("{why}; it needs a full apply")),
        })
}

/// Deletes the table if it exists (`flush`): add-table (a no-op when it exists) + delete-table,
/// so the batch succeeds whether or not the table is there. Labels `table inet X (ensure)` and
/// `table inet X (delete)`.
pub fn delete_batch(f: m::Family, table: &str) -> Result<Batch, BuildError> {
    let label = table_label(f, table);
    let mut b = Batch::new();
    b.add_table(&Table::new(family(f), table), format!("{label} (ensure)"))?;
    b.delete_table(family(f), table, format!("{label} (delete)"))?;
    Ok(b)
}

struct Lowerer<'a> {
    rs: &'a m::Ruleset,
    family: Family,
    batch: Batch,
    named: HashMap<&'a str, (SetRef, &'a m::Set)>,
}

/// How a value of some type is encoded and declared as a set key or map data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Mark,
    /// numgen / jhash results
    Integer,
    IfName,
    Ipv4,
    Ipv6,
    Port,
    NfProto,
    L4Proto,
    CtState,
    Verdict,
}

impl Ty {
    fn of_data(d: m::DataType) -> Ty {
        match d {
            m::DataType::Ipv4Addr => Ty::Ipv4,
            m::DataType::Ipv6Addr => Ty::Ipv6,
            m::DataType::IfName => Ty::IfName,
            m::DataType::Mark => Ty::Mark,
            m::DataType::Verdict => Ty::Verdict,
        }
    }

    /// (nft datatype id, length, byte order)
    fn decl(self) -> (u32, u32, ByteOrder) {
        match self {
            Ty::Mark => (datatype::MARK, 4, ByteOrder::Host),
            Ty::Integer => (datatype::INTEGER, 4, ByteOrder::Host),
            Ty::IfName => (datatype::IFNAME, 16, ByteOrder::Host),
            Ty::Ipv4 => (datatype::IPADDR, 4, ByteOrder::Big),
            Ty::Ipv6 => (datatype::IP6ADDR, 16, ByteOrder::Big),
            Ty::Port => (datatype::INET_SERVICE, 2, ByteOrder::Big),
            Ty::NfProto => (datatype::NFPROTO, 1, ByteOrder::Host),
            Ty::L4Proto => (datatype::INET_PROTOCOL, 1, ByteOrder::Big),
            Ty::CtState => (datatype::CT_STATE, 4, ByteOrder::Host),
            Ty::Verdict => (nftbalance_nftnl::NFT_DATA_VERDICT, 0, ByteOrder::Host),
        }
    }
}

fn invalid(msg: impl Into<String>) -> BuildError {
    BuildError::Invalid(msg.into())
}

fn verdict(v: &m::Verdict) -> Verdict {
    match v {
        m::Verdict::Accept => Verdict::Accept,
        m::Verdict::Return => Verdict::Return,
        m::Verdict::Jump(c) => Verdict::Jump(c.clone()),
        m::Verdict::Goto(c) => Verdict::Goto(c.clone()),
    }
}

fn ip_family(f: m::IpFamily) -> u8 {
    match f {
        m::IpFamily::V4 => 2,
        m::IpFamily::V6 => 10,
    }
}

/// The bytes of a single (non-range) value. `big_endian_ints`: integers (numgen/jhash keys) in
/// network order, as in interval maps after `byteorder hton`.
fn encode(v: &m::Value, big_endian_ints: bool) -> Result<Vec<u8>, BuildError> {
    Ok(match v {
        m::Value::Mark(x) => value::host_u32(*x),
        m::Value::Int(x) if big_endian_ints => value::be_u32(*x),
        m::Value::Int(x) => value::host_u32(*x),
        m::Value::IfName(n) => {
            if n.is_empty() || n.len() >= 16 {
                return Err(invalid(format!(
                    "interface name {n:?} must be 1..=15 bytes"
                )));
            }
            value::ifname(n)
        }
        m::Value::Ipv4(a) => a.octets().to_vec(),
        m::Value::Ipv6(a) => a.octets().to_vec(),
        m::Value::Port(p) => value::port(*p),
        m::Value::NfProto(f) => vec![ip_family(*f)],
        m::Value::L4Proto(p) => vec![p.number()],
        m::Value::Ipv4Net(_) | m::Value::Ipv6Net(_) | m::Value::Range(..) => {
            return Err(invalid(format!("{v:?} is not a single value")))
        }
        m::Value::Verdict(_) => return Err(invalid("a verdict is not a key")),
    })
}

/// The range a key value of an interval set covers.
fn key_range(v: &m::Value, big_endian_ints: bool) -> Result<Interval, BuildError> {
    match v {
        m::Value::Ipv4Net(n) => Interval::prefix(&n.addr().octets(), n.prefix_len().into()),
        m::Value::Ipv6Net(n) => Interval::prefix(&n.addr().octets(), n.prefix_len().into()),
        m::Value::Range(a, b) => {
            let a = encode(a, big_endian_ints)?;
            let b = encode(b, big_endian_ints)?;
            if a.len() != b.len() || a > b {
                return Err(invalid(format!("bad range {v:?}")));
            }
            Ok(Interval::inclusive(a, &b))
        }
        single => Ok(Interval::single(encode(single, big_endian_ints)?)),
    }
}

/// A header field: (base, offset, length).
fn field_location(f: m::Field) -> (PayloadBase, u32, u32) {
    match f {
        m::Field::IpSaddr => (PayloadBase::Network, 12, 4),
        m::Field::IpDaddr => (PayloadBase::Network, 16, 4),
        m::Field::Ip6Saddr => (PayloadBase::Network, 8, 16),
        m::Field::Ip6Daddr => (PayloadBase::Network, 24, 16),
        m::Field::Dport(_) => (PayloadBase::Transport, 2, 2),
    }
}

fn field_family(f: m::Field) -> Option<m::IpFamily> {
    match f {
        m::Field::IpSaddr | m::Field::IpDaddr => Some(m::IpFamily::V4),
        m::Field::Ip6Saddr | m::Field::Ip6Daddr => Some(m::IpFamily::V6),
        m::Field::Dport(_) => None,
    }
}

fn field_ty(f: m::Field) -> Ty {
    match f {
        m::Field::IpSaddr | m::Field::IpDaddr => Ty::Ipv4,
        m::Field::Ip6Saddr | m::Field::Ip6Daddr => Ty::Ipv6,
        m::Field::Dport(_) => Ty::Port,
    }
}

/// nft's typeof userdata of a set keyed by this expression: (expression type, its TLVs).
fn key_typeof(e: &m::Expr) -> Option<(u32, Udata)> {
    match e {
        m::Expr::Payload(f) => {
            // (enum proto_desc_id, header field template index)
            let (desc, field) = match f {
                m::Field::IpSaddr => (12, 11),
                m::Field::IpDaddr => (12, 12),
                m::Field::Ip6Saddr => (13, 8),
                m::Field::Ip6Daddr => (13, 9),
                m::Field::Dport(m::Protocol::Tcp) => (8, 2),
                m::Field::Dport(m::Protocol::Udp) => (6, 2),
            };
            Some((
                EXPR_PAYLOAD,
                Udata::new().put_u32(0, desc).put_u32(1, field),
            ))
        }
        m::Expr::Meta(k) => {
            // enum nft_meta_keys
            let key = match k {
                m::MetaKey::Mark => 3,
                m::MetaKey::IifName => 6,
                m::MetaKey::OifName => 7,
                m::MetaKey::NfProto => 15,
                m::MetaKey::L4Proto => 16,
            };
            Some((EXPR_META, Udata::new().put_u32(0, key)))
        }
        _ => None,
    }
}

fn meta_key(k: m::MetaKey) -> MetaKey {
    match k {
        m::MetaKey::Mark => MetaKey::Mark,
        m::MetaKey::IifName => MetaKey::IifName,
        m::MetaKey::OifName => MetaKey::OifName,
        m::MetaKey::NfProto => MetaKey::NfProto,
        m::MetaKey::L4Proto => MetaKey::L4Proto,
    }
}

fn ct_key(k: m::CtKey) -> CtKey {
    match k {
        m::CtKey::State => CtKey::State,
        m::CtKey::Mark => CtKey::Mark,
    }
}

fn ct_state_bits(states: &[m::CtState]) -> u32 {
    use nftbalance_nftnl::ct_state;
    states
        .iter()
        .map(|s| match s {
            m::CtState::New => ct_state::NEW,
            m::CtState::Established => ct_state::ESTABLISHED,
            m::CtState::Related => ct_state::RELATED,
        })
        .fold(0, |a, b| a | b)
}

/// True if the map's keys need an interval map (some key is a range or prefix).
fn has_ranges<'v>(mut keys: impl Iterator<Item = &'v m::Value>) -> bool {
    keys.any(|k| {
        matches!(
            k,
            m::Value::Range(..) | m::Value::Ipv4Net(_) | m::Value::Ipv6Net(_)
        )
    })
}

impl<'a> Lowerer<'a> {
    fn table(&self) -> &'a str {
        &self.rs.table
    }

    fn chain(&mut self, c: &m::Chain) -> Result<(), BuildError> {
        let chain = match &c.base {
            None => Chain::regular(self.family, self.table(), &c.name),
            Some(b) => Chain {
                family: self.family,
                table: self.table().to_owned(),
                name: c.name.clone(),
                base: Some(BaseChain {
                    chain_type: match b.kind {
                        m::ChainType::Filter => ChainType::Filter,
                        m::ChainType::Route => ChainType::Route,
                        m::ChainType::Nat => ChainType::Nat,
                    },
                    hook: match b.hook {
                        m::Hook::Prerouting => Hook::Prerouting,
                        m::Hook::Output => Hook::Output,
                        m::Hook::Postrouting => Hook::Postrouting,
                    },
                    priority: b.priority.value(),
                    policy: Some(Policy::Accept),
                }),
            },
        };
        self.batch.add_chain(&chain, format!("chain {}", c.name))
    }

    fn named_set(&mut self, s: &'a m::Set) -> Result<(), BuildError> {
        let key = Ty::of_data(s.key);
        let data = s.data.map(Ty::of_data);
        let (key_type, key_len, key_order) = key.decl();
        let mut flags = 0;
        if s.interval {
            flags |= set_flags::INTERVAL;
        }
        if data.is_some() {
            flags |= set_flags::MAP;
        }
        if s.dynamic.is_some() {
            flags |= set_flags::TIMEOUT | set_flags::EVAL;
        }
        let mut udata = Udata::new().key_byteorder(key_order);
        let mut set_data = None;
        if let Some(d) = data {
            let (data_type, data_len, data_order) = d.decl();
            set_data = Some(SetData {
                data_type,
                data_len,
            });
            udata = data_byteorder(udata, d, data_order);
            udata = udata.data_interval(false);
        }
        let spec = SetSpec {
            flags,
            data: set_data,
            timeout_ms: s.dynamic.map(|d| u64::from(d.timeout_secs) * 1000),
            size: s.size,
            userdata: Some(udata.into_bytes()),
            ..SetSpec::new(self.family, self.table(), &s.name, key_type, key_len)
        };
        let label = format!("{} {}", if s.is_map() { "map" } else { "set" }, s.name);
        let set_ref = self.batch.add_set(&spec, label.clone())?;
        let elems = set_elements(s)?;
        if !elems.is_empty() {
            self.batch
                .add_elements(self.family, self.table(), &set_ref, &elems, label)?;
        }
        self.named.insert(&s.name, (set_ref, s));
        Ok(())
    }

    /// The element changes that turn the live set `old` into `new` (same declaration):
    /// deletions first, so a range that changes its end never overlaps itself.
    fn element_delta(
        &mut self,
        old: &m::Set,
        new: &m::Set,
        changes: &mut Changes,
    ) -> Result<(), BuildError> {
        if old.elements == new.elements {
            return Ok(());
        }
        let (removed, added) = element_difference(set_elements(old)?, set_elements(new)?);
        let kind = if new.is_map() { "map" } else { "set" };
        if !removed.is_empty() {
            let label = format!("{kind} {} (delete elements)", new.name);
            let table = self.table();
            self.batch
                .delete_elements(self.family, table, &new.name, &removed, label)?;
        }
        if !added.is_empty() {
            let label = format!("{kind} {} (add elements)", new.name);
            let set_ref = SetRef::named(new.name.clone());
            let table = self.table();
            self.batch
                .add_elements(self.family, table, &set_ref, &added, label)?;
        }
        changes.elements_removed += removed.len();
        changes.elements_added += added.len();
        Ok(())
    }
}

/// The elements only in `before` and those only in `after`, each in its list's order (the
/// kernel checks interval elements for overlaps as they come, so a start element must not
/// come before the end element of the range before it). An element is identified by its key
/// and flags (a range's start and end element may share a key); one whose data changed is
/// in both results. Matched over sorted indices: cheaper than hashing 100k elements twice.
fn element_difference(before: Vec<SetElem>, after: Vec<SetElem>) -> (Vec<SetElem>, Vec<SetElem>) {
    use std::cmp::Ordering;
    fn id(e: &SetElem) -> (&[u8], u32) {
        (&e.key, e.flags)
    }
    let sorted = |v: &[SetElem]| {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_unstable_by(|&x, &y| id(&v[x]).cmp(&id(&v[y])));
        order
    };
    let (bo, ao) = (sorted(&before), sorted(&after));
    let (mut kept_b, mut kept_a) = (vec![false; before.len()], vec![false; after.len()]);
    let (mut i, mut j) = (0, 0);
    while i < bo.len() && j < ao.len() {
        let (x, y) = (&before[bo[i]], &after[ao[j]]);
        match id(x).cmp(&id(y)) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => {
                if x == y {
                    kept_b[bo[i]] = true;
                    kept_a[ao[j]] = true;
                }
                i += 1;
                j += 1;
            }
        }
    }
    let only = |v: Vec<SetElem>, kept: Vec<bool>| -> Vec<SetElem> {
        v.into_iter()
            .zip(kept)
            .filter(|(_, k)| !k)
            .map(|(e, _)| e)
            .collect()
    };
    (only(before, kept_b), only(after, kept_a))
}

/// A named set's elements as the kernel holds them (interval sets as start and end elements).
fn set_elements(s: &m::Set) -> Result<Vec<SetElem>, BuildError> {
    Ok(if s.interval {
        let ranges = s
            .elements
            .iter()
            .map(|e| {
                Ok(Interval {
                    data: e.data.as_ref().map(elem_data).transpose()?,
                    ..key_range(&e.key, false)?
                })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        interval_elements(ranges, IntervalLayout::Named)?.elements
    } else {
        s.elements
            .iter()
            .map(|e| {
                Ok(SetElem {
                    data: e.data.as_ref().map(elem_data).transpose()?,
                    ..SetElem::key(encode(&e.key, false)?)
                })
            })
            .collect::<Result<Vec<_>, BuildError>>()?
    })
}

impl<'a> Lowerer<'a> {
    fn named_ref(&self, name: &str) -> Result<(SetRef, &'a m::Set), BuildError> {
        self.named
            .get(name)
            .map(|(r, s)| (r.clone(), *s))
            .ok_or_else(|| invalid(format!("no set or map named {name:?} in the ruleset")))
    }

    fn rule(&mut self, chain: &str, rule: &m::Rule, label: String) -> Result<(), BuildError> {
        let mut cx = RuleCx {
            l: self,
            label: &label,
            exprs: Vec::new(),
            nfproto: None,
            l4proto: None,
        };
        for mt in &rule.matches {
            cx.matcher(mt)?;
        }
        for st in &rule.stmts {
            cx.stmt(st)?;
        }
        let exprs = cx.exprs;
        self.batch
            .add_rule(&Rule::new(self.family, self.table(), chain, exprs), label)
    }
}

/// `NFTNL_UDATA_SET_DATABYTEORDER` of a map: verdicts have none (`BYTEORDER_INVALID`, 0).
fn data_byteorder(udata: Udata, data: Ty, order: ByteOrder) -> Udata {
    if data == Ty::Verdict {
        udata.put_u32(udata_set::DATABYTEORDER, 0)
    } else {
        udata.data_byteorder(order)
    }
}

fn elem_data(v: &m::Value) -> Result<ElemData, BuildError> {
    Ok(match v {
        m::Value::Verdict(v) => ElemData::Verdict(verdict(v)),
        other => ElemData::Value(encode(other, false)?),
    })
}

/// Lowering state of one rule: what the rule has established about the packet so far, so
/// implicit dependencies are emitted once, as nft does.
struct RuleCx<'l, 'a> {
    l: &'l mut Lowerer<'a>,
    label: &'l str,
    exprs: Vec<Expr>,
    nfproto: Option<m::IpFamily>,
    l4proto: Option<m::Protocol>,
}

/// What a loaded expression left in its register.
#[derive(Debug, Clone, Copy)]
struct Loaded {
    ty: Ty,
    /// the value is host order and gets `byteorder hton` before an interval-map lookup
    /// (numgen, jhash)
    host_int: bool,
}

impl RuleCx<'_, '_> {
    fn push(&mut self, e: Expr) {
        self.exprs.push(e);
    }

    fn cmp(&mut self, op: CmpOp, data: Vec<u8>) {
        self.push(Expr::Cmp { sreg: R1, op, data });
    }

    /// `meta nfproto` / `meta l4proto` dependencies of a header field.
    fn dependency(&mut self, f: m::Field) -> Result<(), BuildError> {
        if let Some(fam) = field_family(f) {
            let table = self.l.family;
            let ok = match fam {
                m::IpFamily::V4 => table != Family::Ip6,
                m::IpFamily::V6 => table != Family::Ip,
            };
            if !ok {
                return Err(invalid(format!(
                    "{f:?} cannot match in a table of family {}",
                    table.name()
                )));
            }
            if table == Family::Inet && self.nfproto != Some(fam) {
                self.push(Expr::Meta {
                    dreg: R1,
                    key: MetaKey::NfProto,
                });
                self.cmp(CmpOp::Eq, vec![ip_family(fam)]);
                self.nfproto = Some(fam);
            }
        }
        if let m::Field::Dport(p) = f {
            if self.l4proto != Some(p) {
                self.push(Expr::Meta {
                    dreg: R1,
                    key: MetaKey::L4Proto,
                });
                self.cmp(CmpOp::Eq, vec![p.number()]);
                self.l4proto = Some(p);
            }
        }
        Ok(())
    }

    fn payload(&mut self, f: m::Field, dreg: Register, len: Option<u32>) -> Result<(), BuildError> {
        self.dependency(f)?;
        let (base, offset, full) = field_location(f);
        self.push(Expr::Payload {
            dreg,
            base,
            offset,
            len: len.unwrap_or(full),
        });
        Ok(())
    }

    /// Loads `e` into R1.
    fn load(&mut self, e: &m::Expr) -> Result<Loaded, BuildError> {
        let plain = |ty| Loaded {
            ty,
            host_int: false,
        };
        Ok(match e {
            m::Expr::Meta(k) => {
                self.push(Expr::Meta {
                    dreg: R1,
                    key: meta_key(*k),
                });
                plain(match k {
                    m::MetaKey::Mark => Ty::Mark,
                    m::MetaKey::IifName | m::MetaKey::OifName => Ty::IfName,
                    m::MetaKey::NfProto => Ty::NfProto,
                    m::MetaKey::L4Proto => Ty::L4Proto,
                })
            }
            m::Expr::Ct(k) => {
                self.push(Expr::Ct {
                    dreg: R1,
                    key: ct_key(*k),
                });
                plain(match k {
                    m::CtKey::State => Ty::CtState,
                    m::CtKey::Mark => Ty::Mark,
                })
            }
            m::Expr::Payload(f) => {
                self.payload(*f, R1, None)?;
                plain(field_ty(*f))
            }
            m::Expr::Network { field, prefix_len } => {
                let mask = field
                    .netmask(*prefix_len)
                    .ok_or_else(|| invalid(format!("no /{prefix_len} mask for {field:?}")))?;
                let mask = encode(&mask, false)?;
                self.payload(*field, R1, None)?;
                self.push(Expr::Bitwise {
                    sreg: R1,
                    dreg: R1,
                    xor: vec![0; mask.len()],
                    mask,
                });
                plain(field_ty(*field))
            }
            m::Expr::Numgen { mode, modulus } => {
                self.push(Expr::Numgen {
                    dreg: R1,
                    kind: match mode {
                        m::NumgenMode::Inc => NumgenKind::Inc,
                        m::NumgenMode::Random => NumgenKind::Random,
                    },
                    modulus: *modulus,
                    offset: 0,
                });
                Loaded {
                    ty: Ty::Integer,
                    host_int: true,
                }
            }
            m::Expr::Jhash {
                field,
                modulus,
                seed,
            } => {
                self.payload(*field, R2, None)?;
                self.push(Expr::Jhash {
                    sreg: R2,
                    dreg: R1,
                    len: field_location(*field).2,
                    modulus: *modulus,
                    seed: Some(*seed),
                    offset: 0,
                });
                Loaded {
                    ty: Ty::Integer,
                    host_int: true,
                }
            }
            m::Expr::Value(v) => {
                let data = encode(v, false)?;
                self.push(Expr::Immediate { dreg: R1, data });
                plain(match v {
                    m::Value::Mark(_) => Ty::Mark,
                    m::Value::Int(_) => Ty::Integer,
                    m::Value::IfName(_) => Ty::IfName,
                    m::Value::Ipv4(_) => Ty::Ipv4,
                    m::Value::Ipv6(_) => Ty::Ipv6,
                    m::Value::Port(_) => Ty::Port,
                    m::Value::NfProto(_) => Ty::NfProto,
                    m::Value::L4Proto(_) => Ty::L4Proto,
                    _ => unreachable!("encode accepted only single values"),
                })
            }
            m::Expr::And(inner, mask) => {
                let l = self.load_u32(inner)?;
                self.push(Expr::Bitwise {
                    sreg: R1,
                    dreg: R1,
                    mask: value::host_u32(*mask),
                    xor: value::host_u32(0),
                });
                l
            }
            m::Expr::Bits { expr, keep, set } => {
                let l = self.load_u32(expr)?;
                self.push(Expr::Bitwise {
                    sreg: R1,
                    dreg: R1,
                    mask: value::host_u32(*keep),
                    xor: value::host_u32(*set),
                });
                l
            }
            m::Expr::Map { key, map } => {
                let data = self.map_lookup(key, map, Some(R1))?;
                plain(data)
            }
        })
    }

    /// Loads a 4-byte host-order value (mark, ct state) for a bit operation.
    fn load_u32(&mut self, e: &m::Expr) -> Result<Loaded, BuildError> {
        let l = self.load(e)?;
        match l.ty {
            Ty::Mark | Ty::CtState => Ok(l),
            other => Err(invalid(format!(
                "bit operations need a mark, not {other:?}"
            ))),
        }
    }

    /// `key map|vmap <map>`: loads the key, looks it up into `dreg` (None: the verdict
    /// register) and returns the map's data type.
    fn map_lookup(
        &mut self,
        key: &m::Expr,
        map: &m::MapRef,
        dreg: Option<Register>,
    ) -> Result<Ty, BuildError> {
        match map {
            m::MapRef::Named(name) => {
                let (set_ref, set) = self.l.named_ref(name)?;
                let data = set
                    .data
                    .map(Ty::of_data)
                    .ok_or_else(|| invalid(format!("{name} is a set, not a map")))?;
                self.load(key)?;
                self.lookup(set_ref, dreg.or(Some(Register::VERDICT)), false);
                Ok(data)
            }
            m::MapRef::Anonymous(entries) => {
                let loaded = self.load(key)?;
                let interval = has_ranges(entries.iter().map(|(k, _)| k));
                let data_ty = match entries.first() {
                    Some((_, m::Value::Verdict(_))) => Ty::Verdict,
                    Some((_, m::Value::Mark(_))) => Ty::Mark,
                    Some((_, m::Value::Ipv4(_))) => Ty::Ipv4,
                    Some((_, m::Value::Ipv6(_))) => Ty::Ipv6,
                    Some((_, other)) => return Err(invalid(format!("map data {other:?}"))),
                    None => return Err(invalid("empty anonymous map")),
                };
                let big_endian_keys = interval && loaded.host_int;
                if big_endian_keys {
                    self.push(Expr::Byteorder {
                        sreg: R1,
                        dreg: R1,
                        op: ByteorderOp::Hton,
                        len: 4,
                        size: 4,
                    });
                }
                let set_ref = self.anonymous_map(loaded.ty, data_ty, interval, entries)?;
                self.lookup(set_ref, dreg.or(Some(Register::VERDICT)), false);
                Ok(data_ty)
            }
        }
    }

    fn lookup(&mut self, set: SetRef, dreg: Option<Register>, invert: bool) {
        self.push(Expr::Lookup {
            sreg: R1,
            dreg,
            set,
            invert,
        });
    }

    fn anonymous_map(
        &mut self,
        key: Ty,
        data: Ty,
        interval: bool,
        entries: &[(m::Value, m::Value)],
    ) -> Result<SetRef, BuildError> {
        let (key_type, key_len, key_order) = key.decl();
        let (data_type, data_len, data_order) = data.decl();
        let mut flags = set_flags::ANONYMOUS | set_flags::CONSTANT | set_flags::MAP;
        if interval {
            flags |= set_flags::INTERVAL;
        }
        let mut udata = data_byteorder(Udata::new().key_byteorder(key_order), data, data_order);
        if data == Ty::Verdict {
            udata = udata.typeof_expr(udata_set::DATA_TYPEOF, EXPR_VERDICT, Udata::new());
        }
        udata = udata.data_interval(false);
        let (elems, size) = if interval {
            let ranges = entries
                .iter()
                .map(|(k, d)| {
                    Ok(Interval {
                        data: Some(elem_data(d)?),
                        ..key_range(k, true)?
                    })
                })
                .collect::<Result<Vec<_>, BuildError>>()?;
            let IntervalElements { elements, size } =
                interval_elements(ranges, IntervalLayout::Anonymous)?;
            (elements, size)
        } else {
            let elems = entries
                .iter()
                .map(|(k, d)| {
                    Ok(SetElem {
                        data: Some(elem_data(d)?),
                        ..SetElem::key(encode(k, false)?)
                    })
                })
                .collect::<Result<Vec<_>, BuildError>>()?;
            let n = elems.len() as u32;
            (elems, n)
        };
        let spec = SetSpec {
            flags,
            data: Some(SetData {
                data_type,
                data_len,
            }),
            size: Some(size),
            userdata: Some(udata.into_bytes()),
            ..SetSpec::new(self.l.family, self.l.table(), "__map%d", key_type, key_len)
        };
        self.add_anonymous(spec, &elems, "anonymous map")
    }

    fn add_anonymous(
        &mut self,
        spec: SetSpec,
        elems: &[SetElem],
        what: &str,
    ) -> Result<SetRef, BuildError> {
        let label = format!("{} ({what})", self.label);
        let set_ref = self.l.batch.add_set(&spec, label.clone())?;
        self.l
            .batch
            .add_elements(self.l.family, self.l.table(), &set_ref, elems, label)?;
        Ok(set_ref)
    }

    /// `left { v1, v2, ... }` with an anonymous set.
    fn anonymous_set(&mut self, left: &m::Expr, values: &[m::Value]) -> Result<(), BuildError> {
        let loaded = self.load(left)?;
        let interval = has_ranges(values.iter());
        let (key_type, key_len, key_order) = loaded.ty.decl();
        let mut flags = set_flags::ANONYMOUS | set_flags::CONSTANT;
        if interval {
            flags |= set_flags::INTERVAL;
        }
        let mut udata = Udata::new().key_byteorder(key_order);
        if interval {
            // nft merges the ranges of an anonymous set and says so
            udata = udata.merge_elements(true);
        }
        if let Some((t, data)) = key_typeof(left) {
            udata = udata.typeof_expr(udata_set::KEY_TYPEOF, t, data);
        }
        let (elems, size) = if interval {
            let ranges = values
                .iter()
                .map(|v| key_range(v, false))
                .collect::<Result<Vec<_>, BuildError>>()?;
            let IntervalElements { elements, size } =
                interval_elements(ranges, IntervalLayout::Anonymous)?;
            (elements, size)
        } else {
            let elems = values
                .iter()
                .map(|v| Ok(SetElem::key(encode(v, false)?)))
                .collect::<Result<Vec<_>, BuildError>>()?;
            let n = elems.len() as u32;
            (elems, n)
        };
        let spec = SetSpec {
            flags,
            size: Some(size),
            userdata: Some(udata.into_bytes()),
            ..SetSpec::new(self.l.family, self.l.table(), "__set%d", key_type, key_len)
        };
        let set_ref = self.add_anonymous(spec, &elems, "anonymous set")?;
        self.lookup(set_ref, None, false);
        Ok(())
    }

    fn matcher(&mut self, mt: &m::Match) -> Result<(), BuildError> {
        match mt {
            m::Match::CtState(states) => {
                self.push(Expr::Ct {
                    dreg: R1,
                    key: CtKey::State,
                });
                self.push(Expr::Bitwise {
                    sreg: R1,
                    dreg: R1,
                    mask: value::host_u32(ct_state_bits(states)),
                    xor: value::host_u32(0),
                });
                self.cmp(CmpOp::Neq, value::host_u32(0));
                Ok(())
            }
            m::Match::Cmp {
                left,
                negate,
                right,
            } => self.compare(left, *negate, right),
            m::Match::InSet { left, set } => match set {
                m::SetRef::Named(name) => {
                    let (set_ref, _) = self.l.named_ref(name)?;
                    self.load(left)?;
                    self.lookup(set_ref, None, false);
                    Ok(())
                }
                // nft turns a one-element set into a plain compare
                m::SetRef::Anonymous(values) if values.len() == 1 => {
                    self.compare(left, false, &values[0])
                }
                m::SetRef::Anonymous(values) => self.anonymous_set(left, values),
            },
        }
    }

    fn compare(
        &mut self,
        left: &m::Expr,
        negate: bool,
        right: &m::Value,
    ) -> Result<(), BuildError> {
        let op = if negate { CmpOp::Neq } else { CmpOp::Eq };
        match (left, right) {
            (m::Expr::Payload(f), m::Value::Ipv4Net(n)) => {
                self.prefix(*f, &n.addr().octets(), n.prefix_len(), op)
            }
            (m::Expr::Payload(f), m::Value::Ipv6Net(n)) => {
                self.prefix(*f, &n.addr().octets(), n.prefix_len(), op)
            }
            (_, m::Value::Range(a, b)) => {
                if negate {
                    return Err(invalid("negated ranges are not supported"));
                }
                let l = self.load(left)?;
                if l.host_int || !matches!(l.ty, Ty::Port | Ty::Ipv4 | Ty::Ipv6) {
                    return Err(invalid(format!("ranges of {:?} are not supported", l.ty)));
                }
                self.cmp(CmpOp::Gte, encode(a, false)?);
                self.cmp(CmpOp::Lte, encode(b, false)?);
                Ok(())
            }
            _ => {
                self.load(left)?;
                self.cmp(op, encode(right, false)?);
                // an explicit `meta nfproto` / `meta l4proto` match satisfies the dependency
                if !negate {
                    match right {
                        m::Value::NfProto(f) if self.l.family == Family::Inet => {
                            self.nfproto = Some(*f)
                        }
                        m::Value::L4Proto(p) => self.l4proto = Some(*p),
                        _ => {}
                    }
                }
                Ok(())
            }
        }
    }

    /// `field addr/len`: the prefix bytes when `len` is a multiple of 8, else a mask.
    fn prefix(&mut self, f: m::Field, addr: &[u8], len: u8, op: CmpOp) -> Result<(), BuildError> {
        let (_, _, full) = field_location(f);
        if addr.len() as u32 != full {
            return Err(invalid(format!("address {addr:?} does not fit {f:?}")));
        }
        let net = Interval::prefix(addr, len.into())?.start;
        let bytes = usize::from(len / 8);
        if len.is_multiple_of(8) && len > 0 {
            self.payload(f, R1, Some(bytes as u32))?;
            self.cmp(op, net[..bytes].to_vec());
        } else {
            self.payload(f, R1, None)?;
            let mask = Interval::prefix(&vec![0xff; addr.len()], len.into())?.start;
            self.push(Expr::Bitwise {
                sreg: R1,
                dreg: R1,
                mask,
                xor: vec![0; addr.len()],
            });
            self.cmp(op, net);
        }
        Ok(())
    }

    fn stmt(&mut self, st: &m::Stmt) -> Result<(), BuildError> {
        match st {
            m::Stmt::Mangle { target, value } => {
                self.load(value)?;
                match target {
                    m::Expr::Meta(m::MetaKey::Mark) => self.push(Expr::MetaSet {
                        sreg: R1,
                        key: MetaKey::Mark,
                    }),
                    m::Expr::Ct(m::CtKey::Mark) => self.push(Expr::CtSet {
                        sreg: R1,
                        key: CtKey::Mark,
                    }),
                    other => return Err(invalid(format!("cannot set {other:?}"))),
                }
            }
            m::Stmt::SetUpdate { set, key } => {
                let (set_ref, s) = self.l.named_ref(set)?;
                if s.dynamic.is_none() {
                    return Err(invalid(format!("set {set} is not dynamic")));
                }
                self.load(key)?;
                self.push(Expr::Dynset {
                    op: DynsetOp::Update,
                    sreg_key: R1,
                    sreg_data: None,
                    set: set_ref,
                    timeout_ms: None,
                });
            }
            m::Stmt::VerdictMap { key, map } => {
                let data = self.map_lookup(key, map, None)?;
                if data != Ty::Verdict {
                    return Err(invalid("vmap over a map whose data are not verdicts"));
                }
            }
            m::Stmt::Snat { family, addr } => {
                let l = self.load(addr)?;
                let (fam, ty) = match family {
                    m::IpFamily::V4 => (Family::Ip, Ty::Ipv4),
                    m::IpFamily::V6 => (Family::Ip6, Ty::Ipv6),
                };
                if l.ty != ty {
                    return Err(invalid(format!("snat to a {:?} value", l.ty)));
                }
                self.push(Expr::Nat {
                    kind: NatKind::Snat,
                    family: fam,
                    addr_min: Some(R1),
                    addr_max: None,
                    proto_min: None,
                    proto_max: None,
                    flags: None,
                });
            }
            m::Stmt::Masquerade => self.push(Expr::Masquerade {
                flags: None,
                proto_min: None,
                proto_max: None,
            }),
            m::Stmt::Counter => self.push(Expr::Counter),
            m::Stmt::Reject(m::Reject::TcpReset) => self.push(Expr::Reject {
                kind: reject::TCP_RST,
                code: None,
            }),
            m::Stmt::Reject(m::Reject::IcmpxHostUnreachable) => self.push(Expr::Reject {
                kind: reject::ICMPX_UNREACH,
                code: Some(reject::ICMPX_HOST_UNREACH),
            }),
            m::Stmt::Verdict(v) => self.push(Expr::Verdict(verdict(v))),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftbalance_nftnl::elem_flags;
    use std::net::Ipv4Addr;

    fn keys(elems: &[SetElem]) -> Vec<(Vec<u8>, bool, bool)> {
        elems
            .iter()
            .map(|e| {
                (
                    e.key.clone(),
                    e.flags & elem_flags::INTERVAL_END != 0,
                    e.userdata.is_some(),
                )
            })
            .collect()
    }

    fn v4net(s: &str) -> m::Value {
        m::Value::Ipv4Net(s.parse().unwrap())
    }

    #[test]
    fn named_interval_set_keeps_adjacent_end_elements() {
        // nft: set a { flags interval; elements = { 192.168.1.0/24, 192.168.2.0/24 } }
        let ranges = ["192.168.2.0/24", "192.168.1.0/24"]
            .iter()
            .map(|s| key_range(&v4net(s), false).unwrap())
            .collect();
        let elems = interval_elements(ranges, IntervalLayout::Named)
            .unwrap()
            .elements;
        assert_eq!(
            keys(&elems),
            vec![
                (vec![0, 0, 0, 0], true, false),
                (vec![192, 168, 1, 0], false, false),
                (vec![192, 168, 2, 0], true, false),
                (vec![192, 168, 2, 0], false, false),
                (vec![192, 168, 3, 0], true, false),
            ]
        );
    }

    #[test]
    fn anonymous_set_merges_adjacent_ranges() {
        // nft: ip saddr { 192.168.1.0/24, 192.168.2.0/24 } => 0 [end], 1.0, 3.0 [end], size 3
        let ranges = ["192.168.1.0/24", "192.168.2.0/24"]
            .iter()
            .map(|s| key_range(&v4net(s), false).unwrap())
            .collect();
        let IntervalElements {
            elements: elems,
            size,
        } = interval_elements(ranges, IntervalLayout::Anonymous).unwrap();
        assert_eq!(
            keys(&elems),
            vec![
                (vec![0, 0, 0, 0], true, false),
                (vec![192, 168, 1, 0], false, false),
                (vec![192, 168, 3, 0], true, false),
            ]
        );
        assert_eq!(size, 3);
    }

    #[test]
    fn anonymous_map_drops_shared_end_elements() {
        // nft: numgen inc mod 6 map { 0-2 : 1, 3-4 : 2, 5 : 3 } => 0, 3, 5, 6 [end]; size 6
        let r = |a, b| m::Value::range(m::Value::Int(a), m::Value::Int(b));
        let ranges = [(r(0, 2), 1), (r(3, 4), 2), (r(5, 5), 3)]
            .iter()
            .map(|(k, d)| Interval {
                data: Some(ElemData::Value(value::host_u32(*d))),
                ..key_range(k, true).unwrap()
            })
            .collect();
        let IntervalElements {
            elements: elems,
            size,
        } = interval_elements(ranges, IntervalLayout::Anonymous).unwrap();
        assert_eq!(
            keys(&elems),
            vec![
                (value::be_u32(0), false, false),
                (value::be_u32(3), false, false),
                (value::be_u32(5), false, false),
                (value::be_u32(6), true, false),
            ]
        );
        assert_eq!(size, 6);
        assert_eq!(elems[1].data, Some(ElemData::Value(value::host_u32(2))));
    }

    #[test]
    fn open_interval_has_no_end_and_a_flag() {
        // nft: udp dport { 53, 60000-65535 } => 0 [end], 53, 54 [end], 60000 (open); size 5
        let vals = [
            m::Value::Port(53),
            m::Value::range(m::Value::Port(60000), m::Value::Port(65535)),
        ];
        let ranges = vals.iter().map(|v| key_range(v, false).unwrap()).collect();
        let IntervalElements {
            elements: elems,
            size,
        } = interval_elements(ranges, IntervalLayout::Anonymous).unwrap();
        assert_eq!(
            keys(&elems),
            vec![
                (vec![0, 0], true, false),
                (vec![0, 53], false, false),
                (vec![0, 54], true, false),
                (value::port(60000), false, true),
            ]
        );
        assert_eq!(size, 5);
        let mut flag = vec![1u8, 4];
        flag.extend(1u32.to_ne_bytes());
        assert_eq!(elems[3].userdata, Some(flag));
        // 0.0.0.0/0 is one open element, with no leading zero element
        let only = vec![key_range(&v4net("0.0.0.0/0"), false).unwrap()];
        let elems = interval_elements(only, IntervalLayout::Named)
            .unwrap()
            .elements;
        assert_eq!(keys(&elems), vec![(vec![0, 0, 0, 0], false, true)]);
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let ranges = ["10.0.0.0/8", "10.1.0.0/16"]
            .iter()
            .map(|s| key_range(&v4net(s), false).unwrap())
            .collect();
        assert!(interval_elements(ranges, IntervalLayout::Named).is_err());
    }

    #[test]
    fn values_are_encoded_in_nft_byte_order() {
        assert_eq!(
            encode(&m::Value::Mark(1), false).unwrap(),
            1u32.to_ne_bytes()
        );
        assert_eq!(encode(&m::Value::Int(1), true).unwrap(), vec![0, 0, 0, 1]);
        assert_eq!(encode(&m::Value::Port(443), false).unwrap(), vec![1, 0xbb]);
        assert_eq!(
            encode(&m::Value::Ipv4(Ipv4Addr::new(100, 0, 1, 1)), false).unwrap(),
            vec![100, 0, 1, 1]
        );
        assert_eq!(
            encode(&m::Value::NfProto(m::IpFamily::V6), false).unwrap(),
            vec![10]
        );
        assert_eq!(
            encode(&m::Value::L4Proto(m::Protocol::Udp), false).unwrap(),
            vec![17]
        );
        assert!(encode(&m::Value::IfName("a-very-long-name".into()), false).is_err());
        assert!(encode(&v4net("10.0.0.0/8"), false).is_err());
    }

    #[test]
    fn prefix_ranges() {
        let r = Interval::prefix(&[198, 18, 7, 1], 15).unwrap();
        assert_eq!(r.start, vec![198, 18, 0, 0]);
        assert_eq!(r.end, Some(vec![198, 20, 0, 0]));
        assert_eq!(Interval::prefix(&[1, 2, 3, 4], 0).unwrap().end, None);
        assert_eq!(Interval::prefix(&[0xff; 4], 0).unwrap().start, vec![0; 4]);
    }

    #[test]
    fn delete_batch_is_ensure_then_delete() {
        let b = delete_batch(m::Family::Inet, "nftbalance").unwrap();
        let labels: Vec<&str> = b.labels().collect();
        assert_eq!(
            labels,
            [
                "table inet nftbalance (ensure)",
                "table inet nftbalance (delete)"
            ]
        );
    }
}
