//! One Sigma field condition (`CommandLine|contains|all: [...]`) to an interpreter expression,
//! with Sigma's semantics: case-insensitive unless `cased`, `*` `?` wildcards with `\` escapes,
//! `null` for an absent field and `''` for an empty one, and the value modifiers.

use bulwark_interpreter::build::{Expr, Pred};
use bulwark_interpreter::matching::{parse_glob, GlobTok};
use bulwark_interpreter::{Case, EventType, FieldType, IntCmp, StrOp};
use serde_yaml::Value;

use crate::SkipReason;

/// The five dash characters `windash` permutes (pySigma's and rsigma's set).
pub const WINDASH: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];
/// Expansions (windash variants, base64 offsets) allowed per value before a rule is skipped.
const MAX_EXPANSIONS: usize = 256;

#[derive(Default)]
struct Mods {
    transform: Option<StrOp>,
    all: bool,
    windash: bool,
    re: bool,
    re_flags: String,
    base64: Option<bool>, // Some(false) base64, Some(true) base64offset
    cased: bool,
    exists: bool,
    fieldref: bool,
    cmp: Option<IntCmp>,
    utf16: Option<Utf16>,
}

/// The text encodings Sigma's `utf16le`/`wide`, `utf16be` and `utf16` modifiers select for the
/// `base64` modifiers that follow them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Utf16 {
    Le,
    Be,
    /// Little-endian after a byte-order mark.
    WithBom,
}

/// The bytes `base64` encodes: the text's UTF-8, or its UTF-16 as a modifier chose.
fn encoded(text: &str, utf16: Option<Utf16>) -> Vec<u8> {
    match utf16 {
        None => text.as_bytes().to_vec(),
        Some(Utf16::Le) => text.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        Some(Utf16::Be) => text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        Some(Utf16::WithBom) => [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect(),
    }
}

fn parse_mods(mods: &[&str]) -> Result<Mods, SkipReason> {
    let mut m = Mods::default();
    for &name in mods {
        match name {
            "contains" => m.transform = Some(StrOp::Contains),
            "startswith" => m.transform = Some(StrOp::StartsWith),
            "endswith" => m.transform = Some(StrOp::EndsWith),
            "all" => m.all = true,
            "windash" => m.windash = true,
            "re" => m.re = true,
            "i" | "m" | "s" if m.re => m.re_flags.push_str(name),
            "base64" => m.base64 = Some(false),
            "base64offset" => m.base64 = Some(true),
            "cased" => m.cased = true,
            "exists" => m.exists = true,
            "fieldref" => m.fieldref = true,
            "lt" => m.cmp = Some(IntCmp::Lt),
            "lte" => m.cmp = Some(IntCmp::Le),
            "gt" => m.cmp = Some(IntCmp::Gt),
            "gte" => m.cmp = Some(IntCmp::Ge),
            "utf16le" | "wide" => m.utf16 = Some(Utf16::Le),
            "utf16be" => m.utf16 = Some(Utf16::Be),
            "utf16" => m.utf16 = Some(Utf16::WithBom),
            "cidr" => {
                return Err(SkipReason::Unsupported(
                    "modifier cidr (no IP address fields in these event types)".into(),
                ))
            }
            "expand" => {
                return Err(SkipReason::Unsupported(
                    "modifier expand (its %placeholders% take values from a processing pipeline, which compile has none of)"
                        .into(),
                ))
            }
            "minute" | "hour" | "day" | "week" | "month" | "year" => {
                return Err(SkipReason::Unsupported(format!(
                    "modifier {name} (no time fields in these event types)"
                )))
            }
            other => return Err(SkipReason::InvalidModifier(other.to_owned())),
        }
    }
    Ok(m)
}

/// A value's text as Sigma reads it (numbers and booleans as written).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Unescapes a Sigma pattern without wildcards to its literal text.
fn literal_of(tokens: &[GlobTok]) -> Option<String> {
    tokens
        .iter()
        .map(|t| match t {
            GlobTok::Lit(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// Writes wildcard tokens back as a pattern in the interpreter's (Sigma's) glob syntax.
fn pattern_of(tokens: &[GlobTok]) -> String {
    let mut out = String::new();
    for t in tokens {
        match t {
            GlobTok::Any => out.push('*'),
            GlobTok::One => out.push('?'),
            GlobTok::Lit(c) => {
                if matches!(c, '*' | '?' | '\\') {
                    out.push('\\');
                }
                out.push(*c);
            }
        }
    }
    out
}

/// Wildcard tokens (a parsed Sigma value, with any `contains`/`startswith`/`endswith` wildcards
/// added as tokens, never re-parsed from text) on field `field` to a predicate, choosing the
/// cheapest form: equality, prefix, suffix or substring when the wildcards allow it.
fn pattern_pred(field: u8, tokens: &[GlobTok], case: Case) -> Expr {
    let mut tokens = tokens.to_vec();
    tokens.dedup_by(|a, b| *a == GlobTok::Any && *b == GlobTok::Any);
    if tokens == [GlobTok::Any] {
        return Expr::Pred(Pred::Exists { field });
    }
    let lead = tokens.first() == Some(&GlobTok::Any);
    let trail = tokens.len() > 1 && tokens.last() == Some(&GlobTok::Any);
    let inner = &tokens[usize::from(lead)..tokens.len() - usize::from(trail)];
    if let Some(lit) = literal_of(inner) {
        let op = match (lead, trail) {
            (false, false) if lit.is_empty() => return Expr::Pred(Pred::Empty { field }),
            (false, false) => StrOp::Eq,
            (true, true) => StrOp::Contains,
            (false, true) => StrOp::StartsWith,
            (true, false) => StrOp::EndsWith,
        };
        return Expr::Pred(Pred::Str {
            field,
            op,
            case,
            value: lit,
        });
    }
    Expr::Pred(Pred::Glob {
        field,
        case,
        pattern: pattern_of(&tokens),
    })
}

/// Standard base64 of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// pySigma's `base64offset`: the three encodings of `value` at byte offsets 0, 1 and 2 of a
/// base64 stream, with the characters that depend on unknown neighbours cut off.
pub fn base64_offsets(value: &[u8]) -> [String; 3] {
    let start = [0usize, 2, 3];
    let end = [0usize, 3, 2]; // characters cut from the end, by (len + i) % 3
    let mut out: [String; 3] = Default::default();
    for (i, slot) in out.iter_mut().enumerate() {
        let mut padded = vec![b' '; i];
        padded.extend_from_slice(value);
        let enc = base64(&padded);
        let cut = end[(value.len() + i) % 3];
        let stop = enc.len().saturating_sub(cut);
        *slot = enc.get(start[i]..stop).unwrap_or("").to_owned();
    }
    out
}

/// Every `windash` variant of `s`: each `-` or `/` that starts a word after a non-word character
/// (pySigma's `\B[-/]\b`) replaced by each of the five dashes.
pub fn windash_variants(s: &str) -> Result<Vec<String>, SkipReason> {
    let chars: Vec<char> = s.chars().collect();
    let word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric() || *c == '_');
    let positions: Vec<usize> = (0..chars.len())
        .filter(|&i| {
            matches!(chars[i], '-' | '/')
                && !word(i.checked_sub(1).and_then(|p| chars.get(p)))
                && word(chars.get(i + 1))
        })
        .collect();
    let count = WINDASH
        .len()
        .checked_pow(positions.len() as u32)
        .unwrap_or(usize::MAX);
    if count > MAX_EXPANSIONS {
        return Err(SkipReason::TooLarge(format!(
            "windash on a value with {} dashes ({} variants)",
            positions.len(),
            count
        )));
    }
    let mut out = Vec::with_capacity(count);
    for mut n in 0..count {
        let mut v = chars.clone();
        for &p in &positions {
            v[p] = WINDASH[n % WINDASH.len()];
            n /= WINDASH.len();
        }
        out.push(v.into_iter().collect());
    }
    Ok(out)
}

/// What a condition on a field the event type does not have evaluates to: in Sigma a field an
/// event does not carry is absent, so only `null` and `exists: false` hold.
fn on_absent(m: &Mods, v: &Value) -> bool {
    if m.exists {
        return v.as_bool() == Some(false);
    }
    v.is_null()
}

/// Compiles `key: value` of a selection map for `event_type`. A field the event type does not
/// have compiles to a constant, as Sigma reads a field an event does not carry (absent), and is
/// added to `absent`: no reference to it reaches the pack.
pub fn compile(
    event_type: EventType,
    key: &str,
    value: &Value,
    absent: &mut Vec<String>,
) -> Result<Expr, SkipReason> {
    let mut parts = key.split('|');
    let name = parts.next().unwrap_or("");
    let mods: Vec<&str> = parts.collect();
    if name.is_empty() {
        return Err(SkipReason::Unsupported(
            "keyword search (a value without a field)".into(),
        ));
    }
    let m = parse_mods(&mods)?;
    let Some(def) = event_type.field_by_name(name) else {
        let values: Vec<&Value> = match value {
            Value::Sequence(items) => items.iter().collect(),
            v => vec![v],
        };
        if values.is_empty() {
            return Err(SkipReason::BadValue(format!("{key}: empty list")));
        }
        absent.push(name.to_owned());
        let mut hold = values.iter().map(|v| on_absent(&m, v));
        let all = m.all || m.exists;
        return Ok(Expr::Const(if all {
            hold.all(|b| b)
        } else {
            hold.any(|b| b)
        }));
    };
    let field = def.index;
    let case = if m.cased {
        Case::Sensitive
    } else {
        Case::Insensitive
    };
    let values: Vec<&Value> = match value {
        Value::Sequence(items) => items.iter().collect(),
        v => vec![v],
    };
    if values.is_empty() {
        return Err(SkipReason::BadValue(format!("{key}: empty list")));
    }
    let mut exprs = Vec::with_capacity(values.len());
    for v in values {
        exprs.push(compile_one(
            event_type, def.ty, field, key, &m, case, v, absent,
        )?);
    }
    Ok(if exprs.len() == 1 {
        exprs.remove(0)
    } else if m.all {
        Expr::And(exprs)
    } else {
        Expr::Or(exprs)
    })
}

#[allow(clippy::too_many_arguments)]
fn compile_one(
    event_type: EventType,
    ty: FieldType,
    field: u8,
    key: &str,
    m: &Mods,
    case: Case,
    v: &Value,
    absent: &mut Vec<String>,
) -> Result<Expr, SkipReason> {
    if m.exists {
        return match v {
            Value::Bool(true) => Ok(Expr::Pred(Pred::Exists { field })),
            Value::Bool(false) => Ok(Expr::Not(Box::new(Expr::Pred(Pred::Exists { field })))),
            _ => Err(SkipReason::BadValue(format!(
                "{key}: exists takes true or false"
            ))),
        };
    }
    if v.is_null() {
        // Sigma's null: the field is absent (an empty string is `''`).
        return Ok(Expr::Not(Box::new(Expr::Pred(Pred::Exists { field }))));
    }
    if m.fieldref {
        let other = scalar_text(v).unwrap_or_default();
        let Some(def) = event_type.field_by_name(&other) else {
            // Equal to a field the event does not carry: never.
            absent.push(other);
            return Ok(Expr::Const(false));
        };
        if m.transform.is_some() || m.windash || m.base64.is_some() || m.re || m.cmp.is_some() {
            return Err(SkipReason::Unsupported(format!(
                "{key}: fieldref combined with another value modifier (only field equality is supported)"
            )));
        }
        if def.ty != ty {
            return Err(SkipReason::Unsupported(format!(
                "{key}: fieldref between a text and an integer field"
            )));
        }
        return Ok(Expr::Pred(Pred::FieldEq {
            field,
            other: def.index,
            case,
        }));
    }
    if let Some(cmp) = m.cmp {
        let Some(n) = v.as_u64() else {
            return Err(SkipReason::BadValue(format!(
                "{key}: a comparison needs a non-negative integer"
            )));
        };
        if ty != FieldType::Int {
            return Err(SkipReason::Unsupported(format!(
                "numeric comparison on text field in {key}"
            )));
        }
        return Ok(Expr::Pred(Pred::Int {
            field,
            cmp,
            value: n,
        }));
    }
    let Some(text) = scalar_text(v) else {
        return Err(SkipReason::BadValue(format!(
            "{key}: a value must be a string, number, boolean or null"
        )));
    };
    if m.re {
        if ty != FieldType::Str {
            return Err(SkipReason::Unsupported(format!(
                "regex on integer field in {key}"
            )));
        }
        let mut pattern = String::new();
        let inline: String = m.re_flags.chars().filter(|c| *c != 'i').collect();
        if !inline.is_empty() {
            pattern.push_str(&format!("(?{inline})"));
        }
        pattern.push_str(&text);
        bulwark_interpreter::build::compile_regex(&pattern, m.re_flags.contains('i'))
            .map_err(|e| SkipReason::Regex(format!("{key}: {e}")))?;
        return Ok(Expr::Pred(Pred::Regex {
            field,
            pattern,
            case_insensitive: m.re_flags.contains('i'),
        }));
    }
    if ty == FieldType::Int {
        if m.transform.is_some() || m.windash || m.base64.is_some() {
            return Err(SkipReason::Unsupported(format!(
                "string modifier on integer field in {key}"
            )));
        }
        return match text.parse::<u64>() {
            Ok(n) => Ok(Expr::Pred(Pred::Int {
                field,
                cmp: IntCmp::Eq,
                value: n,
            })),
            Err(_) => Err(SkipReason::BadValue(format!(
                "{key}: '{text}' is not an integer"
            ))),
        };
    }
    // Sigma patterns: windash first (dashes are not wildcards), then base64 of the literal text.
    let variants = if m.windash {
        windash_variants(&text)?
    } else {
        vec![text]
    };
    if m.utf16.is_some() && m.base64.is_none() {
        return Err(SkipReason::Unsupported(format!(
            "{key}: utf16le, utf16be, utf16 and wide only encode for base64 or base64offset"
        )));
    }
    if m.base64 == Some(true) && m.transform != Some(StrOp::Contains) {
        return Err(SkipReason::Unsupported(format!(
            "base64offset without contains in {key}"
        )));
    }
    let mut patterns: Vec<Vec<GlobTok>> = Vec::new();
    for variant in variants {
        let tokens = parse_glob(variant.as_bytes()).unwrap_or_default();
        match m.base64 {
            None => patterns.push(tokens),
            Some(offset) => {
                let Some(lit) = literal_of(&tokens) else {
                    return Err(SkipReason::Unsupported(format!(
                        "wildcards inside a base64 value in {key}"
                    )));
                };
                let bytes = encoded(&lit, m.utf16);
                let lits: Vec<String> = if offset {
                    base64_offsets(&bytes).into()
                } else {
                    vec![base64(&bytes)]
                };
                patterns.extend(
                    lits.iter()
                        .map(|l| l.chars().map(GlobTok::Lit).collect::<Vec<_>>()),
                );
            }
        }
    }
    let exprs: Vec<Expr> = patterns
        .into_iter()
        .map(|mut t| {
            match m.transform {
                Some(StrOp::Contains) => {
                    t.insert(0, GlobTok::Any);
                    t.push(GlobTok::Any);
                }
                Some(StrOp::StartsWith) => t.push(GlobTok::Any),
                Some(StrOp::EndsWith) => t.insert(0, GlobTok::Any),
                _ => {}
            }
            pattern_pred(field, &t, case)
        })
        .collect();
    Ok(if exprs.len() == 1 {
        exprs.into_iter().next().unwrap_or(Expr::Const(false))
    } else {
        Expr::Or(exprs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_encodings() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        // pySigma's documented example: base64offset of "/bin/bash"
        let o = base64_offsets(b"/bin/bash");
        assert_eq!(o, ["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]);
    }

    #[test]
    fn wide_base64_and_modifier_reasons() {
        let v = |s: &str| serde_yaml::from_str::<Value>(s).unwrap();
        let mut absent = Vec::new();
        // pySigma: `CommandLine|wide|base64offset|contains: 'ping'`
        let e = compile(
            EventType::ProcessCreation,
            "CommandLine|wide|base64offset|contains",
            &v("ping"),
            &mut absent,
        )
        .unwrap();
        let want = base64_offsets(&encoded("ping", Some(Utf16::Le)));
        let got = format!("{e:?}");
        assert!(want.iter().all(|w| got.contains(w.as_str())), "{got}");
        assert_eq!(base64(&encoded("a", Some(Utf16::Le))), "YQA=");
        assert_eq!(base64(&encoded("a", Some(Utf16::Be))), "AGE=");
        let err =
            |k: &str| compile(EventType::ProcessCreation, k, &v("x"), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err("CommandLine|expand"), SkipReason::Unsupported(s) if s.contains("expand"))
        );
        assert!(
            matches!(err("CommandLine|utf16le"), SkipReason::Unsupported(s) if s.contains("base64"))
        );
        assert_eq!(
            err("CommandLine|contians"),
            SkipReason::InvalidModifier("contians".into())
        );
        // a field the schema lacks is a constant: absent
        assert_eq!(
            compile(
                EventType::ProcessCreation,
                "Provider_Name",
                &v("x"),
                &mut absent
            )
            .unwrap(),
            Expr::Const(false)
        );
        assert_eq!(
            compile(
                EventType::ProcessCreation,
                "Provider_Name|exists",
                &v("false"),
                &mut absent
            )
            .unwrap(),
            Expr::Const(true)
        );
        assert_eq!(
            compile(
                EventType::ProcessCreation,
                "Provider_Name",
                &v("null"),
                &mut absent
            )
            .unwrap(),
            Expr::Const(true)
        );
        assert_eq!(absent, ["Provider_Name"; 3]);
    }

    #[test]
    fn windash_expands_only_word_starting_dashes() {
        let v = windash_variants(" -enc x-y /c").unwrap();
        assert_eq!(v.len(), 25);
        assert!(v.contains(&" /enc x-y -c".to_string()));
        assert!(v.contains(&" \u{2015}enc x-y \u{2014}c".to_string()));
        assert!(v.iter().all(|s| s.contains("x-y")));
        assert_eq!(windash_variants("-a").unwrap().len(), 5);
    }

    #[test]
    fn patterns_pick_the_cheapest_predicate() {
        let p = |s: &str| pattern_pred(0, &parse_glob(s.as_bytes()).unwrap(), Case::Insensitive);
        assert!(matches!(
            p("*abc*"),
            Expr::Pred(Pred::Str {
                op: StrOp::Contains,
                ..
            })
        ));
        assert!(matches!(
            p("abc*"),
            Expr::Pred(Pred::Str {
                op: StrOp::StartsWith,
                ..
            })
        ));
        assert!(
            matches!(p("*\\abc.exe"), Expr::Pred(Pred::Str { op: StrOp::EndsWith, ref value, .. }) if value == "\\abc.exe")
        );
        assert!(
            matches!(p("a\\*b"), Expr::Pred(Pred::Str { op: StrOp::Eq, ref value, .. }) if value == "a*b")
        );
        assert!(matches!(p("a*b"), Expr::Pred(Pred::Glob { .. })));
        assert!(matches!(p("*"), Expr::Pred(Pred::Exists { .. })));
        assert!(matches!(p(""), Expr::Pred(Pred::Empty { .. })));
        // a trailing backslash is literal, and wildcards added by modifiers stay wildcards
        let mut t = parse_glob(b"\\Monitors\\").unwrap();
        t.insert(0, GlobTok::Any);
        t.push(GlobTok::Any);
        assert!(
            matches!(pattern_pred(0, &t, Case::Insensitive), Expr::Pred(Pred::Str { op: StrOp::Contains, ref value, .. }) if value == "\\Monitors\\")
        );
        let g = p("a*b\\");
        assert!(matches!(g, Expr::Pred(Pred::Glob { ref pattern, .. }) if pattern == "a*b\\\\"));
    }
}
