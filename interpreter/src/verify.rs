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

use crate::gramindex::{GramIndex, GramScratch, GramStore, Literal, GRAM};
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
    pub(crate) rules: Vec<Rule>,
    pub(crate) insns: Vec<Insn>,
    pub(crate) by_type: Vec<TypeIndex>,
}

/// The pack's constant strings, checked UTF-8, in one allocation (laid out as
/// [`crate::format::StringTable`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Strings {
    text: String,
    ends: Vec<usize>,
}

impl Strings {
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
        for (i, set) in raw.sets.iter().enumerate() {
            let at = raw.offsets.sets.get(i).copied().unwrap_or(0);
            for s in set {
                self.string_ref(*s).map_err(|k| VerifyError::at(at, k))?;
            }
        }
        let mut regexes = Vec::with_capacity(raw.regexes.len());
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
            regexes.push(dfa.to_owned());
        }

        let mut rules = Vec::with_capacity(raw.rules.len());
        let mut insns = Vec::new();
        let mut globs: Ragged<GlobTok> = Ragged::default();
        let mut glob_ids: BTreeMap<u32, u32> = BTreeMap::new();
        // (event type, field) -> anchors: (literal, rule, string position)
        let mut anchors: BTreeMap<(u8, u8), Vec<Literal<'_>>> = BTreeMap::new();
        let mut always: Vec<Vec<u64>> = EventType::ALL
            .iter()
            .map(|_| alloc::vec![0u64; bit_words(raw.rules.len())])
            .collect();

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
            for (field, s) in rule_anchors {
                check_field(event_type, *field, Some(FieldType::Str), "an anchor")
                    .map_err(rule_at)?;
                self.string_ref(*s).map_err(rule_at)?;
                // In range (just checked), so present in the UTF-8-checked strings.
                let lit = strings.get(*s).unwrap_or("");
                if lit.is_empty() {
                    return Err(rule_at(ErrorKind::EmptyAnchor { index: *s }));
                }
                anchors
                    .entry((event_type.id(), *field))
                    .or_default()
                    .push((lit, rule_index, *s));
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
            self.check_code(event_type, r, code, &mut insns, &mut globs, &mut glob_ids)
                .map_err(ctx)?;
            rules.push(Rule {
                event_type,
                level,
                action,
                id: r.id,
                title: r.title,
                author: r.author,
                code_start,
                code_len: code.len(),
            });
        }

        let mut by_type: Vec<TypeIndex> = always
            .into_iter()
            .map(|always| TypeIndex {
                always,
                filters: Vec::new(),
            })
            .collect();
        let mut grams = GramStore::default();
        let mut scratch = GramScratch::for_strings(key_ends);
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
        let mut texts: Vec<&str> = Vec::new();
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
                texts.clear();
                texts.extend(items.iter().map(|&i| strings.get(i).unwrap_or("")));
                Some(SetIndex::build(
                    &texts,
                    items,
                    uses,
                    &mut grams,
                    &mut affixes,
                    &mut scratch,
                ))
            })
            .collect();
        Ok(VerifiedPack {
            content_hash,
            format_version: raw.format_version,
            strings,
            set_index,
            grams,
            affixes,
            sets: Ragged::default(),
            tags: Ragged::default(),
            globs,
            regexes,
            rules,
            insns,
            by_type,
        })
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
        globs: &mut Ragged<GlobTok>,
        glob_ids: &mut BTreeMap<u32, u32>,
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
                    let glob = match glob_ids.get(&x) {
                        Some(g) => *g,
                        None => {
                            if !globs.push_list_with(|out| parse_glob_into(pattern, out)) {
                                return Err(err(ErrorKind::BadGlob { index: x }));
                            }
                            let g =
                                u32::try_from(globs.len().saturating_sub(1)).unwrap_or(u32::MAX);
                            glob_ids.insert(x, g);
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
