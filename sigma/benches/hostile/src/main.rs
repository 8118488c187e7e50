//! Evaluation speed on hostile events: SigmaHQ's process_creation rules, one core, Bulwark
//! against rsigma-eval 0.26 (every `Engine` configuration: bloom prefilter off/on, cross-rule
//! Aho-Corasick index off/on) on the same rules and events in the same run.
//!
//! ```sh
//! cargo run --release --ignore-rust-version --manifest-path sigma/benches/hostile/Cargo.toml
//! ```
//!
//! Event sets, all process creations:
//!
//! - **existing**: the Sigma benchmark's events (`sigma/benches/sigma.rs`): every process
//!   creation in SigmaHQ's regression data plus 1,000 synthetic benign ones;
//! - **hostile**: 2,000 attack-like events generated here, deterministically, from the rules'
//!   own strings (SigmaHQ's `process_creation` detections: command-line fragments, images,
//!   parents, original file names) on templates from SigmaHQ's regression data: command lines
//!   of 256 B to 8 KiB holding 2 to 11 rule strings (case flips, `^` escapes, dash swaps,
//!   quote splitting, string concatenation, or as they are, so rules match) among the noise
//!   long attack command lines carry (`-enc` payloads of rule strings in UTF-16LE base64,
//!   base64 blobs, padding runs, paths and flags, environment-variable slicing); 40% with a
//!   parent command line like it;
//! - **max-size**: 100 more of them at the driver's maximum field sizes (16 KiB command line and
//!   parent command line, 1 KiB paths, every text field full), 20 to 49 rule strings in each
//!   command line.
//!
//! No held-out data is used (nothing from `security-datasets`).
//!
//! Reports per set and evaluator: mean, median, p99 and max per event (each event's fastest
//! of the rounds), matches, and the ratio of rsigma-eval's best configuration (by mean) to
//! Bulwark, with Bulwark's heap allocations per evaluation, its work units on the set's
//! costliest event and the cost model's bound for the pack against the budget.
//!
//! Two Bulwark rows per set. `bulwark` is the interpreter as linked here, where the peer and the
//! Sigma compiler turn on features of its dependencies the driver does not get (memchr's `std`,
//! with which the skips of regex DFAs' accelerated states pick AVX2 at run time; regex-automata's
//! other features). `bulwark, the driver's build` is the same pack and events evaluated by
//! `driver-config/`, a package that depends on the interpreter alone, so its features are the
//! driver's (memchr's SSE2, the x86-64 baseline kernel code may use). It is built and run by
//! this benchmark, in the same run; the driver's row is the one that counts.
//!
//! Environment: `BULWARK_BENCH_ITERS=N` evaluations per event per round (10);
//! `BULWARK_BENCH_SETS=existing,hostile,max-size` only those sets; `BULWARK_BENCH_ONLY=1`
//! Bulwark alone, the peer not even built (to profile Bulwark's evaluation).
//!
//! ## Results (this project's 2-core development VM)
//!
//! See `RESULTS.md` beside this file for the before/after table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bulwark_interpreter::cost::BUDGET_PER_EVENT;
use bulwark_interpreter::{verify, Event, EventType, FieldValue, VerifiedPack};
use bulwark_sigma::events::{flatten, from_json, json_documents, Owned, Record};
use bulwark_sigma::{compile_sources, Options};
use serde_json::{json, Map, Value};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// SplitMix64: a small deterministic generator (the event sets are the same in every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn text<'a, S: AsRef<str>>(&mut self, items: &'a [S]) -> &'a str {
        items[self.below(items.len())].as_ref()
    }
}

#[path = "../../common/synthetic.rs"]
mod synthetic;
use synthetic::synthetic;

/// The rules' own strings, by the field they test (process_creation selections' values, with
/// wildcards removed; regexes and field references left out).
#[derive(Default)]
struct Pools {
    by_field: std::collections::BTreeMap<String, Vec<String>>,
}

impl Pools {
    fn from_rules(texts: &[&str]) -> Pools {
        let mut pools = Pools::default();
        for text in texts {
            let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
                continue;
            };
            let Some(detection) = doc.get("detection").and_then(|d| d.as_mapping()) else {
                continue;
            };
            for (name, sel) in detection {
                if name.as_str() == Some("condition") {
                    continue;
                }
                pools.add_selection(sel);
            }
        }
        for v in pools.by_field.values_mut() {
            v.sort();
            v.dedup();
        }
        pools
    }

    fn add_selection(&mut self, sel: &serde_yaml::Value) {
        match sel {
            serde_yaml::Value::Sequence(items) => items.iter().for_each(|i| self.add_selection(i)),
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    let Some(key) = k.as_str() else { continue };
                    let mut parts = key.split('|');
                    let field = parts.next().unwrap_or("").to_string();
                    let mods: Vec<&str> = parts.collect();
                    if mods
                        .iter()
                        .any(|m| matches!(*m, "re" | "fieldref" | "cidr" | "exists"))
                    {
                        continue;
                    }
                    let b64 = mods.iter().any(|m| m.starts_with("base64"));
                    let values: Vec<String> = match v {
                        serde_yaml::Value::Sequence(s) => s
                            .iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect(),
                        serde_yaml::Value::String(s) => vec![s.clone()],
                        _ => Vec::new(),
                    };
                    for value in values {
                        let lit: String = value.replace(['*', '?'], "");
                        if lit.is_empty() {
                            continue;
                        }
                        let lit = if b64 { base64(lit.as_bytes()) } else { lit };
                        self.by_field.entry(field.clone()).or_default().push(lit);
                    }
                }
            }
            _ => {}
        }
    }

    fn get(&self, field: &str) -> &[String] {
        self.by_field.get(field).map_or(&[], Vec::as_slice)
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// One obfuscated token from a rule string.
fn obfuscate(rng: &mut Rng, s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    match rng.below(10) {
        // Random case.
        0..=3 => {
            for c in s.chars() {
                out.push(if rng.chance(50) {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                });
            }
        }
        // cmd's caret escapes.
        4 => {
            for c in s.chars() {
                out.push(c);
                if c.is_ascii_alphabetic() && rng.chance(30) {
                    out.push('^');
                }
            }
        }
        // Dash swaps (windash).
        5 => {
            for c in s.chars() {
                out.push(match c {
                    '-' => *rng.pick(&['/', '\u{2013}', '\u{2014}', '-']),
                    c => c,
                });
            }
        }
        // PowerShell string concatenation.
        6 => {
            out.push('\'');
            for c in s.chars() {
                if c == '\'' {
                    continue;
                }
                out.push(c);
                if rng.chance(20) {
                    out.push_str("'+'");
                }
            }
            out.push('\'');
        }
        // Quote splitting.
        7 => {
            for c in s.chars() {
                out.push(c);
                if c.is_ascii_alphabetic() && rng.chance(15) {
                    out.push_str("\"\"");
                }
            }
        }
        // As it is, the rule's case.
        _ => out.push_str(s),
    }
    out
}

/// A long, attack-like command line of `len` bytes: `indicators` of the rules' strings
/// (obfuscated, or as they are so that rules match) among noise an attacker pads with or that
/// a long command line carries: `-enc` payloads, base64 blobs, padding runs, paths and flags,
/// environment-variable slicing.
fn hostile_command_line(
    rng: &mut Rng,
    pools: &Pools,
    image: &str,
    len: usize,
    indicators: usize,
) -> String {
    let cmd = pools.get("CommandLine");
    let mut rule_strings: Vec<String> = (0..indicators)
        .map(|_| {
            let t = rng.text(cmd).to_string();
            if rng.chance(30) {
                t
            } else {
                obfuscate(rng, &t)
            }
        })
        .collect();
    let budget = len.saturating_sub(rule_strings.iter().map(|s| s.len() + 1).sum::<usize>());
    let mut noise: Vec<String> = Vec::new();
    let mut size = image.len() + 3;
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while size < budget {
        let token = match rng.below(12) {
            // An encoded payload of rule strings (what base64 rules look for; noise to others).
            0..=1 => {
                let mut script = String::new();
                for _ in 0..rng.below(12) + 2 {
                    script.push_str(rng.text(cmd));
                    script.push(';');
                }
                format!(
                    "{}{}",
                    rng.text(&["-enc ", "-EncodedCommand ", "-e ", "/enc "]),
                    base64(&utf16le(&script))
                )
            }
            // Random base64 noise.
            2..=4 => (0..rng.below(600) + 20)
                .map(|_| B64[rng.below(B64.len())] as char)
                .collect(),
            // Padding: spaces, carets, commas, quotes.
            5..=6 => rng
                .text(&[" ", "^", ",", ";", "\t", "  ", "\"\""])
                .repeat(rng.below(200) + 10),
            // Paths and flags.
            7..=9 => rng
                .text(&[
                    "-NoProfile",
                    "-NonInteractive",
                    "-ExecutionPolicy Bypass",
                    "/c",
                    "/q",
                    "C:\\Users\\alice\\AppData\\Local\\Temp\\x\\update.ps1",
                    "\\\\10.0.0.5\\share\\payload.dll",
                    "https://cdn.example.net/assets/app.js?v=1.2.3",
                    "-WindowStyle Hidden",
                    "C:\\ProgramData\\svc\\agent.exe",
                ])
                .to_string(),
            // Environment-variable slicing and script-block tricks.
            _ => rng
                .text(&[
                    "%COMSPEC:~0,1%%COMSPEC:~-2%",
                    "%ProgramData:~0,1%%ProgramData:~9,2%",
                    "$env:comspec[4,15,25]-join''",
                    "${ExecutionContext}.InvokeCommand",
                    "&([scriptblock]::Create(",
                ])
                .to_string(),
        };
        size += token.len() + 1;
        noise.push(token);
    }
    // The rule strings at random places among the noise.
    for s in rule_strings.drain(..) {
        let at = rng.below(noise.len() + 1);
        noise.insert(at, s);
    }
    let mut out = String::with_capacity(len + 256);
    out.push('"');
    out.push_str(image);
    out.push_str("\" ");
    for t in &noise {
        out.push_str(t);
        out.push(*rng.pick(&[' ', ' ', ' ', ';', '|', '&']));
    }
    cut(&mut out, len);
    out
}

/// `s` cut to at most `max` bytes at a char boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// A path-like value from the pool of `field` (an image name or path fragment), to `len` bytes.
fn hostile_path(rng: &mut Rng, pools: &Pools, field: &str, len: usize) -> String {
    let pool = pools.get(field);
    let mut out = String::from(rng.text(&[
        "C:\\Windows\\System32",
        "C:\\Users\\Public",
        "C:\\ProgramData",
        "C:\\Users\\alice\\AppData\\Local\\Temp",
    ]));
    let tail = if pool.is_empty() {
        "\\x.exe".to_string()
    } else {
        {
            let t = rng.text(pool).to_string();
            obfuscate(rng, &t)
        }
    };
    while out.len() + tail.len() + 1 < len {
        out.push('\\');
        let seg = if pool.is_empty() || rng.chance(50) {
            rng.pick(&[
                "Temp",
                "x",
                "AppData",
                "Microsoft",
                "..",
                "system32",
                "WindowsPowerShell",
            ])
            .to_string()
        } else {
            rng.pick(pool).trim_matches('\\').to_string()
        };
        out.push_str(&seg);
    }
    if !tail.starts_with('\\') {
        out.push('\\');
    }
    out.push_str(&tail);
    cut(&mut out, len);
    out
}

/// Hostile events on the regression events' templates: see the module documentation.
fn hostile(
    rng: &mut Rng,
    pools: &Pools,
    templates: &[Value],
    n: usize,
    max_size: bool,
) -> Vec<Value> {
    let t = EventType::ProcessCreation;
    let max = |name: &str| t.field_by_name(name).map_or(256, |d| d.max_len as usize);
    (0..n)
        .map(|_| {
            let mut ev: Map<String, Value> =
                rng.pick(templates).as_object().cloned().unwrap_or_default();
            let len = |rng: &mut Rng, field: &str| {
                if max_size {
                    max(field)
                } else {
                    match rng.below(10) {
                        0..=2 => 256 + rng.below(768),
                        3..=7 => 1024 + rng.below(3072),
                        _ => 4096 + rng.below(4096),
                    }
                }
            };
            let image_len = if max_size {
                max("Image")
            } else {
                40 + rng.below(80)
            };
            let image = hostile_path(rng, pools, "Image", image_len);
            let parent_len = if max_size {
                max("ParentImage")
            } else {
                40 + rng.below(80)
            };
            let parent = hostile_path(rng, pools, "ParentImage", parent_len);
            let indicators = |rng: &mut Rng| {
                if max_size {
                    20 + rng.below(30)
                } else {
                    2 + rng.below(10)
                }
            };
            let l = len(rng, "CommandLine");
            let k = indicators(rng);
            let cmd = hostile_command_line(rng, pools, &image, l, k);
            let pcmd = if max_size || rng.chance(40) {
                let l = len(rng, "ParentCommandLine");
                let k = indicators(rng);
                hostile_command_line(rng, pools, &parent, l, k)
            } else {
                format!("\"{parent}\"")
            };
            ev.insert("EventID".into(), json!(1));
            ev.insert("Image".into(), json!(image));
            ev.insert("ParentImage".into(), json!(parent));
            ev.insert("CommandLine".into(), json!(cmd));
            ev.insert("ParentCommandLine".into(), json!(pcmd));
            let ofn = pools.get("OriginalFileName");
            if !ofn.is_empty() {
                let mut v = rng.pick(ofn).clone();
                if max_size {
                    while v.len() < max("OriginalFileName") {
                        v.push_str(rng.text(ofn));
                    }
                    cut(&mut v, max("OriginalFileName"));
                }
                ev.insert("OriginalFileName".into(), json!(v));
            }
            if max_size {
                for (field, fill) in [
                    ("CurrentDirectory", "C:\\Users\\Public\\Temp\\"),
                    ("Description", "Windows PowerShell "),
                    ("Product", "Microsoft Windows Operating System "),
                    ("Company", "Microsoft Corporation "),
                    ("FileVersion", "10.0.19041.546 "),
                    ("User", "NT AUTHORITY\\SYSTEM "),
                    ("ParentUser", "NT AUTHORITY\\SYSTEM "),
                    (
                        "Hashes",
                        "SHA256=4A5B6C7D8E9F0A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F6071829,",
                    ),
                    ("IntegrityLevel", "System "),
                    ("LogonId", "0x3e7 "),
                    ("ProcessGuid", "{7e3f6e4a-1b2c-4d5e-8f90-123456789abc}"),
                    (
                        "ParentProcessGuid",
                        "{7e3f6e4a-1b2c-4d5e-8f90-123456789abc}",
                    ),
                ] {
                    let m = max(field);
                    let mut v = String::with_capacity(m);
                    while v.len() < m {
                        v.push_str(fill);
                    }
                    cut(&mut v, m);
                    ev.insert(field.into(), json!(v));
                }
            }
            Value::Object(ev)
        })
        .collect()
}

/// Per-event times (ns) of `eval` over `events`, each event `iters` times, into `times`
/// (which has room for every event, so that nothing between evaluations allocates), and the
/// matches of one evaluation of each.
fn measure<T>(
    times: &mut Vec<f64>,
    events: &[T],
    iters: u32,
    mut eval: impl FnMut(&T) -> usize,
) -> usize {
    assert!(times.is_empty() && times.capacity() >= events.len());
    let mut hits = 0;
    for e in events {
        let t = Instant::now();
        for _ in 0..iters {
            hits += std::hint::black_box(eval(std::hint::black_box(e)));
        }
        times.push(t.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    hits / iters as usize
}

/// Each event's fastest time over the rounds, and the matches.
#[derive(Default, Clone)]
struct Best {
    times: Vec<f64>,
    hits: usize,
}

impl Best {
    fn add(&mut self, times: &[f64], hits: usize) {
        if self.times.is_empty() {
            self.times = times.to_vec();
        } else {
            for (b, t) in self.times.iter_mut().zip(times) {
                *b = b.min(*t);
            }
        }
        self.hits = hits;
    }
}

struct Stats {
    mean: f64,
    median: f64,
    p99: f64,
    max: f64,
}

fn stats(times: &[f64]) -> Stats {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    let pick = |q: f64| t[((t.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        mean: t.iter().sum::<f64>() / t.len() as f64,
        median: pick(0.5),
        p99: pick(0.99),
        max: t[t.len() - 1],
    }
}

/// Bulwark's evaluation of the chosen sets built as the driver gets it (`driver-config/`: the
/// interpreter alone, without the features this benchmark's other dependencies turn on), in
/// this run: writes the pack and the events for it, builds it and runs it. Per set: its stats
/// and matches.
fn driver_config(
    pack: &[u8],
    sets: &[(&str, Vec<Record>, &Vec<Value>)],
    chosen: &dyn Fn(&str) -> bool,
    iters: u32,
) -> Result<Vec<(String, Stats, usize)>, String> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = here.join("target/driver-config");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = b"BWEV1".to_vec();
    let chosen_sets: Vec<_> = sets.iter().filter(|(n, _, _)| chosen(n)).collect();
    out.extend_from_slice(&(chosen_sets.len() as u32).to_le_bytes());
    for (name, records, _) in chosen_sets {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(records.len() as u32).to_le_bytes());
        for r in records {
            out.push(r.event_type.id());
            out.extend_from_slice(&(r.values.len() as u32).to_le_bytes());
            for v in &r.values {
                match v.as_value() {
                    FieldValue::Absent => out.push(0),
                    FieldValue::Str(s) => {
                        out.push(1);
                        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                        out.extend_from_slice(s.as_bytes());
                    }
                    FieldValue::Int(n) => {
                        out.push(2);
                        out.extend_from_slice(&n.to_le_bytes());
                    }
                }
            }
        }
    }
    let (pack_path, events_path) = (dir.join("pack.bin"), dir.join("events.bin"));
    std::fs::write(&pack_path, pack).map_err(|e| format!("{}: {e}", pack_path.display()))?;
    std::fs::write(&events_path, &out).map_err(|e| format!("{}: {e}", events_path.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(here.join("driver-config/Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("build"))
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !built.success() {
        return Err(format!("building driver-config: {built}"));
    }
    let run = std::process::Command::new(dir.join("build/release/bulwark-bench-driver-config"))
        .arg(&pack_path)
        .arg(&events_path)
        .arg(iters.to_string())
        .output()
        .map_err(|e| format!("driver-config: {e}"))?;
    if !run.status.success() {
        return Err(format!(
            "driver-config: {}",
            String::from_utf8_lossy(&run.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| -> Result<f64, String> {
                f.get(i)
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| format!("driver-config printed {line:?}"))
            };
            Ok((
                f.get(1).unwrap_or(&"").to_string(),
                Stats {
                    mean: num(2)?,
                    median: num(3)?,
                    p99: num(4)?,
                    max: num(5)?,
                },
                num(6)? as usize,
            ))
        })
        .collect()
}

/// One event set: Bulwark's events and the JSON the peer takes.
struct Set<'a> {
    name: &'static str,
    events: Vec<Event<'a, 'a>>,
    json: &'a [Value],
}

const ROUNDS: usize = 3;

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../../shared/corpus");
    let rules_dir = corpus.join("sigma/rules/windows/process_creation");
    if !rules_dir.is_dir() {
        println!("skipped: {} is absent", rules_dir.display());
        return;
    }
    let mut files = bulwark_sigma::find_files(&rules_dir, ".yml");
    files.sort();
    let sources: Vec<(String, String)> = files
        .iter()
        .filter_map(|f| Some((f.display().to_string(), std::fs::read_to_string(f).ok()?)))
        .collect();
    let compiled = compile_sources(&sources, &Options::default()).expect("compile");
    let pack: VerifiedPack = verify(&compiled.pack).expect("verify");
    let kept: std::collections::HashSet<&str> =
        compiled.rules.iter().map(|r| r.path.as_str()).collect();
    let same: Vec<&str> = sources
        .iter()
        .filter(|(p, _)| kept.contains(p.as_str()))
        .map(|(_, t)| t.as_str())
        .collect();

    // Events.
    let mut docs = Vec::new();
    for f in bulwark_sigma::find_files(&corpus.join("sigma-regression"), ".json") {
        if let Ok(text) = std::fs::read_to_string(&f) {
            docs.extend(json_documents(&text));
        }
    }
    let regression: Vec<Value> = docs
        .iter()
        .filter_map(flatten)
        .filter(|m| m.get("EventID").and_then(Value::as_u64) == Some(1))
        .map(Value::Object)
        .collect();
    let mut existing = regression.clone();
    existing.extend(synthetic(1000));
    let pools = Pools::from_rules(&same);
    let mut rng = Rng(0x5EED_B01A_2C4B);
    let hostile_events = hostile(&mut rng, &pools, &regression, 2000, false);
    let max_events = hostile(&mut rng, &pools, &regression, 100, true);

    let to_records = |vs: &[Value]| -> Vec<Record> {
        vs.iter().map(|v| from_json(v, 0).expect("event")).collect()
    };
    let rec_sets = [
        ("existing", to_records(&existing), &existing),
        ("hostile", to_records(&hostile_events), &hostile_events),
        ("max-size", to_records(&max_events), &max_events),
    ];
    let values: Vec<Vec<Vec<FieldValue<'_>>>> = rec_sets
        .iter()
        .map(|(_, recs, _)| {
            recs.iter()
                .map(|r| r.values.iter().map(Owned::as_value).collect())
                .collect()
        })
        .collect();
    let sets: Vec<Set<'_>> = rec_sets
        .iter()
        .zip(&values)
        .map(|((name, recs, json), vals)| Set {
            name,
            events: recs
                .iter()
                .zip(vals)
                .map(|(r, v)| Event::new(r.event_type, v).expect("event"))
                .collect(),
            json,
        })
        .collect();

    // The peer, in every configuration.
    let mut engines: Vec<(String, rsigma_eval::Engine)> = Vec::new();
    let mut rs_rules = 0;
    // Bulwark alone (a profile of its evaluation): the peer is not built.
    let only = std::env::var_os("BULWARK_BENCH_ONLY").is_some();
    for bloom in [false, true].into_iter().filter(|_| !only) {
        for ac in [false, true] {
            let mut engine = rsigma_eval::Engine::new();
            engine.set_bloom_prefilter(bloom);
            engine.set_cross_rule_ac(ac);
            let mut n = 0;
            for text in &same {
                if let Ok(c) = rsigma_parser::parse_sigma_yaml(text) {
                    if engine.add_collection(&c).is_ok() {
                        n += 1;
                    }
                }
            }
            rs_rules = n;
            engines.push((
                format!("rsigma-eval 0.26 bloom={} ac={}", bloom as u8, ac as u8),
                engine,
            ));
        }
    }

    let t = EventType::ProcessCreation;
    println!(
        "rules: {} process_creation rules, {} compiled by Bulwark; rsigma-eval loaded {rs_rules}",
        sources.len(),
        compiled.rules.len()
    );
    let cmd_lens = |s: &Set<'_>| {
        let mut l: Vec<usize> = s
            .json
            .iter()
            .map(|v| {
                v.get("CommandLine")
                    .and_then(Value::as_str)
                    .map_or(0, str::len)
            })
            .collect();
        l.sort_unstable();
        (
            l.iter().sum::<usize>() / l.len().max(1),
            l[l.len() / 2],
            l[l.len() - 1],
        )
    };
    for s in &sets {
        let (mean, median, max) = cmd_lens(s);
        println!(
            "set {:<9} {:>5} events; CommandLine bytes mean {mean}, median {median}, max {max}",
            s.name,
            s.events.len()
        );
    }
    println!(
        "tests answered by the field scans: {} distinct string and set tests",
        pack.folded_tests()
    );
    let bound = pack.cost_bound(t);
    println!(
        "cost bound per process_creation event: {bound} work units, budget {BUDGET_PER_EVENT} ({:.2}x headroom)",
        BUDGET_PER_EVENT as f64 / bound as f64
    );

    let iters: u32 = std::env::var("BULWARK_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // BULWARK_BENCH_SETS=existing,hostile: only these sets.
    let chosen = std::env::var("BULWARK_BENCH_SETS").ok();
    let is_chosen = |name: &str| {
        chosen
            .as_deref()
            .is_none_or(|c| c.split(',').any(|n| n == name))
    };
    let driver = driver_config(&compiled.pack, &rec_sets, &is_chosen, iters);
    println!();
    for set in &sets {
        if !is_chosen(set.name) {
            continue;
        }
        let eval_bulwark = |ev: &Event<'_, '_>| {
            let mut n = 0;
            pack.evaluate(ev, &mut |_| n += 1);
            n
        };
        let mut bulwark = Best::default();
        let mut peers: Vec<Best> = vec![Best::default(); engines.len()];
        let mut times = Vec::with_capacity(set.events.len());
        // Warm-up, allocations counted.
        let before = ALLOCS.load(Ordering::Relaxed);
        measure(&mut times, &set.events, 1, eval_bulwark);
        let mut allocs = ALLOCS.load(Ordering::Relaxed) - before;
        let mut evals = set.events.len() as u64;
        for _ in 0..ROUNDS {
            times.clear();
            let before = ALLOCS.load(Ordering::Relaxed);
            let hits = measure(&mut times, &set.events, iters, eval_bulwark);
            allocs += ALLOCS.load(Ordering::Relaxed) - before;
            evals += u64::from(iters) * set.events.len() as u64;
            bulwark.add(&times, hits);
            if only {
                continue;
            }
            for ((_, engine), best) in engines.iter().zip(peers.iter_mut()) {
                times.clear();
                let hits = measure(&mut times, set.json, iters.div_ceil(5), |v: &Value| {
                    engine.evaluate(&rsigma_eval::JsonEvent::borrow(v)).len()
                });
                best.add(&times, hits);
            }
        }
        // Work: the most any event of the set did, against the pack's bound.
        let (mut work, mut rules_run) = (0u64, 0u64);
        let mut worst = 0u64;
        for ev in &set.events {
            let s = pack.evaluate(ev, &mut |_| {});
            work += s.work;
            rules_run += u64::from(s.rules_run);
            worst = worst.max(s.work);
        }
        let b = stats(&bulwark.times);
        println!(
            "== {} ({} events): bulwark runs {:.1} rules per event; work mean {:.0}, max {worst} units ({:.4}% of the bound); {allocs} allocations over {evals} evaluations",
            set.name,
            set.events.len(),
            rules_run as f64 / set.events.len() as f64,
            work as f64 / set.events.len() as f64,
            worst as f64 * 100.0 / bound as f64,
        );
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>11} {:>8} {:>9}",
            "evaluator", "mean ns", "median ns", "p99 ns", "max ns", "matches", "vs best"
        );
        let peer_stats: Vec<Stats> = peers
            .iter()
            .filter(|p| !p.times.is_empty())
            .map(|p| stats(&p.times))
            .collect();
        let best_mean = peer_stats
            .iter()
            .map(|s| s.mean)
            .fold(f64::INFINITY, f64::min);
        let row = |name: &str, s: &Stats, hits: usize| {
            println!(
                "{:<34} {:>10.0} {:>10.0} {:>10.0} {:>11.0} {:>8} {:>8.1}x",
                name,
                s.mean,
                s.median,
                s.p99,
                s.max,
                hits,
                best_mean / s.mean
            );
        };
        row("bulwark", &b, bulwark.hits);
        match driver
            .as_ref()
            .map(|d| d.iter().find(|(n, _, _)| n == set.name))
        {
            Ok(Some((_, s, hits))) => row("bulwark, the driver's build", s, *hits),
            Ok(None) => println!("bulwark, the driver's build: no result for this set"),
            Err(e) => println!("bulwark, the driver's build: not measured ({e})"),
        }
        if !only {
            for ((name, _), (p, s)) in engines.iter().zip(peers.iter().zip(&peer_stats)) {
                row(name, s, p.hits);
            }
            let best = peer_stats
                .iter()
                .map(|s| s.median)
                .fold(f64::INFINITY, f64::min);
            println!(
                "bulwark vs rsigma-eval's fastest configuration: {:.1}x on the mean, {:.1}x on the median",
                best_mean / b.mean,
                best / b.median
            );
        }
        println!();
    }
}
