//! `bulwark scan` costs the same per event however long its input is (issue 16). The same
//! events, once and 20 times over in one file, for each format: JSON lines, a JSON array of
//! pretty-printed exported documents, and EVTX (the recordings' chunks, copied). Each file is
//! scanned by the release binary three times; the fastest run counts, less the time of scanning
//! an empty file (start-up and pack load), divided by the events read. Prints the per-event cost
//! and the ratio 20x / 1x per format; the goal is at most 1.5.
//!
//! Uses SigmaHQ's regression recordings and rules in ../shared/corpus (skipped with the reason
//! when they are absent). `cargo bench -p bulwark-cli --bench scan_scaling`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use bulwark_sigma::events::{flatten, json_documents};

const TIMES: usize = 20;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bulwark")
}

/// Runs a scan; (seconds, events read).
fn scan(pack: &Path, events: &Path) -> (f64, u64) {
    let started = Instant::now();
    let out = Command::new(bin())
        .args(["scan", "--quiet", "--pack"])
        .arg(pack)
        .arg(events)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bulwark: {e}"));
    let secs = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    let summary = err.lines().rfind(|l| l.contains("; read ")).unwrap_or("");
    let read = summary
        .split("; read ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary from {}: {err}", events.display()));
    (secs, read)
}

fn best_of_three(pack: &Path, events: &Path) -> (f64, u64) {
    let mut best = (f64::MAX, 0);
    for _ in 0..3 {
        let (t, n) = scan(pack, events);
        if t < best.0 {
            best = (t, n);
        }
    }
    best
}

/// CRC-32 (IEEE), for the EVTX file header's checksum.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An EVTX file of `chunks` (each 64 KiB) under `header` (the first 4 KiB of a recording), with
/// the header's chunk count, last chunk number and checksum set to match.
fn evtx_file(header: &[u8], chunks: &[&[u8]]) -> Vec<u8> {
    let mut h = header[..4096].to_vec();
    let n = chunks.len() as u64;
    h[16..24].copy_from_slice(&(n - 1).to_le_bytes());
    h[42..44].copy_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_le_bytes());
    let crc = crc32(&h[..120]);
    h[124..128].copy_from_slice(&crc.to_le_bytes());
    let mut out = h;
    for c in chunks {
        out.extend_from_slice(c);
    }
    out
}

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let regression = corpus.join("sigma-regression");
    let rules = corpus.join("sigma/rules/windows");
    if !regression.is_dir() || !rules.is_dir() {
        println!("skipped: ../shared/corpus/sigma-regression or ../shared/corpus/sigma is absent");
        return;
    }
    let dir = std::env::temp_dir().join(format!("bulwark-scan-scaling-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let pack = dir.join("rules.pack");
    let out = Command::new(bin())
        .arg("compile")
        .arg(rules.join("process_creation"))
        .arg(rules.join("image_load"))
        .arg(rules.join("registry"))
        .args(["-q", "-o"])
        .arg(&pack)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let compiled = String::from_utf8_lossy(&out.stderr);
    println!("pack: {}", compiled.lines().last().unwrap_or(""));

    let mut docs = Vec::new();
    for f in bulwark_sigma::find_files(&regression, ".json") {
        docs.extend(json_documents(
            &std::fs::read_to_string(&f).unwrap_or_default(),
        ));
    }
    let evtx: Vec<Vec<u8>> = bulwark_sigma::find_files(&regression, ".evtx")
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .filter(|b| b.len() >= 4096 + 65536)
        .collect();

    let lines: String = docs
        .iter()
        .filter_map(flatten)
        .map(|m| serde_json::Value::Object(m).to_string() + "\n")
        .collect();
    let pretty: Vec<String> = docs
        .iter()
        .map(|d| serde_json::to_string_pretty(d).unwrap_or_default())
        .collect();
    let array = |times: usize| {
        let items: Vec<&str> = (0..times)
            .flat_map(|_| pretty.iter().map(String::as_str))
            .collect();
        format!("[\n{}\n]\n", items.join(",\n"))
    };
    let chunks: Vec<&[u8]> = evtx.iter().map(|b| &b[4096..4096 + 65536]).collect();
    let evtx_times = |times: usize| {
        let all: Vec<&[u8]> = (0..times).flat_map(|_| chunks.iter().copied()).collect();
        evtx_file(&evtx[0], &all)
    };

    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap_or_else(|e| panic!("{e}"));
    let (base, _) = best_of_three(&pack, &empty);
    println!(
        "start-up and pack load (an empty input): {:.1} ms",
        base * 1e3
    );
    println!(
        "{:<12} {:>9} {:>10} {:>13} {:>9} {:>10} {:>13} {:>8}",
        "format", "events", "MB", "ns/event", "events", "MB", "ns/event", "20x/1x"
    );
    type Make<'a> = Box<dyn Fn(usize) -> Vec<u8> + 'a>;
    let formats: Vec<(&str, Make<'_>)> = vec![
        ("JSON lines", Box::new(|t| lines.repeat(t).into_bytes())),
        ("JSON array", Box::new(|t| array(t).into_bytes())),
        ("EVTX", Box::new(evtx_times)),
    ];
    let mut worst: f64 = 0.0;
    for (name, make) in &formats {
        let mut row = Vec::new();
        for times in [1, TIMES] {
            let file: PathBuf = dir.join(format!("events-{times}"));
            let bytes = make(times);
            std::fs::write(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
            let (t, n) = best_of_three(&pack, &file);
            let _ = std::fs::remove_file(&file);
            row.push(((t - base).max(0.0) * 1e9 / n.max(1) as f64, n, bytes.len()));
        }
        let ratio = row[1].0 / row[0].0.max(1e-9);
        worst = worst.max(ratio);
        println!(
            "{:<12} {:>9} {:>10.1} {:>13.0} {:>9} {:>10.1} {:>13.0} {:>8.2}",
            name,
            row[0].1,
            row[0].2 as f64 / 1e6,
            row[0].0,
            row[1].1,
            row[1].2 as f64 / 1e6,
            row[1].0,
            ratio
        );
    }
    println!("worst ratio of the per-event cost at 20x to 1x: {worst:.2} (goal: at most 1.5)");
    let _ = std::fs::remove_dir_all(&dir);
}
