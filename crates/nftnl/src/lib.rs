//! The nf_tables netlink **wire layer** for nftbalance: libnftnl objects, batches, the socket,
//! ctnetlink. It knows nothing of the ruleset model; `nftbalance-netlink` lowers the model onto
//! it and reads the kernel's state back through it.
//!
//! This is the only crate of the project allowed to contain `unsafe`; all of it sits in the
//! `ffi` module (libnftnl object wrappers via `nftnl-sys`, a few socket calls via `libc`).
//!
//! # Model
//!
//! * Describe objects with plain Rust values: [`Table`], [`Chain`], [`SetSpec`] + [`SetElem`],
//!   [`Rule`] made of [`Expr`]s with explicit [`Register`]s.
//! * Add them to a [`Batch`] with a caller-chosen label each. Every `add_*` serialises
//!   immediately through libnftnl (`nftnl_*_nlmsg_build_payload`) and fails early with a
//!   [`BuildError`] on invalid input.
//! * [`Batch::send`] wraps the messages in `NFNL_MSG_BATCH_BEGIN` (optionally carrying
//!   `NFNL_BATCH_GENID`) / `NFNL_MSG_BATCH_END` (left out for [`Commit::CheckOnly`]), sends them
//!   in a single `sendmsg()` on a [`Socket`] and maps every error ACK back to the label of the
//!   message that caused it ([`BatchError`], [`ObjectError`]).
//!
//! [`conntrack`] counts and deletes conntrack entries by connection mark over ctnetlink on the
//! same [`Socket`].
//!
//! [`parse_attrs`], [`Socket::dump`] / [`Socket::dump_each`], [`Batch::messages`] and the wire
//! values in [`consts`] let a reader compare what a batch sends with what the kernel lists.
//!
//! Nothing here decides *what* to encode: to get exactly what `nft -f` would produce, mirror
//! `nft --debug=netlink` (see the root test `tests/seed.rs`, which rebuilds a complete
//! ruleset and compares `nft -j list ruleset` with nft's own result).
//!
//! # How nft 1.0.6 encodes things (what the compiler side must reproduce)
//!
//! * `ct state established,related` → `ct load state => r1; bitwise r1 = (r1 & 0x6) ^ 0;
//!   cmp neq r1 0` — 4-byte host-order bitmask ([`ct_state`]).
//! * Marks (`meta mark`, `ct mark`, map data of type mark) are 4 bytes **host** order
//!   ([`value::host_u32`]); ports, addresses are network order.
//! * `iifname "eth0"` → `meta load iifname; cmp eq` against 16 bytes NUL-padded
//!   ([`value::ifname`]); ifname set keys are 16 bytes too.
//! * `ip saddr ...` in an `inet` table is preceded by `meta load nfproto; cmp eq 2` (10 for
//!   ip6); `tcp dport` by `meta load l4proto; cmp eq 6` (1-byte values).
//! * `numgen`/`jhash` results are host order; nft inserts `byteorder hton(len 4, size 4)` before
//!   the map lookup, so those map keys are big-endian ([`value::be_u32`]).
//! * Interval sets: see [`interval_elements`].
//! * Every set created in a batch gets `NFTA_SET_ID` 1, 2, ... and every lookup/dynset carries
//!   both the set name and that id.
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg(target_os = "linux")]

mod batch;
pub mod conntrack;
pub mod consts;
mod expr;
mod ffi;
mod objects;
mod socket;

use std::fmt;

pub use batch::{Batch, BatchError, Commit, ObjectError, Rule, ELEMENTS_PER_MESSAGE_BYTES};
pub use consts::{datatype, elem_flags, reject, set_flags, table_flags, NFT_DATA_VERDICT};
pub use expr::{
    ct_state, ByteorderOp, CmpOp, CtKey, DynsetOp, Expr, MetaKey, NatKind, NumgenKind, PayloadBase,
    Register, SetRef, Verdict,
};
pub use objects::{
    interval_elements, priority, udata_set, value, BaseChain, ByteOrder, Chain, ChainType,
    ElemData, Family, Hook, Interval, IntervalElements, IntervalLayout, Policy, SetData, SetElem,
    SetSpec, Table, Udata,
};
pub use socket::{parse_attrs, Socket};

/// Invalid input detected while building a message (nothing was added to the batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A name or string contains a NUL byte.
    InteriorNul(String),
    /// A register value / key / data has an unsupported length (must be 1..=64 bytes).
    BadValueLength {
        /// which value
        what: &'static str,
        /// its length
        len: usize,
    },
    /// Any other invalid input.
    Invalid(String),
    /// libnftnl could not allocate memory.
    Alloc,
    /// An error inside a list: `context` says where (e.g. "expression 3", "element 17").
    At {
        /// position
        context: String,
        /// the error
        source: Box<BuildError>,
    },
}

impl BuildError {
    pub(crate) fn at_expression(self, i: usize) -> Self {
        BuildError::At {
            context: format!("expression {i}"),
            source: Box::new(self),
        }
    }

    pub(crate) fn at_element(self, i: usize) -> Self {
        BuildError::At {
            context: format!("element {i}"),
            source: Box::new(self),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InteriorNul(s) => write!(f, "string {s:?} contains a NUL byte"),
            BuildError::BadValueLength { what, len } => {
                write!(f, "{what} has {len} bytes (must be 1..=64)")
            }
            BuildError::Invalid(s) => f.write_str(s),
            BuildError::Alloc => f.write_str("libnftnl: out of memory"),
            BuildError::At { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for BuildError {}
