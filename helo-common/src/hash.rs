//! SipHash-2-4, fed one byte at a time.
//!
//! Why keyed: anyone can get a name of their own choosing blocked. With an unkeyed or weak hash an
//! attacker could craft a name whose hash collides with a legitimate sender's name and so get that
//! sender dropped. With a secret 128-bit key (chosen by the agent, kept in its state directory) they
//! cannot predict any hash.
//!
//! Why streamed: the XDP program hashes the argument while it scans the packet, with no buffer of
//! its own, eight bytes per step on its fast path ([`SipHasher24::write_word`]) and one byte per
//! step on its slow path; user space feeds the same bytes through the same code.

/// The 128-bit SipHash key, as two little-endian 64-bit halves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashKey {
    pub k0: u64,
    pub k1: u64,
}

impl HashKey {
    /// The key from its 16-byte form (k0 then k1, each little-endian), as `siphasher` takes it.
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        let mut i = 0;
        while i < 8 {
            k0[i] = b[i];
            k1[i] = b[i + 8];
            i += 1;
        }
        Self { k0: u64::from_le_bytes(k0), k1: u64::from_le_bytes(k1) }
    }

    pub const fn to_bytes(self) -> [u8; 16] {
        let a = self.k0.to_le_bytes();
        let b = self.k1.to_le_bytes();
        let mut out = [0u8; 16];
        let mut i = 0;
        while i < 8 {
            out[i] = a[i];
            out[i + 8] = b[i];
            i += 1;
        }
        out
    }
}

/// Streaming SipHash-2-4 state.
#[derive(Clone, Copy, Debug)]
pub struct SipHasher24 {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
    /// Bytes not yet compressed, little-endian, `ntail` of them.
    tail: u64,
    ntail: u32,
    /// Total length; only its low byte enters the final block.
    len: u32,
}

impl SipHasher24 {
    #[inline(always)]
    pub fn new(key: &HashKey) -> Self {
        Self {
            v0: key.k0 ^ 0x736f_6d65_7073_6575,
            v1: key.k1 ^ 0x646f_7261_6e64_6f6d,
            v2: key.k0 ^ 0x6c79_6765_6e65_7261,
            v3: key.k1 ^ 0x7465_6462_7974_6573,
            tail: 0,
            ntail: 0,
            len: 0,
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13);
        self.v1 ^= self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16);
        self.v3 ^= self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21);
        self.v3 ^= self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17);
        self.v1 ^= self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.round();
        self.v0 ^= m;
    }

    /// Feeds one byte.
    #[inline(always)]
    pub fn write_u8(&mut self, b: u8) {
        self.tail |= (b as u64) << (8 * self.ntail);
        self.ntail += 1;
        self.len = self.len.wrapping_add(1);
        if self.ntail == 8 {
            let m = self.tail;
            self.compress(m);
            self.tail = 0;
            self.ntail = 0;
        }
    }

    /// Feeds eight bytes at once (little-endian), with no bytes pending: the word-at-a-time
    /// greeting path ([`crate::words`]) feeds the argument this way.
    #[inline(always)]
    pub fn write_word(&mut self, m: u64) {
        self.compress(m);
        self.len = self.len.wrapping_add(8);
    }

    /// Ends a word-fed hash: `tail` holds the last `total_len % 8` bytes (little-endian, the
    /// bytes above them zero) and `total_len` is the length of everything fed, tail included.
    #[inline(always)]
    pub fn finish_words(mut self, tail: u64, total_len: u32) -> u64 {
        self.tail = tail;
        self.ntail = total_len & 7;
        self.len = total_len;
        self.finish()
    }

    /// Writes this state to `dst` one field at a time, with volatile stores.
    ///
    /// Why: for a plain struct store into map memory LLVM merges the zeroed fields into a
    /// `memset` call, and the BPF `memset` (aya-ebpf's) is a byte loop: measured at about 15 ns
    /// per greeting on the XDP fast path. Volatile stores are never merged.
    ///
    /// # Safety
    /// `dst` is valid for writes of a `SipHasher24` and aligned for it.
    #[inline(always)]
    pub unsafe fn store_to(self, dst: *mut Self) {
        use core::ptr::{addr_of_mut, write_volatile};
        // SAFETY: the caller's contract; each field pointer is derived from `dst` without
        // creating a reference.
        unsafe {
            write_volatile(addr_of_mut!((*dst).v0), self.v0);
            write_volatile(addr_of_mut!((*dst).v1), self.v1);
            write_volatile(addr_of_mut!((*dst).v2), self.v2);
            write_volatile(addr_of_mut!((*dst).v3), self.v3);
            write_volatile(addr_of_mut!((*dst).tail), self.tail);
            write_volatile(addr_of_mut!((*dst).ntail), self.ntail);
            write_volatile(addr_of_mut!((*dst).len), self.len);
        }
    }

    /// Feeds a slice (user space; the kernel feeds bytes one at a time).
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u8(b);
        }
    }

    #[inline(always)]
    pub fn finish(mut self) -> u64 {
        let b = ((self.len as u64 & 0xff) << 56) | self.tail;
        self.compress(b);
        self.v2 ^= 0xff;
        self.round();
        self.round();
        self.round();
        self.round();
        self.v0 ^ self.v1 ^ self.v2 ^ self.v3
    }
}
