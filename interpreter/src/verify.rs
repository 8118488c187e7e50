//! The verifier: the one function that turns bytes into runnable content.
//!
//! [`verify`] decodes the container, then checks every reference a rule makes against the running
//! sensor's schema (not against what the pack claims about it): each field index is below the real
//! field count of the rule's event type, each predicate matches the field's type, each constant,
//! set, glob and regex reference exists, every jump goes strictly forward and stays inside the
//! rule, and every rule ends in `ret`. Only then is a [`VerifiedPack`] built; its constructor is
//! private to this module, so nothing else can make one.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::anchors::{self, Step};
use crate::cost::{self, BUDGET_PER_EVENT};
use crate::gramindex::{Arena, GramIndex, GramScratch, GramStore, Payloads, StringFacts, GRAM};
use crate::hits::{payload, Kind, MAX_SLOTS};
use crate::matching::{compare_bound, glob_bound, longest_run};
use crate::setindex::{AffixStore, SetIndex, SetUse, INDEX_MIN_ITEMS};
use regex_automata::dfa::sparse;

use crate::error::{ErrorKind, HexHash, VerifyError};
use crate::format::{FlatPack, FlatRule, Ragged, RawPack};
use crate::insn::{op, Case, IntCmp, RawInsn, StrOp};
use crate::matching::{parse_glob_into, GlobTok};
use crate::schema::{schema_hash, EventType, FieldType};

/// How severe a rule's detection is (Sigma's `level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Informational.
    Informational = 0,
    /// Low.
    Low = 1,
    /// Medium.
    Medium = 2,
    /// High.
    High = 3,
    /// Critical.
    Critical = 4,
}

impl Level {
    /// All levels, by wire byte.
    pub const ALL: [Level; 5] = [
        Level::Informational,
        Level::Low,
        Level::Medium,
        Level::High,
        Level::Critical,
    ];
    /// From the wire byte.
    pub fn from_u8(b: u8) -> Option<Level> {
        Level::ALL.get(usize::from(b)).copied()
    }
    /// The name Sigma uses.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
    /// From the name Sigma uses.
    pub fn from_name(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == s)
    }
}

/// What the sensor does when a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Report a detection.
    Alert = 0,
    /// Report a detection and deny the operation where the sensor can (process creation).
    Block = 1,
}

impl Action {
    /// From the wire byte.
    pub fn from_u8(b: u8) -> Option<Action> {
        match b {
            0 => Some(Action::Alert),
            1 => Some(Action::Block),
            _ => None,
        }
    }
    /// The assembly name.
    pub const fn name(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Block => "block",
        }
    }
    /// From the assembly name.
    pub fn from_name(s: &str) -> Option<Action> {
        [Action::Alert, Action::Block]
            .into_iter()
            .find(|a| a.name() == s)
    }
}

/// A verified, decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Insn {
    Exists(u8),
    Empty(u8),
    Str {
        field: u8,
        op: StrOp,
        case: Case,
        s: u32,
    },
    Glob {
        field: u8,
        case: Case,
        glob: u32,
    },
    Set {
        field: u8,
        op: StrOp,
        case: Case,
        set: u32,
    },
    Regex {
        field: u8,
        regex: u32,
    },
    /// A string or set test folded into its field's prefilter scan: whether the scan marked
    /// this slot (see [`crate::hits`]).
    Hit(u32),
    /// [`Insn::Hit`] of `slot` and the [`Insn::Jt`] (`when` true) or [`Insn::Jf`] (`when`
    /// false) to `target` that follows it, run as one (see [`fuse_hit_jumps`]). The jump is still
    /// there, after it: every analysis reads this as the `Hit` it replaces, and the VM charges
    /// and checks the two as it would run them apart.
    HitJump {
        slot: u32,
        target: u32,
        when: bool,
    },
    FieldEq {
        field: u8,
        other: u8,
        case: Case,
    },
    Int {
        field: u8,
        cmp: IntCmp,
        value: u64,
    },
    Not,
    Const(bool),
    Jt(u32),
    Jf(u32),
    Jmp(u32),
    Ret,
}

/// A verified rule.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub(crate) event_type: EventType,
    pub(crate) level: Level,
    pub(crate) action: Action,
    pub(crate) id: u32,
    pub(crate) title: u32,
    pub(crate) author: u32,
    pub(crate) code_start: usize,
    pub(crate) code_len: usize,
    /// The most work units running the rule can cost (its costliest path).
    pub(crate) cost: u64,
}

/// One field's literal prefilter: the anchors of every rule that anchors on this field, each
/// reporting its rule as a candidate when it occurs (ASCII case folded) in the field's value.
#[derive(Clone, Debug)]
pub(crate) struct FieldFilter {
    pub(crate) field: u8,
    pub(crate) anchors: GramIndex,
}

/// The per-event-type index: the rules that always run (no anchors) as a bitset, and the field
/// prefilters that select the anchored ones.
#[derive(Clone, Debug, Default)]
pub(crate) struct TypeIndex {
    pub(crate) always: Vec<u64>,
    pub(crate) filters: Vec<FieldFilter>,
}

/// After every analysis: each [`Insn::Hit`] followed by a conditional jump in the same rule
/// becomes [`Insn::HitJump`], the jump left in place (a jump to it still finds it), so the VM
/// dispatches once for the pair that most of a rule's tests compile to.
fn fuse_hit_jumps(rules: &[Rule], insns: &mut [Insn]) {
    for rule in rules {
        let end = rule.code_start.saturating_add(rule.code_len);
        let Some(code) = insns.get_mut(rule.code_start..end) else {
            continue;
        };
        for pc in 1..code.len() {
            let Some([first, second]) = code.get_mut(pc.saturating_sub(1)..=pc) else {
                continue;
            };
            let (target, when) = match *second {
                Insn::Jt(t) => (t, true),
                Insn::Jf(t) => (t, false),
                _ => continue,
            };
            if let Insn::Hit(slot) = *first {
                *first = Insn::HitJump { slot, target, when };
            }
        }
    }
}

/// See [`crate::hits`]: gives each foldable test of the rules' code a slot (tests alike share
/// one), adds its literals to its field's prefilter list in `anchors` ((event type, field) ->
/// (string, payload)), and rewrites it to [`Insn::Hit`]. Tests past [`MAX_SLOTS`] stay as they
/// are.
fn fold_tests(
    rules: &[Rule],
    insns: &mut [Insn],
    sets: &Ragged<u32>,
    strings: &Strings,
    facts: &StringFacts,
    anchors: &mut BTreeMap<(u8, u8), Vec<(u32, u32)>>,
) -> usize {
    // (event type, field, kind, is a set, canonical string or set) -> slot
    let mut slots: BTreeMap<(u8, u8, Kind, bool, u32), u32> = BTreeMap::new();
    let worth_a_key = |s: u32| {
        strings
            .get(s)
            .is_some_and(|l| crate::gramindex::worth_a_key(l.as_bytes()))
    };
    for rule in rules {
        let t = rule.event_type.id();
        let end = rule.code_start.saturating_add(rule.code_len);
        let Some(code) = insns.get_mut(rule.code_start..end) else {
            continue;
        };
        for insn in code {
            let (field, op, is_set, target) = match *insn {
                Insn::Str {
                    field,
                    op,
                    case: Case::Insensitive,
                    s,
                } if worth_a_key(s) => (field, op, false, s),
                Insn::Set {
                    field,
                    op,
                    case: Case::Insensitive,
                    set,
                } if sets
                    .get(usize::try_from(set).unwrap_or(usize::MAX))
                    .is_some_and(|items| {
                        !items.is_empty() && items.iter().all(|&s| worth_a_key(s))
                    }) =>
                {
                    (field, op, true, set)
                }
                _ => continue,
            };
            let kind = match op {
                StrOp::Contains => Kind::Contains,
                StrOp::StartsWith => Kind::StartsWith,
                StrOp::EndsWith => Kind::EndsWith,
                StrOp::Eq => Kind::Eq,
            };
            let canon = if is_set {
                target
            } else {
                facts.canon_of(target)
            };
            let key = (t, field, kind, is_set, canon);
            let slot = match slots.get(&key) {
                Some(&slot) => slot,
                None => {
                    if slots.len() >= MAX_SLOTS {
                        continue;
                    }
                    let slot = u32::try_from(slots.len()).unwrap_or(u32::MAX);
                    slots.insert(key, slot);
                    let list = anchors.entry((t, field)).or_default();
                    let p = payload(kind, slot);
                    if is_set {
                        let items = sets
                            .get(usize::try_from(target).unwrap_or(usize::MAX))
                            .unwrap_or(&[]);
                        list.extend(items.iter().map(|&s| (s, p)));
                    } else {
                        list.push((target, p));
                    }
                    slot
                }
            };
            *insn = Insn::Hit(slot);
        }
    }
    slots.len()
}

/// A pack that passed [`verify`]: the only content the VM runs.
#[derive(Clone, Debug)]
pub struct VerifiedPack {
    pub(crate) content_hash: [u8; 32],
    pub(crate) format_version: u16,
    pub(crate) strings: Strings,
    pub(crate) sets: Ragged<u32>,
    /// Each rule's tags, by rule index.
    pub(crate) tags: Ragged<u32>,
    /// For sets of [`INDEX_MIN_ITEMS`] items or more: an index, so `set.*` costs about one pass
    /// over the value instead of one per item.
    pub(crate) set_index: Vec<Option<SetIndex>>,
    /// The tables of every gram index above (rule prefilters and `set.contains`).
    pub(crate) grams: GramStore,
    /// The affix tables of every set index.
    pub(crate) affixes: AffixStore,
    pub(crate) globs: Ragged<GlobTok>,
    pub(crate) regexes: Vec<sparse::DFA<Vec<u8>>>,
    /// Each regex's number of byte classes: the most transitions a search looks at per byte.
    pub(crate) regex_classes: Vec<usize>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) insns: Vec<Insn>,
    /// How many test slots the prefilter scans answer (see [`crate::hits`]).
    pub(crate) hit_slots: usize,
    pub(crate) by_type: Vec<TypeIndex>,
    /// By event type id: the most work units evaluating one event of that type can cost (the
    /// cost model's bound, at most [`BUDGET_PER_EVENT`]).
    pub(crate) cost_bounds: Vec<u64>,
}

/// The pack's constant strings, checked UTF-8, in one allocation (laid out as
/// [`crate::format::StringTable`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Strings {
    text: String,
    ends: Vec<usize>,
}

impl Strings {
    /// The strings as the indexes read them.
    pub(crate) fn arena(&self) -> Arena<'_> {
        Arena {
            text: self.text.as_bytes(),
            ends: &self.ends,
        }
    }

    fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    /// String `index`, if there is one.
    pub(crate) fn get(&self, index: u32) -> Option<&str> {
        self.text.get(crate::format::span(
            &self.ends,
            usize::try_from(index).ok()?,
        )?)
    }
}

/// Verifies a pack against the running sensor's built-in schema.
pub fn verify(bytes: &[u8]) -> Result<VerifiedPack, VerifyError> {
    let (raw, content_hash) = RawPack::decode_flat(bytes)?;
    let mut pack = Verifier { raw: &raw }.run(content_hash)?;
    // The verified sets and tags are the decoded ones: moved, not copied.
    pack.sets = raw.sets;
    pack.tags = raw.tags;
    Ok(pack)
}

struct Verifier<'r> {
    raw: &'r FlatPack,
}

fn bit_words(rules: usize) -> usize {
    rules.div_ceil(64)
}

impl Verifier<'_> {
    fn run(&self, content_hash: [u8; 32]) -> Result<VerifiedPack, VerifyError> {
        let raw = self.raw;
        if raw.flags != 0 {
            return Err(VerifyError::at(6, ErrorKind::BadFlags { found: raw.flags }));
        }
        let sensor = schema_hash();
        if raw.schema_hash != sensor {
            return Err(VerifyError::at(
                12,
                ErrorKind::SchemaMismatch {
                    pack: HexHash(raw.schema_hash),
                    sensor: HexHash(sensor),
                },
            ));
        }
        let mut declared: Vec<EventType> = Vec::new();
        for (i, (id, count)) in raw.event_types.iter().enumerate() {
            let at = raw
                .offsets
                .event_types
                .saturating_add(1)
                .saturating_add(i.saturating_mul(2));
            let t = EventType::from_id(*id)
                .ok_or(VerifyError::at(at, ErrorKind::UnknownEventType { id: *id }))?;
            if declared.contains(&t) {
                return Err(VerifyError::at(
                    at,
                    ErrorKind::DuplicateEventType { name: t.name() },
                ));
            }
            if *count != t.field_count() {
                return Err(VerifyError::at(
                    at.saturating_add(1),
                    ErrorKind::FieldCountMismatch {
                        name: t.name(),
                        pack: *count,
                        sensor: t.field_count(),
                    },
                ));
            }
            declared.push(t);
        }

        let mut strings = Strings {
            text: String::with_capacity(raw.strings.iter().map(<[u8]>::len).sum()),
            ends: Vec::with_capacity(raw.strings.len()),
        };
        // Where each string's key window ends, once checked to lie inside it.
        let mut key_ends: Vec<u32> = Vec::with_capacity(raw.strings.len());
        for (i, s) in raw.strings.iter().enumerate() {
            let at = raw.offsets.strings.get(i).copied().unwrap_or(0);
            match core::str::from_utf8(s) {
                Ok(s) => strings.push(s),
                Err(_) => return Err(VerifyError::at(at, ErrorKind::BadUtf8 { index: i })),
            }
            let start = raw.strings.key_window(i).unwrap_or(u16::MAX);
            let end = usize::from(start).saturating_add(s.len().min(GRAM));
            if end > s.len() {
                return Err(VerifyError::at(
                    at.saturating_add(4),
                    ErrorKind::BadKeyWindow {
                        index: i,
                        start,
                        len: s.len(),
                    },
                ));
            }
            key_ends.push(u32::try_from(end).unwrap_or(u32::MAX));
        }
        let mut sorted: Vec<u32> = Vec::new();
        for (i, set) in raw.sets.iter().enumerate() {
            let at = raw.offsets.sets.get(i).copied().unwrap_or(0);
            for s in set {
                self.string_ref(*s).map_err(|k| VerifyError::at(at, k))?;
            }
            // An item twice adds nothing a test can see, only work: refused.
            sorted.clear();
            sorted.extend_from_slice(set);
            crate::heapsort::sort(&mut sorted);
            if let Some(w) = sorted.windows(2).find(|w| w.first() == w.get(1)) {
                return Err(VerifyError::at(
                    at,
                    ErrorKind::DuplicateSetItem {
                        set: i,
                        string: w.first().copied().unwrap_or(0),
                    },
                ));
            }
        }
        let facts = StringFacts::new(strings.arena(), key_ends);
        let mut regexes = Vec::with_capacity(raw.regexes.len());
        let mut regex_classes = Vec::with_capacity(raw.regexes.len());
        for (i, bytes) in raw.regexes.iter().enumerate() {
            let at = raw.offsets.regexes.get(i).copied().unwrap_or(0);
            let bad =
                |reason: String| VerifyError::at(at, ErrorKind::BadRegex { index: i, reason });
            let (dfa, used) = sparse::DFA::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
            if used != bytes.len() {
                return Err(bad(alloc::format!(
                    "{} trailing bytes after the DFA",
                    bytes.len().saturating_sub(used)
                )));
            }
            crate::dfa::check_searchable(&dfa).map_err(bad)?;
            regex_classes.push(dfa.byte_classes().alphabet_len());
            regexes.push(dfa.to_owned());
        }

        let mut rules = Vec::with_capacity(raw.rules.len());
        let mut insns = Vec::new();
        let mut globs = Globs::default();
        // (event type, field) -> anchors: (string, rule)
        let mut anchors: BTreeMap<(u8, u8), Vec<(u32, u32)>> = BTreeMap::new();
        let mut always: Vec<Vec<u64>> = EventType::ALL
            .iter()
            .map(|_| alloc::vec![0u64; bit_words(raw.rules.len())])
            .collect();
        let mut implied = Implied::default();

        for (index, r) in raw.rules.iter().enumerate() {
            let id_str = strings.get(r.id);
            let ctx = |e: VerifyError| e.in_rule(index, id_str);
            let rule_at = |kind| ctx(VerifyError::at(r.offset, kind));
            let event_type = EventType::from_id(r.event_type)
                .filter(|t| declared.contains(t))
                .ok_or_else(|| rule_at(ErrorKind::EventTypeNotDeclared { id: r.event_type }))?;
            // Errors are built only when there is one: a rule's error copies its id.
            let level = Level::from_u8(r.level)
                .ok_or_else(|| rule_at(ErrorKind::BadLevel { found: r.level }))?;
            let action = Action::from_u8(r.action)
                .ok_or_else(|| rule_at(ErrorKind::BadAction { found: r.action }))?;
            if r.reserved != 0 {
                return Err(rule_at(ErrorKind::Reserved { found: r.reserved }));
            }
            let code = raw.code.get(index).unwrap_or(&[]);
            let rule_anchors = raw.anchors.get(index).unwrap_or(&[]);
            let tags = raw.tags.get(index).unwrap_or(&[]);
            for s in [r.id, r.title, r.author].iter().chain(tags) {
                self.string_ref(*s).map_err(rule_at)?;
            }
            let rule_index = u32::try_from(index).unwrap_or(u32::MAX);
            implied.anchors.clear();
            for (field, s) in rule_anchors {
                check_field(event_type, *field, Some(FieldType::Str), "an anchor")
                    .map_err(rule_at)?;
                self.string_ref(*s).map_err(rule_at)?;
                if strings.get(*s).unwrap_or("").is_empty() {
                    return Err(rule_at(ErrorKind::EmptyAnchor { index: *s }));
                }
                implied.anchors.push((*field, facts.canon_of(*s), *s));
            }
            // One anchor per literal (ASCII case folded) and field: a repeated anchor adds only
            // prefilter work.
            crate::heapsort::sort(&mut implied.anchors);
            implied.anchors.dedup_by_key(|a| (a.0, a.1));
            for &(field, _, s) in &implied.anchors {
                anchors
                    .entry((event_type.id(), field))
                    .or_default()
                    .push((s, payload(Kind::Rule, rule_index)));
            }
            if rule_anchors.is_empty() {
                if let Some(word) = always
                    .get_mut(usize::from(event_type.id()))
                    .and_then(|w| w.get_mut(index / 64))
                {
                    *word |= 1u64 << (index % 64);
                }
            }
            let code_start = insns.len();
            self.check_code(event_type, r, code, &mut insns, &mut globs)
                .map_err(ctx)?;
            if !rule_anchors.is_empty() {
                let rule_code = insns.get(code_start..).unwrap_or(&[]);
                implied
                    .check(rule_code, &facts, &strings, &globs.runs, raw)
                    .map_err(|(pc, kind)| {
                        ctx(VerifyError::at(
                            r.code_offset
                                .saturating_add(pc.saturating_mul(RawInsn::SIZE)),
                            kind,
                        )
                        .in_insn(pc))
                    })?;
            }
            rules.push(Rule {
                event_type,
                level,
                action,
                id: r.id,
                title: r.title,
                author: r.author,
                code_start,
                code_len: code.len(),
                cost: 0,
            });
        }

        // Each rule's literal tests join their field's prefilter (see `crate::hits`).
        let hit_slots = fold_tests(
            &rules,
            &mut insns,
            &raw.sets,
            &strings,
            &facts,
            &mut anchors,
        );

        let mut by_type: Vec<TypeIndex> = always
            .into_iter()
            .map(|always| TypeIndex {
                always,
                filters: Vec::new(),
            })
            .collect();
        let mut grams = GramStore::default();
        let mut scratch = GramScratch::new(strings.arena(), facts);
        for ((type_id, field), list) in anchors {
            let anchors = grams.add_for_every_event(list, &mut scratch);
            if let Some(ix) = by_type.get_mut(usize::from(type_id)) {
                ix.filters.push(FieldFilter { field, anchors });
            }
        }

        // How each set is tested: only the index parts some instruction uses are built.
        let mut uses = alloc::vec![SetUse::default(); raw.sets.len()];
        for insn in &insns {
            if let Insn::Set { op, set, .. } = insn {
                if let Some(u) = uses.get_mut(usize::try_from(*set).unwrap_or(usize::MAX)) {
                    match op {
                        StrOp::Eq | StrOp::StartsWith => u.forward = true,
                        StrOp::EndsWith => u.backward = true,
                        StrOp::Contains => u.contains = true,
                    }
                }
            }
        }
        let mut affixes = AffixStore::default();
        let set_index: Vec<Option<SetIndex>> = raw
            .sets
            .iter()
            .zip(&uses)
            .map(|(items, &uses)| {
                if items.len() < INDEX_MIN_ITEMS
                    || !(uses.forward || uses.backward || uses.contains)
                {
                    return None;
                }
                Some(SetIndex::build(
                    items,
                    uses,
                    &mut grams,
                    &mut affixes,
                    &mut scratch,
                ))
            })
            .collect();
        drop(scratch);

        let mut pack = VerifiedPack {
            content_hash,
            format_version: raw.format_version,
            strings,
            set_index,
            grams,
            affixes,
            sets: Ragged::default(),
            tags: Ragged::default(),
            globs: globs.table,
            regexes,
            regex_classes,
            rules,
            insns,
            by_type,
            cost_bounds: Vec::new(),
            hit_slots,
        };
        self.bound_costs(&mut pack)?;
        fuse_hit_jumps(&pack.rules, &mut pack.insns);
        Ok(pack)
    }

    /// The cost model (see [`crate::cost`]): each rule's costliest path, and per event type the
    /// prefilters plus every rule of the type; a type whose total exceeds [`BUDGET_PER_EVENT`]
    /// rejects the pack, naming the rule that broke it and its costliest instruction.
    fn bound_costs(&self, pack: &mut VerifiedPack) -> Result<(), VerifyError> {
        let raw = self.raw;
        let mut totals: Vec<u64> = Vec::with_capacity(EventType::ALL.len());
        for (type_id, ix) in pack.by_type.iter().enumerate() {
            let t = u8::try_from(type_id).ok().and_then(EventType::from_id);
            let mut total = cost::EVENT;
            for filter in &ix.filters {
                let n = t.map_or(0, |t| t.max_len(filter.field));
                total = total.saturating_add(filter.anchors.scan_bound(n, Payloads::Each));
                if total > BUDGET_PER_EVENT {
                    return Err(VerifyError::at(
                        0,
                        ErrorKind::PrefilterOverBudget {
                            event_type: t.map_or("?", EventType::name),
                            field: filter.field,
                            name: t
                                .and_then(|t| t.field(filter.field))
                                .map_or("?", |f| f.name),
                            cost: total,
                            budget: BUDGET_PER_EVENT,
                        },
                    ));
                }
            }
            totals.push(total);
        }
        let mut memo = CostMemo::default();
        let mut dist = Vec::new();
        for index in 0..pack.rules.len() {
            let Some(rule) = pack.rules.get(index) else {
                continue;
            };
            let t = rule.event_type;
            let code = pack
                .insns
                .get(rule.code_start..rule.code_start.saturating_add(rule.code_len))
                .unwrap_or(&[]);
            let (worst, pc, insn_cost) = cost::worst_path(code, &mut dist, |pc| {
                code.get(pc)
                    .map_or(0, |insn| memo.insn_cost(pack, &raw.sets, t, insn))
            });
            let rule_cost = worst.saturating_add(cost::RULE);
            let total = totals.get_mut(usize::from(t.id())).map_or(u64::MAX, |x| {
                *x = x.saturating_add(rule_cost);
                *x
            });
            if total > BUDGET_PER_EVENT {
                let r = raw.rules.get(index);
                return Err(VerifyError::at(
                    r.map_or(0, |r| {
                        r.code_offset
                            .saturating_add(pc.saturating_mul(RawInsn::SIZE))
                    }),
                    ErrorKind::CostOverBudget {
                        event_type: t.name(),
                        total,
                        budget: BUDGET_PER_EVENT,
                        rule_cost,
                        insn_cost,
                    },
                )
                .in_rule(index, r.and_then(|r| pack.strings.get(r.id)))
                .in_insn(pc));
            }
            if let Some(rule) = pack.rules.get_mut(index) {
                rule.cost = rule_cost;
            }
        }
        pack.cost_bounds = totals;
        Ok(())
    }

    fn string_ref(&self, index: u32) -> Result<&[u8], ErrorKind> {
        self.raw
            .strings
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .ok_or(ErrorKind::RefOutOfRange {
                what: "string",
                index,
                count: self.raw.strings.len(),
            })
    }

    fn check_code(
        &self,
        t: EventType,
        r: &FlatRule,
        code: &[RawInsn],
        out: &mut Vec<Insn>,
        globs: &mut Globs,
    ) -> Result<(), VerifyError> {
        let raw = self.raw;
        if code.is_empty() {
            return Err(VerifyError::at(r.code_offset, ErrorKind::EmptyCode));
        }
        let n = code.len();
        for (pc, insn) in code.iter().enumerate() {
            let at = r
                .code_offset
                .saturating_add(pc.saturating_mul(RawInsn::SIZE));
            let err = |kind| VerifyError::at(at, kind).in_insn(pc);
            let RawInsn {
                op: opcode,
                a,
                b,
                c,
                x,
            } = *insn;
            let zero = |bytes: &[u8], x_used: bool| -> Result<(), VerifyError> {
                if let Some(nz) = bytes.iter().find(|b| **b != 0) {
                    return Err(err(ErrorKind::Reserved { found: *nz }));
                }
                if !x_used && x != 0 {
                    return Err(err(ErrorKind::BadOperand {
                        what: "unused 32-bit operand",
                        value: x,
                    }));
                }
                Ok(())
            };
            let case = |c: u8| {
                Case::from_u8(c).ok_or(err(ErrorKind::BadOperand {
                    what: "case",
                    value: u32::from(c),
                }))
            };
            let str_op = |b: u8| {
                StrOp::from_u8(b).ok_or(err(ErrorKind::BadOperand {
                    what: "string comparison",
                    value: u32::from(b),
                }))
            };
            let field = |f: u8, ty: Option<FieldType>, what: &'static str| {
                check_field(t, f, ty, what).map_err(err)
            };
            let decoded = match opcode {
                op::EXISTS => {
                    zero(&[b, c], false)?;
                    field(a, None, "exists")?;
                    Insn::Exists(a)
                }
                op::EMPTY => {
                    zero(&[b, c], false)?;
                    field(a, Some(FieldType::Str), "empty")?;
                    Insn::Empty(a)
                }
                op::STR => {
                    field(a, Some(FieldType::Str), "a string comparison")?;
                    let op = str_op(b)?;
                    let case = case(c)?;
                    self.string_ref(x).map_err(err)?;
                    Insn::Str {
                        field: a,
                        op,
                        case,
                        s: x,
                    }
                }
                op::GLOB => {
                    zero(&[b], true)?;
                    field(a, Some(FieldType::Str), "a wildcard match")?;
                    let case = case(c)?;
                    let pattern = self.string_ref(x).map_err(err)?;
                    let glob = match globs.ids.get(&x) {
                        Some(g) => *g,
                        None => {
                            if !globs
                                .table
                                .push_list_with(|out| parse_glob_into(pattern, out))
                            {
                                return Err(err(ErrorKind::BadGlob { index: x }));
                            }
                            let g = globs.table.len().saturating_sub(1);
                            let run = longest_run(globs.table.get(g).unwrap_or(&[]));
                            globs.runs.push(run);
                            let g = u32::try_from(g).unwrap_or(u32::MAX);
                            globs.ids.insert(x, g);
                            g
                        }
                    };
                    Insn::Glob {
                        field: a,
                        case,
                        glob,
                    }
                }
                op::SET => {
                    field(a, Some(FieldType::Str), "a set comparison")?;
                    let op = str_op(b)?;
                    let case = case(c)?;
                    if usize::try_from(x).map_or(true, |i| i >= raw.sets.len()) {
                        return Err(err(ErrorKind::RefOutOfRange {
                            what: "set",
                            index: x,
                            count: raw.sets.len(),
                        }));
                    }
                    Insn::Set {
                        field: a,
                        op,
                        case,
                        set: x,
                    }
                }
                op::REGEX => {
                    zero(&[b, c], true)?;
                    field(a, Some(FieldType::Str), "a regex")?;
                    if usize::try_from(x).map_or(true, |i| i >= raw.regexes.len()) {
                        return Err(err(ErrorKind::RefOutOfRange {
                            what: "regex",
                            index: x,
                            count: raw.regexes.len(),
                        }));
                    }
                    Insn::Regex { field: a, regex: x }
                }
                op::FIELDEQ => {
                    zero(&[], false)?;
                    let ty = t.field(a).map(|f| f.ty);
                    field(a, None, "fieldeq")?;
                    field(b, ty, "fieldeq with the first field's type")?;
                    let case = case(c)?;
                    Insn::FieldEq {
                        field: a,
                        other: b,
                        case,
                    }
                }
                op::INT => {
                    zero(&[c], true)?;
                    field(a, Some(FieldType::Int), "an integer comparison")?;
                    let cmp = IntCmp::from_u8(b).ok_or(err(ErrorKind::BadOperand {
                        what: "integer comparison",
                        value: u32::from(b),
                    }))?;
                    let value = raw
                        .ints
                        .get(usize::try_from(x).unwrap_or(usize::MAX))
                        .copied()
                        .ok_or(err(ErrorKind::RefOutOfRange {
                            what: "integer",
                            index: x,
                            count: raw.ints.len(),
                        }))?;
                    Insn::Int {
                        field: a,
                        cmp,
                        value,
                    }
                }
                op::NOT => {
                    zero(&[a, b, c], false)?;
                    Insn::Not
                }
                op::CONST => {
                    zero(&[b, c], false)?;
                    match a {
                        0 => Insn::Const(false),
                        1 => Insn::Const(true),
                        _ => {
                            return Err(err(ErrorKind::BadOperand {
                                what: "constant (0 or 1)",
                                value: u32::from(a),
                            }))
                        }
                    }
                }
                op::JT | op::JF | op::JMP => {
                    zero(&[a, b, c], true)?;
                    let target = usize::try_from(x).unwrap_or(usize::MAX);
                    if target <= pc {
                        return Err(err(ErrorKind::BackwardJump { target: x }));
                    }
                    if target >= n {
                        return Err(err(ErrorKind::JumpOutOfRange {
                            target: x,
                            count: n,
                        }));
                    }
                    match opcode {
                        op::JT => Insn::Jt(x),
                        op::JF => Insn::Jf(x),
                        _ => Insn::Jmp(x),
                    }
                }
                op::RET => {
                    zero(&[a, b, c], false)?;
                    Insn::Ret
                }
                other => return Err(err(ErrorKind::BadOpcode { op: other })),
            };
            out.push(decoded);
        }
        if out.last() != Some(&Insn::Ret) {
            let last = n.saturating_sub(1);
            return Err(VerifyError::at(
                r.code_offset
                    .saturating_add(last.saturating_mul(RawInsn::SIZE)),
                ErrorKind::MissingRet,
            )
            .in_insn(last));
        }
        Ok(())
    }
}

/// The wildcard patterns of a pack, each parsed once however many instructions use it.
#[derive(Default)]
struct Globs {
    /// The parsed patterns.
    table: Ragged<GlobTok>,
    /// Per parsed pattern: its longest literal run (text every match contains).
    runs: Vec<String>,
    /// Parsed pattern by the string it was parsed from.
    ids: BTreeMap<u32, u32>,
}

/// The most work the anchor proofs of a whole pack may take (items of sets compared with a
/// rule's anchors, bytes of wildcard runs compared): far above what real content needs (all of
/// SigmaHQ takes about 20,000), so verifying stays linear whatever a pack's sets and rules reuse.
const ANCHOR_CHECK_LIMIT: u64 = 1 << 24;

/// The anchor proof's view of one rule (see [`crate::anchors`]): its anchors, deduplicated by
/// (field, canonical literal), and buffers reused rule after rule.
#[derive(Default)]
struct Implied {
    /// (field, canonical id, string), sorted.
    anchors: Vec<(u8, u32, u32)>,
    /// Sets already proven (or not) for this rule: (set, field, implied).
    sets: Vec<(u32, u8, bool)>,
    steps: Vec<Step>,
    facts: Vec<Option<(bool, bool)>>,
    /// Work done so far over the pack, against [`ANCHOR_CHECK_LIMIT`].
    work: u64,
}

impl Implied {
    /// Proves that the rule's verified `code` returns true only when one of [`Implied::anchors`]
    /// occurs; else the instruction that can return true without one, and why.
    fn check(
        &mut self,
        code: &[Insn],
        facts: &StringFacts,
        strings: &Strings,
        glob_runs: &[String],
        raw: &FlatPack,
    ) -> Result<(), (usize, ErrorKind)> {
        self.sets.clear();
        self.steps.clear();
        let target = |t: u32| usize::try_from(t).unwrap_or(usize::MAX);
        for (pc, insn) in code.iter().enumerate() {
            let step = match *insn {
                Insn::Str { field, s, .. } => {
                    let lit = strings.get(s).unwrap_or("");
                    Step::Pred(self.literal_implies(
                        field,
                        lit,
                        Some(facts.canon_of(s)),
                        strings,
                        pc,
                    )?)
                }
                Insn::Set { field, set, .. } => {
                    Step::Pred(self.set_implies(field, set, facts, strings, raw, pc)?)
                }
                Insn::Glob { field, glob, .. } => {
                    let run = glob_runs.get(target(glob)).map_or("", String::as_str);
                    Step::Pred(self.literal_implies(field, run, None, strings, pc)?)
                }
                Insn::Exists(_)
                | Insn::Empty(_)
                | Insn::Regex { .. }
                | Insn::Hit(_)
                | Insn::HitJump { .. }
                | Insn::FieldEq { .. }
                | Insn::Int { .. } => Step::Pred(false),
                Insn::Not => Step::Not,
                Insn::Const(b) => Step::Const(b),
                Insn::Jt(t) => Step::Jt(target(t)),
                Insn::Jf(t) => Step::Jf(target(t)),
                Insn::Jmp(t) => Step::Jmp(target(t)),
                Insn::Ret => Step::Ret,
            };
            self.steps.push(step);
        }
        anchors::check(self.steps.iter().copied(), &mut self.facts)
            .map_err(|e| (e.ret, ErrorKind::AnchorsNotImplied))
    }

    /// Whether every text containing `lit` (ASCII case folded) in `field` contains one of the
    /// rule's anchors on that field: `lit` is an anchor (by its canonical id, when it is a pack
    /// string), or an anchor occurs in it.
    fn literal_implies(
        &mut self,
        field: u8,
        lit: &str,
        canon: Option<u32>,
        strings: &Strings,
        pc: usize,
    ) -> Result<bool, (usize, ErrorKind)> {
        self.charge(1, pc)?;
        if let Some(c) = canon {
            if self
                .anchors
                .binary_search_by(|&(f, x, _)| (f, x).cmp(&(field, c)))
                .is_ok()
            {
                return Ok(true);
            }
        }
        let start = self.anchors.partition_point(|&(f, _, _)| f < field);
        if self.anchors.get(start).is_none_or(|a| a.0 != field) {
            return Ok(false);
        }
        let mut work = 0u64;
        let mut found = false;
        for &(f, _, s) in self.anchors.get(start..).unwrap_or(&[]) {
            if f != field {
                break;
            }
            let anchor = strings.get(s).unwrap_or("");
            if anchor.len() > lit.len() {
                continue;
            }
            work = work.saturating_add(u64::try_from(anchor.len()).unwrap_or(u64::MAX));
            if crate::matching::compare_metered(
                lit,
                StrOp::Contains,
                anchor,
                Case::Insensitive,
                &mut work,
            ) {
                found = true;
                break;
            }
        }
        self.charge(usize::try_from(work).unwrap_or(usize::MAX), pc)?;
        Ok(found)
    }

    /// Whether every item of `set` implies an anchor on `field` (so the set, tested any way,
    /// holds only when one occurs), once per rule and set.
    fn set_implies(
        &mut self,
        field: u8,
        set: u32,
        facts: &StringFacts,
        strings: &Strings,
        raw: &FlatPack,
        pc: usize,
    ) -> Result<bool, (usize, ErrorKind)> {
        if let Some(&(_, _, known)) = self.sets.iter().find(|&&(s, f, _)| s == set && f == field) {
            return Ok(known);
        }
        let items = raw
            .sets
            .get(usize::try_from(set).unwrap_or(usize::MAX))
            .unwrap_or(&[]);
        let mut implied = !items.is_empty();
        for &s in items {
            let lit = strings.get(s).unwrap_or("");
            if !self.literal_implies(field, lit, Some(facts.canon_of(s)), strings, pc)? {
                implied = false;
                break;
            }
        }
        self.sets.push((set, field, implied));
        Ok(implied)
    }

    fn charge(&mut self, units: usize, pc: usize) -> Result<(), (usize, ErrorKind)> {
        self.work = self
            .work
            .saturating_add(u64::try_from(units).unwrap_or(u64::MAX));
        if self.work > ANCHOR_CHECK_LIMIT {
            return Err((
                pc,
                ErrorKind::LimitExceeded {
                    what: "work proving the pack's anchors",
                    limit: usize::try_from(ANCHOR_CHECK_LIMIT).unwrap_or(usize::MAX),
                    found: usize::try_from(self.work).unwrap_or(usize::MAX),
                },
            ));
        }
        Ok(())
    }
}

/// Instruction costs already computed, by what they depend on: a set test's or a wildcard
/// pattern's cost is computed once per (set or pattern, operation, field length), however many
/// instructions share it, so bounding costs stays linear in the pack's size.
#[derive(Default)]
struct CostMemo {
    /// By set: ((operation, case, field length), cost).
    sets: Vec<Vec<(SetTest, u64)>>,
    /// By parsed pattern: (field length, cost).
    globs: Vec<Vec<(usize, u64)>>,
}

/// How a set is tested: operation, case, and the length of the field's longest value.
type SetTest = (u8, u8, usize);

/// The value memoized under `key` in `memo[at]`, computed by `compute` the first time.
fn memoized<K: PartialEq + Copy>(
    memo: &mut Vec<Vec<(K, u64)>>,
    at: u32,
    key: K,
    compute: impl FnOnce() -> u64,
) -> u64 {
    let at = usize::try_from(at).unwrap_or(usize::MAX);
    if memo.len() <= at {
        memo.resize_with(at.saturating_add(1), Vec::new);
    }
    match memo.get_mut(at) {
        Some(list) => match list.iter().find(|(k, _)| *k == key) {
            Some(&(_, v)) => v,
            None => {
                let v = compute();
                list.push((key, v));
                v
            }
        },
        None => compute(),
    }
}

impl CostMemo {
    /// The most work instruction `insn` of a rule for `t` can cost, with the cost model's units.
    fn insn_cost(
        &mut self,
        pack: &VerifiedPack,
        sets: &Ragged<u32>,
        t: EventType,
        insn: &Insn,
    ) -> u64 {
        let len = |s: u32| pack.strings.get(s).map_or(0, str::len);
        let work = match *insn {
            Insn::Exists(_)
            | Insn::Empty(_)
            | Insn::Int { .. }
            | Insn::Not
            | Insn::Const(_)
            | Insn::Jt(_)
            | Insn::Jf(_)
            | Insn::Jmp(_)
            | Insn::Hit(_)
            | Insn::HitJump { .. }
            | Insn::Ret => 0,
            Insn::Str { field, op, s, .. } => compare_bound(op, t.max_len(field), len(s)),
            Insn::FieldEq { field, other, .. } => {
                compare_bound(StrOp::Eq, t.max_len(field), t.max_len(other))
            }
            Insn::Regex { field, regex } => cost::regex_bound(
                pack.regex_classes
                    .get(usize::try_from(regex).unwrap_or(usize::MAX))
                    .copied()
                    .unwrap_or(usize::MAX),
                t.max_len(field),
            ),
            Insn::Glob { field, glob, .. } => {
                let n = t.max_len(field);
                memoized(&mut self.globs, glob, n, || {
                    pack.globs
                        .get(usize::try_from(glob).unwrap_or(usize::MAX))
                        .map_or(u64::MAX, |pat| glob_bound(pat, n))
                })
            }
            Insn::Set {
                field,
                op,
                case,
                set,
            } => {
                let n = t.max_len(field);
                memoized(&mut self.sets, set, (op as u8, case as u8, n), || {
                    let at = usize::try_from(set).unwrap_or(usize::MAX);
                    let indexed = pack
                        .set_index
                        .get(at)
                        .and_then(Option::as_ref)
                        .and_then(|ix| ix.bound(n, op, case, &pack.affixes));
                    indexed.unwrap_or_else(|| {
                        // Item by item: each compared in turn.
                        sets.get(at).unwrap_or(&[]).iter().fold(0u64, |sum, &s| {
                            sum.saturating_add(1)
                                .saturating_add(compare_bound(op, n, len(s)))
                        })
                    })
                })
            }
        };
        work.saturating_add(cost::INSN)
    }
}

/// Checks a field reference against the running sensor's schema: the index must be below the
/// event type's real field count, and the field's type must be the one the instruction needs.
fn check_field(
    t: EventType,
    field: u8,
    want: Option<FieldType>,
    what: &'static str,
) -> Result<(), ErrorKind> {
    let def = t.field(field).ok_or(ErrorKind::FieldOutOfRange {
        event_type: t.name(),
        field,
        count: t.field_count(),
    })?;
    if let Some(expected) = want {
        if def.ty != expected {
            return Err(ErrorKind::TypeMismatch {
                field,
                name: def.name,
                actual: def.ty,
                expected,
                what,
            });
        }
    }
    Ok(())
}

impl VerifiedPack {
    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// SHA-256 of the pack bytes this was verified from.
    pub fn content_hash(&self) -> [u8; 32] {
        self.content_hash
    }

    /// The pack's format version.
    pub fn format_version(&self) -> u16 {
        self.format_version
    }

    /// The most work units evaluating one event of type `t` can cost under this pack: the cost
    /// model's bound (see [`crate::cost`]), at most [`BUDGET_PER_EVENT`].
    pub fn cost_bound(&self, t: EventType) -> u64 {
        self.cost_bounds
            .get(usize::from(t.id()))
            .copied()
            .unwrap_or(0)
    }

    /// Lowers the bound evaluations of event type `t` stop at to `bound` (never raises it): an
    /// evaluation that would pass it stops, as one that would pass the proven bound does. For
    /// tests of that stop, and for a sensor that wants a tighter cap than the pack's proof.
    pub fn lower_cost_bound(&mut self, t: EventType, bound: u64) {
        if let Some(b) = self.cost_bounds.get_mut(usize::from(t.id())) {
            *b = (*b).min(bound);
        }
    }

    /// How many distinct string and set tests of the rules the prefilter scans answer (see
    /// `interpreter/src/hits.rs`), at most 4096; tests past it run as instructions.
    pub fn folded_tests(&self) -> usize {
        self.hit_slots
    }

    /// The largest of [`VerifiedPack::cost_bound`] over the event types.
    pub fn max_cost_bound(&self) -> u64 {
        self.cost_bounds.iter().copied().max().unwrap_or(0)
    }

    /// The prefilters of event type `t` and what each can cost per event (work units), by field.
    pub fn prefilter_costs(&self, t: EventType) -> Vec<(u8, u64)> {
        self.by_type
            .get(usize::from(t.id()))
            .map(|ix| {
                ix.filters
                    .iter()
                    .map(|f| {
                        (
                            f.field,
                            f.anchors.scan_bound(t.max_len(f.field), Payloads::Each),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The most work units running rule `index` can cost (its costliest path), if there is such
    /// a rule.
    pub fn rule_cost(&self, index: usize) -> Option<u64> {
        self.rules.get(index).map(|r| r.cost)
    }

    /// Information about rule `index`.
    pub fn rule(&self, index: usize) -> Option<RuleInfo<'_>> {
        let r = self.rules.get(index)?;
        Some(RuleInfo {
            index: u32::try_from(index).ok()?,
            id: self.str(r.id),
            title: self.str(r.title),
            author: self.str(r.author),
            level: r.level,
            action: r.action,
            event_type: r.event_type,
            pack: self,
            tag_refs: self.tags.get(index).unwrap_or(&[]),
        })
    }

    pub(crate) fn str(&self, index: u32) -> &str {
        self.strings.get(index).unwrap_or("")
    }
}

/// A rule's identity and metadata, as reported with a detection. The Detection Rule License
/// requires alerts to keep the rule's author, title and id.
#[derive(Clone, Copy, Debug)]
pub struct RuleInfo<'p> {
    /// Index of the rule in the pack.
    pub index: u32,
    /// The rule id (a Sigma rule's UUID).
    pub id: &'p str,
    /// The title.
    pub title: &'p str,
    /// The author.
    pub author: &'p str,
    /// The level.
    pub level: Level,
    /// The action on match.
    pub action: Action,
    /// The event type the rule applies to.
    pub event_type: EventType,
    pack: &'p VerifiedPack,
    tag_refs: &'p [u32],
}

impl<'p> RuleInfo<'p> {
    /// The rule's tags.
    pub fn tags(&self) -> impl Iterator<Item = &'p str> + 'p {
        let pack = self.pack;
        self.tag_refs.iter().map(move |t| pack.str(*t))
    }
}

// The driver shares one verified pack between callbacks running on many processors at once.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<VerifiedPack>();
};
