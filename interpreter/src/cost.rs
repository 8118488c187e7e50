//! The cost model: what evaluating one event can cost, bounded from the pack alone.
//!
//! Work is counted in *units*, each about one byte touched by an inner loop step: a string
//! comparison costs the bytes it compares ([`compare_bound`](crate::matching::compare_bound)), a
//! wildcard match its segments' searches ([`glob_bound`](crate::matching::glob_bound)), a regex
//! the transitions it follows (a sparse DFA looks a byte up among at most its alphabet's classes),
//! a set test its index's probes and confirmations, a prefilter scan its table tests, hash
//! probes, literal confirmations and reported candidates, and every instruction and candidate
//! rule one or a few units on top. Each primitive meters what it does and never adds more than
//! its bound, with the field's value at most its schema [`max_len`](crate::FieldDef::max_len).
//!
//! The verifier computes, per event type, the prefilters' bounds plus, for every rule of that
//! type, the costliest path through its code (control flow only goes forward, so one pass over
//! the code finds it): every rule may be a candidate, since an event can hold every anchor. A
//! pack whose bound for some event type exceeds [`BUDGET_PER_EVENT`] is rejected, naming the rule
//! whose cost broke it and its costliest instruction. The VM counts the same units while it runs
//! and stops an event that would pass the pack's proven bound (which a correct model makes
//! unreachable): no match, an error, and the rule named.

use crate::verify::Insn;

/// The most work units one event may cost under a pack (see the module documentation). SigmaHQ's
/// process-creation rules need about a third of it (see the README, and the Sigma benchmark,
/// which prints the bound and the headroom); on this project's 2-core development VM a unit
/// averages well under a nanosecond on hostile events.
pub const BUDGET_PER_EVENT: u64 = 1 << 30;

/// Dispatching one instruction.
pub(crate) const INSN: u64 = 1;
/// Running one candidate rule: finding its bit, checking its event type, setting up its code.
pub(crate) const RULE: u64 = 4;
/// An event: choosing its type's index and copying the always-run rules' bitset.
pub(crate) const EVENT: u64 = 80;

/// The bound of a regex search over `value_len` bytes with a sparse DFA of `alphabet_len`
/// byte classes: at most that many transition ranges looked at per byte, and at the end of input.
pub(crate) fn regex_bound(alphabet_len: usize, value_len: usize) -> u64 {
    let per_byte = u64::try_from(alphabet_len).unwrap_or(u64::MAX);
    u64::try_from(value_len)
        .unwrap_or(u64::MAX)
        .saturating_add(1)
        .saturating_mul(per_byte)
}

/// A rule's costliest path through its code: the most that running it can cost, with each
/// instruction's cost `cost(pc)`, and its costliest instruction (index, cost). Control flow only
/// goes forward (the verifier checked), so a pass in order is enough.
pub(crate) fn worst_path(
    code: &[Insn],
    dist: &mut alloc::vec::Vec<Option<u64>>,
    mut cost: impl FnMut(usize) -> u64,
) -> (u64, usize, u64) {
    dist.clear();
    dist.resize(code.len(), None);
    if let Some(first) = dist.first_mut() {
        *first = Some(0);
    }
    let mut worst = 0u64;
    let mut costliest = (0usize, 0u64);
    for (pc, insn) in code.iter().enumerate() {
        let Some(before) = dist.get(pc).copied().flatten() else {
            continue;
        };
        let c = cost(pc);
        if c > costliest.1 {
            costliest = (pc, c);
        }
        let after = before.saturating_add(c);
        let mut flow = |to: usize| {
            if let Some(slot) = dist.get_mut(to) {
                *slot = Some(slot.map_or(after, |d| d.max(after)));
            }
        };
        let next = pc.saturating_add(1);
        let target = |t: u32| usize::try_from(t).unwrap_or(usize::MAX);
        match *insn {
            Insn::Ret => worst = worst.max(after),
            Insn::Jmp(t) => flow(target(t)),
            Insn::Jt(t) | Insn::Jf(t) => {
                flow(target(t));
                flow(next);
            }
            _ => flow(next),
        }
    }
    (worst, costliest.0, costliest.1)
}
