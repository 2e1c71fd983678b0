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
//! * libnftnl serialises without bounds checks, so [`build_msg`] serialises into a [`Scratch`]
//!   buffer followed by an inaccessible guard region larger than any single write libnftnl can
//!   make (every string and blob is checked against [`MAX_ATTR_PAYLOAD`] when it is set): a
//!   message longer than the buffer faults on the guard, as a stack overflow does, and never
//!   writes over other memory. The caller's size estimate only sizes the buffer.

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

/// The largest attribute payload netlink can describe (`nla_len` is 16 bits, header
/// included). Every string and blob handed to libnftnl is checked against it, which bounds
/// every single write of the serialiser (see [`Scratch`]).
pub(crate) const MAX_ATTR_PAYLOAD: usize = u16::MAX as usize - 4;

fn len_u32(data: &[u8]) -> Result<u32, NftnlError> {
    if data.len() > MAX_ATTR_PAYLOAD {
        return Err(NftnlError);
    }
    u32::try_from(data.len()).map_err(|_| NftnlError)
}

/// A string as libnftnl gets it, checked like a blob (it is copied into one attribute).
fn c_str(s: &CStr) -> Result<*const libc::c_char, NftnlError> {
    len_u32(s.to_bytes_with_nul())?;
    Ok(s.as_ptr())
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
        let s = c_str(s)?;
        // SAFETY: valid owned object; `s` points to the caller's C string; libnftnl strdup()s it.
        check(unsafe { sys::nftnl_table_set_str(self.as_ptr(), attr as u16, s) })
    }
    pub(crate) fn set_u32(&mut self, attr: u32, v: u32) {
        // SAFETY: valid owned object; `attr` is a u32-typed table attribute.
        unsafe { sys::nftnl_table_set_u32(self.as_ptr(), attr as u16, v) }
    }
}

impl NlChain {
    pub(crate) fn set_str(&mut self, attr: u32, s: &CStr) -> Result<(), NftnlError> {
        let s = c_str(s)?;
        // SAFETY: valid owned object; `s` points to the caller's C string; libnftnl strdup()s it.
        check(unsafe { sys::nftnl_chain_set_str(self.as_ptr(), attr as u16, s) })
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
        let s = c_str(s)?;
        // SAFETY: valid owned object; `s` points to the caller's C string; libnftnl strdup()s it.
        check(unsafe { sys::nftnl_rule_set_str(self.as_ptr(), attr as u16, s) })
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
        let s = c_str(s)?;
        // SAFETY: valid owned object; `s` points to the caller's C string; libnftnl strdup()s it.
        check(unsafe { sys::nftnl_set_set_str(self.as_ptr(), attr as u16, s) })
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
        let s = c_str(s)?;
        // SAFETY: valid owned object; `s` points to the caller's C string; libnftnl strdup()s it.
        check(unsafe { sys::nftnl_set_elem_set_str(self.as_ptr(), attr as u16, s) })
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
    pub(crate) fn set_u8(&mut self, attr: u32, v: u8) {
        // SAFETY: as for `set_u32`, for u8-typed attributes (reject codes).
        unsafe { sys::nftnl_expr_set_u8(self.0.as_ptr(), attr as u16, v) }
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
        let s = c_str(s)?;
        // SAFETY: valid owned expression; `s` points to the caller's C string; libnftnl strdup()s it.
        check(unsafe { sys::nftnl_expr_set_str(self.0.as_ptr(), attr as u16, s) })
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

/// Zeroed memory that libnftnl serialises into, followed by an inaccessible guard region
/// larger than any single write it makes (an attribute header plus at most
/// [`MAX_ATTR_PAYLOAD`] bytes). libnftnl writes a message front to back, each write starting
/// where the previous one ended (give or take alignment padding), so a message that outgrows
/// the buffer faults on the guard before it can touch anything beyond it.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Start of the mapping (buffer, then guard); `None` before the first message.
    map: Option<NonNull<u8>>,
    /// Usable bytes, a multiple of the page size.
    capacity: usize,
    /// Bytes mapped: `capacity` and the guard.
    mapped: usize,
}

/// Guard bytes after the buffer: more than one attribute (header and payload, padded).
const GUARD: usize = 80 * 1024;

// SAFETY: the mapping is owned by this value alone and only touched through `&mut self`.
unsafe impl Send for Scratch {}
// SAFETY: `&Scratch` gives no access to the mapping at all.
unsafe impl Sync for Scratch {}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Scratch {
    /// At least `len` usable bytes, all zero.
    fn reserve(&mut self, len: usize) -> Result<*mut u8, NftnlError> {
        if let Some(map) = self.map.filter(|_| self.capacity >= len) {
            return Ok(map.as_ptr());
        }
        self.unmap();
        let page = 4096usize.max(page_size());
        let capacity = len.max(1).div_ceil(page) * page;
        let guard = GUARD.div_ceil(page) * page;
        let total = capacity.checked_add(guard).ok_or(NftnlError)?;
        // SAFETY: a fresh private anonymous mapping (zero-filled); no existing memory is named.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(NftnlError);
        }
        let map = raw.cast::<u8>();
        // SAFETY: `map + capacity .. map + total` lies inside the mapping just made, and the
        // offset is page-aligned.
        let rc = unsafe { libc::mprotect(map.add(capacity).cast(), guard, libc::PROT_NONE) };
        if rc != 0 {
            // SAFETY: unmaps exactly the mapping made above, which nothing else refers to.
            unsafe { libc::munmap(raw, total) };
            return Err(NftnlError);
        }
        self.map = NonNull::new(map);
        self.capacity = capacity;
        self.mapped = total;
        Ok(map)
    }

    fn unmap(&mut self) {
        if let Some(map) = self.map.take() {
            // SAFETY: `map` starts our own mapping of `mapped` bytes, which no slice outlives
            // (they end within `build_msg`).
            unsafe { libc::munmap(map.as_ptr().cast(), self.mapped) };
        }
        self.capacity = 0;
        self.mapped = 0;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.unmap();
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// Serialises one netlink message (header + payload) and appends its bytes to `out`; returns
/// the message length. `size_hint` (an estimate of that length) sizes the scratch buffer;
/// soundness does not depend on it (see [`Scratch`]).
pub(crate) fn build_msg(
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
    size_hint: usize,
    hdr: MsgHeader,
    payload: Payload<'_>,
) -> Result<usize, NftnlError> {
    let MsgHeader {
        msg_type,
        family,
        flags,
        seq,
    } = hdr;
    let buf = scratch.reserve(size_hint)?;
    // SAFETY: `buf` starts page-aligned, zeroed, writable memory followed by the guard region;
    // libnftnl writes front to back, each write at most a header and MAX_ATTR_PAYLOAD bytes
    // (checked when every string and blob was set), so an overlong message faults on the
    // guard instead of writing past it. The object pointers are valid during the call.
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
    // Anything longer would have faulted on the guard.
    assert!(len <= scratch.capacity, "message of {len} bytes");
    // SAFETY: the first `len` bytes of the buffer lie inside the mapping and are initialised
    // (zero-filled, then written by libnftnl); no other reference to them exists.
    let bytes = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    out.extend_from_slice(bytes);
    // Attribute padding is not written by libmnl: zero what this message wrote, so the next
    // one starts on zeroes (and equal batches are equal byte strings).
    bytes.fill(0);
    Ok(len)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table_msg(scratch: &mut Scratch, hint: usize) -> Vec<u8> {
        let mut t = NlTable::new().unwrap();
        t.set_str(sys::NFTNL_TABLE_NAME, c"nftbalance").unwrap();
        let mut out = Vec::new();
        let hdr = MsgHeader {
            msg_type: 0x0a00,
            family: 1,
            flags: 0,
            seq: 7,
        };
        build_msg(&mut out, scratch, hint, hdr, Payload::Table(&t)).unwrap();
        out
    }

    #[test]
    fn the_size_hint_only_sizes_the_buffer() {
        let mut small = Scratch::default();
        let mut large = Scratch::default();
        let a = table_msg(&mut small, 0);
        assert_eq!(a, table_msg(&mut large, 1 << 20));
        // Reused scratch space starts on zeroes again.
        assert_eq!(a, table_msg(&mut small, 0));
    }

    #[test]
    fn blobs_longer_than_an_attribute_are_refused_before_libnftnl_sees_them() {
        let mut r = NlRule::new().unwrap();
        let blob = vec![0u8; MAX_ATTR_PAYLOAD + 1];
        assert_eq!(r.set_data(sys::NFTNL_RULE_USERDATA, &blob), Err(NftnlError));
        assert!(r.set_data(sys::NFTNL_RULE_USERDATA, &blob[1..]).is_ok());
    }
}
