//! Raw numeric constants from `<linux/netfilter/nf_tables.h>`, `<linux/netfilter/nfnetlink.h>`,
//! `<linux/netfilter/nfnetlink_conntrack.h>` and `<linux/netlink.h>`. Spelled out here (instead
//! of relying on the `libc` crate's partial coverage) so that every wire value is visible in one
//! place; public so that readers of raw messages ([`crate::parse_attrs`], [`crate::Socket::dump`])
//! name attributes with the same values the writer uses. Values only, no behaviour.

// ---- nfnetlink ----
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10; // NLMSG_MIN_TYPE
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
pub const NFNL_BATCH_GENID: u16 = 1;
pub const NFNETLINK_V0: u8 = 0;

// ---- nf_tables message types (low byte; high byte is NFNL_SUBSYS_NFTABLES) ----
pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_DELRULE: u16 = 8;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_DELSETELEM: u16 = 14;
pub const NFT_MSG_DELSET: u16 = 11;
pub const NFT_MSG_NEWGEN: u16 = 15;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_GETSET: u16 = 10;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_GETGEN: u16 = 16;

pub const NFTA_GEN_ID: u16 = 1;

// ---- ctnetlink (<linux/netfilter/nfnetlink_conntrack.h>) ----
pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub const IPCTNL_MSG_CT_GET: u16 = 1;
pub const IPCTNL_MSG_CT_DELETE: u16 = 2;
pub const CTA_TUPLE_ORIG: u16 = 1;
pub const CTA_TUPLE_REPLY: u16 = 2;
/// Inside a tuple: the addresses and the layer-4 part.
pub const CTA_TUPLE_IP: u16 = 1;
pub const CTA_TUPLE_PROTO: u16 = 2;
pub const CTA_IP_V4_SRC: u16 = 1;
pub const CTA_IP_V4_DST: u16 = 2;
pub const CTA_IP_V6_SRC: u16 = 3;
pub const CTA_IP_V6_DST: u16 = 4;
pub const CTA_PROTO_NUM: u16 = 1;
pub const CTA_PROTO_SRC_PORT: u16 = 2;
pub const CTA_PROTO_DST_PORT: u16 = 3;
pub const CTA_MARK: u16 = 8;
pub const CTA_ID: u16 = 12;
pub const CTA_ZONE: u16 = 18;
pub const CTA_MARK_MASK: u16 = 21;
pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_TYPE_MASK: u16 = 0x3fff;

// ---- attributes read back (`read`: diff and counters), by message type ----
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_HANDLE: u16 = 3;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
pub const NFTA_SET_TABLE: u16 = 1;
pub const NFTA_SET_NAME: u16 = 2;
pub const NFTA_SET_FLAGS: u16 = 3;
pub const NFTA_SET_ID: u16 = 10;
pub const NFTA_SET_DATA_TYPE: u16 = 6;
pub const NFTA_SET_DATA_LEN: u16 = 7;
pub const NFTA_SET_DESC: u16 = 9;
pub const NFTA_SET_DESC_SIZE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub const NFTA_LOOKUP_SET: u16 = 1;
pub const NFTA_LOOKUP_SET_ID: u16 = 4;
pub const NFTA_LOOKUP_FLAGS: u16 = 5;
pub const NFTA_DYNSET_SET_ID: u16 = 2;
pub const NFTA_DYNSET_FLAGS: u16 = 9;
pub const NFTA_BITWISE_OP: u16 = 6;
pub const NFTA_DYNSET_TIMEOUT: u16 = 6;
pub const NFTA_HASH_OFFSET: u16 = 6;
pub const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
pub const NFTA_NAT_REG_ADDR_MAX: u16 = 4;
pub const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
pub const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
pub const NFTA_NAT_FLAGS: u16 = 7;
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_POLICY: u16 = 5;
pub const NFTA_CHAIN_TYPE: u16 = 7;
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;
pub const NFTA_COUNTER_BYTES: u16 = 1;
pub const NFTA_COUNTER_PACKETS: u16 = 2;
pub const NFTA_SET_KEY_TYPE: u16 = 4;
pub const NFTA_SET_KEY_LEN: u16 = 5;
pub const NFTA_SET_TIMEOUT: u16 = 11;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_DATA: u16 = 2;
pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub const NFTA_SET_ELEM_KEY_END: u16 = 10;

// ---- nft's userdata (libnftnl's udata.h): read by nft, never by the kernel ----
/// `NFTNL_UDATA_SET_ELEM_FLAGS` (set element userdata TLV type).
pub const UDATA_SET_ELEM_FLAGS: u8 = 1;
/// `NFTNL_SET_ELEM_F_INTERVAL_OPEN`: the interval runs to the end of the key space.
pub const SET_ELEM_F_INTERVAL_OPEN: u32 = 1;

// ---- netlink ----
pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLM_F_CAPPED: u16 = 0x100;
pub const NLMSGERR_ATTR_MSG: u16 = 1;
pub const NLMSGERR_ATTR_OFFS: u16 = 2;
pub const NETLINK_CAP_ACK: libc::c_int = 10;
pub const NETLINK_EXT_ACK: libc::c_int = 11;
/// `NETLINK_ADD_MEMBERSHIP` (linux/netlink.h): join a multicast group.
pub const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;
/// `NFNLGRP_NFTABLES` (linux/netfilter/nfnetlink.h): nf_tables change notifications.
pub const NFNLGRP_NFTABLES: libc::c_int = 7;

// ---- expressions ----
pub const NFT_LOOKUP_F_INV: u32 = 1;
pub const NFT_DATA_VALUE_MAXLEN: usize = 64;

// ---- verdicts ----
pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: i32 = 1;
pub const NFT_CONTINUE: i32 = -1;
pub const NFT_BREAK: i32 = -2;
pub const NFT_JUMP: i32 = -3;
pub const NFT_GOTO: i32 = -4;
pub const NFT_RETURN: i32 = -5;

/// `NFT_DATA_VERDICT`: the data type of a verdict map (`NFTA_SET_DATA_TYPE`).
pub const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

/// Set flags (`enum nft_set_flags`), for [`crate::SetSpec::flags`].
pub mod set_flags {
    /// `NFT_SET_ANONYMOUS`: bound to a single rule, named `__set%d` by the kernel.
    pub const ANONYMOUS: u32 = 0x1;
    /// `NFT_SET_CONSTANT`: elements cannot change after the batch.
    pub const CONSTANT: u32 = 0x2;
    /// `NFT_SET_INTERVAL`: elements are ranges (start / interval-end pairs).
    pub const INTERVAL: u32 = 0x4;
    /// `NFT_SET_MAP`: elements carry data.
    pub const MAP: u32 = 0x8;
    /// `NFT_SET_TIMEOUT`: elements may expire.
    pub const TIMEOUT: u32 = 0x10;
    /// `NFT_SET_EVAL`: set is updated from the packet path (nft's `flags dynamic`).
    pub const EVAL: u32 = 0x20;
    /// `NFT_SET_OBJECT`: map to stateful objects.
    pub const OBJECT: u32 = 0x40;
    /// `NFT_SET_CONCAT`: concatenated key.
    pub const CONCAT: u32 = 0x80;
}

/// Table flags (`enum nft_table_flags`), for [`crate::Table::flags`].
/// `enum nft_reject_types` and `enum nft_reject_inet_code` (linux/netfilter/nf_tables.h).
pub mod reject {
    pub const TCP_RST: u32 = 1;
    pub const ICMPX_UNREACH: u32 = 2;
    pub const ICMPX_HOST_UNREACH: u8 = 2;
}

pub mod table_flags {
    /// `NFT_TABLE_F_DORMANT`
    pub const DORMANT: u32 = 0x1;
    /// `NFT_TABLE_F_OWNER`
    pub const OWNER: u32 = 0x2;
}

/// Set element flags (`enum nft_set_elem_flags`).
pub mod elem_flags {
    /// `NFT_SET_ELEM_INTERVAL_END`
    pub const INTERVAL_END: u32 = 0x1;
    /// `NFT_SET_ELEM_CATCHALL`
    pub const CATCHALL: u32 = 0x2;
}

/// nft's datatype ids (`enum datatypes` in nftables' `datatype.h`), used as set key / data types.
/// The kernel stores them opaquely; `nft list` uses them to print elements.
pub mod datatype {
    /// `TYPE_VERDICT`
    pub const VERDICT: u32 = 1;
    /// `TYPE_NFPROTO`
    pub const NFPROTO: u32 = 2;
    /// `TYPE_INTEGER`
    pub const INTEGER: u32 = 4;
    /// `TYPE_IPADDR` (ipv4_addr)
    pub const IPADDR: u32 = 7;
    /// `TYPE_IP6ADDR` (ipv6_addr)
    pub const IP6ADDR: u32 = 8;
    /// `TYPE_INET_PROTOCOL`
    pub const INET_PROTOCOL: u32 = 12;
    /// `TYPE_INET_SERVICE`
    pub const INET_SERVICE: u32 = 13;
    /// `TYPE_MARK`
    pub const MARK: u32 = 19;
    /// `TYPE_IFINDEX`
    pub const IFINDEX: u32 = 20;
    /// `TYPE_CT_STATE`
    pub const CT_STATE: u32 = 26;
    /// `TYPE_IFNAME`
    pub const IFNAME: u32 = 41;
}
