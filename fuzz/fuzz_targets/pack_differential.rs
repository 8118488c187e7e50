//! Differential: always-valid packs built with the `PackBuilder` from arbitrary boolean
//! expressions over every predicate kind, evaluated by the VM on arbitrary events, against a
//! naive evaluator of the same expressions written here (straightforward semantics, no
//! prefilter, no indexes). Every rule's verdict must agree, with no runtime errors (an
//! evaluation cut short would also miss verdicts). The VM only runs the rules its literal
//! prefilter selects (anchors derived from the expression by the builder), so this also checks
//! that anchors never change a verdict.
//!
//! The naive semantics: string comparisons on bytes, ASCII case folded unless cased; a string
//! predicate on an absent field is false; `exists` is present, `empty` is present and ""; a glob
//! matches the whole value, `*` any run of characters, `?` one character, `\*` `\?` `\\` escape,
//! any other backslash is literal; a set holds when any item compares true; `fieldeq` needs both
//! fields present and equal; regexes (from a small grammar generated here) are searched
//! unanchored by a position-set matcher over the pattern's syntax tree. A text longer than its
//! field's longest (`FieldDef::max_len`) is seen cut to it at a char boundary, as events present
//! it.
#![no_main]

use std::collections::BTreeSet;

use bulwark_interpreter::build::{BuildError, Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::{
    verify, Action, Case, Event, EventType, FieldType, FieldValue, IntCmp, Level, StrOp,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};

/// Characters strings are made of: ASCII letters in both cases, glob metacharacters and escapes,
/// a rare byte (a backtick makes a one-byte anchor), and non-ASCII letters whose case does not
/// fold (the Kelvin sign, `é`/`É`, `ß`).
const ALPHABET: &[char] = &[
    'a', 'b', 'c', 'A', 'B', 'C', 'x', 'X', 'k', 'K', '\\', '*', '?', '.', ' ', '`', '0', '-', 'é',
    'É', '\u{212A}', 'ß',
];

fn char_of(u: &mut Unstructured) -> Result<char> {
    Ok(*u.choose(ALPHABET)?)
}

fn short_string(u: &mut Unstructured, max: usize) -> Result<String> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| char_of(u)).collect()
}

/// A regex over a small grammar, rendered to a pattern and matched naively.
#[derive(Debug, Clone)]
enum Re {
    Lit(u8),
    Dot,
    Class { items: Vec<u8>, negated: bool },
    Concat(Vec<Re>),
    Alt(Vec<Re>),
    Star(Box<Re>),
    Plus(Box<Re>),
    Opt(Box<Re>),
}

const RE_LITERALS: &[u8] = b"abcABxk0-.`\\";

/// `wide` bounds the atoms that match almost any byte (`.`, negated classes): in a long
/// concatenation each doubles the unanchored search's DFA, and compiling it takes seconds.
fn gen_re(u: &mut Unstructured, depth: u32, wide: &mut u32) -> Result<Re> {
    let leaf = depth == 0 || u.ratio(1, 2)?;
    if leaf {
        let kind = u.int_in_range(0..=5)?;
        if kind <= 1 && *wide == 0 {
            return Ok(Re::Lit(*u.choose(RE_LITERALS)?));
        }
        return Ok(match kind {
            0 => {
                *wide -= 1;
                Re::Dot
            }
            1 => {
                *wide -= 1;
                let n = u.int_in_range(1..=3)?;
                let items = (0..n)
                    .map(|_| u.choose(b"abcAk0").copied())
                    .collect::<Result<_>>()?;
                Re::Class {
                    items,
                    negated: u.arbitrary()?,
                }
            }
            _ => Re::Lit(*u.choose(RE_LITERALS)?),
        });
    }
    Ok(match u.int_in_range(0..=4)? {
        0 | 1 => {
            let n = u.int_in_range(2..=4)?;
            Re::Concat(
                (0..n)
                    .map(|_| gen_re(u, depth - 1, wide))
                    .collect::<Result<_>>()?,
            )
        }
        2 => {
            let n = u.int_in_range(2..=3)?;
            Re::Alt(
                (0..n)
                    .map(|_| gen_re(u, depth - 1, wide))
                    .collect::<Result<_>>()?,
            )
        }
        3 => match u.int_in_range(0..=2)? {
            0 => Re::Star(Box::new(gen_re(u, depth - 1, wide)?)),
            1 => Re::Plus(Box::new(gen_re(u, depth - 1, wide)?)),
            _ => Re::Opt(Box::new(gen_re(u, depth - 1, wide)?)),
        },
        _ => Re::Lit(*u.choose(RE_LITERALS)?),
    })
}

fn render(re: &Re, out: &mut String) {
    match re {
        Re::Lit(b) => {
            if b".\\".contains(b) {
                out.push('\\');
            }
            out.push(char::from(*b));
        }
        Re::Dot => out.push('.'),
        Re::Class { items, negated } => {
            out.push('[');
            if *negated {
                out.push('^');
            }
            for b in items {
                out.push(char::from(*b));
            }
            out.push(']');
        }
        Re::Concat(items) => {
            out.push_str("(?:");
            for i in items {
                render(i, out);
            }
            out.push(')');
        }
        Re::Alt(items) => {
            out.push_str("(?:");
            for (k, i) in items.iter().enumerate() {
                if k > 0 {
                    out.push('|');
                }
                render(i, out);
            }
            out.push(')');
        }
        Re::Star(r) | Re::Plus(r) | Re::Opt(r) => {
            out.push_str("(?:");
            render(r, out);
            out.push(')');
            out.push(match re {
                Re::Star(_) => '*',
                Re::Plus(_) => '+',
                _ => '?',
            });
        }
    }
}

/// The end positions reachable by matching `re` from any position in `from` (one flag per
/// position 0..=len). Bytes, `.` is any byte but `\n`, case folding is ASCII only.
fn re_step(re: &Re, text: &[u8], ci: bool, from: &[bool]) -> Vec<bool> {
    let n = text.len();
    let mut out = vec![false; n + 1];
    let byte_eq = |a: u8, b: u8| {
        if ci {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let each_byte = |pred: &dyn Fn(u8) -> bool, out: &mut Vec<bool>| {
        for p in 0..n {
            if from[p] && pred(text[p]) {
                out[p + 1] = true;
            }
        }
    };
    match re {
        Re::Lit(c) => each_byte(&|b| byte_eq(b, *c), &mut out),
        Re::Dot => each_byte(&|b| b != b'\n', &mut out),
        Re::Class { items, negated } => each_byte(
            &|b| items.iter().any(|c| byte_eq(b, *c)) != *negated,
            &mut out,
        ),
        Re::Concat(items) => {
            let mut cur = from.to_vec();
            for i in items {
                cur = re_step(i, text, ci, &cur);
            }
            out = cur;
        }
        Re::Alt(items) => {
            for i in items {
                for (o, r) in out.iter_mut().zip(re_step(i, text, ci, from)) {
                    *o |= r;
                }
            }
        }
        Re::Opt(r) => {
            out = re_step(r, text, ci, from);
            for (o, f) in out.iter_mut().zip(from) {
                *o |= *f;
            }
        }
        Re::Star(r) | Re::Plus(r) => {
            let mut reached = if matches!(re, Re::Star(_)) {
                from.to_vec()
            } else {
                vec![false; n + 1]
            };
            let mut frontier = from.to_vec();
            loop {
                let next = re_step(r, text, ci, &frontier);
                let mut changed = false;
                frontier = vec![false; n + 1];
                for p in 0..=n {
                    if next[p] && !reached[p] {
                        reached[p] = true;
                        frontier[p] = true;
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
            out = reached;
        }
    }
    out
}

fn naive_regex(re: &Re, ci: bool, value: &str) -> bool {
    let text = value.as_bytes();
    let from = vec![true; text.len() + 1];
    re_step(re, text, ci, &from).into_iter().any(|b| b)
}

fn fold(s: &str, case: Case) -> String {
    match case {
        Case::Insensitive => s.to_ascii_lowercase(),
        Case::Sensitive => s.to_owned(),
    }
}

fn naive_compare(value: &str, op: StrOp, needle: &str, case: Case) -> bool {
    let (v, n) = (fold(value, case), fold(needle, case));
    match op {
        StrOp::Eq => v == n,
        StrOp::StartsWith => v.starts_with(&n),
        StrOp::EndsWith => v.ends_with(&n),
        StrOp::Contains => v.contains(&n),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum GlobTok {
    Lit(char),
    One,
    Any,
}

fn naive_glob(pattern: &str, value: &str, case: Case) -> bool {
    let mut toks = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '*' => GlobTok::Any,
            '?' => GlobTok::One,
            '\\' => match chars.peek() {
                Some(&n) if n == '*' || n == '?' || n == '\\' => {
                    chars.next();
                    GlobTok::Lit(n)
                }
                _ => GlobTok::Lit('\\'),
            },
            c => GlobTok::Lit(c),
        });
    }
    let v: Vec<char> = value.chars().collect();
    let eq = |a: char, b: char| match case {
        Case::Insensitive => a.eq_ignore_ascii_case(&b),
        Case::Sensitive => a == b,
    };
    // Backtracking, memoized on (token, character) so it stays polynomial.
    fn go(
        t: usize,
        i: usize,
        toks: &[GlobTok],
        v: &[char],
        eq: &dyn Fn(char, char) -> bool,
        memo: &mut Vec<Option<bool>>,
    ) -> bool {
        let key = t * (v.len() + 1) + i;
        if let Some(r) = memo[key] {
            return r;
        }
        let r = match toks.get(t) {
            None => i == v.len(),
            Some(GlobTok::Any) => (i..=v.len()).any(|j| go(t + 1, j, toks, v, eq, memo)),
            Some(GlobTok::One) => i < v.len() && go(t + 1, i + 1, toks, v, eq, memo),
            Some(GlobTok::Lit(c)) => {
                i < v.len() && eq(*c, v[i]) && go(t + 1, i + 1, toks, v, eq, memo)
            }
        };
        memo[key] = Some(r);
        r
    }
    let mut memo = vec![None; (toks.len() + 1) * (v.len() + 1)];
    go(0, 0, &toks, &v, &eq, &mut memo)
}

/// The expression as generated, with the regexes' syntax trees by pattern.
struct Gen {
    event_type: EventType,
    regexes: Vec<(String, bool, Re)>,
    literals: Vec<String>,
}

fn fields_of(t: EventType, ty: FieldType) -> Vec<u8> {
    t.fields()
        .iter()
        .filter(|f| f.ty == ty)
        .map(|f| f.index)
        .collect()
}

fn case_of(u: &mut Unstructured) -> Result<Case> {
    Ok(if u.ratio(1, 3)? {
        Case::Sensitive
    } else {
        Case::Insensitive
    })
}

fn str_op(u: &mut Unstructured) -> Result<StrOp> {
    Ok(*u.choose(&[
        StrOp::Eq,
        StrOp::StartsWith,
        StrOp::EndsWith,
        StrOp::Contains,
    ])?)
}

impl Gen {
    /// A constant: often one of the literals already used (so rules share them and events can
    /// hit them), else a fresh short string.
    fn literal(&mut self, u: &mut Unstructured) -> Result<String> {
        if !self.literals.is_empty() && u.ratio(1, 3)? {
            return Ok(u.choose(&self.literals)?.clone());
        }
        // Sometimes long enough for the prefilter's strided index (literals of 16 bytes and more).
        let max = if u.ratio(1, 4)? { 24 } else { 6 };
        let s = short_string(u, max)?;
        self.literals.push(s.clone());
        Ok(s)
    }

    fn pred(&mut self, u: &mut Unstructured) -> Result<Pred> {
        let t = self.event_type;
        let strs = fields_of(t, FieldType::Str);
        let ints = fields_of(t, FieldType::Int);
        let field = u.choose(&strs)?.to_owned();
        Ok(match u.int_in_range(0..=11)? {
            0 => Pred::Exists {
                field: if u.arbitrary()? && !ints.is_empty() {
                    *u.choose(&ints)?
                } else {
                    field
                },
            },
            1 => Pred::Empty { field },
            2..=4 => Pred::Str {
                field,
                op: str_op(u)?,
                case: case_of(u)?,
                value: self.literal(u)?,
            },
            5 | 6 => {
                // Globs: literal runs from the pool, wildcards and escapes between them.
                let mut pattern = String::new();
                for _ in 0..u.int_in_range(0..=4)? {
                    match u.int_in_range(0..=5)? {
                        0 => pattern.push('*'),
                        1 => pattern.push('?'),
                        2 => pattern.push('\\'),
                        3 => pattern.push_str(&self.literal(u)?),
                        _ => pattern.push(char_of(u)?),
                    }
                }
                self.literals.push(pattern.replace(['*', '?', '\\'], ""));
                Pred::Glob {
                    field,
                    case: case_of(u)?,
                    pattern,
                }
            }
            7 | 8 => {
                // Sometimes large enough for the set index (4 items and more).
                let n = u.int_in_range(0..=7)?;
                let values = (0..n).map(|_| self.literal(u)).collect::<Result<_>>()?;
                Pred::Set {
                    field,
                    op: str_op(u)?,
                    case: case_of(u)?,
                    values,
                }
            }
            9 => {
                let re = gen_re(u, 3, &mut 3)?;
                let mut pattern = String::new();
                render(&re, &mut pattern);
                let ci: bool = u.arbitrary()?;
                self.regexes.push((pattern.clone(), ci, re));
                Pred::Regex {
                    field,
                    pattern,
                    case_insensitive: ci,
                }
            }
            10 => {
                if !ints.is_empty() && u.arbitrary()? {
                    Pred::FieldEq {
                        field: *u.choose(&ints)?,
                        other: *u.choose(&ints)?,
                        case: Case::Insensitive,
                    }
                } else {
                    Pred::FieldEq {
                        field,
                        other: *u.choose(&strs)?,
                        case: case_of(u)?,
                    }
                }
            }
            _ => {
                if ints.is_empty() {
                    Pred::Exists { field }
                } else {
                    Pred::Int {
                        field: *u.choose(&ints)?,
                        cmp: *u.choose(&[
                            IntCmp::Eq,
                            IntCmp::Lt,
                            IntCmp::Le,
                            IntCmp::Gt,
                            IntCmp::Ge,
                        ])?,
                        value: u.int_in_range(0..=6)?,
                    }
                }
            }
        })
    }

    fn expr(&mut self, u: &mut Unstructured, depth: u32) -> Result<Expr> {
        if depth == 0 || u.ratio(2, 5)? {
            return Ok(Expr::Pred(self.pred(u)?));
        }
        Ok(match u.int_in_range(0..=6)? {
            0 | 1 => Expr::And(
                (0..u.int_in_range(0..=4)?)
                    .map(|_| self.expr(u, depth - 1))
                    .collect::<Result<_>>()?,
            ),
            2 | 3 => Expr::Or(
                (0..u.int_in_range(0..=4)?)
                    .map(|_| self.expr(u, depth - 1))
                    .collect::<Result<_>>()?,
            ),
            4 => Expr::Not(Box::new(self.expr(u, depth - 1)?)),
            5 => Expr::Const(u.arbitrary()?),
            _ => Expr::Pred(self.pred(u)?),
        })
    }
}

fn naive(e: &Expr, ev: &[FieldValue<'_>], regexes: &[(String, bool, Re)]) -> bool {
    let get = |f: u8| {
        ev.get(usize::from(f))
            .copied()
            .unwrap_or(FieldValue::Absent)
    };
    let text = |f: u8| match get(f) {
        FieldValue::Str(s) => Some(s),
        _ => None,
    };
    match e {
        Expr::Const(b) => *b,
        Expr::Not(x) => !naive(x, ev, regexes),
        Expr::And(xs) => xs.iter().all(|x| naive(x, ev, regexes)),
        Expr::Or(xs) => xs.iter().any(|x| naive(x, ev, regexes)),
        Expr::Pred(p) => match p {
            Pred::Exists { field } => get(*field) != FieldValue::Absent,
            Pred::Empty { field } => text(*field) == Some(""),
            Pred::Str {
                field,
                op,
                case,
                value,
            } => text(*field).is_some_and(|v| naive_compare(v, *op, value, *case)),
            Pred::Glob {
                field,
                case,
                pattern,
            } => text(*field).is_some_and(|v| naive_glob(pattern, v, *case)),
            Pred::Set {
                field,
                op,
                case,
                values,
            } => {
                text(*field).is_some_and(|v| values.iter().any(|n| naive_compare(v, *op, n, *case)))
            }
            Pred::Regex {
                field,
                pattern,
                case_insensitive,
            } => {
                let (_, _, re) = regexes
                    .iter()
                    .find(|(p, ci, _)| p == pattern && ci == case_insensitive)
                    .expect("every regex was generated here");
                text(*field).is_some_and(|v| naive_regex(re, *case_insensitive, v))
            }
            Pred::FieldEq { field, other, case } => match (get(*field), get(*other)) {
                (FieldValue::Str(a), FieldValue::Str(b)) => naive_compare(a, StrOp::Eq, b, *case),
                (FieldValue::Int(a), FieldValue::Int(b)) => a == b,
                _ => false,
            },
            Pred::Int { field, cmp, value } => match get(*field) {
                FieldValue::Int(v) => match cmp {
                    IntCmp::Eq => v == *value,
                    IntCmp::Lt => v < *value,
                    IntCmp::Le => v <= *value,
                    IntCmp::Gt => v > *value,
                    IntCmp::Ge => v >= *value,
                },
                _ => false,
            },
        },
    }
}

/// An event value: absent, a fresh string, or literals of the pack (case changed at random)
/// joined with random characters, so predicates and anchors are hit, missed and half-hit.
fn value(u: &mut Unstructured, literals: &[String]) -> Result<Option<String>> {
    if u.ratio(1, 5)? {
        return Ok(None);
    }
    let mut s = String::new();
    // Often exactly one literal, so `eq` and whole-value globs are hit too.
    let pieces = if u.ratio(1, 3)? {
        1
    } else {
        u.int_in_range(0..=4)?
    };
    for _ in 0..pieces {
        if !literals.is_empty() && u.arbitrary()? {
            let lit = u.choose(literals)?;
            for c in lit.chars() {
                s.push(if u.ratio(1, 4)? {
                    if c.is_ascii_lowercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                } else {
                    c
                });
            }
        } else {
            s.push_str(&short_string(u, 4)?);
        }
    }
    Ok(Some(s))
}

/// `s` cut to at most `max` bytes, at the last char boundary there.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn run(u: &mut Unstructured) -> Result<()> {
    let mut builder = PackBuilder::new();
    let mut rules: Vec<(EventType, Expr)> = Vec::new();
    let mut regexes = Vec::new();
    let mut literals = Vec::new();
    for r in 0..u.int_in_range(1..=8)? {
        let event_type = *u.choose(EventType::ALL)?;
        let mut g = Gen {
            event_type,
            regexes: Vec::new(),
            literals: std::mem::take(&mut literals),
        };
        let expr = g.expr(u, 4)?;
        literals = g.literals;
        let spec = RuleSpec {
            event_type,
            id: format!("rule-{r}"),
            title: format!("rule {r}"),
            author: "pack_differential".into(),
            level: Level::Medium,
            action: Action::Alert,
            tags: vec![],
            expr: expr.clone(),
        };
        match builder.rule(spec) {
            Ok(_) => {}
            // A generated regex whose DFA is over the size limit: not this target's concern.
            Err(BuildError::Regex { .. }) => return Ok(()),
            Err(e) => panic!("the builder refused a well-typed rule: {e}\n{expr:?}"),
        }
        regexes.extend(g.regexes);
        rules.push((event_type, expr));
    }
    let bytes = builder.finish();
    let pack = match verify(&bytes) {
        Ok(p) => p,
        Err(e) => panic!("the verifier refused a built pack: {e}\nrules: {rules:#?}"),
    };
    literals.sort();
    literals.dedup();
    for _ in 0..u.int_in_range(1..=6)? {
        let t = *u.choose(EventType::ALL)?;
        let owned: Vec<Option<String>> = t
            .fields()
            .iter()
            .map(|f| match f.ty {
                FieldType::Str => value(u, &literals),
                FieldType::Int => Ok(None),
            })
            .collect::<Result<_>>()?;
        let mut values = Vec::new();
        for (f, s) in t.fields().iter().zip(&owned) {
            values.push(match (f.ty, s) {
                (FieldType::Str, Some(s)) => FieldValue::Str(s),
                (FieldType::Int, _) if u.ratio(4, 5)? => FieldValue::Int(u.int_in_range(0..=7)?),
                _ => FieldValue::Absent,
            });
        }
        let event = Event::new(t, &values).expect("values follow the schema");
        // What the rules see: a text longer than its field's longest is cut to it, at a char
        // boundary (as the sensor's event builders cut it). Cut here on its own terms, so the
        // naive evaluator's values do not come from the code under test.
        let seen: Vec<FieldValue> = t
            .fields()
            .iter()
            .zip(&values)
            .map(|(f, v)| match *v {
                FieldValue::Str(s) => FieldValue::Str(cut(s, f.max_len as usize)),
                other => other,
            })
            .collect();
        let mut matched = BTreeSet::new();
        let stats = pack.evaluate(&event, &mut |m| {
            matched.insert(m.index as usize);
        });
        assert_eq!(stats.errors, 0, "runtime errors on a built pack");
        for (i, (rt, expr)) in rules.iter().enumerate() {
            let want = *rt == t && naive(expr, &seen, &regexes);
            let got = matched.contains(&i);
            assert_eq!(
                got, want,
                "rule {i} verdict: VM {got}, naive {want}\nexpr: {expr:#?}\nevent as the rules see it: {seen:?}\nanchors: {:?}",
                bulwark_interpreter::build::anchors_of(expr)
            );
        }
    }
    Ok(())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});
