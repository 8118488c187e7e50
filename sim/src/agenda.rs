//! The simulation's agenda: events by the second they are due, in the order they were scheduled
//! within a second.
//!
//! A binary heap of every pending event (one or two per endpoint: 100,000 and more) costs a
//! dozen cache misses a pop as it sifts through levels that do not fit the caches. Times here are
//! whole seconds, and nearly every event is due within a day, so the agenda is a wheel of one
//! bucket per second over [`HORIZON`] seconds, drained in order; the few events due later (a
//! baseline crash weeks away) wait in a heap and join their bucket when the wheel reaches their
//! horizon, before anything else can be scheduled into it. The order is exactly the heap's on
//! (second, order of scheduling): the same run, event for event.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Seconds the wheel covers ahead of the second being drained (about 36 hours).
pub const HORIZON: u64 = 1 << 17;

/// Pending events of type `E`, each due at a whole second.
pub struct Agenda<E> {
    /// Bucket `t % HORIZON` holds the events due at second `t`, for `now <= t < now + HORIZON`.
    buckets: Vec<Vec<E>>,
    /// The second being drained.
    now: u64,
    /// How many events of the current bucket were taken.
    taken: usize,
    /// Events in the buckets, the current bucket's taken ones excluded.
    pending: usize,
    /// Events due at `now + HORIZON` or later, by (second, order of scheduling): the two are
    /// unique together, so the event itself never decides the order.
    later: BinaryHeap<Reverse<(u64, u64, E)>>,
    /// Order of scheduling among `later`'s events.
    scheduled: u64,
}

impl<E: Copy + Ord> Agenda<E> {
    /// An empty agenda whose first second is `start`.
    #[must_use]
    pub fn new(start: u64) -> Agenda<E> {
        Agenda {
            buckets: (0..HORIZON).map(|_| Vec::new()).collect(),
            now: start,
            taken: 0,
            pending: 0,
            later: BinaryHeap::new(),
            scheduled: 0,
        }
    }

    fn bucket(&mut self, at: u64) -> &mut Vec<E> {
        // The wheel's length is HORIZON: the index is in range.
        let i = usize::try_from(at % HORIZON).unwrap_or(0);
        &mut self.buckets[i]
    }

    /// Schedules `event` at second `at`: after every event scheduled before it for the same
    /// second. A second already past is taken as the current one (nothing runs in the past).
    pub fn push(&mut self, at: u64, event: E) {
        let at = at.max(self.now);
        if at - self.now < HORIZON {
            self.bucket(at).push(event);
            self.pending += 1;
        } else {
            self.scheduled += 1;
            self.later.push(Reverse((at, self.scheduled, event)));
        }
    }

    /// Moves the events of `later` due before the horizon into their buckets, in order.
    fn admit_later(&mut self) {
        while let Some(&Reverse((at, _, event))) = self.later.peek() {
            if at - self.now >= HORIZON {
                break;
            }
            self.later.pop();
            self.bucket(at).push(event);
            self.pending += 1;
        }
    }

    /// The event `n` places after the next one [`Agenda::pop`] returns, if it is due in the same
    /// second (a look ahead, for touching its state early; nothing is taken).
    #[must_use]
    pub fn peek_after_next(&self, n: usize) -> Option<E> {
        let i = usize::try_from(self.now % HORIZON).ok()?;
        self.buckets
            .get(i)?
            .get(self.taken.checked_add(n)?)
            .copied()
    }

    /// The next event and its second, or `None` when nothing is pending.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        loop {
            let (now, taken) = (self.now, self.taken);
            if let Some(&event) = self.bucket(now).get(taken) {
                self.taken += 1;
                self.pending -= 1;
                return Some((now, event));
            }
            // Drained: its memory goes back to the allocator rather than waiting a HORIZON for
            // the bucket's next second (kept, every second's bucket would hold the most events
            // it ever held: 0.7 GB of good's 2.5 GB at 100,000 endpoints over 48 hours).
            *self.bucket(now) = Vec::new();
            self.taken = 0;
            if self.pending == 0 {
                // The wheel is empty: jump to the first later event, if any.
                let &Reverse((at, _, _)) = self.later.peek()?;
                self.now = at;
            } else {
                self.now += 1;
            }
            self.admit_later();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, Rng};

    fn below(rng: &mut Rng, n: u64) -> u64 {
        rng.below_or_eq(n - 1)
    }

    /// A heap of (second, order of scheduling, event): what the agenda must agree with.
    struct Reference {
        heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
        next: u64,
    }

    impl Reference {
        fn push(&mut self, at: u64, e: u32) {
            self.next += 1;
            self.heap.push(Reverse((at, self.next, e)));
        }
        fn pop(&mut self) -> Option<(u64, u32)> {
            self.heap.pop().map(|Reverse((at, _, e))| (at, e))
        }
    }

    #[test]
    fn agrees_with_a_heap_on_second_and_order() {
        for seed in 0..12 {
            let mut rng = Rng::stream(seed, 0, Purpose::Agent);
            let mut agenda = Agenda::new(1_000);
            let mut reference = Reference {
                heap: BinaryHeap::new(),
                next: 0,
            };
            let mut now = 1_000;
            let mut label = 0u32;
            let mut schedule = |rng: &mut Rng, now: u64, a: &mut Agenda<u32>, r: &mut Reference| {
                // Same second, near, a day, past the horizon, weeks away, exactly at its edge.
                let delay = match below(rng, 7) {
                    0 => 0,
                    1 => below(rng, 5),
                    2 => below(rng, 900),
                    3 => below(rng, 86_400),
                    4 => HORIZON + below(rng, 3 * HORIZON),
                    5 => HORIZON - 1 + below(rng, 3),
                    _ => 30 * 86_400 + below(rng, 5),
                };
                label += 1;
                a.push(now + delay, label);
                r.push(now + delay, label);
            };
            for _ in 0..50 {
                schedule(&mut rng, now, &mut agenda, &mut reference);
            }
            let mut popped = 0;
            while let Some((at, e)) = agenda.pop() {
                assert_eq!(
                    Some((at, e)),
                    reference.pop(),
                    "seed {seed}, event {popped}"
                );
                assert!(at >= now);
                now = at;
                popped += 1;
                // Each event schedules up to two more, for a while.
                if popped < 3_000 {
                    for _ in 0..below(&mut rng, 3) {
                        schedule(&mut rng, now, &mut agenda, &mut reference);
                    }
                }
            }
            assert_eq!(reference.pop(), None, "seed {seed}");
            assert!(popped > 100, "seed {seed}: {popped}");
        }
    }

    #[test]
    fn a_drained_second_holds_no_memory() {
        let mut agenda = Agenda::new(0);
        for e in 0..1_000u32 {
            agenda.push(10, e);
        }
        agenda.push(11, 1_000);
        for e in 0..1_000u32 {
            assert_eq!(agenda.pop(), Some((10, e)));
        }
        assert_eq!(agenda.pop(), Some((11, 1_000)));
        assert_eq!(agenda.buckets[10].capacity(), 0);
        // And the wheel still takes events for that bucket's next turn.
        agenda.push(HORIZON + 10, 7);
        assert_eq!(agenda.pop(), Some((HORIZON + 10, 7)));
    }

    #[test]
    fn peeking_sees_the_events_pop_returns_next_in_the_second() {
        let mut agenda = Agenda::new(0);
        for e in 1..=4u32 {
            agenda.push(10, e);
        }
        agenda.push(11, 5);
        assert_eq!(agenda.pop(), Some((10, 1)));
        assert_eq!(agenda.peek_after_next(0), Some(2));
        assert_eq!(agenda.peek_after_next(2), Some(4));
        assert_eq!(
            agenda.peek_after_next(3),
            None,
            "the next second is not looked at"
        );
        assert_eq!(agenda.pop(), Some((10, 2)));
        assert_eq!(agenda.peek_after_next(0), Some(3));
    }

    #[test]
    fn a_past_second_is_the_current_one() {
        let mut agenda = Agenda::new(100);
        agenda.push(200, 1u32);
        assert_eq!(agenda.pop(), Some((200, 1)));
        agenda.push(150, 2);
        agenda.push(200, 3);
        assert_eq!(agenda.pop(), Some((200, 2)));
        assert_eq!(agenda.pop(), Some((200, 3)));
        assert_eq!(agenda.pop(), None);
    }
}
