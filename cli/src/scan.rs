//! `bulwark scan --pack PACK EVENTS...`: dry-run a pack over recorded events (JSON lines, exported
//! JSON, .evtx) with the interpreter the driver runs. One JSON line per detection on stdout; a
//! summary on stderr.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use bulwark_sigma::events::{expand, ReadError};
use bulwark_sigma::scan::{scan_input, Totals};
use clap::{value_parser, Arg, ArgMatches, Command};
use serde_json::json;

use crate::EXIT_USAGE;

pub fn commands() -> Vec<Command> {
    vec![Command::new("scan")
        .about("Evaluate recorded events (JSON lines, exported JSON, .evtx) with a pack; one JSON line per detection")
        .arg(Arg::new("pack").long("pack").required(true).value_parser(value_parser!(PathBuf)))
        .arg(
            Arg::new("events")
                .required(true)
                .num_args(1..)
                .value_parser(value_parser!(PathBuf))
                .help("event files or folders (searched recursively), or - for standard input: JSON lines, exported JSON documents or arrays, EVTX; the format is read from the content"),
        )]
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
    let progress = std::io::stderr().is_terminal();
    let mut totals = Totals::default();
    let started = Instant::now();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut code = ExitCode::SUCCESS;
    let (mut files, mut ignored) = (0u64, 0u64);
    for input in expand(&paths) {
        let (input, walked) = match input {
            Ok(i) => i,
            Err((path, e)) => {
                eprintln!("bulwark: cannot read {}: {e}", path.display());
                code = ExitCode::from(EXIT_USAGE);
                continue;
            }
        };
        let shown = input.name();
        let result = scan_input(
            &pack,
            &input,
            &mut totals,
            &mut |rule, record| {
                let tags: Vec<&str> = rule.tags().collect();
                let line = json!({
                    "rule_id": rule.id,
                    "title": rule.title,
                    "author": rule.author,
                    "level": rule.level.name(),
                    "tags": tags,
                    "event_type": record.event_type.name(),
                    "file": shown,
                    "position": record.position,
                    "record_id": record.record_id,
                });
                let _ = writeln!(out, "{line}");
            },
            &mut |position, why| {
                eprintln!("{shown}:{position}: skipped: {why}");
            },
            &mut |t| {
                if progress {
                    let rate = t.read as f64 / started.elapsed().as_secs_f64().max(1e-9);
                    eprint!(
                        "\r{shown}: {} events, {} detections, {rate:.0} events/s   ",
                        t.read, t.detections
                    );
                }
            },
        );
        match result {
            Ok(()) => files += 1,
            // A folder may hold other files (a rule, a README): those are passed over.
            Err(ReadError::NotEvents) if walked => ignored += 1,
            Err(e) => {
                files += 1;
                eprintln!("bulwark: cannot read {shown}: {e}");
                code = ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let _ = out.flush();
    if progress {
        eprint!("\r");
    }
    let secs = started.elapsed().as_secs_f64();
    let skipped: u64 = totals.skipped.values().sum();
    let reasons: Vec<String> = totals
        .skipped
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    eprintln!(
        "read {} events from {} files{}, scanned {}, skipped {}{}{}; {} detections from {} rules; {:.0} events/s",
        totals.read,
        files,
        if ignored > 0 { format!(" ({ignored} files in folders are not events)") } else { String::new() },
        totals.scanned,
        skipped,
        if reasons.is_empty() { "" } else { " (" },
        if reasons.is_empty() { String::new() } else { reasons.join(", ") + ")" },
        totals.detections,
        totals.rules_fired.len(),
        if secs > 0.0 { totals.read as f64 / secs } else { 0.0 },
    );
    if totals.eval_errors > 0 {
        // Never expected from a verified pack; counted as "no match" by the VM, as in the driver.
        eprintln!(
            "warning: {} runtime checks failed during evaluation (each counted as no match)",
            totals.eval_errors
        );
    }
    Some(code)
}
