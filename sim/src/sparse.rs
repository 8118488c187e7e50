//! Bytes held without their long runs of zeros: how a simulated machine's store keeps its
//! guard's records. A record is 3,464 bytes, most of them the zeros of unused quarantine and
//! event slots, and every machine has two: a third of the heap of a 40,000-endpoint run.

/// Bytes that read back exactly as given, held as the 8-byte words that are not zero, in runs:
/// each run a header (the zero words skipped before it and its length in words, `u32` each,
/// little-endian) and its words; two zero words or more between runs are not held, nor the
/// zeros at the end. The encoding is a function of the bytes (equal bytes, equal encodings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseBytes {
    len: usize,
    runs: Box<[u8]>,
}

const WORD: usize = 8;
/// A run's header: two `u32`s (the zero words skipped before it, its length in words).
const HEADER: usize = 8;
/// The fewest zero words between two runs: a shorter gap is held inside the run (holding one
/// word costs what a header costs, and a read copies one run rather than two).
const MIN_GAP: usize = 2;

impl SparseBytes {
    /// `bytes`, held sparsely: the runs found once to size the encoding, then again to write
    /// it into exactly that (no growth, no shrink: a simulated machine writes a record at each
    /// boot, commit and shutdown).
    #[must_use]
    pub fn new(bytes: &[u8]) -> SparseBytes {
        let mut held = 0;
        each_run(bytes, |start, end| held += HEADER + (end - start) * WORD);
        let mut runs = Vec::with_capacity(held);
        let mut held_to = 0; // the words before it are held or skipped
        each_run(bytes, |start, end| {
            let header = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
            runs.extend_from_slice(&header(start - held_to));
            runs.extend_from_slice(&header(end - start));
            let from = (start * WORD).min(bytes.len());
            let to = (end * WORD).min(bytes.len());
            runs.extend_from_slice(bytes.get(from..to).unwrap_or_default());
            // A last word cut short is padded with zeros, as it reads back.
            runs.resize(runs.len() + (end * WORD).saturating_sub(bytes.len()), 0);
            held_to = end;
        });
        debug_assert_eq!(runs.len(), held);
        SparseBytes {
            len: bytes.len(),
            runs: runs.into_boxed_slice(),
        }
    }

    /// How many bytes it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its bytes, into `buf` (cleared first).
    pub fn read_into(&self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.reserve(self.len);
        let mut rest: &[u8] = &self.runs;
        let count = |b: &[u8]| {
            b.get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_le_bytes(b) as usize * WORD)
        };
        while let (Some(skip), Some(len)) = (count(rest), rest.get(4..).and_then(count)) {
            buf.resize(buf.len() + skip, 0);
            let Some(run) = rest.get(8..8 + len) else {
                break;
            };
            buf.extend_from_slice(run);
            rest = rest.get(8 + len..).unwrap_or_default();
        }
        buf.resize(self.len, 0);
    }

    /// Its bytes.
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.read_into(&mut v);
        v
    }

    /// The bytes held for it beside its length: what it costs in memory.
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        self.runs.len()
    }
}

/// Calls `f(start, end)` for each run of words to hold, in order: a run ends at the first gap of
/// [`MIN_GAP`] zero words or more, or at the last nonzero word.
fn each_run(bytes: &[u8], mut f: impl FnMut(usize, usize)) {
    let words = bytes.len().div_ceil(WORD);
    let zero = |i: usize| word(bytes, i) == 0;
    // From word `i`, how many words in a row are zero (`want` true) or not.
    let count = |mut i: usize, want: bool| {
        let from = i;
        if want {
            // Zeros a block of words at a time (a record is mostly zeros): one vector compare.
            const BLOCK: usize = 4 * WORD;
            while let Some(block) = i
                .checked_mul(WORD)
                .and_then(|at| bytes.get(at..at.saturating_add(BLOCK)))
            {
                if block != [0u8; BLOCK] {
                    break;
                }
                i += BLOCK / WORD;
            }
        }
        while i < words && zero(i) == want {
            i += 1;
        }
        i - from
    };
    let mut start = count(0, true);
    while start < words {
        let mut end = start + count(start, false);
        loop {
            let zeros = count(end, true);
            if end + zeros >= words || zeros >= MIN_GAP {
                break;
            }
            end += zeros;
            end += count(end, false);
        }
        f(start, end);
        start = end + count(end, true);
    }
}

/// Word `i` of `bytes` (little-endian, a last word cut short padded with zeros).
fn word(bytes: &[u8], i: usize) -> u64 {
    let from = i.saturating_mul(WORD);
    if let Some(w) = from
        .checked_add(WORD)
        .and_then(|to| bytes.get(from..to))
        .and_then(|w| <[u8; WORD]>::try_from(w).ok())
    {
        return u64::from_le_bytes(w);
    }
    let mut w = [0u8; WORD];
    let from = i.saturating_mul(WORD).min(bytes.len());
    let to = from.saturating_add(WORD).min(bytes.len());
    if let (Some(dst), Some(src)) = (w.get_mut(..to - from), bytes.get(from..to)) {
        dst.copy_from_slice(src);
    }
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn round_trip(bytes: &[u8]) -> SparseBytes {
        let s = SparseBytes::new(bytes);
        assert_eq!(s.to_vec(), bytes, "{bytes:?}");
        assert_eq!(s.len(), bytes.len());
        // Read into a buffer that held something longer.
        let mut buf = vec![0xAA; bytes.len() + 37];
        s.read_into(&mut buf);
        assert_eq!(buf, bytes);
        s
    }

    #[test]
    fn bytes_read_back_as_given() {
        for bytes in [
            &[][..],
            &[0],
            &[1],
            &[0; 7],
            &[0; 8],
            &[0; 9],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
            &[5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            &[255; 100],
        ] {
            round_trip(bytes);
        }
        // Random lengths, with runs of zeros of every length at every alignment.
        let mut rng = Rng::new(3);
        for _ in 0..3000 {
            let len = rng.below_or_eq(300) as usize;
            let mut bytes = vec![0u8; len];
            let mut at = 0;
            while at < len {
                let run = 1 + rng.below_or_eq(40) as usize;
                let value = rng.chance(0.5);
                for b in bytes.iter_mut().skip(at).take(run) {
                    *b = if value {
                        1 + rng.below_or_eq(254) as u8
                    } else {
                        0
                    };
                }
                at += run;
            }
            round_trip(&bytes);
        }
    }

    #[test]
    fn long_runs_of_zeros_are_not_held_and_equal_bytes_encode_alike() {
        assert_eq!(round_trip(&[0; 3464]).held_bytes(), 0);
        // A guard record's shape: a header, a few slots used, zeros, a checksum at the end.
        let mut record = vec![0u8; 3464];
        record[..132].fill(7);
        record[1412..1412 + 3 * 64].fill(9);
        record[3460..].fill(1);
        let s = round_trip(&record);
        // Three runs, of whole words: the header's 17, the events' 25 (from byte 1,408), the
        // checksum's 1; and their three headers.
        assert_eq!(s.held_bytes(), (17 + 25 + 1) * 8 + 3 * 8);
        assert_eq!(SparseBytes::new(&record), s);
        record[2000] = 1;
        assert_ne!(SparseBytes::new(&record), s);
        // A gap of one zero word costs what a header would; two are skipped.
        let mut one_gap = vec![3u8; 24];
        one_gap[8..16].fill(0);
        assert_eq!(round_trip(&one_gap).held_bytes(), 8 + 24);
        let mut two_gap = vec![3u8; 32];
        two_gap[8..24].fill(0);
        assert_eq!(round_trip(&two_gap).held_bytes(), 2 * 8 + 16);
    }
}
