//! How long verifying takes at the largest stageable pack size (8 MiB, the one size limit), for
//! packs built to stress each part of verification: set indexes over long strings, thousands of
//! anchors per rule, the most instructions, the most strings (many folding alike), the most regex
//! bytes, and the pack (sets of one long string copied 65,536 times). Each is timed
//! against a linear pass over the same bytes measured in the same run (SHA-256, which verifying
//! does once anyway), so the ratio shows verification staying linear in the pack's size. It also
//! prints the heap verifying takes at its peak beyond the pack's own bytes, as a multiple of the
//! pack's size: the driver reserves that much, fallibly, before it verifies a staged pack
//! (`bulwark_driver_core::control::STAGE_MEMORY_FACTOR`), so a stage under memory pressure is
//! refused up front instead of failing an allocation inside the verifier.
//! `cargo bench -p bulwark-interpreter --bench verify_limits --features build`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)]

use std::hint::black_box;
use std::time::Instant;

use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// The heap `f` takes at its peak beyond what was live before it.
fn peak_of(f: impl FnOnce()) -> usize {
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    f();
    HEAP.peak_usage().saturating_sub(before)
}

use bulwark_interpreter::build::{compile_regex, PackBuilder};
use bulwark_interpreter::format::{RawPack, RawRule};
use bulwark_interpreter::insn::{op, RawInsn};
use bulwark_interpreter::limits::MAX_PACK_BYTES;
use bulwark_interpreter::{verify, Case, EventType, StrOp};
use sha2::{Digest, Sha256};

const COMMAND_LINE: u8 = 1;

fn insn(opcode: u8, a: u8, b: u8, c: u8, x: u32) -> RawInsn {
    RawInsn {
        op: opcode,
        a,
        b,
        c,
        x,
    }
}

fn ret() -> RawInsn {
    insn(op::RET, 0, 0, 0, 0)
}

fn rule(raw: &mut RawPack, id: u32, anchors: Vec<(u8, u32)>, code: Vec<RawInsn>) {
    raw.rules.push(RawRule {
        event_type: EventType::ProcessCreation.id(),
        level: 3,
        id,
        title: id,
        author: id,
        anchors,
        code,
        ..RawRule::default()
    });
}

/// A deterministic pseudo-random word of `len` ASCII letters.
fn word(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// Sets of long distinct strings, each tested every way (all index parts built).
fn set_indexes() -> Vec<u8> {
    let mut b = PackBuilder::new();
    let strings: Vec<u32> = (0..96).map(|i| b.string(&word(i, 16_000))).collect();
    let raw = b.raw_mut();
    let mut sets = 0u32;
    let mut code = Vec::new();
    let id = 0;
    while raw.sets.len() < 60_000 {
        let s = raw.sets.len();
        raw.sets.push(
            (0..4)
                .map(|k| strings[(s * 7 + k * 13) % strings.len()])
                .collect(),
        );
        for o in [StrOp::Eq, StrOp::EndsWith, StrOp::Contains] {
            code.push(insn(
                op::SET,
                COMMAND_LINE,
                o as u8,
                Case::Sensitive as u8,
                sets,
            ));
            code.push(insn(op::JT, 0, 0, 0, 0));
        }
        sets += 1;
        if code.len() >= 4000 {
            finish_or_rule(raw, id, &mut code);
        }
    }
    finish_or_rule(raw, id, &mut code);
    raw.encode()
}

/// An `or` of the instructions in `code` (jt placeholders point at the end), as a rule.
fn finish_or_rule(raw: &mut RawPack, id: u32, code: &mut Vec<RawInsn>) {
    if code.is_empty() {
        return;
    }
    let end = code.len() as u32;
    for i in code.iter_mut().filter(|i| i.op == op::JT) {
        i.x = end;
    }
    if let Some(last) = code.last_mut() {
        if last.op == op::JT {
            *last = insn(op::NOT, 0, 0, 0, 0);
        }
    }
    code.push(ret());
    rule(raw, id, vec![], std::mem::take(code));
}

/// Rules with thousands of anchors each, implied by a `set.contains` of them.
fn anchors() -> Vec<u8> {
    let mut b = PackBuilder::new();
    let pool: Vec<u32> = (0..60_000).map(|i| b.string(&word(i, 8))).collect();
    let raw = b.raw_mut();
    let mut r = 0usize;
    while raw.encode().len() < MAX_PACK_BYTES - 300_000 {
        let items: Vec<u32> = (0..2000)
            .map(|k| pool[(r * 2000 + k) % pool.len()])
            .collect();
        raw.sets.push(items.clone());
        let set = raw.sets.len() as u32 - 1;
        let anchors = items.iter().map(|&s| (COMMAND_LINE, s)).collect();
        let code = vec![
            insn(op::SET, COMMAND_LINE, StrOp::Contains as u8, 0, set),
            ret(),
        ];
        rule(raw, 0, anchors, code);
        r += 1;
    }
    raw.encode()
}

/// Nearly the most instructions a pack can hold, in the most rules.
fn instructions() -> Vec<u8> {
    let mut b = PackBuilder::new();
    let needle = b.string("needle");
    let raw = b.raw_mut();
    for _ in 0..250 {
        let mut code: Vec<RawInsn> = (0..4000)
            .map(|k| {
                if k % 2 == 0 {
                    insn(op::STR, COMMAND_LINE, StrOp::Contains as u8, 0, needle)
                } else {
                    insn(op::JT, 0, 0, 0, 0)
                }
            })
            .collect();
        finish_or_rule(raw, 0, &mut code);
    }
    raw.encode()
}

/// The most strings that fit, most of them case variants of a few words (canonical ids).
fn strings() -> Vec<u8> {
    let mut b = PackBuilder::new();
    let raw = b.raw_mut();
    let mut i = 0u64;
    while raw.strings.len() < 640_000 {
        let w = word(i % 64, 6);
        let v: String = w
            .chars()
            .enumerate()
            .map(|(k, c)| {
                if (i >> k) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        raw.strings.push(v.as_bytes());
        i += 1;
    }
    rule(raw, 0, vec![], vec![insn(op::CONST, 0, 0, 0, 0), ret()]);
    raw.encode()
}

/// The most regex bytes a pack may hold (4 MiB of DFAs).
fn regexes() -> Vec<u8> {
    let mut b = PackBuilder::new();
    b.string("regexes");
    let raw = b.raw_mut();
    let mut total = 0;
    let mut k = 0u64;
    while total < 4 * 1024 * 1024 - 300_000 {
        let pattern = format!("{}[a-z0-9]{{2,12}}(x|y|z)+{}", word(k, 5), word(k + 1, 5));
        let Ok(dfa) = compile_regex(&pattern, true) else {
            k += 1;
            continue;
        };
        if total + dfa.len() > 4 * 1024 * 1024 || dfa.len() > 256 * 1024 {
            k += 1;
            continue;
        }
        total += dfa.len();
        raw.regexes.push(dfa);
        k += 1;
    }
    rule(raw, 0, vec![], vec![insn(op::CONST, 0, 0, 0, 0), ret()]);
    raw.encode()
}

/// Issue 11's pack: four 65,536-item sets of one 16,000-byte string.
fn copies() -> Vec<u8> {
    let mut b = PackBuilder::new();
    let s = b.string(&"x".repeat(16_000));
    let raw = b.raw_mut();
    for _ in 0..4 {
        raw.sets.push(vec![s; 65_536]);
    }
    rule(
        raw,
        0,
        vec![],
        vec![insn(op::SET, COMMAND_LINE, 0, 0, 0), ret()],
    );
    raw.encode()
}

fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // BULWARK_PACK=FILE: verify that pack 200 times instead (for profiling a real pack's load).
    if let Some(path) = std::env::var_os("BULWARK_PACK") {
        let pack = std::fs::read(path).expect("read the pack");
        let ms = best_of(200, || {
            black_box(verify(black_box(&pack)).is_ok());
        });
        println!("verify: best of 200 {ms:.2} ms");
        return;
    }
    println!(
        "{:<14} {:>10} {:>11} {:>11} {:>8} {:>10} {:>7}  result",
        "pack", "bytes", "verify ms", "sha256 ms", "ratio", "peak heap", "x pack"
    );
    type Shape = (&'static str, fn() -> Vec<u8>);
    let shapes: [Shape; 6] = [
        ("set indexes", set_indexes),
        ("anchors", anchors),
        ("instructions", instructions),
        ("strings", strings),
        ("regexes", regexes),
        ("issue copies", copies),
    ];
    let only = std::env::var("BULWARK_SHAPE").ok();
    for (name, make) in shapes {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let pack = make();
        assert!(pack.len() <= MAX_PACK_BYTES, "{name}: {} bytes", pack.len());
        let mut result = String::new();
        let verify_ms = best_of(3, || {
            result = match black_box(verify(black_box(&pack))) {
                Ok(p) => format!("valid, bound {} work units", p.max_cost_bound()),
                Err(e) => format!("rejected: {}", e.kind),
            };
        });
        let sha_ms = best_of(3, || {
            black_box(Sha256::digest(black_box(&pack)));
        });
        let peak = peak_of(|| {
            black_box(verify(black_box(&pack)).is_ok());
        });
        result.truncate(110);
        println!(
            "{name:<14} {:>10} {verify_ms:>11.1} {sha_ms:>11.2} {:>7.1}x {:>10} {:>6.2}x  {result}",
            pack.len(),
            verify_ms / sha_ms,
            peak,
            peak as f64 / pack.len() as f64
        );
    }
}
