//! Sigma rules to a Bulwark content pack: the compiler behind `bulwark compile`.
//!
//! [`compile_paths`] reads rule files and folders, [`compile_sources`] rule texts. Each rule is
//! compiled on its own; a rule that cannot be compiled is skipped with its file, line (where
//! known) and a [`SkipReason`], and the rest go into one pack, which always passes the
//! interpreter's verifier before it is returned. Each compiled rule keeps its id, title, author,
//! level and tags (the Detection Rule License requires the author in alerts).
//!
//! Supported: `process_creation`, `image_load` and `registry_*` rules for Windows; selections
//! (maps are AND, lists OR), the modifiers `contains` `startswith` `endswith` `all` `windash`
//! `re` (with `i` `m` `s`) `base64` `base64offset` (with `utf16le`/`wide`, `utf16be`, `utf16`
//! before them) `exists` `cased` `fieldref` `lt` `lte` `gt` `gte`, `null` and `''`, wildcards and
//! their escapes, and conditions with `and` `or` `not`, parentheses, `1 of X*`, `all of X*` and
//! `them`. Sigma modifiers that are not supported (`expand`, `cidr`, the time modifiers) are
//! reported as such, apart from names Sigma does not define ([`SkipReason::InvalidModifier`]).
//!
//! A field the event type does not have compiles as Sigma reads a field an event does not carry:
//! absent (`null` and `exists: false` hold, everything else fails). The condition is folded to a
//! constant there, so no reference to the field reaches the pack and the verifier's binding to
//! the schema is untouched; each such field is a [`Warning`], and a rule that can then never
//! fire is skipped with [`SkipReason::NeverFires`]. A rule without an id gets one derived from
//! its text ([`derive_id`]), with a warning. A UTF-8 byte-order mark before a rule is ignored.

mod condition;
pub mod events;
pub mod field;
pub mod scan;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::{Action, EventType, Level, StrOp};
use serde_yaml::Value;

use condition::{pattern_matches, Cond};

/// Compiler options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Fail if any rule is skipped.
    pub strict: bool,
}

/// The result of a compilation.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The pack, already accepted by `bulwark_interpreter::verify`.
    pub pack: Vec<u8>,
    /// The compiled rules, in pack order.
    pub rules: Vec<CompiledRule>,
    /// The rules that were skipped, and why.
    pub skipped: Vec<Skipped>,
    /// Warnings about compiled rules (fields the schema lacks, compiled as absent).
    pub warnings: Vec<Warning>,
}

/// A warning about a rule that was compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file.
    pub path: String,
    /// The line, where known.
    pub line: Option<u32>,
    /// The rule's id.
    pub rule_id: String,
    /// The rule's title.
    pub title: String,
    /// What to know.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(
            f,
            ": rule {} \"{}\": warning: {}",
            self.rule_id, self.title, self.message
        )
    }
}

/// A rule in the pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    /// Its index in the pack.
    pub index: u32,
    /// The Sigma id.
    pub id: String,
    /// The title.
    pub title: String,
    /// The file it came from.
    pub path: String,
    /// The event type it applies to.
    pub event_type: EventType,
    /// The schema fields its condition reads, in schema order.
    pub fields: Vec<&'static str>,
}

/// A rule that was not compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: String,
    /// The line the problem is on, where known.
    pub line: Option<u32>,
    /// The rule's id, if it has one.
    pub rule_id: Option<String>,
    /// The rule's title, if it has one.
    pub title: Option<String>,
    /// Why.
    pub reason: SkipReason,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": rule")?;
        if let Some(id) = &self.rule_id {
            write!(f, " {id}")?;
        }
        if let Some(t) = &self.title {
            write!(f, " \"{t}\"")?;
        }
        write!(f, ": skipped: {}", self.reason)
    }
}

/// Why a rule was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// Not YAML, or not a Sigma rule.
    #[error("not a Sigma rule: {0}")]
    Malformed(String),
    /// Several YAML documents (rule collections, `action: global`).
    #[error("multi-document rule files (collections) are not supported")]
    MultiDocument,
    /// Correlation rules and aggregations.
    #[error("correlations and aggregations (`|` in the condition, `timeframe`) are not supported")]
    Aggregation,
    /// A log source outside the schema.
    #[error("log source {0} is not an event type of the sensor")]
    LogSource(String),
    /// A rule that cannot match anything: every way to satisfy it needs a field the event type
    /// does not have (such fields compile as absent).
    #[error("can never fire: it needs {fields}, which {event_type} events do not have")]
    NeverFires {
        /// The fields, comma-separated.
        fields: String,
        /// The event type.
        event_type: &'static str,
    },
    /// A field the event type does not have (no longer a reason to skip: such fields compile as
    /// absent; kept for callers that match on it).
    #[error("field {field} does not exist in {event_type} events")]
    UnknownField {
        /// The field.
        field: String,
        /// The event type.
        event_type: &'static str,
    },
    /// An unsupported feature (a Sigma modifier compile does not support included).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A modifier Sigma does not define (a typo, most often).
    #[error("invalid modifier '{0}': not a Sigma modifier")]
    InvalidModifier(String),
    /// A malformed value.
    #[error("bad value: {0}")]
    BadValue(String),
    /// A bad condition.
    #[error("bad condition: {0}")]
    BadCondition(String),
    /// A regex the linear-time engine cannot take.
    #[error("regex not supported by the linear-time engine: {0}")]
    Regex(String),
    /// Over a fixed limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Another rule already has this id.
    #[error("duplicate rule id (the first rule with this id is kept)")]
    DuplicateId,
}

impl SkipReason {
    /// A short stable name for counting skips by reason.
    pub fn kind(&self) -> &'static str {
        match self {
            SkipReason::Malformed(_) => "malformed",
            SkipReason::MultiDocument => "multi-document",
            SkipReason::Aggregation => "aggregation",
            SkipReason::LogSource(_) => "log source",
            SkipReason::UnknownField { .. } | SkipReason::NeverFires { .. } => "unknown field",
            SkipReason::Unsupported(_) => "unsupported",
            SkipReason::InvalidModifier(_) => "invalid modifier",
            SkipReason::BadValue(_) => "bad value",
            SkipReason::BadCondition(_) => "bad condition",
            SkipReason::Regex(_) => "regex",
            SkipReason::TooLarge(_) => "too large",
            SkipReason::DuplicateId => "duplicate id",
        }
    }
}

/// Why nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// `--strict` and some rules were skipped.
    #[error("{count} rules were skipped (strict mode)")]
    Strict {
        /// How many.
        count: usize,
    },
    /// The pack failed the verifier: a compiler bug, named by rule.
    #[error("the compiled pack was rejected by the verifier (a compiler bug): {0}")]
    Rejected(Box<bulwark_interpreter::VerifyError>),
    /// The rules together exceed a limit of the pack format.
    #[error("the rules together exceed a pack limit: {0}")]
    Limit(String),
}

/// The line of the first occurrence of `needle` in `text` (1-based).
fn line_of(text: &str, needle: &str) -> Option<u32> {
    line_of_path(text, &[needle.to_owned()])
}

/// The line (1-based) of the last of `needles` found, each searched from the line of the one
/// before (`detection:`, then the selection's name, then its key), so a key that occurs in
/// several selections is reported where the failing selection has it.
fn line_of_path(text: &str, needles: &[String]) -> Option<u32> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    let mut found = None;
    for needle in needles {
        match lines
            .iter()
            .skip(start)
            .position(|l| l.contains(needle.as_str()))
        {
            Some(i) => {
                start += i;
                found = Some(start);
            }
            None => break,
        }
    }
    found.and_then(|i| u32::try_from(i + 1).ok())
}

/// Every file below `dir` (recursively) whose name ends with `suffix`, sorted; unreadable
/// folders are skipped. Tests and the benchmark use it to find corpus files.
pub fn find_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, suffix, out);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, suffix, &mut out);
    out.sort();
    out
}

fn rule_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), CompileError> {
    let io = |error| CompileError::Io {
        path: path.display().to_string(),
        error,
    };
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                rule_files(&e, out)?;
            } else if matches!(e.extension().and_then(|x| x.to_str()), Some("yml" | "yaml")) {
                out.push(e);
            }
        }
        Ok(())
    } else {
        std::fs::metadata(path).map_err(io)?;
        out.push(path.to_path_buf());
        Ok(())
    }
}

/// Compiles rule files and folders (recursively, `*.yml` and `*.yaml`, in sorted order).
pub fn compile_paths(paths: &[PathBuf], opts: &Options) -> Result<Compiled, CompileError> {
    let mut files = Vec::new();
    for p in paths {
        rule_files(p, &mut files)?;
    }
    let mut sources = Vec::with_capacity(files.len());
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|error| CompileError::Io {
            path: f.display().to_string(),
            error,
        })?;
        sources.push((f.display().to_string(), text));
    }
    compile_sources(&sources, opts)
}

/// What one rule file holds once parsed.
struct Rule {
    /// The rule had no id: `id` is derived from its text.
    derived_id: bool,
    /// Fields the event type lacks that the rule names (compiled as absent).
    absent: Vec<String>,
    id: String,
    title: String,
    author: String,
    level: Level,
    tags: Vec<String>,
    event_type: EventType,
    expr: Expr,
}

fn text_field(doc: &Value, key: &str) -> Option<String> {
    doc.get(key).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The event type of a log source, and the implicit condition some categories carry (Sysmon's
/// registry categories are one event type split by `EventType`).
fn logsource(doc: &Value) -> Result<(EventType, Option<Expr>), SkipReason> {
    let ls = doc
        .get("logsource")
        .ok_or_else(|| SkipReason::Malformed("no logsource".into()))?;
    let get = |k: &str| ls.get(k).and_then(Value::as_str).unwrap_or("");
    let (product, category, service) = (get("product"), get("category"), get("service"));
    let describe = || format!("product={product} category={category} service={service}");
    if product != "windows" || !service.is_empty() {
        return Err(SkipReason::LogSource(describe()));
    }
    let registry = EventType::RegistryEvent;
    let event_type_field = registry.field_by_name("EventType").map_or(0, |f| f.index);
    let only = |names: &[&str]| {
        Some(Expr::Pred(Pred::Set {
            field: event_type_field,
            op: StrOp::Eq,
            case: bulwark_interpreter::Case::Insensitive,
            values: names.iter().map(|s| (*s).to_owned()).collect(),
        }))
    };
    Ok(match category {
        "process_creation" => (EventType::ProcessCreation, None),
        "image_load" => (EventType::ImageLoad, None),
        "registry_event" => (registry, None),
        "registry_add" => (registry, only(&["CreateKey"])),
        "registry_delete" => (registry, only(&["DeleteKey", "DeleteValue"])),
        "registry_set" => (registry, only(&["SetValue"])),
        "registry_rename" => (registry, only(&["RenameKey", "RenameValue"])),
        _ => return Err(SkipReason::LogSource(describe())),
    })
}

/// One selection (a search identifier's value) to an expression; a failure carries the key it
/// is about, where there is one.
fn selection(
    event_type: EventType,
    name: &str,
    v: &Value,
    absent: &mut Vec<String>,
) -> Result<Expr, (SkipReason, Option<String>)> {
    match v {
        Value::Mapping(map) => {
            let mut items = Vec::with_capacity(map.len());
            for (k, val) in map {
                let Some(k) = k.as_str() else {
                    return Err((
                        SkipReason::Malformed(format!("selection {name}: a key is not a string")),
                        None,
                    ));
                };
                items.push(
                    field::compile(event_type, k, val, absent)
                        .map_err(|e| (e, Some(k.to_owned())))?,
                );
            }
            Ok(match items.len() {
                1 => items.remove(0),
                _ => Expr::And(items),
            })
        }
        Value::Sequence(list) if list.iter().all(|i| i.is_mapping()) => {
            let items = list
                .iter()
                .map(|m| selection(event_type, name, m, absent))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match items.len() {
                1 => items.into_iter().next().unwrap_or(Expr::Const(false)),
                _ => Expr::Or(items),
            })
        }
        Value::Sequence(_) | Value::String(_) | Value::Number(_) => Err((
            SkipReason::Unsupported(format!("keyword search in {name} (values without a field)")),
            None,
        )),
        _ => Err((
            SkipReason::Malformed(format!(
                "selection {name} is neither a map nor a list of maps"
            )),
            None,
        )),
    }
}

fn lower(cond: &Cond, sels: &BTreeMap<String, Expr>) -> Result<Expr, SkipReason> {
    let matching = |pattern: &str| -> Result<Vec<Expr>, SkipReason> {
        let found: Vec<Expr> = sels
            .iter()
            .filter(|(n, _)| pattern_matches(pattern, n))
            .map(|(_, e)| e.clone())
            .collect();
        if found.is_empty() {
            return Err(SkipReason::BadCondition(format!(
                "'{pattern}' matches no search identifier"
            )));
        }
        Ok(found)
    };
    Ok(match cond {
        Cond::Ident(n) => sels
            .get(n)
            .cloned()
            .ok_or_else(|| SkipReason::BadCondition(format!("unknown search identifier '{n}'")))?,
        Cond::OneOf(p) => Expr::Or(matching(p)?),
        Cond::AllOf(p) => Expr::And(matching(p)?),
        Cond::Not(c) => Expr::Not(Box::new(lower(c, sels)?)),
        Cond::And(cs) => Expr::And(
            cs.iter()
                .map(|c| lower(c, sels))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Or(cs) => Expr::Or(
            cs.iter()
                .map(|c| lower(c, sels))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Folds constants (from fields compiled as absent): `and` with a false item is false, true items
/// drop out, and the same for `or`; `not` of a constant is the other constant.
fn fold(e: Expr) -> Expr {
    match e {
        Expr::And(items) => {
            let mut out = Vec::new();
            for i in items.into_iter().map(fold) {
                match i {
                    Expr::Const(true) => {}
                    Expr::Const(false) => return Expr::Const(false),
                    other => out.push(other),
                }
            }
            match out.len() {
                0 => Expr::Const(true),
                1 => out.remove(0),
                _ => Expr::And(out),
            }
        }
        Expr::Or(items) => {
            let mut out = Vec::new();
            for i in items.into_iter().map(fold) {
                match i {
                    Expr::Const(false) => {}
                    Expr::Const(true) => return Expr::Const(true),
                    other => out.push(other),
                }
            }
            match out.len() {
                0 => Expr::Const(false),
                1 => out.remove(0),
                _ => Expr::Or(out),
            }
        }
        Expr::Not(inner) => match fold(*inner) {
            Expr::Const(b) => Expr::Const(!b),
            other => Expr::Not(Box::new(other)),
        },
        other => other,
    }
}

/// Merges equality/prefix/suffix/substring tests of one field in an `or` into one any-of set,
/// and flattens nested `and`/`or`: same meaning, fewer instructions, literal anchors kept.
fn simplify(e: Expr) -> Expr {
    match e {
        Expr::And(items) => {
            let mut out = Vec::new();
            for i in items.into_iter().map(simplify) {
                match i {
                    Expr::And(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            if out.len() == 1 {
                out.remove(0)
            } else {
                Expr::And(out)
            }
        }
        Expr::Or(items) => {
            let mut flat = Vec::new();
            for i in items.into_iter().map(simplify) {
                match i {
                    Expr::Or(inner) => flat.extend(inner),
                    other => flat.push(other),
                }
            }
            let mut out: Vec<Expr> = Vec::new();
            for e in flat {
                let same = str_key(&e).and_then(|key| {
                    out.iter_mut()
                        .find(|o| str_key(o) == Some(key))
                        .map(|o| (key, o))
                });
                match same {
                    Some(((field, op, case), existing)) => {
                        let mut values =
                            into_values(std::mem::replace(existing, Expr::Const(false)));
                        values.extend(into_values(e));
                        *existing = Expr::Pred(Pred::Set {
                            field,
                            op,
                            case,
                            values,
                        });
                    }
                    None => out.push(e),
                }
            }
            if out.len() == 1 {
                out.remove(0)
            } else {
                Expr::Or(out)
            }
        }
        Expr::Not(inner) => Expr::Not(Box::new(simplify(*inner))),
        other => other,
    }
}

/// What a string test of one field must share with others to join an any-of set with them.
fn str_key(e: &Expr) -> Option<(u8, StrOp, bulwark_interpreter::Case)> {
    match e {
        Expr::Pred(Pred::Str {
            field, op, case, ..
        })
        | Expr::Pred(Pred::Set {
            field, op, case, ..
        }) => Some((*field, *op, *case)),
        _ => None,
    }
}

/// The constants of a string test or set (empty for anything else).
fn into_values(e: Expr) -> Vec<String> {
    match e {
        Expr::Pred(Pred::Str { value, .. }) => vec![value],
        Expr::Pred(Pred::Set { values, .. }) => values,
        _ => Vec::new(),
    }
}

/// An id for a rule that has none, derived from its text (SHA-256, written as a UUID with the
/// version nibble 8, "custom"): stable for as long as the rule's text is.
pub fn derive_id(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut b: [u8; 16] = Sha256::digest(text.as_bytes())
        .get(..16)
        .and_then(|s| s.try_into().ok())
        .unwrap_or_default();
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The schema fields `expr` reads, in schema order.
fn fields_of(event_type: EventType, expr: &Expr) -> Vec<&'static str> {
    fn walk(e: &Expr, out: &mut Vec<u8>) {
        match e {
            Expr::Pred(p) => match p {
                Pred::Exists { field }
                | Pred::Empty { field }
                | Pred::Str { field, .. }
                | Pred::Glob { field, .. }
                | Pred::Set { field, .. }
                | Pred::Regex { field, .. }
                | Pred::Int { field, .. } => out.push(*field),
                Pred::FieldEq { field, other, .. } => out.extend([*field, *other]),
            },
            Expr::And(items) | Expr::Or(items) => items.iter().for_each(|i| walk(i, out)),
            Expr::Not(inner) => walk(inner, out),
            Expr::Const(_) => {}
        }
    }
    let mut indexes = Vec::new();
    walk(expr, &mut indexes);
    indexes.sort_unstable();
    indexes.dedup();
    indexes
        .into_iter()
        .filter_map(|i| event_type.field(i).map(|d| d.name))
        .collect()
}

/// A skipped rule's id, title, reason and the keys leading to the line to report.
type RuleFailure = (Option<String>, Option<String>, SkipReason, Vec<String>);

fn parse_rule(text: &str) -> Result<Rule, RuleFailure> {
    let docs: Vec<Value> = match serde_yaml::Deserializer::from_str(text)
        .map(<Value as serde::Deserialize>::deserialize)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(d) => d,
        Err(e) => {
            // The YAML error's own position, as a needle-free path: reported by line number.
            let at = e
                .location()
                .map(|l| vec![format!("\0line {}", l.line())])
                .unwrap_or_default();
            return Err((None, None, SkipReason::Malformed(e.to_string()), at));
        }
    };
    let doc = match docs.as_slice() {
        [one] => one,
        [] => {
            return Err((
                None,
                None,
                SkipReason::Malformed("empty file".into()),
                Vec::new(),
            ))
        }
        _ => return Err((None, None, SkipReason::MultiDocument, Vec::new())),
    };
    let id = text_field(doc, "id");
    let title = text_field(doc, "title");
    let fail = |r: SkipReason, at: Option<&'static str>| {
        let path = at.map(|a| vec![format!("{a}:")]).unwrap_or_default();
        Err((id.clone(), title.clone(), r, path))
    };
    if doc.get("correlation").is_some() {
        return fail(SkipReason::Aggregation, Some("correlation"));
    }
    let (event_type, implicit) = match logsource(doc) {
        Ok(x) => x,
        Err(e) => return fail(e, Some("logsource")),
    };
    let Some(detection) = doc.get("detection").and_then(Value::as_mapping) else {
        return fail(SkipReason::Malformed("no detection".into()), None);
    };
    if detection.get("timeframe").is_some() {
        return fail(SkipReason::Aggregation, Some("timeframe"));
    }
    let mut sels = BTreeMap::new();
    let mut absent = Vec::new();
    for (k, v) in detection {
        let Some(name) = k.as_str() else {
            return fail(
                SkipReason::Malformed("a detection key is not a string".into()),
                None,
            );
        };
        if name == "condition" || name == "timeframe" {
            continue;
        }
        match selection(event_type, name, v, &mut absent) {
            Ok(e) => {
                sels.insert(name.to_owned(), e);
            }
            Err((e, key)) => {
                let mut path = vec!["detection:".to_owned(), format!("{name}:")];
                path.extend(key.map(|k| format!("{k}:")));
                return Err((id.clone(), title.clone(), e, path));
            }
        }
    }
    let conditions: Vec<String> = match detection.get("condition") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(list)) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => {
            return fail(
                SkipReason::BadCondition("missing".into()),
                Some("condition"),
            )
        }
    };
    let mut alternatives = Vec::new();
    for c in &conditions {
        let parsed = match condition::parse(c) {
            Ok(p) => p,
            Err(e) => return fail(e, Some("condition")),
        };
        match lower(&parsed, &sels) {
            Ok(e) => alternatives.push(e),
            Err(e) => return fail(e, Some("condition")),
        }
    }
    let mut expr = fold(if alternatives.len() == 1 {
        alternatives.remove(0)
    } else {
        Expr::Or(alternatives)
    });
    absent.sort();
    absent.dedup();
    if expr == Expr::Const(false) && !absent.is_empty() {
        let path = vec!["detection:".to_owned(), absent[0].clone()];
        return Err((
            id.clone(),
            title.clone(),
            SkipReason::NeverFires {
                fields: absent.join(", "),
                event_type: event_type.name(),
            },
            path,
        ));
    }
    if let Some(implicit) = implicit {
        expr = Expr::And(vec![implicit, expr]);
    }
    let level = text_field(doc, "level")
        .and_then(|l| Level::from_name(&l))
        .unwrap_or(Level::Medium);
    let tags = doc
        .get("tags")
        .and_then(Value::as_sequence)
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // A rule without an id gets one derived from its text: the same rule, the same id.
    let derived_id = id.is_none();
    let id_text = id.clone().unwrap_or_else(|| derive_id(text));
    Ok(Rule {
        derived_id,
        absent,
        id: id_text,
        title: title.clone().unwrap_or_default(),
        author: text_field(doc, "author").unwrap_or_default(),
        level,
        tags,
        event_type,
        expr: simplify(expr),
    })
}

/// Compiles rule texts, each given with the name (path) to report it by.
pub fn compile_sources(
    sources: &[(String, String)],
    opts: &Options,
) -> Result<Compiled, CompileError> {
    let mut builder = PackBuilder::new();
    let mut rules = Vec::new();
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();
    let mut ids = HashSet::new();
    for (path, text) in sources {
        // A byte-order mark (editors on Windows write one) is not part of the YAML.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let rule = match parse_rule(text) {
            Ok(r) => r,
            Err((rule_id, title, reason, at)) => {
                let line = match at.first().and_then(|a| a.strip_prefix("\0line ")) {
                    Some(n) => n.parse().ok(),
                    None => line_of_path(text, &at),
                };
                skipped.push(Skipped {
                    path: path.clone(),
                    line,
                    rule_id,
                    title,
                    reason,
                });
                continue;
            }
        };
        if !ids.insert(rule.id.clone()) {
            skipped.push(Skipped {
                path: path.clone(),
                line: line_of(text, "id:"),
                rule_id: Some(rule.id),
                title: Some(rule.title),
                reason: SkipReason::DuplicateId,
            });
            continue;
        }
        let spec = RuleSpec {
            event_type: rule.event_type,
            id: rule.id.clone(),
            title: rule.title.clone(),
            author: rule.author,
            level: rule.level,
            action: Action::Alert,
            tags: rule.tags,
            expr: rule.expr.clone(),
        };
        // A rule the builder refuses (over a per-rule limit) is skipped; the builder is left as
        // it was only if the refusal came before anything was added, so build a trial first.
        let mut trial = PackBuilder::new();
        if let Err(e) = trial.rule(spec.clone()) {
            skipped.push(Skipped {
                path: path.clone(),
                line: None,
                rule_id: Some(rule.id),
                title: Some(rule.title),
                reason: SkipReason::TooLarge(e.to_string()),
            });
            continue;
        }
        match builder.rule(spec) {
            Ok(index) => {
                if rule.derived_id {
                    warnings.push(Warning {
                        path: path.clone(),
                        line: None,
                        rule_id: rule.id.clone(),
                        title: rule.title.clone(),
                        message: "no id: this id is derived from the rule's text".into(),
                    });
                }
                for field in &rule.absent {
                    warnings.push(Warning {
                        path: path.clone(),
                        line: line_of_path(text, &["detection:".to_owned(), field.clone()]),
                        rule_id: rule.id.clone(),
                        title: rule.title.clone(),
                        message: format!(
                            "field {field} does not exist in {} events: compiled as absent",
                            rule.event_type.name()
                        ),
                    });
                }
                rules.push(CompiledRule {
                    index,
                    id: rule.id,
                    title: rule.title,
                    path: path.clone(),
                    event_type: rule.event_type,
                    fields: fields_of(rule.event_type, &rule.expr),
                })
            }
            Err(e) => return Err(CompileError::Limit(e.to_string())),
        }
    }
    if opts.strict && !skipped.is_empty() {
        return Err(CompileError::Strict {
            count: skipped.len(),
        });
    }
    let pack = builder.finish();
    bulwark_interpreter::verify(&pack).map_err(|e| CompileError::Rejected(Box::new(e)))?;
    Ok(Compiled {
        pack,
        rules,
        skipped,
        warnings,
    })
}
