//! The agent core: one [`Agent::step`] at a time, driven by an injected clock and randomness, so
//! the same code runs in the service, in tests and in a fleet simulator.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bulwark_distribution::{MetadataMemo, PersistedTrust, TrustState, Update, WeakMetadataMemo};
use bulwark_interpreter::{VerifiedPack, VerifyError};
use bulwark_loader_boot_guard::envelope::{SignatureMemo, VerifyMemo};
use bulwark_loader_boot_guard::state::EventKind;
use bulwark_loader_boot_guard::{Admission, TrustedKeys};
use bulwark_rollout::{decide_placed, Decision, EndpointFacts, EndpointId, Placement, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::admin::{self, AdminControls};
use crate::link::{schema_field_counts, DriverLink, DriverStatus, StageMode};
use crate::net::{ContentSource, Delivered, Enrolled, Enrollment, Metadata, TelemetrySink};
use crate::spool::{Kind, SpoolStore};
use crate::storage::{DirStorage, Storage};

/// Seconds since the Unix epoch.
pub trait Clock {
    /// Now.
    fn now(&self) -> u64;
}

/// Randomness for jitter.
pub trait Random {
    /// A uniformly random number in `0..=max`.
    fn below_or_eq(&mut self, max: u64) -> u64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// The operating system's randomness.
pub struct OsRandom;

impl Random for OsRandom {
    fn below_or_eq(&mut self, max: u64) -> u64 {
        let mut b = [0u8; 8];
        if getrandom::fill(&mut b).is_err() {
            return max;
        }
        let v = u64::from_le_bytes(b);
        if max == u64::MAX {
            v
        } else {
            v % (max.saturating_add(1))
        }
    }
}

/// What the agent is configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The rollout channel's name.
    pub channel: String,
    /// The channel's number in envelopes.
    pub channel_number: u32,
    /// Enrollment facts and secret.
    pub enrollment_secret: String,
    /// Windows build.
    pub os_build: String,
    /// Hardware class.
    pub hw_class: String,
    /// Host group.
    pub host_group: String,
    /// The release keys envelopes must be signed by (ed25519 public keys).
    pub release_keys: Vec<[u8; 32]>,
    /// The trusted root metadata (ships with the endpoint).
    pub root: String,
    /// Mean seconds between heartbeats.
    pub heartbeat_secs: u64,
    /// Seconds a staged pack must run before it is confirmed healthy.
    pub health_window_secs: u64,
    /// First retry delay after a failure.
    pub backoff_base_secs: u64,
    /// The longest retry delay.
    pub backoff_max_secs: u64,
    /// The spool's bound in bytes.
    pub spool_max_bytes: u64,
    /// Stage hot (`true`) or for the next boot.
    pub hot: bool,
    /// Whether a release is confirmed only once events have gone through it (`true`, the
    /// default); `false` for a machine whose sensor sees no events, such as the Wine smoke test,
    /// where the kernel's callbacks never fire.
    #[serde(default = "yes")]
    pub health_requires_events: bool,
    /// Where the metadata's signature checks and parses go, and the signature checks of the
    /// envelopes the agent opens before staging them: off (the default, and never read from a
    /// file): each is done. The fleet simulator shares one memo among its agents, so that a file
    /// checked and parsed by one is not checked again, nor held again, by the next 100,000 (see
    /// [`bulwark_distribution::memo`]).
    #[serde(skip)]
    pub metadata_memo: MetadataMemo,
}

fn yes() -> bool {
    true
}

/// A [`MetadataMemo`] as the loader's [`SignatureMemo`] and [`VerifyMemo`]: envelopes' signature
/// checks, and the verifier's runs on their packs, shared the same way (the agent's, and the
/// fleet simulator's guards', which open the same few envelopes at every boot). A pack is looked
/// up by its very bytes, as signatures are by their very message. It keeps at most
/// [`MEMO_PARSED_KEPT`](bulwark_distribution::memo::MEMO_PARSED_KEPT) values in all (the newest),
/// each pack's bytes and its verified form among them.
#[derive(Debug)]
pub struct EnvelopeMemo(MemoHandle);

/// How an [`EnvelopeMemo`] holds its memo.
#[derive(Debug)]
enum MemoHandle {
    Strong(MetadataMemo),
    Weak(WeakMetadataMemo),
}

impl EnvelopeMemo {
    /// Checks through `memo`, keeping it alive.
    #[must_use]
    pub fn new(memo: MetadataMemo) -> EnvelopeMemo {
        EnvelopeMemo(MemoHandle::Strong(memo))
    }

    /// Checks through `memo` while anything else keeps it, without keeping it: for the release
    /// keys kept in the memo itself ([`shared_release_keys`]), which would otherwise keep the
    /// memo, and every check it holds, alive after the last agent sharing it is gone (the memo
    /// holds the keys, which hold the memo). After, every check is done.
    fn weak(memo: &MetadataMemo) -> EnvelopeMemo {
        EnvelopeMemo(MemoHandle::Weak(memo.downgrade()))
    }

    /// `keys`, their envelopes' signatures checked and packs verified through this memo.
    #[must_use]
    pub fn attach(self, keys: TrustedKeys) -> TrustedKeys {
        let memo = Arc::new(self);
        keys.with_memo(memo.clone()).with_verify_memo(memo)
    }

    /// `f` of the memo (off if a weak handle's memo is gone).
    fn with<R>(&self, f: impl FnOnce(&MetadataMemo) -> R) -> R {
        match &self.0 {
            MemoHandle::Strong(memo) => f(memo),
            MemoHandle::Weak(weak) => f(&weak.upgrade()),
        }
    }
}

impl SignatureMemo for EnvelopeMemo {
    fn check(
        &self,
        public: &[u8; 32],
        signature: &[u8; 64],
        message: &[u8],
        check: &mut dyn FnMut() -> bool,
    ) -> bool {
        use bulwark_distribution::memo::Check;
        let found = self.with(|memo| {
            memo.check(public, signature, message, || {
                if check() {
                    Check::Valid
                } else {
                    Check::Invalid
                }
            })
        });
        found == Check::Valid
    }
}

impl VerifyMemo for EnvelopeMemo {
    fn verify(
        &self,
        pack: &[u8],
        verify: &mut dyn FnMut() -> Result<VerifiedPack, VerifyError>,
    ) -> Result<VerifiedPack, VerifyError> {
        let kept = self.with(|memo| memo.share("verified pack", pack, verify));
        Result::clone(&kept)
    }
}

/// The release engineers' `keys` parsed (a point decompression each), checking signatures
/// through `memo`, or why they cannot be: shared with every agent of the process that asks for
/// the same keys through the same memo (the fleet simulator's 100,000), made afresh without one.
fn shared_release_keys(keys: &[[u8; 32]], memo: &MetadataMemo) -> Arc<Result<TrustedKeys, String>> {
    let parse = || {
        let parsed = TrustedKeys::new(keys).map_err(|e| e.to_string())?;
        Ok(if memo.is_off() {
            parsed
        } else {
            EnvelopeMemo::weak(memo).attach(parsed)
        })
    };
    memo.share("release keys", &keys.concat(), parse)
}

/// A pack the agent refused before it reached the driver (or the driver refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Content version.
    pub version: u64,
    /// Why, with the loader's or the verifier's message.
    pub reason: String,
    /// When.
    pub at: u64,
}

/// A pack staged and not confirmed yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// Content version.
    pub version: u64,
    /// When it was staged.
    pub at: u64,
    /// The sensor's evaluated-events counter when it started running: the health window waits
    /// until events have flowed through the new content.
    #[serde(default)]
    pub events_at_stage: u64,
    /// When it started running (at once when staged hot; after the reboot when staged for the
    /// next boot): the health window counts from here.
    #[serde(default)]
    pub running_since: Option<u64>,
    /// Its rules' detections while on trial, by rule index: a rule that fires on most events is
    /// a storm, and the content is not confirmed healthy.
    #[serde(default)]
    pub rule_detections: BTreeMap<u32, u64>,
}

/// A rule of content on trial that fires on more than this share of the events the sensor
/// evaluated (and at least [`STORM_MIN_DETECTIONS`] times), or [`STORM_DETECTIONS`] times in
/// all, keeps the content from being confirmed healthy: a bad rule is not blessed, so its
/// `block` actions stay alerts (the driver blocks only for blessed content) and the rollout's
/// revert can still take it back (the guard reverts only a candidate). The guard blesses it after
/// its stable period anyway if nothing reverts it first.
pub const STORM_SHARE: f64 = 0.5;
/// See [`STORM_SHARE`].
pub const STORM_MIN_DETECTIONS: u64 = 20;
/// See [`STORM_SHARE`]: a rule that fires this often during the health window is a storm
/// whatever else the sensor sees (events of every type count in the share).
pub const STORM_DETECTIONS: u64 = 200;

/// A rule of a staged pack, as alerts name it (the Detection Rule License requires the author,
/// title and id in alerts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMeta {
    /// The rule's id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its author.
    pub author: String,
    /// Its level.
    pub level: String,
}

/// Most alerts (detections with context) forwarded per step; beyond it, detections are still
/// counted, and the alerts left out are logged with their number.
pub const MAX_ALERTS_PER_STEP: usize = 1000;

/// Longest rejection reason sent to the server (the server's bound).
pub const MAX_REASON_BYTES: usize = 2048;

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What the agent keeps in its state directory (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// The enrollment, once done.
    pub enrolled: Option<Enrolled>,
    /// Staged, awaiting the health window.
    pub staged: Option<Staged>,
    /// Versions confirmed healthy.
    pub confirmed: Option<u64>,
    /// Packs refused, newest last (at most 32).
    pub rejections: Vec<Rejection>,
    /// The versions reverted on the controller's instruction.
    pub reverted: Vec<u64>,
    /// The rules of the packs this agent staged (newest 8), by content version: a detection
    /// names its rule by index, telemetry by id, title, author and level.
    #[serde(default)]
    pub rule_meta: std::collections::BTreeMap<u64, Vec<RuleMeta>>,
    /// The administrator's revert requests carried out (see [`crate::admin`]).
    #[serde(default)]
    pub admin_reverts_done: u64,
}

/// What `bulwark-service status` prints.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Persisted state.
    pub state: PersistedState,
    /// The running content version.
    pub content_version: Option<u64>,
    /// The newest metadata versions trusted (root, releases, rollout).
    pub trusted: (u64, Option<u64>, Option<u64>),
    /// Messages waiting in the spool.
    pub spooled: u64,
    /// Messages the spool dropped.
    pub spool_dropped: u64,
    /// The last error.
    pub last_error: Option<String>,
    /// Consecutive failures.
    pub failures: u32,
}

/// An agent error: logged, then retried after backoff.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A network failure.
    #[error("network: {0}")]
    Net(#[from] crate::net::NetError),
    /// The driver link failed.
    #[error("driver: {0}")]
    Link(#[from] crate::link::LinkError),
    /// The spool failed.
    #[error("spool: {0}")]
    Spool(#[from] crate::spool::SpoolError),
    /// Metadata verification failed.
    #[error("metadata: {0}")]
    Trust(#[from] bulwark_distribution::Error),
    /// A state file failed.
    #[error("state: {0}")]
    Io(#[from] std::io::Error),
    /// Something else.
    #[error("{0}")]
    Other(String),
}

/// The agent. `D` is where it keeps what survives a restart: the state directory, or memory in
/// the fleet simulator.
pub struct Agent<L, S, T, C, R, D: Storage = DirStorage> {
    config: AgentConfig,
    storage: D,
    /// The driver.
    pub link: L,
    /// Where content comes from.
    pub source: S,
    /// Where telemetry goes.
    pub sink: T,
    clock: C,
    random: R,
    trust: TrustState,
    state: PersistedState,
    spool: D::Spool,
    failures: u32,
    next_heartbeat: u64,
    last_error: Option<String>,
    /// Whether the health window is over and the agent waits for events to flow (logged once).
    waiting_for_events: bool,
    /// The storm that keeps the content on trial from being confirmed was logged.
    storm_noted: bool,
    /// Content versions whose rule names were looked up (once per run).
    meta_tried: std::collections::BTreeSet<u64>,
    /// The administrator's controls as last read (kept when the file is damaged).
    admin: AdminControls,
    /// The last admin-file error logged (logged once).
    admin_error: Option<String>,
    /// This endpoint's placement in its channel (stratum and position), kept from its facts once
    /// it is enrolled: the decision at every step needs it, and the position costs a SHA-256.
    placement: Option<Placement>,
    /// The release engineers' keys envelopes are opened with, parsed once (a key's parse is a
    /// point decompression), or why they cannot be; shared through the metadata memo.
    release_keys: Option<Arc<Result<TrustedKeys, String>>>,
    /// The start of every heartbeat's JSON, written once ([`heartbeat_head`]).
    heartbeat_head: Box<[u8]>,
    /// Log lines (the service writes them to its log).
    pub log: Vec<String>,
}

/// A heartbeat's JSON up to its content version's digits: `{"channel":CHANNEL,"content_version":`
/// (the channel's name as serde_json writes a string). The rest of the heartbeat follows in
/// `Agent::heartbeat`; together they are exactly what serde_json writes for the heartbeat's
/// struct (tested).
fn heartbeat_head(channel: &str) -> Box<[u8]> {
    let mut head = b"{\"channel\":".to_vec();
    // A string serializes to a Vec without failing.
    let _ = serde_json::to_writer(&mut head, channel);
    head.extend_from_slice(b",\"content_version\":");
    head.into_boxed_slice()
}

/// A heartbeat's JSON, in pieces: `head` ([`heartbeat_head`]), the content version's digits
/// (written into `digits`), whether it is confirmed healthy.
fn heartbeat_json<'a>(
    head: &'a [u8],
    digits: &'a mut itoa::Buffer,
    content_version: u64,
    confirmed: bool,
) -> [&'a [u8]; 3] {
    let healthy: &[u8] = if confirmed {
        b",\"confirmed_healthy\":true}"
    } else {
        b",\"confirmed_healthy\":false}"
    };
    [head, digits.format(content_version).as_bytes(), healthy]
}

/// Told where an agent's fields are ([`Agent::show_fields`]).
pub trait FieldVisitor {
    /// `field` is one of the agent's.
    fn field<F>(&mut self, field: &F);
}

/// Seconds between checks once a health window is over and events have not flowed yet.
pub const EVENTS_POLL_SECS: u64 = 15;

/// Writes `bytes` to `path` through a temporary file next to it, fsynced and renamed, and fsyncs
/// the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Lower-case hex (the envelope an agent fetches is named by it, at every stage).
fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len().saturating_mul(2));
    for &x in b {
        s.extend(char::from_digit(u32::from(x >> 4), 16));
        s.extend(char::from_digit(u32::from(x & 15), 16));
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl<L: DriverLink, S: ContentSource, T: TelemetrySink, C: Clock, R: Random>
    Agent<L, S, T, C, R, DirStorage>
{
    /// Opens the agent's state in `dir` (created if needed): the enrollment, the newest trusted
    /// metadata (never older than what it saw before a restart) and the spool.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        config: AgentConfig,
        dir: &Path,
        link: L,
        source: S,
        sink: T,
        clock: C,
        random: R,
    ) -> Result<Self, AgentError> {
        let storage = DirStorage::open(dir)?;
        Self::with_storage(config, storage, link, source, sink, clock, random)
    }
}

impl<L: DriverLink, S: ContentSource, T: TelemetrySink, C: Clock, R: Random, D: Storage>
    Agent<L, S, T, C, R, D>
{
    /// Opens the agent over `storage`: as [`Agent::open`], wherever the state is kept.
    #[allow(clippy::too_many_arguments)]
    pub fn with_storage(
        config: AgentConfig,
        mut storage: D,
        link: L,
        source: S,
        sink: T,
        clock: C,
        random: R,
    ) -> Result<Self, AgentError> {
        let (state, trust, spool) = Self::load(&config, &mut storage)?;
        Ok(Agent {
            heartbeat_head: heartbeat_head(&config.channel),
            config,
            storage,
            link,
            source,
            sink,
            clock,
            random,
            trust,
            state,
            spool,
            failures: 0,
            next_heartbeat: 0,
            last_error: None,
            waiting_for_events: false,
            storm_noted: false,
            meta_tried: std::collections::BTreeSet::new(),
            admin: AdminControls::default(),
            admin_error: None,
            placement: None,
            release_keys: None,
            log: Vec::new(),
        })
    }

    /// A restart of the service: everything in memory is dropped and read again from storage
    /// (enrollment, trusted metadata, spool), as a new process would.
    pub fn restart(&mut self) -> Result<(), AgentError> {
        let (state, trust, spool) = Self::load(&self.config, &mut self.storage)?;
        self.state = state;
        self.trust = trust;
        self.spool = spool;
        self.failures = 0;
        self.next_heartbeat = 0;
        self.last_error = None;
        self.waiting_for_events = false;
        Ok(())
    }

    fn load(
        config: &AgentConfig,
        storage: &mut D,
    ) -> Result<(PersistedState, TrustState, D::Spool), AgentError> {
        let state = match storage.read("state.json")? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| {
                AgentError::Other(format!("{}: {e}", storage.describe("state.json")))
            })?,
            None => PersistedState::default(),
        };
        let trust = match storage.read("trust.json")? {
            Some(b) => {
                let p: PersistedTrust = serde_json::from_slice(&b).map_err(|e| {
                    AgentError::Other(format!("{}: {e}", storage.describe("trust.json")))
                })?;
                TrustState::restore_with(&p, config.metadata_memo.clone())?
            }
            None => TrustState::bootstrap_with(&config.root, config.metadata_memo.clone())?,
        };
        let spool = storage.open_spool(config.spool_max_bytes)?;
        Ok((state, trust, spool))
    }

    /// The persisted state.
    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    /// The spool.
    pub fn spool(&self) -> &D::Spool {
        &self.spool
    }

    /// The trusted metadata.
    pub fn trust(&self) -> &TrustState {
        &self.trust
    }

    /// The status report.
    pub fn status(&mut self) -> StatusReport {
        let v = self.trust.versions();
        StatusReport {
            state: self.state.clone(),
            content_version: self.link.status().ok().map(|s| s.content_version),
            trusted: (v.root, v.releases, v.rollout),
            spooled: self.spool.len().unwrap_or(0),
            spool_dropped: self.spool.dropped().unwrap_or(0),
            last_error: self.last_error.clone(),
            failures: self.failures,
        }
    }

    /// Shows `visitor` where the fields a step reads are (of the configuration and the persisted
    /// state, the parts it reads): the fleet simulator asks the processor for them a few events
    /// ahead, as it steps 100,000 agents in turn, each one's fields cold. Nothing is read.
    pub fn show_fields(&self, visitor: &mut impl FieldVisitor) {
        let c = &self.config;
        visitor.field(&c.channel);
        visitor.field(&c.host_group);
        visitor.field(&c.heartbeat_secs);
        visitor.field(&c.metadata_memo);
        visitor.field(&self.storage);
        visitor.field(&self.link);
        visitor.field(&self.source);
        visitor.field(&self.sink);
        visitor.field(&self.clock);
        visitor.field(&self.random);
        visitor.field(&self.trust);
        let s = &self.state;
        visitor.field(&s.enrolled);
        visitor.field(&s.staged);
        visitor.field(&s.rejections);
        visitor.field(&s.reverted);
        visitor.field(&s.admin_reverts_done);
        visitor.field(&self.spool);
        visitor.field(&self.failures);
        visitor.field(&self.next_heartbeat);
        visitor.field(&self.last_error);
        visitor.field(&self.admin);
        visitor.field(&self.admin_error);
        visitor.field(&self.placement);
        visitor.field(&self.heartbeat_head);
        visitor.field(&self.log);
    }

    /// Shows `visitor` the text of the names a decision compares (the channel's rollout and the
    /// host group's policy are found by name) and the start of a heartbeat, on the heap apart
    /// from the agent. Reads the names' headers: for after [`Agent::show_fields`]' fields have
    /// come in.
    pub fn show_names(&self, visitor: &mut impl FieldVisitor) {
        for name in [
            self.config.channel.as_bytes(),
            self.config.host_group.as_bytes(),
            &self.heartbeat_head,
        ] {
            if let Some(text) = name.first() {
                visitor.field(text);
            }
        }
    }

    /// The release engineers' keys, parsed at the first use (with the memo, if there is one).
    fn release_keys(&mut self) -> Result<&TrustedKeys, AgentError> {
        if self.release_keys.is_none() {
            self.release_keys = Some(shared_release_keys(
                &self.config.release_keys,
                &self.config.metadata_memo,
            ));
        }
        match self.release_keys.as_deref() {
            Some(Ok(keys)) => Ok(keys),
            Some(Err(e)) => Err(AgentError::Other(e.clone())),
            None => Err(AgentError::Other("no release keys".into())),
        }
    }

    fn save(&mut self) -> Result<(), AgentError> {
        let bytes =
            serde_json::to_vec_pretty(&self.state).map_err(|e| AgentError::Other(e.to_string()))?;
        self.storage.write("state.json", &bytes)?;
        Ok(())
    }

    fn save_trust(&mut self) -> Result<(), AgentError> {
        let bytes = self.trust.persisted_json();
        self.storage.write("trust.json", &bytes)?;
        Ok(())
    }

    fn note(&mut self, line: String) {
        self.log.push(line);
        if self.log.len() > 1000 {
            self.log.drain(..500);
        }
    }

    /// One step: do what is due and return the seconds until the next step. Never panics on
    /// anything the server, the network or the driver does; a failure is logged and the next
    /// step comes after an exponential backoff with full jitter.
    pub fn step(&mut self) -> u64 {
        match self.try_step() {
            Ok(()) => {
                self.failures = 0;
                self.last_error = None;
                let until_heartbeat = self.next_heartbeat.saturating_sub(self.clock.now());
                let mut wait = until_heartbeat.max(1);
                if let Some(s) = &self.state.staged {
                    // Not running yet (staged for the next boot): look again at the next poll.
                    let since = s.running_since.unwrap_or_else(|| self.clock.now());
                    let due = since.saturating_add(self.config.health_window_secs);
                    let until = due.saturating_sub(self.clock.now());
                    // Past the window (waiting for events to flow): poll, not spin.
                    wait = wait.min(if until == 0 { EVENTS_POLL_SECS } else { until });
                }
                wait
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let line = format!("step failed (attempt {}): {e}", self.failures);
                self.last_error = Some(e.to_string());
                self.note(line);
                self.backoff()
            }
        }
    }

    /// Full jitter: uniform in 0..=min(max, base * 2^(failures - 1)), at least one second.
    fn backoff(&mut self) -> u64 {
        let exp = self.failures.saturating_sub(1).min(32);
        let cap = self
            .config
            .backoff_base_secs
            .saturating_mul(1u64 << exp)
            .min(self.config.backoff_max_secs);
        self.random.below_or_eq(cap).max(1)
    }

    fn try_step(&mut self) -> Result<(), AgentError> {
        let now = self.clock.now();
        if self.state.enrolled.is_none() {
            let enrolled = self.sink.enroll(&Enrollment {
                secret: self.config.enrollment_secret.clone(),
                os_build: self.config.os_build.clone(),
                hw_class: self.config.hw_class.clone(),
                host_group: self.config.host_group.clone(),
            })?;
            self.note(format!("enrolled as {}", enrolled.endpoint_id));
            self.state.enrolled = Some(enrolled);
            self.placement = None;
            self.save()?;
        }
        // Local work never waits for the network: guard events, the health window and the
        // heartbeat are spooled even while the server is unreachable; the first failure is
        // returned after everything else was done.
        let mut first: Option<AgentError> = None;
        let mut keep = |r: Result<(), AgentError>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        // The guard's events first: they are what the controller halts on.
        keep(self.forward_guard_events());
        keep(self.update_metadata(now));
        keep(self.act(now));
        keep(self.health_window(now));
        keep(self.forward_guard_events());
        keep(self.forward_detections());
        if now >= self.next_heartbeat {
            keep(self.heartbeat(false));
            let jitter = self.random.below_or_eq(self.config.heartbeat_secs);
            self.next_heartbeat = now.saturating_add(jitter.max(1));
        }
        keep(self.flush());
        first.map_or(Ok(()), Err)
    }

    /// Learns the rule names of content `version` that this agent did not stage (installed with
    /// the driver, or staged before its state was lost), so that its detections are reported
    /// under their rule ids like any other: the envelope the signed releases metadata lists for
    /// it, checked against that metadata's hash. Tried once per version per run.
    fn learn_rule_meta(&mut self, version: u64) {
        if !self.meta_tried.insert(version) {
            return;
        }
        let Some(released) = self
            .trust
            .releases()
            .and_then(|r| r.get(&self.config.channel, version))
            .cloned()
        else {
            return;
        };
        let learned = self
            .source
            .envelope(&hex(&released.envelope_sha256))
            .map_err(|e| e.to_string())
            .and_then(|envelope| {
                let got: [u8; 32] = Sha256::digest(&envelope).into();
                if got != released.envelope_sha256 {
                    return Err(format!(
                        "its envelope has SHA-256 {}, the signed metadata says {}",
                        hex(&got),
                        hex(&released.envelope_sha256)
                    ));
                }
                rule_meta_of(&envelope)
            });
        match learned {
            Ok(meta) => self.remember_rule_meta(version, meta),
            Err(e) => self.note(format!(
                "the rules of content version {version} could not be named: {e}"
            )),
        }
    }

    /// Keeps the rule names of content `version`, and of at most seven other versions (the
    /// oldest are forgotten first, never the one just learned).
    fn remember_rule_meta(&mut self, version: u64, meta: Vec<RuleMeta>) {
        self.state.rule_meta.insert(version, meta);
        while self.state.rule_meta.len() > 8 {
            let Some(oldest) = self.state.rule_meta.keys().copied().find(|&v| v != version) else {
                break;
            };
            self.state.rule_meta.remove(&oldest);
        }
    }

    fn forward_guard_events(&mut self) -> Result<(), AgentError> {
        let events = self.link.guard_events()?;
        let mut out = Vec::new();
        for e in events {
            let kind = match EventKind::from_code(e.kind) {
                Some(EventKind::CrashCounted) => "crash",
                Some(EventKind::Reverted) => "revert",
                Some(EventKind::Quarantined) => "quarantine",
                _ => continue,
            };
            out.push(json!({"release_version": e.version, "kind": kind}));
        }
        if !out.is_empty() {
            self.telemetry(out)?;
        }
        Ok(())
    }

    fn forward_detections(&mut self) -> Result<(), AgentError> {
        let detections = self.link.detections()?;
        if detections.is_empty() {
            return Ok(());
        }
        // Content whose rules are not named yet (each version looked up once per run).
        for d in &detections {
            if !self.state.rule_meta.contains_key(&d.content_version) {
                self.learn_rule_meta(d.content_version);
            }
        }
        let mut counts: std::collections::BTreeMap<(u64, String), u64> = Default::default();
        let mut alerts = Vec::new();
        let mut left_out = 0usize;
        if let Some(staged) = self.state.staged.as_mut() {
            for d in detections
                .iter()
                .filter(|d| d.content_version == staged.version)
            {
                let n = staged.rule_detections.entry(d.rule_index).or_default();
                *n = n.saturating_add(1);
            }
        }
        for d in &detections {
            let meta = self
                .state
                .rule_meta
                .get(&d.content_version)
                .and_then(|rules| rules.get(d.rule_index as usize));
            let rule = meta.map_or_else(|| format!("#{}", d.rule_index), |m| m.id.clone());
            *counts.entry((d.content_version, rule.clone())).or_default() += 1;
            if alerts.len() >= MAX_ALERTS_PER_STEP {
                left_out += 1;
                continue;
            }
            let (title, author, level) = meta
                .map_or((String::new(), String::new(), "unknown"), |m| {
                    (m.title.clone(), m.author.clone(), m.level.as_str())
                });
            alerts.push(json!({
                "release_version": d.content_version, "rule": rule, "title": title,
                "author": author, "level": level, "action": d.action, "blocked": d.blocked,
                "time_ms": d.unix_ms(), "event_type": d.event_type, "process_id": d.process_id,
                "parent_process_id": d.parent_process_id, "image": d.image,
                "command_line": d.command_line, "user": d.user, "parent_image": d.parent_image,
                "hashes": d.hashes, "truncated": d.truncated,
            }));
        }
        if left_out > 0 {
            self.note(format!(
                "{left_out} detections of this step were counted but not sent as alerts (at most \
                 {MAX_ALERTS_PER_STEP} per step)"
            ));
        }
        let all: Vec<serde_json::Value> = counts
            .into_iter()
            .map(|((v, rule), count)| json!({"release_version": v, "rule": rule, "count": count}))
            .collect();
        // The server takes at most 1000 of each per batch; alerts go in batches of 100 so a batch
        // stays well inside its body limit (each alert's context is bounded by the driver).
        for batch in all.chunks(1000) {
            let body = json!({"channel": self.config.channel, "guard_events": [],
                "detections": batch});
            self.spool.push(Kind::Telemetry, &body)?;
        }
        for batch in alerts.chunks(100) {
            let body = json!({"channel": self.config.channel, "alerts": batch});
            self.spool.push(Kind::Telemetry, &body)?;
        }
        Ok(())
    }

    fn telemetry(&mut self, guard_events: Vec<serde_json::Value>) -> Result<(), AgentError> {
        let body = json!({"channel": self.config.channel, "guard_events": guard_events,
            "detections": []});
        self.spool.push(Kind::Telemetry, &body)?;
        Ok(())
    }

    /// Spools `POST /v1/heartbeat`'s body (the spool adds `seq`): `{"channel":CHANNEL,
    /// "content_version":N,"confirmed_healthy":B}`, written from its head kept since the agent
    /// opened rather than serialized member by member: a heartbeat is what an endpoint sends
    /// most, and its names and channel never change.
    fn heartbeat(&mut self, confirmed: bool) -> Result<(), AgentError> {
        let content_version = self.link.status()?.content_version;
        let mut digits = itoa::Buffer::new();
        let body = heartbeat_json(
            &self.heartbeat_head,
            &mut digits,
            content_version,
            confirmed,
        );
        self.spool.push_json(Kind::Heartbeat, &body)?;
        Ok(())
    }

    /// Sends the spool oldest first; stops at the first failure (kept for the next step).
    pub fn flush(&mut self) -> Result<(), AgentError> {
        // Borrowed, not copied: the spool and the sink are other fields.
        let Some(token) = self.state.enrolled.as_ref().map(|e| e.token.as_str()) else {
            return Ok(());
        };
        let sink = &mut self.sink;
        loop {
            let sent = self.spool.with_oldest(|m| {
                m.map(|m| {
                    let r = match m.kind {
                        Kind::Heartbeat => sink.heartbeat(token, &m.body),
                        Kind::Telemetry => sink.telemetry(token, &m.body),
                    };
                    r.map(|delivered| (m.seq, delivered))
                })
            })?;
            match sent {
                None => return Ok(()),
                Some(r) => match r? {
                    (seq, Delivered::Stored | Delivered::Replayed) => self.spool.delivered(seq)?,
                },
            }
        }
    }

    fn update_metadata(&mut self, now: u64) -> Result<(), AgentError> {
        let ts = Timestamp(now);
        let mut changed = false;
        let held = self.trust.versions();
        // A newer root is optional on the fetch path.
        if let Ok(Some(root)) = self.source.metadata_newer(Metadata::Root, Some(held.root)) {
            match self.trust.update_root(&root) {
                Ok(Update::Updated) => changed = true,
                Ok(Update::Unchanged) => {}
                Err(e) => self.note(format!("root.json refused: {e}")),
            }
        }
        // Not newer than the file held: its expiry is checked where the rollout is acted on.
        if let Some(releases) = self
            .source
            .metadata_newer(Metadata::Releases, held.releases)?
        {
            match self.trust.update_releases(&releases, ts) {
                Ok(Update::Updated) => changed = true,
                Ok(Update::Unchanged) => {}
                Err(e) => self.note(format!("releases.json refused: {e}")),
            }
        }
        if let Some(rollout) = self
            .source
            .metadata_newer(Metadata::Rollout, held.rollout)?
        {
            match self.trust.update_rollout(&rollout, ts) {
                Ok(Update::Updated) => changed = true,
                Ok(Update::Unchanged) => {}
                Err(e) => self.note(format!("rollout.json refused: {e}")),
            }
        }
        if changed {
            self.save_trust()?;
        }
        Ok(())
    }

    fn facts(&self) -> Result<EndpointFacts, AgentError> {
        let id = self
            .state
            .enrolled
            .as_ref()
            .and_then(|e| unhex::<16>(&e.endpoint_id))
            .ok_or_else(|| AgentError::Other("not enrolled".into()))?;
        Ok(EndpointFacts {
            id: EndpointId(id),
            os_build: self.config.os_build.clone(),
            hw_class: self.config.hw_class.clone(),
            host_group: self.config.host_group.clone(),
        })
    }

    /// Reads the administrator's controls; a damaged file is logged once and the controls read
    /// before it stay in force.
    fn read_admin(&mut self) -> AdminControls {
        let read =
            self.storage
                .read(admin::FILE)
                .map_err(|e| e.to_string())
                .and_then(|b| match b {
                    Some(b) => admin::parse(&b, &self.storage.describe(admin::FILE))
                        .map_err(|e| e.to_string()),
                    None => Ok(AdminControls::default()),
                });
        match read {
            Ok(a) => {
                self.admin_error = None;
                self.admin = a;
            }
            Err(e) => {
                if self.admin_error.as_ref() != Some(&e) {
                    self.note(format!("{e}; the controls read before stay in force"));
                    self.admin_error = Some(e);
                }
            }
        }
        self.admin.clone()
    }

    /// The administrator's controls, then the rollout's decision.
    fn act(&mut self, now: u64) -> Result<(), AgentError> {
        let admin = self.read_admin();
        if admin.reverts_requested > self.state.admin_reverts_done {
            let status = self.link.status()?;
            let answer = self.link.revert()?;
            self.note(format!(
                "revert asked by the administrator: {}",
                answer.message
            ));
            if answer.accepted {
                self.reverted(status.content_version)?;
            }
            // Carried out once, accepted or refused (the refusal is logged with its reason).
            self.state.admin_reverts_done = admin.reverts_requested;
            return self.save();
        }
        if admin.paused {
            return Ok(());
        }
        if let Some(version) = admin.pinned {
            let status = self.link.status()?;
            if version != status.content_version {
                self.go_to_pinned(version, &status, now)?;
            }
            return Ok(());
        }
        let ts = Timestamp(now);
        let decision = {
            let Some(signed) = self.trust.current(ts)? else {
                return Ok(());
            };
            let Some(state) = signed.state.channel(&self.config.channel) else {
                return Ok(());
            };
            let Some(thresholds) = signed.thresholds.get(&self.config.channel) else {
                return Ok(());
            };
            let policy = signed
                .policies
                .resolve(&self.config.host_group, &self.config.channel);
            let placement = match &self.placement {
                Some(p) => p,
                None => self
                    .placement
                    .insert(Placement::of(&self.facts()?, &self.config.channel)),
            };
            // `current` returns only metadata whose state and thresholds were validated.
            decide_placed(state, placement, policy, thresholds, ts)
        };
        let status = self.link.status()?;
        match decision {
            Decision::Run { version, pack_hash } if version != status.content_version => {
                // Staged for the next boot, the guard holds it: nothing to do until then.
                let waiting = self
                    .state
                    .staged
                    .as_ref()
                    .is_some_and(|s| s.version == version)
                    && status.candidate == Some(version);
                let already = waiting
                    || self.state.rejections.iter().any(|r| r.version == version)
                    || self.state.reverted.contains(&version);
                if !already {
                    self.fetch_and_stage(version, pack_hash, now)?;
                }
            }
            Decision::Pinned { version, .. } if version != status.content_version => {
                self.go_to_pinned(version, &status, now)?;
            }
            Decision::RevertToLastKnownGood { halted_version }
                if status.content_version == halted_version =>
            {
                let answer = self.link.revert()?;
                self.note(format!("revert of {halted_version}: {}", answer.message));
                if answer.accepted {
                    self.reverted(halted_version)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// After an accepted revert away from `version`: not staged any more, not taken again, and
    /// reported.
    fn reverted(&mut self, version: u64) -> Result<(), AgentError> {
        self.state.staged = None;
        if !self.state.reverted.contains(&version) {
            self.state.reverted.push(version);
        }
        self.save()?;
        self.telemetry(vec![json!({"release_version": version, "kind": "revert"})])
    }

    /// Pinned (by policy or by the administrator) to `version`, which is not running.
    fn go_to_pinned(
        &mut self,
        version: u64,
        status: &DriverStatus,
        now: u64,
    ) -> Result<(), AgentError> {
        if status.last_known_good == Some(version) {
            // Pinned to the guard's last-known-good: go back to it.
            let answer = self.link.revert()?;
            self.note(format!("pinned to {version}: {}", answer.message));
            if answer.accepted {
                self.state.staged = None;
                self.save()?;
            }
        } else if version > status.content_version
            && !self.state.rejections.iter().any(|r| r.version == version)
        {
            let pack_hash = self
                .trust
                .releases()
                .and_then(|r| r.get(&self.config.channel, version))
                .map(|p| p.pack_sha256);
            match pack_hash {
                Some(pack_hash) => self.fetch_and_stage(version, pack_hash, now)?,
                None => self.note(format!(
                    "pinned to {version}, which the signed releases metadata does not hold"
                )),
            }
        } else {
            self.note(format!(
                "pinned to {version}, which is neither newer than {} nor last-known-good: \
                 the guard cannot go back to it",
                status.content_version
            ));
        }
        Ok(())
    }

    fn reject(&mut self, version: u64, reason: String, now: u64) -> Result<(), AgentError> {
        self.note(format!("content version {version} refused: {reason}"));
        // Reported to the server: the controller halts a release endpoints refuse.
        self.telemetry(vec![json!({"release_version": version, "kind": "reject",
            "reason": truncate_utf8(&reason, MAX_REASON_BYTES)})])?;
        self.state.rejections.push(Rejection {
            version,
            reason,
            at: now,
        });
        if self.state.rejections.len() > 32 {
            self.state.rejections.remove(0);
        }
        self.save()
    }

    fn fetch_and_stage(
        &mut self,
        version: u64,
        pack_hash: [u8; 32],
        now: u64,
    ) -> Result<(), AgentError> {
        let released = self
            .trust
            .releases()
            .and_then(|r| r.get(&self.config.channel, version))
            .cloned();
        let Some(released) = released else {
            // The rollout names a version the releases metadata does not vouch for (yet).
            self.note(format!(
                "content version {version} is not in the signed releases metadata"
            ));
            return Ok(());
        };
        let envelope = self.source.envelope(&hex(&released.envelope_sha256))?;
        let got: [u8; 32] = Sha256::digest(&envelope).into();
        if got != released.envelope_sha256 {
            return self.reject(
                version,
                format!(
                    "envelope SHA-256 {} is not the released {}",
                    hex(&got),
                    hex(&released.envelope_sha256)
                ),
                now,
            );
        }
        let status = self.link.status()?;
        // The running sensor's schema: the pack is verified against the schema the driver
        // reports, which must be the one this verifier was built with.
        if status.schema_hash != bulwark_interpreter::schema_hash()
            || status.field_counts != schema_field_counts()
        {
            return self.reject(
                version,
                format!(
                    "the driver's schema {} is not the service's {}",
                    hex(&status.schema_hash),
                    hex(&bulwark_interpreter::schema_hash())
                ),
                now,
            );
        }
        let newest = status
            .content_version
            .max(status.last_known_good.unwrap_or(0));
        let channel = self.config.channel_number;
        let opened = bulwark_loader_boot_guard::open(
            &envelope,
            self.release_keys()?,
            Admission::Update {
                channel,
                newest,
                quarantine: &[],
            },
        );
        let opened = match opened {
            Ok(o) => o,
            Err(e) => return self.reject(version, format!("loader: {e}"), now),
        };
        if opened.id.version != version
            || opened.id.hash != pack_hash
            || opened.id.hash != released.pack_sha256
        {
            return self.reject(
                version,
                format!(
                    "the envelope holds version {} pack {}, the signed metadata says {version} {}",
                    opened.id.version,
                    hex(&opened.id.hash),
                    hex(&released.pack_sha256)
                ),
                now,
            );
        }
        // The rules' names, from the pack the loader verified.
        let rule_meta = rules_of(&opened.pack);
        let mode = if self.config.hot {
            StageMode::Hot
        } else {
            StageMode::NextBoot
        };
        let answer = self.link.stage(&envelope, mode)?;
        if !answer.accepted {
            let reason = format!("driver refused ({}): {}", answer.code, answer.message);
            if answer.code == bulwark_loader_boot_guard::LoadError::QUARANTINED_CODE {
                // The guard quarantined this release on this machine (failed boots, or a
                // revert): that was reported as such; not taking it again is no refusal of the
                // content by this endpoint's verifier.
                self.note(format!(
                    "content version {version} is quarantined here: {reason}"
                ));
                self.state.reverted.push(version);
                return self.save();
            }
            if answer.code == bulwark_loader_boot_guard::GuardError::STORE_CODE {
                // This machine's storage failed: no judgement on the content. Not reported as a
                // refusal (the controller would halt a good release for one bad disk) and not
                // remembered as one: the step fails, and the stage is tried again after backoff.
                return Err(AgentError::Other(format!(
                    "content version {version} could not be staged: {reason}"
                )));
            }
            return self.reject(version, reason, now);
        }
        self.note(format!(
            "staged content version {version}: {}",
            answer.message
        ));
        self.state.staged = Some(Staged {
            version,
            at: now,
            events_at_stage: status.events_evaluated,
            running_since: (mode == StageMode::Hot).then_some(now),
            rule_detections: BTreeMap::new(),
        });
        self.remember_rule_meta(version, rule_meta);
        self.save()
    }

    fn health_window(&mut self, now: u64) -> Result<(), AgentError> {
        let Some(staged) = self.state.staged.clone() else {
            return Ok(());
        };
        let status = self.link.status()?;
        if status.content_version != staged.version {
            if status.candidate == Some(staged.version) && staged.running_since.is_none() {
                // Staged for the next boot and not booted yet: nothing to watch.
                return Ok(());
            }
            // The guard went back (a crash, a revert): nothing to confirm.
            self.note(format!(
                "content version {} is no longer running ({} is)",
                staged.version, status.content_version
            ));
            self.state.staged = None;
            return self.save();
        }
        let Some(since) = staged.running_since else {
            // It runs now (the machine rebooted): the window starts, and events count, from here.
            if let Some(s) = self.state.staged.as_mut() {
                s.running_since = Some(now);
                s.events_at_stage = status.events_evaluated;
            }
            return self.save();
        };
        if now < since.saturating_add(self.config.health_window_secs) {
            return Ok(());
        }
        // Events must have gone through the new content: a sensor that runs but sees nothing is
        // not healthy. After a reboot (staged for the next boot) the counter starts again.
        let flowed = !self.config.health_requires_events
            || if status.events_evaluated >= staged.events_at_stage {
                status.events_evaluated > staged.events_at_stage
            } else {
                status.events_evaluated > 0
            };
        if !flowed {
            if !self.waiting_for_events {
                self.note(format!(
                    "content version {} ran through its health window but no event has gone \
                     through it yet: not confirmed until events flow",
                    staged.version
                ));
                self.waiting_for_events = true;
            }
            return Ok(());
        }
        self.waiting_for_events = false;
        let seen = status
            .events_evaluated
            .saturating_sub(staged.events_at_stage);
        if let Some((&rule, &count)) = staged.rule_detections.iter().find(|(_, &count)| {
            count >= STORM_DETECTIONS
                || (count >= STORM_MIN_DETECTIONS && count as f64 > STORM_SHARE * seen as f64)
        }) {
            if !self.storm_noted {
                let id = self
                    .state
                    .rule_meta
                    .get(&staged.version)
                    .and_then(|r| r.get(rule as usize))
                    .map_or_else(|| format!("#{rule}"), |m| m.id.clone());
                self.note(format!(
                    "content version {}: rule {id} fired {count} times on {seen} events: a \
                     storm; not confirmed healthy",
                    staged.version
                ));
                self.storm_noted = true;
            }
            return Ok(());
        }
        self.storm_noted = false;
        let answer = self.link.confirm_healthy()?;
        self.note(format!("confirm {}: {}", staged.version, answer.message));
        self.state.staged = None;
        if answer.accepted {
            self.state.confirmed = Some(staged.version);
            self.heartbeat(true)?;
        }
        self.save()
    }
}

/// The rules of the pack in `envelope`, as alerts name them; the verifier's message if it refuses
/// the pack.
fn rule_meta_of(envelope: &[u8]) -> Result<Vec<RuleMeta>, String> {
    let Ok((_, pack)) = bulwark_loader_boot_guard::envelope::parse(envelope) else {
        return Ok(Vec::new());
    };
    let p = bulwark_interpreter::verify(pack).map_err(|e| format!("verifier: {e}"))?;
    Ok(rules_of(&p))
}

/// The metadata of each rule of a verified pack, in rule order.
fn rules_of(p: &bulwark_interpreter::VerifiedPack) -> Vec<RuleMeta> {
    (0..p.rule_count())
        .filter_map(|i| {
            p.rule(i).map(|r| RuleMeta {
                id: r.id.to_owned(),
                title: r.title.to_owned(),
                author: r.author.to_owned(),
                level: r.level.name().to_owned(),
            })
        })
        .collect()
}

/// The agent's state as `bulwark-service status` prints it, read from its state directory
/// while the service may be running (the spool is SQLite in WAL mode: readers do not block it).
pub fn offline_status(dir: &Path) -> Result<serde_json::Value, AgentError> {
    let state: PersistedState = match std::fs::read(dir.join("state.json")) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| AgentError::Other(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedState::default(),
        Err(e) => return Err(e.into()),
    };
    let trusted = match std::fs::read(dir.join("trust.json")) {
        Ok(b) => {
            let p: PersistedTrust =
                serde_json::from_slice(&b).map_err(|e| AgentError::Other(e.to_string()))?;
            let v = TrustState::restore(&p)?.versions();
            json!({"root": v.root, "releases": v.releases, "rollout": v.rollout})
        }
        Err(_) => serde_json::Value::Null,
    };
    // Not created by `status`: before the service first ran there is no spool.
    let spool_path = dir.join("spool.sqlite");
    let (spooled, dropped, next_seq) = if spool_path.exists() {
        let spool = crate::spool::Spool::open(&spool_path, u64::MAX)?;
        (spool.len()?, spool.dropped()?, spool.next_seq()?)
    } else {
        (0, 0, 1)
    };
    Ok(json!({
        "enrolled": state.enrolled.as_ref().map(|e| &e.endpoint_id),
        "staged": state.staged,
        "confirmed": state.confirmed,
        "rejections": state.rejections,
        "reverted": state.reverted,
        "admin": match admin::load(dir) {
            Ok(a) => json!(a),
            Err(e) => json!({"error": e.to_string()}),
        },
        "trusted_metadata": trusted,
        "spooled": spooled,
        "spool_dropped": dropped,
        "next_seq": next_seq,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use bulwark_loader_boot_guard::envelope::SignatureMemo;

    #[test]
    fn a_heartbeat_is_written_as_serde_json_writes_its_struct() {
        #[derive(serde::Serialize)]
        struct Heartbeat<'a> {
            channel: &'a str,
            content_version: u64,
            confirmed_healthy: bool,
        }
        for channel in [
            "prod",
            "",
            "a\"b\\c",
            "tab\there\u{1}\u{7f}",
            "é – 日本",
            "</script>",
        ] {
            let head = heartbeat_head(channel);
            for content_version in [0, 7, 1_000_000, u64::MAX] {
                for confirmed in [false, true] {
                    let mut digits = itoa::Buffer::new();
                    let pieces = heartbeat_json(&head, &mut digits, content_version, confirmed);
                    let written: Vec<u8> = pieces.concat();
                    let expected = serde_json::to_vec(&Heartbeat {
                        channel,
                        content_version,
                        confirmed_healthy: confirmed,
                    })
                    .unwrap();
                    assert_eq!(
                        String::from_utf8_lossy(&written),
                        String::from_utf8_lossy(&expected)
                    );
                }
            }
        }
    }

    #[test]
    fn the_envelope_memo_remembers_each_answer_for_its_very_check() {
        let memo = EnvelopeMemo::new(MetadataMemo::shared());
        let mut calls = 0;
        let answer = |calls: &mut u32, valid: bool| {
            *calls += 1;
            valid
        };
        assert!(memo.check(&[1; 32], &[2; 64], b"m", &mut || answer(&mut calls, true)));
        assert!(memo.check(&[1; 32], &[2; 64], b"m", &mut || answer(&mut calls, false)));
        assert_eq!(calls, 1, "the second check was remembered");
        assert!(!memo.check(&[1; 32], &[2; 64], b"n", &mut || answer(&mut calls, false)));
        assert!(!memo.check(&[1; 32], &[2; 64], b"n", &mut || answer(&mut calls, true)));
        assert!(memo.check(&[1; 32], &[3; 64], b"m", &mut || answer(&mut calls, true)));
        assert_eq!(calls, 3);
    }

    /// A release engineer's public key, and an envelope it signed (channel 1, version 5) around
    /// a one-rule pack.
    fn sealed_test_envelope() -> ([u8; 32], Vec<u8>) {
        let secret = [7u8; 32];
        let public = ed25519_dalek::SigningKey::from_bytes(&secret)
            .verifying_key()
            .to_bytes();
        let text = "rule\n  id \"r\"\n  title \"t\"\n  author \"a\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"m\"\n  ret\nend\n";
        let pack = bulwark_interpreter::text::asm(text).unwrap();
        let envelope = bulwark_loader_boot_guard::seal(
            &secret,
            1,
            5,
            bulwark_interpreter::schema_hash(),
            &pack,
        )
        .unwrap();
        (public, envelope)
    }

    #[test]
    fn release_keys_are_shared_through_the_memo_and_do_not_keep_it_alive() {
        let (public, envelope) = sealed_test_envelope();
        let open = |keys: &TrustedKeys| {
            let admission = Admission::Update {
                channel: 1,
                newest: 0,
                quarantine: &[],
            };
            bulwark_loader_boot_guard::open(&envelope, keys, admission).is_ok()
        };
        let memo = MetadataMemo::shared();
        let weak = memo.downgrade();
        let first = shared_release_keys(&[public], &memo);
        let second = shared_release_keys(&[public], &memo);
        assert!(Arc::ptr_eq(&first, &second), "parsed once, held once");
        assert!(open(first.as_ref().as_ref().unwrap()));
        assert_eq!(memo.len(), 1, "the check went through the memo");
        // Other keys are parsed on their own; keys refused are an error, kept and shared too.
        let other = shared_release_keys(&[[9; 32], public], &memo);
        assert!(!Arc::ptr_eq(&first, &other));
        // The identity point: a weak key, refused.
        let mut weak_key = [0u8; 32];
        weak_key[0] = 1;
        let refused = shared_release_keys(&[weak_key], &memo);
        assert!(refused.as_ref().is_err());
        assert!(Arc::ptr_eq(
            &refused,
            &shared_release_keys(&[weak_key], &memo)
        ));
        // Without a memo: parsed for each caller.
        let off = MetadataMemo::off();
        let (a, b) = (
            shared_release_keys(&[public], &off),
            shared_release_keys(&[public], &off),
        );
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(open(a.as_ref().as_ref().unwrap()));
        // The memo holds the keys, which check through it: they must not keep it alive.
        drop((first, second, other, refused));
        drop(memo);
        assert!(weak.upgrade().is_off(), "the memo outlived its last user");
    }

    #[test]
    fn an_envelope_opened_with_the_memo_is_judged_as_without_it() {
        let (public, envelope) = sealed_test_envelope();
        let memo = MetadataMemo::shared();
        let with_memo =
            EnvelopeMemo::new(memo.clone()).attach(TrustedKeys::new(&[public]).unwrap());
        let plain = TrustedKeys::new(&[public]).unwrap();
        let open = |bytes: &[u8], keys: &TrustedKeys| {
            let admission = Admission::Update {
                channel: 1,
                newest: 0,
                quarantine: &[],
            };
            format!(
                "{:?}",
                bulwark_loader_boot_guard::open(bytes, keys, admission).map(|o| o.id)
            )
        };
        let genuine = open(&envelope, &with_memo);
        assert!(genuine.starts_with("Ok("), "{genuine}");
        assert_eq!(memo.len(), 1);
        // Every byte flipped, the genuine check remembered: each refused as without the memo.
        for i in 0..envelope.len() {
            let mut bad = envelope.clone();
            bad[i] ^= 0x01;
            let found = open(&bad, &with_memo);
            assert!(!found.starts_with("Ok("), "byte {i}: {found}");
            assert_eq!(found, open(&bad, &plain), "byte {i}");
        }
        assert_eq!(open(&envelope, &with_memo), genuine);
    }

    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0x10, 0xa5, 0xff]), "000f10a5ff");
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), expected);
    }

    #[test]
    // The verifier's own result type, as the loader hands it to the memo.
    #[allow(clippy::result_large_err)]
    fn a_pack_is_verified_once_through_the_memo_and_judged_as_without_it() {
        let (_, envelope) = sealed_test_envelope();
        let (_, genuine) = bulwark_loader_boot_guard::envelope::parse(&envelope).unwrap();
        let memo = MetadataMemo::shared();
        let strong = EnvelopeMemo::new(memo.clone());
        let weak = EnvelopeMemo::weak(&memo);
        // What `handle` answers for `pack` twice, and how many times the verifier ran.
        let twice = |handle: &EnvelopeMemo, pack: &[u8]| {
            let mut runs = 0;
            let mut run = || {
                runs += 1;
                bulwark_interpreter::verify(pack)
            };
            let first = handle.verify(pack, &mut run);
            let again = handle.verify(pack, &mut run);
            (format!("{first:?}"), format!("{again:?}"), runs)
        };
        let fresh = |pack: &[u8]| format!("{:?}", bulwark_interpreter::verify(pack));
        let (first, again, runs) = twice(&strong, genuine);
        assert!(first.starts_with("Ok("), "{first}");
        assert_eq!((&first, &again, runs), (&fresh(genuine), &first, 1));
        // Through the weak handle, while the memo lives: remembered too.
        assert_eq!(twice(&weak, genuine), (first.clone(), first.clone(), 0));
        // Every byte flipped, the genuine pack remembered: each judged as by the verifier alone
        // (refusals are remembered too), none mistaken for the genuine one.
        for i in 0..genuine.len() {
            let mut bad = genuine.to_vec();
            bad[i] ^= 0x01;
            let (found, again, runs) = twice(&strong, &bad);
            assert_eq!((&found, &again), (&fresh(&bad), &found), "byte {i}");
            assert_ne!(found, first, "byte {i}");
            assert_eq!(runs, 1, "byte {i}");
        }
        // The memo gone, the weak handle verifies every time.
        drop((strong, memo));
        assert_eq!(twice(&weak, genuine), (first.clone(), first, 2));
    }
}
