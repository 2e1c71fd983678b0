//! Rule expressions: a safe Rust description ([`Expr`]) and its conversion to libnftnl
//! `nftnl_expr` objects (the pattern of nftnl's `Expression::to_expr`, on nftnl-sys directly).
//!
//! Registers are explicit: nothing here allocates registers for you. Values (`Vec<u8>`) are
//! passed to the kernel byte for byte, so the caller decides the byte order (see the crate docs
//! for how nft 1.0.6 encodes each kind of value).

use std::ffi::CString;

use nftnl_sys as sys;

use crate::consts::{self, NFT_DATA_VALUE_MAXLEN, NFT_LOOKUP_F_INV};
use crate::ffi::NlExpr;
use crate::{BuildError, Family};

/// An nf_tables data register.
///
/// `VERDICT` (0) is the verdict register, `R1`..`R4` are the 16-byte legacy registers nft uses
/// (`NFT_REG_1`..`NFT_REG_4`), and [`Register::reg32`] gives the 4-byte registers
/// `NFT_REG32_00`..`NFT_REG32_15` (8..23).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Register(u32);

impl Register {
    /// `NFT_REG_VERDICT`
    pub const VERDICT: Register = Register(0);
    /// `NFT_REG_1`
    pub const R1: Register = Register(1);
    /// `NFT_REG_2`
    pub const R2: Register = Register(2);
    /// `NFT_REG_3`
    pub const R3: Register = Register(3);
    /// `NFT_REG_4`
    pub const R4: Register = Register(4);

    /// `NFT_REG32_00 + n` for `n < 16`.
    pub const fn reg32(n: u8) -> Option<Register> {
        if n < 16 {
            Some(Register(8 + n as u32))
        } else {
            None
        }
    }

    /// The raw register number sent to the kernel.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

/// A verdict: in an [`Expr::Verdict`] (immediate to the verdict register) or as the data of a
/// verdict-map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `NF_ACCEPT`
    Accept,
    /// `NF_DROP`
    Drop,
    /// `NFT_CONTINUE`
    Continue,
    /// `NFT_BREAK`
    Break,
    /// `NFT_RETURN`
    Return,
    /// `NFT_JUMP` to the named chain.
    Jump(String),
    /// `NFT_GOTO` to the named chain.
    Goto(String),
}

impl Verdict {
    pub(crate) fn code(&self) -> i32 {
        match self {
            Verdict::Accept => consts::NF_ACCEPT,
            Verdict::Drop => consts::NF_DROP,
            Verdict::Continue => consts::NFT_CONTINUE,
            Verdict::Break => consts::NFT_BREAK,
            Verdict::Return => consts::NFT_RETURN,
            Verdict::Jump(_) => consts::NFT_JUMP,
            Verdict::Goto(_) => consts::NFT_GOTO,
        }
    }

    pub(crate) fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// `enum nft_meta_keys` (subset; use [`MetaKey::Other`] for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    /// `NFT_META_LEN`
    Len,
    /// `NFT_META_PROTOCOL` (ethertype, 2 bytes big endian)
    Protocol,
    /// `NFT_META_MARK` (4 bytes host order)
    Mark,
    /// `NFT_META_IIF` (ifindex, 4 bytes host order)
    Iif,
    /// `NFT_META_OIF`
    Oif,
    /// `NFT_META_IIFNAME` (16 bytes, NUL padded)
    IifName,
    /// `NFT_META_OIFNAME` (16 bytes, NUL padded)
    OifName,
    /// `NFT_META_NFPROTO` (1 byte: 2 = ipv4, 10 = ipv6)
    NfProto,
    /// `NFT_META_L4PROTO` (1 byte: 6 = tcp, 17 = udp)
    L4Proto,
    /// Any other `NFT_META_*` value.
    Other(u32),
}

impl MetaKey {
    fn raw(self) -> u32 {
        match self {
            MetaKey::Len => 0,
            MetaKey::Protocol => 1,
            MetaKey::Mark => 3,
            MetaKey::Iif => 4,
            MetaKey::Oif => 5,
            MetaKey::IifName => 6,
            MetaKey::OifName => 7,
            MetaKey::NfProto => 15,
            MetaKey::L4Proto => 16,
            MetaKey::Other(v) => v,
        }
    }
}

/// `enum nft_ct_keys` (subset; use [`CtKey::Other`] for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtKey {
    /// `NFT_CT_STATE` (4-byte host-order bitmask, see [`ct_state`])
    State,
    /// `NFT_CT_DIRECTION`
    Direction,
    /// `NFT_CT_STATUS`
    Status,
    /// `NFT_CT_MARK` (4 bytes host order)
    Mark,
    /// Any other `NFT_CT_*` value.
    Other(u32),
}

impl CtKey {
    fn raw(self) -> u32 {
        match self {
            CtKey::State => 0,
            CtKey::Direction => 1,
            CtKey::Status => 2,
            CtKey::Mark => 3,
            CtKey::Other(v) => v,
        }
    }
}

/// `ct state` bits (`NF_CT_STATE_BIT(...)`) as loaded by `ct load state`, host byte order.
pub mod ct_state {
    /// `invalid`
    pub const INVALID: u32 = 1;
    /// `established`
    pub const ESTABLISHED: u32 = 2;
    /// `related`
    pub const RELATED: u32 = 4;
    /// `new`
    pub const NEW: u32 = 8;
    /// `untracked`
    pub const UNTRACKED: u32 = 64;
}

/// `enum nft_cmp_ops`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `NFT_CMP_EQ`
    Eq,
    /// `NFT_CMP_NEQ`
    Neq,
    /// `NFT_CMP_LT`
    Lt,
    /// `NFT_CMP_LTE`
    Lte,
    /// `NFT_CMP_GT`
    Gt,
    /// `NFT_CMP_GTE`
    Gte,
}

impl CmpOp {
    fn raw(self) -> u32 {
        match self {
            CmpOp::Eq => 0,
            CmpOp::Neq => 1,
            CmpOp::Lt => 2,
            CmpOp::Lte => 3,
            CmpOp::Gt => 4,
            CmpOp::Gte => 5,
        }
    }
}

/// `enum nft_payload_bases`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadBase {
    /// `NFT_PAYLOAD_LL_HEADER`
    LinkLayer,
    /// `NFT_PAYLOAD_NETWORK_HEADER`
    Network,
    /// `NFT_PAYLOAD_TRANSPORT_HEADER`
    Transport,
}

impl PayloadBase {
    fn raw(self) -> u32 {
        match self {
            PayloadBase::LinkLayer => 0,
            PayloadBase::Network => 1,
            PayloadBase::Transport => 2,
        }
    }
}

/// `enum nft_byteorder_ops`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteorderOp {
    /// `NFT_BYTEORDER_NTOH`
    Ntoh,
    /// `NFT_BYTEORDER_HTON`
    Hton,
}

/// `enum nft_ng_types`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumgenKind {
    /// `NFT_NG_INCREMENTAL` (nft `numgen inc`)
    Inc,
    /// `NFT_NG_RANDOM` (nft `numgen random`)
    Random,
}

/// `enum nft_dynset_ops`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DynsetOp {
    /// `NFT_DYNSET_OP_ADD` (nft `add @set {...}`)
    Add,
    /// `NFT_DYNSET_OP_UPDATE` (nft `update @set {...}`)
    Update,
    /// `NFT_DYNSET_OP_DELETE`
    Delete,
}

/// `enum nft_nat_types`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// `NFT_NAT_SNAT`
    Snat,
    /// `NFT_NAT_DNAT`
    Dnat,
}

/// A reference to a set from a rule (lookup / dynset).
///
/// Returned by [`crate::Batch::add_set`] for sets created in the same batch (carries the batch
/// set id, which is what makes anonymous `__set%d` sets resolvable); use [`SetRef::named`] for a
/// set that already exists in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetRef {
    /// Set name (for anonymous sets the `__set%d` / `__map%d` template).
    pub name: String,
    /// `NFTA_SET_ID` of a set created earlier in the same batch.
    pub id: Option<u32>,
}

impl SetRef {
    /// A reference to an existing set by name only.
    pub fn named(name: impl Into<String>) -> Self {
        SetRef {
            name: name.into(),
            id: None,
        }
    }
}

/// One nf_tables expression. The field names follow the kernel attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `payload load <len>b @ <base> + <offset> => dreg`
    Payload {
        /// destination register
        dreg: Register,
        /// header base
        base: PayloadBase,
        /// byte offset from the base
        offset: u32,
        /// number of bytes
        len: u32,
    },
    /// `meta load <key> => dreg`
    Meta {
        /// destination register
        dreg: Register,
        /// meta key
        key: MetaKey,
    },
    /// `meta set <key> with sreg`
    MetaSet {
        /// source register
        sreg: Register,
        /// meta key
        key: MetaKey,
    },
    /// `ct load <key> => dreg` (no direction)
    Ct {
        /// destination register
        dreg: Register,
        /// ct key
        key: CtKey,
    },
    /// `ct set <key> with sreg`
    CtSet {
        /// source register
        sreg: Register,
        /// ct key
        key: CtKey,
    },
    /// `cmp <op> sreg <data>`
    Cmp {
        /// source register
        sreg: Register,
        /// comparison
        op: CmpOp,
        /// value compared against (length = number of bytes compared), <= 64 bytes
        data: Vec<u8>,
    },
    /// `bitwise dreg = (sreg & mask) ^ xor`; `len` is `mask.len()` (must equal `xor.len()`).
    Bitwise {
        /// source register
        sreg: Register,
        /// destination register
        dreg: Register,
        /// AND mask
        mask: Vec<u8>,
        /// XOR value
        xor: Vec<u8>,
    },
    /// `byteorder dreg = <op>(sreg, size, len)`
    Byteorder {
        /// source register
        sreg: Register,
        /// destination register
        dreg: Register,
        /// hton / ntoh
        op: ByteorderOp,
        /// total number of bytes
        len: u32,
        /// element size (2, 4 or 8)
        size: u32,
    },
    /// `numgen dreg = inc|random mod <modulus> [offset <offset>]`
    Numgen {
        /// destination register (result is host byte order)
        dreg: Register,
        /// incremental / random
        kind: NumgenKind,
        /// modulus
        modulus: u32,
        /// added to the result
        offset: u32,
    },
    /// `hash dreg = jhash(sreg, len, seed) % mod [+ offset]`
    Jhash {
        /// source register
        sreg: Register,
        /// destination register (result is host byte order)
        dreg: Register,
        /// number of source bytes hashed
        len: u32,
        /// modulus
        modulus: u32,
        /// `None` = kernel picks a random seed (nft prints no `seed`)
        seed: Option<u32>,
        /// added to the result
        offset: u32,
    },
    /// `lookup sreg set <set> [dreg <dreg>] [inverted]`
    Lookup {
        /// source register (key)
        sreg: Register,
        /// for maps: destination register (`Register::VERDICT` for verdict maps)
        dreg: Option<Register>,
        /// the set
        set: SetRef,
        /// `NFT_LOOKUP_F_INV` (nft `!= @set`)
        invert: bool,
    },
    /// `dynset <op> reg_key <sreg_key> set <set> [sreg_data <sreg_data>] [timeout]`
    Dynset {
        /// add / update / delete
        op: DynsetOp,
        /// key register
        sreg_key: Register,
        /// data register (maps)
        sreg_data: Option<Register>,
        /// the set
        set: SetRef,
        /// element timeout in milliseconds (None = set default)
        timeout_ms: Option<u64>,
    },
    /// `nat snat|dnat <family> addr_min reg ...`
    Nat {
        /// snat / dnat
        kind: NatKind,
        /// `Family::Ip` or `Family::Ip6`
        family: Family,
        /// register holding the (min) address
        addr_min: Option<Register>,
        /// register holding the max address (ranges)
        addr_max: Option<Register>,
        /// register holding the (min) port
        proto_min: Option<Register>,
        /// register holding the max port
        proto_max: Option<Register>,
        /// `NF_NAT_RANGE_*` flags
        flags: Option<u32>,
    },
    /// `masq`
    Masquerade {
        /// `NF_NAT_RANGE_*` flags
        flags: Option<u32>,
        /// register holding the (min) port
        proto_min: Option<Register>,
        /// register holding the max port
        proto_max: Option<Register>,
    },
    /// `immediate dreg <data>`
    Immediate {
        /// destination register
        dreg: Register,
        /// value, <= 64 bytes
        data: Vec<u8>,
    },
    /// `immediate reg 0 <verdict>`
    Verdict(Verdict),
    /// `counter`
    Counter,
    /// `reject type T code C`: `NFT_REJECT_*` type and its ICMP(x) code.
    Reject {
        /// `NFT_REJECT_TCP_RST` (1) or `NFT_REJECT_ICMPX_UNREACH` (2)
        kind: u32,
        /// for ICMPX, e.g. `NFT_REJECT_ICMPX_HOST_UNREACH` (2); none for a TCP reset, whose
        /// code the kernel neither needs nor lists back
        code: Option<u8>,
    },
}

fn cstring(s: &str) -> Result<CString, BuildError> {
    CString::new(s).map_err(|_| BuildError::InteriorNul(s.to_owned()))
}

fn value(what: &'static str, data: &[u8]) -> Result<(), BuildError> {
    if data.is_empty() || data.len() > NFT_DATA_VALUE_MAXLEN {
        Err(BuildError::BadValueLength {
            what,
            len: data.len(),
        })
    } else {
        Ok(())
    }
}

/// Size of an attribute with a `len`-byte payload.
pub(crate) const fn attr(len: usize) -> usize {
    4 + ((len + 3) & !3)
}

impl Expr {
    /// The libnftnl expression name.
    fn kind(&self) -> &'static std::ffi::CStr {
        match self {
            Expr::Payload { .. } => c"payload",
            Expr::Meta { .. } | Expr::MetaSet { .. } => c"meta",
            Expr::Ct { .. } | Expr::CtSet { .. } => c"ct",
            Expr::Cmp { .. } => c"cmp",
            Expr::Bitwise { .. } => c"bitwise",
            Expr::Byteorder { .. } => c"byteorder",
            Expr::Numgen { .. } => c"numgen",
            Expr::Jhash { .. } => c"hash",
            Expr::Lookup { .. } => c"lookup",
            Expr::Dynset { .. } => c"dynset",
            Expr::Nat { .. } => c"nat",
            Expr::Masquerade { .. } => c"masq",
            Expr::Immediate { .. } | Expr::Verdict(_) => c"immediate",
            Expr::Counter => c"counter",
            Expr::Reject { .. } => c"reject",
        }
    }

    /// Upper bound of the serialised size of this expression (list element nest, name, data
    /// nest and every attribute we may set).
    pub(crate) fn size_bound(&self) -> usize {
        let var = match self {
            Expr::Cmp { data, .. } | Expr::Immediate { data, .. } => attr(attr(data.len())),
            Expr::Bitwise { mask, xor, .. } => attr(attr(mask.len())) + attr(attr(xor.len())),
            Expr::Lookup { set, .. } | Expr::Dynset { set, .. } => attr(set.name.len() + 1),
            Expr::Verdict(v) => attr(v.chain().map_or(0, |c| c.len() + 1)),
            _ => 0,
        };
        // nest + name (<= 16) + data nest + up to 9 u32/u64 attributes (<= 12 bytes each)
        4 + attr(16) + 4 + 9 * 12 + var + 64
    }

    /// Validates and converts to an owned libnftnl expression.
    pub(crate) fn to_nl(&self) -> Result<NlExpr, BuildError> {
        let mut e = NlExpr::new(self.kind()).map_err(|_| BuildError::Alloc)?;
        match self {
            Expr::Payload { .. }
            | Expr::Meta { .. }
            | Expr::MetaSet { .. }
            | Expr::Ct { .. }
            | Expr::CtSet { .. }
            | Expr::Byteorder { .. }
            | Expr::Numgen { .. }
            | Expr::Jhash { .. } => self.set_loads(&mut e),
            Expr::Cmp { .. } | Expr::Bitwise { .. } | Expr::Immediate { .. } | Expr::Verdict(_) => {
                self.set_data(&mut e)?
            }
            Expr::Lookup { .. } | Expr::Dynset { .. } => self.set_set_ref(&mut e)?,
            Expr::Nat { .. } | Expr::Masquerade { .. } | Expr::Counter | Expr::Reject { .. } => {
                self.set_action(&mut e)
            }
        }
        Ok(e)
    }

    /// Expressions that load a key into a register, or store one: registers and keys only.
    fn set_loads(&self, e: &mut NlExpr) {
        match self {
            Expr::Payload {
                dreg,
                base,
                offset,
                len,
            } => {
                e.set_u32(sys::NFTNL_EXPR_PAYLOAD_DREG, dreg.raw());
                e.set_u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base.raw());
                e.set_u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, *offset);
                e.set_u32(sys::NFTNL_EXPR_PAYLOAD_LEN, *len);
            }
            Expr::Meta { dreg, key } => {
                e.set_u32(sys::NFTNL_EXPR_META_KEY, key.raw());
                e.set_u32(sys::NFTNL_EXPR_META_DREG, dreg.raw());
            }
            Expr::MetaSet { sreg, key } => {
                e.set_u32(sys::NFTNL_EXPR_META_KEY, key.raw());
                e.set_u32(sys::NFTNL_EXPR_META_SREG, sreg.raw());
            }
            Expr::Ct { dreg, key } => {
                e.set_u32(sys::NFTNL_EXPR_CT_KEY, key.raw());
                e.set_u32(sys::NFTNL_EXPR_CT_DREG, dreg.raw());
            }
            Expr::CtSet { sreg, key } => {
                e.set_u32(sys::NFTNL_EXPR_CT_KEY, key.raw());
                e.set_u32(sys::NFTNL_EXPR_CT_SREG, sreg.raw());
            }
            Expr::Byteorder {
                sreg,
                dreg,
                op,
                len,
                size,
            } => {
                e.set_u32(sys::NFTNL_EXPR_BYTEORDER_SREG, sreg.raw());
                e.set_u32(sys::NFTNL_EXPR_BYTEORDER_DREG, dreg.raw());
                e.set_u32(
                    sys::NFTNL_EXPR_BYTEORDER_OP,
                    match op {
                        ByteorderOp::Ntoh => 0,
                        ByteorderOp::Hton => 1,
                    },
                );
                e.set_u32(sys::NFTNL_EXPR_BYTEORDER_LEN, *len);
                e.set_u32(sys::NFTNL_EXPR_BYTEORDER_SIZE, *size);
            }
            Expr::Numgen {
                dreg,
                kind,
                modulus,
                offset,
            } => {
                e.set_u32(sys::NFTNL_EXPR_NG_DREG, dreg.raw());
                e.set_u32(sys::NFTNL_EXPR_NG_MODULUS, *modulus);
                e.set_u32(
                    sys::NFTNL_EXPR_NG_TYPE,
                    match kind {
                        NumgenKind::Inc => 0,
                        NumgenKind::Random => 1,
                    },
                );
                e.set_u32(sys::NFTNL_EXPR_NG_OFFSET, *offset);
            }
            Expr::Jhash {
                sreg,
                dreg,
                len,
                modulus,
                seed,
                offset,
            } => {
                e.set_u32(sys::NFTNL_EXPR_HASH_SREG, sreg.raw());
                e.set_u32(sys::NFTNL_EXPR_HASH_DREG, dreg.raw());
                e.set_u32(sys::NFTNL_EXPR_HASH_LEN, *len);
                e.set_u32(sys::NFTNL_EXPR_HASH_MODULUS, *modulus);
                if let Some(seed) = seed {
                    e.set_u32(sys::NFTNL_EXPR_HASH_SEED, *seed);
                }
                e.set_u32(sys::NFTNL_EXPR_HASH_OFFSET, *offset);
                e.set_u32(sys::NFTNL_EXPR_HASH_TYPE, 0); // NFT_HASH_JENKINS
            }
            // The other kinds: see `to_nl`.
            _ => {}
        }
    }

    /// Expressions that carry data: checked for length, copied into libnftnl.
    fn set_data(&self, e: &mut NlExpr) -> Result<(), BuildError> {
        let alloc = |_| BuildError::Alloc;
        match self {
            Expr::Cmp { sreg, op, data } => {
                value("cmp data", data)?;
                e.set_u32(sys::NFTNL_EXPR_CMP_SREG, sreg.raw());
                e.set_u32(sys::NFTNL_EXPR_CMP_OP, op.raw());
                e.set_value(sys::NFTNL_EXPR_CMP_DATA, data).map_err(alloc)?;
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                value("bitwise mask", mask)?;
                value("bitwise xor", xor)?;
                if mask.len() != xor.len() {
                    return Err(BuildError::Invalid(format!(
                        "bitwise mask ({} bytes) and xor ({} bytes) differ in length",
                        mask.len(),
                        xor.len()
                    )));
                }
                e.set_u32(sys::NFTNL_EXPR_BITWISE_SREG, sreg.raw());
                e.set_u32(sys::NFTNL_EXPR_BITWISE_DREG, dreg.raw());
                e.set_u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32);
                e.set_value(sys::NFTNL_EXPR_BITWISE_MASK, mask)
                    .map_err(alloc)?;
                e.set_value(sys::NFTNL_EXPR_BITWISE_XOR, xor)
                    .map_err(alloc)?;
            }
            Expr::Immediate { dreg, data } => {
                value("immediate data", data)?;
                e.set_u32(sys::NFTNL_EXPR_IMM_DREG, dreg.raw());
                e.set_value(sys::NFTNL_EXPR_IMM_DATA, data).map_err(alloc)?;
            }
            Expr::Verdict(v) => {
                e.set_u32(sys::NFTNL_EXPR_IMM_DREG, Register::VERDICT.raw());
                e.set_u32(sys::NFTNL_EXPR_IMM_VERDICT, v.code() as u32);
                if let Some(chain) = v.chain() {
                    e.set_str(sys::NFTNL_EXPR_IMM_CHAIN, &cstring(chain)?)
                        .map_err(alloc)?;
                }
            }
            // The other kinds: see `to_nl`.
            _ => {}
        }
        Ok(())
    }

    /// Expressions that refer to a set by name and batch id.
    fn set_set_ref(&self, e: &mut NlExpr) -> Result<(), BuildError> {
        let alloc = |_| BuildError::Alloc;
        match self {
            Expr::Lookup {
                sreg,
                dreg,
                set,
                invert,
            } => {
                e.set_u32(sys::NFTNL_EXPR_LOOKUP_SREG, sreg.raw());
                if let Some(dreg) = dreg {
                    e.set_u32(sys::NFTNL_EXPR_LOOKUP_DREG, dreg.raw());
                }
                e.set_str(sys::NFTNL_EXPR_LOOKUP_SET, &cstring(&set.name)?)
                    .map_err(alloc)?;
                if let Some(id) = set.id {
                    e.set_u32(sys::NFTNL_EXPR_LOOKUP_SET_ID, id);
                }
                if *invert {
                    e.set_u32(sys::NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                }
            }
            Expr::Dynset {
                op,
                sreg_key,
                sreg_data,
                set,
                timeout_ms,
            } => {
                e.set_u32(sys::NFTNL_EXPR_DYNSET_SREG_KEY, sreg_key.raw());
                if let Some(r) = sreg_data {
                    e.set_u32(sys::NFTNL_EXPR_DYNSET_SREG_DATA, r.raw());
                }
                e.set_u32(
                    sys::NFTNL_EXPR_DYNSET_OP,
                    match op {
                        DynsetOp::Add => 0,
                        DynsetOp::Update => 1,
                        DynsetOp::Delete => 2,
                    },
                );
                if let Some(t) = timeout_ms {
                    e.set_u64(sys::NFTNL_EXPR_DYNSET_TIMEOUT, *t);
                }
                e.set_str(sys::NFTNL_EXPR_DYNSET_SET_NAME, &cstring(&set.name)?)
                    .map_err(alloc)?;
                if let Some(id) = set.id {
                    e.set_u32(sys::NFTNL_EXPR_DYNSET_SET_ID, id);
                }
            }
            // The other kinds: see `to_nl`.
            _ => {}
        }
        Ok(())
    }

    /// Statements: NAT, masquerade, counter, reject.
    fn set_action(&self, e: &mut NlExpr) {
        match self {
            Expr::Nat {
                kind,
                family,
                addr_min,
                addr_max,
                proto_min,
                proto_max,
                flags,
            } => {
                e.set_u32(
                    sys::NFTNL_EXPR_NAT_TYPE,
                    match kind {
                        NatKind::Snat => 0,
                        NatKind::Dnat => 1,
                    },
                );
                e.set_u32(sys::NFTNL_EXPR_NAT_FAMILY, family.raw() as u32);
                let regs = [
                    (sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, addr_min),
                    (sys::NFTNL_EXPR_NAT_REG_ADDR_MAX, addr_max),
                    (sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, proto_min),
                    (sys::NFTNL_EXPR_NAT_REG_PROTO_MAX, proto_max),
                ];
                for (a, r) in regs {
                    if let Some(r) = r {
                        e.set_u32(a, r.raw());
                    }
                }
                if let Some(f) = flags {
                    e.set_u32(sys::NFTNL_EXPR_NAT_FLAGS, *f);
                }
            }
            Expr::Masquerade {
                flags,
                proto_min,
                proto_max,
            } => {
                if let Some(f) = flags {
                    e.set_u32(sys::NFTNL_EXPR_MASQ_FLAGS, *f);
                }
                if let Some(r) = proto_min {
                    e.set_u32(sys::NFTNL_EXPR_MASQ_REG_PROTO_MIN, r.raw());
                }
                if let Some(r) = proto_max {
                    e.set_u32(sys::NFTNL_EXPR_MASQ_REG_PROTO_MAX, r.raw());
                }
            }
            Expr::Counter => {}
            Expr::Reject { kind, code } => {
                e.set_u32(sys::NFTNL_EXPR_REJECT_TYPE, *kind);
                if let Some(code) = code {
                    e.set_u8(sys::NFTNL_EXPR_REJECT_CODE, *code);
                }
            }
            // The other kinds: see `to_nl`.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers() {
        assert_eq!(Register::VERDICT.raw(), 0);
        assert_eq!(Register::R4.raw(), 4);
        assert_eq!(Register::reg32(0).unwrap().raw(), 8);
        assert_eq!(Register::reg32(15).unwrap().raw(), 23);
        assert!(Register::reg32(16).is_none());
    }

    #[test]
    fn verdict_codes() {
        assert_eq!(Verdict::Jump("x".into()).code(), -3);
        assert_eq!(Verdict::Goto("x".into()).code(), -4);
        assert_eq!(Verdict::Return.code(), -5);
        assert_eq!(Verdict::Accept.code(), 1);
        assert_eq!(Verdict::Drop.code(), 0);
    }

    #[test]
    fn every_kind_allocates() {
        let set = SetRef {
            name: "s".into(),
            id: Some(1),
        };
        let exprs = vec![
            Expr::Payload {
                dreg: Register::R1,
                base: PayloadBase::Network,
                offset: 12,
                len: 4,
            },
            Expr::Meta {
                dreg: Register::R1,
                key: MetaKey::Mark,
            },
            Expr::MetaSet {
                sreg: Register::R1,
                key: MetaKey::Mark,
            },
            Expr::Ct {
                dreg: Register::R1,
                key: CtKey::Mark,
            },
            Expr::CtSet {
                sreg: Register::R1,
                key: CtKey::Mark,
            },
            Expr::Cmp {
                sreg: Register::R1,
                op: CmpOp::Eq,
                data: vec![1],
            },
            Expr::Bitwise {
                sreg: Register::R1,
                dreg: Register::R1,
                mask: vec![0; 4],
                xor: vec![0; 4],
            },
            Expr::Byteorder {
                sreg: Register::R1,
                dreg: Register::R1,
                op: ByteorderOp::Hton,
                len: 4,
                size: 4,
            },
            Expr::Numgen {
                dreg: Register::R1,
                kind: NumgenKind::Inc,
                modulus: 2,
                offset: 0,
            },
            Expr::Jhash {
                sreg: Register::R2,
                dreg: Register::R1,
                len: 4,
                modulus: 2,
                seed: Some(1),
                offset: 0,
            },
            Expr::Lookup {
                sreg: Register::R1,
                dreg: Some(Register::R1),
                set: set.clone(),
                invert: false,
            },
            Expr::Dynset {
                op: DynsetOp::Update,
                sreg_key: Register::R1,
                sreg_data: Some(Register::R2),
                set,
                timeout_ms: Some(1000),
            },
            Expr::Nat {
                kind: NatKind::Snat,
                family: Family::Ip,
                addr_min: Some(Register::R1),
                addr_max: None,
                proto_min: None,
                proto_max: None,
                flags: None,
            },
            Expr::Masquerade {
                flags: None,
                proto_min: None,
                proto_max: None,
            },
            Expr::Immediate {
                dreg: Register::R1,
                data: vec![1, 2, 3, 4],
            },
            Expr::Verdict(Verdict::Jump("balance".into())),
            Expr::Counter,
            Expr::Reject {
                kind: 1,
                code: None,
            },
        ];
        for e in &exprs {
            e.to_nl().unwrap_or_else(|err| panic!("{e:?}: {err}"));
        }
    }

    #[test]
    fn rejects_bad_values() {
        let too_long = Expr::Cmp {
            sreg: Register::R1,
            op: CmpOp::Eq,
            data: vec![0; 65],
        };
        assert!(matches!(
            too_long.to_nl(),
            Err(BuildError::BadValueLength { len: 65, .. })
        ));
        let mismatched = Expr::Bitwise {
            sreg: Register::R1,
            dreg: Register::R1,
            mask: vec![0; 4],
            xor: vec![0; 2],
        };
        assert!(matches!(mismatched.to_nl(), Err(BuildError::Invalid(_))));
        let nul = Expr::Verdict(Verdict::Jump("a\0b".into()));
        assert!(matches!(nul.to_nl(), Err(BuildError::InteriorNul(_))));
    }
}
