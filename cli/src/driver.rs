//! `bulwark driver ...`: talk to the running driver through its control device (Windows, elevated).

use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_client::{Client, ClientError, Transport};
use clap::{value_parser, Arg, ArgMatches, Command};
use serde_json::json;

use crate::EXIT_USAGE;

pub fn commands() -> Vec<Command> {
    vec![Command::new("driver")
        .about("Talk to the running Bulwark driver through its control device (Windows, elevated)")
        .subcommand_required(true)
        .subcommand(Command::new("status").about("Driver, running content, guard and counters (JSON)"))
        .subcommand(
            Command::new("detections")
                .about("Take detections from the driver, one JSON line each")
                .arg(
                    Arg::new("pack")
                        .long("pack")
                        .value_parser(value_parser!(PathBuf))
                        .help("the running pack, to name each rule (id, title, author)"),
                )
                .arg(Arg::new("max").long("max").default_value("256").value_parser(value_parser!(u32))),
        )
        .subcommand(Command::new("guard-events").about("Take guard events from the driver, one JSON line each"))
        .subcommand(
            Command::new("stage")
                .about("Stage a signed envelope: loader and guard run in the driver; exit 1 if refused")
                .arg(Arg::new("envelope").required(true).value_parser(value_parser!(PathBuf)))
                .arg(
                    Arg::new("next-boot")
                        .long("next-boot")
                        .action(clap::ArgAction::SetTrue)
                        .help("stage it as the candidate for the next boot instead of running it now"),
                ),
        )
        .subcommand(Command::new("confirm").about("Confirm a healthy boot: bless the running candidate"))
        .subcommand(
            Command::new("revert")
                .about("Back to last-known-good: the candidate is quarantined; exit 1 if refused"),
        )]
}

pub fn run(name: &str, m: &ArgMatches) -> Option<ExitCode> {
    if name != "driver" {
        return None;
    }
    let (sub, m) = m.subcommand()?;
    #[cfg(windows)]
    let transport = bulwark_client::DeviceTransport::open();
    #[cfg(not(windows))]
    let transport: Result<NoDevice, ClientError> = Err(ClientError::Open(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "the control device exists only on Windows with the driver loaded",
    )));
    let mut client = match transport {
        Ok(t) => Client::new(t),
        Err(e) => {
            eprintln!("bulwark: {e}");
            return Some(ExitCode::from(EXIT_USAGE));
        }
    };
    Some(match drive(&mut client, sub, m) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bulwark: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    })
}

/// A transport type for platforms without the device (never constructed).
#[cfg(not(windows))]
enum NoDevice {}

#[cfg(not(windows))]
impl Transport for NoDevice {
    fn ioctl(&mut self, _: u32, _: &[u8], _: &mut [u8]) -> Result<usize, ClientError> {
        match *self {}
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn drive<T: Transport>(
    client: &mut Client<T>,
    sub: &str,
    m: &ArgMatches,
) -> Result<ExitCode, ClientError> {
    match sub {
        "status" => {
            let s = client.status()?;
            let v = json!({
                "driver_version": format!("{}.{}.{}", s.driver_version >> 16, (s.driver_version >> 8) & 0xff, s.driver_version & 0xff),
                "schema_hash": hex(&s.schema_hash),
                "schema_matches_this_tool": s.schema_hash == bulwark_interpreter::schema_hash(),
                "content": {
                    "source": s.content.source.name(),
                    "channel": s.content.channel,
                    "version": s.content.version,
                    "hash": hex(&s.content.hash),
                    "rules": s.content.rules,
                },
                "guard": {
                    "attempts": s.guard.attempts,
                    "threshold": s.guard.threshold,
                    "candidate_staged": s.guard.candidate_staged,
                    "candidate_version": s.guard.candidate_version,
                    "quarantined": s.guard.quarantined,
                    "stable_period_secs": s.guard.stable_period_secs,
                    "stable_elapsed_secs": s.guard.stable_elapsed_secs,
                    "last_known_good_version": s.guard.lkg_version,
                },
                "counters": {
                    "process_creation_events": s.counters.events[0],
                    "image_load_events": s.counters.events[1],
                    "registry_events": s.counters.events[2],
                    "detections": s.counters.detections,
                    "detections_dropped": s.counters.detections_dropped,
                    "blocked": s.counters.blocked,
                    "eval_errors": s.counters.eval_errors,
                    "over_budget": s.counters.over_budget,
                    "content_busy": s.counters.content_busy,
                    "events_dropped": s.counters.events_dropped,
                    "blocks_spared": s.counters.blocks_spared,
                    "rules_demoted": s.counters.rules_demoted,
                    "detections_pending": s.counters.detections_pending,
                    "guard_events_pending": s.counters.guard_events_pending,
                },
            });
            println!("{v:#}");
            Ok(ExitCode::SUCCESS)
        }
        "detections" => {
            let pack = match m.get_one::<PathBuf>("pack") {
                Some(p) => match std::fs::read(p) {
                    Ok(bytes) => match bulwark_interpreter::verify(&bytes) {
                        Ok(pack) => Some(pack),
                        Err(e) => {
                            eprintln!("bulwark: {}: rejected: {e}", p.display());
                            return Ok(ExitCode::from(1));
                        }
                    },
                    Err(e) => {
                        eprintln!("bulwark: cannot read {}: {e}", p.display());
                        return Ok(ExitCode::from(EXIT_USAGE));
                    }
                },
                None => None,
            };
            let max = m.get_one::<u32>("max").copied().unwrap_or(256);
            let batch = client.read_detections(max)?;
            for d in &batch.records {
                let rule = pack.as_ref().and_then(|p| p.rule(d.rule_index as usize));
                let v = json!({
                    "seq": d.seq,
                    "time": d.time,
                    "content_version": d.content_version,
                    "rule_index": d.rule_index,
                    "rule_id": rule.as_ref().map(|r| r.id),
                    "title": rule.as_ref().map(|r| r.title),
                    "author": rule.as_ref().map(|r| r.author),
                    "event_type": bulwark_interpreter::EventType::from_id(d.event_type).map(|t| t.name()),
                    "blocked": d.blocked,
                    "process_id": d.process_id,
                    "parent_process_id": d.parent_process_id,
                    "image": d.image,
                    "command_line": d.command_line,
                    "user": d.user,
                    "parent_image": d.parent_image,
                    "hashes": d.hashes,
                    "truncated": d.truncated,
                });
                println!("{v}");
            }
            if batch.dropped_total > 0 {
                eprintln!(
                    "bulwark: the driver has dropped {} detections since it started",
                    batch.dropped_total
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        "guard-events" => {
            let batch = client.read_guard_events(64)?;
            for e in &batch.records {
                let name = match e.kind {
                    bulwark_protocol::GuardEventRecord::KIND_OVER_BUDGET => "over-budget",
                    k => bulwark_loader_boot_guard::state::EventKind::from_code(k)
                        .map_or("unknown", |k| k.name()),
                };
                let v = json!({
                    "seq": e.seq,
                    "time": e.time,
                    "kind": e.kind,
                    "name": name,
                    "attempts": e.attempts,
                    "detail": e.detail,
                    "version": e.version,
                    "hash": hex(&e.hash),
                });
                println!("{v}");
            }
            Ok(ExitCode::SUCCESS)
        }
        "stage" => {
            let path = m
                .get_one::<PathBuf>("envelope")
                .cloned()
                .unwrap_or_default();
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("bulwark: cannot read {}: {e}", path.display());
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            };
            let a = if m.get_flag("next-boot") {
                client.stage_next_boot(&bytes)?
            } else {
                client.stage(&bytes)?
            };
            if a.accepted {
                println!("{}: staged: {}", path.display(), a.message);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "{}: refused (code {}): {}",
                    path.display(),
                    a.code,
                    a.message
                );
                Ok(ExitCode::from(1))
            }
        }
        "confirm" => {
            let a = client.confirm_healthy()?;
            if a.accepted {
                println!("confirmed: {}", a.message);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("not confirmed (code {}): {}", a.code, a.message);
                Ok(ExitCode::from(1))
            }
        }
        "revert" => {
            let a = client.revert()?;
            if a.accepted {
                println!("reverted: {}", a.message);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("not reverted (code {}): {}", a.code, a.message);
                Ok(ExitCode::from(1))
            }
        }
        _ => Ok(ExitCode::from(EXIT_USAGE)),
    }
}
