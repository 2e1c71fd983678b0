//! nftbalance's ruleset on nf_tables: the lowering of the compiled model to netlink objects
//! ([`lower`]), the transaction around it with generation id and retries ([`transaction`]),
//! and the read-back that compares the live table with what `apply` would send ([`read`]).
//!
//! No `unsafe` here: the wire layer (libnftnl objects, batches, the socket, ctnetlink) is
//! `nftbalance-nftnl`, re-exported below so that callers name one crate.
#![cfg(target_os = "linux")]

mod align;
pub mod lower;
pub mod read;
pub mod transaction;

pub use nftbalance_nftnl::{
    conntrack, ct_state, datatype, elem_flags, interval_elements, priority, set_flags, table_flags,
    udata_set, value, BaseChain, Batch, BatchError, BuildError, ByteOrder, ByteorderOp, Chain,
    ChainType, CmpOp, Commit, CtKey, DynsetOp, ElemData, Expr, Family, Hook, Interval,
    IntervalElements, IntervalLayout, MetaKey, NatKind, NumgenKind, ObjectError, PayloadBase,
    Policy, Register, Rule, SetData, SetElem, SetRef, SetSpec, Socket, Table, Udata, Verdict,
    ELEMENTS_PER_MESSAGE_BYTES, NFT_DATA_VERDICT,
};
