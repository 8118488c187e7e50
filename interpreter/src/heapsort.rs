//! Sorting for the verifier and its indexes: heapsort, because it runs in the kernel.
//!
//! The standard library's unstable sort recurses (up to twice the logarithm of the length, with
//! a frame of over a kilobyte for tuples: tens of kilobytes of kernel stack for a large pack), and
//! its stable sort allocates. Heapsort sorts in place, in O(n log n) comparisons at worst, with a
//! fixed, small frame and no recursion, whatever the input.

use core::cmp::Ordering;

/// Sorts `v` ascending (not stable).
pub fn sort<T: Ord>(v: &mut [T]) {
    sort_by(v, |a, b| a.cmp(b));
}

/// Sorts `v` by `cmp` (not stable).
pub fn sort_by<T>(v: &mut [T], mut cmp: impl FnMut(&T, &T) -> Ordering) {
    let len = v.len();
    // Build a max-heap, then move the maximum to the end, one element at a time.
    for start in (0..len / 2).rev() {
        sift_down(v, start, len, &mut cmp);
    }
    for end in (1..len).rev() {
        v.swap(0, end);
        sift_down(v, 0, end, &mut cmp);
    }
}

/// Restores the heap property below `node` within `v[..end]`.
fn sift_down<T>(
    v: &mut [T],
    mut node: usize,
    end: usize,
    cmp: &mut impl FnMut(&T, &T) -> Ordering,
) {
    loop {
        let Some(left) = node.checked_mul(2).and_then(|x| x.checked_add(1)) else {
            return;
        };
        if left >= end {
            return;
        }
        let right = left.saturating_add(1);
        let child = match (v.get(left), v.get(right)) {
            (Some(l), Some(r)) if right < end && cmp(l, r) == Ordering::Less => right,
            _ => left,
        };
        match (v.get(node), v.get(child)) {
            (Some(n), Some(c)) if cmp(n, c) == Ordering::Less => {
                v.swap(node, child);
                node = child;
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn sorts_like_the_standard_library() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in (0..40).chain([100, 257, 1000, 4096]) {
            for modulo in [1u64, 2, 7, 1000, u64::MAX] {
                let v: Vec<(u64, u32)> = (0..len)
                    .map(|i| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x % modulo, i)
                    })
                    .collect();
                let mut ours = v.clone();
                sort(&mut ours);
                let mut std = v.clone();
                std.sort_unstable();
                assert_eq!(ours, std, "len {len} modulo {modulo}");
                let mut by = v.clone();
                sort_by(&mut by, |a, b| b.cmp(a));
                std.reverse();
                assert_eq!(by, std);
            }
        }
    }
}
