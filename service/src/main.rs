//! `bulwark-service run --config FILE` (foreground), `bulwark-service status --config FILE`, and
//! the administrator's `pin VERSION | unpin | pause | resume | revert --config FILE`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bulwark_service::admin::Command;
use bulwark_service::agent::{offline_status, Agent, OsRandom, SystemClock};
use bulwark_service::config::ServiceConfig;
use bulwark_service::link::InProcess;
use bulwark_service::net::{ContentSource, Http, LocalDir, Metadata, NetError};

/// The configured content source.
enum Source {
    Http(Http),
    Dir(LocalDir),
}

impl ContentSource for Source {
    fn metadata(&mut self, which: Metadata) -> Result<String, NetError> {
        match self {
            Source::Http(h) => h.metadata(which),
            Source::Dir(d) => d.metadata(which),
        }
    }
    fn envelope(&mut self, sha256_hex: &str) -> Result<Vec<u8>, NetError> {
        match self {
            Source::Http(h) => h.envelope(sha256_hex),
            Source::Dir(d) => d.envelope(sha256_hex),
        }
    }
}

const USAGE: &str = "usage: bulwark-service run --config FILE
       bulwark-service status --config FILE
       bulwark-service pin VERSION --config FILE   stay on this content version
       bulwark-service unpin --config FILE         follow the rollout again
       bulwark-service pause --config FILE         take no new content
       bulwark-service resume --config FILE        take new content again
       bulwark-service revert --config FILE        back to last-known-good now";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, version, config) = match args.as_slice() {
        [cmd, flag, file] if flag == "--config" => (cmd.as_str(), None, PathBuf::from(file)),
        [cmd, version, flag, file] if flag == "--config" && cmd == "pin" => {
            match version.parse::<u64>() {
                Ok(v) => (cmd.as_str(), Some(v), PathBuf::from(file)),
                Err(_) => {
                    eprintln!("bulwark-service: pin: {version:?} is not a content version (a whole number)");
                    return ExitCode::from(2);
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let admin = |c| admin(&config, c);
    let result = match (cmd, version) {
        ("run", None) => run(&config),
        ("status", None) => status(&config),
        ("pin", Some(v)) => admin(Command::Pin(v)),
        ("unpin", None) => admin(Command::Unpin),
        ("pause", None) => admin(Command::Pause),
        ("resume", None) => admin(Command::Resume),
        ("revert", None) => admin(Command::Revert),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulwark-service: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An administrator's command: written to the state directory, carried out by the running
/// service at its next step.
fn admin(path: &Path, command: Command) -> Result<(), String> {
    let config = ServiceConfig::load(path).map_err(|e| e.to_string())?;
    let controls =
        bulwark_service::admin::apply(&config.state_dir, command).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&controls).map_err(|e| e.to_string())?
    );
    eprintln!("bulwark-service: the running service carries this out at its next step");
    Ok(())
}

fn status(path: &Path) -> Result<(), String> {
    let config = ServiceConfig::load(path).map_err(|e| e.to_string())?;
    let report = offline_status(&config.state_dir).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn run(path: &Path) -> Result<(), String> {
    let config = ServiceConfig::load(path).map_err(|e| e.to_string())?;
    let agent_config = config.agent(path).map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(config.timeout_secs);
    let ca = match &config.ca_cert {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let http =
        || Http::new(&config.server_url, ca.as_deref(), None, timeout).map_err(|e| e.to_string());
    let source = match &config.content_dir {
        Some(d) => Source::Dir(LocalDir(d.clone())),
        None => Source::Http(http()?),
    };
    // Off Windows (and until the DeviceIoControl link is wired in), the driver core runs in
    // this process with its guard's records in guard_dir.
    let guard_dir = config
        .guard_dir
        .clone()
        .unwrap_or_else(|| config.state_dir.join("guard"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let link = InProcess::boot(
        &guard_dir,
        bulwark_loader_boot_guard::Config {
            channel: config.channel_number,
            threshold: 3,
            stable_secs: 600,
        },
        &agent_config.release_keys,
        now,
    )
    .map_err(|e| e.to_string())?;
    let mut agent = Agent::open(
        agent_config,
        &config.state_dir,
        link,
        source,
        http()?,
        SystemClock,
        OsRandom,
    )
    .map_err(|e| e.to_string())?;
    let mut admin_file = bulwark_service::admin::Watcher::default();
    admin_file.changed(&config.state_dir);
    loop {
        let wait = agent.step();
        for line in agent.log.drain(..) {
            eprintln!("bulwark-service: {line}");
        }
        // Sleep until the next step is due, or an administrator's command arrives.
        for _ in 0..wait {
            std::thread::sleep(Duration::from_secs(1));
            if admin_file.changed(&config.state_dir) {
                break;
            }
        }
    }
}
