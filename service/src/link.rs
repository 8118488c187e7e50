//! The driver link: what the agent asks of the driver. [`InProcess`] runs the driver core's own
//! sensor and control plane (the boot-count guard on a directory store) in this process, reached
//! through the real control protocol ([`bulwark_client::Client`] over the core's IOCTL handler),
//! so the agent speaks exactly the bytes it would send to `\\.\Bulwark` on Windows.

use std::path::{Path, PathBuf};

use bulwark_client::{Client, ClientError, Transport};
use bulwark_driver_core::control::Control;
use bulwark_driver_core::sensor::{Capacities, Sensor};
use bulwark_loader_boot_guard::host::DirStore;
use bulwark_loader_boot_guard::{Config, TrustedKeys};
use bulwark_protocol::{ContentSource, GuardEventRecord};

/// What the driver says about itself, as far as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverStatus {
    /// The hash of the event schema compiled into the driver.
    pub schema_hash: [u8; 32],
    /// Per event type, the number of fields the driver's schema has (the interpreter's schema
    /// is the one compiled into both; the status reply carries only the hash today).
    pub field_counts: &'static [(&'static str, usize)],
    /// The running content's version (0: none).
    pub content_version: u64,
    /// Where it came from.
    pub source: ContentSource,
    /// The guard's last-known-good version, if any.
    pub last_known_good: Option<u64>,
    /// The guard's candidate (staged, running or waiting for the next boot), if any.
    pub candidate: Option<u64>,
    /// Events the sensor has evaluated since it started (all types): the health window checks
    /// that they flow while a new release runs.
    pub events_evaluated: u64,
}

/// One detection as the driver reported it, with the event's context.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Detection {
    /// The driver's sequence number (gaps mean drops).
    pub seq: u64,
    /// When, in 100 ns units since 1601-01-01 UTC.
    pub time: u64,
    /// The content version whose rule fired.
    pub content_version: u64,
    /// The rule's index in that pack.
    pub rule_index: u32,
    /// The event type's schema name.
    pub event_type: String,
    /// `alert` or `block`.
    pub action: String,
    /// Whether the process creation was denied.
    pub blocked: bool,
    /// The process.
    pub process_id: u32,
    /// Its parent.
    pub parent_process_id: u32,
    /// The image path.
    pub image: String,
    /// The command line.
    pub command_line: String,
    /// The user.
    pub user: String,
    /// The parent's image path.
    pub parent_image: String,
    /// The image's hashes.
    pub hashes: String,
    /// The context fields the driver truncated.
    pub truncated: Vec<String>,
}

impl Detection {
    /// Milliseconds since the Unix epoch (0 for a time before it).
    pub fn unix_ms(&self) -> u64 {
        /// 100 ns units from 1601-01-01 to 1970-01-01.
        const EPOCH_DIFF: u64 = 116_444_736_000_000_000;
        self.time.saturating_sub(EPOCH_DIFF) / 10_000
    }
}

/// How a pack is staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageMode {
    /// Activated at once (the driver's stage request).
    Hot,
    /// Activated at the next boot.
    NextBoot,
}

/// The driver's answer to a stage, confirm or revert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Accepted or refused.
    pub accepted: bool,
    /// The driver's reason code.
    pub code: u16,
    /// The driver's message.
    pub message: String,
}

/// A driver link failure (not a refusal: the driver could not be asked).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The control device failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The link cannot do this.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The guard's store failed.
    #[error("guard store: {0}")]
    Store(String),
}

/// What the agent asks of the driver.
pub trait DriverLink {
    /// Schema, running content and guard.
    fn status(&mut self) -> Result<DriverStatus, LinkError>;
    /// Stages a signed envelope.
    fn stage(&mut self, envelope: &[u8], mode: StageMode) -> Result<Answer, LinkError>;
    /// Confirms a healthy boot: the candidate becomes last-known-good.
    fn confirm_healthy(&mut self) -> Result<Answer, LinkError>;
    /// Goes back to the guard's last-known-good.
    fn revert(&mut self) -> Result<Answer, LinkError>;
    /// Guard events not read yet, oldest first.
    fn guard_events(&mut self) -> Result<Vec<GuardEventRecord>, LinkError>;
    /// Detections not read yet, oldest first.
    fn detections(&mut self) -> Result<Vec<Detection>, LinkError>;
}

/// The per-type field counts of the interpreter's schema (the schema the driver was built with),
/// listed once per process: a status carries them at every step of the agent.
pub fn schema_field_counts() -> &'static [(&'static str, usize)] {
    static COUNTS: std::sync::OnceLock<Vec<(&'static str, usize)>> = std::sync::OnceLock::new();
    COUNTS.get_or_init(|| {
        bulwark_interpreter::EventType::ALL
            .iter()
            .map(|t| (t.name(), t.fields().len()))
            .collect()
    })
}

struct Device {
    sensor: Sensor,
    control: Control<DirStore>,
    now: u64,
}

impl Transport for &mut Device {
    fn ioctl(&mut self, ioctl: u32, input: &[u8], output: &mut [u8]) -> Result<usize, ClientError> {
        self.sensor
            .handle_ioctl(
                ioctl,
                input,
                output,
                &mut self.control,
                self.now,
                &mut || {},
            )
            .map_err(|e| ClientError::Driver(e.to_string()))
    }
}

/// The driver core and its guard in this process (Linux, tests, the fleet simulator).
pub struct InProcess {
    dir: PathBuf,
    config: Config,
    keys: Vec<[u8; 32]>,
    device: Device,
}

impl InProcess {
    /// Boots the simulated machine: the guard's records in `dir`, content signed by `keys`.
    pub fn boot(
        dir: &Path,
        config: Config,
        keys: &[[u8; 32]],
        now: u64,
    ) -> Result<Self, LinkError> {
        let device = Self::start(dir, config, keys, now)?;
        Ok(InProcess {
            dir: dir.to_owned(),
            config,
            keys: keys.to_vec(),
            device,
        })
    }

    fn start(dir: &Path, config: Config, keys: &[[u8; 32]], now: u64) -> Result<Device, LinkError> {
        std::fs::create_dir_all(dir).map_err(|e| LinkError::Store(e.to_string()))?;
        let store = DirStore::new(dir).map_err(|e| LinkError::Store(e.to_string()))?;
        let trusted = TrustedKeys::new(keys).map_err(|e| LinkError::Store(e.to_string()))?;
        let sensor = Sensor::new(Capacities::default(), now, 0x0001_0000)
            .map_err(|_| LinkError::Store("no memory for the sensor".into()))?;
        let (mut control, start) = Control::start(store, config, trusted, now);
        if let Some(c) = start.content {
            sensor.install(c, &mut || {});
        }
        sensor.forward_guard_events(&mut control);
        Ok(Device {
            sensor,
            control,
            now,
        })
    }

    /// Sets the driver's clock.
    pub fn set_now(&mut self, now: u64) {
        self.device.now = now;
    }

    /// The machine crashes (no clean shutdown) and boots again.
    pub fn crash_and_reboot(&mut self, now: u64) -> Result<(), LinkError> {
        self.device = Self::start(&self.dir, self.config, &self.keys, now)?;
        Ok(())
    }

    /// A clean shutdown and a boot.
    pub fn reboot(&mut self, now: u64) -> Result<(), LinkError> {
        self.device.control.clean_shutdown(now);
        self.crash_and_reboot(now)
    }

    /// The sensor, to feed it events in tests.
    pub fn sensor(&self) -> &Sensor {
        &self.device.sensor
    }

    fn client(&mut self) -> Client<&mut Device> {
        Client::new(&mut self.device)
    }
}

/// A driver's detection record as the agent keeps it.
pub fn detection(d: &bulwark_client::Detection) -> Detection {
    Detection {
        seq: d.seq,
        time: d.time,
        content_version: d.content_version,
        rule_index: d.rule_index,
        event_type: bulwark_interpreter::EventType::from_id(d.event_type)
            .map_or_else(|| format!("#{}", d.event_type), |t| t.name().to_owned()),
        action: if d.action == 1 { "block" } else { "alert" }.to_owned(),
        blocked: d.blocked,
        process_id: d.process_id,
        parent_process_id: d.parent_process_id,
        image: d.image.clone(),
        command_line: d.command_line.clone(),
        user: d.user.clone(),
        parent_image: d.parent_image.clone(),
        hashes: d.hashes.clone(),
        truncated: d.truncated.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn answer(a: bulwark_client::Answer) -> Answer {
    Answer {
        accepted: a.accepted,
        code: a.code,
        message: a.message,
    }
}

impl DriverLink for InProcess {
    fn status(&mut self) -> Result<DriverStatus, LinkError> {
        let s = self.client().status()?;
        let last_known_good = (s.guard.lkg_version != 0).then_some(s.guard.lkg_version);
        Ok(DriverStatus {
            schema_hash: s.schema_hash,
            field_counts: schema_field_counts(),
            content_version: s.content.version,
            source: s.content.source,
            last_known_good,
            candidate: s
                .guard
                .candidate_staged
                .then_some(s.guard.candidate_version),
            events_evaluated: s
                .counters
                .events
                .iter()
                .fold(0u64, |a, b| a.saturating_add(*b)),
        })
    }

    fn stage(&mut self, envelope: &[u8], mode: StageMode) -> Result<Answer, LinkError> {
        let mut client = self.client();
        Ok(answer(match mode {
            StageMode::Hot => client.stage(envelope)?,
            StageMode::NextBoot => client.stage_next_boot(envelope)?,
        }))
    }

    fn confirm_healthy(&mut self) -> Result<Answer, LinkError> {
        Ok(answer(self.client().confirm_healthy()?))
    }

    fn revert(&mut self) -> Result<Answer, LinkError> {
        Ok(answer(self.client().revert()?))
    }

    fn guard_events(&mut self) -> Result<Vec<GuardEventRecord>, LinkError> {
        Ok(self.client().read_guard_events(u32::MAX)?.records)
    }

    fn detections(&mut self) -> Result<Vec<Detection>, LinkError> {
        Ok(self
            .client()
            .read_detections(u32::MAX)?
            .records
            .into_iter()
            .map(|d| detection(&d))
            .collect())
    }
}
