//! The running content, and swapping it while callbacks evaluate events (hot update).
//!
//! Two slots and an index to the active one. A callback reads the index and takes a shared lock on
//! that slot for the length of one evaluation; it never waits: if the slot is being rewritten at
//! that instant (only possible after two swaps during one read), it retries once and otherwise
//! skips the event and counts it. An update rewrites only the inactive slot, waiting (with the
//! caller's back-off, outside any callback) until the last reader of the content it replaces has
//! finished, then flips the index. So a pack is freed only by the updating thread, and never while
//! a callback still uses it.

use bulwark_interpreter::VerifiedPack;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use protocol::ContentSource;

use bulwark_protocol as protocol;

/// Verified content and what identifies it.
#[derive(Debug)]
pub struct Content {
    /// The verified pack.
    pub pack: VerifiedPack,
    /// Its update channel.
    pub channel: u32,
    /// Its content version.
    pub version: u64,
    /// SHA-256 of the pack.
    pub hash: [u8; 32],
    /// Last-known-good or candidate.
    pub source: ContentSource,
}

/// The two content slots.
pub struct ContentSwap {
    // Held in place, not boxed: a swap moves the content in and allocates nothing.
    slots: [spin::RwLock<Option<Content>>; 2],
    active: AtomicUsize,
    busy: AtomicU64,
    swaps: AtomicU64,
}

impl Default for ContentSwap {
    fn default() -> Self {
        Self::new()
    }
}

impl ContentSwap {
    /// No content.
    pub const fn new() -> Self {
        ContentSwap {
            slots: [spin::RwLock::new(None), spin::RwLock::new(None)],
            active: AtomicUsize::new(0),
            busy: AtomicU64::new(0),
            swaps: AtomicU64::new(0),
        }
    }

    /// Runs `f` with the active content (or `None` when there is none). Never blocks: if the
    /// content cannot be read at this instant, `f` is not run, the event is counted as skipped,
    /// and `None` is returned.
    pub fn with_active<R>(&self, f: impl FnOnce(Option<&Content>) -> R) -> Option<R> {
        for _ in 0..2 {
            let i = self.active.load(Ordering::Acquire) & 1;
            let Some(slot) = self.slots.get(i) else {
                break;
            };
            if let Some(guard) = slot.try_read() {
                return Some(f(guard.as_ref()));
            }
        }
        self.busy.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Makes `content` active. The previous content stays in the other slot until the next swap
    /// and is dropped then, by the swapping thread, after its last reader is done. `backoff` is
    /// called while readers drain (the driver sleeps a little; tests yield).
    pub fn swap(&self, content: Content, backoff: &mut dyn FnMut()) {
        let next = (self.active.load(Ordering::Acquire) & 1) ^ 1;
        if let Some(slot) = self.slots.get(next) {
            let mut guard = loop {
                if let Some(g) = slot.try_write() {
                    break g;
                }
                backoff();
            };
            // The content being replaced here was retired one swap ago; it is freed now, here.
            *guard = Some(content);
        }
        self.active.store(next, Ordering::Release);
        self.swaps.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes all content (unload), waiting for readers with `backoff`.
    pub fn clear(&self, backoff: &mut dyn FnMut()) {
        for slot in &self.slots {
            loop {
                if let Some(mut g) = slot.try_write() {
                    *g = None;
                    break;
                }
                backoff();
            }
        }
    }

    /// Events skipped because the content was being rewritten at that instant.
    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Swaps done.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
    use bulwark_interpreter::schema::ProcessCreation;
    use bulwark_interpreter::{verify, Case, Event, EventType, StrOp};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::thread;
    use std::vec::Vec;

    /// A pack whose single rule matches images containing `needle`.
    pub(crate) fn pack(needle: &str, id: &str) -> VerifiedPack {
        let mut b = PackBuilder::new();
        b.rule(RuleSpec {
            event_type: EventType::ProcessCreation,
            id: id.into(),
            title: "t".into(),
            author: "a".into(),
            level: bulwark_interpreter::Level::High,
            action: bulwark_interpreter::Action::Alert,
            tags: Vec::new(),
            expr: Expr::Pred(Pred::Str {
                field: 0,
                op: StrOp::Contains,
                case: Case::Insensitive,
                value: needle.into(),
            }),
        })
        .unwrap();
        verify(&b.finish()).unwrap()
    }

    fn content(needle: &str, version: u64) -> Content {
        Content {
            pack: pack(needle, needle),
            channel: 1,
            version,
            hash: [0; 32],
            source: ContentSource::Candidate,
        }
    }

    #[test]
    fn empty_then_swapped() {
        let swap = ContentSwap::new();
        assert_eq!(swap.with_active(|c| c.is_none()), Some(true));
        swap.swap(content("cmd", 1), &mut || {});
        assert_eq!(swap.with_active(|c| c.map(|c| c.version)), Some(Some(1)));
        swap.swap(content("ps", 2), &mut || {});
        assert_eq!(swap.with_active(|c| c.map(|c| c.version)), Some(Some(2)));
        swap.clear(&mut || {});
        assert_eq!(swap.with_active(|c| c.is_none()), Some(true));
    }

    #[test]
    fn hot_swap_under_concurrent_readers() {
        let swap = Arc::new(ContentSwap::new());
        swap.swap(content("needle0", 0), &mut || {});
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(core::sync::atomic::AtomicU64::new(0));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let swap = Arc::clone(&swap);
                let stop = Arc::clone(&stop);
                let seen = Arc::clone(&seen);
                thread::spawn(move || {
                    let mut evaluated = 0u64;
                    let mut last_version = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let r = swap.with_active(|c| {
                            let c = c.expect("content is never absent once set");
                            // Evaluate with the version's own needle: the pack and its metadata
                            // must always belong together, and the pack must be alive.
                            let image = std::format!("C:\\x\\needle{}.exe", c.version);
                            let v = ProcessCreation {
                                image: Some(&image),
                                ..Default::default()
                            };
                            let values = v.values();
                            let ev = Event::from_typed((&values).into());
                            let mut hits = 0;
                            c.pack.evaluate(&ev, &mut |_| hits += 1);
                            assert_eq!(hits, 1, "version {} pack mismatched", c.version);
                            c.version
                        });
                        if let Some(v) = r {
                            assert!(v >= last_version, "content went backwards");
                            last_version = v;
                            evaluated += 1;
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    evaluated
                })
            })
            .collect();
        for v in 1..=300u64 {
            swap.swap(content(&std::format!("needle{v}"), v), &mut || {
                thread::yield_now()
            });
        }
        // On a loaded machine the readers may not have run yet: let them read the last version.
        while seen.load(Ordering::Relaxed) == 0 {
            thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        let evaluated: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(evaluated > 0);
        assert_eq!(swap.swaps(), 301);
        assert_eq!(swap.with_active(|c| c.map(|c| c.version)), Some(Some(300)));
    }
}
