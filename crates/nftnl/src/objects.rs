//! Tables, chains, sets and set elements (safe descriptions), plus helpers that encode values the
//! way nft 1.0.6 does.

use crate::consts::{SET_ELEM_F_INTERVAL_OPEN, UDATA_SET_ELEM_FLAGS};
use crate::expr::Verdict;
use crate::BuildError;

/// nf_tables address family (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `NFPROTO_INET` (1)
    Inet,
    /// `NFPROTO_IPV4` (2)
    Ip,
    /// `NFPROTO_ARP` (3)
    Arp,
    /// `NFPROTO_NETDEV` (5)
    Netdev,
    /// `NFPROTO_BRIDGE` (7)
    Bridge,
    /// `NFPROTO_IPV6` (10)
    Ip6,
}

impl Family {
    /// The raw `NFPROTO_*` value.
    pub const fn raw(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Arp => 3,
            Family::Netdev => 5,
            Family::Bridge => 7,
            Family::Ip6 => 10,
        }
    }

    /// nft's name for the family.
    pub const fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Arp => "arp",
            Family::Netdev => "netdev",
            Family::Bridge => "bridge",
            Family::Ip6 => "ip6",
        }
    }
}

/// A table (`NFT_MSG_NEWTABLE`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    /// family
    pub family: Family,
    /// name
    pub name: String,
    /// `NFT_TABLE_F_*` (see [`crate::table_flags`]); nft 1.0.6 always sends the attribute, 0 by
    /// default.
    pub flags: u32,
}

impl Table {
    /// A table with no flags.
    pub fn new(family: Family, name: impl Into<String>) -> Self {
        Table {
            family,
            name: name.into(),
            flags: 0,
        }
    }
}

/// Base chain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainType {
    /// `filter`
    Filter,
    /// `route` (output hook only; re-routes when mark/addresses change)
    Route,
    /// `nat`
    Nat,
}

impl ChainType {
    pub(crate) fn name(self) -> &'static std::ffi::CStr {
        match self {
            ChainType::Filter => c"filter",
            ChainType::Route => c"route",
            ChainType::Nat => c"nat",
        }
    }
}

/// Netfilter hook (`NF_INET_*`) for ip / ip6 / inet base chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `NF_INET_PRE_ROUTING`
    Prerouting,
    /// `NF_INET_LOCAL_IN`
    Input,
    /// `NF_INET_FORWARD`
    Forward,
    /// `NF_INET_LOCAL_OUT`
    Output,
    /// `NF_INET_POST_ROUTING`
    Postrouting,
}

impl Hook {
    pub(crate) fn raw(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }
}

/// Base chain policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// `NF_ACCEPT`
    Accept,
    /// `NF_DROP`
    Drop,
}

/// nft's named chain priorities for the ip/ip6/inet families.
pub mod priority {
    /// `raw`
    pub const RAW: i32 = -300;
    /// `mangle`
    pub const MANGLE: i32 = -150;
    /// `dstnat`
    pub const DSTNAT: i32 = -100;
    /// `filter`
    pub const FILTER: i32 = 0;
    /// `security`
    pub const SECURITY: i32 = 50;
    /// `srcnat`
    pub const SRCNAT: i32 = 100;
}

/// Hook registration of a base chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseChain {
    /// filter / route / nat
    pub chain_type: ChainType,
    /// hook
    pub hook: Hook,
    /// priority (see [`priority`])
    pub priority: i32,
    /// policy; nft 1.0.6 always sends it for base chains (accept by default)
    pub policy: Option<Policy>,
}

/// A chain (`NFT_MSG_NEWCHAIN`). `base: None` is a regular (jump target) chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// family of the table
    pub family: Family,
    /// table name
    pub table: String,
    /// chain name
    pub name: String,
    /// hook registration for base chains
    pub base: Option<BaseChain>,
}

impl Chain {
    /// A regular chain.
    pub fn regular(family: Family, table: impl Into<String>, name: impl Into<String>) -> Self {
        Chain {
            family,
            table: table.into(),
            name: name.into(),
            base: None,
        }
    }

    /// A base chain.
    pub fn base(
        family: Family,
        table: impl Into<String>,
        name: impl Into<String>,
        chain_type: ChainType,
        hook: Hook,
        priority: i32,
        policy: Policy,
    ) -> Self {
        Chain {
            family,
            table: table.into(),
            name: name.into(),
            base: Some(BaseChain {
                chain_type,
                hook,
                priority,
                policy: Some(policy),
            }),
        }
    }
}

/// Data carried by map elements (`NFTA_SET_DATA_TYPE` / `NFTA_SET_DATA_LEN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SetData {
    /// nft datatype id (see [`crate::datatype`]) or [`crate::NFT_DATA_VERDICT`]
    pub data_type: u32,
    /// bytes (0 for verdicts)
    pub data_len: u32,
}

impl SetData {
    /// Verdict map data (`NFT_DATA_VERDICT`, length 0).
    pub const fn verdict() -> Self {
        SetData {
            data_type: crate::consts::NFT_DATA_VERDICT,
            data_len: 0,
        }
    }
}

/// A set or map (`NFT_MSG_NEWSET`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetSpec {
    /// family of the table
    pub family: Family,
    /// table name
    pub table: String,
    /// set name; anonymous sets use the templates `"__set%d"` / `"__map%d"` like nft (the kernel
    /// fills in the number)
    pub name: String,
    /// `NFT_SET_*` flags (see [`crate::set_flags`])
    pub flags: u32,
    /// key datatype id (see [`crate::datatype`])
    pub key_type: u32,
    /// key length in bytes
    pub key_len: u32,
    /// for maps (`NFT_SET_MAP`): the data type / length
    pub data: Option<SetData>,
    /// default element timeout in milliseconds (`NFTA_SET_TIMEOUT`)
    pub timeout_ms: Option<u64>,
    /// `NFTA_SET_DESC_SIZE`; nft sends it for anonymous sets (element count, ×2 for interval sets)
    pub size: Option<u32>,
    /// `NFTA_SET_USERDATA` (nft's TLVs, see [`Udata`])
    pub userdata: Option<Vec<u8>>,
}

impl SetSpec {
    /// A set with only the mandatory fields filled in.
    pub fn new(
        family: Family,
        table: impl Into<String>,
        name: impl Into<String>,
        key_type: u32,
        key_len: u32,
    ) -> Self {
        SetSpec {
            family,
            table: table.into(),
            name: name.into(),
            flags: 0,
            key_type,
            key_len,
            data: None,
            timeout_ms: None,
            size: None,
            userdata: None,
        }
    }
}

/// Data of one map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ElemData {
    /// A value of `data_len` bytes.
    Value(Vec<u8>),
    /// A verdict (verdict maps).
    Verdict(Verdict),
}

/// One set element (an entry of `NFTA_SET_ELEM_LIST_ELEMENTS`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetElem {
    /// key bytes (exactly `key_len`)
    pub key: Vec<u8>,
    /// `NFTA_SET_ELEM_KEY_END` (only used by nft for concatenated interval sets; nft 1.0.6 uses
    /// interval-end *elements* for plain interval sets, see [`interval_elements`])
    pub key_end: Option<Vec<u8>>,
    /// `NFT_SET_ELEM_*` flags (see [`crate::elem_flags`]); the attribute is omitted when 0
    pub flags: u32,
    /// data for map elements
    pub data: Option<ElemData>,
    /// per-element timeout in milliseconds
    pub timeout_ms: Option<u64>,
    /// `NFTA_SET_ELEM_USERDATA`
    pub userdata: Option<Vec<u8>>,
}

impl SetElem {
    /// A set element with just a key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        SetElem {
            key: key.into(),
            key_end: None,
            flags: 0,
            data: None,
            timeout_ms: None,
            userdata: None,
        }
    }

    /// A map element `key : value`.
    pub fn mapping(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        SetElem {
            data: Some(ElemData::Value(value.into())),
            ..SetElem::key(key)
        }
    }

    /// A verdict map element `key : verdict`.
    pub fn verdict(key: impl Into<Vec<u8>>, verdict: Verdict) -> Self {
        SetElem {
            data: Some(ElemData::Verdict(verdict)),
            ..SetElem::key(key)
        }
    }

    /// Marks this element as an interval end (`NFT_SET_ELEM_INTERVAL_END`).
    pub fn interval_end(mut self) -> Self {
        self.flags |= crate::consts::elem_flags::INTERVAL_END;
        self
    }

    /// Upper bound of the serialised size of this element.
    pub(crate) fn size_bound(&self) -> usize {
        use crate::expr::attr;
        let data = match &self.data {
            None => 0,
            Some(ElemData::Value(v)) => 4 + attr(v.len()),
            Some(ElemData::Verdict(v)) => {
                4 + 4 + attr(4) + attr(v.chain().map_or(0, |c| c.len() + 1))
            }
        };
        4 // element nest
            + if self.flags != 0 { attr(4) } else { 0 }
            + 4 + attr(self.key.len())
            + self.key_end.as_ref().map_or(0, |k| 4 + attr(k.len()))
            + data
            + if self.timeout_ms.is_some() { attr(8) } else { 0 }
            + self.userdata.as_ref().map_or(0, |u| attr(u.len()))
            + 8 // margin
    }
}

/// A key range for an interval set: `[start, end)`; `end == None` means "up to the largest key"
/// (nft then sends no interval-end element for it).
///
/// Keys are compared as big-endian byte strings, which is how the kernel's rbtree orders them;
/// encode the keys accordingly (addresses and ports are network order already; numgen/jhash
/// results are converted with `byteorder hton` by nft before the lookup, so their map keys are
/// big-endian too).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Interval {
    /// first key in the range
    pub start: Vec<u8>,
    /// first key after the range, or `None` if the range runs to the end of the key space
    pub end: Option<Vec<u8>>,
    /// map data attached to the start element
    pub data: Option<ElemData>,
}

/// Increments a big-endian byte string; `None` on overflow.
fn be_increment(v: &[u8]) -> Option<Vec<u8>> {
    let mut out = v.to_vec();
    for b in out.iter_mut().rev() {
        let (n, carry) = b.overflowing_add(1);
        *b = n;
        if !carry {
            return Some(out);
        }
    }
    None
}

impl Interval {
    /// The inclusive range `first..=last`.
    pub fn inclusive(first: impl Into<Vec<u8>>, last: &[u8]) -> Self {
        Interval {
            start: first.into(),
            end: be_increment(last),
            data: None,
        }
    }

    /// A single key (`v..=v`), as nft stores single values in interval sets.
    pub fn single(v: impl Into<Vec<u8>>) -> Self {
        let v = v.into();
        let end = be_increment(&v);
        Interval {
            start: v,
            end,
            data: None,
        }
    }

    /// A prefix: `addr/prefix_len` (host bits of `addr` are cleared).
    pub fn prefix(addr: &[u8], prefix_len: u32) -> Result<Self, BuildError> {
        let bits = addr.len() as u32 * 8;
        if prefix_len > bits {
            return Err(BuildError::Invalid(format!(
                "prefix length {prefix_len} exceeds {bits} bits"
            )));
        }
        let mut start = addr.to_vec();
        let mut last = addr.to_vec();
        for (i, (s, l)) in start.iter_mut().zip(last.iter_mut()).enumerate() {
            let lo = i as u32 * 8;
            let keep = prefix_len.saturating_sub(lo).min(8);
            let mask: u8 = if keep == 0 { 0 } else { !0u8 << (8 - keep) };
            *s &= mask;
            *l |= !mask;
        }
        Ok(Interval {
            start,
            end: be_increment(&last),
            data: None,
        })
    }

    /// Attaches map data.
    pub fn with_data(mut self, data: ElemData) -> Self {
        self.data = Some(data);
        self
    }
}

/// Which set interval elements are for: nft 1.0.6 lays out the same ranges differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalLayout {
    /// A named set or map created with its elements: every range keeps its end element, also
    /// where the next range starts.
    Named,
    /// An anonymous set or map: adjacent ranges of a set merge into one, and a map leaves out
    /// the end element where the next range starts.
    Anonymous,
}

/// The elements of an interval set and the size nft declares for it when anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntervalElements {
    pub elements: Vec<SetElem>,
    /// The leading element and two per range (counted before end elements are dropped).
    pub size: u32,
}

/// Turns ranges into the element list nft 1.0.6 sends for an interval set created with its
/// elements (`flags interval` without `auto-merge`, no concatenation); the one encoder of
/// interval elements, for the lowering and for tests alike:
///
/// * ranges are sorted by start; overlapping or empty ranges are an error;
/// * if the first range does not start at zero, a leading all-zero interval-end element comes
///   first;
/// * each range is a start element (carrying the map data) followed by an element flagged
///   `NFT_SET_ELEM_INTERVAL_END` whose key is the first key *after* the range, except as
///   [`IntervalLayout`] says for adjacent ranges;
/// * a range that runs to the top of the key space has no end element and carries the element
///   userdata `NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN`.
pub fn interval_elements(
    mut intervals: Vec<Interval>,
    layout: IntervalLayout,
) -> Result<IntervalElements, BuildError> {
    intervals.sort_by(|a, b| a.start.cmp(&b.start));
    check_intervals(&intervals)?;
    let anonymous = layout == IntervalLayout::Anonymous;
    if anonymous {
        intervals = merge_adjacent(intervals);
    }
    let mut elements = Vec::with_capacity(intervals.len() * 2 + 1);
    let mut size = 0u32;
    if let Some(first) = intervals.first() {
        if first.start.iter().any(|&b| b != 0) {
            elements.push(SetElem::key(vec![0u8; first.start.len()]).interval_end());
            size += 1;
        }
    }
    for (i, iv) in intervals.iter().enumerate() {
        elements.push(SetElem {
            data: iv.data.clone(),
            userdata: iv.end.is_none().then(open_interval_udata),
            ..SetElem::key(iv.start.clone())
        });
        size += 2;
        if let Some(end) = &iv.end {
            let adjacent = anonymous && intervals.get(i + 1).is_some_and(|n| n.start == *end);
            if !adjacent {
                elements.push(SetElem::key(end.clone()).interval_end());
            }
        }
    }
    Ok(IntervalElements { elements, size })
}

/// Sorted intervals must be non-empty and must not overlap.
fn check_intervals(intervals: &[Interval]) -> Result<(), BuildError> {
    for iv in intervals {
        if let Some(end) = &iv.end {
            if end.len() != iv.start.len() || *end <= iv.start {
                return Err(BuildError::Invalid(format!(
                    "empty or malformed interval {:02x?}..{:02x?}",
                    iv.start, end
                )));
            }
        }
    }
    for w in intervals.windows(2) {
        let overlaps = match &w[0].end {
            None => true,
            Some(end) => w[1].start < *end,
        };
        if overlaps {
            return Err(BuildError::Invalid(format!(
                "overlapping intervals starting at {:02x?} and {:02x?}",
                w[0].start, w[1].start
            )));
        }
    }
    Ok(())
}

/// Adjacent ranges of a set (no data) as one range, as nft sends an anonymous set.
fn merge_adjacent(intervals: Vec<Interval>) -> Vec<Interval> {
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for iv in intervals {
        match merged.last_mut() {
            Some(last)
                if last.data.is_none()
                    && iv.data.is_none()
                    && last.end.as_ref() == Some(&iv.start) =>
            {
                last.end = iv.end;
            }
            _ => merged.push(iv),
        }
    }
    merged
}

fn open_interval_udata() -> Vec<u8> {
    Udata::new()
        .put_u32(UDATA_SET_ELEM_FLAGS, SET_ELEM_F_INTERVAL_OPEN)
        .into_bytes()
}

/// Builder for nft's userdata TLVs (`NFTA_SET_USERDATA`, `NFTA_RULE_USERDATA`, ...): a sequence
/// of `type: u8, len: u8, value[len]`, integers in host byte order (`nftnl_udata_put_u32`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Udata(Vec<u8>);

/// `enum byteorder` values nft stores in set userdata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// `BYTEORDER_HOST_ENDIAN` (1): marks, ct state, ifnames, integers
    Host = 1,
    /// `BYTEORDER_BIG_ENDIAN` (2): addresses, ports
    Big = 2,
}

/// Set userdata TLV types (`enum nftnl_udata_set_types`).
pub mod udata_set {
    /// `NFTNL_UDATA_SET_KEYBYTEORDER`
    pub const KEYBYTEORDER: u8 = 0;
    /// `NFTNL_UDATA_SET_DATABYTEORDER`
    pub const DATABYTEORDER: u8 = 1;
    /// `NFTNL_UDATA_SET_MERGE_ELEMENTS`
    pub const MERGE_ELEMENTS: u8 = 2;
    /// `NFTNL_UDATA_SET_KEY_TYPEOF`
    pub const KEY_TYPEOF: u8 = 3;
    /// `NFTNL_UDATA_SET_DATA_TYPEOF`
    pub const DATA_TYPEOF: u8 = 4;
    /// `NFTNL_UDATA_SET_DATA_INTERVAL`
    pub const DATA_INTERVAL: u8 = 6;
    /// `NFTNL_UDATA_SET_COMMENT`
    pub const COMMENT: u8 = 7;
    /// `NFTNL_UDATA_SET_TYPEOF_EXPR` (inside KEY_TYPEOF / DATA_TYPEOF)
    pub const TYPEOF_EXPR: u8 = 0;
    /// `NFTNL_UDATA_SET_TYPEOF_DATA` (inside KEY_TYPEOF / DATA_TYPEOF)
    pub const TYPEOF_DATA: u8 = 1;
}

impl Udata {
    /// Empty buffer.
    pub fn new() -> Self {
        Udata(Vec::new())
    }

    /// Appends a raw TLV. Panics if `value` is longer than 255 bytes.
    pub fn put(mut self, kind: u8, value: &[u8]) -> Self {
        let len = u8::try_from(value.len()).expect("udata value longer than 255 bytes");
        self.0.push(kind);
        self.0.push(len);
        self.0.extend_from_slice(value);
        self
    }

    /// Appends a u32 TLV (host byte order).
    pub fn put_u32(self, kind: u8, value: u32) -> Self {
        self.put(kind, &value.to_ne_bytes())
    }

    /// Appends a NUL-terminated string TLV.
    pub fn put_strz(self, kind: u8, value: &str) -> Self {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v)
    }

    /// Appends a TLV whose value is another TLV list.
    pub fn put_nested(self, kind: u8, inner: Udata) -> Self {
        self.put(kind, &inner.0)
    }

    /// `NFTNL_UDATA_SET_KEYBYTEORDER`
    pub fn key_byteorder(self, order: ByteOrder) -> Self {
        self.put_u32(udata_set::KEYBYTEORDER, order as u32)
    }

    /// `NFTNL_UDATA_SET_DATABYTEORDER`
    pub fn data_byteorder(self, order: ByteOrder) -> Self {
        self.put_u32(udata_set::DATABYTEORDER, order as u32)
    }

    /// `NFTNL_UDATA_SET_DATA_INTERVAL` (nft 1.0.6 sends 0 for every map)
    pub fn data_interval(self, interval: bool) -> Self {
        self.put_u32(udata_set::DATA_INTERVAL, interval as u32)
    }

    /// `NFTNL_UDATA_SET_MERGE_ELEMENTS` (nft's `auto-merge`)
    pub fn merge_elements(self, merge: bool) -> Self {
        self.put_u32(udata_set::MERGE_ELEMENTS, merge as u32)
    }

    /// `NFTNL_UDATA_SET_KEY_TYPEOF` / `DATA_TYPEOF` (`which`) describing the expression a set
    /// key / data was derived from: `{ TYPEOF_EXPR: expr_type, TYPEOF_DATA: { expr_data } }`.
    pub fn typeof_expr(self, which: u8, expr_type: u32, expr_data: Udata) -> Self {
        let inner = Udata::new()
            .put_u32(udata_set::TYPEOF_EXPR, expr_type)
            .put_nested(udata_set::TYPEOF_DATA, expr_data);
        self.put_nested(which, inner)
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Value encoders matching nft 1.0.6's register layout.
pub mod value {
    /// An interface name as nft puts it in a register / set key: the name NUL-padded to 16
    /// bytes (`IFNAMSIZ`). Exact names only (wildcards `eth*` are encoded differently by nft).
    /// Panics if the name is 16 bytes or longer.
    pub fn ifname(name: &str) -> Vec<u8> {
        assert!(name.len() < 16, "interface name {name:?} too long");
        let mut v = vec![0u8; 16];
        v[..name.len()].copy_from_slice(name.as_bytes());
        v
    }

    /// A 32-bit value in host byte order (marks, ct state bits, meta/ct keys nft treats as host
    /// order, vmap keys for `ct mark`).
    pub fn host_u32(v: u32) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }

    /// A 32-bit value in network byte order (numgen/jhash map keys after `byteorder hton`).
    pub fn be_u32(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    /// A 16-bit port in network byte order.
    pub fn port(v: u16) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::elem_flags::INTERVAL_END;

    fn keys(elems: &[SetElem]) -> Vec<(Vec<u8>, bool)> {
        elems
            .iter()
            .map(|e| (e.key.clone(), e.flags & INTERVAL_END != 0))
            .collect()
    }

    #[test]
    fn prefix_bounds() {
        let p = Interval::prefix(&[10, 1, 2, 3], 8).unwrap();
        assert_eq!(p.start, vec![10, 0, 0, 0]);
        assert_eq!(p.end, Some(vec![11, 0, 0, 0]));
        let p = Interval::prefix(&[192, 168, 1, 77], 24).unwrap();
        assert_eq!(p.start, vec![192, 168, 1, 0]);
        assert_eq!(p.end, Some(vec![192, 168, 2, 0]));
        let p = Interval::prefix(&[255, 255, 255, 255], 1).unwrap();
        assert_eq!(p.start, vec![128, 0, 0, 0]);
        assert_eq!(p.end, None);
        let p = Interval::prefix(&[1, 2, 3, 4], 0).unwrap();
        assert_eq!(p.start, vec![0; 4]);
        assert_eq!(p.end, None);
        let p = Interval::prefix(&[1, 2, 3, 4], 32).unwrap();
        assert_eq!(p.end, Some(vec![1, 2, 3, 5]));
        assert!(Interval::prefix(&[1, 2, 3, 4], 33).is_err());
        let mut v6 = [0u8; 16];
        v6[0] = 0xfe;
        v6[1] = 0x80;
        let p = Interval::prefix(&v6, 10).unwrap();
        let mut end = [0u8; 16];
        end[0] = 0xfe;
        end[1] = 0xc0;
        assert_eq!(p.end, Some(end.to_vec()));
    }

    #[test]
    fn nft_interval_layout_exclude_v4() {
        // nft: elements = { 10.0.0.0/8, 192.168.0.0/16 } =>
        // 0.0.0.0 [end], 10.0.0.0, 11.0.0.0 [end], 192.168.0.0, 192.169.0.0 [end]
        let elems = interval_elements(
            vec![
                Interval::prefix(&[192, 168, 0, 0], 16).unwrap(),
                Interval::prefix(&[10, 0, 0, 0], 8).unwrap(),
            ],
            IntervalLayout::Named,
        )
        .unwrap()
        .elements;
        assert_eq!(
            keys(&elems),
            vec![
                (vec![0, 0, 0, 0], true),
                (vec![10, 0, 0, 0], false),
                (vec![11, 0, 0, 0], true),
                (vec![192, 168, 0, 0], false),
                (vec![192, 169, 0, 0], true),
            ]
        );
    }

    #[test]
    fn nft_interval_layout_numgen_map() {
        // nft: numgen inc mod 6 map { 0-2 : 1, 3-4 : 2, 5 : 3 } =>
        // 0 : 1, 3 : 2, 5 : 3, 6 [end]   (adjacent ranges share the boundary, no zero element)
        let m = |v: u32| ElemData::Value(value::host_u32(v));
        let elems = interval_elements(
            vec![
                Interval::inclusive(value::be_u32(0), &value::be_u32(2)).with_data(m(1)),
                Interval::inclusive(value::be_u32(3), &value::be_u32(4)).with_data(m(2)),
                Interval::single(value::be_u32(5)).with_data(m(3)),
            ],
            IntervalLayout::Anonymous,
        )
        .unwrap()
        .elements;
        assert_eq!(
            keys(&elems),
            vec![
                (value::be_u32(0), false),
                (value::be_u32(3), false),
                (value::be_u32(5), false),
                (value::be_u32(6), true),
            ]
        );
        assert_eq!(elems[1].data, Some(m(2)));
        assert_eq!(elems[3].data, None);
    }

    #[test]
    fn interval_to_top_has_no_end() {
        let top = vec![Interval::prefix(&[128, 0, 0, 0], 1).unwrap()];
        let elems = interval_elements(top, IntervalLayout::Named)
            .unwrap()
            .elements;
        assert_eq!(
            keys(&elems),
            vec![(vec![0, 0, 0, 0], true), (vec![128, 0, 0, 0], false)]
        );
        let all = vec![Interval::prefix(&[0; 4], 0).unwrap()];
        let elems = interval_elements(all, IntervalLayout::Named)
            .unwrap()
            .elements;
        assert_eq!(keys(&elems), vec![(vec![0, 0, 0, 0], false)]);
    }

    #[test]
    fn overlap_rejected() {
        let r = interval_elements(
            vec![
                Interval::prefix(&[10, 0, 0, 0], 8).unwrap(),
                Interval::prefix(&[10, 1, 0, 0], 16).unwrap(),
            ],
            IntervalLayout::Named,
        );
        assert!(r.is_err());
    }

    #[test]
    fn udata_encoding() {
        // bytes nft 1.0.6 sends for `map ingress_mark { type ifname : mark }`
        let u = Udata::new()
            .key_byteorder(ByteOrder::Host)
            .data_byteorder(ByteOrder::Host)
            .data_interval(false);
        let mut expect = vec![0, 4];
        expect.extend(1u32.to_ne_bytes());
        expect.extend([1, 4]);
        expect.extend(1u32.to_ne_bytes());
        expect.extend([6, 4]);
        expect.extend(0u32.to_ne_bytes());
        assert_eq!(u.into_bytes(), expect);
    }

    #[test]
    fn ifname_padding() {
        let v = value::ifname("eth0");
        assert_eq!(v.len(), 16);
        assert_eq!(&v[..5], b"eth0\0");
        assert!(v[4..].iter().all(|&b| b == 0));
    }
}
