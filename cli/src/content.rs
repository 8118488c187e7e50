//! Content commands: `asm`, `disasm`, `verify`, `schema`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{value_parser, Arg, ArgMatches, Command};

use crate::EXIT_USAGE;

pub fn commands() -> Vec<Command> {
    let input = || {
        Arg::new("input")
            .required(true)
            .value_parser(value_parser!(PathBuf))
    };
    vec![
        Command::new("schema").about("Print the built-in event schema and its hash"),
        Command::new("asm")
            .about("Assemble pack assembly text into a pack (checks syntax only)")
            .arg(input().help("assembly text (.bwasm)"))
            .arg(Arg::new("output").short('o').long("output").required(true).value_parser(value_parser!(PathBuf))),
        Command::new("disasm").about("Print a pack as assembly text").arg(input().help("pack file")),
        Command::new("verify")
            .about("Verify a pack against the built-in schema: exit 0 if valid, 1 if rejected, 2 on usage or I/O errors")
            .arg(input().help("pack file"))
            .arg(
                Arg::new("costs")
                    .long("costs")
                    .action(clap::ArgAction::SetTrue)
                    .help("also list each prefilter's cost and the 20 costliest rules (work units per event)"),
            ),
    ]
}

pub fn run(name: &str, m: &ArgMatches) -> Option<ExitCode> {
    let input = || m.get_one::<PathBuf>("input").cloned().unwrap_or_default();
    Some(match name {
        "schema" => schema(),
        "asm" => asm(
            &input(),
            m.get_one::<PathBuf>("output")
                .map(PathBuf::as_path)
                .unwrap_or(Path::new("")),
        ),
        "disasm" => disasm(&input()),
        "verify" => verify(&input(), m.get_flag("costs")),
        _ => return None,
    })
}

/// Reads a file, or reports the I/O error and gives the usage exit code.
pub fn read(path: &Path) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path).map_err(|e| {
        eprintln!("bulwark: cannot read {}: {e}", path.display());
        ExitCode::from(EXIT_USAGE)
    })
}

/// Writes a file, or reports the I/O error and gives the usage exit code.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), ExitCode> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(path, bytes).map_err(|e| {
        eprintln!("bulwark: cannot write {}: {e}", path.display());
        ExitCode::from(EXIT_USAGE)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn schema() -> ExitCode {
    println!("schema hash {}", hex(&bulwark_interpreter::schema_hash()));
    for t in bulwark_interpreter::EventType::ALL {
        println!(
            "\nevent {} (id {}, {} fields, Sysmon event ids {:?})",
            t.name(),
            t.id(),
            t.field_count(),
            t.sysmon_event_ids()
        );
        for f in t.fields() {
            println!("  {:>2} {:<20} {}", f.index, f.name, f.ty.name());
        }
    }
    ExitCode::SUCCESS
}

fn asm(input: &Path, output: &Path) -> ExitCode {
    let bytes = match read(input) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let Ok(text) = String::from_utf8(bytes) else {
        eprintln!("bulwark: {} is not UTF-8 text", input.display());
        return ExitCode::from(EXIT_USAGE);
    };
    match bulwark_interpreter::text::asm(&text) {
        Ok(pack) => match write(output, &pack) {
            Ok(()) => {
                eprintln!("wrote {} ({} bytes)", output.display(), pack.len());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Err(e) => {
            eprintln!("bulwark: {}:{e}", input.display());
            ExitCode::from(1)
        }
    }
}

fn disasm(input: &Path) -> ExitCode {
    let bytes = match read(input) {
        Ok(b) => b,
        Err(code) => return code,
    };
    match bulwark_interpreter::text::disasm(&bytes) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bulwark: {}: cannot decode: {e}", input.display());
            ExitCode::from(1)
        }
    }
}

fn verify(input: &Path, costs: bool) -> ExitCode {
    let bytes = match read(input) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let started = std::time::Instant::now();
    match bulwark_interpreter::verify(&bytes) {
        Ok(pack) => {
            let took = started.elapsed();
            println!(
                "{}: valid: {} rules, {} bytes, sha256 {}",
                input.display(),
                pack.rule_count(),
                bytes.len(),
                hex(&pack.content_hash())
            );
            let budget = bulwark_interpreter::cost::BUDGET_PER_EVENT;
            let bounds: Vec<String> = bulwark_interpreter::EventType::ALL
                .iter()
                .map(|t| format!("{} {}", t.name(), pack.cost_bound(*t)))
                .collect();
            println!(
                "cost bound per event (work units): {}; budget {budget} ({:.1}x headroom); verified in {:.1} ms",
                bounds.join(", "),
                budget as f64 / pack.max_cost_bound().max(1) as f64,
                took.as_secs_f64() * 1e3
            );
            if costs {
                for t in bulwark_interpreter::EventType::ALL {
                    for (field, cost) in pack.prefilter_costs(*t) {
                        let name = t.field(field).map_or("?", |f| f.name);
                        println!("  prefilter {} {name}: {cost}", t.name());
                    }
                }
                let mut rules: Vec<(u64, usize)> = (0..pack.rule_count())
                    .map(|i| (pack.rule_cost(i).unwrap_or(0), i))
                    .collect();
                rules.sort_unstable_by(|a, b| b.cmp(a));
                for (cost, i) in rules.iter().take(20) {
                    if let Some(r) = pack.rule(*i) {
                        println!("  rule {i} {cost} {} {}", r.id, r.title);
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: rejected: {e}", input.display());
            ExitCode::from(1)
        }
    }
}
