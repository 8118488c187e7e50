//! The allocator `bulwark` runs on, and how `bulwark sim` tunes it. The goals benchmark of the
//! fleet simulator (`sim/benches/goals.rs`) includes this very file, so that its figures are the
//! tool's.
//!
//! mimalloc rather than glibc's allocator on Linux: `bulwark sim` keeps gigabytes of endpoint
//! state and touches a random endpoint's at every event; mimalloc asks the kernel for
//! transparent huge pages for its heap (glibc's gets none where THP is `madvise`), and a run
//! spends 10 to 20% less time (`sim/BENCHMARKS.md`). Windows builds keep the system allocator.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (the option after
/// `mi_option_eager_commit_delay`, 14, which the `libmimalloc-sys` crate names; this one it
/// does not name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// For `bulwark sim`: the allocator keeps the memory the run frees instead of giving it back to
/// the kernel a second later (mimalloc's default). A run frees and takes again gigabytes as
/// machines crash and boot and the agenda's seconds drain, and every page given back and taken
/// again was zeroed again by the kernel: system time 3.6 -> 1.3 s for good, 100,000 endpoints x
/// 48 h (`sim/BENCHMARKS.md`). Not for the long-running commands (`bulwark server` gives its
/// memory back).
pub fn keep_freed_memory() {
    // Set only over mimalloc's default (1,000 ms): another value was chosen in the environment
    // (MIMALLOC_PURGE_DELAY), or the number is not purge_delay's in this mimalloc.
    // SAFETY: `mi_option_get` reads one entry of mimalloc's table of options (a number out of
    // its range reads 0): no memory is handed out or taken.
    let was = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    if was != 1000 {
        return;
    }
    // SAFETY: `mi_option_set` stores one value in that table, which the allocator reads when it
    // decides whether to give memory back; -1 is a documented value of this option ("-1 for no
    // purging at all").
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn asked_to_keep_freed_memory_the_allocator_never_gives_it_back() {
        // SAFETY: as in `keep_freed_memory`: reads one entry of the options' table.
        let get = || unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("skipped: MIMALLOC_PURGE_DELAY is set in the environment");
            return;
        }
        assert!(get() == 1000 || get() == -1, "{}", get());
        super::keep_freed_memory();
        assert_eq!(get(), -1);
    }
}
