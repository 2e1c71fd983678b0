//! Batches: building the nf_tables messages, sending them as one nfnetlink transaction and mapping
//! the kernel's error ACKs back to the objects that caused them.

use std::ffi::CString;
use std::fmt;
use std::io;

use nftnl_sys as sys;

use crate::consts::*;
use crate::expr::{attr, Expr, SetRef};
use crate::ffi::Scratch;
use crate::ffi::{self, build_msg, MsgHeader, NlChain, NlRule, NlSet, NlSetElem, NlTable, Payload};
use crate::objects::{Chain, ElemData, Family, Policy, SetElem, SetSpec, Table};
use crate::socket::Socket;
use crate::BuildError;

/// Element bytes per `NFT_MSG_NEWSETELEM` message. The element list is one netlink attribute
/// whose length field is 16 bits, so it must stay well below 64 KiB.
pub const ELEMENTS_PER_MESSAGE_BYTES: usize = 32 * 1024;

/// A rule (`NFT_MSG_NEWRULE`, appended to the chain).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// family of the table
    pub family: Family,
    /// table name
    pub table: String,
    /// chain name
    pub chain: String,
    /// expressions, in order
    pub exprs: Vec<Expr>,
    /// `NFTA_RULE_USERDATA` (nft stores comments here); nft sends none otherwise
    pub userdata: Option<Vec<u8>>,
}

impl Rule {
    /// A rule without userdata.
    pub fn new(
        family: Family,
        table: impl Into<String>,
        chain: impl Into<String>,
        exprs: Vec<Expr>,
    ) -> Self {
        Rule {
            family,
            table: table.into(),
            chain: chain.into(),
            exprs,
            userdata: None,
        }
    }
}

/// Whether [`Batch::send`] commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Commit {
    /// Send `NFNL_MSG_BATCH_END`: the kernel commits if every message was accepted.
    Yes,
    /// Leave out the end message: the kernel processes and validates every message (including
    /// the chain-graph validation nft's `-c` relies on), reports errors, then aborts.
    /// Nothing is ever committed.
    CheckOnly,
}

#[derive(Debug, Clone)]
struct MsgInfo {
    offset: usize,
    label: String,
}

/// A batch of nf_tables objects to create, applied as one atomic transaction.
///
/// Every `add_*` call serialises its object(s) immediately (so invalid input is reported at the
/// call site, with a [`BuildError`]) and records the caller's `label`, which is what
/// [`BatchError`] reports if the kernel rejects that message.
#[derive(Debug, Default)]
pub struct Batch {
    body: Vec<u8>,
    msgs: Vec<MsgInfo>,
    scratch: Scratch,
    next_set_id: u32,
}

fn cstring(s: &str) -> Result<CString, BuildError> {
    CString::new(s).map_err(|_| BuildError::InteriorNul(s.to_owned()))
}

fn name(s: &str) -> Result<CString, BuildError> {
    // NFT_NAME_MAXLEN is 256 including the NUL; longer names get ENAMETOOLONG from the kernel,
    // we report them early.
    if s.is_empty() || s.len() > 255 {
        return Err(BuildError::Invalid(format!(
            "name {s:?} must be 1..=255 bytes"
        )));
    }
    cstring(s)
}

const HDR: usize = NLMSG_HDRLEN + 4;
const SLACK: usize = 64;
const ALLOC: fn(ffi::NftnlError) -> BuildError = |_| BuildError::Alloc;

fn msg_type(t: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | t
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of object messages (not counting batch begin/end).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// True if no object was added.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Serialised size of the object messages in bytes.
    pub fn byte_len(&self) -> usize {
        self.body.len()
    }

    /// Labels of the messages in order (element lists may have been split over several).
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.msgs.iter().map(|m| m.label.as_str())
    }

    /// Each object message with its label: (label, message type without the subsystem,
    /// attributes after the nfgenmsg header). For comparing a batch with what the kernel holds.
    pub fn messages(&self) -> Vec<(&str, u16, &[u8])> {
        let mut out = Vec::with_capacity(self.msgs.len());
        for (m, raw) in self
            .msgs
            .iter()
            .zip(crate::socket::parse_messages(&self.body))
        {
            let attrs = raw.payload.get(4..).unwrap_or(&[]);
            out.push((m.label.as_str(), raw.msg_type & 0xff, attrs));
        }
        out
    }

    /// Serialises one message; `size_hint` (an estimate of its length) only sizes the scratch
    /// buffer.
    fn push(
        &mut self,
        label: String,
        size_hint: usize,
        t: u16,
        family: Family,
        flags: u16,
        payload: Payload<'_>,
    ) -> Result<(), BuildError> {
        let offset = self.body.len();
        build_msg(
            &mut self.body,
            &mut self.scratch,
            size_hint,
            MsgHeader {
                msg_type: msg_type(t),
                family: family.raw() as u16,
                flags,
                seq: 0, // patched in `encode`
            },
            payload,
        )
        .map_err(ALLOC)?;
        self.msgs.push(MsgInfo { offset, label });
        Ok(())
    }

    /// `add table` (NLM_F_CREATE: succeeds if the table exists; updates its flags).
    pub fn add_table(&mut self, table: &Table, label: impl Into<String>) -> Result<(), BuildError> {
        let n = name(&table.name)?;
        let mut t = NlTable::new().map_err(ALLOC)?;
        t.set_str(sys::NFTNL_TABLE_NAME, &n).map_err(ALLOC)?;
        t.set_u32(sys::NFTNL_TABLE_FAMILY, table.family.raw() as u32);
        t.set_u32(sys::NFTNL_TABLE_FLAGS, table.flags);
        let bound = HDR + attr(table.name.len() + 1) + attr(4) + SLACK;
        self.push(
            label.into(),
            bound,
            NFT_MSG_NEWTABLE,
            table.family,
            NLM_F_CREATE,
            Payload::Table(&t),
        )?;
        Ok(())
    }

    /// `delete table` (fails with ENOENT if it does not exist at that point of the batch).
    pub fn delete_table(
        &mut self,
        family: Family,
        table: &str,
        label: impl Into<String>,
    ) -> Result<(), BuildError> {
        let n = name(table)?;
        let mut t = NlTable::new().map_err(ALLOC)?;
        t.set_str(sys::NFTNL_TABLE_NAME, &n).map_err(ALLOC)?;
        t.set_u32(sys::NFTNL_TABLE_FAMILY, family.raw() as u32);
        let bound = HDR + attr(table.len() + 1) + SLACK;
        self.push(
            label.into(),
            bound,
            NFT_MSG_DELTABLE,
            family,
            0,
            Payload::Table(&t),
        )?;
        Ok(())
    }

    /// Atomic replace, as nft's `table X; delete table X; table X { ... }`: add the table (so the
    /// delete cannot fail), delete it with everything in it, and add it again. Add the new
    /// content after this call. Labels are `"{label} (ensure)"`, `"{label} (delete)"` and
    /// `"{label}"`.
    pub fn replace_table(
        &mut self,
        table: &Table,
        label: impl Into<String>,
    ) -> Result<(), BuildError> {
        let label = label.into();
        self.add_table(
            &Table {
                flags: 0,
                ..table.clone()
            },
            format!("{label} (ensure)"),
        )?;
        self.delete_table(table.family, &table.name, format!("{label} (delete)"))?;
        self.add_table(table, label)
    }

    /// `add chain` (NLM_F_CREATE).
    pub fn add_chain(&mut self, chain: &Chain, label: impl Into<String>) -> Result<(), BuildError> {
        let tn = name(&chain.table)?;
        let cn = name(&chain.name)?;
        let mut c = NlChain::new().map_err(ALLOC)?;
        c.set_str(sys::NFTNL_CHAIN_TABLE, &tn).map_err(ALLOC)?;
        c.set_str(sys::NFTNL_CHAIN_NAME, &cn).map_err(ALLOC)?;
        c.set_u32(sys::NFTNL_CHAIN_FAMILY, chain.family.raw() as u32);
        if let Some(base) = &chain.base {
            c.set_str(sys::NFTNL_CHAIN_TYPE, base.chain_type.name())
                .map_err(ALLOC)?;
            c.set_u32(sys::NFTNL_CHAIN_HOOKNUM, base.hook.raw());
            c.set_s32(sys::NFTNL_CHAIN_PRIO, base.priority);
            if let Some(p) = base.policy {
                let v = match p {
                    Policy::Accept => NF_ACCEPT,
                    Policy::Drop => NF_DROP,
                };
                c.set_u32(sys::NFTNL_CHAIN_POLICY, v as u32);
            }
        }
        let bound = HDR
            + attr(chain.table.len() + 1)
            + attr(chain.name.len() + 1)
            + attr(16) // type
            + attr(4) // policy
            + 4 + 2 * attr(4) // hook nest
            + SLACK;
        self.push(
            label.into(),
            bound,
            NFT_MSG_NEWCHAIN,
            chain.family,
            NLM_F_CREATE,
            Payload::Chain(&c),
        )?;
        Ok(())
    }

    /// `add set` / `add map` (NLM_F_CREATE). Assigns the next batch set id (1, 2, ...) like nft
    /// does and returns the reference rules and [`Batch::add_elements`] use.
    pub fn add_set(
        &mut self,
        set: &SetSpec,
        label: impl Into<String>,
    ) -> Result<SetRef, BuildError> {
        let tn = name(&set.table)?;
        let sn = name(&set.name)?;
        self.next_set_id += 1;
        let id = self.next_set_id;
        let mut s = NlSet::new().map_err(ALLOC)?;
        s.set_str(sys::NFTNL_SET_TABLE, &tn).map_err(ALLOC)?;
        s.set_str(sys::NFTNL_SET_NAME, &sn).map_err(ALLOC)?;
        s.set_u32(sys::NFTNL_SET_FAMILY, set.family.raw() as u32);
        s.set_u32(sys::NFTNL_SET_FLAGS, set.flags);
        s.set_u32(sys::NFTNL_SET_KEY_TYPE, set.key_type);
        s.set_u32(sys::NFTNL_SET_KEY_LEN, set.key_len);
        if let Some(d) = &set.data {
            s.set_u32(sys::NFTNL_SET_DATA_TYPE, d.data_type);
            s.set_u32(sys::NFTNL_SET_DATA_LEN, d.data_len);
        }
        s.set_u32(sys::NFTNL_SET_ID, id);
        if let Some(t) = set.timeout_ms {
            s.set_u64(sys::NFTNL_SET_TIMEOUT, t);
        }
        if let Some(size) = set.size {
            s.set_u32(sys::NFTNL_SET_DESC_SIZE, size);
        }
        if let Some(u) = &set.userdata {
            s.set_data(sys::NFTNL_SET_USERDATA, u).map_err(ALLOC)?;
        }
        let bound = HDR
            + attr(set.table.len() + 1)
            + attr(set.name.len() + 1)
            + 8 * attr(4)
            + 2 * attr(8)
            + 4 + attr(4) // desc nest
            + set.userdata.as_ref().map_or(0, |u| attr(u.len()))
            + SLACK;
        self.push(
            label.into(),
            bound,
            NFT_MSG_NEWSET,
            set.family,
            NLM_F_CREATE,
            Payload::Set(&s),
        )?;
        Ok(SetRef {
            name: set.name.clone(),
            id: Some(id),
        })
    }

    /// `add element` (NLM_F_CREATE): adds `elems` to `set`, split over as many
    /// `NFT_MSG_NEWSETELEM` messages as needed ([`ELEMENTS_PER_MESSAGE_BYTES`] each). If split,
    /// each message's label is `"{label} [elements a..b]"` (indices into `elems`).
    pub fn add_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &SetRef,
        elems: &[SetElem],
        label: impl Into<String>,
    ) -> Result<(), BuildError> {
        self.elements(
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            family,
            table,
            set,
            elems,
            label.into(),
        )
    }

    /// `delete element`: removes `elems` from the named set `set`, split over messages as
    /// [`Batch::add_elements`] does. Only each element's key, key end and flags identify it
    /// (data, timeouts and userdata are left out); an element that is not there is an error
    /// (ENOENT), so the caller must know the set's contents.
    pub fn delete_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elems: &[SetElem],
        label: impl Into<String>,
    ) -> Result<(), BuildError> {
        let keys: Vec<SetElem> = elems
            .iter()
            .map(|e| SetElem {
                key: e.key.clone(),
                key_end: e.key_end.clone(),
                flags: e.flags,
                data: None,
                timeout_ms: None,
                userdata: None,
            })
            .collect();
        let set = SetRef {
            name: set.to_owned(),
            id: None,
        };
        self.elements(
            NFT_MSG_DELSETELEM,
            0,
            family,
            table,
            &set,
            &keys,
            label.into(),
        )
    }

    /// `delete set` / `delete map` (no rule may refer to it by the end of the transaction).
    pub fn delete_set(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        label: impl Into<String>,
    ) -> Result<(), BuildError> {
        let (tn, sn) = (name(table)?, name(set)?);
        let mut s = NlSet::new().map_err(ALLOC)?;
        s.set_str(sys::NFTNL_SET_TABLE, &tn).map_err(ALLOC)?;
        s.set_str(sys::NFTNL_SET_NAME, &sn).map_err(ALLOC)?;
        s.set_u32(sys::NFTNL_SET_FAMILY, family.raw() as u32);
        let bound = HDR + attr(table.len() + 1) + attr(set.len() + 1) + attr(4) + SLACK;
        self.push(
            label.into(),
            bound,
            NFT_MSG_DELSET,
            family,
            0,
            Payload::Set(&s),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn elements(
        &mut self,
        msg_type: u16,
        msg_flags: u16,
        family: Family,
        table: &str,
        set: &SetRef,
        elems: &[SetElem],
        label: String,
    ) -> Result<(), BuildError> {
        let tn = name(table)?;
        let sn = name(&set.name)?;
        let fixed = HDR + attr(table.len() + 1) + attr(set.name.len() + 1) + attr(4) + 4 + SLACK;

        // Plan the chunks first so the labels can tell whether the list was split.
        let mut chunks: Vec<(usize, usize, usize)> = Vec::new(); // (start, end, bound)
        let mut start = 0;
        let mut acc = 0;
        for (i, e) in elems.iter().enumerate() {
            let b = e.size_bound();
            if i > start && acc + b > ELEMENTS_PER_MESSAGE_BYTES {
                chunks.push((start, i, acc));
                start = i;
                acc = 0;
            }
            acc += b;
        }
        if start < elems.len() || elems.is_empty() {
            chunks.push((start, elems.len(), acc));
        }
        let split = chunks.len() > 1;

        for (a, b, elem_bytes) in chunks {
            if elem_bytes > u16::MAX as usize - 64 {
                return Err(BuildError::Invalid(format!(
                    "set element {a} is too large ({elem_bytes} bytes)"
                )));
            }
            let mut s = NlSet::new().map_err(ALLOC)?;
            s.set_str(sys::NFTNL_SET_TABLE, &tn).map_err(ALLOC)?;
            s.set_str(sys::NFTNL_SET_NAME, &sn).map_err(ALLOC)?;
            s.set_u32(sys::NFTNL_SET_FAMILY, family.raw() as u32);
            if let Some(id) = set.id {
                s.set_u32(sys::NFTNL_SET_ID, id);
            }
            for (i, e) in elems[a..b].iter().enumerate() {
                s.add_elem(to_nl_elem(e).map_err(|err| err.at_element(a + i))?);
            }
            let l = if split {
                format!("{label} [elements {a}..{b}]")
            } else {
                label.clone()
            };
            self.push(
                l,
                fixed + elem_bytes,
                msg_type,
                family,
                msg_flags,
                Payload::SetElems(&s),
            )?;
        }
        Ok(())
    }

    /// `flush chain`: deletes every rule of a chain (`NFT_MSG_DELRULE` without a handle).
    pub fn flush_chain(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
        label: impl Into<String>,
    ) -> Result<(), BuildError> {
        let (tn, cn) = (name(table)?, name(chain)?);
        let mut r = NlRule::new().map_err(ALLOC)?;
        r.set_str(sys::NFTNL_RULE_TABLE, &tn).map_err(ALLOC)?;
        r.set_str(sys::NFTNL_RULE_CHAIN, &cn).map_err(ALLOC)?;
        r.set_u32(sys::NFTNL_RULE_FAMILY, family.raw() as u32);
        let bound = HDR + attr(table.len() + 1) + attr(chain.len() + 1) + SLACK;
        self.push(
            label.into(),
            bound,
            NFT_MSG_DELRULE,
            family,
            0,
            Payload::Rule(&r),
        )?;
        Ok(())
    }

    /// `delete chain` (it must be empty and unreferenced by the end of the transaction).
    pub fn delete_chain(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
        label: impl Into<String>,
    ) -> Result<(), BuildError> {
        let (tn, cn) = (name(table)?, name(chain)?);
        let mut c = NlChain::new().map_err(ALLOC)?;
        c.set_str(sys::NFTNL_CHAIN_TABLE, &tn).map_err(ALLOC)?;
        c.set_str(sys::NFTNL_CHAIN_NAME, &cn).map_err(ALLOC)?;
        c.set_u32(sys::NFTNL_CHAIN_FAMILY, family.raw() as u32);
        let bound = HDR + attr(table.len() + 1) + attr(chain.len() + 1) + SLACK;
        self.push(
            label.into(),
            bound,
            NFT_MSG_DELCHAIN,
            family,
            0,
            Payload::Chain(&c),
        )?;
        Ok(())
    }

    /// `add rule` (NLM_F_CREATE | NLM_F_APPEND: appended at the end of the chain).
    pub fn add_rule(&mut self, rule: &Rule, label: impl Into<String>) -> Result<(), BuildError> {
        let tn = name(&rule.table)?;
        let cn = name(&rule.chain)?;
        let mut r = NlRule::new().map_err(ALLOC)?;
        r.set_str(sys::NFTNL_RULE_TABLE, &tn).map_err(ALLOC)?;
        r.set_str(sys::NFTNL_RULE_CHAIN, &cn).map_err(ALLOC)?;
        r.set_u32(sys::NFTNL_RULE_FAMILY, rule.family.raw() as u32);
        let mut bound = HDR
            + attr(rule.table.len() + 1)
            + attr(rule.chain.len() + 1)
            + 4
            + rule.userdata.as_ref().map_or(0, |u| attr(u.len()))
            + SLACK;
        for (i, e) in rule.exprs.iter().enumerate() {
            r.add_expr(e.to_nl().map_err(|err| err.at_expression(i))?);
            bound += e.size_bound();
        }
        if let Some(u) = &rule.userdata {
            r.set_data(sys::NFTNL_RULE_USERDATA, u).map_err(ALLOC)?;
        }
        self.push(
            label.into(),
            bound,
            NFT_MSG_NEWRULE,
            rule.family,
            NLM_F_CREATE | NLM_F_APPEND,
            Payload::Rule(&r),
        )?;
        Ok(())
    }

    /// The complete transaction as sent: batch begin (with `NFNL_BATCH_GENID` if `genid` is
    /// given), the object messages with sequence numbers `base+1..`, and the batch end unless
    /// `commit` is [`Commit::CheckOnly`]. The begin message has sequence number `base`.
    pub fn encode(&self, base: u32, commit: Commit, genid: Option<u32>) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.body.len() + 64);
        push_control(&mut buf, NFNL_MSG_BATCH_BEGIN, base, genid);
        let start = buf.len();
        buf.extend_from_slice(&self.body);
        for (i, m) in self.msgs.iter().enumerate() {
            let at = start + m.offset + 8;
            let seq = base.wrapping_add(1 + i as u32);
            buf[at..at + 4].copy_from_slice(&seq.to_ne_bytes());
        }
        if commit == Commit::Yes {
            let end_seq = base.wrapping_add(1 + self.msgs.len() as u32);
            push_control(&mut buf, NFNL_MSG_BATCH_END, end_seq, None);
        }
        buf
    }

    /// Sends the batch as one transaction and collects the kernel's answer.
    ///
    /// No message requests an ACK (like nft 1.0.6): the kernel processes the whole batch
    /// synchronously inside `sendmsg()` and queues one error message per failing object, so
    /// after the send the socket is drained without blocking; no reply means success. The send
    /// buffer is enlarged to fit the batch and the receive buffer to fit an error for every
    /// message (`SO_*BUFFORCE`, needs CAP_NET_ADMIN like nf_tables itself). Should the receive
    /// buffer overrun anyway, the result is still [`BatchError::Rejected`] (everything queued
    /// was an error), with an extra batch-level `ENOBUFS` entry.
    ///
    /// `genid`: if given, the kernel rejects the whole batch with `ERESTART` unless the ruleset
    /// generation is still `genid` (see [`Socket::generation`]), i.e. nobody committed since.
    pub fn send(
        &self,
        socket: &Socket,
        commit: Commit,
        genid: Option<u32>,
    ) -> Result<(), BatchError> {
        let base = socket.next_seq(self.msgs.len() as u32 + 2);
        let buf = self.encode(base, commit, genid);
        socket.prepare_for_batch(buf.len(), self.msgs.len() + 2)?;
        socket.discard_pending()?;
        socket.send(&buf)?;
        let (errors, overrun) = socket.collect_errors()?;
        let mut out = Vec::new();
        if overrun {
            // No message asked for an ACK, so everything the kernel queued was an error: the
            // batch was rejected even though we could not read every error.
            out.push(ObjectError {
                label: "batch".to_owned(),
                index: None,
                errno: libc::ENOBUFS,
                message: Some(
                    "netlink receive buffer overrun: some error reports were lost".to_owned(),
                ),
                attr_offset: None,
            });
        }
        for e in errors {
            let rel = e.seq.wrapping_sub(base) as usize;
            let (label, index) = if rel == 0 {
                ("batch".to_owned(), None)
            } else if rel <= self.msgs.len() {
                (self.msgs[rel - 1].label.clone(), Some(rel - 1))
            } else if rel == self.msgs.len() + 1 {
                ("batch end".to_owned(), None)
            } else {
                // Not ours (cannot happen on a private socket); keep it visible.
                (format!("unknown message seq {}", e.seq), None)
            };
            out.push(ObjectError {
                label,
                index,
                errno: e.errno,
                message: e.message,
                attr_offset: e.attr_offset,
            });
        }
        if out.is_empty() {
            Ok(())
        } else {
            out.sort_by_key(|e| e.index.map_or(0, |i| i + 1));
            Err(BatchError::Rejected(out))
        }
    }
}

fn push_control(buf: &mut Vec<u8>, t: u16, seq: u32, genid: Option<u32>) {
    let len: u32 = (HDR + if genid.is_some() { 8 } else { 0 }) as u32;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&t.to_ne_bytes());
    buf.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: kernel
                                                // struct nfgenmsg { family = AF_UNSPEC, version, res_id = htons(NFNL_SUBSYS_NFTABLES) }
    buf.push(0);
    buf.push(NFNETLINK_V0);
    buf.extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    if let Some(g) = genid {
        buf.extend_from_slice(&8u16.to_ne_bytes());
        buf.extend_from_slice(&NFNL_BATCH_GENID.to_ne_bytes());
        buf.extend_from_slice(&g.to_be_bytes());
    }
}

fn to_nl_elem(e: &SetElem) -> Result<NlSetElem, BuildError> {
    let bad = |what: &'static str, len: usize| BuildError::BadValueLength { what, len };
    let mut n = NlSetElem::new().map_err(ALLOC)?;
    if e.key.is_empty() {
        return Err(bad("element key", 0));
    }
    n.set_value(sys::NFTNL_SET_ELEM_KEY, &e.key)
        .map_err(|_| bad("element key", e.key.len()))?;
    if let Some(k) = &e.key_end {
        n.set_value(sys::NFTNL_SET_ELEM_KEY_END, k)
            .map_err(|_| bad("element key_end", k.len()))?;
    }
    if e.flags != 0 {
        n.set_u32(sys::NFTNL_SET_ELEM_FLAGS, e.flags);
    }
    match &e.data {
        None => {}
        Some(ElemData::Value(v)) => {
            if v.is_empty() {
                return Err(bad("element data", 0));
            }
            n.set_value(sys::NFTNL_SET_ELEM_DATA, v)
                .map_err(|_| bad("element data", v.len()))?;
        }
        Some(ElemData::Verdict(v)) => {
            n.set_u32(sys::NFTNL_SET_ELEM_VERDICT, v.code() as u32);
            if let Some(c) = v.chain() {
                n.set_str(sys::NFTNL_SET_ELEM_CHAIN, &name(c)?)
                    .map_err(ALLOC)?;
            }
        }
    }
    if let Some(t) = e.timeout_ms {
        n.set_u64(sys::NFTNL_SET_ELEM_TIMEOUT, t);
    }
    if let Some(u) = &e.userdata {
        n.set_blob(sys::NFTNL_SET_ELEM_USERDATA, u).map_err(ALLOC)?;
    }
    Ok(n)
}

/// One error the kernel reported for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectError {
    /// The caller's label of the offending object; `"batch"` for errors about the transaction
    /// itself (e.g. `ERESTART` for a stale generation id, a failed commit, missing permissions).
    pub label: String,
    /// Index of the message in the batch (`None` for batch-level errors).
    pub index: Option<usize>,
    /// Positive errno.
    pub errno: i32,
    /// Extended-ACK message from the kernel, if any.
    pub message: Option<String>,
    /// Extended-ACK offset of the offending attribute within the message, if any.
    pub attr_offset: Option<u32>,
}

impl ObjectError {
    /// `strerror(errno)` without Rust's " (os error N)" suffix.
    pub fn reason(&self) -> String {
        let s = io::Error::from_raw_os_error(self.errno).to_string();
        match s.rfind(" (os error ") {
            Some(i) => s[..i].to_owned(),
            None => s,
        }
    }
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.label, self.reason())?;
        if let Some(m) = &self.message {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

/// Why [`Batch::send`] failed.
#[derive(Debug)]
pub enum BatchError {
    /// Talking to the kernel failed (socket error, truncated send, lost replies). The outcome
    /// of the transaction is unknown unless the error came before the send.
    Io(io::Error),
    /// The kernel rejected the transaction; nothing was committed. Errors are in batch order.
    Rejected(Vec<ObjectError>),
}

impl BatchError {
    /// The per-object errors (empty for [`BatchError::Io`]).
    pub fn errors(&self) -> &[ObjectError] {
        match self {
            BatchError::Io(_) => &[],
            BatchError::Rejected(v) => v,
        }
    }

    /// True if the kernel refused the batch because the ruleset generation changed since the
    /// `genid` passed to [`Batch::send`] (`ERESTART` on the batch begin message). Re-read the
    /// state and retry.
    pub fn is_generation_mismatch(&self) -> bool {
        self.errors()
            .iter()
            .any(|e| e.index.is_none() && e.errno == libc::ERESTART)
    }
}

impl From<io::Error> for BatchError {
    fn from(e: io::Error) -> Self {
        BatchError::Io(e)
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Io(e) => write!(f, "netlink I/O error: {e}"),
            BatchError::Rejected(errs) => {
                for (i, e) in errs.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BatchError::Io(e) => Some(e),
            BatchError::Rejected(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{CmpOp, MetaKey, Register, Verdict};
    use crate::objects::{interval_elements, Interval, IntervalLayout, SetData};
    use crate::{datatype, set_flags};

    /// Splits a byte buffer into (type, flags, seq, payload) messages.
    fn messages(buf: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
        crate::socket::parse_messages(buf)
            .map(|m| (m.msg_type, m.flags, m.seq, m.payload.to_vec()))
            .collect()
    }

    #[test]
    fn framing_and_sequence_numbers() {
        let mut b = Batch::new();
        b.add_table(&Table::new(Family::Inet, "t"), "table t")
            .unwrap();
        b.add_chain(&Chain::regular(Family::Inet, "t", "c"), "chain c")
            .unwrap();
        b.add_rule(
            &Rule::new(
                Family::Inet,
                "t",
                "c",
                vec![
                    Expr::Meta {
                        dreg: Register::R1,
                        key: MetaKey::Mark,
                    },
                    Expr::Cmp {
                        sreg: Register::R1,
                        op: CmpOp::Eq,
                        data: vec![1, 0, 0, 0],
                    },
                    Expr::Verdict(Verdict::Accept),
                ],
            ),
            "rule 1",
        )
        .unwrap();
        let enc = b.encode(100, Commit::Yes, Some(7));
        let msgs = messages(&enc);
        assert_eq!(msgs.len(), 5);
        // begin with genid attribute
        assert_eq!(msgs[0].0, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs[0].2, 100);
        assert_eq!(msgs[0].3.len(), 4 + 8);
        assert_eq!(&msgs[0].3[..4], &[0, 0, 0, 10]);
        assert_eq!(&msgs[0].3[4..8], &[8, 0, 1, 0]);
        assert_eq!(&msgs[0].3[8..], &7u32.to_be_bytes());
        assert_eq!(msgs[1].0, (10 << 8) | NFT_MSG_NEWTABLE);
        assert_eq!(msgs[1].1, NLM_F_REQUEST | NLM_F_CREATE);
        assert_eq!(msgs[3].0, (10 << 8) | NFT_MSG_NEWRULE);
        assert_eq!(msgs[3].1, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND);
        assert_eq!(
            msgs.iter().map(|m| m.2).collect::<Vec<_>>(),
            vec![100, 101, 102, 103, 104]
        );
        assert_eq!(msgs[4].0, NFNL_MSG_BATCH_END);

        let check = b.encode(5, Commit::CheckOnly, None);
        let msgs = messages(&check);
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[0].3.len(), 4);
        assert_ne!(msgs[3].0, NFNL_MSG_BATCH_END);
    }

    #[test]
    fn large_element_lists_are_split() {
        let mut b = Batch::new();
        let mut spec = SetSpec::new(Family::Ip, "t", "big", datatype::IPADDR, 4);
        spec.flags = set_flags::INTERVAL;
        let set = b.add_set(&spec, "set big").unwrap();
        assert_eq!(set.id, Some(1));
        let ivs: Vec<Interval> = (0..20_000u32)
            .map(|i| Interval::prefix(&(0x0a00_0000 + (i << 8)).to_be_bytes(), 24).unwrap())
            .collect();
        let elems = interval_elements(ivs, IntervalLayout::Named)
            .unwrap()
            .elements;
        // a named set keeps every end: the leading zero end, then a start and an end per /24
        assert_eq!(elems.len(), 40_001);
        b.add_elements(Family::Ip, "t", &set, &elems, "set big elements")
            .unwrap();
        assert!(b.len() > 3, "expected several NEWSETELEM messages");
        let labels: Vec<_> = b.labels().collect();
        assert!(
            labels[1].starts_with("set big elements [elements 0.."),
            "{}",
            labels[1]
        );
        let enc = b.encode(1, Commit::Yes, None);
        let msgs = messages(&enc);
        let mut total = 0;
        for m in &msgs[2..msgs.len() - 1] {
            assert_eq!(m.0, (10 << 8) | NFT_MSG_NEWSETELEM);
            // attribute lengths are u16: every message must be comfortably below 64 KiB
            assert!(m.3.len() < 60_000, "message of {} bytes", m.3.len());
            // count the element list entries: find NFTA_SET_ELEM_LIST_ELEMENTS (3)
            let attrs = crate::socket::parse_attrs(&m.3[4..]);
            let (_, list) = attrs.iter().find(|(t, _)| t & 0x7fff == 3).unwrap();
            total += crate::socket::parse_attrs(list).len();
        }
        assert_eq!(total, elems.len());
    }

    #[test]
    fn set_ids_and_map_data() {
        let mut b = Batch::new();
        let mut m = SetSpec::new(Family::Inet, "t", "__map%d", datatype::MARK, 4);
        m.flags = set_flags::ANONYMOUS | set_flags::CONSTANT | set_flags::MAP;
        m.data = Some(SetData::verdict());
        let r1 = b.add_set(&m, "map 1").unwrap();
        let r2 = b.add_set(&m, "map 2").unwrap();
        assert_eq!((r1.id, r2.id), (Some(1), Some(2)));
        b.add_elements(
            Family::Inet,
            "t",
            &r2,
            &[SetElem::verdict(
                vec![0, 1, 0, 0],
                Verdict::Goto("x".into()),
            )],
            "elems",
        )
        .unwrap();
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn build_errors_name_the_position() {
        let mut b = Batch::new();
        let err = b
            .add_rule(
                &Rule::new(
                    Family::Inet,
                    "t",
                    "c",
                    vec![
                        Expr::Counter,
                        Expr::Cmp {
                            sreg: Register::R1,
                            op: CmpOp::Eq,
                            data: vec![],
                        },
                    ],
                ),
                "rule",
            )
            .unwrap_err();
        assert!(err.to_string().contains("expression 1"), "{err}");
        assert!(b.is_empty());
        let err = b
            .add_elements(
                Family::Inet,
                "t",
                &SetRef::named("s"),
                &[SetElem::key(vec![1]), SetElem::key(vec![0; 65])],
                "e",
            )
            .unwrap_err();
        assert!(err.to_string().contains("element 1"), "{err}");
    }

    #[test]
    fn error_display() {
        let e = BatchError::Rejected(vec![ObjectError {
            label: "chain balance, rule 3 (ct mark set ...)".into(),
            index: Some(7),
            errno: libc::ENOENT,
            message: None,
            attr_offset: None,
        }]);
        assert_eq!(
            e.to_string(),
            "chain balance, rule 3 (ct mark set ...): No such file or directory"
        );
        assert!(!e.is_generation_mismatch());
        let e = BatchError::Rejected(vec![ObjectError {
            label: "batch".into(),
            index: None,
            errno: libc::ERESTART,
            message: None,
            attr_offset: None,
        }]);
        assert!(e.is_generation_mismatch());
    }
}
