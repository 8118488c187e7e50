//! The readable text form of packs: an assembler (`asm`) that checks syntax only, so that invalid
//! packs can be written on purpose for tests, and a disassembler (`disasm`) that prints any
//! structurally decodable pack, valid or not.
//!
//! ```text
//! ; a comment
//! schema builtin                  ; or: schema <64 hex digits>
//! event process_creation          ; declare event types (default: all, with the sensor's counts)
//! event process_creation fields 21
//! rule
//!   id "5f1c..."  title "Mimikatz"  author "Jane"   ; one directive per line
//!   level high
//!   action alert
//!   event process_creation
//!   tag "attack.t1003"
//!   anchor CommandLine "sekurlsa"
//!   str.contains CommandLine "sekurlsa::"           ; str.{eq,startswith,endswith,contains}[.cased]
//!   jf out
//!   glob Image "*\\mimikatz.exe"                     ; glob[.cased]
//!   out:
//!   ret
//! end
//! ```
//! Operands: a field by name or `#N`; a string as `"..."` (escapes `\\ \" \n \t \xNN`) or `$N`;
//! a set as `["a", "b"]` or `$N`; an integer as a number or `$N`; a regex as `"pattern"` (compiled
//! with the `build` feature) or `$N`; a jump target as a label or an instruction number. Other
//! instructions: `exists F`, `empty F`, `set.OP[.cased] F SET`, `regex[.i] F RE`,
//! `fieldeq[.cased] F G`, `int.{eq,lt,le,gt,ge} F N`, `not`, `const true|false`, `jt/jf/jmp L`,
//! `ret`, and `raw OP A B C X` for any 8 bytes. `dfa HEX` adds a serialized regex DFA to the
//! pack's table (the disassembler prints regexes this way, as their patterns are not kept).
//! `keywindow "TEXT" N` keys the string by its window starting at byte N instead of the one the
//! compiler chooses (the disassembler prints any such string this way). Header overrides for
//! tests: `magic "XXXX"`, `format N`, `flags N`; rule overrides: `reserved N`, `level N`,
//! `action N`, `event N`.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;

use crate::build::PackBuilder;
use crate::format::{RawPack, RawRule};
use crate::insn::{op, IntCmp, RawInsn, StrOp};
use crate::schema::EventType;
use crate::verify::{Action, Level};

/// A syntax error in assembly text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct AsmError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    List(Vec<String>),
}

fn lex(line: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ';' => break,
            c if c.is_whitespace() => {
                chars.next();
            }
            '"' => {
                chars.next();
                toks.push(Tok::Str(quoted(&mut chars)?));
            }
            '[' => {
                chars.next();
                let mut items = Vec::new();
                loop {
                    match chars.next() {
                        Some(']') => break,
                        Some('"') => items.push(quoted(&mut chars)?),
                        Some(c) if c == ',' || c.is_whitespace() => {}
                        Some(c) => {
                            return Err(format!(
                                "unexpected {c:?} in a list (items are quoted strings)"
                            ))
                        }
                        None => return Err(String::from("unterminated list")),
                    }
                }
                toks.push(Tok::List(items));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == ';' || c == '"' || c == '[' {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                toks.push(Tok::Word(w));
            }
        }
    }
    Ok(toks)
}

fn quoted(chars: &mut core::iter::Peekable<core::str::Chars<'_>>) -> Result<String, String> {
    let mut s = String::new();
    loop {
        match chars.next() {
            None => return Err(String::from("unterminated string")),
            Some('"') => return Ok(s),
            Some('\\') => match chars.next() {
                Some('\\') => s.push('\\'),
                Some('"') => s.push('"'),
                Some('n') => s.push('\n'),
                Some('t') => s.push('\t'),
                Some('x') => {
                    let h: String = [chars.next(), chars.next()].into_iter().flatten().collect();
                    let b = u8::from_str_radix(&h, 16).map_err(|_| format!("bad escape \\x{h}"))?;
                    s.push(char::from(b));
                }
                Some(c) => return Err(format!("unknown escape \\{c}")),
                None => return Err(String::from("unterminated string")),
            },
            Some(c) => s.push(c),
        }
    }
}

/// Quotes a string for assembly text.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn parse_num(w: &str) -> Option<u64> {
    if let Some(h) = w.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else {
        w.parse().ok()
    }
}

struct Asm {
    b: PackBuilder,
    declared: Option<Vec<(u8, u8)>>,
}

struct RuleAsm {
    rule: RawRule,
    event_type: Option<u8>,
    labels: BTreeMap<String, u32>,
    fixups: Vec<(usize, String, usize)>, // (insn index, label, line)
}

/// Assembles text into pack bytes. Only the syntax is checked: the result may well be rejected by
/// the verifier, which is the point of writing invalid examples.
pub fn asm(text: &str) -> Result<Vec<u8>, AsmError> {
    let mut a = Asm {
        b: PackBuilder::new(),
        declared: None,
    };
    let mut cur: Option<RuleAsm> = None;
    let mut checksum_bad = false;
    for (n, line) in text.lines().enumerate() {
        let line_no = n.saturating_add(1);
        let err = |message: String| AsmError {
            line: line_no,
            message,
        };
        let toks = lex(line).map_err(err)?;
        let Some((head, args)) = toks.split_first() else {
            continue;
        };
        let Tok::Word(head) = head else {
            return Err(err(String::from(
                "a line starts with a directive or an instruction",
            )));
        };
        if let Some(r) = cur.as_mut() {
            if head == "end" {
                let mut r = cur
                    .take()
                    .ok_or_else(|| err(String::from("end outside a rule")))?;
                for (i, label, _) in core::mem::take(&mut r.fixups) {
                    let t = *r
                        .labels
                        .get(&label)
                        .ok_or_else(|| err(format!("undefined label {label}")))?;
                    if let Some(insn) = r.rule.code.get_mut(i) {
                        insn.x = t;
                    }
                }
                a.b.raw_mut().rules.push(r.rule);
                continue;
            }
            a.rule_line(r, head, args).map_err(err)?;
            continue;
        }
        match (head.as_str(), args) {
            ("rule", []) => {
                cur = Some(RuleAsm {
                    rule: RawRule::default(),
                    event_type: None,
                    labels: BTreeMap::new(),
                    fixups: Vec::new(),
                });
            }
            ("schema", [Tok::Word(w)]) if w == "builtin" => {}
            ("schema", [Tok::Word(w)]) => {
                let mut h = [0u8; 32];
                if w.len() != 64 {
                    return Err(err(String::from("schema hash must be 64 hex digits")));
                }
                for (i, slot) in h.iter_mut().enumerate() {
                    let pair = w
                        .get(i.saturating_mul(2)..i.saturating_mul(2).saturating_add(2))
                        .unwrap_or("");
                    *slot = u8::from_str_radix(pair, 16)
                        .map_err(|_| err(format!("bad hex {pair:?}")))?;
                }
                a.b.raw_mut().schema_hash = h;
            }
            ("magic", [Tok::Str(s)]) if s.len() == 4 => {
                let mut m = [0u8; 4];
                m.copy_from_slice(s.as_bytes());
                a.b.raw_mut().magic = m;
            }
            ("format", [Tok::Word(w)]) => {
                a.b.raw_mut().format_version = parse_num(w)
                    .and_then(|v| u16::try_from(v).ok())
                    .ok_or_else(|| err(format!("bad format version {w}")))?
            }
            ("flags", [Tok::Word(w)]) => {
                a.b.raw_mut().flags = parse_num(w)
                    .and_then(|v| u16::try_from(v).ok())
                    .ok_or_else(|| err(format!("bad flags {w}")))?
            }
            ("checksum", [Tok::Word(w)]) if w == "bad" => checksum_bad = true,
            ("keywindow", [Tok::Str(text), Tok::Word(w)]) => {
                let start = parse_num(w)
                    .and_then(|v| u16::try_from(v).ok())
                    .ok_or_else(|| err(format!("bad key window start {w}")))?;
                let index = a.b.string(text);
                a.b.raw_mut()
                    .strings
                    .set_key_window(usize::try_from(index).unwrap_or(usize::MAX), start);
            }
            ("dfa", [Tok::Word(h)]) => {
                let bytes = unhex(h)
                    .ok_or_else(|| err(String::from("dfa takes the DFA's bytes in hex")))?;
                a.b.raw_regex(bytes);
            }
            ("event", [Tok::Word(name), rest @ ..]) => {
                let id = event_id(name).ok_or_else(|| err(format!("unknown event type {name}")))?;
                let count = match rest {
                    [] => EventType::from_id(id)
                        .map(|t| t.field_count())
                        .ok_or_else(|| err(format!("event type id {id} needs `fields N`")))?,
                    [Tok::Word(f), Tok::Word(n)] if f == "fields" => parse_num(n)
                        .and_then(|v| u8::try_from(v).ok())
                        .ok_or_else(|| err(format!("bad field count {n}")))?,
                    _ => return Err(err(String::from("usage: event NAME [fields N]"))),
                };
                a.declared.get_or_insert_with(Vec::new).push((id, count));
            }
            _ => return Err(err(format!("unknown directive {head}"))),
        }
    }
    if cur.is_some() {
        return Err(AsmError {
            line: text.lines().count(),
            message: String::from("rule without end"),
        });
    }
    if let Some(d) = a.declared.take() {
        a.b.raw_mut().event_types = d;
    }
    let mut bytes = a.b.finish_as_is();
    if checksum_bad {
        if let Some(last) = bytes.last_mut() {
            *last ^= 0xff;
        }
    }
    Ok(bytes)
}

fn event_id(name: &str) -> Option<u8> {
    EventType::from_name(name)
        .map(|t| t.id())
        .or_else(|| parse_num(name).and_then(|v| u8::try_from(v).ok()))
}

impl Asm {
    fn string(&mut self, t: &Tok) -> Result<u32, String> {
        match t {
            Tok::Str(s) => Ok(self.b.string(s)),
            Tok::Word(w) => {
                raw_ref(w).ok_or_else(|| format!("expected a quoted string or $N, found {w}"))
            }
            Tok::List(_) => Err(String::from("expected a string, found a list")),
        }
    }

    fn rule_line(&mut self, r: &mut RuleAsm, head: &str, args: &[Tok]) -> Result<(), String> {
        let word = |t: Option<&Tok>| match t {
            Some(Tok::Word(w)) => Ok(w.clone()),
            _ => Err(format!("{head}: expected a word operand")),
        };
        let want = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!("{head} takes {n} operand(s), {} given", args.len()))
            }
        };
        if let Some(label) = head.strip_suffix(':') {
            want(0)?;
            let pc = u32::try_from(r.rule.code.len()).map_err(|_| String::from("rule too long"))?;
            if r.labels.insert(String::from(label), pc).is_some() {
                return Err(format!("label {label} defined twice"));
            }
            return Ok(());
        }
        let field = |r: &RuleAsm, t: Option<&Tok>| -> Result<u8, String> {
            let w = word(t)?;
            if let Some(n) = w.strip_prefix('#') {
                return parse_num(n)
                    .and_then(|v| u8::try_from(v).ok())
                    .ok_or_else(|| format!("bad field index {w}"));
            }
            let et = r.event_type.and_then(EventType::from_id).ok_or_else(|| {
                format!("field {w} by name needs a known `event` before the code (or use #N)")
            })?;
            et.field_by_name(&w)
                .map(|f| f.index)
                .ok_or_else(|| format!("{} has no field {w}", et.name()))
        };
        let mut parts = head.split('.');
        let mnemonic = parts.next().unwrap_or("");
        let suffixes: Vec<&str> = parts.collect();
        let cased = suffixes.contains(&"cased");
        let mut insn = RawInsn {
            c: u8::from(cased),
            ..RawInsn::default()
        };
        let push = |r: &mut RuleAsm, insn: RawInsn| r.rule.code.push(insn);
        match mnemonic {
            "id" | "title" | "author" | "tag" => {
                want(1)?;
                let s = self.string(&args[..].first().cloned().ok_or("missing operand")?)?;
                match mnemonic {
                    "id" => r.rule.id = s,
                    "title" => r.rule.title = s,
                    "author" => r.rule.author = s,
                    _ => r.rule.tags.push(s),
                }
            }
            "level" => {
                want(1)?;
                let w = word(args.first())?;
                r.rule.level = Level::from_name(&w)
                    .map(|l| l as u8)
                    .or_else(|| parse_num(&w).and_then(|v| u8::try_from(v).ok()))
                    .ok_or_else(|| format!("bad level {w}"))?;
            }
            "action" => {
                want(1)?;
                let w = word(args.first())?;
                r.rule.action = Action::from_name(&w)
                    .map(|a| a as u8)
                    .or_else(|| parse_num(&w).and_then(|v| u8::try_from(v).ok()))
                    .ok_or_else(|| format!("bad action {w}"))?;
            }
            "reserved" => {
                want(1)?;
                let w = word(args.first())?;
                r.rule.reserved = parse_num(&w)
                    .and_then(|v| u8::try_from(v).ok())
                    .ok_or_else(|| format!("bad byte {w}"))?;
            }
            "event" => {
                want(1)?;
                let w = word(args.first())?;
                let id = event_id(&w).ok_or_else(|| format!("unknown event type {w}"))?;
                r.event_type = Some(id);
                r.rule.event_type = id;
            }
            "anchor" => {
                want(2)?;
                let f = field(r, args.first())?;
                let s = self.string(args.get(1).ok_or("missing string")?)?;
                r.rule.anchors.push((f, s));
            }
            "exists" | "empty" => {
                want(1)?;
                insn.op = if mnemonic == "exists" {
                    op::EXISTS
                } else {
                    op::EMPTY
                };
                insn.c = 0;
                insn.a = field(r, args.first())?;
                push(r, insn);
            }
            "str" | "set" => {
                want(2)?;
                let o = suffixes
                    .first()
                    .and_then(|s| StrOp::from_name(s))
                    .ok_or_else(|| {
                        format!("{head}: say {mnemonic}.eq, .startswith, .endswith or .contains")
                    })?;
                insn.op = if mnemonic == "str" { op::STR } else { op::SET };
                insn.a = field(r, args.first())?;
                insn.b = o as u8;
                let operand = args.get(1).ok_or("missing operand")?;
                insn.x = if mnemonic == "str" {
                    self.string(operand)?
                } else {
                    match operand {
                        Tok::List(items) => self.b.string_set(items),
                        Tok::Word(w) => raw_ref(w)
                            .ok_or_else(|| format!("expected a [list] or $N, found {w}"))?,
                        Tok::Str(_) => {
                            return Err(String::from("a set operand is a [list] of strings"))
                        }
                    }
                };
                push(r, insn);
            }
            "glob" => {
                want(2)?;
                insn.op = op::GLOB;
                insn.a = field(r, args.first())?;
                insn.x = self.string(args.get(1).ok_or("missing pattern")?)?;
                push(r, insn);
            }
            "regex" => {
                want(2)?;
                insn.op = op::REGEX;
                insn.c = 0;
                insn.a = field(r, args.first())?;
                insn.x = match args.get(1) {
                    Some(Tok::Word(w)) => raw_ref(w)
                        .ok_or_else(|| format!("expected a quoted pattern or $N, found {w}"))?,
                    #[cfg(feature = "build")]
                    Some(Tok::Str(p)) => self
                        .b
                        .regex(p, suffixes.contains(&"i"))
                        .map_err(|e| e.to_string())?,
                    #[cfg(not(feature = "build"))]
                    Some(Tok::Str(_)) => {
                        return Err(String::from("regex patterns need the `build` feature"))
                    }
                    _ => return Err(String::from("regex takes a field and a pattern")),
                };
                push(r, insn);
            }
            "fieldeq" => {
                want(2)?;
                insn.op = op::FIELDEQ;
                insn.a = field(r, args.first())?;
                insn.b = field(r, args.get(1))?;
                push(r, insn);
            }
            "int" => {
                want(2)?;
                let cmp = suffixes
                    .first()
                    .and_then(|s| IntCmp::from_name(s))
                    .ok_or_else(|| format!("{head}: say int.eq, .lt, .le, .gt or .ge"))?;
                insn = RawInsn {
                    op: op::INT,
                    a: field(r, args.first())?,
                    b: cmp as u8,
                    c: 0,
                    x: 0,
                };
                let w = word(args.get(1))?;
                insn.x = match raw_ref(&w) {
                    Some(i) => i,
                    None => self
                        .b
                        .int(parse_num(&w).ok_or_else(|| format!("bad integer {w}"))?),
                };
                push(r, insn);
            }
            "not" | "ret" => {
                want(0)?;
                push(
                    r,
                    RawInsn {
                        op: if mnemonic == "not" { op::NOT } else { op::RET },
                        ..RawInsn::default()
                    },
                );
            }
            "const" => {
                want(1)?;
                let w = word(args.first())?;
                let a = match w.as_str() {
                    "true" => 1,
                    "false" => 0,
                    other => parse_num(other)
                        .and_then(|v| u8::try_from(v).ok())
                        .ok_or_else(|| format!("bad constant {other}"))?,
                };
                push(
                    r,
                    RawInsn {
                        op: op::CONST,
                        a,
                        ..RawInsn::default()
                    },
                );
            }
            "jt" | "jf" | "jmp" => {
                want(1)?;
                let o = match mnemonic {
                    "jt" => op::JT,
                    "jf" => op::JF,
                    _ => op::JMP,
                };
                let w = word(args.first())?;
                let x = match parse_num(&w) {
                    Some(n) => u32::try_from(n).map_err(|_| format!("bad target {w}"))?,
                    None => {
                        r.fixups.push((r.rule.code.len(), w, 0));
                        0
                    }
                };
                push(
                    r,
                    RawInsn {
                        op: o,
                        x,
                        ..RawInsn::default()
                    },
                );
            }
            "raw" => {
                want(5)?;
                let mut v = [0u64; 5];
                for (slot, t) in v.iter_mut().zip(args) {
                    let w = word(Some(t))?;
                    *slot = parse_num(&w).ok_or_else(|| format!("bad number {w}"))?;
                }
                let byte = |i: usize| {
                    u8::try_from(v.get(i).copied().unwrap_or(0))
                        .map_err(|_| String::from("raw operands a, b, c are bytes"))
                };
                let x = u32::try_from(v.get(4).copied().unwrap_or(0))
                    .map_err(|_| String::from("raw operand x is 32 bits"))?;
                push(
                    r,
                    RawInsn {
                        op: byte(0)?,
                        a: byte(1)?,
                        b: byte(2)?,
                        c: byte(3)?,
                        x,
                    },
                );
            }
            other => return Err(format!("unknown instruction or directive {other}")),
        }
        Ok(())
    }
}

fn unhex(h: &str) -> Option<Vec<u8>> {
    if h.len() % 2 != 0 || !h.is_ascii() {
        return None;
    }
    h.as_bytes()
        .chunks(2)
        .map(|p| {
            core::str::from_utf8(p)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}

fn raw_ref(w: &str) -> Option<u32> {
    w.strip_prefix('$')
        .and_then(parse_num)
        .and_then(|v| u32::try_from(v).ok())
}

/// Disassembles pack bytes into assembly text. The container must decode (the checksum must
/// match); the contents are printed whether or not they would verify.
pub fn disasm(bytes: &[u8]) -> Result<String, crate::VerifyError> {
    let raw = RawPack::decode(bytes)?;
    Ok(disasm_raw(&raw))
}

fn disasm_raw(raw: &RawPack) -> String {
    let mut o = String::new();
    let hash: String = raw.schema_hash.iter().map(|b| format!("{b:02x}")).collect();
    let builtin = raw.schema_hash == crate::schema::schema_hash();
    let _ = writeln!(
        o,
        "; Bulwark pack, format {}, {} rules",
        raw.format_version,
        raw.rules.len()
    );
    if raw.magic != crate::format::MAGIC {
        let _ = writeln!(o, "magic {}", quote(&String::from_utf8_lossy(&raw.magic)));
    }
    if raw.format_version != crate::format::FORMAT_VERSION {
        let _ = writeln!(o, "format {}", raw.format_version);
    }
    if raw.flags != 0 {
        let _ = writeln!(o, "flags {}", raw.flags);
    }
    let _ = writeln!(o, "schema {}", if builtin { "builtin" } else { &hash });
    for (id, n) in &raw.event_types {
        match EventType::from_id(*id) {
            Some(t) if t.field_count() == *n => {
                let _ = writeln!(o, "event {}", t.name());
            }
            Some(t) => {
                let _ = writeln!(o, "event {} fields {n}", t.name());
            }
            None => {
                let _ = writeln!(o, "event {id} fields {n}");
            }
        }
    }
    // Key windows other than the one the compiler would choose (any inside the string is valid).
    for (i, bytes) in raw.strings.iter().enumerate() {
        let start = raw.strings.key_window(i).unwrap_or(0);
        let chosen = crate::gramindex::key_window_start(bytes);
        if let (Ok(text), false) = (core::str::from_utf8(bytes), usize::from(start) == chosen) {
            let _ = writeln!(o, "keywindow {} {start}", quote(text));
        }
    }
    for (i, r) in raw.regexes.iter().enumerate() {
        let _ = writeln!(o, "; regex ${i}: a {}-byte serialized DFA", r.len());
        let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(o, "dfa {hex}");
    }
    let s = |i: u32| match raw.strings.get(usize::try_from(i).unwrap_or(usize::MAX)) {
        Some(b) => match core::str::from_utf8(b) {
            Ok(s) => quote(s),
            Err(_) => format!("${i} ; not UTF-8"),
        },
        None => format!("${i}"),
    };
    for (ri, r) in raw.rules.iter().enumerate() {
        let t = EventType::from_id(r.event_type);
        let f = |i: u8| match t.and_then(|t| t.field(i)) {
            Some(def) => String::from(def.name),
            None => format!("#{i}"),
        };
        let _ = writeln!(o, "\nrule ; {ri}");
        let _ = writeln!(o, "  id {}", s(r.id));
        let _ = writeln!(o, "  title {}", s(r.title));
        let _ = writeln!(o, "  author {}", s(r.author));
        let _ = writeln!(
            o,
            "  level {}",
            Level::from_u8(r.level).map_or_else(|| r.level.to_string(), |l| String::from(l.name()))
        );
        let _ = writeln!(
            o,
            "  action {}",
            Action::from_u8(r.action)
                .map_or_else(|| r.action.to_string(), |a| String::from(a.name()))
        );
        let _ = writeln!(
            o,
            "  event {}",
            t.map_or_else(|| r.event_type.to_string(), |t| String::from(t.name()))
        );
        if r.reserved != 0 {
            let _ = writeln!(o, "  reserved {}", r.reserved);
        }
        for tag in &r.tags {
            let _ = writeln!(o, "  tag {}", s(*tag));
        }
        for (fi, si) in &r.anchors {
            let _ = writeln!(o, "  anchor {} {}", f(*fi), s(*si));
        }
        let targets: Vec<u32> = r
            .code
            .iter()
            .filter(|i| matches!(i.op, op::JT | op::JF | op::JMP))
            .map(|i| i.x)
            .collect();
        let n = r.code.len();
        for (pc, i) in r.code.iter().enumerate() {
            let pc32 = u32::try_from(pc).unwrap_or(u32::MAX);
            if targets.contains(&pc32) {
                let _ = writeln!(o, "  L{pc}:");
            }
            let case = if i.c == 1 { ".cased" } else { "" };
            let line = match (i.op, StrOp::from_u8(i.b), IntCmp::from_u8(i.b)) {
                (op::EXISTS, _, _) if i.b == 0 && i.c == 0 && i.x == 0 => {
                    format!("exists {}", f(i.a))
                }
                (op::EMPTY, _, _) if i.b == 0 && i.c == 0 && i.x == 0 => {
                    format!("empty {}", f(i.a))
                }
                (op::STR, Some(so), _) if i.c <= 1 => {
                    format!("str.{}{case} {} {}", so.name(), f(i.a), s(i.x))
                }
                (op::GLOB, _, _) if i.b == 0 && i.c <= 1 => {
                    format!("glob{case} {} {}", f(i.a), s(i.x))
                }
                (op::SET, Some(so), _) if i.c <= 1 => {
                    let items = match raw.sets.get(usize::try_from(i.x).unwrap_or(usize::MAX)) {
                        Some(items) => format!(
                            "[{}]",
                            items.iter().map(|x| s(*x)).collect::<Vec<_>>().join(", ")
                        ),
                        None => format!("${}", i.x),
                    };
                    format!("set.{}{case} {} {items}", so.name(), f(i.a))
                }
                (op::REGEX, _, _) if i.b == 0 && i.c == 0 => format!("regex {} ${}", f(i.a), i.x),
                (op::FIELDEQ, _, _) if i.c <= 1 && i.x == 0 => {
                    format!("fieldeq{case} {} {}", f(i.a), f(i.b))
                }
                (op::INT, _, Some(cmp)) if i.c == 0 => {
                    match raw.ints.get(usize::try_from(i.x).unwrap_or(usize::MAX)) {
                        Some(v) => format!("int.{} {} {v}", cmp.name(), f(i.a)),
                        None => format!("int.{} {} ${}", cmp.name(), f(i.a), i.x),
                    }
                }
                (op::NOT, _, _) if (i.a, i.b, i.c, i.x) == (0, 0, 0, 0) => String::from("not"),
                (op::RET, _, _) if (i.a, i.b, i.c, i.x) == (0, 0, 0, 0) => String::from("ret"),
                (op::CONST, _, _) if i.a <= 1 && (i.b, i.c, i.x) == (0, 0, 0) => {
                    format!("const {}", i.a == 1)
                }
                (op::JT | op::JF | op::JMP, _, _) if (i.a, i.b, i.c) == (0, 0, 0) => {
                    let m = match i.op {
                        op::JT => "jt",
                        op::JF => "jf",
                        _ => "jmp",
                    };
                    let in_range = usize::try_from(i.x).is_ok_and(|x| x > pc && x < n);
                    if in_range {
                        format!("{m} L{}", i.x)
                    } else {
                        format!("{m} {}", i.x)
                    }
                }
                _ => format!("raw {:#04x} {} {} {} {}", i.op, i.a, i.b, i.c, i.x),
            };
            let _ = writeln!(o, "  {line}");
        }
        let _ = writeln!(o, "end");
    }
    o
}
