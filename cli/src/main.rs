//! `bulwark`: the command-line tool for detection and release engineers.
//!
//! Each area of commands lives in its own module, which contributes its subcommands with
//! `commands()` and runs them with `run()`. Exit codes: 0 success, 1 content rejected (or a check
//! failed, or the release server refused a request), 2 usage or I/O error (a release server that
//! cannot be reached included).

use std::process::ExitCode;

mod compile;
mod content;
mod driver;
mod guard;
mod keys;
mod metadata;
mod scan;
mod server;
mod sim;

/// The exit code for usage and I/O errors.
pub const EXIT_USAGE: u8 = 2;

fn cli() -> clap::Command {
    clap::Command::new("bulwark")
        .about("Build, verify and run Bulwark detection content")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommands(content::commands())
        .subcommands(compile::commands())
        .subcommands(scan::commands())
        .subcommands(driver::commands())
        .subcommands(keys::commands())
        .subcommands(guard::commands())
        .subcommands(server::commands())
        .subcommands(metadata::commands())
        .subcommands(sim::commands())
}

#[cfg(unix)]
mod allocator;

fn main() -> ExitCode {
    let matches = match cli().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let Some((name, sub)) = matches.subcommand() else {
        return ExitCode::from(EXIT_USAGE);
    };
    if let Some(code) = content::run(name, sub) {
        return code;
    }
    if let Some(code) = compile::run(name, sub) {
        return code;
    }
    if let Some(code) = scan::run(name, sub) {
        return code;
    }
    if let Some(code) = keys::run(name, sub) {
        return code;
    }
    if let Some(code) = guard::run(name, sub) {
        return code;
    }
    if let Some(code) = driver::run(name, sub) {
        return code;
    }
    if let Some(code) = server::run(name, sub) {
        return code;
    }
    if let Some(code) = metadata::run(name, sub) {
        return code;
    }
    if let Some(code) = sim::run(name, sub) {
        return code;
    }
    eprintln!("bulwark: unknown command {name}");
    ExitCode::from(EXIT_USAGE)
}
