//! `bulwark-service run --config FILE` (foreground), `bulwark-service status --config FILE`, the
//! administrator's `pin VERSION | unpin | pause | resume | revert --config FILE`, and on Windows
//! `install | uninstall | start | stop` through the service control manager (`service` is the
//! entry point `install` registers).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_service::admin::Command;
use bulwark_service::agent::offline_status;
use bulwark_service::config::ServiceConfig;
use bulwark_service::runner::{self, Logger, Stop};

const USAGE: &str = "usage: bulwark-service run --config FILE
       bulwark-service status --config FILE
       bulwark-service pin VERSION --config FILE   stay on this content version
       bulwark-service unpin --config FILE         follow the rollout again
       bulwark-service pause --config FILE         take no new content
       bulwark-service resume --config FILE        take new content again
       bulwark-service revert --config FILE        back to last-known-good now
       bulwark-service install --config FILE       (Windows) register the service, LocalSystem, automatic start
       bulwark-service uninstall | start | stop --config FILE   (Windows) the registered service";

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
        ("install" | "uninstall" | "start" | "stop" | "service", None) => scm(cmd, &config),
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
    let mut stderr = |line: &str| eprintln!("bulwark-service: {line}");
    let mut logger = Logger::open(&config, &mut stderr)?;
    // Runs until the process is killed (a stop from the service control manager is `service`'s).
    let stop = Stop::new();
    #[cfg(windows)]
    let link = bulwark_service::windows::DeviceLink::open().map_err(|e| e.to_string())?;
    #[cfg(not(windows))]
    let link = {
        // Off Windows the driver core runs in this process, its guard's records in guard_dir.
        let guard_dir = config
            .guard_dir
            .clone()
            .unwrap_or_else(|| config.state_dir.join("guard"));
        let keys = config.agent(path).map_err(|e| e.to_string())?.release_keys;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        bulwark_service::link::InProcess::boot(
            &guard_dir,
            bulwark_loader_boot_guard::Config {
                channel: config.channel_number,
                threshold: 3,
                stable_secs: 600,
            },
            &keys,
            now,
        )
        .map_err(|e| e.to_string())?
    };
    runner::run(path, &config, link, &stop, &mut logger)
}

/// The service control manager's commands.
#[cfg(windows)]
fn scm(cmd: &str, config: &Path) -> Result<(), String> {
    use bulwark_service::windows;
    match cmd {
        "install" => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            windows::install(&exe, config)?;
            println!("installed {} ({})", windows::SERVICE_NAME, exe.display());
        }
        "uninstall" => {
            windows::uninstall()?;
            println!("uninstalled {}", windows::SERVICE_NAME);
        }
        "start" => {
            windows::start()?;
            println!("started {}", windows::SERVICE_NAME);
        }
        "stop" => {
            windows::stop()?;
            println!("stopping {}", windows::SERVICE_NAME);
        }
        _ => windows::dispatch(config)?,
    }
    Ok(())
}

#[cfg(not(windows))]
fn scm(cmd: &str, _config: &Path) -> Result<(), String> {
    Err(format!(
        "{cmd}: the service control manager is Windows'; here, run the service in the \
         foreground with `bulwark-service run --config FILE` (under systemd or the like)"
    ))
}
