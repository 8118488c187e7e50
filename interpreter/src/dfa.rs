//! Regex DFAs that the VM can search on every haystack.
//!
//! A pack's regexes are serialized `regex_automata::dfa::sparse::DFA`s. `sparse::DFA::from_bytes`
//! checks that the bytes decode (every state, every transition target and every start state ID
//! names a real state; the special-state ranges are ordered; accelerators have 1 to 3 bytes; no
//! start state is a match state; no EOI transition leads to the quit state) — that is, that
//! searching cannot read out of bounds. It does not check that a search *succeeds*, nor that the
//! search's shortcuts (the dead state, accelerated states, start states) agree with the DFA's
//! transitions. [`check_searchable`] checks both, for the one search the VM does.
//!
//! # The VM's search and how it could fail
//!
//! The VM (`Insn::Regex`) calls `dfa.try_search_fwd(&Input::new(value))`: unanchored, not
//! "earliest", over the whole haystack (span `0..len`), without a prefilter (deserialized DFAs
//! have none and the VM never sets one). It uses only whether a match was found. In
//! regex-automata 0.4 that call returns an error, panics, or gives another verdict than the DFA's
//! transitions only as follows; each case is rejected by [`check_searchable`] or unreachable:
//!
//! - `MatchError::UnsupportedAnchored` from the start state lookup when the DFA has no unanchored
//!   start states (start kind `Anchored`). Rejected.
//! - `MatchError::Quit` when the search enters the quit state: the search loop treats every
//!   special state that is not a start, match, accelerated or dead state as "quit", and
//!   `from_bytes` makes sure the quit state is the only such state. Rejected: no byte transition
//!   from any state reachable from an unanchored start state leads to the quit state, and no
//!   unanchored start state is the quit state.
//! - `MatchError::Quit` from the start state lookup when the byte before the search's start is a
//!   quit byte. Unreachable: the VM's searches start at offset 0, so there is no look-behind
//!   byte; rejected anyway: any quit byte at all.
//! - `MatchError::Quit` in the end-of-input step when the span ends before the haystack does.
//!   Unreachable: the VM's span is the whole haystack, so the EOI transition is taken, which
//!   never reports an error (and `from_bytes` rejects EOI transitions to the quit state).
//! - `MatchError::GaveUp` and `MatchError::HaystackTooLong` are never produced by dense or sparse
//!   DFA searches (only by the lazy DFA and the bounded backtracker).
//! - The universal start state IDs, which `from_bytes` does not check, are only read when a
//!   prefilter is set: never, for the VM.
//! - A DFA flagged both UTF-8 and able to match the empty string makes `try_search_fwd` restart
//!   after an empty match that splits a code point, from later offsets (with look-behind start
//!   states) and possibly ending in "no match". Rejected (the compiler builds DFAs with UTF-8 mode
//!   off).
//! - Panics: `start_state_forward` panics ("no quit in start without look-behind") if a quit
//!   error occurs at offset 0: unreachable, quit start errors need a look-behind byte. The
//!   accelerator search panics on 0 or more than 3 needle bytes: `from_bytes` bounds them, and
//!   this check again. State decoding indexes the transition table: `from_bytes` (with the
//!   `alloc` feature, which the workspace enables) decodes every state and checks that every
//!   transition and start state ID is a decoded state.
//!
//! Verdicts the search could get wrong without an error, also rejected so that the search's
//! answer is exactly "some run of the DFA's transitions from the unanchored start state over the
//! haystack, then its EOI transition, passes through a match state":
//!
//! - The search stops at the dead state: the dead state must lead only to itself (bytes and EOI).
//! - The search skips, from an accelerated state, to the next of its accelerator bytes: every
//!   other byte must lead back to the same state.
//! - The search ignores the match flag of a state in the start range: no reachable state may be
//!   both a start state and a match state.
//!
//! The checks cover every state reachable from every unanchored start state (the one for the
//! start of the text and the one for each possible look-behind byte), so they would still hold
//! if the VM searched a span that does not start at 0. Their cost is at most 256 transition
//! lookups per reachable state (each lookup a scan of that state's transitions): linear in the
//! DFA's size, with a constant of at most about 43 comparisons per serialized byte.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use regex_automata::dfa::{sparse, Automaton, StartError, StartKind};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::Anchored;

/// Checks that the VM's search (`try_search_fwd` with `Input::new(haystack)`, see the module
/// documentation) cannot return an error on any haystack and that its verdict is the one the
/// DFA's transitions give. The error says which property fails.
pub(crate) fn check_searchable<T: AsRef<[u8]>>(dfa: &sparse::DFA<T>) -> Result<(), String> {
    if let StartKind::Anchored = dfa.start_kind() {
        return Err(String::from(
            "its start kind is anchored-only; the sensor searches unanchored",
        ));
    }
    if dfa.has_empty() && dfa.is_utf8() {
        return Err(String::from(
            "it is in UTF-8 mode and can match the empty string; the search would re-run from \
             other offsets after an empty match inside a code point",
        ));
    }

    // Every unanchored start state: the one at the start of the text, then one per look-behind
    // byte (the lookup also reports the quit set: a quit byte as look-behind is an error).
    let mut starts = Vec::with_capacity(257);
    starts.push(start_state(dfa, None)?);
    for b in 0..=u8::MAX {
        starts.push(start_state(dfa, Some(b))?);
    }

    // One byte per equivalence class: `next_state` maps a byte to its class first.
    let reps: Vec<u8> = dfa
        .byte_classes()
        .representatives(0..=u8::MAX)
        .filter_map(|u| u.as_u8())
        .collect();
    // A sparse DFA's state ids are offsets in its transition table: a bit set of them.
    let mut seen = Seen(alloc::vec![0u64; dfa.memory_usage().div_ceil(64)]);
    let mut todo: Vec<StateID> = Vec::new();
    for s in starts {
        if dfa.is_quit_state(s) {
            return Err(String::from(
                "an unanchored start state is the quit state; every search would fail",
            ));
        }
        if seen.insert(s.as_usize()) {
            todo.push(s);
        }
    }
    while let Some(s) = todo.pop() {
        check_state(dfa, s, &reps)?;
        for &b in &reps {
            let t = dfa.next_state(s, b);
            if dfa.is_quit_state(t) {
                return Err(format!(
                    "byte {b:#04x} leads from state {} to the quit state; a search reaching it \
                     fails",
                    s.as_usize()
                ));
            }
            if seen.insert(t.as_usize()) {
                todo.push(t);
            }
        }
    }
    Ok(())
}

/// State ids seen, as a bit set that grows to the largest id.
struct Seen(Vec<u64>);

impl Seen {
    /// Adds `id`; whether it was new.
    fn insert(&mut self, id: usize) -> bool {
        let (word, bit) = (id / 64, 1u64 << (id % 64));
        if word >= self.0.len() {
            self.0.resize(word.saturating_add(1), 0);
        }
        match self.0.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            _ => false,
        }
    }
}

fn start_state<T: AsRef<[u8]>>(
    dfa: &sparse::DFA<T>,
    look_behind: Option<u8>,
) -> Result<StateID, String> {
    let config = start::Config::new()
        .anchored(Anchored::No)
        .look_behind(look_behind);
    dfa.start_state(&config).map_err(|e| match e {
        StartError::Quit { byte } => format!(
            "quit byte {byte:#04x}: a search seeing it would fail; the sensor's DFAs have none"
        ),
        StartError::UnsupportedAnchored { .. } => {
            String::from("it has no unanchored start state; the sensor searches unanchored")
        }
        _ => format!("no unanchored start state: {e}"),
    })
}

/// The checks on one reachable state (see the module documentation).
fn check_state<T: AsRef<[u8]>>(
    dfa: &sparse::DFA<T>,
    s: StateID,
    reps: &[u8],
) -> Result<(), String> {
    let id = s.as_usize();
    if dfa.is_dead_state(s) {
        for &b in reps {
            let t = dfa.next_state(s, b);
            if !dfa.is_dead_state(t) {
                return Err(format!(
                    "the dead state leads to state {} on byte {b:#04x}; the search stops at the \
                     dead state",
                    t.as_usize()
                ));
            }
        }
        let t = dfa.next_eoi_state(s);
        if !dfa.is_dead_state(t) {
            return Err(format!(
                "the dead state leads to state {} at the end of input; the search stops at the \
                 dead state",
                t.as_usize()
            ));
        }
    }
    if dfa.is_start_state(s) && dfa.is_match_state(s) {
        return Err(format!(
            "state {id} is both a start state and a match state; the search ignores matches in \
             start states"
        ));
    }
    if dfa.is_accel_state(s) {
        let needles = dfa.accelerator(s);
        if needles.is_empty() || needles.len() > 3 {
            return Err(format!(
                "state {id} is accelerated on {} bytes (1 to 3 allowed)",
                needles.len()
            ));
        }
        for b in 0..=u8::MAX {
            if !needles.contains(&b) && dfa.next_state(s, b) != s {
                return Err(format!(
                    "state {id} is accelerated on {needles:02x?} but byte {b:#04x} leaves it; the \
                     search would skip that byte"
                ));
            }
        }
    }
    Ok(())
}
