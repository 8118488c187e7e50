//! `bulwark compile RULES... -o PACK`: Sigma rules to a verified pack.

use std::collections::BTreeMap;
use std::path::PathBuf;
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
        .arg(Arg::new("output").short('o').long("output").required(true).value_parser(value_parser!(PathBuf)))
        .arg(Arg::new("strict").long("strict").action(ArgAction::SetTrue).help("fail (exit 1, no pack) if any rule is skipped"))
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("print only the summary, not each skipped rule"))]
}

pub fn run(name: &str, m: &ArgMatches) -> Option<ExitCode> {
    if name != "compile" {
        return None;
    }
    let rules: Vec<PathBuf> = m
        .get_many::<PathBuf>("rules")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let output = m.get_one::<PathBuf>("output").cloned().unwrap_or_default();
    let strict = m.get_flag("strict");
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
    if !m.get_flag("quiet") {
        for s in &compiled.skipped {
            eprintln!("{s}");
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
    eprintln!(
        "compiled {} of {} rules ({pct:.1}%); skipped {}{}{}; pack {} bytes",
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
    // Write to a temporary file and rename, so a reader never sees half a pack. The temporary
    // file is this process's own: two compiles to one output must not rename each other's.
    let tmp = output.with_extension(format!("pack.tmp.{}", std::process::id()));
    if let Err(code) = crate::content::write(&tmp, &compiled.pack) {
        return Some(code);
    }
    if let Err(e) = std::fs::rename(&tmp, &output) {
        eprintln!("bulwark: cannot write {}: {e}", output.display());
        return Some(ExitCode::from(EXIT_USAGE));
    }
    Some(ExitCode::SUCCESS)
}
