//! `bulwark scan --pack PACK EVENTS...`: dry-run a pack over recorded events (JSON lines, exported
//! JSON, EVTX; files, folders or `-` for standard input) with the interpreter the driver runs.
//! Detections on stdout (JSON lines, CSV or a table); skips, the summary and `--stats` on stderr.
//!
//! Every detection carries its context: the rule (id, title, author, level, tags), where the
//! event is (file, and position: the 1-based line in text, the EventRecordID in EVTX), its time,
//! computer and source log, the event's key fields for its type, and the fields the rule matched
//! on (as far as the VM can say: see bulwark_sigma::scan). Exit codes: 0, 1 if the pack is
//! rejected, 2 for usage or I/O errors, 3 with `--fail-on-detection` when anything fired.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use bulwark_interpreter::{EventType, Level, VerifiedPack};
use bulwark_sigma::events::{expand, Input, ReadError, Record};
use bulwark_sigma::scan::{scan_input_with, Detection, ScanOptions, Totals};
use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};
use serde_json::{json, Map, Value};

use crate::EXIT_USAGE;

/// The exit code of `--fail-on-detection` when anything fired.
pub const EXIT_DETECTIONS: u8 = 3;

const LEVELS: [&str; 5] = ["informational", "low", "medium", "high", "critical"];

pub fn commands() -> Vec<Command> {
    vec![Command::new("scan")
        .about("Evaluate recorded events (JSON lines, exported JSON, EVTX) with a pack; one detection per line, with its context")
        .arg(Arg::new("pack").long("pack").required(true).value_parser(value_parser!(PathBuf)))
        .arg(
            Arg::new("events")
                .required(true)
                .num_args(1..)
                .value_parser(value_parser!(PathBuf))
                .help("event files or folders (searched recursively), or - for standard input: JSON lines, exported JSON documents or arrays, EVTX; the format is read from the content"),
        )
        .arg(
            Arg::new("format")
                .long("format")
                .value_parser(["jsonl", "csv", "table"])
                .default_value("jsonl")
                .help("detections as JSON lines, CSV (with a header) or a table (coloured on a terminal)"),
        )
        .arg(
            Arg::new("min-level")
                .long("min-level")
                .value_parser(LEVELS)
                .help("report only detections of rules at this level or above"),
        )
        .arg(Arg::new("from").long("from").value_name("TIME").help("scan only events at or after TIME (2024-01-02, 2024-01-02T03:04:05...; UTC as the events record it)"))
        .arg(Arg::new("to").long("to").value_name("TIME").help("scan only events at or before TIME (a day includes all of it)"))
        .arg(
            Arg::new("rule")
                .long("rule")
                .action(ArgAction::Append)
                .value_name("ID|TAG")
                .help("report only detections of rules with this id or tag (a tag also selects its sub-tags: attack.t1059 takes attack.t1059.001); repeatable"),
        )
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("no line per skipped event: counts only"))
        .arg(Arg::new("stats").long("stats").action(ArgAction::SetTrue).help("after the summary: detections per rule and per level, and the rules that never fired"))
        .arg(
            Arg::new("fail-on-detection")
                .long("fail-on-detection")
                .action(ArgAction::SetTrue)
                .help("exit 3 when anything was reported (for CI)"),
        )]
}

/// The fields that say what an event of each type is about.
fn key_fields(t: EventType) -> &'static [&'static str] {
    match t {
        EventType::ProcessCreation => &[
            "Image",
            "CommandLine",
            "User",
            "ParentImage",
            "ParentCommandLine",
            "ProcessId",
            "ParentProcessId",
        ],
        EventType::ImageLoad => &[
            "Image",
            "ImageLoaded",
            "User",
            "Signed",
            "Signature",
            "ProcessId",
        ],
        EventType::RegistryEvent => &[
            "EventType",
            "TargetObject",
            "Details",
            "Image",
            "User",
            "ProcessId",
        ],
    }
}

/// Which detections to report.
struct Filter {
    min_level: Option<Level>,
    rules: Vec<String>,
}

impl Filter {
    fn keeps(&self, d: &Detection<'_>) -> bool {
        if self.min_level.is_some_and(|min| d.rule.level < min) {
            return false;
        }
        if self.rules.is_empty() {
            return true;
        }
        self.rules.iter().any(|want| {
            d.rule.id.eq_ignore_ascii_case(want)
                || d.rule.tags().any(|t| {
                    t.eq_ignore_ascii_case(want)
                        || (t.len() > want.len()
                            && t.get(..want.len())
                                .is_some_and(|p| p.eq_ignore_ascii_case(want))
                            && t.as_bytes().get(want.len()) == Some(&b'.'))
                })
        })
    }
}

/// One detection, with its context, as JSON.
fn detection_json(file: &str, record: &Record, d: &Detection<'_>) -> Value {
    let mut event = Map::new();
    for name in key_fields(record.event_type) {
        match record.get(name) {
            bulwark_sigma::events::Owned::Absent => {}
            bulwark_sigma::events::Owned::Str(s) => {
                event.insert((*name).into(), Value::from(s.as_str()));
            }
            bulwark_sigma::events::Owned::Int(i) => {
                event.insert((*name).into(), Value::from(*i));
            }
        }
    }
    let mut matched = Map::new();
    for name in &d.matched {
        if let Some(v) = record.get(name).text() {
            matched.insert((*name).into(), Value::from(v));
        }
    }
    let tags: Vec<&str> = d.rule.tags().collect();
    json!({
        "rule_id": d.rule.id,
        "title": d.rule.title,
        "author": d.rule.author,
        "level": d.rule.level.name(),
        "tags": tags,
        "file": file,
        "position": record.position,
        "record_id": record.record_id,
        "time": record.time,
        "computer": record.computer,
        "event_type": record.event_type.name(),
        "source": record.source,
        "event": event,
        "matched": matched,
    })
}

const CSV_COLUMNS: [&str; 20] = [
    "time",
    "computer",
    "level",
    "rule_id",
    "title",
    "file",
    "position",
    "record_id",
    "event_type",
    "source",
    "Image",
    "CommandLine",
    "User",
    "ParentImage",
    "ImageLoaded",
    "TargetObject",
    "Details",
    "matched",
    "tags",
    "author",
];

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_row(file: &str, record: &Record, d: &Detection<'_>) -> String {
    let field = |n: &str| record.get(n).text().unwrap_or_default();
    let cells: Vec<String> = vec![
        record.time.clone().unwrap_or_default(),
        record.computer.clone().unwrap_or_default(),
        d.rule.level.name().to_owned(),
        d.rule.id.to_owned(),
        d.rule.title.to_owned(),
        file.to_owned(),
        record.position.to_string(),
        record.record_id.map(|r| r.to_string()).unwrap_or_default(),
        record.event_type.name().to_owned(),
        record.source.clone(),
        field("Image"),
        field("CommandLine"),
        field("User"),
        field("ParentImage"),
        field("ImageLoaded"),
        field("TargetObject"),
        field("Details"),
        d.matched.join(";"),
        d.rule.tags().collect::<Vec<_>>().join(";"),
        d.rule.author.to_owned(),
    ];
    cells
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",")
}

/// Text cut to `width` characters (an ellipsis marks the cut), padded to it.
fn cell(s: &str, width: usize, keep_end: bool) -> String {
    let n = s.chars().count();
    let cut: String = if n <= width {
        s.to_owned()
    } else if keep_end {
        std::iter::once('…')
            .chain(s.chars().skip(n - width + 1))
            .collect()
    } else {
        s.chars()
            .take(width - 1)
            .chain(std::iter::once('…'))
            .collect()
    };
    format!("{cut:<width$}")
}

fn level_colour(level: Level) -> &'static str {
    match level {
        Level::Critical => "\x1b[1;35m",
        Level::High => "\x1b[1;31m",
        Level::Medium => "\x1b[33m",
        Level::Low => "\x1b[36m",
        Level::Informational => "\x1b[2m",
    }
}

fn table_header() -> String {
    format!(
        "{} {} {} {} {} WHERE",
        cell("LEVEL", 13, false),
        cell("TIME", 23, false),
        cell("COMPUTER", 18, false),
        cell("RULE", 48, false),
        cell("WHAT", 60, false)
    )
}

fn table_row(file: &str, record: &Record, d: &Detection<'_>, colour: bool) -> String {
    let what = ["TargetObject", "ImageLoaded", "Image"]
        .iter()
        .find_map(|n| record.get(n).text())
        .unwrap_or_default();
    let level = cell(d.rule.level.name(), 13, false);
    let level = if colour {
        format!("{}{level}\x1b[0m", level_colour(d.rule.level))
    } else {
        level
    };
    format!(
        "{level} {} {} {} {} {file}:{}",
        cell(record.time.as_deref().unwrap_or("-"), 23, false),
        cell(record.computer.as_deref().unwrap_or("-"), 18, false),
        cell(d.rule.title, 48, false),
        cell(&what, 60, true),
        record.position
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Jsonl,
    Csv,
    Table { colour: bool },
}

fn progress_bar(total_bytes: Option<u64>) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = match total_bytes {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if total_bytes.is_some() {
        "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}"
    } else {
        "{spinner} {bytes} {bytes_per_sec} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

struct Stats {
    /// Detections reported (after the filters), by rule and by level.
    per_rule: BTreeMap<u32, u64>,
    per_level: BTreeMap<Level, u64>,
    /// Every rule that fired, reported or filtered out.
    fired: BTreeSet<u32>,
}

fn print_stats(pack: &VerifiedPack, stats: &Stats) {
    let mut rules: Vec<(&u32, &u64)> = stats.per_rule.iter().collect();
    rules.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    eprintln!("detections per rule:");
    for (index, n) in &rules {
        if let Some(r) = pack.rule(**index as usize) {
            eprintln!("  {n:>8}  {:<13} {} {}", r.level.name(), r.id, r.title);
        }
    }
    eprintln!("detections per level:");
    for l in LEVELS.iter().rev() {
        let level = Level::from_name(l).unwrap_or(Level::Informational);
        eprintln!(
            "  {:>8}  {l}",
            stats.per_level.get(&level).copied().unwrap_or(0)
        );
    }
    // A rule whose detections the filters dropped did fire: it is not dead content.
    let never: Vec<_> = (0..pack.rule_count())
        .filter(|i| !stats.fired.contains(&(*i as u32)))
        .filter_map(|i| pack.rule(i))
        .collect();
    eprintln!(
        "rules that never fired: {} of {}",
        never.len(),
        pack.rule_count()
    );
    for r in never {
        eprintln!("  {:<13} {} {}", r.level.name(), r.id, r.title);
    }
}

pub fn run(name: &str, m: &ArgMatches) -> Option<ExitCode> {
    if name != "scan" {
        return None;
    }
    let pack_path = m.get_one::<PathBuf>("pack").cloned().unwrap_or_default();
    let bytes = match crate::content::read(&pack_path) {
        Ok(b) => b,
        Err(code) => return Some(code),
    };
    let pack = match bulwark_interpreter::verify(&bytes) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: rejected: {e}", pack_path.display());
            return Some(ExitCode::from(1));
        }
    };
    let paths: Vec<PathBuf> = m
        .get_many::<PathBuf>("events")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let quiet = m.get_flag("quiet");
    let format = match m.get_one::<String>("format").map(String::as_str) {
        Some("csv") => Format::Csv,
        Some("table") => Format::Table {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        },
        _ => Format::Jsonl,
    };
    let filter = Filter {
        min_level: m
            .get_one::<String>("min-level")
            .and_then(|l| Level::from_name(l)),
        rules: m
            .get_many::<String>("rule")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
    };
    let opts = ScanOptions {
        matched_fields: true,
        from: m.get_one::<String>("from").cloned(),
        to: m.get_one::<String>("to").cloned(),
    };
    for bound in [&opts.from, &opts.to].into_iter().flatten() {
        let b = bound.as_bytes();
        let looks_like_time = b.len() >= 4 && b.iter().take(4).all(u8::is_ascii_digit);
        if !looks_like_time {
            eprintln!("bulwark: {bound:?} is not a time (2024-01-02, 2024-01-02T03:04:05...)");
            return Some(ExitCode::from(EXIT_USAGE));
        }
    }

    let inputs = expand(&paths);
    let mut code = ExitCode::SUCCESS;
    let total_bytes: Option<u64> = inputs
        .iter()
        .map(|i| match i {
            Ok((Input::File(p), _)) => std::fs::metadata(p).ok().map(|m| m.len()),
            _ => None,
        })
        .sum();
    let bar = (std::io::stderr().is_terminal() && !quiet).then(|| progress_bar(total_bytes));
    let mut totals = Totals::default();
    let mut stats = Stats {
        per_rule: BTreeMap::new(),
        per_level: BTreeMap::new(),
        fired: BTreeSet::new(),
    };
    let mut reported = 0u64;
    let started = Instant::now();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        Format::Csv => {
            let _ = writeln!(out, "{}", CSV_COLUMNS.join(","));
        }
        Format::Table { .. } => {
            let _ = writeln!(out, "{}", table_header());
        }
        Format::Jsonl => {}
    }
    let (mut files, mut ignored) = (0u64, 0u64);
    for input in inputs {
        let (input, walked) = match input {
            Ok(i) => i,
            Err((path, e)) => {
                eprintln!("bulwark: cannot read {}: {e}", path.display());
                code = ExitCode::from(EXIT_USAGE);
                continue;
            }
        };
        let shown = input.name();
        if let Some(bar) = &bar {
            bar.set_message(shown.clone());
        }
        let result = scan_input_with(
            &pack,
            &input,
            &opts,
            &mut totals,
            &mut |record, detections| {
                stats.fired.extend(detections.iter().map(|d| d.rule.index));
                for d in detections.iter().filter(|d| filter.keeps(d)) {
                    reported += 1;
                    *stats.per_rule.entry(d.rule.index).or_default() += 1;
                    *stats.per_level.entry(d.rule.level).or_default() += 1;
                    let line = match format {
                        Format::Jsonl => detection_json(&shown, record, d).to_string(),
                        Format::Csv => csv_row(&shown, record, d),
                        Format::Table { colour } => table_row(&shown, record, d, colour),
                    };
                    let _ = writeln!(out, "{line}");
                }
            },
            &mut |position, why| {
                if !quiet {
                    let line = format!("{shown}:{position}: skipped: {why}");
                    match &bar {
                        Some(bar) => bar.suspend(|| eprintln!("{line}")),
                        None => eprintln!("{line}"),
                    }
                }
            },
            &mut |t| {
                if let Some(bar) = &bar {
                    bar.set_position(t.bytes);
                }
            },
        );
        match result {
            Ok(()) => files += 1,
            // A folder may hold other files (a rule, a README): those are passed over.
            Err(ReadError::NotEvents) if walked => ignored += 1,
            Err(e) => {
                files += 1;
                let line = format!("bulwark: cannot read {shown}: {e}");
                match &bar {
                    Some(bar) => bar.suspend(|| eprintln!("{line}")),
                    None => eprintln!("{line}"),
                }
                code = ExitCode::from(EXIT_USAGE);
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(totals.bytes);
        }
    }
    let _ = out.flush();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let skipped: u64 = totals.skipped.values().sum();
    let reasons: Vec<String> = totals
        .skipped
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let filtered = totals.detections - reported;
    eprintln!(
        "loaded {} rules; read {} events from {} files{}, scanned {}{}, skipped {}{}; {} detections from {} rules{}; {:.0} events/s",
        pack.rule_count(),
        totals.read,
        files,
        if ignored > 0 { format!(" ({ignored} files in folders are not events)") } else { String::new() },
        totals.scanned,
        if totals.outside_window > 0 {
            format!(" ({} outside the time window)", totals.outside_window)
        } else {
            String::new()
        },
        skipped,
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) },
        reported,
        stats.per_rule.len(),
        if filtered > 0 { format!(" ({filtered} more filtered out)") } else { String::new() },
        if secs > 0.0 { totals.read as f64 / secs } else { 0.0 },
    );
    if totals.eval_errors > 0 {
        // Never expected from a verified pack; counted as "no match" by the VM, as in the driver.
        eprintln!(
            "warning: {} runtime checks failed during evaluation (each counted as no match)",
            totals.eval_errors
        );
    }
    if m.get_flag("stats") {
        print_stats(&pack, &stats);
    }
    if code == ExitCode::SUCCESS && reported > 0 && m.get_flag("fail-on-detection") {
        return Some(ExitCode::from(EXIT_DETECTIONS));
    }
    Some(code)
}
