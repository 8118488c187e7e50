//! Every field of every event the driver's builders make is within the schema's `max_len` for it,
//! from the longest and most hostile inputs the kernel can hand over: the longest `UNICODE_STRING`
//! (32,767 UTF-16 units) of 1-, 2-, 3- and 4-byte chars, with the cut landing at every offset in
//! a char, unpaired surrogates, the longest SIDs, registry keys and value names at the limit,
//! `ControlSet00N` rewritten to the longer `CurrentControlSet`, `\SystemRoot` expanded to the
//! longest system root, the longest volume device names, `REG_MULTI_SZ` and other value data at
//! and past the limit, and random unit soup.
//!
//! The check walks the schema's field table, not a list of names, so a field added to the schema
//! (and filled in by a builder) is covered without touching this file. Where the full value is
//! known, the builder's value must also be exactly `cut_to(full value, max_len)`: the longest
//! prefix that fits, cut at a char boundary, which is what the VM reads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bulwark_driver_core::events::{
    reg_type, to_registry_path, ImageLoad, ImageLoadFacts, ProcessCreateFacts, ProcessCreation,
    Registry, RegistryFacts, RegistryOp, EVENT_TYPES,
};
use bulwark_driver_core::identity::{Sid, MAX_SUB_AUTHORITIES};
use bulwark_driver_core::paths::{to_dos_path, VolumeMap};
use bulwark_driver_core::process::ProcessInfo;
use bulwark_interpreter::schema::{cut_to, max_len};
use bulwark_interpreter::{Event, EventType, FieldType, FieldValue};

/// The most UTF-16 units a `UNICODE_STRING` holds (`Length` is a `u16` count of bytes).
const MAX_UNITS: usize = 32_767;

fn max(field_max_len: u32) -> usize {
    usize::try_from(field_max_len).unwrap()
}

/// What the checks saw: per event type and field, how many events had it present and the
/// longest value.
#[derive(Default)]
struct Seen {
    events: usize,
    fields: BTreeMap<(EventType, &'static str), (usize, usize)>,
}

impl Seen {
    /// The generic check: every value of every field of `ev` against the schema's table.
    fn check(&mut self, ev: &Event<'_, '_>) {
        self.events += 1;
        let t = ev.event_type();
        let values = ev.values();
        assert_eq!(values.len(), t.fields().len(), "{}", t.name());
        for (i, v) in values.iter().enumerate() {
            let f = t.field(u8::try_from(i).unwrap()).unwrap();
            let entry = self.fields.entry((t, f.name)).or_default();
            match *v {
                FieldValue::Absent => {}
                FieldValue::Int(_) => {
                    assert_eq!(f.ty, FieldType::Int, "{}.{}", t.name(), f.name);
                    entry.0 += 1;
                }
                FieldValue::Str(s) => {
                    assert_eq!(f.ty, FieldType::Str, "{}.{}", t.name(), f.name);
                    assert!(
                        s.len() <= max(f.max_len),
                        "{}.{} is {} bytes, over its max_len {}",
                        t.name(),
                        f.name,
                        s.len(),
                        f.max_len
                    );
                    // Cut at a char boundary, and the VM reads exactly what the builder made.
                    assert_eq!(cut_to(s, max(f.max_len)), s);
                    assert_eq!(ev.get(f.index), FieldValue::Str(s));
                    entry.0 += 1;
                    entry.1 = entry.1.max(s.len());
                }
            }
        }
    }
}

/// The value of the field `name` (which the schema must have).
fn text<'a>(ev: &Event<'a, '_>, name: &str) -> Option<&'a str> {
    let f = ev.event_type().field_by_name(name).unwrap();
    match ev.values()[usize::from(f.index)] {
        FieldValue::Str(s) => Some(s),
        _ => None,
    }
}

fn expect(ev: &Event<'_, '_>, name: &str, full: &str) {
    let f = ev.event_type().field_by_name(name).unwrap();
    let want = cut_to(full, max(f.max_len));
    let got = text(ev, name).unwrap();
    assert!(
        got == want,
        "{}.{}: {} bytes, want the {}-byte cut of the {}-byte full value",
        ev.event_type().name(),
        name,
        got.len(),
        want.len(),
        full.len()
    );
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// Bodies of `n` units that make the longest and most awkward UTF-8.
fn bodies(n: usize) -> Vec<(&'static str, Vec<u16>)> {
    let rep = |s: &str| -> Vec<u16> { utf16(s).into_iter().cycle().take(n).collect() };
    let mut out = vec![
        ("ascii", rep("a")),
        ("backslashes", rep("\\")),
        ("2-byte", rep("é")),
        ("3-byte", rep("€")),
        // 4-byte chars: a surrogate pair each (an odd `n` ends in a lone high surrogate).
        ("4-byte", rep("😀")),
        ("lone high surrogates", vec![0xD800; n]),
        ("lone low surrogates", vec![0xDFFF; n]),
        (
            "high high low",
            [0xD800, 0xD800, 0xDC00]
                .into_iter()
                .cycle()
                .take(n)
                .collect(),
        ),
        ("NULs", vec![0; n]),
        ("U+FFFF", vec![0xFFFF; n]),
    ];
    // The cut lands at every offset inside a 4-byte and a 3-byte char.
    for k in 1..4 {
        let name: &'static str = ["", "1 + 4-byte", "2 + 4-byte", "3 + 4-byte"][k];
        let mut v = vec![u16::from(b'a'); k];
        v.extend(rep("😀").into_iter().take(n - k));
        out.push((name, v));
        let name: &'static str = ["", "1 + 3-byte", "2 + 3-byte", "3 + 3-byte"][k];
        let mut v = vec![u16::from(b'a'); k];
        v.extend(rep("€").into_iter().take(n - k));
        out.push((name, v));
    }
    out
}

/// `prefix` followed by `body`, at most the longest `UNICODE_STRING`.
fn join(prefix: &str, body: &[u16]) -> Vec<u16> {
    let mut v = utf16(prefix);
    v.extend_from_slice(body);
    v.truncate(MAX_UNITS);
    v
}

/// The longest device name a volume map holds.
fn long_device() -> String {
    let mut d = String::from("\\Device\\");
    d.push_str(&"V".repeat(96 - d.len()));
    d
}

fn volumes() -> VolumeMap {
    let mut v = VolumeMap::default();
    v.insert('C', "\\Device\\HarddiskVolume3").unwrap();
    v.insert('Z', &long_device()).unwrap();
    // The longest system root: `\SystemRoot` (11 bytes) grows to 64.
    let root = format!("C:\\{}", "W".repeat(61));
    assert_eq!(root.len(), 64);
    v.set_system_root(&root).unwrap();
    v
}

/// NT path prefixes the rewrite handles (shorter, longer, unchanged).
fn path_prefixes() -> Vec<String> {
    vec![
        String::new(),
        "C:\\".into(),
        "\\??\\c:\\".into(),
        "\\\\?\\C:\\".into(),
        "\\Device\\HarddiskVolume3\\".into(),
        format!("{}\\", long_device()),
        "\\SystemRoot\\".into(),
        "\\SystemRoot".into(),
        "\\Device\\Mup\\;LanmanRedirector\\;Z:000000000001a2b3\\srv\\share\\".into(),
        "\\??\\UNC\\srv\\share\\".into(),
        "\\Device\\HarddiskVolume31\\".into(),
    ]
}

/// The full `C:\...` form of an NT path, without any limit.
fn full_path(units: &[u16], volumes: &VolumeMap) -> String {
    let mut s = String::from_utf16_lossy(units);
    to_dos_path(&mut s, volumes).unwrap();
    s
}

fn lossy(units: &[u16]) -> String {
    String::from_utf16_lossy(units)
}

/// SIDs from ordinary to the longest possible text.
fn sids() -> Vec<(u8, [u8; 6], Vec<u32>)> {
    vec![
        (1, [0, 0, 0, 0, 0, 5], vec![18]),
        (1, [0, 0, 0, 0, 0, 5], vec![21, 1, 2, 3, 1001]),
        // 15 sub-authorities of the largest value, the largest authority, the largest revision.
        (u8::MAX, [0xFF; 6], vec![u32::MAX; MAX_SUB_AUTHORITIES]),
        (u8::MAX, [0, 0, 0xFF, 0xFF, 0xFF, 0xFF], vec![u32::MAX; 15]),
        // Malformed: one sub-authority too many.
        (1, [0xFF; 6], vec![u32::MAX; MAX_SUB_AUTHORITIES + 1]),
        (0, [0; 6], vec![]),
    ]
}

fn process_facts<'a>(
    image: Option<&'a [u16]>,
    command_line: Option<&'a [u16]>,
    sid: Option<Sid<'a>>,
) -> ProcessCreateFacts<'a> {
    ProcessCreateFacts {
        process_id: u32::MAX,
        create_time: u64::MAX,
        parent_process_id: u32::MAX - 1,
        parent_create_time: Some(u64::MAX - 1),
        image_file_name: image,
        command_line,
        user: sid,
        integrity: Some((u32::MAX, false)),
        logon_id: Some(u64::MAX),
        session_id: Some(u32::MAX),
    }
}

/// Checks every stored text of a process-table entry (what later events' parent and process
/// fields are).
fn check_info(info: &ProcessInfo) {
    for (what, len, max_len) in [
        ("image", info.image.len(), max_len::PATH),
        (
            "command line",
            info.command_line.len(),
            max_len::COMMAND_LINE,
        ),
        ("user", info.user.len(), max_len::USER),
        ("guid", info.guid.len(), max_len::SHORT),
    ] {
        assert!(
            len <= max(max_len),
            "the process table's {what} is {len} bytes, over {max_len}"
        );
    }
}

/// Builds process creations from every path and body, each with a parent built the same way,
/// then image loads and registry events by those processes. Returns the longest processes.
fn process_creations(seen: &mut Seen, vols: &VolumeMap) -> Vec<Arc<ProcessInfo>> {
    let sids = sids();
    let mut longest = Vec::new();
    let mut parent: Option<Arc<ProcessInfo>> = None;
    let mut n = 0usize;
    for prefix in path_prefixes() {
        for (body_name, body) in bodies(MAX_UNITS) {
            let image = join(&prefix, &body);
            let cmd = body.clone();
            let (rev, auth, sub) = &sids[n % sids.len()];
            n += 1;
            let sid = Sid {
                revision: *rev,
                authority: *auth,
                sub_authorities: sub,
            };
            let mut facts = process_facts(Some(&image), Some(&cmd), Some(sid));
            if let Some(p) = &parent {
                facts.parent_process_id = p.process_id;
                facts.parent_create_time = Some(p.create_time);
            }
            let pc = ProcessCreation::build(&facts, vols, parent.clone(), u64::MAX).unwrap();
            check_info(&pc.info);
            pc.with_event(|ev| {
                seen.check(ev);
                let ctx = format!("{prefix:?} + {body_name}");
                expect(ev, "Image", &full_path(&image, vols));
                expect(ev, "CommandLine", &lossy(&cmd));
                if parent.is_some() {
                    assert!(text(ev, "ParentImage").is_some(), "{ctx}");
                    assert!(text(ev, "ParentCommandLine").is_some(), "{ctx}");
                }
            });
            // The next process is this one's child, with a distinct id.
            let mut info = pc.info.clone();
            info.process_id = u32::try_from(n).unwrap();
            info.create_time = n as u64;
            let info = Arc::new(info);
            if info.image.len() + 4 > max(max_len::PATH) {
                longest.push(Arc::clone(&info));
            }
            parent = Some(info);
        }
    }
    // Every SID, with and without the rest.
    for (rev, auth, sub) in &sids {
        let sid = Sid {
            revision: *rev,
            authority: *auth,
            sub_authorities: sub,
        };
        let pc =
            ProcessCreation::build(&process_facts(None, None, Some(sid)), vols, None, 0).unwrap();
        check_info(&pc.info);
        pc.with_event(|ev| seen.check(ev));
    }
    assert!(!longest.is_empty());
    longest
}

fn image_loads(seen: &mut Seen, vols: &VolumeMap, processes: &[Arc<ProcessInfo>]) {
    let mut n = 0usize;
    for prefix in path_prefixes() {
        for (_, body) in bodies(MAX_UNITS) {
            let name = join(&prefix, &body);
            for signature_level in [0, 1, u8::MAX] {
                let process = processes.get(n % (processes.len() + 1)).cloned();
                n += 1;
                let facts = ImageLoadFacts {
                    process_id: u32::MAX,
                    full_image_name: Some(&name),
                    signature_level,
                };
                ImageLoad::build(&facts, vols, process)
                    .unwrap()
                    .with_event(|ev| {
                        seen.check(ev);
                        expect(ev, "ImageLoaded", &full_path(&name, vols));
                    });
            }
        }
    }
}

/// Registry key prefixes the rewrite handles, including `ControlSet00N`, which grows.
fn key_prefixes() -> Vec<&'static str> {
    vec![
        "",
        "\\REGISTRY\\MACHINE\\SOFTWARE\\",
        "\\Registry\\Machine\\SYSTEM\\ControlSet001\\",
        "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet009",
        "\\REGISTRY\\USER\\S-1-5-21-1-2-3-1001\\",
        // Not what the kernel names a key, but the rewrite that grows the most.
        "HKLM\\SYSTEM\\ControlSet001\\",
    ]
}

/// The full `TargetObject`, as the schema's table describes it: each part cut to
/// `REGISTRY_NAME`, joined, cut to `REGISTRY_TARGET`.
fn full_target(key: &[u16], value: Option<&[u16]>) -> String {
    let mut k = lossy(key);
    to_registry_path(&mut k).unwrap();
    let mut t = cut_to(&k, max(max_len::REGISTRY_NAME)).to_owned();
    if let Some(v) = value {
        let v = lossy(v);
        t.push('\\');
        t.push_str(if v.is_empty() {
            "(Default)"
        } else {
            cut_to(&v, max(max_len::REGISTRY_NAME))
        });
    }
    cut_to(&t, max(max_len::REGISTRY_TARGET)).to_owned()
}

fn le_bytes(units: &[u16]) -> Vec<u8> {
    units.iter().flat_map(|u| u.to_le_bytes()).collect()
}

/// Value data at and past the limit, of every type.
fn value_data() -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    // Twice the largest Details in UTF-16, and more.
    let n = 4 * max(max_len::REGISTRY_DETAILS);
    for (_, body) in bodies(n) {
        let mut with_nul = body.clone();
        with_nul.push(0);
        for ty in [reg_type::SZ, reg_type::EXPAND_SZ, reg_type::MULTI_SZ] {
            out.push((ty, le_bytes(&with_nul)));
        }
    }
    // REG_MULTI_SZ of many items, every one of them up to the limit.
    let items: Vec<u16> = utf16("😀a\0")
        .into_iter()
        .cycle()
        .take(n)
        .chain([0, 0])
        .collect();
    out.push((reg_type::MULTI_SZ, le_bytes(&items)));
    let mut odd = le_bytes(&utf16(&"€".repeat(n)));
    odd.push(0x41);
    out.push((reg_type::SZ, odd));
    out.push((reg_type::SZ, vec![0; 2 * n]));
    for ty in [reg_type::DWORD, reg_type::QWORD, reg_type::BINARY, u32::MAX] {
        for len in [0, 1, 4, 8, 2 * n] {
            out.push((ty, vec![0xFF; len]));
        }
    }
    out
}

fn registry_events(seen: &mut Seen, processes: &[Arc<ProcessInfo>]) {
    let empty: [u16; 0] = [];
    // Value names of the kinds that make the longest text and every cut offset.
    let value_bodies: Vec<_> = bodies(MAX_UNITS)
        .into_iter()
        .filter(|(name, _)| {
            [
                "ascii",
                "4-byte",
                "lone high surrogates",
                "3 + 4-byte",
                "2 + 3-byte",
            ]
            .contains(name)
        })
        .collect();
    assert_eq!(value_bodies.len(), 5);
    let mut n = 0usize;
    for prefix in key_prefixes() {
        for (_, body) in bodies(MAX_UNITS) {
            let key = join(prefix, &body);
            // The key with no value, the default value, and value names of every kind.
            let mut values: Vec<Option<&[u16]>> = vec![None, Some(&empty)];
            values.extend(value_bodies.iter().map(|(_, v)| Some(v.as_slice())));
            for value in values {
                let process = processes.get(n % (processes.len() + 1)).cloned();
                n += 1;
                let op = if value.is_some() {
                    RegistryOp::DeleteValue
                } else {
                    RegistryOp::CreateKey
                };
                let facts = RegistryFacts {
                    op,
                    process_id: u32::MAX,
                    key_path: &key,
                    value_name: value,
                    data: None,
                    new_name: None,
                };
                Registry::build(&facts, process).unwrap().with_event(|ev| {
                    seen.check(ev);
                    expect(ev, "TargetObject", &full_target(&key, value));
                });
            }
            // A rename's new name, at the limit.
            let facts = RegistryFacts {
                op: RegistryOp::RenameKey,
                process_id: 1,
                key_path: &key,
                value_name: None,
                data: None,
                new_name: Some(&body),
            };
            Registry::build(&facts, None).unwrap().with_event(|ev| {
                seen.check(ev);
                expect(ev, "NewName", &lossy(&body));
            });
        }
    }
    // Every kind of value data, set on the longest key and value name.
    let key = join(
        "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\",
        &bodies(MAX_UNITS)[4].1,
    );
    let value = utf16(&"v".repeat(MAX_UNITS));
    for (ty, data) in value_data() {
        let facts = RegistryFacts {
            op: RegistryOp::SetValue,
            process_id: 1,
            key_path: &key,
            value_name: Some(&value),
            data: Some((ty, &data)),
            new_name: None,
        };
        Registry::build(&facts, processes.first().cloned())
            .unwrap()
            .with_event(|ev| seen.check(ev));
    }
}

/// A small deterministic generator (xorshift64*), for random unit soup.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Units biased towards what makes long or broken UTF-8: surrogates, 3-byte BMP, `\`, NUL.
    fn units(&mut self, len: usize) -> Vec<u16> {
        (0..len)
            .map(|_| match self.below(8) {
                0 => 0xD800 + self.below(0x400) as u16,
                1 => 0xDC00 + self.below(0x400) as u16,
                2 => 0xE000 + self.below(0x2000) as u16,
                3 => u16::from(b'\\'),
                4 => 0,
                5 => 0x80 + self.below(0x780) as u16,
                _ => self.next() as u16,
            })
            .collect()
    }

    fn len(&mut self) -> usize {
        // Mostly around the limits, sometimes anything up to the longest.
        match self.below(3) {
            0 => self.below(MAX_UNITS + 1),
            1 => MAX_UNITS - self.below(8),
            _ => 300 + self.below(4000),
        }
    }
}

fn random_events(seen: &mut Seen, vols: &VolumeMap) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let prefixes = path_prefixes();
    let keys = key_prefixes();
    for _ in 0..200 {
        let image = {
            let p = &prefixes[rng.below(prefixes.len())];
            let l = rng.len();
            join(p, &rng.units(l))
        };
        let l = rng.len();
        let cmd = rng.units(l);
        let pc = ProcessCreation::build(
            &process_facts(Some(&image), Some(&cmd), None),
            vols,
            None,
            7,
        )
        .unwrap();
        check_info(&pc.info);
        pc.with_event(|ev| {
            seen.check(ev);
            expect(ev, "Image", &full_path(&image, vols));
            expect(ev, "CommandLine", &lossy(&cmd));
        });
        let process = Some(Arc::new(pc.info));
        ImageLoad::build(
            &ImageLoadFacts {
                process_id: 3,
                full_image_name: Some(&image),
                signature_level: 2,
            },
            vols,
            process.clone(),
        )
        .unwrap()
        .with_event(|ev| seen.check(ev));
        let key = {
            let p = keys[rng.below(keys.len())];
            let l = rng.len();
            join(p, &rng.units(l))
        };
        let l = rng.len();
        let value = rng.units(l);
        let l = rng.len();
        let data = le_bytes(&rng.units(l));
        let facts = RegistryFacts {
            op: RegistryOp::SetValue,
            process_id: 3,
            key_path: &key,
            value_name: Some(&value),
            data: Some(([reg_type::SZ, reg_type::MULTI_SZ][rng.below(2)], &data)),
            new_name: Some(&value),
        };
        Registry::build(&facts, process).unwrap().with_event(|ev| {
            seen.check(ev);
            expect(ev, "TargetObject", &full_target(&key, Some(&value)));
            expect(ev, "NewName", &lossy(&value));
        });
    }
}

#[test]
fn every_field_of_every_event_is_within_its_max_len() {
    let vols = volumes();
    let mut seen = Seen::default();
    let processes = process_creations(&mut seen, &vols);
    image_loads(&mut seen, &vols, &processes);
    registry_events(&mut seen, &processes);
    random_events(&mut seen, &vols);

    // Every event type the builders make was built, and every field they fill was present.
    for t in EVENT_TYPES {
        for f in t.fields() {
            let (present, longest) = seen.fields.get(&(t, f.name)).copied().unwrap_or_default();
            println!(
                "{:16} {:20} present {present:6}  longest {longest:6} / max_len {}",
                t.name(),
                f.name,
                f.max_len
            );
        }
    }
    println!("{} events checked", seen.events);
    // The texts the kernel (or an attacker behind it) controls reached their limits, so the cuts
    // were exercised, not merely never needed.
    for (t, name) in [
        (EventType::ProcessCreation, "Image"),
        (EventType::ProcessCreation, "CommandLine"),
        (EventType::ProcessCreation, "ParentImage"),
        (EventType::ProcessCreation, "ParentCommandLine"),
        (EventType::ImageLoad, "Image"),
        (EventType::ImageLoad, "ImageLoaded"),
        (EventType::RegistryEvent, "TargetObject"),
        (EventType::RegistryEvent, "Details"),
        (EventType::RegistryEvent, "NewName"),
        (EventType::RegistryEvent, "Image"),
    ] {
        let f = t.field_by_name(name).unwrap();
        let (_, longest) = seen.fields[&(t, name)];
        assert!(
            longest + 3 >= max(f.max_len),
            "{}.{} never came near its max_len: {longest}",
            t.name(),
            name
        );
    }
}

#[test]
fn control_set_rewriting_at_the_limit() {
    // A key path whose rewritten form is longer than the raw one (`ControlSet001` to
    // `CurrentControlSet`), with the raw text exactly at and around every limit.
    for len in [
        max(max_len::REGISTRY_NAME) - 4,
        max(max_len::REGISTRY_NAME),
        max(max_len::REGISTRY_NAME) + 4,
        max(max_len::REGISTRY_TARGET),
        MAX_UNITS,
    ] {
        for prefix in [
            "HKLM\\SYSTEM\\ControlSet001\\",
            "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet002\\",
        ] {
            let mut raw = String::from(prefix);
            raw.push_str(&"😀".repeat(len.saturating_sub(raw.len()) / 4));
            while raw.len() < len {
                raw.push('k');
            }
            let key = utf16(&raw);
            for value in [None, Some(utf16("")), Some(utf16(&"é".repeat(MAX_UNITS)))] {
                let facts = RegistryFacts {
                    op: RegistryOp::SetValue,
                    process_id: 1,
                    key_path: &key,
                    value_name: value.as_deref(),
                    data: None,
                    new_name: None,
                };
                let mut seen = Seen::default();
                Registry::build(&facts, None).unwrap().with_event(|ev| {
                    seen.check(ev);
                    let target = text(ev, "TargetObject").unwrap();
                    assert!(target.starts_with("HKLM\\System\\CurrentControlSet\\"));
                    expect(ev, "TargetObject", &full_target(&key, value.as_deref()));
                });
            }
        }
    }
}
