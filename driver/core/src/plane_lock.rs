//! The control plane's lock. Requests (IOCTLs) and the worker's tick never wait for it: they try
//! once and report busy. A clean shutdown (IRP_MJ_SHUTDOWN, unload) never spins on it either: it
//! raises a flag and tries; if a request holds the plane (say, a stage being verified), the holder
//! records the clean shutdown as it releases the lock, and the shutdown path waits for that only a
//! bounded number of times through the caller's back-off (a sleep at PASSIVE_LEVEL), then returns.
//! Whoever takes the flag records the shutdown, so it is recorded exactly once.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// What a clean shutdown records (the guard's `clean_shutdown`).
pub trait CleanShutdown {
    /// Records a clean shutdown at `now`.
    fn clean_shutdown(&mut self, now: u64);
}

/// A try-only lock around the control plane, with the shutdown hand-off.
pub struct PlaneLock<T> {
    inner: spin::Mutex<T>,
    shutdown_pending: AtomicBool,
    clock: fn() -> u64,
}

/// Exclusive access to the plane; on release it records a pending clean shutdown.
pub struct PlaneGuard<'a, T: CleanShutdown> {
    guard: spin::MutexGuard<'a, T>,
    pending: &'a AtomicBool,
    clock: fn() -> u64,
}

impl<T: CleanShutdown> PlaneLock<T> {
    /// A lock around `value`; `clock` gives the time a handed-off shutdown is recorded at.
    pub const fn new(value: T, clock: fn() -> u64) -> Self {
        PlaneLock {
            inner: spin::Mutex::new(value),
            shutdown_pending: AtomicBool::new(false),
            clock,
        }
    }

    /// The plane, if nobody holds it. Never waits.
    pub fn try_lock(&self) -> Option<PlaneGuard<'_, T>> {
        self.inner.try_lock().map(|guard| PlaneGuard {
            guard,
            pending: &self.shutdown_pending,
            clock: self.clock,
        })
    }

    /// Records a clean shutdown: at once if the plane is free, else by its holder when it releases
    /// it. Tries up to `tries` times, calling `backoff` (a sleep) between tries, and returns whether
    /// the shutdown has been recorded by then; if not, the flag stays raised for the holder.
    pub fn clean_shutdown(&self, tries: u32, backoff: &mut dyn FnMut()) -> bool {
        self.shutdown_pending.store(true, Ordering::Release);
        for attempt in 0..tries.max(1) {
            if !self.shutdown_pending.load(Ordering::Acquire) {
                // The holder took the flag and recorded it.
                return true;
            }
            if let Some(guard) = self.try_lock() {
                drop(guard);
                return true;
            }
            if attempt.saturating_add(1) < tries {
                backoff();
            }
        }
        !self.shutdown_pending.load(Ordering::Acquire)
    }
}

impl<T: CleanShutdown> Deref for PlaneGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: CleanShutdown> DerefMut for PlaneGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: CleanShutdown> Drop for PlaneGuard<'_, T> {
    fn drop(&mut self) {
        if self.pending.swap(false, Ordering::AcqRel) {
            self.guard.clean_shutdown((self.clock)());
        }
    }
}

impl<S: bulwark_loader_boot_guard::Store> CleanShutdown for crate::control::Lifecycle<S> {
    fn clean_shutdown(&mut self, now: u64) {
        // Before start-up finished no guard is open: there is nothing to record.
        if let crate::control::Lifecycle::Running(control) = self {
            control.clean_shutdown(now);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::{Arc, Barrier};
    use std::vec::Vec;

    #[derive(Default)]
    struct Plane {
        shutdowns: Vec<u64>,
    }

    impl CleanShutdown for Plane {
        fn clean_shutdown(&mut self, now: u64) {
            self.shutdowns.push(now);
        }
    }

    fn clock() -> u64 {
        7
    }

    #[test]
    fn free_plane_records_at_once() {
        let lock = PlaneLock::new(Plane::default(), clock);
        let mut sleeps = 0;
        assert!(lock.clean_shutdown(10, &mut || sleeps += 1));
        assert_eq!(sleeps, 0);
        assert_eq!(lock.try_lock().unwrap().shutdowns, [7]);
        // A later release records nothing more.
        assert_eq!(lock.try_lock().unwrap().shutdowns, [7]);
    }

    #[test]
    fn a_held_plane_is_handed_the_shutdown() {
        let lock = PlaneLock::new(Plane::default(), clock);
        let held = lock.try_lock().unwrap();
        let mut sleeps = 0;
        // The request holds the plane for the whole bounded wait: the shutdown path returns after
        // its tries (sleeping between them), without the lock and without spinning.
        assert!(!lock.clean_shutdown(5, &mut || sleeps += 1));
        assert_eq!(sleeps, 4);
        assert!(held.shutdowns.is_empty());
        // The holder records it as it releases the plane.
        drop(held);
        assert_eq!(lock.try_lock().unwrap().shutdowns, [7]);
    }

    #[test]
    fn released_during_the_wait() {
        let lock = Arc::new(PlaneLock::new(Plane::default(), clock));
        let held = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let holder = {
            let (lock, held, release) = (lock.clone(), held.clone(), release.clone());
            std::thread::spawn(move || {
                let guard = lock.try_lock().unwrap();
                held.wait();
                release.wait();
                drop(guard);
            })
        };
        held.wait();
        let sleeps = AtomicU32::new(0);
        let mut released = false;
        let recorded = lock.clean_shutdown(1000, &mut || {
            if !released {
                release.wait();
                released = true;
            }
            sleeps.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(1));
        });
        holder.join().unwrap();
        assert!(recorded);
        // Exactly once, by whichever side took the flag.
        assert_eq!(lock.try_lock().unwrap().shutdowns, [7]);
    }
}
