//! The rollout server in the simulation, in process: real signed distribution metadata (root,
//! releases and rollout files signed with ed25519 keys, as `bulwark-server` signs them), the real
//! rollout controller (`bulwark_rollout::controller`) stepped on observations made by the same
//! pure function the server uses (`bulwark_rollout::observe`), and per-endpoint reports kept in
//! memory. The endpoints' agents reach it through [`SimSource`] (the fetch path) and [`SimSink`]
//! (enrollment, heartbeats, telemetry), the service's own traits.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;
use std::sync::{Mutex, OnceLock, PoisonError};

use bulwark_distribution::{sign, Releases, Role, Rollout, Root};
use bulwark_rollout::controller::{self, ControllerEvent};
use bulwark_rollout::{
    Census, Channel, ChannelRollout, EndpointFacts, EndpointReports, GuardReport, GuardReportKind,
    HealthConfig, Observer, Plan, PolicyTable, Release, RolloutState, Status, Timestamp,
    WaveThresholds,
};
use bulwark_service::net::{
    ContentSource, Delivered, Enrolled, Enrollment, Metadata, NetError, TelemetrySink,
};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use smallvec::SmallVec;

/// The root's version (the simulated server never rotates its root keys).
const ROOT_VERSION: u64 = 1;
/// Seconds a signed rollout file lives (re-signed on every change).
const ROLLOUT_LIFETIME: u64 = 7 * 86_400;

/// What the server knows of one endpoint, but what the controller's tick reads of it at every
/// step ([`Heard`], in [`SimServer::heard`] at the same index).
#[derive(Debug, Clone)]
struct Endpoint {
    /// Its facts; its bearer token is `bwe_{index}_{hex of facts.id}` ([`token_of`]), checked
    /// against the id held here rather than a string of its own elsewhere on the heap (a
    /// heartbeat is what the server handles most).
    facts: EndpointFacts,
    last_seq: u64,
}

/// One endpoint's guard events: the first few in place, so that the controller's tick reads them
/// without chasing a pointer (a machine that crashed on a release has three to six).
type GuardEvents = SmallVec<[GuardReport; 6]>;

/// What the controller's tick reads of one endpoint: a row of 32 bytes in a table of its own,
/// so that a tick, which reads every endpoint's, streams 3.2 MB at 100,000 endpoints instead of
/// their whole records (ten times as many bytes, most of them never read by it).
#[derive(Debug, Clone, Copy)]
struct Heard {
    /// Its last heartbeat (server time), if `heard`.
    last: u64,
    /// Its first heartbeat on the release under rollout, if `staged_known`.
    staged: u64,
    /// Its wave under the current thresholds (computed when the rollout starts), if not
    /// [`NO_WAVE`].
    wave: u32,
    heard: bool,
    /// Whether its last heartbeat announced a shutdown.
    shutdown: bool,
    staged_known: bool,
    /// Whether it confirmed the release under rollout healthy.
    healthy: bool,
    /// Whether it reported detections ([`SimServer::detections`]).
    detections: bool,
}

/// One endpoint's detection counts: (release version, rule id, count), in that order, as the
/// controller's observation reads them (a tick passes each list as it is).
type DetectionCounts = SmallVec<[(u64, &'static str, u64); 2]>;

/// Adds `n` detections of `rule` on release `version` to `counts`, kept in order.
fn add_detections(counts: &mut DetectionCounts, version: u64, rule: &'static str, n: u64) {
    match counts.binary_search_by_key(&(version, rule), |&(v, r, _)| (v, r)) {
        Ok(k) => {
            if let Some(c) = counts.get_mut(k) {
                c.2 += n;
            }
        }
        Err(k) => counts.insert(k, (version, rule, n)),
    }
}

/// [`Heard::wave`] of an endpoint in no wave.
const NO_WAVE: u32 = u32::MAX;

impl Heard {
    /// An endpoint not heard from yet, in `wave`.
    fn new(wave: Option<usize>) -> Heard {
        Heard {
            last: 0,
            staged: 0,
            wave: NO_WAVE,
            heard: false,
            shutdown: false,
            staged_known: false,
            healthy: false,
            detections: false,
        }
        .in_wave(wave)
    }

    fn in_wave(self, wave: Option<usize>) -> Heard {
        Heard {
            // A fleet has far fewer waves than u32::MAX: none is mistaken for NO_WAVE.
            wave: wave.and_then(|w| u32::try_from(w).ok()).unwrap_or(NO_WAVE),
            ..self
        }
    }

    fn wave(&self) -> Option<usize> {
        (self.wave != NO_WAVE).then_some(self.wave as usize)
    }

    /// What the rollout's observation takes of it; `None` before its first heartbeat.
    fn observed(&self) -> Option<bulwark_rollout::Heard> {
        self.heard.then_some(bulwark_rollout::Heard {
            last: self.last,
            shutdown: self.shutdown,
            staged: self.staged_known.then_some(self.staged),
            healthy: self.healthy,
        })
    }
}

/// The signing keys (the root's, the release engineers', the server's online key).
pub struct Keys {
    root: SigningKey,
    release: SigningKey,
    online: SigningKey,
}

impl Keys {
    /// Keys derived from `seed` (deterministic runs).
    #[must_use]
    pub fn from_seed(seed: u64) -> Keys {
        let derive = |label: &str| {
            let mut h = Sha256::new();
            h.update(seed.to_le_bytes());
            h.update(label.as_bytes());
            SigningKey::from_bytes(&h.finalize().into())
        };
        Keys {
            root: derive("root"),
            release: derive("release"),
            online: derive("online"),
        }
    }

    /// The release key's secret bytes (envelopes are sealed with it).
    #[must_use]
    pub fn release_secret(&self) -> [u8; 32] {
        self.release.to_bytes()
    }

    /// The release key's public key (the endpoints' guards trust it).
    #[must_use]
    pub fn release_public(&self) -> [u8; 32] {
        self.release.verifying_key().to_bytes()
    }

    /// The online key (the server signs rollout metadata with it).
    #[must_use]
    pub fn online(&self) -> SigningKey {
        self.online.clone()
    }
}

/// The release engineers' desk: the root the endpoints ship with, and the releases metadata
/// they sign with the release key as they publish (what `bulwark metadata` does for a real
/// fleet). Both transports publish through it: in process to [`SimServer`], over HTTPS to
/// `bulwark-server` ([`crate::http`]).
pub struct Desk {
    keys: Keys,
    channel: String,
    root: String,
    releases: String,
    releases_version: u64,
    listed: Vec<Release>,
}

impl Desk {
    /// A desk for `channel` at `now`, its root signed by `keys`: root, releases and rollout roles
    /// of one key each.
    pub fn new(keys: Keys, channel: &str, now: u64) -> Result<Desk, ServerError> {
        let public = |k: &SigningKey| k.verifying_key().to_bytes();
        let root = Root::new(ROOT_VERSION, Timestamp(now.saturating_add(365 * 86_400)))
            .with_role(Role::Root, &[public(&keys.root)], 1)
            .with_role(Role::Releases, &[public(&keys.release)], 1)
            .with_role(Role::Rollout, &[public(&keys.online)], 1);
        let root = sign(&root, &[&keys.root]).map_err(|e| ServerError::Sign(e.to_string()))?;
        Ok(Desk {
            keys,
            channel: channel.to_owned(),
            root,
            releases: String::new(),
            releases_version: 0,
            listed: Vec::new(),
        })
    }

    /// The signed root.
    #[must_use]
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The keys.
    #[must_use]
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The signed releases metadata (empty before the first release).
    #[must_use]
    pub fn releases(&self) -> &str {
        &self.releases
    }

    /// The published releases.
    #[must_use]
    pub fn listed(&self) -> &[Release] {
        &self.listed
    }

    /// Lists the sealed `envelope` as release `version` in newly signed releases metadata (valid
    /// 90 days from `now`). Returns the pack's rule ids (the controller's storm tests name them).
    pub fn publish(
        &mut self,
        version: u64,
        envelope: &[u8],
        now: u64,
    ) -> Result<Vec<String>, ServerError> {
        let (_, pack) = bulwark_loader_boot_guard::envelope::parse(envelope)
            .map_err(|e| ServerError::Sign(e.to_string()))?;
        let verified =
            bulwark_interpreter::verify(pack).map_err(|e| ServerError::Sign(e.to_string()))?;
        let ids = (0..verified.rule_count())
            .filter_map(|i| verified.rule(i).map(|r| r.id.to_owned()))
            .collect();
        self.listed.push(Release {
            channel: self.channel.clone(),
            version,
            pack_hash: Sha256::digest(pack).into(),
            envelope_sha256: Sha256::digest(envelope).into(),
            notes: String::new(),
        });
        self.releases_version += 1;
        let body = self.listed.iter().fold(
            Releases::new(
                self.releases_version,
                Timestamp(now.saturating_add(90 * 86_400)),
            ),
            Releases::with,
        );
        self.releases =
            sign(&body, &[&self.keys.release]).map_err(|e| ServerError::Sign(e.to_string()))?;
        Ok(ids)
    }
}

/// Marks a rollout just started as completed at `now`: every wave open, the status complete (the
/// history a run starts from: the previous release went to the whole fleet).
pub(crate) fn mark_completed(
    state: &mut ChannelRollout,
    now: Timestamp,
) -> Result<(), ServerError> {
    state.wave_opened_at = vec![Some(now); state.plan.waves.len()];
    state.open_waves = u32::try_from(state.plan.waves.len()).unwrap_or(u32::MAX);
    state.status = Status::Complete { at: now };
    state
        .validate()
        .map_err(|e| ServerError::Rollout(e.to_string()))
}

/// The simulated rollout server.
pub struct SimServer {
    desk: Desk,
    channel: String,
    rules: BTreeMap<u64, Vec<String>>,
    envelopes: BTreeMap<String, Rc<[u8]>>,
    rollout: String,
    rollout_version: u64,
    state: Option<ChannelRollout>,
    thresholds: Option<WaveThresholds>,
    policies: PolicyTable,
    endpoints: Vec<Endpoint>,
    /// What the controller's observation reads of each endpoint (`heard[i]` is
    /// `endpoints[i]`'s), after each of its reports and when a tick observes afresh.
    heard: Vec<Heard>,
    /// Each endpoint's guard events (`guard_events[i]` is `endpoints[i]`'s), in a table of their
    /// own: the observation reads those of an endpoint `guarded` says has some, and streams
    /// these rather than the endpoints' whole records when it reads them all.
    guard_events: Vec<GuardEvents>,
    /// The endpoints that reported guard events, a bit each: a table that stays in the cache
    /// (12.5 KB at 100,000 endpoints), read by the look-ahead ([`SimServer::touch`]) to ask for
    /// those endpoints' events before their next report.
    guarded: Bits,
    /// Each endpoint's detections (`detections[i]` is `endpoints[i]`'s): by release version and
    /// rule id, the count, in that order. The observation reads the lists of the endpoints whose
    /// [`Heard::detections`] says they have some.
    detections: Vec<DetectionCounts>,
    /// The controller's observation of the rollout, kept from tick to tick: each endpoint's
    /// part counted when it reports ([`SimServer::reported`]), so that a tick reads the sums,
    /// not every endpoint. Observing every endpoint each simulated minute was a fifth of a run.
    observer: Observer,
    /// Whether reports are counted into `observer`: while the rollout is stepped (progressing or
    /// paused), not after it halted or completed, when no tick reads the observation.
    observing: bool,
    /// The rule ids this server was told of ([`interned`]), to find each without a lock.
    rule_names: HashSet<&'static str>,
    /// Endpoint ids (hex) enrolled, and their index.
    enrolled: BTreeMap<String, usize>,
    config: HealthConfig,
    /// The controller's events, with the time they happened.
    pub events: Vec<(u64, ControllerEvent)>,
    /// The server's clock (seconds).
    pub now: u64,
}

/// Why the server refused something.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Metadata could not be signed.
    #[error("signing: {0}")]
    Sign(String),
    /// The rollout command was refused.
    #[error("rollout: {0}")]
    Rollout(String),
}

/// `rule`, kept for the life of the process: each distinct rule id once, whichever simulation
/// reports it (the rules of the simulated packs, a few per release), so that the detection counts
/// hold the ids the controller's observation takes without copying them at every tick.
fn interned(rule: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(|| Mutex::new(BTreeSet::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(&name) = names.get(rule) {
        return name;
    }
    let name: &'static str = Box::leak(Box::from(rule));
    names.insert(name);
    name
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl SimServer {
    /// A server for `channel` at `now`, its root signed by `keys`.
    pub fn new(keys: Keys, channel: &str, now: u64) -> Result<SimServer, ServerError> {
        Ok(SimServer {
            desk: Desk::new(keys, channel, now)?,
            channel: channel.to_owned(),
            rules: BTreeMap::new(),
            envelopes: BTreeMap::new(),
            rollout: String::new(),
            rollout_version: 0,
            state: None,
            thresholds: None,
            policies: PolicyTable::default(),
            endpoints: Vec::new(),
            heard: Vec::new(),
            guard_events: Vec::new(),
            guarded: Bits::default(),
            detections: Vec::new(),
            observer: Observer::new(),
            observing: false,
            rule_names: HashSet::new(),
            enrolled: BTreeMap::new(),
            config: HealthConfig::default(),
            events: Vec::new(),
            now,
        })
    }

    /// The health analysis's parameters (the scenario's).
    pub fn set_health(&mut self, config: HealthConfig) {
        self.config = config;
    }

    /// The root metadata endpoints ship with.
    #[must_use]
    pub fn root(&self) -> &str {
        self.desk.root()
    }

    /// The keys.
    #[must_use]
    pub fn keys(&self) -> &Keys {
        self.desk.keys()
    }

    /// The waves' thresholds of the rollout under way.
    #[must_use]
    pub fn thresholds(&self) -> Option<&WaveThresholds> {
        self.thresholds.as_ref()
    }

    /// The rollout under way, if any.
    #[must_use]
    pub fn rollout_state(&self) -> Option<&ChannelRollout> {
        self.state.as_ref()
    }

    /// Publishes a sealed envelope: stored by its SHA-256, listed in newly signed releases
    /// metadata with its rule ids kept for the controller's storm tests.
    pub fn publish(&mut self, version: u64, envelope: &[u8]) -> Result<(), ServerError> {
        let ids = self.desk.publish(version, envelope, self.now)?;
        self.rules.insert(version, ids);
        self.envelopes
            .insert(hex(&Sha256::digest(envelope)), Rc::from(envelope));
        self.sign_rollout()
    }

    /// Starts rolling out `version` with `plan`: the waves' thresholds from the census of the
    /// endpoints enrolled so far.
    pub fn start(&mut self, version: u64, plan: Plan) -> Result<(), ServerError> {
        let release = self
            .desk
            .listed
            .iter()
            .find(|r| r.version == version)
            .cloned()
            .ok_or_else(|| ServerError::Rollout(format!("release {version} is not published")))?;
        let channel = Channel {
            name: self.channel.clone(),
            critical: false,
        };
        let (state, events) = controller::start(
            channel,
            release,
            plan.clone(),
            self.state.as_ref(),
            Timestamp(self.now),
        )
        .map_err(|e| ServerError::Rollout(e.to_string()))?;
        let census = Census::from_endpoints(&self.channel, self.endpoints.iter().map(|e| &e.facts));
        let thresholds = WaveThresholds::compute(&plan, &census, &self.channel)
            .map_err(|e| ServerError::Rollout(e.to_string()))?;
        self.events
            .extend(events.into_iter().map(|e| (self.now, e)));
        self.state = Some(state);
        for (e, h) in self.endpoints.iter().zip(&mut self.heard) {
            h.staged_known = false;
            h.healthy = false;
            *h = h.in_wave(thresholds.wave_of(&e.facts));
        }
        self.thresholds = Some(thresholds);
        // Endpoints moved to new waves: observed afresh.
        self.observer.changed_all();
        self.sign_rollout()
    }

    /// Records that `version` was rolled out to the whole fleet and completed before now: the
    /// baseline the next release is compared with (its endpoints' crashes and detections).
    pub fn completed(&mut self, version: u64) -> Result<(), ServerError> {
        self.start(version, crate::scenario::one_wave())?;
        let now = Timestamp(self.now);
        if let Some(state) = self.state.as_mut() {
            mark_completed(state, now)?;
        }
        self.events.clear();
        self.sign_rollout()
    }

    fn sign_rollout(&mut self) -> Result<(), ServerError> {
        if self.desk.releases.is_empty() {
            return Ok(());
        }
        let mut state = RolloutState::default();
        let mut thresholds = BTreeMap::new();
        if let (Some(s), Some(t)) = (&self.state, &self.thresholds) {
            state.channels.insert(self.channel.clone(), s.clone());
            thresholds.insert(self.channel.clone(), t.clone());
        }
        self.rollout_version += 1;
        let body = Rollout::new(
            self.rollout_version,
            Timestamp(self.now.saturating_add(ROLLOUT_LIFETIME)),
            self.desk.releases_version,
            state,
            thresholds,
            self.policies.clone(),
        );
        self.rollout =
            sign(&body, &[&self.desk.keys.online]).map_err(|e| ServerError::Sign(e.to_string()))?;
        Ok(())
    }

    /// One controller pass at `now`: observe the rollout from every endpoint's reports, step it,
    /// and sign a new rollout file if it changed. Returns the events of the step.
    pub fn tick(&mut self, now: u64) -> Result<Vec<ControllerEvent>, ServerError> {
        self.now = now;
        let (Some(state), Some(_)) = (&self.state, &self.thresholds) else {
            return Ok(Vec::new());
        };
        // As the server's controller: a halted or complete rollout is not stepped, nor observed.
        if !matches!(state.status, Status::Progressing | Status::Paused { .. }) {
            self.observing = false;
            return Ok(Vec::new());
        }
        if !self.observing {
            // Reports were not counted meanwhile: observed afresh.
            self.observing = true;
            self.observer.changed_all();
        }
        let version = state.release.version;
        let no_rules = Vec::new();
        let release_rules = self.rules.get(&version).unwrap_or(&no_rules);
        let baseline_rules = state
            .baseline_version
            .and_then(|v| self.rules.get(&v))
            .unwrap_or(&no_rules);
        let reports = |i: usize| {
            reports_of(
                &self.heard,
                &self.guard_events,
                &self.guarded,
                &self.detections,
                i,
            )
        };
        let obs = self.observer.observe(
            state,
            self.heard.len(),
            reports,
            release_rules,
            baseline_rules,
            Timestamp(now),
            &self.config,
        );
        #[cfg(test)]
        assert_eq!(
            obs,
            bulwark_rollout::observe(
                state,
                (0..self.heard.len()).filter_map(reports),
                release_rules,
                baseline_rules,
                Timestamp(now),
                &self.config,
            ),
            "the observer and the whole observation at {now}"
        );
        let (next, events) = controller::step_with(state, &obs, Timestamp(now), &self.config);
        let changed = &next != state;
        self.events.extend(events.iter().cloned().map(|e| (now, e)));
        if changed {
            self.state = Some(next);
            self.sign_rollout()?;
        }
        Ok(events)
    }

    /// Endpoint `index` reported: the observation counts its part again now, while its reports
    /// are in the cache, not at the next tick.
    fn reported(&mut self, index: usize) {
        if !self.observing {
            return;
        }
        self.observer.update(
            index,
            reports_of(
                &self.heard,
                &self.guard_events,
                &self.guarded,
                &self.detections,
                index,
            ),
        );
    }

    /// Asks the processor for the parts of endpoint `index`'s record its next report reads
    /// (the engine's look-ahead): its id, against the token, its sequence, what it was heard
    /// say, and its part in the observation, counted again after the report.
    pub fn touch(&self, index: usize) {
        if let Some(e) = self.endpoints.get(index) {
            crate::engine::prefetch(&e.facts.id);
            crate::engine::prefetch(&e.last_seq);
        }
        if let Some(h) = self.heard.get(index) {
            crate::engine::prefetch(h);
        }
        if let Some(p) = self.observer.part(index).filter(|_| self.observing) {
            crate::engine::prefetch(p);
            if self.guarded.contains(index) {
                if let Some(g) = self.guard_events.get(index) {
                    crate::engine::prefetch_lines(g);
                }
            }
        }
    }

    /// [`SimServer::endpoint_index`], for the engine's tests.
    #[cfg(test)]
    pub(crate) fn endpoint_index_of(&self, token: &str) -> Result<usize, NetError> {
        self.endpoint_index(token)
    }

    /// The index of the endpoint holding `token` (`bwe_{index}_{id}`): found by the index it
    /// names, and only if the whole token is that endpoint's.
    fn endpoint_index(&self, token: &str) -> Result<usize, NetError> {
        let (index, hex) = token_parts(token).ok_or_else(bad_token)?;
        self.endpoints
            .get(index)
            .filter(|e| is_hex_of(hex, &e.facts.id.0))
            .map(|_| index)
            .ok_or_else(bad_token)
    }

    /// Rule id `rule`, as kept in the detection counts.
    fn intern(&mut self, rule: &str) -> &'static str {
        if let Some(&name) = self.rule_names.get(rule) {
            return name;
        }
        let name = interned(rule);
        self.rule_names.insert(name);
        name
    }

    /// Parses a report and checks its sequence number (a replay is refused, as the server does).
    /// Returns it and its endpoint's index.
    fn sequenced<T: Report>(&mut self, token: &str, body: &[u8]) -> Result<(T, usize), NetError> {
        let v = T::parse(body)?;
        let seq = v.seq();
        let now = self.now;
        let index = self.endpoint_index(token)?;
        let e = self.endpoints.get_mut(index).ok_or_else(bad_token)?;
        if seq <= e.last_seq {
            return Err(NetError::Status {
                status: 409,
                body: "replayed".into(),
            });
        }
        e.last_seq = seq;
        if let Some(h) = self.heard.get_mut(index) {
            h.heard = true;
            h.last = now;
            h.shutdown = false;
        }
        Ok((v, index))
    }
}

/// A set of endpoint indices, a bit each.
#[derive(Debug, Clone, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn insert(&mut self, i: usize) {
        let word = i / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        if let Some(w) = self.0.get_mut(word) {
            *w |= 1 << (i % 64);
        }
    }

    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// What the controller's observation reads of endpoint `i` (`None`: not heard from yet), from the
/// server's tables.
fn reports_of<'a>(
    heard: &[Heard],
    guard_events: &'a [GuardEvents],
    guarded: &Bits,
    detections: &'a [DetectionCounts],
    i: usize,
) -> Option<EndpointReports<'a>> {
    let h = heard.get(i)?;
    Some(EndpointReports {
        wave: h.wave(),
        heard: h.observed()?,
        guard_events: match guard_events.get(i) {
            Some(events) if guarded.contains(i) => events,
            _ => &[],
        },
        detections: match detections.get(i) {
            Some(counts) if h.detections => counts,
            _ => &[],
        },
    })
}

/// The index a bearer token names (`bwe_{index}_{id}`), whether or not it is that endpoint's.
pub(crate) fn index_named_by(token: &str) -> Option<usize> {
    token_parts(token).map(|(index, _)| index)
}

/// A token's index, written as [`token_of`] writes it (decimal digits only, no sign, no leading
/// zero), and the rest after it: what should be its endpoint's id in hex. Read in place, once per
/// report (a heartbeat is what the server handles most).
fn token_parts(token: &str) -> Option<(usize, &str)> {
    let (digits, hex) = token.strip_prefix("bwe_")?.split_once('_')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    Some((digits.parse().ok().filter(|_| canonical)?, hex))
}

/// Whether `hex` is `id` in lower-case hex, as [`token_of`] writes it.
fn is_hex_of(hex: &str, id: &[u8; 16]) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    hex.len() == 2 * id.len()
        && hex.as_bytes().chunks_exact(2).zip(id).all(|(pair, &b)| {
            pair.first() == DIGITS.get(usize::from(b >> 4))
                && pair.get(1) == DIGITS.get(usize::from(b & 15))
        })
}

/// The bearer token of endpoint `index` with id `id`.
fn token_of(index: usize, id: &[u8; 16]) -> String {
    format!("bwe_{index}_{}", hex(id))
}

/// Whether `token` is exactly [`token_of`]`(index, id)`: what [`SimServer::endpoint_index`]
/// accepts for that endpoint.
#[cfg(test)]
fn is_token_of(token: &str, index: usize, id: &[u8; 16]) -> bool {
    token_parts(token).is_some_and(|(i, hex)| i == index && is_hex_of(hex, id))
}

/// A token no endpoint holds.
fn bad_token() -> NetError {
    NetError::Status {
        status: 401,
        body: "bad_token".into(),
    }
}

/// What the server reads of an endpoint's reports (the rest is ignored, as the server's
/// controller ignores it).
trait Report: serde::de::DeserializeOwned {
    fn seq(&self) -> u64;

    /// The report in `body`.
    fn parse(body: &[u8]) -> Result<Self, NetError> {
        from_json(body)
    }
}

/// The report in `body`, as serde reads it; refused as the server refuses malformed JSON.
fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, NetError> {
    serde_json::from_slice(body).map_err(|e| NetError::Malformed(e.to_string()))
}

#[derive(serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
struct HeartbeatReport {
    seq: u64,
    #[serde(default)]
    content_version: u64,
    #[serde(default)]
    confirmed_healthy: bool,
    #[serde(default)]
    shutdown: bool,
}

#[derive(serde::Deserialize)]
struct TelemetryReport {
    seq: u64,
    #[serde(default)]
    guard_events: Vec<GuardEventReport>,
    #[serde(default)]
    detections: Vec<DetectionReport>,
}

#[derive(serde::Deserialize)]
struct GuardEventReport {
    #[serde(default)]
    release_version: u64,
    #[serde(default)]
    kind: String,
}

#[derive(serde::Deserialize)]
struct DetectionReport {
    #[serde(default)]
    release_version: u64,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    count: u64,
}

impl Report for HeartbeatReport {
    fn seq(&self) -> u64 {
        self.seq
    }

    /// The bytes the service's spool writes for a heartbeat are read in place
    /// ([`HeartbeatReport::canonical`]); any other body as serde reads it. A heartbeat is what
    /// the server handles most, and serde's matching of member names and skipping of the
    /// channel was a tenth of a `good` run.
    fn parse(body: &[u8]) -> Result<Self, NetError> {
        match Self::canonical(body) {
            Some(v) => Ok(v),
            None => from_json(body),
        }
    }
}

impl HeartbeatReport {
    /// The report in `body` if `body` is exactly what the service's spool writes for a
    /// heartbeat, `{"seq":N,"channel":"C","content_version":N,"confirmed_healthy":B}`: those
    /// members in that order, no whitespace, integers without sign, fraction, exponent or
    /// leading zero that fit a `u64`, a channel of printable ASCII without escapes. `None` for
    /// any other body, valid or not (serde reads those). Whatever this reads, serde reads as the
    /// same report (tested against it on mutated bodies).
    fn canonical(body: &[u8]) -> Option<Self> {
        let rest = body.strip_prefix(b"{\"seq\":")?;
        let (seq, rest) = canonical_u64(rest)?;
        let rest = rest.strip_prefix(b",\"channel\":\"")?;
        let end = rest.iter().position(|&b| b == b'"')?;
        let (channel, rest) = rest.split_at(end);
        if !channel
            .iter()
            .all(|&b| (b' '..=b'~').contains(&b) && b != b'\\')
        {
            return None;
        }
        let rest = rest.strip_prefix(b"\",\"content_version\":")?;
        let (content_version, rest) = canonical_u64(rest)?;
        let rest = rest.strip_prefix(b",\"confirmed_healthy\":")?;
        let (confirmed_healthy, rest) = match rest.strip_prefix(b"true") {
            Some(rest) => (true, rest),
            None => (false, rest.strip_prefix(b"false")?),
        };
        (rest == b"}").then_some(Self {
            seq,
            content_version,
            confirmed_healthy,
            shutdown: false,
        })
    }
}

/// The unsigned integer `s` starts with, written as serde_json writes one (decimal digits, no
/// leading zero), and the rest; `None` if there is none or it does not fit a `u64`.
fn canonical_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let (digits, rest) = s.split_at(s.iter().take_while(|b| b.is_ascii_digit()).count());
    if digits.is_empty() || (digits.len() > 1 && digits.first() == Some(&b'0')) {
        return None;
    }
    let value = digits.iter().try_fold(0u64, |v, &d| {
        v.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })?;
    Some((value, rest))
}

impl Report for TelemetryReport {
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// An endpoint's view of the server's fetch path.
pub struct SimSource(pub Rc<RefCell<SimServer>>);

impl ContentSource for SimSource {
    fn metadata(&mut self, which: Metadata) -> Result<String, NetError> {
        let s = self.0.borrow();
        let file = match which {
            Metadata::Root => &s.desk.root,
            Metadata::Releases => &s.desk.releases,
            Metadata::Rollout => &s.rollout,
        };
        if file.is_empty() {
            return Err(NetError::Status {
                status: 404,
                body: "not_found".into(),
            });
        }
        Ok(file.clone())
    }

    fn metadata_newer(
        &mut self,
        which: Metadata,
        held: Option<u64>,
    ) -> Result<Option<String>, NetError> {
        // The server knows the version of each file it serves.
        let current = {
            let s = self.0.borrow();
            match which {
                Metadata::Root => ROOT_VERSION,
                Metadata::Releases => s.desk.releases_version,
                Metadata::Rollout => s.rollout_version,
            }
        };
        if held.is_some_and(|h| h >= current) {
            return Ok(None);
        }
        self.metadata(which).map(Some)
    }

    fn envelope(&mut self, sha256_hex: &str) -> Result<Vec<u8>, NetError> {
        self.0
            .borrow()
            .envelopes
            .get(sha256_hex)
            .map(|e| e.to_vec())
            .ok_or(NetError::Status {
                status: 404,
                body: "not_found".into(),
            })
    }
}

/// An endpoint's reports to the server: it enrolls as the fleet's endpoint `facts`.
pub struct SimSink {
    /// The server.
    pub server: Rc<RefCell<SimServer>>,
    /// Who this endpoint is.
    pub facts: EndpointFacts,
}

impl TelemetrySink for SimSink {
    fn enroll(&mut self, _enrollment: &Enrollment) -> Result<Enrolled, NetError> {
        let mut s = self.server.borrow_mut();
        let id = hex(&self.facts.id.0);
        let index = match s.enrolled.get(&id) {
            Some(&i) => i,
            None => {
                let i = s.endpoints.len();
                let wave = s.thresholds.as_ref().and_then(|t| t.wave_of(&self.facts));
                s.endpoints.push(Endpoint {
                    facts: self.facts.clone(),
                    last_seq: 0,
                });
                s.guard_events.push(GuardEvents::new());
                s.heard.push(Heard::new(wave));
                s.detections.push(DetectionCounts::new());
                s.enrolled.insert(id.clone(), i);
                i
            }
        };
        let token = s
            .endpoints
            .get(index)
            .map(|e| token_of(index, &e.facts.id.0))
            .unwrap_or_default();
        Ok(Enrolled {
            endpoint_id: id,
            token,
        })
    }

    fn heartbeat(&mut self, token: &str, body: &[u8]) -> Result<Delivered, NetError> {
        let mut s = self.server.borrow_mut();
        let (v, index): (HeartbeatReport, _) = s.sequenced(token, body)?;
        let release = s.state.as_ref().map(|r| r.release.version);
        let now = s.now;
        let h = s.heard.get_mut(index).ok_or_else(bad_token)?;
        if Some(v.content_version) == release {
            if !h.staged_known {
                h.staged_known = true;
                h.staged = now;
            }
            h.healthy |= v.confirmed_healthy;
        }
        if v.shutdown {
            h.shutdown = true;
        }
        s.reported(index);
        Ok(Delivered::Stored)
    }

    fn telemetry(&mut self, token: &str, body: &[u8]) -> Result<Delivered, NetError> {
        let mut s = self.server.borrow_mut();
        let (v, index): (TelemetryReport, _) = s.sequenced(token, body)?;
        let now = s.now;
        if !v.detections.is_empty() {
            for d in v.detections {
                let rule = s.intern(&d.rule);
                if let Some(counts) = s.detections.get_mut(index) {
                    add_detections(counts, d.release_version, rule, d.count);
                }
            }
            if let Some(h) = s.heard.get_mut(index) {
                h.detections = true;
            }
        }
        let mut none = GuardEvents::new();
        let events = s.guard_events.get_mut(index).unwrap_or(&mut none);
        for g in v.guard_events {
            let kind = match g.kind.as_str() {
                "crash" => GuardReportKind::Crash,
                "revert" => GuardReportKind::Revert,
                "quarantine" => GuardReportKind::Quarantine,
                "reject" => GuardReportKind::Reject,
                _ => continue,
            };
            events.push(GuardReport {
                release_version: g.release_version,
                kind,
                at: now,
            });
        }
        if !events.is_empty() {
            s.guarded.insert(index);
        }
        s.reported(index);
        Ok(Delivered::Stored)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A heartbeat's body as the service's spool writes it (the agent's members, in its order).
    fn spooled_heartbeat(channel: &str, content_version: u64, confirmed_healthy: bool) -> Vec<u8> {
        use bulwark_service::spool::{Kind, MemorySpool, SpoolStore};
        #[derive(serde::Serialize)]
        struct Heartbeat<'a> {
            channel: &'a str,
            content_version: u64,
            confirmed_healthy: bool,
        }
        let mut spool = MemorySpool::new(1 << 20);
        let body = Heartbeat {
            channel,
            content_version,
            confirmed_healthy,
        };
        spool.push(Kind::Heartbeat, &body).unwrap();
        spool
            .with_oldest(|m| m.map(|m| m.body.clone()))
            .unwrap()
            .unwrap()
    }

    /// What serde reads of `body`: the report, or that it is refused.
    fn by_serde(body: &[u8]) -> Option<HeartbeatReport> {
        serde_json::from_slice(body).ok()
    }

    #[test]
    fn a_spooled_heartbeat_is_read_in_place_as_serde_reads_it() {
        for (channel, version, healthy) in [
            ("stable", 0, false),
            ("canary-ring_1", 42, true),
            ("", u64::MAX, true),
            (" ~!#$%&'()*+,-./:;<=>?@[]^_`{|}", 7, false),
        ] {
            let body = spooled_heartbeat(channel, version, healthy);
            let read = HeartbeatReport::canonical(&body);
            assert!(read.is_some(), "{}", String::from_utf8_lossy(&body));
            assert_eq!(read, by_serde(&body));
            assert_eq!(read.map(|r| r.content_version), Some(version));
            assert_eq!(read.map(|r| r.confirmed_healthy), Some(healthy));
        }
        // Written by hand, the sequence number's extremes.
        for seq in [0, 1, 10, 1_234_567_890, u64::MAX] {
            let body = format!(
                "{{\"seq\":{seq},\"channel\":\"x\",\"content_version\":3,\"confirmed_healthy\":false}}"
            );
            let read = HeartbeatReport::canonical(body.as_bytes());
            assert_eq!(read.as_ref().map(|r| r.seq), Some(seq));
            assert_eq!(read, by_serde(body.as_bytes()));
        }
    }

    #[test]
    fn a_heartbeat_in_any_other_form_is_left_to_serde() {
        let refused_or_other = [
            // Valid JSON, another form: serde reads it.
            &br#"{ "seq":1,"channel":"x","content_version":3,"confirmed_healthy":true}"#[..],
            br#"{"channel":"x","seq":1,"content_version":3,"confirmed_healthy":true}"#,
            br#"{"seq":1,"channel":"x","content_version":3,"confirmed_healthy":true,"shutdown":true}"#,
            br#"{"seq":1,"channel":"a\"b","content_version":3,"confirmed_healthy":true}"#,
            br#"{"seq":1,"channel":"\u0041","content_version":3,"confirmed_healthy":true}"#,
            br#"{"seq":1,"channel":"x","content_version":3,"confirmed_healthy":true} "#,
            br#"{"seq":1}"#,
            // Not a report serde reads: refused by both.
            br#"{"seq":01,"channel":"x","content_version":3,"confirmed_healthy":true}"#,
            br#"{"seq":18446744073709551616,"channel":"x","content_version":3,"confirmed_healthy":true}"#,
            br#"{"seq":-1,"channel":"x","content_version":3,"confirmed_healthy":true}"#,
            br#"{"seq":1.0,"channel":"x","content_version":3,"confirmed_healthy":true}"#,
            br#"{"seq":1,"channel":"x","content_version":3,"confirmed_healthy":true}}"#,
            br#"{"seq":1,"seq":2,"channel":"x","content_version":3,"confirmed_healthy":true}"#,
            br#"{"seq":1,"channel":"x","content_version":3,"confirmed_healthy":tru}"#,
            b"{\"seq\":1,\"channel\":\"\x01\",\"content_version\":3,\"confirmed_healthy\":true}",
            b"{\"seq\":1,\"channel\":\"\xff\",\"content_version\":3,\"confirmed_healthy\":true}",
        ];
        for body in refused_or_other {
            let text = String::from_utf8_lossy(body);
            assert_eq!(HeartbeatReport::canonical(body), None, "{text}");
            assert_eq!(HeartbeatReport::parse(body).ok(), by_serde(body), "{text}");
        }
        assert!(HeartbeatReport::parse(br#"{"seq":1}"#).is_ok_and(|r| r.seq == 1));
        assert!(matches!(
            HeartbeatReport::parse(br#"{"seq":01}"#),
            Err(NetError::Malformed(_))
        ));
    }

    /// Every body one byte away from a spooled heartbeat (deleted, replaced or inserted, by
    /// the bytes JSON's grammar turns on): read in place only if serde reads it the same, and
    /// refused exactly when serde refuses it.
    #[test]
    fn a_heartbeat_one_byte_off_is_read_as_serde_reads_it() {
        const BYTES: &[u8] = b"\"\\ \t0159-+.eE{}[],:tfnulx\x7f\x1f\xc3\x80";
        let mut bodies = Vec::new();
        for base in [
            spooled_heartbeat("stable", 12, true),
            format!(
                "{{\"seq\":{},\"channel\":\"c\",\"content_version\":{},\"confirmed_healthy\":false}}",
                u64::MAX,
                u64::MAX
            )
            .into_bytes(),
        ] {
            for at in 0..=base.len() {
                if at < base.len() {
                    let mut b = base.clone();
                    b.remove(at);
                    bodies.push(b);
                }
                for &byte in BYTES {
                    let mut b = base.clone();
                    b.insert(at, byte);
                    bodies.push(b);
                    if let Some(x) = base.get(at) {
                        if *x != byte {
                            let mut b = base.clone();
                            b[at] = byte;
                            bodies.push(b);
                        }
                    }
                }
            }
            bodies.push(base);
        }
        let mut read_in_place = 0;
        for body in &bodies {
            let text = String::from_utf8_lossy(body);
            let serde = by_serde(body);
            if let Some(read) = HeartbeatReport::canonical(body) {
                read_in_place += 1;
                assert_eq!(Some(read), serde, "{text}");
            }
            assert_eq!(HeartbeatReport::parse(body).ok(), serde, "{text}");
        }
        // The in-place reading is exercised, not only the fallback.
        assert!(read_in_place > 50, "{read_in_place} of {}", bodies.len());
    }

    #[test]
    fn an_endpoints_detections_are_summed_by_release_and_rule_in_order() {
        let mut counts = DetectionCounts::new();
        for (version, rule, n) in [
            (2, "r5", 1),
            (1, "r9", 2),
            (2, "r0", 4),
            (2, "r5", 3),
            (1, "r9", 0),
        ] {
            add_detections(&mut counts, version, interned(rule), n);
        }
        assert_eq!(
            counts.as_slice(),
            &[(1, "r9", 2), (2, "r0", 4), (2, "r5", 4)]
        );
        // One id, whoever asks.
        assert!(std::ptr::eq(interned("r5"), interned(&String::from("r5"))));
    }

    #[test]
    fn a_token_is_accepted_only_whole() {
        let id: [u8; 16] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(9));
        for index in [0, 7, 10, 99_999, usize::MAX] {
            let token = token_of(index, &id);
            assert!(is_token_of(&token, index, &id), "{token}");
            assert!(!is_token_of(&token[..token.len() - 1], index, &id));
            assert!(!is_token_of(&format!("{token}0"), index, &id));
            assert!(!is_token_of(&token.to_uppercase(), index, &id));
            assert!(!is_token_of(&token, index ^ 1, &id));
            let mut other = id;
            other[15] ^= 1;
            assert!(!is_token_of(&token, index, &other));
        }
        // The index as the endpoint_index parse also reads it, but not as written.
        let token = token_of(7, &id);
        assert!(!is_token_of(
            &token.replacen("bwe_7_", "bwe_07_", 1),
            7,
            &id
        ));
        assert!(!is_token_of(
            &token.replacen("bwe_7_", "bwe_+7_", 1),
            7,
            &id
        ));
    }

    fn envelope(keys: &Keys, version: u64) -> Vec<u8> {
        let text = "rule\n  id \"r\"\n  title \"t\"\n  author \"a\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"m\"\n  ret\nend\n";
        let pack = bulwark_interpreter::text::asm(text).unwrap();
        bulwark_loader_boot_guard::seal(
            &keys.release_secret(),
            1,
            version,
            bulwark_interpreter::schema_hash(),
            &pack,
        )
        .unwrap()
    }

    /// The release is compared with the one the fleet completed before it: without a baseline,
    /// the crashes every fleet has anyway were counted against the release alone (a good release
    /// halted at 100,000 endpoints, 5 crashes in its third wave against 0 on a baseline that
    /// could not have any).
    #[test]
    fn a_release_started_after_a_completed_one_has_it_as_its_baseline() {
        let keys = Keys::from_seed(1);
        let (one, two) = (envelope(&keys, 1), envelope(&keys, 2));
        let mut s = SimServer::new(keys, "stable", 1_800_000_000).unwrap();
        s.publish(1, &one).unwrap();
        s.completed(1).unwrap();
        assert!(matches!(
            s.rollout_state().unwrap().status,
            bulwark_rollout::Status::Complete { .. }
        ));
        s.publish(2, &two).unwrap();
        s.start(2, Plan::default_plan()).unwrap();
        let state = s.rollout_state().unwrap();
        assert_eq!(state.release.version, 2);
        assert_eq!(state.baseline_version, Some(1));
    }
}
