//! The kernel's `jhash()` (Bob Jenkins' lookup3, include/linux/jhash.h) and nft_hash's
//! bucket, so that explain names the member a `source-hash` split gives a known source.

const JHASH_INITVAL: u32 = 0xdead_beef;

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn finish(a: u32, b: u32, c: u32) -> u32 {
    let (mut a, mut b, mut c) = (a, b, c);
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

/// `jhash(key, length, initval)`: the key's bytes in memory order (an address as it sits in
/// the packet), words read in the CPU's order (little-endian here, as on x86 and arm64).
pub fn jhash(key: &[u8], initval: u32) -> u32 {
    let init = JHASH_INITVAL
        .wrapping_add(key.len() as u32)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    let word = |k: &[u8]| u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
    let mut k = key;
    while k.len() > 12 {
        a = a.wrapping_add(word(&k[0..4]));
        b = b.wrapping_add(word(&k[4..8]));
        c = c.wrapping_add(word(&k[8..12]));
        mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    if k.is_empty() {
        return c;
    }
    // The tail, zero-padded: byte i of the last block adds at bit 8 * (i % 4) of word i / 4.
    let mut words = [0u32; 3];
    for (i, byte) in k.iter().enumerate() {
        words[i / 4] |= u32::from(*byte) << (8 * (i % 4));
    }
    a = a.wrapping_add(words[0]);
    b = b.wrapping_add(words[1]);
    c = c.wrapping_add(words[2]);
    finish(a, b, c)
}

/// nft's `jhash ... mod MODULUS seed SEED`: `reciprocal_scale(jhash(), modulus)`.
pub fn bucket(key: &[u8], seed: u32, modulus: u32) -> u32 {
    ((u64::from(jhash(key, seed)) * u64::from(modulus)) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lookup3's own self-test values (hashlittle of "Four score and seven years ago"),
    /// which the kernel's jhash equals on a little-endian machine.
    #[test]
    fn lookup3_reference_values() {
        let key = b"Four score and seven years ago";
        assert_eq!(jhash(key, 0), 0x1777_0551);
        assert_eq!(jhash(key, 1), 0xcd62_8161);
        assert_eq!(jhash(b"", 0), 0xdead_beef);
    }

    #[test]
    fn buckets_stay_below_the_modulus() {
        for i in 0..=255u8 {
            assert!(bucket(&[192, 168, 1, i], 0x6e66_7462, 3) < 3);
        }
    }
}
