//! `bulwark guard`: the boot-count guard on a directory, driving the same state machine as the
//! driver, so it can be exercised and demonstrated off Windows.
//!
//! The state directory holds `guard.conf` (channel, threshold, stable period), `trusted/*.pub`,
//! the two record slots `record-a` and `record-b`, the stored envelopes in `packs/`, and
//! `uptime` (seconds the simulated machine has run since its last boot).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use bulwark_loader_boot_guard::host::DirStore;
use bulwark_loader_boot_guard::state::{DEFAULT_STABLE_SECS, DEFAULT_THRESHOLD};
use bulwark_loader_boot_guard::{
    Config, ContentId, Decision, Event, EventKind, Guard, GuardError, OpenError, Reason,
    ResetError, ResetRequest, SlotProblem, TrustedKeys, CODE_RECORDS_UNUSABLE,
};
use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};
use serde_json::{json, Value};

use crate::keys::{hex, public_text, read_public};
use crate::EXIT_USAGE;

const CONF: &str = "guard.conf";
// The defaults written in `commands()` as text.
const _: () = assert!(DEFAULT_THRESHOLD == 3 && DEFAULT_STABLE_SECS == 600);

pub fn commands() -> Vec<Command> {
    let state = || {
        Arg::new("state")
            .long("state")
            .required(true)
            .value_parser(value_parser!(PathBuf))
            .help("the guard's state directory")
    };
    vec![Command::new("guard")
        .about("Drive the boot-count guard on a state directory (the driver's state machine, off Windows)")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("init")
                .about("Create a state directory: channel, threshold N, stable period, trusted keys")
                .arg(state())
                .arg(Arg::new("trust").long("trust").required(true).action(ArgAction::Append).value_parser(value_parser!(PathBuf)).help("a trusted public key file (KEY.pub); repeatable"))
                .arg(Arg::new("channel").long("channel").default_value("1").value_parser(value_parser!(u32)))
                .arg(Arg::new("threshold").long("threshold").default_value("3").value_parser(value_parser!(u8)).help("N: failed boots after which a candidate is quarantined (1..=10)"))
                .arg(Arg::new("stable-secs").long("stable-secs").default_value("600").value_parser(value_parser!(u32)).help("seconds a candidate must run before it is blessed")),
        )
        .subcommand(
            Command::new("stage")
                .about("Open a signed envelope (size, signature, version, verifier) and stage it as the candidate")
                .arg(state())
                .arg(Arg::new("hot").long("hot").action(ArgAction::SetTrue).help("activate at once (a hot update; counts as an attempt)"))
                .arg(Arg::new("input").required(true).value_parser(value_parser!(PathBuf)).help("envelope file (from bulwark sign)")),
        )
        .subcommand(Command::new("boot").about("Boot: record the attempt and print the decision (JSON): which pack loads and why").arg(state()))
        .subcommand(
            Command::new("run")
                .about("The machine runs for SECS seconds (the driver's timer): blesses a candidate after the stable period")
                .arg(state())
                .arg(Arg::new("secs").long("secs").required(true).value_parser(value_parser!(u32))),
        )
        .subcommand(Command::new("healthy").about("The service confirms a healthy boot: bless the running candidate").arg(state()))
        .subcommand(Command::new("shutdown").about("Clean shutdown: the running attempt is not a failure").arg(state()))
        .subcommand(Command::new("crash").about("Unclean stop (crash or power loss): nothing is written, the next boot counts it").arg(state()))
        .subcommand(Command::new("status").about("Print the guard's state (JSON): LKG, candidate, attempts, quarantine, recent events").arg(state()))
        .subcommand(
            Command::new("reset")
                .about("Administrator: re-create lost guard records (both slots damaged, or one damaged and the other missing) with an anti-downgrade floor; refused while the records are usable")
                .arg(state())
                .arg(floor()),
        )
        .subcommand(
            Command::new("reset-request")
                .about("Administrator: write the driver's reset request (send it with bulwark driver stage FILE; accepted only while the driver's guard records are lost)")
                .arg(Arg::new("channel").long("channel").default_value("1").value_parser(value_parser!(u32)))
                .arg(floor())
                .arg(Arg::new("output").short('o').long("output").required(true).value_parser(value_parser!(PathBuf)).help("where to write the request")),
        )]
}

fn floor() -> Arg {
    Arg::new("floor")
        .long("floor")
        .required(true)
        .value_parser(value_parser!(u64))
        .help("the newest content version this machine had accepted: only newer versions can be staged afterwards")
}

pub fn run(name: &str, m: &ArgMatches) -> Option<ExitCode> {
    if name != "guard" {
        return None;
    }
    let (sub, m) = m.subcommand()?;
    // `reset-request` has no state directory.
    let dir = m
        .try_get_one::<PathBuf>("state")
        .ok()
        .flatten()
        .cloned()
        .unwrap_or_default();
    let result = match sub {
        "init" => init(&dir, m),
        "stage" => stage(
            &dir,
            &m.get_one::<PathBuf>("input").cloned().unwrap_or_default(),
            m.get_flag("hot"),
        ),
        "boot" => boot(&dir),
        "run" => run_for(&dir, m.get_one::<u32>("secs").copied().unwrap_or(0)),
        "healthy" => healthy(&dir),
        "shutdown" => shutdown(&dir),
        "crash" => crash(&dir),
        "status" => status(&dir),
        "reset" => reset(&dir, m.get_one::<u64>("floor").copied().unwrap_or(0)),
        "reset-request" => reset_request(m),
        _ => return None,
    };
    Some(result.unwrap_or_else(|code| code))
}

type Res = Result<ExitCode, ExitCode>;

fn usage(msg: String) -> ExitCode {
    eprintln!("bulwark: {msg}");
    ExitCode::from(EXIT_USAGE)
}

/// Now, in 100 ns units since 1601-01-01 UTC (the driver's clock).
fn now() -> u64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() / 100)
        .unwrap_or(0);
    u64::try_from(unix)
        .unwrap_or(u64::MAX)
        .saturating_add(116_444_736_000_000_000)
}

fn init(dir: &Path, m: &ArgMatches) -> Res {
    let config = Config {
        channel: m.get_one::<u32>("channel").copied().unwrap_or(1),
        threshold: m
            .get_one::<u8>("threshold")
            .copied()
            .unwrap_or(DEFAULT_THRESHOLD),
        stable_secs: m
            .get_one::<u32>("stable-secs")
            .copied()
            .unwrap_or(DEFAULT_STABLE_SECS),
    }
    .validate()
    .map_err(|e| usage(format!("{e}")))?;
    if dir.join(CONF).exists() {
        return Err(usage(format!("{} is already initialised", dir.display())));
    }
    let mut keys = Vec::new();
    for p in m.get_many::<PathBuf>("trust").into_iter().flatten() {
        keys.push(read_public(p)?);
    }
    TrustedKeys::new(&keys).map_err(|e| usage(format!("{e}")))?;
    std::fs::create_dir_all(dir.join("trusted"))
        .map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
    for k in &keys {
        let p = dir.join("trusted").join(format!("{}.pub", &hex(k)[..16]));
        crate::content::write(&p, public_text(k).as_bytes())?;
    }
    let conf = format!(
        "channel = {}\nthreshold = {}\nstable_secs = {}\n",
        config.channel, config.threshold, config.stable_secs
    );
    crate::content::write(&dir.join(CONF), conf.as_bytes())?;
    DirStore::new(dir).map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
    print_json(&json!({
        "initialised": dir.display().to_string(),
        "channel": config.channel,
        "threshold": config.threshold,
        "stable_secs": config.stable_secs,
        "trusted_keys": keys.iter().map(|k| hex(k)).collect::<Vec<_>>(),
    }));
    Ok(ExitCode::SUCCESS)
}

fn read_config(dir: &Path) -> Result<Config, ExitCode> {
    let path = dir.join(CONF);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        usage(format!(
            "{}: {e} (is this a guard state directory? run bulwark guard init --state {} --trust KEY.pub)",
            path.display(),
            dir.display()
        ))
    })?;
    let mut config = Config::new(1);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| usage(format!("{}: line {}: {what}", path.display(), i + 1));
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| bad("expected key = value"))?;
        let value = value.trim();
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| bad(&format!("{value:?} is not a number")))
        };
        match key.trim() {
            "channel" => {
                config.channel =
                    u32::try_from(number()?).map_err(|_| bad("channel out of range"))?
            }
            "threshold" => {
                config.threshold =
                    u8::try_from(number()?).map_err(|_| bad("threshold out of range"))?
            }
            "stable_secs" => {
                config.stable_secs =
                    u32::try_from(number()?).map_err(|_| bad("stable_secs out of range"))?
            }
            other => return Err(bad(&format!("unknown key {other:?}"))),
        }
    }
    config
        .validate()
        .map_err(|e| usage(format!("{}: {e}", path.display())))
}

fn read_keys(dir: &Path) -> Result<TrustedKeys, ExitCode> {
    let tdir = dir.join("trusted");
    let entries =
        std::fs::read_dir(&tdir).map_err(|e| usage(format!("{}: {e}", tdir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    paths.sort();
    let mut keys = Vec::new();
    for p in &paths {
        keys.push(read_public(p)?);
    }
    TrustedKeys::new(&keys).map_err(|e| usage(format!("{}: {e}", tdir.display())))
}

/// The administrator's way out of lost records, for messages.
fn reset_hint(dir: &Path) -> String {
    format!(
        "to reset them: bulwark guard reset --state {} --floor N (N: the newest content version this machine had accepted)",
        dir.display()
    )
}

/// Opens the guard on the directory (never writes), or says why not.
fn try_open(dir: &Path) -> Result<Result<Guard<DirStore>, OpenError>, ExitCode> {
    let config = read_config(dir)?;
    let store = DirStore::new(dir).map_err(|e| usage(format!("{}: {e}", dir.display())))?;
    let guard = match Guard::open(store, config) {
        Ok(g) => g,
        Err(e) => return Ok(Err(e)),
    };
    if let Some((slot, problem)) = &guard.recovery().rejected {
        eprintln!(
            "bulwark: {}: record slot {} not trusted ({problem}); using slot {} (sequence {})",
            dir.display(),
            slot.name(),
            guard.recovery().used.map_or("none", |s| s.name()),
            guard.state().seq
        );
    }
    Ok(Ok(guard))
}

/// Opens the guard on the directory: never writes; a damaged slot falls back to the other, lost
/// records (both damaged, or one damaged and the other missing) are a clear error (exit 2) and
/// nothing is touched.
fn open(dir: &Path) -> Result<Guard<DirStore>, ExitCode> {
    try_open(dir)?.map_err(|e| {
        let hint = match e {
            OpenError::NoValidRecord { .. } => format!("; {}", reset_hint(dir)),
            _ => String::new(),
        };
        usage(format!(
            "{}: guard records unusable: {e}; nothing was changed{hint}",
            dir.display()
        ))
    })
}

fn content_json(id: Option<ContentId>) -> Value {
    match id {
        Some(id) => json!({"version": id.version, "hash": hex(&id.hash)}),
        None => Value::Null,
    }
}

fn detail_text(e: &Event) -> String {
    match e.kind {
        EventKind::BootCandidate
        | EventKind::BootLkg
        | EventKind::BootNoContent
        | EventKind::Blessed
        | EventKind::Reverted
        | EventKind::LkgHealthy => Reason::from_code(e.detail)
            .map(|r| r.name().to_string())
            .unwrap_or_default(),
        EventKind::Refused | EventKind::CandidateUnusable | EventKind::LkgUnusable => {
            format!("reason code {}", e.detail)
        }
        EventKind::CrashCounted => match e.detail {
            1 => "last-known-good was running".into(),
            2 => "the candidate was running".into(),
            _ => String::new(),
        },
        EventKind::Quarantined => format!("after {} failed boots", e.detail),
        EventKind::Staged => if e.detail == 1 {
            "activated at once (hot update)"
        } else {
            "tried at the next boot"
        }
        .into(),
        EventKind::RecordRecovered => {
            let slot = if e.detail & 0xff == 1 { "A" } else { "B" };
            let problem = SlotProblem::code_name(((e.detail >> 8) & 0xff) as u8);
            match e.detail >> 16 {
                0 => format!("slot {slot} was not trusted: {problem}"),
                at => format!("slot {slot} was not trusted: {problem} at byte offset {at}"),
            }
        }
        EventKind::RecordsReset => format!(
            "an administrator re-created lost records with floor {} (slot A was {}, slot B {})",
            e.content.version,
            reset_problem((e.detail & 0xff) as u8),
            reset_problem(((e.detail >> 8) & 0xff) as u8)
        ),
        EventKind::StoreFailed => format!("store error {:#x}", e.detail),
        EventKind::CleanShutdown => String::new(),
    }
}

fn reset_problem(code: u8) -> &'static str {
    match code {
        0 => "never written",
        c => SlotProblem::code_name(c),
    }
}

fn event_json(e: &Event) -> Value {
    json!({
        "seq": e.seq,
        "time": e.time,
        "kind": e.kind.name(),
        "attempts": e.attempts,
        "detail": e.detail,
        "detail_text": detail_text(e),
        "content": content_json((e.content != ContentId::NONE).then_some(e.content)),
    })
}

fn events_after(guard: &Guard<DirStore>, seq: u64) -> Value {
    Value::Array(guard.state().events_after(seq).map(event_json).collect())
}

fn print_json(v: &Value) {
    use std::io::Write;
    // A closed pipe (`| head`) is not an error worth more than silence.
    let _ = writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_default()
    );
}

fn set_uptime(dir: &Path, secs: Option<u32>) -> Result<(), ExitCode> {
    let p = dir.join("uptime");
    match secs {
        Some(s) => crate::content::write(&p, format!("{s}\n").as_bytes()),
        None => {
            let _ = std::fs::remove_file(&p);
            Ok(())
        }
    }
}

fn uptime(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("uptime"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn stage(dir: &Path, input: &Path, hot: bool) -> Res {
    let mut guard = match try_open(dir)? {
        Ok(g) => g,
        // Lost records: refused, like every other stage the guard does not accept.
        Err(e @ OpenError::NoValidRecord { .. }) => {
            let msg = format!("{e}; {}", reset_hint(dir));
            eprintln!("{}: refused: {msg}", input.display());
            print_json(&json!({"refused": msg, "code": CODE_RECORDS_UNUSABLE}));
            return Ok(ExitCode::from(1));
        }
        Err(_) => return open(dir).map(|_| ExitCode::from(EXIT_USAGE)),
    };
    let keys = read_keys(dir)?;
    // The loader refuses anything larger anyway; do not read a huge file to find that out.
    let max = bulwark_loader_boot_guard::envelope::MAX_ENVELOPE_BYTES;
    if let Ok(meta) = std::fs::metadata(input) {
        if meta.len() > max as u64 {
            eprintln!(
                "{}: refused: envelope is {} bytes, more than the limit of {max}",
                input.display(),
                meta.len()
            );
            return Ok(ExitCode::from(1));
        }
    }
    let bytes = crate::content::read(input)?;
    let before = guard.state().next_event_seq().saturating_sub(1);
    match guard.stage(&keys, &bytes, hot, now()) {
        Ok(opened) => {
            if hot {
                set_uptime(dir, Some(0))?;
            }
            print_json(&json!({
                "staged": content_json(Some(opened.id)),
                "channel": opened.header.channel,
                "rules": opened.pack.rule_count(),
                "signer": hex(&opened.header.signer),
                "active": guard.active().name(),
                "attempts": guard.state().attempts,
                "events": events_after(&guard, before),
            }));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: refused: {e}", input.display());
            print_json(&json!({"refused": e.to_string(), "code": e.code()}));
            Ok(ExitCode::from(match e {
                GuardError::Store(_) => EXIT_USAGE,
                _ => 1,
            }))
        }
    }
}

fn boot(dir: &Path) -> Res {
    let mut guard = open(dir)?;
    let keys = read_keys(dir)?;
    let before = guard.state().next_event_seq().saturating_sub(1);
    let b = guard.boot(&keys, now());
    set_uptime(dir, Some(0))?;
    let (decision, reason, attempt) = match b.decision {
        Decision::Candidate { attempt, .. } => (
            "candidate",
            Reason::CandidateHasAttemptsLeft.name(),
            Some(attempt),
        ),
        Decision::Lkg { reason, .. } => ("last-known-good", reason.name(), None),
        Decision::NoContent { reason } => ("none", reason.name(), None),
    };
    let load = b.content.as_ref().map(|o| {
        json!({
            "version": o.id.version,
            "hash": hex(&o.id.hash),
            "rules": o.pack.rule_count(),
            "file": guard.store().blob_path(&o.id).display().to_string(),
        })
    });
    print_json(&json!({
        "decision": decision,
        "reason": reason,
        "attempt": attempt,
        "threshold": guard.config().threshold,
        "load": load,
        "last_known_good": content_json(guard.state().lkg),
        "candidate": content_json(guard.state().candidate),
        "events": events_after(&guard, before),
    }));
    Ok(ExitCode::SUCCESS)
}

fn run_for(dir: &Path, secs: u32) -> Res {
    let mut guard = open(dir)?;
    // The driver's uptime is in memory; here it lives in a file between commands.
    let total = uptime(dir).saturating_add(secs);
    let before = guard.state().next_event_seq().saturating_sub(1);
    let blessed = match guard.tick(total, now()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "bulwark: {}: could not write the record: {e}",
                dir.display()
            );
            None
        }
    };
    set_uptime(dir, Some(total))?;
    print_json(&json!({
        "uptime_secs": total,
        "stable_secs": guard.config().stable_secs,
        "blessed": content_json(blessed),
        "active": guard.active().name(),
        "events": events_after(&guard, before),
    }));
    Ok(ExitCode::SUCCESS)
}

fn healthy(dir: &Path) -> Res {
    let mut guard = open(dir)?;
    let before = guard.state().next_event_seq().saturating_sub(1);
    match guard.confirm_healthy(now()) {
        Ok(id) => {
            print_json(
                &json!({"blessed": content_json(Some(id)), "events": events_after(&guard, before)}),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("bulwark: {}: not blessed: {e}", dir.display());
            Ok(ExitCode::from(match e {
                GuardError::Store(_) => EXIT_USAGE,
                _ => 1,
            }))
        }
    }
}

fn shutdown(dir: &Path) -> Res {
    let mut guard = open(dir)?;
    let before = guard.state().next_event_seq().saturating_sub(1);
    guard.clean_shutdown(now()).map_err(|e| {
        usage(format!(
            "{}: could not write the record: {e}",
            dir.display()
        ))
    })?;
    set_uptime(dir, None)?;
    print_json(&json!({"shutdown": "clean", "events": events_after(&guard, before)}));
    Ok(ExitCode::SUCCESS)
}

fn crash(dir: &Path) -> Res {
    let guard = open(dir)?;
    set_uptime(dir, None)?;
    print_json(&json!({
        "crash": "unclean stop: nothing written; the next boot counts it",
        "was_running": guard.active().name(),
    }));
    Ok(ExitCode::SUCCESS)
}

fn status(dir: &Path) -> Res {
    let guard = open(dir)?;
    let s = guard.state();
    let c = guard.config();
    let rejected = guard.recovery().rejected.as_ref().map(|(slot, p)| {
        json!({"slot": slot.name(), "problem": p.to_string(), "empty": *p == SlotProblem::Empty})
    });
    print_json(&json!({
        "channel": c.channel,
        "threshold": c.threshold,
        "stable_secs": c.stable_secs,
        "record": {
            "slot": guard.recovery().used.map(|s| s.name()),
            "seq": s.seq,
            "rejected": rejected,
        },
        "newest_version": s.newest,
        "boots": s.boots,
        "active": s.active.name(),
        "last_known_good": content_json(s.lkg),
        "lkg_unfinished_runs": s.lkg_attempts,
        "candidate": content_json(s.candidate),
        "attempts": s.attempts,
        "quarantine": s.quarantine().iter().map(|q| content_json(Some(*q))).collect::<Vec<_>>(),
        "uptime_secs": uptime(dir),
        "events": Value::Array(s.events().map(event_json).collect()),
    }));
    Ok(ExitCode::SUCCESS)
}

fn reset(dir: &Path, floor: u64) -> Res {
    let config = read_config(dir)?;
    let store = DirStore::new(dir).map_err(|e| usage(format!("{}: {e}", dir.display())))?;
    match Guard::reset(store, config, floor, now()) {
        Ok(guard) => {
            let s = guard.state();
            print_json(&json!({
                "reset": dir.display().to_string(),
                "newest_version": s.newest,
                "record": {"slot": guard.recovery().used.map(|s| s.name()), "seq": s.seq},
                "events": Value::Array(s.events().map(event_json).collect()),
            }));
            Ok(ExitCode::SUCCESS)
        }
        Err((e, _)) => {
            eprintln!("bulwark: {}: reset refused: {e}", dir.display());
            print_json(&json!({"refused": e.to_string(), "code": e.code()}));
            Ok(ExitCode::from(match e {
                ResetError::Store(_) => EXIT_USAGE,
                _ => 1,
            }))
        }
    }
}

fn reset_request(m: &ArgMatches) -> Res {
    let request = ResetRequest {
        channel: m.get_one::<u32>("channel").copied().unwrap_or(1),
        floor: m.get_one::<u64>("floor").copied().unwrap_or(0),
    };
    let out = m.get_one::<PathBuf>("output").cloned().unwrap_or_default();
    crate::content::write(&out, &request.encode())?;
    print_json(&json!({
        "reset_request": out.display().to_string(),
        "channel": request.channel,
        "floor": request.floor,
        "send_with": format!("bulwark driver stage {}", out.display()),
    }));
    Ok(ExitCode::SUCCESS)
}
