//! Thin RAII wrappers over the libnftnl objects (`nftnl_table`, `nftnl_chain`, `nftnl_rule`,
//! `nftnl_expr`, `nftnl_set`, `nftnl_set_elem`) and the netlink message builder.
//!
//! Every `unsafe` block of the object-building path lives in this module. The invariants are:
//! * each wrapper owns exactly one non-null pointer returned by the matching `*_alloc` and frees
//!   it exactly once in `Drop`, unless ownership was handed to a parent object (an expression
//!   added to a rule, an element added to a set), in which case the wrapper is forgotten;
//! * strings are passed as `&CStr` (NUL-terminated, no interior NUL) and fixed-size data
//!   (register values) is length-checked against `NFT_DATA_VALUE_MAXLEN` before libnftnl
//!   `memcpy`s it into its fixed 64-byte `union nftnl_data_reg`;
//! * libnftnl copies every string / blob it is given (strdup / malloc+memcpy), and on top of that
//!   all borrowed inputs outlive the serialisation of the object anyway;
//! * libnftnl serialises without bounds checks, so [`build_msg`] is always given a buffer of at
//!   least the caller-computed upper bound of the message size (see `crate::bound`).

use std::ffi::CStr;
use std::ptr::NonNull;

use nftnl_sys as sys;

use crate::consts::NFT_DATA_VALUE_MAXLEN;

/// libnftnl failed to allocate memory (or rejected an attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NftnlError;

fn check(rc: libc::c_int) -> Result<(), NftnlError> {
    if rc < 0 {
        Err(NftnlError)
    } else {
        Ok(())
    }
}

fn check_value_len(data: &[u8]) -> Result<(), NftnlError> {
    if data.len() > NFT_DATA_VALUE_MAXLEN {
        Err(NftnlError)
    } else {
        Ok(())
    }
}

fn len_u32(data: &[u8]) -> Result<u32, NftnlError> {
    u32::try_from(data.len()).map_err(|_| NftnlError)
}

macro_rules! nftnl_object {
    ($(#[$m:meta])* $name:ident, $raw:ty, $alloc:path, $free:path) => {
        $(#[$m])*
        pub(crate) struct $name(NonNull<$raw>);

        impl $name {
            pub(crate) fn new() -> Result<Self, NftnlError> {
                // SAFETY: the allocator takes no arguments and returns either NULL or a fresh,
                // zero-initialised object that we now own.
                let raw = unsafe { $alloc() };
                NonNull::new(raw).map(Self).ok_or(NftnlError)
            }

            fn as_ptr(&self) -> *mut $raw {
                self.0.as_ptr()
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: we own the pointer (allocated by the matching alloc, never handed
                // to a parent object, otherwise the wrapper would have been forgotten) and
                // free it exactly once.
                unsafe { $free(self.as_ptr()) }
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.0).finish()
            }
        }
    };
}

nftnl_object!(
    /// Owned `struct nftnl_table`.
    NlTable, sys::nftnl_table, sys::nftnl_table_alloc, sys::nftnl_table_free
);
nftnl_object!(
    /// Owned `struct nftnl_chain`.
    NlChain, sys::nftnl_chain, sys::nftnl_chain_alloc, sys::nftnl_chain_free
);
nftnl_object!(
    /// Owned `struct nftnl_rule`.
    NlRule, sys::nftnl_rule, sys::nftnl_rule_alloc, sys::nftnl_rule_free
);
nftnl_object!(
    /// Owned `struct nftnl_set`.
    NlSet, sys::nftnl_set, sys::nftnl_set_alloc, sys::nftnl_set_free
);
nftnl_object!(
    /// Owned `struct nftnl_set_elem`.
    NlSetElem, sys::nftnl_set_elem, sys::nftnl_set_elem_alloc, sys::nftnl_set_elem_free
);

impl NlTable {
    pub(crate) fn set_str(&mut self, attr: u32, s: &CStr) -> Result<(), NftnlError> {
        // SAFETY: valid owned object; `s` is NUL-terminated and libnftnl strdup()s it.
        check(unsafe { sys::nftnl_table_set_str(self.as_ptr(), attr as u16, s.as_ptr()) })
    }
    pub(crate) fn set_u32(&mut self, attr: u32, v: u32) {
        // SAFETY: valid owned object; `attr` is a u32-typed table attribute.
        unsafe { sys::nftnl_table_set_u32(self.as_ptr(), attr as u16, v) }
    }
}

impl NlChain {
    pub(crate) fn set_str(&mut self, attr: u32, s: &CStr) -> Result<(), NftnlError> {
        // SAFETY: valid owned object; `s` is NUL-terminated and libnftnl strdup()s it.
        check(unsafe { sys::nftnl_chain_set_str(self.as_ptr(), attr as u16, s.as_ptr()) })
    }
    pub(crate) fn set_u32(&mut self, attr: u32, v: u32) {
        // SAFETY: valid owned object; `attr` is a u32-typed chain attribute.
        unsafe { sys::nftnl_chain_set_u32(self.as_ptr(), attr as u16, v) }
    }
    pub(crate) fn set_s32(&mut self, attr: u32, v: i32) {
        // SAFETY: valid owned object; `attr` is an s32-typed chain attribute (priority).
        unsafe { sys::nftnl_chain_set_s32(self.as_ptr(), attr as u16, v) }
    }
}

impl NlRule {
    pub(crate) fn set_str(&mut self, attr: u32, s: &CStr) -> Result<(), NftnlError> {
        // SAFETY: valid owned object; `s` is NUL-terminated and libnftnl strdup()s it.
        check(unsafe { sys::nftnl_rule_set_str(self.as_ptr(), attr as u16, s.as_ptr()) })
    }
    pub(crate) fn set_u32(&mut self, attr: u32, v: u32) {
        // SAFETY: valid owned object; `attr` is a u32-typed rule attribute.
        unsafe { sys::nftnl_rule_set_u32(self.as_ptr(), attr as u16, v) }
    }
    pub(crate) fn set_data(&mut self, attr: u32, data: &[u8]) -> Result<(), NftnlError> {
        let len = len_u32(data)?;
        // SAFETY: valid owned object; `data` is valid for `len` bytes; libnftnl copies it
        // (only used for NFTNL_RULE_USERDATA, which is malloc+memcpy'd).
        check(unsafe {
            sys::nftnl_rule_set_data(self.as_ptr(), attr as u16, data.as_ptr().cast(), len)
        })
    }
    /// Appends `expr` to the rule; the rule takes ownership of it.
    pub(crate) fn add_expr(&mut self, expr: NlExpr) {
        // SAFETY: both pointers are valid; libnftnl links the expression into the rule's list
        // and frees it together with the rule, so we must not free it ourselves.
        unsafe { sys::nftnl_rule_add_expr(self.as_ptr(), expr.0.as_ptr()) };
        std::mem::forget(expr);
    }
}

impl NlSet {
    pub(crate) fn set_str(&mut self, attr: u32, s: &CStr) -> Result<(), NftnlError> {
        // SAFETY: valid owned object; `s` is NUL-terminated and libnftnl strdup()s it.
        check(unsafe { sys::nftnl_set_set_str(self.as_ptr(), attr as u16, s.as_ptr()) })
    }
    pub(crate) fn set_u32(&mut self, attr: u32, v: u32) {
        // SAFETY: valid owned object; `attr` is a u32-typed set attribute.
        unsafe { sys::nftnl_set_set_u32(self.as_ptr(), attr as u16, v) }
    }
    pub(crate) fn set_u64(&mut self, attr: u32, v: u64) {
        // SAFETY: valid owned object; `attr` is a u64-typed set attribute (timeout, gc).
        unsafe { sys::nftnl_set_set_u64(self.as_ptr(), attr as u16, v) }
    }
    pub(crate) fn set_data(&mut self, attr: u32, data: &[u8]) -> Result<(), NftnlError> {
        let len = len_u32(data)?;
        // SAFETY: valid owned object; `data` is valid for `len` bytes. Only used for
        // NFTNL_SET_USERDATA, which libnftnl malloc+memcpy's.
        check(unsafe {
            sys::nftnl_set_set_data(self.as_ptr(), attr as u16, data.as_ptr().cast(), len)
        })
    }
    /// Adds `elem` to the set's element list; the set takes ownership of it.
    pub(crate) fn add_elem(&mut self, elem: NlSetElem) {
        // SAFETY: both pointers are valid; the set frees its element list on nftnl_set_free,
        // so we must not free the element ourselves.
        unsafe { sys::nftnl_set_elem_add(self.as_ptr(), elem.0.as_ptr()) };
        std::mem::forget(elem);
    }
}

impl NlSetElem {
    /// Sets a register-sized value attribute (KEY, KEY_END, DATA): at most 64 bytes.
    pub(crate) fn set_value(&mut self, attr: u32, data: &[u8]) -> Result<(), NftnlError> {
        check_value_len(data)?;
        let len = len_u32(data)?;
        // SAFETY: valid owned object; `data` is valid for `len` <= 64 bytes, which fits the
        // fixed-size `union nftnl_data_reg` libnftnl memcpy()s it into.
        check(unsafe {
            sys::nftnl_set_elem_set(self.as_ptr(), attr as u16, data.as_ptr().cast(), len)
        })
    }
    /// Sets a heap-copied blob attribute (USERDATA).
    pub(crate) fn set_blob(&mut self, attr: u32, data: &[u8]) -> Result<(), NftnlError> {
        let len = len_u32(data)?;
        // SAFETY: valid owned object; `data` is valid for `len` bytes; for USERDATA libnftnl
        // malloc()s `len` bytes and copies.
        check(unsafe {
            sys::nftnl_set_elem_set(self.as_ptr(), attr as u16, data.as_ptr().cast(), len)
        })
    }
    pub(crate) fn set_u32(&mut self, attr: u32, v: u32) {
        // SAFETY: valid owned object; `attr` is a u32-typed element attribute.
        unsafe { sys::nftnl_set_elem_set_u32(self.as_ptr(), attr as u16, v) }
    }
    pub(crate) fn set_u64(&mut self, attr: u32, v: u64) {
        // SAFETY: valid owned object; `attr` is a u64-typed element attribute (timeout).
        unsafe { sys::nftnl_set_elem_set_u64(self.as_ptr(), attr as u16, v) }
    }
    pub(crate) fn set_str(&mut self, attr: u32, s: &CStr) -> Result<(), NftnlError> {
        // SAFETY: valid owned object; `s` is NUL-terminated and libnftnl strdup()s it.
        check(unsafe { sys::nftnl_set_elem_set_str(self.as_ptr(), attr as u16, s.as_ptr()) })
    }
}

/// Owned `struct nftnl_expr`. Follows the pattern of nftnl's `Expression::to_expr`: allocate by
/// name, set attributes, then hand over to a rule with [`NlRule::add_expr`].
pub(crate) struct NlExpr(NonNull<sys::nftnl_expr>);

impl std::fmt::Debug for NlExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("NlExpr").field(&self.0).finish()
    }
}

impl NlExpr {
    /// Allocates an expression of the given kind ("cmp", "numgen", ...). Fails if libnftnl does
    /// not know the kind.
    pub(crate) fn new(kind: &CStr) -> Result<Self, NftnlError> {
        // SAFETY: `kind` is NUL-terminated; returns NULL for unknown kinds / OOM.
        let raw = unsafe { sys::nftnl_expr_alloc(kind.as_ptr()) };
        NonNull::new(raw).map(Self).ok_or(NftnlError)
    }
    pub(crate) fn set_u32(&mut self, attr: u32, v: u32) {
        // SAFETY: valid owned expression; libnftnl checks that `attr` is a valid attribute of
        // this expression kind and stores the plain integer.
        unsafe { sys::nftnl_expr_set_u32(self.0.as_ptr(), attr as u16, v) }
    }
    pub(crate) fn set_u64(&mut self, attr: u32, v: u64) {
        // SAFETY: as for `set_u32`, for u64-typed attributes (timeouts).
        unsafe { sys::nftnl_expr_set_u64(self.0.as_ptr(), attr as u16, v) }
    }
    /// Sets a register value attribute (cmp data, bitwise mask/xor, immediate data): <= 64 bytes.
    pub(crate) fn set_value(&mut self, attr: u32, data: &[u8]) -> Result<(), NftnlError> {
        check_value_len(data)?;
        let len = len_u32(data)?;
        // SAFETY: valid owned expression; `data` is valid for `len` <= 64 bytes, which fits the
        // fixed-size `union nftnl_data_reg` libnftnl memcpy()s it into.
        check(unsafe {
            sys::nftnl_expr_set(self.0.as_ptr(), attr as u16, data.as_ptr().cast(), len)
        })
    }
    pub(crate) fn set_str(&mut self, attr: u32, s: &CStr) -> Result<(), NftnlError> {
        // SAFETY: valid owned expression; `s` is NUL-terminated and libnftnl strdup()s it.
        check(unsafe { sys::nftnl_expr_set_str(self.0.as_ptr(), attr as u16, s.as_ptr()) })
    }
}

impl Drop for NlExpr {
    fn drop(&mut self) {
        // SAFETY: we still own the expression (it was not added to a rule, otherwise the
        // wrapper would have been forgotten) and free it exactly once.
        unsafe { sys::nftnl_expr_free(self.0.as_ptr()) }
    }
}

/// What to serialise after the `nlmsghdr` + `nfgenmsg` header.
#[derive(Debug)]
pub(crate) enum Payload<'a> {
    Table(&'a NlTable),
    Chain(&'a NlChain),
    Rule(&'a NlRule),
    Set(&'a NlSet),
    /// The set's element list (NFT_MSG_NEWSETELEM body).
    SetElems(&'a NlSet),
}

/// Netlink header fields of a message to build.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MsgHeader {
    /// full `nlmsg_type` (subsystem << 8 | message)
    pub(crate) msg_type: u16,
    /// `nfgenmsg.nfgen_family`
    pub(crate) family: u16,
    /// `nlmsg_flags` besides NLM_F_REQUEST (which libnftnl always sets)
    pub(crate) flags: u16,
    /// `nlmsg_seq`
    pub(crate) seq: u32,
}

/// Serialises one netlink message (header + payload) and appends its bytes to `out`.
///
/// `bound` must be an upper bound of the message length; libnftnl writes without bounds checks
/// into `scratch`, which is grown to `bound` bytes first. Returns the message length.
pub(crate) fn build_msg(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u64>,
    bound: usize,
    hdr: MsgHeader,
    payload: Payload<'_>,
) -> usize {
    let MsgHeader {
        msg_type,
        family,
        flags,
        seq,
    } = hdr;
    // 8-byte aligned scratch space (nlmsghdr / nlattr require 4-byte alignment).
    let words = bound.div_ceil(8) + 1;
    if scratch.len() < words {
        scratch.resize(words, 0);
    }
    // Attribute padding is not written by libmnl: clear what earlier messages left, so no
    // stale bytes end up in this message (and equal batches are equal byte strings).
    scratch[..words].fill(0);
    let buf: *mut u8 = scratch.as_mut_ptr().cast();
    // SAFETY: `buf` points to at least `bound` writable, 8-byte aligned bytes; the header is
    // 20 bytes and every payload builder writes at most `bound` bytes in total (guaranteed by
    // the caller's upper bound, which over-approximates every attribute we set). The object
    // pointers are valid for the duration of the call.
    let len = unsafe {
        let nlh = sys::nftnl_nlmsg_build_hdr(buf.cast(), msg_type, family, flags, seq);
        match payload {
            Payload::Table(t) => sys::nftnl_table_nlmsg_build_payload(nlh, t.as_ptr()),
            Payload::Chain(c) => sys::nftnl_chain_nlmsg_build_payload(nlh, c.as_ptr()),
            Payload::Rule(r) => sys::nftnl_rule_nlmsg_build_payload(nlh, r.as_ptr()),
            Payload::Set(s) => sys::nftnl_set_nlmsg_build_payload(nlh, s.as_ptr()),
            Payload::SetElems(s) => sys::nftnl_set_elems_nlmsg_build_payload(nlh, s.as_ptr()),
        }
        (*nlh).nlmsg_len as usize
    };
    if len > bound {
        // The scratch buffer has been overrun: memory is corrupt, continuing is unsound.
        eprintln!("nftbalance-netlink: message size {len} exceeded bound {bound}");
        std::process::abort();
    }
    // SAFETY: the first `len <= bound` bytes of the scratch buffer are initialised (the Vec is
    // zero-initialised and libnftnl just wrote the message there) and lie inside the allocation.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast_const(), len) };
    out.extend_from_slice(bytes);
    len
}

/// The raw file descriptor of an mnl socket plus the few socket calls mnl does not wrap.
pub(crate) mod sock {
    use std::io;
    use std::os::fd::RawFd;

    /// `setsockopt(fd, level, name, &int, sizeof int)`.
    pub(crate) fn set_int_opt(
        fd: RawFd,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: passes a pointer to a live c_int together with its exact size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// `getsockopt(fd, level, name)` for a u64-valued option.
    pub(crate) fn get_u64_opt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<u64> {
        let mut value: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live, writable and correctly sized.
        let rc =
            unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut u64).cast(), &mut len) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(value)
        }
    }

    /// `getsockopt(fd, level, name)` for an int-valued option.
    pub(crate) fn get_int_opt(
        fd: RawFd,
        level: libc::c_int,
        name: libc::c_int,
    ) -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live, writable and correctly sized.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(value)
        }
    }

    /// `recv(fd, buf, MSG_DONTWAIT)`: `Ok(None)` when nothing is queued.
    pub(crate) fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let rc = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(err)
            }
        } else {
            Ok(Some(rc as usize))
        }
    }

    /// `recv(fd, buf, 0)` (blocking).
    pub(crate) fn recv_blocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let rc = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }
}
