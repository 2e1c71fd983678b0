//! Reading the tool's table back from the kernel and comparing it with what the compiled
//! ruleset would program (`nftbalance diff`).
//!
//! Everything is read with family-filtered dumps over our own socket and decoded with the
//! same attribute code as the write path. (rustables 0.9 was tried for this: it lists chains
//! of every family under one table name, cannot decode map data, element flags or set data
//! types, and skips expression attributes it does not know, such as a lookup's invert flag,
//! which would hide real differences.) Both sides are compared as netlink attribute trees:
//! the expected side from the very messages `apply` would send, the live side from the
//! kernel's dump, with the few attributes that legitimately differ (handles, batch-local set
//! ids, kernel-chosen names of anonymous sets, runtime state) normalised away.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;

use nftbalance_nftnl::consts::*;
use nftbalance_nftnl::{parse_attrs, set_flags, BuildError, Socket};
use nftbalance_ruleset::{ChainType as ModelChainType, Counting, Hook as ModelHook, Ruleset};

use crate::align::{align, Step};
use crate::lower;

/// Set attributes that define a set; the rest are identity or kernel bookkeeping. Userdata
/// is not among them: it holds nft's display hints (byte order, typeof), which the kernel
/// never reads, and nft itself writes it differently across versions.
const SET_DEFINITION: [(u16, &str); 7] = [
    (NFTA_SET_FLAGS, "flags"),
    (NFTA_SET_KEY_TYPE, "key type"),
    (NFTA_SET_KEY_LEN, "key length"),
    (NFTA_SET_DATA_TYPE, "data type"),
    (NFTA_SET_DATA_LEN, "data length"),
    (NFTA_SET_DESC, "size"),
    (NFTA_SET_TIMEOUT, "timeout"),
];
/// Element attributes that define an element: key, data, flags, key end.
const ELEM_DEFINITION: [u16; 4] = [
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_DATA,
    NFTA_SET_ELEM_FLAGS,
    NFTA_SET_ELEM_KEY_END,
];

/// Attributes of one message or nest, in order.
type Attrs = Vec<(u16, Node)>;

/// One netlink attribute value: bytes, or nested attributes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Node {
    Leaf(Vec<u8>),
    Nested(Vec<(u16, Node)>),
}

/// Parses attributes recursively. The kernel marks few of its nested attributes with
/// NLA_F_NESTED (nf_tables mostly nests "noflag") while libnftnl marks them all, so a value
/// is taken as nested whenever it parses completely as attributes. Both sides hold the same
/// bytes but for those flag bits, so both take the same view of every value.
fn tree(buf: &[u8]) -> Vec<(u16, Node)> {
    parse_attrs(buf)
        .into_iter()
        .map(|(t, v)| {
            let node = if t & NLA_F_NESTED != 0 || parses_as_attributes(v) {
                Node::Nested(tree(v))
            } else {
                Node::Leaf(v.to_vec())
            };
            (t & NLA_TYPE_MASK, node)
        })
        .collect()
}

/// True if `buf` is a non-empty sequence of well-formed attributes with nothing left over.
fn parses_as_attributes(buf: &[u8]) -> bool {
    let mut off = 0usize;
    while off < buf.len() {
        let Some(len) = buf
            .get(off..off + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]) as usize)
        else {
            return false;
        };
        if len < 4 || off + len > buf.len() {
            return false;
        }
        off += (len + 3) & !3;
    }
    !buf.is_empty() && off == buf.len()
}

fn attr(attrs: &[(u16, Node)], t: u16) -> Option<&Node> {
    attrs.iter().find(|(k, _)| *k == t).map(|(_, n)| n)
}

/// A set's flags; 0 when the attribute is absent.
fn set_flags_of(attrs: &[(u16, Node)]) -> u32 {
    leaf(attrs, NFTA_SET_FLAGS)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map_or(0, u32::from_be_bytes)
}

/// A set's stated size (NFTA_SET_DESC_SIZE), if any.
fn set_size_of(attrs: &[(u16, Node)]) -> Option<u32> {
    match attr(attrs, NFTA_SET_DESC)? {
        Node::Nested(desc) => leaf(desc, NFTA_SET_DESC_SIZE)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_be_bytes),
        Node::Leaf(_) => None,
    }
}

fn leaf(attrs: &[(u16, Node)], t: u16) -> Option<&[u8]> {
    match attr(attrs, t)? {
        Node::Leaf(v) => Some(v),
        Node::Nested(_) => None,
    }
}

fn string(attrs: &[(u16, Node)], t: u16) -> Option<String> {
    let v = leaf(attrs, t)?;
    let v = v.split(|b| *b == 0).next().unwrap_or(v);
    Some(String::from_utf8_lossy(v).into_owned())
}

fn be32(attrs: &[(u16, Node)], t: u16) -> Option<u32> {
    leaf(attrs, t).and_then(|v| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)))
}

fn nested(attrs: &[(u16, Node)], t: u16) -> &[(u16, Node)] {
    match attr(attrs, t) {
        Some(Node::Nested(n)) => n,
        _ => &[],
    }
}

fn is_zero(n: &Node) -> bool {
    matches!(n, Node::Leaf(v) if v.iter().all(|b| *b == 0))
}

/// A set as compared: its defining attributes and, unless it is filled at run time, its
/// elements (sorted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct SetImage {
    definition: Vec<(u16, Node)>,
    elements: Option<Vec<Vec<(u16, Node)>>>,
}

impl SetImage {
    fn new(set_attrs: &[(u16, Node)]) -> SetImage {
        let flags = be32(set_attrs, NFTA_SET_FLAGS).unwrap_or(0);
        let mut definition: Vec<(u16, Node)> = set_attrs
            .iter()
            .filter(|(t, _)| SET_DEFINITION.iter().any(|(d, _)| d == t))
            .cloned()
            .collect();
        // A verdict map's data length is 0 on the way in and sizeof(struct nft_verdict) out.
        if be32(set_attrs, NFTA_SET_DATA_TYPE) == Some(NFT_DATA_VERDICT) {
            definition.retain(|(t, _)| *t != NFTA_SET_DATA_LEN);
        }
        definition.sort();
        // Elements of sets written from the packet path are state, not configuration.
        let dynamic = flags & (set_flags::EVAL | set_flags::TIMEOUT) != 0;
        SetImage {
            definition,
            elements: (!dynamic).then(Vec::new),
        }
    }

    fn add_elements(&mut self, list: &[(u16, Node)]) {
        let Some(elements) = &mut self.elements else {
            return;
        };
        // libnftnl numbers list entries 1, 2, 3...; the kernel uses NFTA_LIST_ELEM: any type.
        for (_, e) in nested(list, NFTA_SET_ELEM_LIST_ELEMENTS) {
            let Node::Nested(e) = e else { continue };
            let mut kept: Vec<(u16, Node)> = e
                .iter()
                .filter(|(t, n)| {
                    ELEM_DEFINITION.contains(t) && !(*t == NFTA_SET_ELEM_FLAGS && is_zero(n))
                })
                .cloned()
                .collect();
            kept.sort();
            elements.push(kept);
        }
    }

    fn finish(&mut self) {
        if let Some(e) = &mut self.elements {
            e.sort();
        }
    }
}

/// Everything of one table, as compared.
#[derive(Debug, Default)]
struct Image {
    /// Named sets by name.
    sets: BTreeMap<String, SetImage>,
    /// Rules per chain, in order: (where, the rule's number in `RuleIds`).
    rules: BTreeMap<String, Vec<(String, u32)>>,
}

/// Numbers for distinct rules, shared by both sides: rules compare as numbers, and each
/// distinct rule is kept once, as bytes, rather than as a tree per side.
#[derive(Debug, Default)]
struct RuleIds(HashMap<Vec<u8>, u32>);

impl RuleIds {
    /// Takes in another numbering; returns, by the other's ids, the ids in this one.
    fn absorb(&mut self, other: RuleIds) -> Vec<u32> {
        let mut renumber = vec![0; other.0.len()];
        for (key, old) in other.0 {
            let next = self.0.len() as u32;
            renumber[old as usize] = *self.0.entry(key).or_insert(next);
        }
        renumber
    }

    fn id(&mut self, rule: &[Expression]) -> u32 {
        let mut key = Vec::new();
        for e in rule {
            e.encode(&mut key);
        }
        let next = self.0.len() as u32;
        *self.0.entry(key).or_insert(next)
    }
}

/// Length-prefixed bytes: equal exactly when the values written are.
fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u32).to_ne_bytes());
    out.extend_from_slice(v);
}

fn put_attrs(out: &mut Vec<u8>, attrs: &[(u16, Node)]) {
    out.extend_from_slice(&(attrs.len() as u32).to_ne_bytes());
    for (t, node) in attrs {
        out.extend_from_slice(&t.to_ne_bytes());
        match node {
            Node::Leaf(v) => {
                out.push(0);
                put_bytes(out, v);
            }
            Node::Nested(n) => {
                out.push(1);
                put_attrs(out, n);
            }
        }
    }
}

/// An expression as compared: its name and sorted, normalised attributes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Expression {
    name: String,
    attrs: Vec<(u16, Node)>,
    /// The anonymous set a lookup refers to, in place of its name.
    anonymous: Option<SetImage>,
}

impl Expression {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.name.as_bytes());
        put_attrs(out, &self.attrs);
        let Some(set) = &self.anonymous else {
            return out.push(0);
        };
        out.push(1);
        put_attrs(out, &set.definition);
        let Some(elements) = &set.elements else {
            return out.push(0);
        };
        out.push(1);
        out.extend_from_slice(&(elements.len() as u32).to_ne_bytes());
        for e in elements {
            put_attrs(out, e);
        }
    }
}

/// NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED: set by the kernel from the registers.
const NAT_FILLED_FLAGS: u32 = 0x3;

/// Resolves an anonymous set reference: by batch-local id (expected side) or by the name the
/// kernel gave it (live side).
trait Anonymous {
    fn anonymous(&self, name: &str, id: Option<u32>) -> Option<SetImage>;
}

fn expressions(rule: &[(u16, Node)], anon: &dyn Anonymous) -> Vec<Expression> {
    nested(rule, NFTA_RULE_EXPRESSIONS)
        .iter()
        .filter_map(|(_, e)| match e {
            Node::Nested(e) => Some(e),
            Node::Leaf(_) => None,
        })
        .map(|e| {
            let name = string(e, NFTA_EXPR_NAME).unwrap_or_default();
            let data = nested(e, NFTA_EXPR_DATA);
            let mut anonymous = None;
            let mut attrs: Vec<(u16, Node)> = Vec::new();
            for (t, n) in data {
                let drop = match (name.as_str(), *t) {
                    ("lookup", NFTA_LOOKUP_SET_ID) | ("dynset", NFTA_DYNSET_SET_ID) => true,
                    // Counter values are state, not configuration.
                    ("counter", _) => true,
                    // The kernel fills in max = min and the MAP_IPS / PROTO_SPECIFIED flags.
                    ("nat", NFTA_NAT_REG_ADDR_MAX) => {
                        attr(data, NFTA_NAT_REG_ADDR_MAX) == attr(data, NFTA_NAT_REG_ADDR_MIN)
                    }
                    ("nat", NFTA_NAT_REG_PROTO_MAX) => {
                        attr(data, NFTA_NAT_REG_PROTO_MAX) == attr(data, NFTA_NAT_REG_PROTO_MIN)
                    }
                    ("nat", NFTA_NAT_FLAGS) => {
                        let flags = be32(data, NFTA_NAT_FLAGS).unwrap_or(0) & !NAT_FILLED_FLAGS;
                        if flags != 0 {
                            attrs.push((*t, Node::Leaf(flags.to_be_bytes().to_vec())));
                        }
                        true
                    }
                    // Attributes the kernel dumps with their default (0) where nft sends none.
                    // and the reverse: a zero offset nft sends but the kernel does not dump.
                    ("lookup", NFTA_LOOKUP_FLAGS)
                    | ("dynset", NFTA_DYNSET_FLAGS)
                    | ("dynset", NFTA_DYNSET_TIMEOUT)
                    | ("bitwise", NFTA_BITWISE_OP)
                    | ("hash", NFTA_HASH_OFFSET) => is_zero(n),
                    ("lookup", NFTA_LOOKUP_SET) => {
                        let set = string(data, NFTA_LOOKUP_SET).unwrap_or_default();
                        if set.starts_with("__set") || set.starts_with("__map") {
                            let id = be32(data, NFTA_LOOKUP_SET_ID);
                            anonymous = Some(anon.anonymous(&set, id).unwrap_or(SetImage {
                                definition: vec![(0, Node::Leaf(set.into_bytes()))],
                                elements: None,
                            }));
                            true
                        } else {
                            false
                        }
                    }
                    _ => false,
                };
                if !drop {
                    attrs.push((*t, n.clone()));
                }
            }
            attrs.sort();
            Expression {
                name,
                attrs,
                anonymous,
            }
        })
        .collect()
}

/// Anonymous sets of one side, keyed by id (expected) or name (live).
#[derive(Default)]
struct AnonymousSets {
    by_id: BTreeMap<u32, SetImage>,
    by_name: BTreeMap<String, SetImage>,
}

impl Anonymous for AnonymousSets {
    fn anonymous(&self, name: &str, id: Option<u32>) -> Option<SetImage> {
        id.and_then(|id| self.by_id.get(&id))
            .or_else(|| self.by_name.get(name))
            .cloned()
    }
}

/// Sets and elements of one side: (name, id, attributes) and element lists.
fn collect_sets<'a>(
    sets: impl Iterator<Item = &'a [(u16, Node)]>,
    elements: impl Iterator<Item = &'a [(u16, Node)]>,
) -> (BTreeMap<String, SetImage>, AnonymousSets) {
    let mut named = BTreeMap::new();
    let mut anon = AnonymousSets::default();
    let mut ids: BTreeMap<u32, String> = BTreeMap::new();
    for s in sets {
        let name = string(s, NFTA_SET_NAME).unwrap_or_default();
        let image = SetImage::new(s);
        let flags = be32(s, NFTA_SET_FLAGS).unwrap_or(0);
        if flags & set_flags::ANONYMOUS != 0 {
            match be32(s, NFTA_SET_ID) {
                Some(id) => {
                    anon.by_id.insert(id, image);
                }
                None => {
                    anon.by_name.insert(name, image);
                }
            }
        } else {
            if let Some(id) = be32(s, NFTA_SET_ID) {
                ids.insert(id, name.clone());
            }
            named.insert(name, image);
        }
    }
    for list in elements {
        let name = string(list, NFTA_SET_ELEM_LIST_SET).unwrap_or_default();
        let target = match be32(list, NFTA_SET_ELEM_LIST_SET_ID) {
            Some(id) if anon.by_id.contains_key(&id) => anon.by_id.get_mut(&id),
            _ => named.get_mut(&name).or_else(|| anon.by_name.get_mut(&name)),
        };
        if let Some(set) = target {
            set.add_elements(list);
        }
    }
    for s in named.values_mut() {
        s.finish();
    }
    for s in anon.by_id.values_mut().chain(anon.by_name.values_mut()) {
        s.finish();
    }
    (named, anon)
}

/// Why reading the live table failed.
#[derive(Debug)]
pub enum ReadError {
    Build(BuildError),
    Io(io::Error),
    List(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Build(e) => write!(f, "cannot encode the ruleset: {e}"),
            ReadError::Io(e) if e.raw_os_error() == Some(libc::EPERM) => {
                f.write_str("permission denied: reading nftables needs CAP_NET_ADMIN (run as root)")
            }
            ReadError::Io(e) => write!(f, "reading the ruleset from the kernel failed: {e}"),
            ReadError::List(e) => write!(f, "listing tables and chains failed: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// What `apply` would send, as an image.
fn expected(rs: &Ruleset, ids: &mut RuleIds) -> Result<Image, ReadError> {
    let batch = lower::replace_batch(rs).map_err(ReadError::Build)?;
    let messages = batch.messages();
    let trees = |t: u16| -> Vec<Attrs> {
        messages
            .iter()
            .filter(|m| m.1 == t)
            .map(|m| tree(m.2))
            .collect()
    };
    let (sets, elements) = (trees(NFT_MSG_NEWSET), trees(NFT_MSG_NEWSETELEM));
    let (sets, anon) = collect_sets(
        sets.iter().map(Vec::as_slice),
        elements.iter().map(Vec::as_slice),
    );
    let mut rules: BTreeMap<String, Vec<(String, u32)>> = BTreeMap::new();
    for c in &rs.chains {
        rules.insert(c.name.clone(), Vec::new());
    }
    // One rule's tree at a time: at 100k rules, all of them at once take gigabytes.
    for (label, _, raw) in messages.iter().filter(|m| m.1 == NFT_MSG_NEWRULE) {
        let attrs = tree(raw);
        let chain = string(&attrs, NFTA_RULE_CHAIN).unwrap_or_default();
        let id = ids.id(&expressions(&attrs, &anon));
        rules
            .entry(chain)
            .or_default()
            .push((label.to_string(), id));
    }
    Ok(Image { sets, rules })
}

/// The table as the kernel holds it (`None` if it does not exist).
fn live(
    socket: &Socket,
    rs: &Ruleset,
    chains: &[String],
    ids: &mut RuleIds,
) -> Result<Image, ReadError> {
    let family = crate::lower::family(rs.family).raw();
    let mut name = rs.table.clone().into_bytes();
    name.push(0);
    let sets: Vec<Vec<(u16, Node)>> = socket
        .dump(NFT_MSG_GETSET, family, &[(NFTA_SET_TABLE, &name)])
        .map_err(ReadError::Io)?
        .iter()
        .map(|m| tree(m))
        .collect();
    let mut element_lists = Vec::new();
    for s in &sets {
        let mut set_name = string(s, NFTA_SET_NAME).unwrap_or_default().into_bytes();
        set_name.push(0);
        let replies = socket
            .dump(
                NFT_MSG_GETSETELEM,
                family,
                &[
                    (NFTA_SET_ELEM_LIST_TABLE, &name),
                    (NFTA_SET_ELEM_LIST_SET, &set_name),
                ],
            )
            .map_err(ReadError::Io)?;
        element_lists.extend(replies.iter().map(|m| tree(m)));
    }
    let (named, anon) = collect_sets(
        sets.iter().map(Vec::as_slice),
        element_lists.iter().map(Vec::as_slice),
    );
    let mut rules: BTreeMap<String, Vec<(String, u32)>> = BTreeMap::new();
    // One dump per chain: the kernel restarts every reply of a dump at the first rule of
    // what it lists, so listing short chains one by one is linear where one dump of the
    // whole table is quadratic. Each rule is taken as it arrives, not the whole dump first.
    for chain_name in chains {
        let mut chain_z = chain_name.clone().into_bytes();
        chain_z.push(0);
        socket
            .dump_each(
                (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
                family,
                &[(NFTA_RULE_TABLE, &name), (NFTA_RULE_CHAIN, &chain_z)],
                |payload| {
                    let attrs = tree(payload.get(4..).unwrap_or(&[]));
                    if string(&attrs, NFTA_RULE_TABLE).as_deref() != Some(rs.table.as_str()) {
                        return Ok(());
                    }
                    let chain = string(&attrs, NFTA_RULE_CHAIN).unwrap_or_default();
                    let handle = leaf(&attrs, NFTA_RULE_HANDLE)
                        .and_then(|v| Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?)))
                        .unwrap_or(0);
                    let place = format!("chain {chain}, rule handle {handle}");
                    let id = ids.id(&expressions(&attrs, &anon));
                    rules.entry(chain).or_default().push((place, id));
                    Ok(())
                },
            )
            .map_err(ReadError::Io)?;
    }
    Ok(Image { sets: named, rules })
}

/// One way the live table differs from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference(pub String);

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Compares the live table with the compiled ruleset; empty when they are the same.
pub fn diff(socket: &Socket, rs: &Ruleset) -> Result<Vec<Difference>, ReadError> {
    let mut out = Vec::new();
    let family = crate::lower::family(rs.family).raw();
    let mut table = rs.table.clone().into_bytes();
    table.push(0);
    let chains: Vec<Vec<(u16, Node)>> = socket
        .dump(NFT_MSG_GETCHAIN, family, &[(NFTA_CHAIN_TABLE, &table)])
        .map_err(ReadError::Io)?
        .iter()
        .map(|m| tree(m))
        .filter(|c| string(c, NFTA_CHAIN_TABLE).as_deref() == Some(rs.table.as_str()))
        .collect();
    if chains.is_empty() {
        out.push(Difference(format!(
            "table {} {} does not exist (not applied, or flushed)",
            rs.family, rs.table
        )));
        return Ok(out);
    }
    compare_chains(&chains, rs, &mut out);
    let names: Vec<String> = chains
        .iter()
        .filter_map(|c| string(c, NFTA_CHAIN_NAME))
        .collect();
    // The spec's side is all CPU (lowering, parsing) and the live side mostly waits for the
    // kernel: at 100k rules, building them side by side saves about half the time.
    let (want, have) = std::thread::scope(|s| {
        let want = s.spawn(|| {
            let mut ids = RuleIds::default();
            expected(rs, &mut ids).map(|image| (image, ids))
        });
        let mut live_ids = RuleIds::default();
        let have = live(socket, rs, &names, &mut live_ids);
        let want = want.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (want, have.map(|image| (image, live_ids)))
    });
    let (want, mut ids) = want?;
    let (mut have, live_ids) = have?;
    // One numbering: the live side's rules renumbered by the spec side's ids.
    let renumber = ids.absorb(live_ids);
    for rules in have.rules.values_mut() {
        for (_, id) in rules.iter_mut() {
            *id = renumber[*id as usize];
        }
    }
    compare_sets(&want.sets, &have.sets, &mut out);
    for (chain, want_rules) in &want.rules {
        let empty = Vec::new();
        let have_rules = have.rules.get(chain).unwrap_or(&empty);
        compare_rules(want_rules, have_rules, &mut out);
    }
    for (chain, have_rules) in &have.rules {
        if !want.rules.contains_key(chain) {
            for (place, _) in have_rules {
                out.push(Difference(format!("{place}: not in the spec")));
            }
        }
    }
    Ok(out)
}

/// (type, hook number, priority, policy) of a base chain.
type HookImage = (String, u32, i32, u32);

fn compare_chains(live: &[Vec<(u16, Node)>], rs: &Ruleset, out: &mut Vec<Difference>) {
    let live: BTreeMap<String, Option<HookImage>> = live
        .iter()
        .map(|c| {
            let hook = nested(c, NFTA_CHAIN_HOOK);
            let image = (!hook.is_empty()).then(|| {
                (
                    string(c, NFTA_CHAIN_TYPE).unwrap_or_default(),
                    be32(hook, NFTA_HOOK_HOOKNUM).unwrap_or(u32::MAX),
                    be32(hook, NFTA_HOOK_PRIORITY).unwrap_or(0) as i32,
                    be32(c, NFTA_CHAIN_POLICY).unwrap_or(u32::MAX),
                )
            });
            (string(c, NFTA_CHAIN_NAME).unwrap_or_default(), image)
        })
        .collect();
    for chain in &rs.chains {
        let Some(have) = live.get(&chain.name) else {
            out.push(Difference(format!("chain {}: missing", chain.name)));
            continue;
        };
        let want = chain.base.map(|b| {
            let kind = match b.kind {
                ModelChainType::Filter => "filter",
                ModelChainType::Route => "route",
                ModelChainType::Nat => "nat",
            };
            // NF_INET_PRE_ROUTING 0, LOCAL_OUT 3, POST_ROUTING 4; policy NF_ACCEPT 1.
            let hook = match b.hook {
                ModelHook::Prerouting => 0,
                ModelHook::Output => 3,
                ModelHook::Postrouting => 4,
            };
            (kind.to_string(), hook, b.priority.value(), 1)
        });
        if *have != want {
            let show = |h: &Option<HookImage>| match h {
                None => "a regular chain".to_string(),
                Some((t, hook, prio, policy)) => {
                    let policy = if *policy == 1 { "accept" } else { "drop" };
                    format!("type {t} hook {hook} priority {prio} policy {policy}")
                }
            };
            out.push(Difference(format!(
                "chain {}: is {}, the spec has {}",
                chain.name,
                show(have),
                show(&want)
            )));
        }
    }
    for name in live.keys() {
        if rs.chain(name).is_none() {
            out.push(Difference(format!("chain {name}: not in the spec")));
        }
    }
}

fn compare_sets(
    want: &BTreeMap<String, SetImage>,
    have: &BTreeMap<String, SetImage>,
    out: &mut Vec<Difference>,
) {
    for (name, w) in want {
        let Some(h) = have.get(name) else {
            out.push(Difference(format!("set {name}: missing")));
            continue;
        };
        for (t, what) in SET_DEFINITION {
            // The kernel lists no flags attribute for a set without flags.
            let same = if t == NFTA_SET_FLAGS {
                set_flags_of(&w.definition) == set_flags_of(&h.definition)
            } else if t == NFTA_SET_DESC {
                // ... and an empty description nest for a set without a size.
                set_size_of(&w.definition) == set_size_of(&h.definition)
            } else {
                attr(&w.definition, t) == attr(&h.definition, t)
            };
            if !same {
                out.push(Difference(format!("set {name}: {what} differs")));
            }
        }
        if let (Some(we), Some(he)) = (&w.elements, &h.elements) {
            let (missing, extra) = sorted_difference(we, he);
            if missing + extra > 0 {
                out.push(Difference(format!(
                    "set {name}: {missing} element(s) of the spec missing, {extra} not in the spec"
                )));
            }
        }
    }
    for name in have.keys() {
        if !want.contains_key(name) {
            out.push(Difference(format!("set {name}: not in the spec")));
        }
    }
}

/// (in `want` only, in `have` only) of two sorted lists, in one pass.
fn sorted_difference<T: Ord>(want: &[T], have: &[T]) -> (usize, usize) {
    let (mut i, mut j, mut missing, mut extra) = (0, 0, 0, 0);
    while i < want.len() && j < have.len() {
        match want[i].cmp(&have[j]) {
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                missing += 1;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                extra += 1;
                j += 1;
            }
        }
    }
    (missing + want.len() - i, extra + have.len() - j)
}

/// Rule lists compared in order (longest common subsequence), so one deleted or inserted
/// rule is reported as that, not as every rule after it.
fn compare_rules(want: &[(String, u32)], have: &[(String, u32)], out: &mut Vec<Difference>) {
    let want_ids: Vec<u32> = want.iter().map(|r| r.1).collect();
    let have_ids: Vec<u32> = have.iter().map(|r| r.1).collect();
    let (mut i, mut j) = (0, 0);
    for step in align(&want_ids, &have_ids) {
        match step {
            Step::Same => {
                i += 1;
                j += 1;
            }
            Step::Extra => {
                out.push(Difference(format!("{}: not in the spec", have[j].0)));
                j += 1;
            }
            Step::Missing => {
                out.push(Difference(format!("{}: missing", want[i].0)));
                i += 1;
            }
        }
    }
}

/// Packets and bytes of a `counter` expression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// The counters of one gateway (in its `gw_` chains).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayCounters {
    /// Every packet of the gateway's connections, both directions.
    pub traffic: Count,
    /// First packets of its new connections.
    pub new_connections: Count,
}

fn be64(attrs: &[(u16, Node)], t: u16) -> Option<u64> {
    leaf(attrs, t).and_then(|v| Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?)))
}

/// Reads the gateways' counters, by gateway name: in every chain of the compiled ruleset
/// with counter rules, each live rule is the compiled rule at its place (as `diff` compares
/// them), and the compiled rule says what its counter counts
/// ([`nftbalance_ruleset::Counted`]). `None` if the table or such a chain is missing or has
/// another number of counter rules than the compiled one.
pub fn account(
    socket: &Socket,
    rs: &Ruleset,
) -> Result<Option<BTreeMap<String, GatewayCounters>>, ReadError> {
    let mut by_gateway: BTreeMap<String, GatewayCounters> = BTreeMap::new();
    let counting = rs
        .chains
        .iter()
        .filter(|c| c.rules.iter().any(|r| r.counts.is_some()));
    for chain in counting {
        let Some(counts) = chain_counters(socket, rs, &chain.name)? else {
            return Ok(None);
        };
        let compiled: Vec<_> = chain
            .rules
            .iter()
            .filter(|r| r.stmts.contains(&nftbalance_ruleset::Stmt::Counter))
            .collect();
        if counts.len() != compiled.len() {
            return Ok(None);
        }
        for (rule, count) in compiled.into_iter().zip(counts) {
            let Some(counted) = &rule.counts else {
                continue;
            };
            let g = by_gateway.entry(counted.gateway.clone()).or_default();
            match counted.what {
                Counting::Traffic => g.traffic = count,
                Counting::NewConnections => g.new_connections = count,
            }
        }
    }
    Ok(Some(by_gateway))
}

/// The counter values of a live chain's rules that have one, in order; `None` when the chain
/// does not exist.
fn chain_counters(
    socket: &Socket,
    rs: &Ruleset,
    chain: &str,
) -> Result<Option<Vec<Count>>, ReadError> {
    let family = crate::lower::family(rs.family).raw();
    let mut table = rs.table.clone().into_bytes();
    table.push(0);
    let mut chain_z = chain.as_bytes().to_vec();
    chain_z.push(0);
    let replies = match socket.dump(
        NFT_MSG_GETRULE,
        family,
        &[(NFTA_RULE_TABLE, &table), (NFTA_RULE_CHAIN, &chain_z)],
    ) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    };
    Ok(Some(
        replies
            .iter()
            .map(|m| tree(m))
            .filter(|r| {
                string(r, NFTA_RULE_TABLE).as_deref() == Some(rs.table.as_str())
                    && string(r, NFTA_RULE_CHAIN).as_deref() == Some(chain)
            })
            .filter_map(|r| counter_of(&r))
            .collect(),
    ))
}

/// The values of a rule's counter expression, if it has one.
fn counter_of(rule: &[(u16, Node)]) -> Option<Count> {
    nested(rule, NFTA_RULE_EXPRESSIONS)
        .iter()
        .find_map(|(_, e)| {
            let Node::Nested(e) = e else { return None };
            if string(e, NFTA_EXPR_NAME).as_deref() != Some("counter") {
                return None;
            }
            let data = nested(e, NFTA_EXPR_DATA);
            Some(Count {
                packets: be64(data, NFTA_COUNTER_PACKETS).unwrap_or(0),
                bytes: be64(data, NFTA_COUNTER_BYTES).unwrap_or(0),
            })
        })
}

/// Whether the table exists, told by its chains (nftbalance's tables always have some): for
/// the commands that must know whether another table's rules are in force.
pub fn table_exists(
    socket: &Socket,
    family: nftbalance_ruleset::Family,
    table: &str,
) -> Result<bool, ReadError> {
    let mut name = table.as_bytes().to_vec();
    name.push(0);
    let chains = socket
        .dump(
            NFT_MSG_GETCHAIN,
            crate::lower::family(family).raw(),
            &[(NFTA_CHAIN_TABLE, &name)],
        )
        .map_err(ReadError::Io)?;
    Ok(chains
        .iter()
        .any(|m| string(&tree(m), NFTA_CHAIN_TABLE).as_deref() == Some(table)))
}
