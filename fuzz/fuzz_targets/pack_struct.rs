//! Structure-aware verify + run: a decoded pack (`RawPack`) is mutated field by field (header,
//! event types, strings and their key windows, sets, integers, regex bytes, rules' headers, tags,
//! anchors and code), then encoded, which writes a correct length and checksum, so every input
//! reaches the verifier's semantic checks. The base pack is one built here with every kind of
//! instruction, a minimal one, or any pack given in the input (length and checksum fixed up).
//!
//! Checked: verify returns Ok or Err without panicking; the disassembler does too; what decodes
//! encodes back to the same bytes; whatever verifies evaluates events of every type, with values
//! made of the pack's own strings, without a runtime error.
#![no_main]

use std::sync::OnceLock;

use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::format::{RawPack, StringTable, CHECKSUM_BYTES};
use bulwark_interpreter::insn::{op, RawInsn};
use bulwark_interpreter::{
    verify, Action, Case, Event, EventType, FieldType, FieldValue, IntCmp, Level, StrOp,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use sha2::{Digest, Sha256};

fn rich_pack() -> Vec<u8> {
    let mut b = PackBuilder::new();
    let s = |field, op, case, value: &str| {
        Expr::Pred(Pred::Str {
            field,
            op,
            case,
            value: value.into(),
        })
    };
    let set = |field, op, values: &[&str]| {
        Expr::Pred(Pred::Set {
            field,
            op,
            case: Case::Insensitive,
            values: values.iter().map(|v| v.to_string()).collect(),
        })
    };
    let rules: Vec<(EventType, Expr)> = vec![
        (
            EventType::ProcessCreation,
            Expr::And(vec![
                s(0, StrOp::EndsWith, Case::Insensitive, "\\cmd.exe"),
                Expr::Or(vec![
                    s(1, StrOp::Contains, Case::Insensitive, " /c "),
                    s(1, StrOp::StartsWith, Case::Sensitive, "CMD"),
                ]),
                Expr::Not(Box::new(s(2, StrOp::Eq, Case::Insensitive, "explorer.exe"))),
            ]),
        ),
        (
            EventType::ProcessCreation,
            Expr::Or(vec![
                set(
                    1,
                    StrOp::Contains,
                    &["mimikatz", "sekurlsa", "procdump", "-enc", "`"],
                ),
                set(
                    0,
                    StrOp::EndsWith,
                    &["\\a.exe", "\\b.exe", "\\c.exe", "\\d.exe"],
                ),
                set(2, StrOp::StartsWith, &["c:\\temp\\", "c:\\users\\"]),
                set(4, StrOp::Eq, &["x.exe", "y.exe", "z.exe", "w.exe", "v.exe"]),
            ]),
        ),
        (
            EventType::ProcessCreation,
            Expr::And(vec![
                Expr::Pred(Pred::Glob {
                    field: 0,
                    case: Case::Insensitive,
                    pattern: "c:\\\\*\\power?hell*.exe".into(),
                }),
                Expr::Pred(Pred::Regex {
                    field: 1,
                    pattern: "-e(nc|ncodedcommand)\\s+[a-z0-9+/=]{8,}".into(),
                    case_insensitive: true,
                }),
            ]),
        ),
        (
            EventType::ProcessCreation,
            Expr::Or(vec![
                Expr::Pred(Pred::FieldEq {
                    field: 0,
                    other: 2,
                    case: Case::Insensitive,
                }),
                Expr::Pred(Pred::Int {
                    field: 14,
                    cmp: IntCmp::Lt,
                    value: 8,
                }),
                Expr::Pred(Pred::Exists { field: 5 }),
                Expr::Pred(Pred::Empty { field: 1 }),
                Expr::Const(false),
            ]),
        ),
        (
            EventType::ImageLoad,
            Expr::And(vec![
                s(1, StrOp::EndsWith, Case::Insensitive, "\\dbghelp.dll"),
                Expr::Not(Box::new(Expr::Pred(Pred::Glob {
                    field: 0,
                    case: Case::Sensitive,
                    pattern: "*\\Windows\\*".into(),
                }))),
            ]),
        ),
        (
            EventType::RegistryEvent,
            Expr::And(vec![
                s(
                    1,
                    StrOp::Contains,
                    Case::Insensitive,
                    "\\currentversion\\run",
                ),
                Expr::Pred(Pred::Regex {
                    field: 2,
                    pattern: "(?i)\\.(ps1|vbs|js)$".into(),
                    case_insensitive: false,
                }),
            ]),
        ),
    ];
    for (i, (event_type, expr)) in rules.into_iter().enumerate() {
        b.rule(RuleSpec {
            event_type,
            id: format!("rule-{i}"),
            title: format!("rule {i}"),
            author: "pack_struct".into(),
            level: Level::High,
            action: if i == 0 { Action::Block } else { Action::Alert },
            tags: vec!["attack.execution".into(), format!("attack.t10{i}")],
            expr,
        })
        .expect("a valid rule");
    }
    b.finish()
}

fn small_pack() -> Vec<u8> {
    let mut b = PackBuilder::new();
    b.rule(RuleSpec {
        event_type: EventType::ProcessCreation,
        id: "r".into(),
        title: "t".into(),
        author: "a".into(),
        level: Level::Low,
        action: Action::Alert,
        tags: vec![],
        expr: Expr::Pred(Pred::Str {
            field: 1,
            op: StrOp::Contains,
            case: Case::Insensitive,
            value: "whoami".into(),
        }),
    })
    .expect("a valid rule");
    b.finish()
}

fn bases() -> &'static [RawPack] {
    static BASES: OnceLock<Vec<RawPack>> = OnceLock::new();
    BASES.get_or_init(|| {
        [rich_pack(), small_pack()]
            .iter()
            .map(|p| {
                verify(p).expect("the base packs verify");
                RawPack::decode(p).expect("the base packs decode")
            })
            .collect()
    })
}

fn fix_up(pack: &mut [u8]) {
    if pack.len() < 12 + CHECKSUM_BYTES {
        return;
    }
    let total = u32::try_from(pack.len()).unwrap_or(u32::MAX).to_le_bytes();
    pack[8..12].copy_from_slice(&total);
    let body = pack.len() - CHECKSUM_BYTES;
    let sum: [u8; 32] = Sha256::digest(&pack[..body]).into();
    pack[body..].copy_from_slice(&sum);
}

/// An index into a table of `len`: mostly valid, sometimes just past the end, sometimes anything.
fn index(u: &mut Unstructured, len: usize) -> Result<u32> {
    Ok(match u.int_in_range(0..=9)? {
        0 => len as u32,
        1 => u.arbitrary()?,
        _ if len == 0 => 0,
        _ => u.choose_index(len)? as u32,
    })
}

/// A position in a list of `len` (for an insertion: up to `len`).
fn position(u: &mut Unstructured, len: usize) -> Result<usize> {
    u.int_in_range(0..=len)
}

/// A small value, usually: field numbers, opcodes, operands and enum bytes are all small.
fn small_u8(u: &mut Unstructured) -> Result<u8> {
    Ok(if u.ratio(3, 4)? {
        u.int_in_range(0..=24)?
    } else {
        u.arbitrary()?
    })
}

const OPCODES: &[u8] = &[
    op::EXISTS,
    op::EMPTY,
    op::STR,
    op::GLOB,
    op::SET,
    op::REGEX,
    op::FIELDEQ,
    op::INT,
    op::NOT,
    op::CONST,
    op::JT,
    op::JF,
    op::JMP,
    op::RET,
];

fn insn(u: &mut Unstructured, code_len: usize) -> Result<RawInsn> {
    let opcode = if u.ratio(7, 8)? {
        *u.choose(OPCODES)?
    } else {
        u.arbitrary()?
    };
    let x = match opcode {
        op::JT | op::JF | op::JMP => index(u, code_len + 1)?,
        _ => index(u, 8)?,
    };
    Ok(RawInsn {
        op: opcode,
        a: small_u8(u)?,
        b: if u.ratio(1, 2)? { 0 } else { small_u8(u)? },
        c: if u.ratio(1, 2)? { 0 } else { small_u8(u)? },
        x,
    })
}

fn strings_of(raw: &RawPack) -> Vec<(Vec<u8>, u16)> {
    (0..raw.strings.len())
        .map(|i| {
            (
                raw.strings.get(i).unwrap_or(&[]).to_vec(),
                raw.strings.key_window(i).unwrap_or(0),
            )
        })
        .collect()
}

fn set_strings(raw: &mut RawPack, strings: Vec<(Vec<u8>, u16)>) {
    let mut table = StringTable::default();
    for (s, k) in strings {
        table.push_keyed(&s, k);
    }
    raw.strings = table;
}

fn mutate(u: &mut Unstructured, raw: &mut RawPack) -> Result<()> {
    let n_rules = raw.rules.len();
    let n_strings = raw.strings.len();
    match u.int_in_range(0..=17)? {
        // An instruction's operand, opcode or jump target.
        0 | 1 | 2 => {
            if n_rules == 0 {
                return Ok(());
            }
            let r = u.choose_index(n_rules)?;
            let code = &mut raw.rules[r].code;
            if code.is_empty() {
                return Ok(());
            }
            let len = code.len();
            let i = u.choose_index(len)?;
            let target = &mut code[i];
            match u.int_in_range(0..=4)? {
                0 => target.op = *u.choose(OPCODES)?,
                1 => target.a = small_u8(u)?,
                2 => target.b = small_u8(u)?,
                3 => target.c = small_u8(u)?,
                _ => target.x = index(u, len.max(8))?,
            }
        }
        // Instructions inserted, removed, replaced.
        3 => {
            if n_rules == 0 {
                return Ok(());
            }
            let r = u.choose_index(n_rules)?;
            let len = raw.rules[r].code.len();
            let new = insn(u, len)?;
            let at = position(u, len)?;
            raw.rules[r].code.insert(at, new);
        }
        4 => {
            if n_rules == 0 {
                return Ok(());
            }
            let r = u.choose_index(n_rules)?;
            let code = &mut raw.rules[r].code;
            if !code.is_empty() {
                let at = u.choose_index(code.len())?;
                if u.arbitrary()? {
                    code.remove(at);
                } else {
                    code.truncate(at);
                }
            }
        }
        // A rule's header and string references.
        5 => {
            if n_rules == 0 {
                return Ok(());
            }
            let r = &mut raw.rules[u.choose_index(n_rules)?];
            match u.int_in_range(0..=6)? {
                0 => r.event_type = small_u8(u)? % 5,
                1 => r.level = small_u8(u)? % 7,
                2 => r.action = small_u8(u)? % 3,
                3 => r.reserved = small_u8(u)?,
                4 => r.id = index(u, n_strings)?,
                5 => r.title = index(u, n_strings)?,
                _ => r.author = index(u, n_strings)?,
            }
        }
        // Tags.
        6 => {
            if n_rules == 0 {
                return Ok(());
            }
            let r = &mut raw.rules[u.choose_index(n_rules)?];
            if u.arbitrary()? || r.tags.is_empty() {
                r.tags.push(index(u, n_strings)?);
            } else {
                let at = u.choose_index(r.tags.len())?;
                r.tags.remove(at);
            }
        }
        // Anchors: added (any field, any string), removed, changed.
        7 | 8 => {
            if n_rules == 0 {
                return Ok(());
            }
            let r = &mut raw.rules[u.choose_index(n_rules)?];
            match u.int_in_range(0..=3)? {
                0 | 1 => r.anchors.push((small_u8(u)?, index(u, n_strings)?)),
                2 if !r.anchors.is_empty() => {
                    let at = u.choose_index(r.anchors.len())?;
                    r.anchors.remove(at);
                }
                _ if !r.anchors.is_empty() => {
                    let at = u.choose_index(r.anchors.len())?;
                    r.anchors[at] = (small_u8(u)?, index(u, n_strings)?);
                }
                _ => r.anchors.clear(),
            }
        }
        // Strings: new ones (any bytes), bytes changed, cut, swapped, key windows moved.
        9 | 10 => {
            let mut strings = strings_of(raw);
            match u.int_in_range(0..=4)? {
                0 => {
                    let len = u.int_in_range(0..=24)?;
                    let bytes = u.bytes(len.min(u.len()))?.to_vec();
                    let key = u.int_in_range(0..=4)?;
                    strings.push((bytes, key));
                }
                1 if !strings.is_empty() => {
                    let i = u.choose_index(strings.len())?;
                    let s = &mut strings[i].0;
                    if !s.is_empty() {
                        let at = u.choose_index(s.len())?;
                        s[at] = u.arbitrary()?;
                    }
                }
                2 if !strings.is_empty() => {
                    let i = u.choose_index(strings.len())?;
                    let s = &mut strings[i].0;
                    let keep = u.int_in_range(0..=s.len())?;
                    s.truncate(keep);
                }
                3 if strings.len() > 1 => {
                    let i = u.choose_index(strings.len())?;
                    let j = u.choose_index(strings.len())?;
                    strings.swap(i, j);
                }
                _ if !strings.is_empty() => {
                    let i = u.choose_index(strings.len())?;
                    strings[i].1 = if u.ratio(3, 4)? {
                        u.int_in_range(0..=8)?
                    } else {
                        u.arbitrary()?
                    };
                }
                _ => {}
            }
            set_strings(raw, strings);
        }
        // Sets.
        11 => match u.int_in_range(0..=3)? {
            0 => {
                let n = u.int_in_range(0..=6)?;
                let items = (0..n).map(|_| index(u, n_strings)).collect::<Result<_>>()?;
                raw.sets.push(items);
            }
            _ if raw.sets.is_empty() => {}
            1 => {
                let i = u.choose_index(raw.sets.len())?;
                let item = index(u, n_strings)?;
                raw.sets[i].push(item);
            }
            2 => {
                let i = u.choose_index(raw.sets.len())?;
                if !raw.sets[i].is_empty() {
                    let at = u.choose_index(raw.sets[i].len())?;
                    raw.sets[i][at] = index(u, n_strings)?;
                }
            }
            _ => {
                let i = u.choose_index(raw.sets.len())?;
                let keep = u.int_in_range(0..=raw.sets[i].len())?;
                raw.sets[i].truncate(keep);
            }
        },
        // Integers.
        12 => {
            if raw.ints.is_empty() || u.arbitrary()? {
                raw.ints.push(u.arbitrary()?);
            } else {
                let i = u.choose_index(raw.ints.len())?;
                raw.ints[i] = u.arbitrary()?;
            }
        }
        // Regex DFA bytes: flipped, cut, duplicated, dropped.
        13 => {
            if raw.regexes.is_empty() {
                return Ok(());
            }
            let i = u.choose_index(raw.regexes.len())?;
            match u.int_in_range(0..=3)? {
                0 | 1 => {
                    let r = &mut raw.regexes[i];
                    if !r.is_empty() {
                        let at = u.choose_index(r.len())?;
                        r[at] ^= u.arbitrary::<u8>()? | 1;
                    }
                }
                2 => {
                    let r = &mut raw.regexes[i];
                    let keep = u.int_in_range(0..=r.len())?;
                    r.truncate(keep);
                }
                _ => {
                    let r = raw.regexes[i].clone();
                    raw.regexes.push(r);
                }
            }
        }
        // Declared event types.
        14 => match u.int_in_range(0..=3)? {
            0 => raw.event_types.push((small_u8(u)? % 5, small_u8(u)?)),
            _ if raw.event_types.is_empty() => {}
            1 => {
                let at = u.choose_index(raw.event_types.len())?;
                raw.event_types.remove(at);
            }
            2 => {
                let at = u.choose_index(raw.event_types.len())?;
                raw.event_types[at].0 = small_u8(u)? % 5;
            }
            _ => {
                let at = u.choose_index(raw.event_types.len())?;
                let count = &mut raw.event_types[at].1;
                *count = if u.arbitrary()? {
                    count.wrapping_add(1)
                } else {
                    count.wrapping_sub(1)
                };
            }
        },
        // The header.
        15 => match u.int_in_range(0..=3)? {
            0 => raw.flags = u.arbitrary()?,
            1 => raw.format_version = u.int_in_range(0..=3)?,
            2 => {
                let at = u.choose_index(32)?;
                raw.schema_hash[at] ^= 1;
            }
            _ => {
                let at = u.choose_index(4)?;
                raw.magic[at] ^= 0x20;
            }
        },
        // Whole rules: duplicated, removed, swapped.
        _ => {
            if n_rules == 0 {
                return Ok(());
            }
            let i = u.choose_index(n_rules)?;
            match u.int_in_range(0..=2)? {
                0 => {
                    let r = raw.rules[i].clone();
                    raw.rules.push(r);
                }
                1 => {
                    raw.rules.remove(i);
                }
                _ => {
                    let j = u.choose_index(n_rules)?;
                    raw.rules.swap(i, j);
                }
            }
        }
    }
    Ok(())
}

fn base(u: &mut Unstructured) -> Result<Option<RawPack>> {
    let bases = bases();
    let pick = u.int_in_range(0..=bases.len())?;
    if let Some(b) = bases.get(pick) {
        return Ok(Some(b.clone()));
    }
    // A pack given in the input, length-prefixed.
    let len = usize::from(u.arbitrary::<u16>()?).min(u.len());
    let mut bytes = u.bytes(len)?.to_vec();
    fix_up(&mut bytes);
    Ok(RawPack::decode(&bytes).ok())
}

fn run(u: &mut Unstructured) -> Result<()> {
    let Some(mut raw) = base(u)? else {
        return Ok(());
    };
    let mutations = u.int_in_range(0..=8)?;
    for _ in 0..mutations {
        mutate(u, &mut raw)?;
    }
    let bytes = raw.encode();
    let _ = bulwark_interpreter::text::disasm(&bytes);
    if let Ok(decoded) = RawPack::decode(&bytes) {
        assert_eq!(
            decoded.encode(),
            bytes,
            "decode then encode changed the pack"
        );
    }
    let Ok(pack) = verify(&bytes) else {
        return Ok(());
    };
    // Events whose values are the pack's own strings (and pieces of them), so predicates and
    // anchors are hit.
    let texts: Vec<String> = raw
        .strings
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    for t in EventType::ALL {
        let owned: Vec<String> = t
            .fields()
            .iter()
            .map(|_| -> Result<String> {
                let mut s = String::new();
                for _ in 0..u.int_in_range(0..=3)? {
                    if !texts.is_empty() && u.ratio(2, 3)? {
                        s.push_str(u.choose(&texts)?);
                    } else {
                        s.push(char::from(u.int_in_range(b' '..=b'~')?));
                    }
                }
                Ok(s)
            })
            .collect::<Result<_>>()?;
        let mut values = Vec::new();
        for (f, s) in t.fields().iter().zip(&owned) {
            values.push(match (f.ty, u.int_in_range(0..=4)?) {
                (_, 0) => FieldValue::Absent,
                (FieldType::Str, _) => FieldValue::Str(s),
                (FieldType::Int, _) => FieldValue::Int(u.int_in_range(0..=16)?),
            });
        }
        let event = Event::new(*t, &values).expect("values follow the schema");
        let stats = pack.evaluate(&event, &mut |_| {});
        assert_eq!(stats.errors, 0, "a verified pack faulted at run time");
    }
    Ok(())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});
