//! The cost model holds: for arbitrary verified packs and hostile events up to the maximum field
//! sizes, the work the VM measures never exceeds the bound the verifier proved for the event's
//! type, the runtime budget never stops an evaluation, and nothing faults.
//!
//! Packs are built with the `PackBuilder` from arbitrary expressions over every predicate kind
//! (string comparisons cased and uncased, globs with `*` and `?`, sets small and indexed, regexes,
//! field equality, integers, `exists`, `empty`), from a pool of hostile literals: 1- and 2-byte
//! ones (short prefilter windows), long ones (strided prefilters), single bytes repeated, short
//! periods repeated, prefixes, extensions and case variants of each other (many literals keyed by
//! one window, folded duplicates sharing an entry), and long needles. Rules are often copies of
//! earlier ones (many rules sharing anchors), sets often families of variants. Then the decoded
//! pack is sometimes mutated in structure: key windows moved, anchors added by hand, rules
//! duplicated, set items added, before it is encoded (length and checksum right) and verified.
//!
//! Events of all three types have values made by repeating the pack's own literals (their case
//! flipped, prefixes of them, several joined) or one byte, to lengths at, just under and just past
//! each field's `max_len` (the VM reads them cut to it), within a total per input so that many
//! inputs run per second.
//!
//! Checked for every evaluation: `over_budget == None`, `errors == 0`, `work <= cost_bound(type)`.
//! Also checked per primitive, for every string comparison and wildcard pattern of the pack's rules
//! against the event's values: the metered work is within `compare_bound`/`glob_bound` at the
//! field's `max_len`, so a primitive whose metering exceeds its bound is named even when slack
//! elsewhere in the pack's bound hides it.
#![no_main]

use bulwark_interpreter::build::{BuildError, Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::format::RawPack;
use bulwark_interpreter::matching::{
    compare_bound, compare_metered, glob_bound, glob_match_metered, parse_glob,
};
use bulwark_interpreter::{
    verify, Action, Case, Event, EventType, FieldType, FieldValue, IntCmp, Level, StrOp,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};

/// Characters literals are made of: ASCII letters in both cases (and ones whose windows are
/// common in Windows events), glob metacharacters and escapes, rare bytes (one-byte anchors), and
/// multi-byte characters (cut boundaries, non-folding case).
const ALPHABET: &[char] = &[
    'a', 'b', 'c', 'A', 'B', 'C', 'x', 'X', 'k', 'K', 'e', 's', '\\', '*', '?', '.', ' ', '`', '~',
    '0', '-', 'é', 'É', '\u{212A}', 'ß', '€',
];

/// Total bytes of event values per input, so an input runs in milliseconds.
const EVENT_BYTES_PER_INPUT: usize = 80 * 1024;

fn char_of(u: &mut Unstructured) -> Result<char> {
    Ok(*u.choose(ALPHABET)?)
}

fn random_string(u: &mut Unstructured, min: usize, max: usize) -> Result<String> {
    let n = u.int_in_range(min..=max)?;
    (0..n).map(|_| char_of(u)).collect()
}

fn flip_case(s: &str, u: &mut Unstructured) -> Result<String> {
    let all = u.ratio(1, 2)?;
    s.chars()
        .map(|c| {
            Ok(if all || u.ratio(1, 2)? {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            } else {
                c
            })
        })
        .collect()
}

/// `s` repeated (or cut) to about `n` bytes, at a char boundary.
fn repeat_to(s: &str, n: usize) -> String {
    if s.is_empty() {
        return String::new();
    }
    let mut out = String::with_capacity(n + 4);
    while out.len() < n {
        out.push_str(s);
    }
    let mut end = n.min(out.len());
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out
}

fn prefix_of(s: &str, u: &mut Unstructured) -> Result<String> {
    let cuts: Vec<usize> = (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
    Ok(s[..*u.choose(&cuts)?].to_owned())
}

fn suffix_of(s: &str, u: &mut Unstructured) -> Result<String> {
    let cuts: Vec<usize> = (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
    Ok(s[*u.choose(&cuts)?..].to_owned())
}

/// The literals a pack is made of, and that events are made of.
struct Pool {
    lits: Vec<String>,
}

impl Pool {
    /// A hostile literal: new, or a variant of one already used.
    fn fresh(&mut self, u: &mut Unstructured) -> Result<String> {
        let s = match u.int_in_range(0..=13)? {
            0..=2 => random_string(u, 1, 6)?,
            // Short windows: one or two characters (a rare byte is a good one-byte anchor).
            3 => random_string(u, 1, 2)?,
            // Strided prefilter material: 16 bytes and more.
            4 => random_string(u, 16, 40)?,
            // One character repeated: every window of a text of it is the literal's key.
            5 => {
                let c = char_of(u)?.to_string();
                let n = if u.ratio(1, 6)? {
                    u.int_in_range(64..=1024)?
                } else {
                    u.int_in_range(1..=64)?
                };
                repeat_to(&c, n)
            }
            // A short period repeated.
            6 => {
                let unit = random_string(u, 1, 4)?;
                let n = u.int_in_range(2..=80)?;
                repeat_to(&unit, n)
            }
            // Long needles.
            7 if u.ratio(1, 3)? => random_string(u, 64, 600)?,
            _ if self.lits.is_empty() => random_string(u, 1, 8)?,
            // Variants of a literal already used: prefixes, suffixes, extensions, case.
            8 => {
                let base = u.choose(&self.lits)?.clone();
                prefix_of(&base, u)?
            }
            9 => {
                let base = u.choose(&self.lits)?.clone();
                suffix_of(&base, u)?
            }
            10 => {
                let base = u.choose(&self.lits)?.clone();
                let mut s = base;
                for _ in 0..u.int_in_range(1..=3)? {
                    s.push(char_of(u)?);
                }
                s
            }
            11 => {
                let base = u.choose(&self.lits)?.clone();
                flip_case(&base, u)?
            }
            _ => return Ok(u.choose(&self.lits)?.clone()),
        };
        if s.is_empty() {
            return Ok(s);
        }
        self.lits.push(s.clone());
        Ok(s)
    }

    /// A literal for a predicate: often one already used (rules share anchors).
    fn literal(&mut self, u: &mut Unstructured) -> Result<String> {
        if !self.lits.is_empty() && u.ratio(1, 3)? {
            return Ok(u.choose(&self.lits)?.clone());
        }
        self.fresh(u)
    }

    /// Set items: arbitrary literals, or a family of variants of one (case variants, prefixes,
    /// extensions), which key many literals by one window.
    fn set_items(&mut self, u: &mut Unstructured) -> Result<Vec<String>> {
        let n = match u.int_in_range(0..=9)? {
            0..=3 => u.int_in_range(0..=3)?,
            4..=7 => u.int_in_range(4..=24)?,
            _ => u.int_in_range(24..=200)?,
        };
        let mut items = Vec::with_capacity(n);
        if u.ratio(1, 2)? {
            let base = self.literal(u)?;
            let base = if base.is_empty() {
                "a".to_owned()
            } else {
                base
            };
            for i in 0..n {
                let item = match u.int_in_range(0..=5)? {
                    0 => flip_case(&base, u)?,
                    1 => prefix_of(&base, u)?,
                    2 => suffix_of(&base, u)?,
                    3 => format!("{base}{i}"),
                    4 => repeat_to(&base, base.len() * u.int_in_range(1..=4)?),
                    _ => {
                        let mut s = base.clone();
                        s.push(char_of(u)?);
                        s
                    }
                };
                items.push(item);
            }
        } else {
            for _ in 0..n {
                items.push(self.literal(u)?);
            }
        }
        self.lits
            .extend(items.iter().filter(|s| !s.is_empty()).cloned());
        Ok(items)
    }
}

/// A regex over a small grammar (as `pack_differential`), or an alternation of escaped literals.
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

fn gen_re(u: &mut Unstructured, depth: u32, wide: &mut u32) -> Result<Re> {
    if depth == 0 || u.ratio(1, 2)? {
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
    let many = |u: &mut Unstructured, lo, hi, wide: &mut u32| -> Result<Vec<Re>> {
        let n = u.int_in_range(lo..=hi)?;
        (0..n).map(|_| gen_re(u, depth - 1, wide)).collect()
    };
    Ok(match u.int_in_range(0..=4)? {
        0 | 1 => Re::Concat(many(u, 2, 4, wide)?),
        2 => Re::Alt(many(u, 2, 3, wide)?),
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
            out.extend(items.iter().map(|b| char::from(*b)));
            out.push(']');
        }
        Re::Concat(items) => {
            out.push_str("(?:");
            items.iter().for_each(|i| render(i, out));
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

fn escape_re(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
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

struct Gen<'p> {
    t: EventType,
    pool: &'p mut Pool,
    regexes: &'p mut u32,
}

impl Gen<'_> {
    fn glob(&mut self, u: &mut Unstructured) -> Result<String> {
        let mut pattern = String::new();
        if u.ratio(1, 4)? {
            // `*lit*lit*...*` with one literal repeated: many middle segments over one text.
            let lit = self.pool.literal(u)?;
            for _ in 0..u.int_in_range(1..=6)? {
                pattern.push('*');
                pattern.push_str(&lit);
            }
            if u.arbitrary()? {
                pattern.push('?');
            }
            pattern.push('*');
            return Ok(pattern);
        }
        for _ in 0..u.int_in_range(0..=6)? {
            match u.int_in_range(0..=6)? {
                0 | 1 => pattern.push('*'),
                2 => pattern.push('?'),
                3 => pattern.push('\\'),
                4 => {
                    // A segment with `?` in it: searched at every position.
                    let lit = self.pool.literal(u)?;
                    let mut chars: Vec<char> = lit.chars().collect();
                    if !chars.is_empty() {
                        let at = u.choose_index(chars.len())?;
                        chars[at] = '?';
                    }
                    pattern.extend(chars);
                }
                _ => pattern.push_str(&self.pool.literal(u)?),
            }
        }
        Ok(pattern)
    }

    fn pred(&mut self, u: &mut Unstructured) -> Result<Pred> {
        let t = self.t;
        let strs = fields_of(t, FieldType::Str);
        let ints = fields_of(t, FieldType::Int);
        let field = *u.choose(&strs)?;
        Ok(match u.int_in_range(0..=13)? {
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
                value: self.pool.literal(u)?,
            },
            5 | 6 => Pred::Glob {
                field,
                case: case_of(u)?,
                pattern: self.glob(u)?,
            },
            7..=9 => Pred::Set {
                field,
                op: str_op(u)?,
                case: case_of(u)?,
                values: self.pool.set_items(u)?,
            },
            10 if *self.regexes > 0 => {
                *self.regexes -= 1;
                let pattern = if u.arbitrary()? {
                    let re = gen_re(u, 2, &mut 2)?;
                    let mut p = String::new();
                    render(&re, &mut p);
                    p
                } else {
                    // Literals joined: the builder guards the regex with them (a prefilter).
                    let n = u.int_in_range(1..=3)?;
                    let lits = (0..n)
                        .map(|_| {
                            let l = self.pool.literal(u)?;
                            let short: String = l.chars().take(12).collect();
                            Ok(escape_re(&short))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    if u.arbitrary()? {
                        lits.join(".*")
                    } else {
                        format!("(?:{})", lits.join("|"))
                    }
                };
                Pred::Regex {
                    field,
                    pattern,
                    case_insensitive: u.arbitrary()?,
                }
            }
            11 => {
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
            12 if !ints.is_empty() => Pred::Int {
                field: *u.choose(&ints)?,
                cmp: *u.choose(&[IntCmp::Eq, IntCmp::Lt, IntCmp::Le, IntCmp::Gt, IntCmp::Ge])?,
                value: u.int_in_range(0..=6)?,
            },
            _ => Pred::Str {
                field,
                op: StrOp::Contains,
                case: case_of(u)?,
                value: self.pool.literal(u)?,
            },
        })
    }

    fn expr(&mut self, u: &mut Unstructured, depth: u32) -> Result<Expr> {
        if depth == 0 || u.ratio(2, 5)? {
            return Ok(Expr::Pred(self.pred(u)?));
        }
        let list = |u: &mut Unstructured, g: &mut Self| -> Result<Vec<Expr>> {
            let n = u.int_in_range(0..=5)?;
            (0..n).map(|_| g.expr(u, depth - 1)).collect()
        };
        Ok(match u.int_in_range(0..=6)? {
            0 | 1 => Expr::And(list(u, self)?),
            2 | 3 => Expr::Or(list(u, self)?),
            4 => Expr::Not(Box::new(self.expr(u, depth - 1)?)),
            5 => Expr::Const(u.arbitrary()?),
            _ => Expr::Pred(self.pred(u)?),
        })
    }
}

/// The same expression over another field of the same type, or another operation: rules whose
/// anchors are the same literals.
fn variant(e: &Expr, u: &mut Unstructured) -> Result<Expr> {
    Ok(match e {
        Expr::Pred(Pred::Str {
            field, case, value, ..
        }) => Expr::Pred(Pred::Str {
            field: *field,
            op: str_op(u)?,
            case: if u.arbitrary()? { *case } else { case_of(u)? },
            value: value.clone(),
        }),
        Expr::Pred(Pred::Set {
            field,
            case,
            values,
            ..
        }) => Expr::Pred(Pred::Set {
            field: *field,
            op: str_op(u)?,
            case: if u.arbitrary()? { *case } else { case_of(u)? },
            values: values.clone(),
        }),
        Expr::And(xs) => Expr::And(xs.iter().map(|x| variant(x, u)).collect::<Result<_>>()?),
        Expr::Or(xs) => Expr::Or(xs.iter().map(|x| variant(x, u)).collect::<Result<_>>()?),
        other => other.clone(),
    })
}

/// Structure mutations of the built pack that keep it often valid: key windows moved (so many
/// literals share one key), anchors added by hand (a superset of sound anchors is still sound),
/// rules duplicated (many rules per anchor), set items added.
fn mutate(u: &mut Unstructured, raw: &mut RawPack) -> Result<()> {
    let n_rules = raw.rules.len();
    let n_strings = raw.strings.len();
    if n_rules == 0 || n_strings == 0 {
        return Ok(());
    }
    match u.int_in_range(0..=5)? {
        0 | 1 => {
            // Key windows: every string's at its start, at its end, or one string's anywhere.
            let mode = u.int_in_range(0..=2)?;
            let one = u.choose_index(n_strings)?;
            let at = u.arbitrary::<u16>()?;
            for i in 0..n_strings {
                let len = raw.strings.get(i).map_or(0, <[u8]>::len);
                let last = len.saturating_sub(len.min(3));
                let start = match mode {
                    0 => 0,
                    1 => last,
                    _ if i == one => usize::from(at) % (last + 1),
                    _ => continue,
                };
                raw.strings
                    .set_key_window(i, u16::try_from(start).unwrap_or(0));
            }
        }
        2 => {
            // Anchors by hand: strings of the pack on fields of the rule's type.
            let r = u.choose_index(n_rules)?;
            let Some(t) = EventType::from_id(raw.rules[r].event_type) else {
                return Ok(());
            };
            let strs = fields_of(t, FieldType::Str);
            for _ in 0..u.int_in_range(1..=64)? {
                let s = u32::try_from(u.choose_index(n_strings)?).unwrap_or(0);
                let f = *u.choose(&strs)?;
                raw.rules[r].anchors.push((f, s));
            }
        }
        3 | 4 => {
            // A rule copied many times: its anchors report as many payloads.
            let r = u.choose_index(n_rules)?;
            let copies = u.int_in_range(1..=128)?;
            for _ in 0..copies {
                let rule = raw.rules[r].clone();
                raw.rules.push(rule);
            }
        }
        _ => {
            if raw.sets.is_empty() {
                return Ok(());
            }
            let i = u.choose_index(raw.sets.len())?;
            for _ in 0..u.int_in_range(1..=16)? {
                let s = u32::try_from(u.choose_index(n_strings)?).unwrap_or(0);
                if !raw.sets[i].contains(&s) {
                    raw.sets[i].push(s);
                }
            }
        }
    }
    Ok(())
}

/// A hostile value for a field of at most `max` bytes: a literal of the pack (its case flipped,
/// a prefix of it, several joined) or one character, repeated to `max`, a little under, a little
/// over, or anywhere below. `None` for absent.
fn value(
    u: &mut Unstructured,
    lits: &[String],
    max: usize,
    budget: &mut usize,
) -> Result<Option<String>> {
    let kind = u.int_in_range(0..=9)?;
    if kind == 0 {
        return Ok(None);
    }
    let mut unit = String::new();
    for _ in 0..u.int_in_range(1..=3)? {
        if !lits.is_empty() && u.ratio(4, 5)? {
            let lit = u.choose(lits)?;
            match u.int_in_range(0..=4)? {
                0 => unit.push_str(&flip_case(lit, u)?),
                1 => unit.push_str(&prefix_of(lit, u)?),
                2 => unit.push_str(&suffix_of(lit, u)?),
                _ => unit.push_str(lit),
            }
        } else {
            unit.push(char_of(u)?);
        }
    }
    if unit.is_empty() {
        unit.push(char_of(u)?);
    }
    let want = match u.int_in_range(0..=7)? {
        // Short: one unit, as `eq` and whole-value globs want.
        0 | 1 => unit.len(),
        2 | 3 => max.saturating_add(u.int_in_range(0..=8)?),
        4 => max.saturating_sub(u.int_in_range(0..=4)?),
        5 => max.saturating_sub(unit.len()),
        _ => u.int_in_range(0..=max)?,
    };
    let n = want.min(*budget);
    *budget -= n;
    let mut s = repeat_to(&unit, n);
    // Sometimes a different tail (a half-hit at the end) or a multi-byte character at the cut.
    if u.ratio(1, 4)? {
        let tail = if lits.is_empty() {
            char_of(u)?.to_string()
        } else {
            u.choose(lits)?.clone()
        };
        let keep = s.len().saturating_sub(tail.len());
        let mut end = keep;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(&tail);
    }
    Ok(Some(s))
}

/// The string comparisons and wildcard patterns of an expression, to check each primitive's
/// metering against its own bound.
fn primitives<'e>(e: &'e Expr, out: &mut Vec<&'e Pred>) {
    match e {
        Expr::Pred(
            p @ (Pred::Str { .. } | Pred::Glob { .. } | Pred::FieldEq { .. } | Pred::Set { .. }),
        ) => out.push(p),
        Expr::Pred(_) | Expr::Const(_) => {}
        Expr::Not(x) => primitives(x, out),
        Expr::And(xs) | Expr::Or(xs) => xs.iter().for_each(|x| primitives(x, out)),
    }
}

fn max_len(t: EventType, field: u8) -> usize {
    t.field(field).map_or(0, |f| f.max_len as usize)
}

fn check_primitives(t: EventType, event: &Event<'_, '_>, preds: &[&Pred]) {
    let text = |f: u8| match event.get(f) {
        FieldValue::Str(s) => Some(s),
        _ => None,
    };
    for p in preds {
        match p {
            Pred::Str {
                field,
                op,
                case,
                value,
            } => {
                let Some(v) = text(*field) else { continue };
                let mut w = 0;
                compare_metered(v, *op, value, *case, &mut w);
                let bound = compare_bound(*op, max_len(t, *field), value.len());
                guide(w, bound);
                assert!(
                    w <= bound,
                    "compare {op:?} {case:?}: work {w} > bound {bound} (value {} bytes, needle {} bytes, field {field} of {})",
                    v.len(),
                    value.len(),
                    t.name()
                );
            }
            Pred::Set {
                field,
                op,
                case,
                values,
            } => {
                // Each item as the unindexed set test compares it.
                let Some(v) = text(*field) else { continue };
                for n in values {
                    let mut w = 0;
                    compare_metered(v, *op, n, *case, &mut w);
                    let bound = compare_bound(*op, max_len(t, *field), n.len());
                    guide(w, bound);
                    assert!(
                        w <= bound,
                        "set item compare {op:?} {case:?}: work {w} > bound {bound} (value {} bytes, item {} bytes, field {field} of {})",
                        v.len(),
                        n.len(),
                        t.name()
                    );
                }
            }
            Pred::FieldEq { field, other, case } => {
                let (Some(a), Some(b)) = (text(*field), text(*other)) else {
                    continue;
                };
                let mut w = 0;
                compare_metered(a, StrOp::Eq, b, *case, &mut w);
                let bound = compare_bound(StrOp::Eq, max_len(t, *field), max_len(t, *other));
                assert!(w <= bound, "fieldeq: work {w} > bound {bound}");
            }
            Pred::Glob {
                field,
                case,
                pattern,
            } => {
                let (Some(v), Some(toks)) = (text(*field), parse_glob(pattern.as_bytes())) else {
                    continue;
                };
                let mut w = 0;
                glob_match_metered(v, &toks, *case, &mut w);
                let bound = glob_bound(&toks, max_len(t, *field));
                guide(w, bound);
                assert!(
                    w <= bound,
                    "glob {pattern:?} {case:?}: work {w} > bound {bound} (value {} bytes, field {field} of {})",
                    v.len(),
                    t.name()
                );
            }
            _ => {}
        }
    }
}

/// One branch per step of `$v` reached, so the fuzzer keeps the inputs that come closer to a
/// bound than any before (coverage guidance toward a counter-example).
macro_rules! ladder {
    ($v:expr; $($k:literal)*) => {{
        let v = $v;
        $(if v >= $k {
            std::hint::black_box($k);
        })*
    }};
}

/// How close `work` came to `bound`: log2(bound / work) turned around (higher is closer, 40 at
/// the bound), then in 32nds of the bound.
fn closeness(work: u64, bound: u64) -> (u32, u64) {
    let ratio = bound / work.max(1);
    let log = 40u32.saturating_sub(63u32.saturating_sub(ratio.max(1).leading_zeros()));
    (log, work.saturating_mul(32) / bound.max(1))
}

fn guide(work: u64, bound: u64) {
    let (log, linear) = closeness(work, bound);
    ladder!(log; 20 22 24 26 28 30 31 32 33 34 35 36 37 38 39 40);
    ladder!(linear; 1 2 3 4 6 8 10 12 14 16 18 20 22 24 26 28 29 30 31 32);
}

fn run(u: &mut Unstructured) -> Result<()> {
    let mut builder = PackBuilder::new();
    let mut pool = Pool { lits: Vec::new() };
    // Compiling a regex takes milliseconds (determinization and minimization): at most one a pack.
    let mut regexes = 1u32;
    let mut rules: Vec<(EventType, Expr)> = Vec::new();
    for r in 0..u.int_in_range(1..=12)? {
        let (event_type, expr) = if !rules.is_empty() && u.ratio(1, 3)? {
            // Rules sharing anchors: a variant of an earlier rule.
            let (t, e) = u.choose(&rules)?.clone();
            (t, variant(&e, u)?)
        } else {
            let t = *u.choose(EventType::ALL)?;
            let mut g = Gen {
                t,
                pool: &mut pool,
                regexes: &mut regexes,
            };
            (t, g.expr(u, 4)?)
        };
        let spec = RuleSpec {
            event_type,
            id: format!("rule-{r}"),
            title: format!("rule {r}"),
            author: "pack_cost".into(),
            level: Level::Medium,
            action: Action::Alert,
            tags: vec![],
            expr: expr.clone(),
        };
        match builder.rule(spec) {
            Ok(_) => {}
            // A regex the builder cannot compile (over the DFA size limit): not this target's
            // concern.
            Err(BuildError::Regex { .. }) => return Ok(()),
            Err(e) => panic!("the builder refused a well-typed rule: {e}\n{expr:?}"),
        }
        rules.push((event_type, expr));
    }
    let mut bytes = if u.ratio(1, 4)? {
        builder.finish_as_is()
    } else {
        builder.finish()
    };
    let mutations = if u.ratio(1, 3)? {
        u.int_in_range(1..=4)?
    } else {
        0
    };
    let mut strings: Vec<String> = Vec::new();
    if mutations > 0 {
        let mut raw = RawPack::decode(&bytes).expect("a built pack decodes");
        for _ in 0..mutations {
            mutate(u, &mut raw)?;
        }
        strings.extend(
            raw.strings
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned()),
        );
        bytes = raw.encode();
    }
    // Over the budget or (mutated) unsound: refused, and nothing to check.
    let pack = match verify(&bytes) {
        Ok(pack) => pack,
        Err(e) => {
            if std::env::var_os("PACK_COST_DEBUG").is_some() {
                eprintln!("refused ({mutations} mutations): {e}");
            }
            return Ok(());
        }
    };
    let mut lits = pool.lits;
    lits.extend(strings);
    lits.sort();
    lits.dedup();
    let mut preds = Vec::new();
    let mut budget = EVENT_BYTES_PER_INPUT;
    for _ in 0..u.int_in_range(1..=4)? {
        let t = *u.choose(EventType::ALL)?;
        let owned: Vec<Option<String>> = t
            .fields()
            .iter()
            .map(|f| match f.ty {
                FieldType::Str => value(u, &lits, f.max_len as usize, &mut budget),
                FieldType::Int => Ok(None),
            })
            .collect::<Result<_>>()?;
        let mut values = Vec::with_capacity(owned.len());
        for (f, s) in t.fields().iter().zip(&owned) {
            values.push(match (f.ty, s) {
                (FieldType::Str, Some(s)) => FieldValue::Str(s),
                (FieldType::Int, _) if u.ratio(4, 5)? => FieldValue::Int(u.int_in_range(0..=7)?),
                _ => FieldValue::Absent,
            });
        }
        let event = Event::new(t, &values).expect("values follow the schema");
        let bound = pack.cost_bound(t);
        let stats = pack.evaluate(&event, &mut |_| {});
        let lens: Vec<usize> = owned
            .iter()
            .map(|s| s.as_ref().map_or(0, String::len))
            .collect();
        assert!(
            stats.over_budget.is_none() && stats.errors == 0 && stats.work <= bound,
            "cost model broken on {}: work {} > bound {} or over budget (rule {:?}), errors {}, \
             rules run {}; field lengths {lens:?}; prefilter bounds {:?}; rule bounds {:?}",
            t.name(),
            stats.work,
            bound,
            stats.over_budget,
            stats.errors,
            stats.rules_run,
            pack.prefilter_costs(t),
            (0..rules.len())
                .map(|i| pack.rule_cost(i))
                .collect::<Vec<_>>(),
        );
        guide(stats.work, bound);
        if std::env::var_os("PACK_COST_DEBUG").is_some() {
            eprintln!(
                "{}: work {} bound {} ({:.4}) rules run {} bytes {}",
                t.name(),
                stats.work,
                bound,
                stats.work as f64 / bound.max(1) as f64,
                stats.rules_run,
                lens.iter().sum::<usize>()
            );
        }
        preds.clear();
        for (rt, e) in &rules {
            if *rt == t {
                primitives(e, &mut preds);
            }
        }
        check_primitives(t, &event, &preds);
    }
    Ok(())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});
