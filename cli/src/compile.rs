//! `bulwark compile RULES... -o PACK`: Sigma rules to a verified pack.
//!
//! The pack is written to a temporary file beside the target and renamed over it, so a reader
//! never sees half a pack; that is done only when the target is a regular file or does not exist
//! yet. A folder, a device, a pipe or a socket is refused, and a missing parent folder is an
//! error (nothing is created but the pack). `--check` compiles and verifies and writes nothing.
//! A compilation with no rule in it is an error unless `--allow-empty`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_sigma::{compile_paths, CompileError, Options};
use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};

use crate::EXIT_USAGE;

pub fn commands() -> Vec<Command> {
    vec![Command::new("compile")
        .about("Compile Sigma rules (files or folders) to one verified pack; skipped rules are listed with the reason")
        .arg(
            Arg::new("rules")
                .required(true)
                .num_args(1..)
                .value_parser(value_parser!(PathBuf))
                .help("Sigma rule files or folders (searched recursively for .yml/.yaml)"),
        )
        .arg(
            Arg::new("output")
                .short('o')
                .long("output")
                .required_unless_present("check")
                .value_parser(value_parser!(PathBuf))
                .help("the pack to write: a regular file, replaced whole, or a new file in an existing folder"),
        )
        .arg(Arg::new("check").long("check").action(ArgAction::SetTrue).help("compile and verify only; write nothing"))
        .arg(Arg::new("strict").long("strict").action(ArgAction::SetTrue).help("fail (exit 1, no pack) if any rule is skipped"))
        .arg(Arg::new("allow-empty").long("allow-empty").action(ArgAction::SetTrue).help("write a pack even if no rule compiled (otherwise exit 1)"))
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("print only the summary, not each skipped rule or warning"))]
}

/// Where the pack goes, once checked: the file to rename onto (a symbolic link's target).
fn output_target(output: &Path) -> Result<PathBuf, String> {
    let shown = output.display();
    match std::fs::metadata(output) {
        Ok(m) if m.is_file() => {
            Ok(std::fs::canonicalize(output).unwrap_or_else(|_| output.to_path_buf()))
        }
        Ok(m) if m.is_dir() => Err(format!(
            "{shown} is a folder; -o takes the pack's file name"
        )),
        Ok(_) => Err(format!(
            "{shown} is not a regular file (a device, pipe or socket): not replacing it"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if parent.is_dir() {
                Ok(output.to_path_buf())
            } else {
                Err(format!(
                    "cannot write {shown}: folder {} does not exist (compile creates no folders)",
                    parent.display()
                ))
            }
        }
        Err(e) => Err(format!("cannot write {shown}: {e}")),
    }
}

/// Writes `bytes` to a temporary file beside `target` (this process's own, so that compiles to
/// one output at once do not rename each other's) and renames it over `target`.
fn write_pack(target: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pack".into());
    let tmp = target.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let result = std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, target))
        .map_err(|e| format!("cannot write {}: {e}", target.display()));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn run(name: &str, m: &ArgMatches) -> Option<ExitCode> {
    if name != "compile" {
        return None;
    }
    let rules: Vec<PathBuf> = m
        .get_many::<PathBuf>("rules")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let check = m.get_flag("check");
    let strict = m.get_flag("strict");
    let quiet = m.get_flag("quiet");
    // Refuse a bad output before the work of compiling.
    let target = match m.get_one::<PathBuf>("output") {
        Some(output) if !check => match output_target(output) {
            Ok(t) => Some(t),
            Err(why) => {
                eprintln!("bulwark: {why}");
                return Some(ExitCode::from(EXIT_USAGE));
            }
        },
        _ => None,
    };
    // Report skips before failing in strict mode: compile leniently, then apply strictness.
    let compiled = match compile_paths(&rules, &Options { strict: false }) {
        Ok(c) => c,
        Err(e @ CompileError::Io { .. }) => {
            eprintln!("bulwark: {e}");
            return Some(ExitCode::from(EXIT_USAGE));
        }
        Err(e) => {
            eprintln!("bulwark: {e}");
            return Some(ExitCode::from(1));
        }
    };
    if !quiet {
        for s in &compiled.skipped {
            eprintln!("{s}");
        }
        for w in &compiled.warnings {
            eprintln!("{w}");
        }
    }
    let total = compiled.rules.len() + compiled.skipped.len();
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &compiled.skipped {
        *by_reason.entry(s.reason.kind()).or_default() += 1;
    }
    let reasons: Vec<String> = by_reason.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let pct = if total == 0 {
        0.0
    } else {
        100.0 * compiled.rules.len() as f64 / total as f64
    };
    let warned = if compiled.warnings.is_empty() {
        String::new()
    } else {
        format!("; {} warnings", compiled.warnings.len())
    };
    eprintln!(
        "compiled {} of {} rules ({pct:.1}%); skipped {}{}{}{warned}; pack {} bytes",
        compiled.rules.len(),
        total,
        compiled.skipped.len(),
        if reasons.is_empty() { "" } else { ": " },
        reasons.join(", "),
        compiled.pack.len()
    );
    if strict && !compiled.skipped.is_empty() {
        eprintln!(
            "bulwark: {} rules skipped and --strict given: no pack written",
            compiled.skipped.len()
        );
        return Some(ExitCode::from(1));
    }
    if compiled.rules.is_empty() && !m.get_flag("allow-empty") {
        eprintln!(
            "bulwark: no rule compiled{}: no pack written (--allow-empty writes an empty one)",
            if total == 0 {
                " (no rule files found)"
            } else {
                ""
            }
        );
        return Some(ExitCode::from(1));
    }
    let Some(target) = target else {
        eprintln!("check: the pack verifies; nothing written");
        return Some(ExitCode::SUCCESS);
    };
    if let Err(why) = write_pack(&target, &compiled.pack) {
        eprintln!("bulwark: {why}");
        return Some(ExitCode::from(EXIT_USAGE));
    }
    Some(ExitCode::SUCCESS)
}
