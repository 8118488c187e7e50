//! The service's loop, the same in the foreground (`bulwark-service run`) and under the Windows
//! service control manager: open the agent from the configuration, step it, hand its log lines
//! to the logger, and sleep until the next step is due, an administrator's command arrives, or
//! a stop is asked for (which ends the loop within a second, not after the interval).

use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::agent::{Agent, OsRandom, SystemClock};
use crate::config::ServiceConfig;
use crate::link::DriverLink;
use crate::logfile::LogFile;
use crate::net::{ContentSource, Http, LocalDir, Metadata, NetError};

/// A stop request, from the service control manager or a test.
#[derive(Debug, Default)]
pub struct Stop {
    requested: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// No stop requested yet.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Asks the loop to end.
    pub fn request(&self) {
        if let Ok(mut r) = self.requested.lock() {
            *r = true;
        }
        self.wake.notify_all();
    }

    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.requested.lock().map_or(true, |r| *r)
    }

    /// Waits up to `d`; whether a stop was asked for.
    pub fn wait(&self, d: Duration) -> bool {
        let Ok(r) = self.requested.lock() else {
            return true;
        };
        match self.wake.wait_timeout_while(r, d, |r| !*r) {
            Ok((r, _)) => *r,
            Err(_) => true,
        }
    }
}

/// The configured content source.
pub enum Source {
    /// bulwark-server over HTTPS.
    Http(Http),
    /// A directory as `bulwark-server export` writes it.
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

/// Where the service's lines go: standard error (or the event log) through `also`, and the
/// configured log file.
pub struct Logger<'a> {
    file: Option<LogFile>,
    also: &'a mut dyn FnMut(&str),
}

impl<'a> Logger<'a> {
    /// The configured log file (if any), and `also`.
    pub fn open(config: &ServiceConfig, also: &'a mut dyn FnMut(&str)) -> Result<Self, String> {
        let file = match &config.log_file {
            Some(p) => Some(
                LogFile::open(p, config.log_max_bytes, config.log_keep)
                    .map_err(|e| format!("log file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        Ok(Logger { file, also })
    }

    /// Logs a line.
    pub fn line(&mut self, line: &str) {
        (self.also)(line);
        if let Some(f) = &mut self.file {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Err(e) = f.write_line(now, line) {
                (self.also)(&format!("the log file cannot be written: {e}"));
            }
        }
    }
}

/// Runs the agent over `link` until `stop` is requested.
pub fn run<L: DriverLink>(
    config_path: &Path,
    config: &ServiceConfig,
    link: L,
    stop: &Stop,
    log: &mut Logger<'_>,
) -> Result<(), String> {
    let agent_config = config.agent(config_path).map_err(|e| e.to_string())?;
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
    log.line("started");
    let mut admin_file = crate::admin::Watcher::default();
    admin_file.changed(&config.state_dir);
    while !stop.is_requested() {
        let wait = agent.step();
        for line in agent.log.drain(..) {
            log.line(&line);
        }
        // Until the next step is due, an administrator's command arrives, or a stop.
        for _ in 0..wait {
            if stop.wait(Duration::from_secs(1)) || admin_file.changed(&config.state_dir) {
                break;
            }
        }
    }
    log.line("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_stop_wakes_a_waiting_loop_at_once() {
        let stop = std::sync::Arc::new(Stop::new());
        assert!(!stop.wait(Duration::from_millis(10)));
        let s = stop.clone();
        let t = std::time::Instant::now();
        let waiter = std::thread::spawn(move || s.wait(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        stop.request();
        assert!(waiter.join().unwrap());
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(stop.is_requested());
    }
}
