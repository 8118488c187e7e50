//! CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) with a table built at compile time.

// Evaluated at compile time: an out-of-range index or overflow would fail the build, not the driver.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#[cfg(any(not(feature = "std"), test))]
const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0usize;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// Slicing-by-8 tables: `TABLES[0]` is the byte table; `TABLES[k][i]` is the CRC of byte `i`
/// followed by `k` zero bytes, so eight bytes fold in with eight lookups and no carried
/// dependency between them (about five times the byte-at-a-time speed; the guard checks two
/// 3.4 KiB records at every boot and writes one at every commit).
// Evaluated at compile time, as `table`.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#[cfg(any(not(feature = "std"), test))]
const fn tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    t[0] = table();
    let mut k = 1;
    while k < 8 {
        let mut i = 0usize;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = t[0][(prev & 0xFF) as usize] ^ (prev >> 8);
            i += 1;
        }
        k += 1;
    }
    t
}

#[cfg(any(not(feature = "std"), test))]
static TABLES: [[u32; 256]; 8] = tables();

#[cfg(any(not(feature = "std"), test))]
fn lookup(k: usize, i: u32) -> u32 {
    TABLES
        .get(k)
        .and_then(|t| t.get((i & 0xFF) as usize))
        .copied()
        .unwrap_or(0)
}

/// The CRC-32 of `bytes` (the value zlib's `crc32` gives).
///
/// The driver's build computes it with the sliced tables below. Host builds (the `std` feature:
/// the service, the tools, the fleet simulator, which checks two records at each of its machines'
/// boots) use crc32fast's carry-less multiplication folding, chosen at run time (the kernel may
/// not use the AVX registers its widest variants take); the same function, which the tests hold
/// the two to.
pub fn crc32(bytes: &[u8]) -> u32 {
    #[cfg(feature = "std")]
    {
        crc32fast::hash(bytes)
    }
    #[cfg(not(feature = "std"))]
    {
        sliced(bytes)
    }
}

/// [`crc32`] by the slicing-by-8 tables (the driver's).
#[cfg(any(not(feature = "std"), test))]
fn sliced(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut lo = [0u8; 4];
        let mut hi = [0u8; 4];
        lo.copy_from_slice(chunk.get(..4).unwrap_or(&[0; 4]));
        hi.copy_from_slice(chunk.get(4..).unwrap_or(&[0; 4]));
        let a = c ^ u32::from_le_bytes(lo);
        let b = u32::from_le_bytes(hi);
        c = lookup(7, a)
            ^ lookup(6, a >> 8)
            ^ lookup(5, a >> 16)
            ^ lookup(4, a >> 24)
            ^ lookup(3, b)
            ^ lookup(2, b >> 8)
            ^ lookup(1, b >> 16)
            ^ lookup(0, b >> 24);
    }
    for &b in chunks.remainder() {
        c = lookup(0, c ^ u32::from(b)) ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::{crc32, sliced};

    /// The byte-at-a-time definition the sliced loop must agree with.
    fn bytewise(bytes: &[u8]) -> u32 {
        let t = super::table();
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c = t[usize::from((c as u8) ^ b)] ^ (c >> 8);
        }
        !c
    }

    #[test]
    fn sliced_and_host_agree_with_bytewise_at_every_length_and_alignment() {
        let mut data = [0u8; 4_000];
        for (i, d) in (0u32..).zip(data.iter_mut()) {
            *d = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
        }
        for len in (0..300).chain([3_460, 3_461, 3_990]) {
            for start in 0..9 {
                let s = &data[start..start + len];
                assert_eq!(sliced(s), bytewise(s), "len {len} at {start}");
                assert_eq!(crc32(s), bytewise(s), "len {len} at {start}");
            }
        }
    }

    #[test]
    fn known_values() {
        for f in [crc32, sliced] {
            assert_eq!(f(b""), 0);
            assert_eq!(f(b"123456789"), 0xCBF4_3926);
            assert_eq!(
                f(b"The quick brown fox jumps over the lazy dog"),
                0x414F_A339
            );
        }
    }
}
