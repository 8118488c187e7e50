//! Fixed-capacity rings that callbacks push records into and the control device drains.
//!
//! Pushing never allocates and never waits unboundedly: the lock is tried a fixed number of times,
//! and a record that finds the ring full (or the lock busy) is dropped and counted, so a flood of
//! events can cost detections but never stall a kernel callback. Records carry a sequence number,
//! so user mode sees gaps where records were dropped.
//!
//! Records are written and read in place ([`Ring::push_with`], [`Ring::drain`]): a detection
//! record is about 1.4 KiB, too large to pass by value through the frames of a kernel callback
//! on a small stack.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::text::NoMemory;

/// How many times a push tries the lock before it drops its record.
pub const PUSH_LOCK_TRIES: u32 = 1024;

/// A record kept in a ring: plain data.
pub trait Record: Copy {
    /// A blank record, what every slot holds before it is first written.
    const EMPTY: Self;
    /// Sets the record's sequence number when it is pushed.
    fn set_seq(&mut self, seq: u64);
}

struct State<T> {
    buf: Box<[T]>,
    head: usize,
    len: usize,
}

/// A bounded multi-producer ring with drop counting.
pub struct Ring<T: Record> {
    state: spin::Mutex<State<T>>,
    next_seq: AtomicU64,
    dropped: AtomicU64,
}

impl<T: Record> Ring<T> {
    /// A ring holding up to `capacity` records, allocated here, once (fallibly).
    pub fn new(capacity: usize) -> Result<Self, NoMemory> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(capacity).map_err(|_| NoMemory)?;
        // Within the capacity just reserved: neither this nor `into_boxed_slice` allocates.
        buf.resize(capacity, T::EMPTY);
        Ok(Ring {
            state: spin::Mutex::new(State {
                buf: buf.into_boxed_slice(),
                head: 0,
                len: 0,
            }),
            next_seq: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
        })
    }

    fn try_lock(&self) -> Option<spin::MutexGuard<'_, State<T>>> {
        for _ in 0..PUSH_LOCK_TRIES {
            if let Some(g) = self.state.try_lock() {
                return Some(g);
            }
            core::hint::spin_loop();
        }
        None
    }

    /// Appends a record, giving it the next sequence number. Returns `false` (and counts a drop)
    /// when the ring is full or its lock stayed busy.
    pub fn push(&self, record: T) -> bool {
        self.push_with(|slot| *slot = record)
    }

    /// Appends a record written in place by `fill` (into a slot holding an older record), giving
    /// it the next sequence number. Returns `false` (and counts a drop, `fill` not called) when
    /// the ring is full or its lock stayed busy.
    pub fn push_with(&self, fill: impl FnOnce(&mut T)) -> bool {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let Some(mut s) = self.try_lock() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let cap = s.buf.len();
        if s.len >= cap {
            drop(s);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let at = s.head.wrapping_add(s.len).checked_rem(cap).unwrap_or(0);
        if let Some(slot) = s.buf.get_mut(at) {
            fill(slot);
            slot.set_seq(seq);
            s.len = s.len.saturating_add(1);
            true
        } else {
            false
        }
    }

    /// Removes up to `max` records, oldest first, handing each to `f` in place (under the
    /// ring's lock: `f` must be short). Returns how many.
    pub fn drain(&self, max: usize, mut f: impl FnMut(&T)) -> usize {
        let mut taken = 0;
        while taken < max {
            let Some(mut s) = self.try_lock() else {
                break;
            };
            let cap = s.buf.len();
            if s.len == 0 || cap == 0 {
                break;
            }
            let head = s.head;
            if let Some(r) = s.buf.get(head) {
                f(r);
                taken = taken.saturating_add(1);
            }
            s.head = head.wrapping_add(1).checked_rem(cap).unwrap_or(0);
            s.len = s.len.saturating_sub(1);
        }
        taken
    }

    /// Records waiting.
    pub fn pending(&self) -> usize {
        self.try_lock().map_or(0, |s| s.len)
    }

    /// Records dropped since the ring was made.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::sync::Arc;
    use std::thread;
    use std::vec::Vec;

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct R {
        seq: u64,
        v: u32,
    }
    impl Record for R {
        const EMPTY: R = R { seq: 0, v: 0 };
        fn set_seq(&mut self, seq: u64) {
            self.seq = seq;
        }
    }

    #[test]
    fn overflow_drops_newest_and_counts() {
        let ring = Ring::new(3).unwrap();
        for v in 0..5 {
            ring.push(R { seq: 0, v });
        }
        assert_eq!(ring.pending(), 3);
        assert_eq!(ring.dropped(), 2);
        let mut got = Vec::new();
        assert_eq!(ring.drain(10, |r| got.push(*r)), 3);
        assert_eq!(
            got.iter().map(|r| (r.seq, r.v)).collect::<Vec<_>>(),
            [(1, 0), (2, 1), (3, 2)]
        );
        // after a drain there is room again, and the sequence shows the gap (4 and 5 were dropped)
        ring.push(R { seq: 0, v: 9 });
        let mut got = Vec::new();
        ring.drain(10, |r| got.push(*r));
        assert_eq!(got, [R { seq: 6, v: 9 }]);
    }

    #[test]
    fn drain_respects_max_and_wraps() {
        let ring = Ring::new(4).unwrap();
        for round in 0..10u32 {
            for v in 0..3 {
                assert!(ring.push(R {
                    seq: 0,
                    v: round * 10 + v
                }));
            }
            let mut got = Vec::new();
            assert_eq!(ring.drain(2, |r| got.push(r.v)), 2);
            assert_eq!(ring.drain(5, |r| got.push(r.v)), 1);
            assert_eq!(got, [round * 10, round * 10 + 1, round * 10 + 2]);
        }
        assert_eq!(ring.dropped(), 0);
    }

    #[test]
    fn zero_capacity_drops_everything() {
        let ring: Ring<R> = Ring::new(0).unwrap();
        assert!(!ring.push(R { seq: 0, v: 1 }));
        assert_eq!(ring.drain(5, |_| {}), 0);
        assert_eq!(ring.dropped(), 1);
    }

    #[test]
    fn concurrent_producers_lose_nothing_uncounted() {
        let ring = Arc::new(Ring::new(1000).unwrap());
        let producers: Vec<_> = (0..4)
            .map(|t| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    for v in 0..2000u32 {
                        ring.push(R {
                            seq: 0,
                            v: t * 10_000 + v,
                        });
                    }
                })
            })
            .collect();
        let mut seen = Vec::new();
        while producers.iter().any(|p| !p.is_finished()) {
            ring.drain(64, |r| seen.push(r.seq));
        }
        for p in producers {
            p.join().unwrap();
        }
        ring.drain(usize::MAX, |r| seen.push(r.seq));
        // every sequence number was either delivered exactly once or counted as dropped
        seen.sort_unstable();
        let before = seen.len();
        seen.dedup();
        assert_eq!(before, seen.len(), "a record was delivered twice");
        assert_eq!(seen.len() as u64 + ring.dropped(), 8000);
    }
}
