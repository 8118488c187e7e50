//! The virtual machine: evaluates a [`VerifiedPack`] against one [`Event`].
//!
//! Per event: the event type's literal prefilters run over their fields and mark candidate rules in
//! a fixed-size bitset on the stack; the rules that have no anchors are always candidates; then
//! each candidate's code runs. No heap allocation, no recursion, a fixed stack footprint, forward
//! jumps only, and the work counted in the cost model's units against the bound the verifier
//! proved for the pack (see [`crate::cost`]). Every table access is still checked at run time (defence in
//! depth): a failed check makes the rule not match and counts an error, it never faults.

use regex_automata::dfa::Automaton;
use regex_automata::Input;

use crate::cost;
use crate::event::Event;
use crate::hits::{MARK_WORDS, RULE_WORDS};
use crate::insn::StrOp;
use crate::matching::{compare_metered, glob_match_metered};
use crate::schema::FieldValue;
use crate::setindex::Tables;
use crate::verify::{Insn, Rule, RuleInfo, VerifiedPack};

/// What one evaluation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvalStats {
    /// Rules whose code ran (after the prefilter).
    pub rules_run: u32,
    /// Rules that matched.
    pub matches: u32,
    /// Runtime checks that failed (always 0 for a verified pack; counted, never fatal).
    pub errors: u32,
    /// The work done, in the cost model's units (see [`crate::cost`]): never more than the
    /// pack's bound for the event's type.
    pub work: u64,
    /// The rule that was running when the work would have passed the pack's proven bound, and
    /// the evaluation stopped (no match from it or any rule after it; counted as an error). A
    /// correct cost model makes this unreachable; it is the defence in depth behind it.
    pub over_budget: Option<u32>,
}

impl VerifiedPack {
    /// Evaluates every rule for the event's type and calls `on_match` for each rule that matches,
    /// in rule order. Counts its work as it goes and stops at the pack's bound for the event's
    /// type (see [`EvalStats::over_budget`]).
    pub fn evaluate(
        &self,
        event: &Event<'_, '_>,
        on_match: &mut dyn FnMut(RuleInfo<'_>),
    ) -> EvalStats {
        let mut stats = EvalStats::default();
        let type_id = usize::from(event.event_type().id());
        let (Some(index), Some(&limit)) =
            (self.by_type.get(type_id), self.cost_bounds.get(type_id))
        else {
            stats.errors = 1;
            return stats;
        };
        let mut meter = Meter {
            work: cost::EVENT,
            limit,
        };
        // The candidate rules, then the slots of the tests the scans answer (see `crate::hits`).
        let mut marks = [0u64; MARK_WORDS];
        for (slot, word) in marks.iter_mut().zip(&index.always) {
            *slot = *word;
        }
        let arena = self.strings.arena().text;
        for filter in &index.filters {
            let FieldValue::Str(text) = event.get(filter.field) else {
                continue;
            };
            let value_len = text.len();
            self.grams.scan(
                &filter.anchors,
                arena,
                text.as_bytes(),
                &mut meter.work,
                |p, start, len, _| {
                    if !crate::hits::mark(&mut marks, p, start, len, value_len) {
                        stats.errors = stats.errors.saturating_add(1);
                    }
                    false
                },
            );
        }
        // Only the words of the pack's rules, read in place (iterating the whole array by value
        // kept its iterator in memory: a store and a load per word of all `RULE_WORDS`).
        let (candidates, hits) = marks.split_at(RULE_WORDS);
        let words = index.always.len();
        for (w, mut word) in candidates.iter().copied().enumerate().take(words) {
            while word != 0 {
                let bit = word.trailing_zeros();
                word &= word.wrapping_sub(1);
                let r = w.saturating_mul(64).saturating_add(bit as usize);
                let Some(rule) = self.rules.get(r) else {
                    stats.errors = stats.errors.saturating_add(1);
                    continue;
                };
                if rule.event_type != event.event_type() {
                    continue;
                }
                stats.rules_run = stats.rules_run.saturating_add(1);
                meter.work = meter.work.saturating_add(cost::RULE);
                match self.run_rule(rule, event, hits, &mut meter) {
                    Ok(true) => {
                        stats.matches = stats.matches.saturating_add(1);
                        if let Some(info) = self.rule(r) {
                            on_match(info);
                        }
                    }
                    Ok(false) => {}
                    Err(Fault::OverBudget) => {
                        stats.over_budget = u32::try_from(r).ok();
                        stats.errors = stats.errors.saturating_add(1);
                        stats.work = meter.work;
                        return stats;
                    }
                    Err(Fault::Check) => stats.errors = stats.errors.saturating_add(1),
                }
            }
        }
        stats.work = meter.work;
        stats
    }

    fn run_rule(
        &self,
        rule: &Rule,
        event: &Event<'_, '_>,
        hits: &[u64],
        meter: &mut Meter,
    ) -> Result<bool, Fault> {
        let end = rule
            .code_start
            .checked_add(rule.code_len)
            .ok_or(Fault::Check)?;
        let code = self.insns.get(rule.code_start..end).ok_or(Fault::Check)?;
        let mut acc = false;
        let mut pc = 0usize;
        loop {
            meter.check()?;
            let insn = code.get(pc).ok_or(Fault::Check)?;
            meter.work = meter.work.saturating_add(cost::INSN);
            let work = &mut meter.work;
            let mut next = pc.checked_add(1).ok_or(Fault::Check)?;
            match *insn {
                Insn::Exists(f) => acc = !matches!(event.get(f), FieldValue::Absent),
                Insn::Empty(f) => acc = matches!(event.get(f), FieldValue::Str("")),
                Insn::Str { field, op, case, s } => {
                    let needle = self.strings.get(s).ok_or(Fault::Check)?;
                    acc = match event.get(field) {
                        FieldValue::Str(v) => compare_metered(v, op, needle, case, work),
                        _ => false,
                    };
                }
                Insn::Glob { field, case, glob } => {
                    let pat = self.globs.get(idx(glob)).ok_or(Fault::Check)?;
                    acc = match event.get(field) {
                        FieldValue::Str(v) => glob_match_metered(v, pat, case, work),
                        _ => false,
                    };
                }
                Insn::Set {
                    field,
                    op,
                    case,
                    set,
                } => {
                    let items = self.sets.get(idx(set)).ok_or(Fault::Check)?;
                    acc = false;
                    let index = self.set_index.get(idx(set)).and_then(Option::as_ref);
                    let strings = &self.strings;
                    let tables = Tables {
                        grams: &self.grams,
                        affixes: &self.affixes,
                        arena: strings.arena().text,
                    };
                    let item = |i: u32| -> Option<&str> { strings.get(*items.get(idx(i))?) };
                    let indexed = match (event.get(field), index) {
                        (FieldValue::Str(v), Some(ix)) => ix.test(tables, v, op, case, &item, work),
                        _ => None,
                    };
                    if let Some(hit) = indexed {
                        acc = hit;
                    } else if let FieldValue::Str(v) = event.get(field) {
                        for s in items {
                            let needle = self.strings.get(*s).ok_or(Fault::Check)?;
                            *work = work.saturating_add(1);
                            if compare_metered(v, op, needle, case, work) {
                                acc = true;
                                break;
                            }
                        }
                    }
                }
                Insn::Regex { field, regex } => {
                    let dfa = self.regexes.get(idx(regex)).ok_or(Fault::Check)?;
                    acc = match event.get(field) {
                        FieldValue::Str(v) => {
                            let classes = self
                                .regex_classes
                                .get(idx(regex))
                                .copied()
                                .unwrap_or(usize::MAX);
                            *work = work.saturating_add(cost::regex_bound(classes, v.len()));
                            dfa.try_search_fwd(&Input::new(v))
                                .map_err(|_| Fault::Check)?
                                .is_some()
                        }
                        _ => false,
                    };
                }
                Insn::Hit(slot) => acc = crate::hits::get(hits, idx(slot)),
                Insn::HitJump { slot, target, when } => {
                    acc = crate::hits::get(hits, idx(slot));
                    // The jump after it, charged and checked as when it runs on its own.
                    meter.check()?;
                    meter.work = meter.work.saturating_add(cost::INSN);
                    next = if acc == when {
                        idx(target)
                    } else {
                        pc.checked_add(2).ok_or(Fault::Check)?
                    };
                    if next <= pc.saturating_add(1) {
                        return Err(Fault::Check);
                    }
                }
                Insn::FieldEq { field, other, case } => {
                    acc = match (event.get(field), event.get(other)) {
                        (FieldValue::Str(a), FieldValue::Str(b)) => {
                            compare_metered(a, StrOp::Eq, b, case, work)
                        }
                        (FieldValue::Int(a), FieldValue::Int(b)) => a == b,
                        _ => false,
                    };
                }
                Insn::Int { field, cmp, value } => {
                    acc = match event.get(field) {
                        FieldValue::Int(v) => cmp.holds(v, value),
                        _ => false,
                    };
                }
                Insn::Not => acc = !acc,
                Insn::Const(b) => acc = b,
                Insn::Jt(t) | Insn::Jf(t) | Insn::Jmp(t) => {
                    let take = match *insn {
                        Insn::Jt(_) => acc,
                        Insn::Jf(_) => !acc,
                        _ => true,
                    };
                    if take {
                        next = idx(t);
                        if next <= pc {
                            return Err(Fault::Check);
                        }
                    }
                }
                Insn::Ret => {
                    meter.check()?;
                    return Ok(acc);
                }
            }
            pc = next;
        }
    }
}

/// The work an evaluation has done, and the pack's bound for the event's type.
struct Meter {
    work: u64,
    limit: u64,
}

impl Meter {
    fn check(&self) -> Result<(), Fault> {
        if self.work > self.limit {
            Err(Fault::OverBudget)
        } else {
            Ok(())
        }
    }
}

enum Fault {
    OverBudget,
    Check,
}

fn idx(i: u32) -> usize {
    usize::try_from(i).unwrap_or(usize::MAX)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use crate::build::{Expr, PackBuilder, Pred, RuleSpec};
    use crate::schema::{EventType, ProcessCreation};
    use crate::{Action, Case, Level};
    use alloc::boxed::Box;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec;
    use alloc::vec::Vec;

    const IMAGE: u8 = 0;
    const COMMAND_LINE: u8 = 1;

    /// `pack` as the verifier's analyses saw it: each fused hit and jump apart again.
    fn apart(pack: &VerifiedPack) -> VerifiedPack {
        let mut apart = pack.clone();
        for insn in &mut apart.insns {
            if let Insn::HitJump { slot, .. } = *insn {
                *insn = Insn::Hit(slot);
            }
        }
        apart
    }

    #[test]
    fn a_hit_and_its_jump_run_as_one_give_the_same_verdicts_for_the_same_work() {
        let lit = ["cmd", ".exe", "powershell", "-enc", "whoami", "shell"];
        let pred = |i: usize, field: u8| {
            Expr::Pred(Pred::Str {
                field,
                op: StrOp::Contains,
                case: Case::Insensitive,
                value: lit[i % lit.len()].into(),
            })
        };
        let mut b = PackBuilder::new();
        for i in 0..lit.len() {
            for shape in 0..4 {
                let (x, y, z) = (
                    pred(i, COMMAND_LINE),
                    pred(i + 1, IMAGE),
                    pred(i + 2, COMMAND_LINE),
                );
                let expr = match shape {
                    0 => Expr::And(vec![x, y, z]),
                    1 => Expr::Or(vec![x, y, z]),
                    2 => Expr::And(vec![x, Expr::Or(vec![y, Expr::Not(Box::new(z))])]),
                    _ => Expr::Or(vec![Expr::And(vec![x, y]), z]),
                };
                b.rule(RuleSpec {
                    event_type: EventType::ProcessCreation,
                    id: format!("r{i}-{shape}"),
                    title: "t".into(),
                    author: "a".into(),
                    level: Level::High,
                    action: Action::Alert,
                    tags: vec![],
                    expr,
                })
                .unwrap();
            }
        }
        let pack = crate::verify(&b.finish()).unwrap();
        let fused = |when: bool| {
            pack.insns
                .iter()
                .filter(|i| matches!(i, Insn::HitJump { when: w, .. } if *w == when))
                .count()
        };
        assert!(fused(true) > 0 && fused(false) > 0, "{:?}", pack.insns);
        let apart = apart(&pack);
        // Every combination of the literals in the command line, against three images.
        for mask in 0u32..(1 << lit.len()) {
            let text: Vec<&str> = (0..lit.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| lit[i])
                .collect();
            let text: String = text.join(" ");
            for image in [text.as_str(), "C:\\Windows\\System32\\cmd.exe", ""] {
                let values = ProcessCreation {
                    image: Some(image),
                    command_line: Some(&text),
                    ..Default::default()
                }
                .values();
                let event = Event::from_typed((&values).into());
                let run = |p: &VerifiedPack| {
                    let mut matched = Vec::new();
                    let stats = p.evaluate(&event, &mut |m| matched.push(m.index));
                    (stats, matched)
                };
                let (fused, separate) = (run(&pack), run(&apart));
                assert_eq!(fused, separate, "image {image:?}, command line {text:?}");
                assert_eq!(fused.0.errors, 0);
            }
        }
    }
}
