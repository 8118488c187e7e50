//! Building packs: interning constants, lowering boolean conditions to forward-only bytecode,
//! deriving each rule's prefilter anchors, and encoding. Used by the assembler, the Sigma compiler
//! and tests; never by the driver. What it produces still goes through `verify` before use.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::format::{RawPack, RawRule};
use crate::insn::{op, Case, IntCmp, RawInsn, StrOp};
use crate::limits;
use crate::matching::{longest_run, parse_glob};
use crate::schema::{EventType, FieldType};
use crate::verify::{Action, Level};

/// A predicate over one event: one VM instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pred {
    /// The field is present (Sigma: `field|exists: true`, or not `null`).
    Exists { field: u8 },
    /// The field is present and the empty string (Sigma: `''`).
    Empty { field: u8 },
    /// A string comparison with a constant.
    Str {
        field: u8,
        op: StrOp,
        case: Case,
        value: String,
    },
    /// A wildcard match of the whole value (`*`, `?`, `\` escapes).
    Glob {
        field: u8,
        case: Case,
        pattern: String,
    },
    /// Any of the constants compares true.
    Set {
        field: u8,
        op: StrOp,
        case: Case,
        values: Vec<String>,
    },
    /// A linear-time regex search (a DFA).
    Regex {
        field: u8,
        pattern: String,
        case_insensitive: bool,
    },
    /// Both fields present and equal.
    FieldEq { field: u8, other: u8, case: Case },
    /// An integer comparison with a constant.
    Int { field: u8, cmp: IntCmp, value: u64 },
}

/// A boolean condition over predicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// One predicate.
    Pred(Pred),
    /// All must hold (true when empty).
    And(Vec<Expr>),
    /// One must hold (false when empty).
    Or(Vec<Expr>),
    /// Negation.
    Not(Box<Expr>),
    /// A constant.
    Const(bool),
}

/// Everything about one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    /// Which events the rule applies to.
    pub event_type: EventType,
    /// The rule id.
    pub id: String,
    /// The title.
    pub title: String,
    /// The author.
    pub author: String,
    /// The level.
    pub level: Level,
    /// The action on match.
    pub action: Action,
    /// Tags (for example ATT&CK techniques).
    pub tags: Vec<String>,
    /// The condition.
    pub expr: Expr,
}

/// Why a rule could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("field index {field} does not exist in {event_type}")]
    NoSuchField { event_type: &'static str, field: u8 },
    #[error("field {name} is {actual}, the predicate needs {expected}", actual = .actual.name(), expected = .expected.name())]
    FieldType {
        name: &'static str,
        actual: FieldType,
        expected: FieldType,
    },
    #[error("regex {pattern:?}: {reason}")]
    Regex { pattern: String, reason: String },
    #[error("rule needs {count} instructions, the limit is {limit}")]
    TooLong { count: usize, limit: usize },
    #[error("too many {what} (limit {limit})")]
    Limit { what: &'static str, limit: usize },
}

/// Builds a pack for the built-in schema.
#[derive(Clone, Debug, Default)]
pub struct PackBuilder {
    raw: RawPack,
    strings: BTreeMap<String, u32>,
    sets: BTreeMap<Vec<u32>, u32>,
    ints: BTreeMap<u64, u32>,
    regexes: BTreeMap<(String, bool), u32>,
}

fn index_of(len: usize, what: &'static str, limit: usize) -> Result<u32, BuildError> {
    if len >= limit {
        return Err(BuildError::Limit { what, limit });
    }
    u32::try_from(len).map_err(|_| BuildError::Limit { what, limit })
}

impl PackBuilder {
    /// A builder for an empty pack declaring every event type of the built-in schema.
    pub fn new() -> Self {
        Self::default()
    }

    /// The raw pack under construction (the assembler uses this to write any bytes, valid or not).
    pub fn raw_mut(&mut self) -> &mut RawPack {
        &mut self.raw
    }

    /// Interns a constant string.
    pub fn string(&mut self, s: &str) -> u32 {
        if let Some(i) = self.strings.get(s) {
            return *i;
        }
        let i = u32::try_from(self.raw.strings.len()).unwrap_or(u32::MAX);
        self.raw.strings.push(s.as_bytes());
        self.strings.insert(String::from(s), i);
        i
    }

    /// Interns a set of constant strings (an item given twice is kept once: the verifier refuses
    /// sets that hold a string twice).
    pub fn string_set<S: AsRef<str>>(&mut self, items: &[S]) -> u32 {
        let mut refs: Vec<u32> = Vec::with_capacity(items.len());
        let mut seen = alloc::collections::BTreeSet::new();
        for s in items {
            let i = self.string(s.as_ref());
            if seen.insert(i) {
                refs.push(i);
            }
        }
        if let Some(i) = self.sets.get(&refs) {
            return *i;
        }
        let i = u32::try_from(self.raw.sets.len()).unwrap_or(u32::MAX);
        self.raw.sets.push(refs.clone());
        self.sets.insert(refs, i);
        i
    }

    /// Interns an integer constant.
    pub fn int(&mut self, v: u64) -> u32 {
        if let Some(i) = self.ints.get(&v) {
            return *i;
        }
        let i = u32::try_from(self.raw.ints.len()).unwrap_or(u32::MAX);
        self.raw.ints.push(v);
        self.ints.insert(v, i);
        i
    }

    /// Compiles a regex to a serialized sparse DFA and interns it. Patterns are searched
    /// unanchored, as Sigma's `re` does; case-insensitivity is ASCII-only.
    #[cfg(feature = "build")]
    pub fn regex(&mut self, pattern: &str, case_insensitive: bool) -> Result<u32, BuildError> {
        let key = (String::from(pattern), case_insensitive);
        if let Some(i) = self.regexes.get(&key) {
            return Ok(*i);
        }
        let bytes = compile_regex(pattern, case_insensitive)?;
        let i = index_of(self.raw.regexes.len(), "regexes", limits::MAX_REGEXES)?;
        self.raw.regexes.push(bytes);
        self.regexes.insert(key, i);
        Ok(i)
    }

    /// Without the `build` feature regexes cannot be compiled.
    #[cfg(not(feature = "build"))]
    pub fn regex(&mut self, pattern: &str, _case_insensitive: bool) -> Result<u32, BuildError> {
        let _ = &self.regexes;
        Err(BuildError::Regex {
            pattern: String::from(pattern),
            reason: String::from("regex compilation needs the `build` feature"),
        })
    }

    /// Adds a raw regex DFA (serialized bytes) as is.
    pub fn raw_regex(&mut self, bytes: Vec<u8>) -> u32 {
        let i = u32::try_from(self.raw.regexes.len()).unwrap_or(u32::MAX);
        self.raw.regexes.push(bytes);
        i
    }

    /// Adds a rule: checks its fields against the schema, lowers its condition and derives its
    /// prefilter anchors.
    pub fn rule(&mut self, spec: RuleSpec) -> Result<u32, BuildError> {
        let index = index_of(self.raw.rules.len(), "rules", limits::MAX_RULES)?;
        let expr = guard_regexes(&spec.expr);
        let mut code = Vec::new();
        self.lower(spec.event_type, &expr, &mut code)?;
        code.push(RawInsn {
            op: op::RET,
            ..RawInsn::default()
        });
        if code.len() > limits::MAX_INSNS_PER_RULE {
            return Err(BuildError::TooLong {
                count: code.len(),
                limit: limits::MAX_INSNS_PER_RULE,
            });
        }
        let anchors = match anchors_of(&expr) {
            Some(list) if !list.is_empty() && list.len() <= limits::MAX_ANCHORS_PER_RULE => list
                .into_iter()
                .map(|(f, s)| (f, self.string(&s)))
                .collect(),
            _ => Vec::new(),
        };
        let rule = RawRule {
            event_type: spec.event_type.id(),
            level: spec.level as u8,
            action: spec.action as u8,
            reserved: 0,
            id: self.string(&spec.id),
            title: self.string(&spec.title),
            author: self.string(&spec.author),
            tags: spec.tags.iter().map(|t| self.string(t)).collect(),
            anchors,
            code,
            offset: 0,
            code_offset: 0,
        };
        self.raw.rules.push(rule);
        Ok(index)
    }

    /// Encodes the pack.
    /// Encodes the pack, with the key windows of its indexed strings balanced (see
    /// [`balance_key_windows`]).
    pub fn finish(mut self) -> Vec<u8> {
        balance_key_windows(&mut self.raw);
        self.raw.encode()
    }

    /// Encodes the pack exactly as built, every key window as set (the assembler's
    /// `keywindow`).
    pub fn finish_as_is(self) -> Vec<u8> {
        self.raw.encode()
    }

    fn field(t: EventType, field: u8, want: Option<FieldType>) -> Result<(), BuildError> {
        let def = t.field(field).ok_or(BuildError::NoSuchField {
            event_type: t.name(),
            field,
        })?;
        match want {
            Some(expected) if def.ty != expected => Err(BuildError::FieldType {
                name: def.name,
                actual: def.ty,
                expected,
            }),
            _ => Ok(()),
        }
    }

    fn pred(&mut self, t: EventType, p: &Pred) -> Result<RawInsn, BuildError> {
        let s = Some(FieldType::Str);
        Ok(match p {
            Pred::Exists { field } => {
                Self::field(t, *field, None)?;
                RawInsn {
                    op: op::EXISTS,
                    a: *field,
                    ..RawInsn::default()
                }
            }
            Pred::Empty { field } => {
                Self::field(t, *field, s)?;
                RawInsn {
                    op: op::EMPTY,
                    a: *field,
                    ..RawInsn::default()
                }
            }
            Pred::Str {
                field,
                op: o,
                case,
                value,
            } => {
                Self::field(t, *field, s)?;
                RawInsn {
                    op: op::STR,
                    a: *field,
                    b: *o as u8,
                    c: *case as u8,
                    x: self.string(value),
                }
            }
            Pred::Glob {
                field,
                case,
                pattern,
            } => {
                Self::field(t, *field, s)?;
                RawInsn {
                    op: op::GLOB,
                    a: *field,
                    b: 0,
                    c: *case as u8,
                    x: self.string(pattern),
                }
            }
            Pred::Set {
                field,
                op: o,
                case,
                values,
            } => {
                Self::field(t, *field, s)?;
                RawInsn {
                    op: op::SET,
                    a: *field,
                    b: *o as u8,
                    c: *case as u8,
                    x: self.string_set(values),
                }
            }
            Pred::Regex {
                field,
                pattern,
                case_insensitive,
            } => {
                Self::field(t, *field, s)?;
                let x = self.regex(pattern, *case_insensitive)?;
                RawInsn {
                    op: op::REGEX,
                    a: *field,
                    x,
                    ..RawInsn::default()
                }
            }
            Pred::FieldEq { field, other, case } => {
                Self::field(t, *field, None)?;
                let ty = t.field(*field).map(|f| f.ty);
                Self::field(t, *other, ty)?;
                RawInsn {
                    op: op::FIELDEQ,
                    a: *field,
                    b: *other,
                    c: *case as u8,
                    x: 0,
                }
            }
            Pred::Int { field, cmp, value } => {
                Self::field(t, *field, Some(FieldType::Int))?;
                RawInsn {
                    op: op::INT,
                    a: *field,
                    b: *cmp as u8,
                    c: 0,
                    x: self.int(*value),
                }
            }
        })
    }

    /// Emits code leaving the expression's value in the accumulator. `and`/`or` short-circuit with
    /// forward jumps to the end of their own code, so all control flow goes forward.
    fn lower(&mut self, t: EventType, e: &Expr, code: &mut Vec<RawInsn>) -> Result<(), BuildError> {
        if code.len() > limits::MAX_INSNS_PER_RULE {
            return Err(BuildError::TooLong {
                count: code.len(),
                limit: limits::MAX_INSNS_PER_RULE,
            });
        }
        match e {
            Expr::Pred(p) => code.push(self.pred(t, p)?),
            Expr::Const(b) => code.push(RawInsn {
                op: op::CONST,
                a: u8::from(*b),
                ..RawInsn::default()
            }),
            Expr::Not(inner) => {
                self.lower(t, inner, code)?;
                code.push(RawInsn {
                    op: op::NOT,
                    ..RawInsn::default()
                });
            }
            Expr::And(items) | Expr::Or(items) => {
                let is_and = matches!(e, Expr::And(_));
                match items.as_slice() {
                    [] => code.push(RawInsn {
                        op: op::CONST,
                        a: u8::from(is_and),
                        ..RawInsn::default()
                    }),
                    [only] => self.lower(t, only, code)?,
                    [init @ .., last] => {
                        let mut patches = Vec::new();
                        for item in init {
                            self.lower(t, item, code)?;
                            patches.push(code.len());
                            code.push(RawInsn {
                                op: if is_and { op::JF } else { op::JT },
                                ..RawInsn::default()
                            });
                        }
                        self.lower(t, last, code)?;
                        let end = u32::try_from(code.len()).unwrap_or(u32::MAX);
                        for p in patches {
                            if let Some(insn) = code.get_mut(p) {
                                insn.x = end;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Chooses the key windows of the strings a prefilter or a set index keys (anchors, set items)
/// with the load of each window counted: each string, in order, takes the least common of its
/// windows with the literal bytes already keyed by it added to the score (one unit per 8 bytes),
/// so literals alike spread over windows. A scan confirms every literal keyed by a window
/// wherever it occurs, and the cost model charges the fullest window at every byte.
fn balance_key_windows(raw: &mut RawPack) {
    use crate::gramindex::{key_window_end_balanced, window_at};
    let n = raw.strings.len();
    let mut used = alloc::vec![false; n];
    let mut mark = |i: u32| {
        if let Some(u) = used.get_mut(usize::try_from(i).unwrap_or(usize::MAX)) {
            *u = true;
        }
    };
    raw.sets.iter().flatten().for_each(|&i| mark(i));
    raw.rules
        .iter()
        .flat_map(|r| r.anchors.iter())
        .for_each(|&(_, i)| mark(i));
    let mut load: BTreeMap<u64, u32> = BTreeMap::new();
    for (i, &u) in used.iter().enumerate() {
        let Some(lit) = raw.strings.get(i).filter(|l| u && l.len() > 3) else {
            continue;
        };
        let end = key_window_end_balanced(lit, |w| load.get(&w).map_or(0, |l| l / 8));
        let bytes = u32::try_from(lit.len()).unwrap_or(u32::MAX);
        let slot = load.entry(window_at(lit, end)).or_default();
        *slot = slot.saturating_add(bytes);
        let start = end.saturating_sub(3);
        raw.strings
            .set_key_window(i, u16::try_from(start).unwrap_or(u16::MAX));
    }
}

/// `e` with every regex that has required literals guarded by a `set.contains` (or
/// `str.contains`) of them: the same verdicts (a match contains one of them), a cheap test
/// before the DFA runs, and code that says what the rule's anchors assume, which the verifier
/// checks (it cannot read literals out of a DFA).
fn guard_regexes(e: &Expr) -> Expr {
    match e {
        Expr::Pred(Pred::Regex {
            field,
            pattern,
            case_insensitive,
        }) => match regex_anchors(pattern, *case_insensitive) {
            Some(mut lits)
                if !lits.is_empty() && lits.iter().all(|l| good_anchor(l.as_bytes())) =>
            {
                let guard = if lits.len() == 1 {
                    Pred::Str {
                        field: *field,
                        op: StrOp::Contains,
                        case: Case::Insensitive,
                        value: lits.pop().unwrap_or_default(),
                    }
                } else {
                    Pred::Set {
                        field: *field,
                        op: StrOp::Contains,
                        case: Case::Insensitive,
                        values: lits,
                    }
                };
                Expr::And(alloc::vec![Expr::Pred(guard), e.clone()])
            }
            _ => e.clone(),
        },
        Expr::Pred(_) | Expr::Const(_) => e.clone(),
        Expr::Not(inner) => Expr::Not(Box::new(guard_regexes(inner))),
        Expr::And(items) => Expr::And(items.iter().map(guard_regexes).collect()),
        Expr::Or(items) => Expr::Or(items.iter().map(guard_regexes).collect()),
    }
}

/// How selective an anchor is likely to be: its length, not counting the bytes inside text
/// every Windows event is full of (`gramindex`'s model of it: system paths, the processes that
/// always run). Used to choose which part of an `and` a rule is prefiltered on.
fn selectivity(lit: &str) -> usize {
    crate::gramindex::uncommon_bytes(lit.as_bytes())
}

/// Whether a literal is worth prefiltering on: two bytes or more, or one byte that is rare in
/// Windows paths and command lines (a backtick, say, not a space).
fn good_anchor(lit: &[u8]) -> bool {
    match lit {
        [] => false,
        [b] => crate::gramindex::rare_byte(*b),
        _ => true,
    }
}

/// The literals that must occur (ASCII case-insensitively) in a field for the expression to be
/// true: `Some(list)` means "if the expression holds, at least one (field, literal) of the list
/// occurs in the event"; `None` means no such guarantee. Used as the rule's prefilter.
pub fn anchors_of(e: &Expr) -> Option<Vec<(u8, String)>> {
    let good = |s: &str| good_anchor(s.as_bytes());
    match e {
        Expr::Pred(Pred::Str { field, value, .. }) if good(value) => {
            Some(alloc::vec![(*field, value.clone())])
        }
        Expr::Pred(Pred::Set { field, values, .. })
            if !values.is_empty() && values.iter().all(|v| good(v)) =>
        {
            Some(values.iter().map(|v| (*field, v.clone())).collect())
        }
        Expr::Pred(Pred::Glob { field, pattern, .. }) => {
            let best = longest_run(&parse_glob(pattern.as_bytes())?);
            good(&best).then(|| alloc::vec![(*field, best)])
        }
        Expr::Pred(Pred::Regex {
            field,
            pattern,
            case_insensitive,
        }) => regex_anchors(pattern, *case_insensitive)
            .filter(|list| list.iter().all(|s| good(s)))
            .map(|list| list.into_iter().map(|s| (*field, s)).collect()),
        Expr::Pred(_) | Expr::Not(_) | Expr::Const(_) => None,
        Expr::Or(items) => {
            let mut all = Vec::new();
            for i in items {
                if *i == Expr::Const(false) {
                    continue;
                }
                all.extend(anchors_of(i)?);
                if all.len() > limits::MAX_ANCHORS_PER_RULE {
                    return None;
                }
            }
            (!all.is_empty()).then_some(all)
        }
        Expr::And(items) => items.iter().filter_map(anchors_of).max_by_key(|list| {
            let weakest = list.iter().map(|(_, s)| selectivity(s)).min().unwrap_or(0);
            (weakest.min(8), usize::MAX.saturating_sub(list.len()))
        }),
    }
}

/// Compiles a regex to a serialized sparse DFA (little-endian, as the sensor reads it).
#[cfg(feature = "build")]
pub fn compile_regex(pattern: &str, case_insensitive: bool) -> Result<Vec<u8>, BuildError> {
    use regex_automata::dfa::dense;
    use regex_automata::nfa::thompson;
    use regex_automata::util::syntax;

    let err = |reason: String| BuildError::Regex {
        pattern: String::from(pattern),
        reason,
    };
    let build = |unicode: bool| {
        dense::Builder::new()
            .syntax(
                syntax::Config::new()
                    .case_insensitive(case_insensitive)
                    .unicode(unicode)
                    .utf8(false),
            )
            .thompson(thompson::Config::new().utf8(false))
            .configure(
                dense::Config::new()
                    // Fewer states: a smaller pack and less for the verifier to validate.
                    .minimize(true)
                    .dfa_size_limit(Some(limits::MAX_REGEX_BYTES.saturating_mul(8)))
                    .determinize_size_limit(Some(limits::MAX_REGEX_BYTES.saturating_mul(16))),
            )
            .build(pattern)
    };
    let dense = build(false)
        .or_else(|_| build(true))
        .map_err(|e| err(alloc::format!("{e}")))?;
    let sparse = dense.to_sparse().map_err(|e| err(alloc::format!("{e}")))?;
    let bytes = sparse.to_bytes_little_endian();
    if bytes.len() > limits::MAX_REGEX_BYTES {
        return Err(err(alloc::format!(
            "its DFA is {} bytes, more than the limit of {}",
            bytes.len(),
            limits::MAX_REGEX_BYTES
        )));
    }
    Ok(bytes)
}

/// Literals one of which every match of the regex contains, folded to lower case (the prefilter
/// folds ASCII case anyway): its prefix or suffix literals as regex-syntax extracts them, or the
/// literals some mandatory part of it requires (the backtick of ``\w+`\w``), whichever set's
/// shortest literal is longest. `None` when there is no such finite set of literals worth
/// prefiltering on (for example the regex can match the empty string).
#[cfg(feature = "build")]
pub fn regex_anchors(pattern: &str, case_insensitive: bool) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    // Parsed as `compile_regex` compiles it: without Unicode if it can be.
    let parse = |unicode: bool| {
        regex_syntax::ParserBuilder::new()
            .case_insensitive(case_insensitive)
            .unicode(unicode)
            .utf8(false)
            .build()
            .parse(pattern)
    };
    let hir = parse(false).or_else(|_| parse(true)).ok()?;
    let mut candidates: Vec<Vec<Vec<u8>>> = Vec::new();
    for kind in [ExtractKind::Prefix, ExtractKind::Suffix] {
        let mut ext = Extractor::new();
        ext.kind(kind).limit_total(512);
        let mut seq = ext.extract(&hir);
        seq.optimize_for_prefix_by_preference();
        if let Some(lits) = seq.literals() {
            candidates.push(lits.iter().map(|l| l.as_bytes().to_vec()).collect());
        }
    }
    candidates.extend(required_literals(&hir));
    candidates
        .into_iter()
        .filter_map(|lits| {
            let mut out: Vec<String> = Vec::new();
            for lit in lits {
                let s = core::str::from_utf8(&lit).ok()?;
                if !good_anchor(s.as_bytes()) {
                    return None;
                }
                let s = s.to_ascii_lowercase();
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            (!out.is_empty() && out.len() <= limits::MAX_ANCHORS_PER_RULE).then_some(out)
        })
        .max_by_key(|list| list.iter().map(String::len).min().unwrap_or(0))
}

/// Literals one of which every match of `hir` contains, from its literal parts that every match
/// must pass through: a concatenation requires each run of adjacent single-string parts, joined,
/// and what any of its other parts requires (the candidate with the longest shortest literal is
/// taken), an alternation one of its branches' requirements, a repetition of at least one its
/// body's.
#[cfg(feature = "build")]
fn required_literals(hir: &regex_syntax::hir::Hir) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::HirKind;
    let best = |candidates: Vec<Vec<Vec<u8>>>| {
        candidates
            .into_iter()
            .filter(|lits| lits.iter().all(|l| good_anchor(l)))
            .max_by_key(|lits| lits.iter().map(Vec::len).min().unwrap_or(0))
    };
    match hir.kind() {
        HirKind::Literal(lit) => Some(alloc::vec![lit.0.to_vec()]),
        HirKind::Capture(c) => required_literals(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => required_literals(&r.sub),
        HirKind::Concat(parts) => {
            let mut candidates = Vec::new();
            let mut run: Vec<u8> = Vec::new();
            for part in parts {
                if let Some(bytes) = single_string(part) {
                    run.extend_from_slice(&bytes);
                    continue;
                }
                if !run.is_empty() {
                    candidates.push(alloc::vec![core::mem::take(&mut run)]);
                }
                candidates.extend(required_literals(part));
            }
            if !run.is_empty() {
                candidates.push(alloc::vec![run]);
            }
            best(candidates)
        }
        HirKind::Alternation(branches) => {
            let mut all = Vec::new();
            for b in branches {
                all.extend(required_literals(b)?);
                if all.len() > limits::MAX_ANCHORS_PER_RULE {
                    return None;
                }
            }
            Some(all)
        }
        _ => None,
    }
}

/// The one string `hir` matches, up to ASCII case (which the prefilter folds): a literal, or a
/// class of exactly one ASCII letter in both cases (as `(?i)k` is without Unicode; with Unicode it
/// also holds the Kelvin sign, and is not one string).
#[cfg(feature = "build")]
fn single_string(hir: &regex_syntax::hir::Hir) -> Option<Vec<u8>> {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Literal(lit) => Some(lit.0.to_vec()),
        HirKind::Class(Class::Unicode(c)) => match c.ranges() {
            [a, b] if a.start() == a.end() && b.start() == b.end() => {
                let (a, b) = (a.start(), b.start());
                (a.is_ascii_uppercase() && b == a.to_ascii_lowercase())
                    .then(|| alloc::vec![b as u8])
            }
            _ => None,
        },
        HirKind::Class(Class::Bytes(c)) => match c.ranges() {
            [a, b] if a.start() == a.end() && b.start() == b.end() => {
                let (a, b) = (a.start(), b.start());
                (a.is_ascii_uppercase() && b == a.to_ascii_lowercase()).then(|| alloc::vec![b])
            }
            _ => None,
        },
        _ => None,
    }
}

/// Without the `build` feature, regexes give no anchors (packs are built by the tool).
#[cfg(not(feature = "build"))]
pub fn regex_anchors(_pattern: &str, _case_insensitive: bool) -> Option<Vec<String>> {
    None
}
