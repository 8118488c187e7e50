//! Sound anchors: a rule's prefilter anchors must be implied by its code.
//!
//! The VM runs a rule with anchors only when one of them occurs in its field, so a pack whose
//! anchors are not implied by its rule's code would mean something other than its code says
//! (`const true; ret` anchored on a string that never occurs never fires). The verifier proves,
//! for each anchored rule, that its code can return true only when one of its anchors occurs
//! (ASCII case folded) in that anchor's field, or rejects the pack.
//!
//! The proof is a forward dataflow over the code, one pass (jumps only go forward). At each
//! instruction it knows two facts: *if the accumulator is true here, an anchor occurs*, and *if it
//! is false here, an anchor occurs* (both hold vacuously where that value cannot reach). A
//! predicate that requires an anchor's literal (a `str` comparison whose constant is an anchor,
//! a `set` whose items all are, a wildcard pattern whose longest literal run is one) makes the
//! first fact true; every predicate keeps what held whatever the accumulator was; `not` swaps the
//! facts, jumps split them by the value they test, and where paths meet both must hold. Each
//! `ret` needs the first fact. Regex predicates imply nothing here: the compiler guards a regex
//! with a `set.contains` of the literals it anchors on, which does.

/// Why a rule's anchors are not implied: the instruction (a `ret`) that can return true when none
/// of them occurs.
pub(crate) struct NotImplied {
    pub(crate) ret: usize,
}

/// What the dataflow needs to know of each instruction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A predicate; `true` if it holds only when an anchor occurs.
    Pred(bool),
    Not,
    Const(bool),
    Jt(usize),
    Jf(usize),
    Jmp(usize),
    Ret,
}

/// (if true, an anchor occurs; if false, an anchor occurs), or unreached.
type Facts = Option<(bool, bool)>;

/// Proves that `code` (its instructions as [`Step`]s) returns true only when an anchor occurs.
pub(crate) fn check(
    code: impl ExactSizeIterator<Item = Step>,
    facts: &mut alloc::vec::Vec<Facts>,
) -> Result<(), NotImplied> {
    facts.clear();
    facts.resize(code.len(), None);
    // On entry the accumulator is false, and nothing is known.
    if let Some(first) = facts.first_mut() {
        *first = Some((true, false));
    }
    for (pc, step) in code.enumerate() {
        let Some((at, af)) = facts.get(pc).copied().flatten() else {
            continue;
        };
        // What holds whatever the accumulator is.
        let always = at && af;
        let next = pc.saturating_add(1);
        let mut flow = |to: usize, f: (bool, bool)| {
            if let Some(slot) = facts.get_mut(to) {
                *slot = Some(slot.map_or(f, |(t, e)| (t && f.0, e && f.1)));
            }
        };
        match step {
            Step::Pred(implies) => flow(next, (always || implies, always)),
            Step::Not => flow(next, (af, at)),
            Step::Const(true) => flow(next, (always, true)),
            Step::Const(false) => flow(next, (true, always)),
            Step::Jt(t) => {
                flow(t, (at, true));
                flow(next, (true, af));
            }
            Step::Jf(t) => {
                flow(t, (true, af));
                flow(next, (at, true));
            }
            Step::Jmp(t) => flow(t, (at, af)),
            Step::Ret => {
                if !at {
                    return Err(NotImplied { ret: pc });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use Step::*;

    fn ok(code: &[Step]) -> bool {
        check(code.iter().copied(), &mut Vec::new()).is_ok()
    }

    #[test]
    fn what_implies_and_what_does_not() {
        // str A; ret
        assert!(ok(&[Pred(true), Ret]));
        // const true; ret
        assert!(!ok(&[Const(true), Ret]));
        // A or B, both anchors: str A; jt 3; str B; ret
        assert!(ok(&[Pred(true), Jt(3), Pred(true), Ret]));
        // A or X, X not an anchor
        assert!(!ok(&[Pred(true), Jt(3), Pred(false), Ret]));
        // A and not F: str A; jf 4; str F; not; ret
        assert!(ok(&[Pred(true), Jf(4), Pred(false), Not, Ret]));
        // not A: true when A does not occur
        assert!(!ok(&[Pred(true), Not, Ret]));
        // X and A: the anchor from the second of an `and`
        assert!(ok(&[Pred(false), Jf(3), Pred(true), Ret]));
        // A then const false: never true
        assert!(ok(&[Pred(true), Const(false), Ret]));
        // Unreachable code after a jump is not checked.
        assert!(ok(&[Pred(true), Jf(3), Ret, Ret]));
        let mut facts = vec![];
        let e = check(
            [Pred(false), Jt(3), Pred(true), Ret].into_iter(),
            &mut facts,
        );
        assert_eq!(e.err().map(|e| e.ret), Some(3));
    }
}
