//! The simulation: a deterministic discrete-event run of a fleet in which every endpoint runs the
//! endpoint service's real agent core (`bulwark_service::agent::Agent`, memory storage) over the
//! real guard, loader and verifier ([`crate::machine`], reached through [`crate::link::SimLink`]),
//! against the real rollout controller and signed metadata ([`crate::server`]).
//!
//! The fleet runs the previous release (version 1, last-known-good everywhere) until the
//! scenario's release (version 2) is published and its rollout started. Machines follow their
//! on-line schedule ([`crate::fleet::OnlineSchedule`]): powered on (the guard's boot decision,
//! then the service's first step after the boot time), shut down cleanly at the end of an
//! interval. A release that crashes a machine does so when the machine loads it: at a hot stage
//! (the service's stage request) or at a boot that chooses it, with the scenario's probability
//! per load; a crashed machine reboots after the boot time, and the guard counts the failed boot.
//! Baseline crashes unrelated to content come as a Poisson process. The controller steps every
//! `controller_tick_secs`; a sample of the fleet is taken every [`SAMPLE_MINUTES`].
//!
//! Processes start at the fleet's rate and at each boot ([`crate::activity`]); a release with a
//! rule that fires on every process (`fp-storm`, `block-storm`) raises a detection for each,
//! through the driver's real block safety net, and the agent reports them. Power cuts hit the
//! machines' storage at the scenario's rate (after an install without faults).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bulwark_distribution::MetadataMemo;
use bulwark_loader_boot_guard::{Config as GuardConfig, TrustedKeys};
use bulwark_rollout::controller::ControllerEvent;
use bulwark_rollout::Status;
use bulwark_service::agent::{Agent, AgentConfig, Clock, EnvelopeMemo, FieldVisitor, Random};
use bulwark_service::storage::{MemoryStorage, SharedDocuments};

use crate::activity::{Activity, Running, StormRule, RULES};
use crate::agenda::Agenda;
use crate::fleet::{Endpoint, OnlineSchedule, DAY};
use crate::http::{Client, HttpServer};
use crate::link::{Node, SimLink};
use crate::machine::Machine;
use crate::outcome::{EndpointTally, Outcome, Sample, Timeline, WaveStats};
use crate::rng::{Purpose, Rng};
use crate::scenario::{Behaviour, Scenario};
use crate::server::{Keys, ServerError, SimServer, SimSink, SimSource};

/// Minutes between samples of the fleet.
pub const SAMPLE_MINUTES: u64 = 10;
/// The simulation's epoch (seconds since 1970): any fixed time works.
const EPOCH: u64 = 1_800_000_000;
/// The previous release's version, and the scenario's.
const PREVIOUS: u64 = 1;
const RELEASE: u64 = 2;

/// The shared simulated clock.
#[derive(Clone)]
struct SimClock(Rc<Cell<u64>>);

impl Clock for SimClock {
    fn now(&self) -> u64 {
        self.0.get()
    }
}

/// The agent's jitter from the endpoint's own stream.
struct SimRandom(Rng);

impl Random for SimRandom {
    fn below_or_eq(&mut self, max: u64) -> u64 {
        self.0.below_or_eq(max)
    }
}

type SimAgent = Agent<SimLink, SimSource, SimSink, SimClock, SimRandom, MemoryStorage>;
type HttpAgent = Agent<SimLink, Client, Client, SimClock, SimRandom, MemoryStorage>;

/// The secret the agents present at enrollment.
const ENROLLMENT_SECRET: &str = "simulated-enrollment-secret";

/// How the endpoints reach the rollout server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The server model in process ([`SimServer`]): deterministic, and fast enough for a
    /// fleet of 100,000.
    InProcess,
    /// The real `bulwark-server` over TLS on loopback, and the service's HTTPS client
    /// ([`crate::http`]): at most [`crate::http::MAX_ENDPOINTS`] endpoints, not reproducible
    /// byte for byte (the server draws endpoint ids).
    Http,
}

/// The rollout server of a run.
enum Backend {
    InProcess(Rc<RefCell<SimServer>>),
    Http(Box<HttpServer>),
}

impl Backend {
    fn set_now(&self, now: u64) {
        match self {
            Backend::InProcess(s) => s.borrow_mut().now = now,
            Backend::Http(s) => s.set_now(now),
        }
    }

    fn publish(&mut self, version: u64, envelope: &[u8]) -> Result<(), ServerError> {
        match self {
            Backend::InProcess(s) => s.borrow_mut().publish(version, envelope),
            Backend::Http(s) => s.publish(version, envelope),
        }
    }

    fn start(&mut self, version: u64, plan: bulwark_rollout::Plan) -> Result<(), ServerError> {
        match self {
            Backend::InProcess(s) => s.borrow_mut().start(version, plan),
            Backend::Http(s) => s.start(version, &plan),
        }
    }

    fn completed(&mut self, version: u64) -> Result<(), ServerError> {
        match self {
            Backend::InProcess(s) => s.borrow_mut().completed(version),
            Backend::Http(s) => s.completed(version),
        }
    }

    fn tick(&mut self, now: u64) -> Result<Vec<ControllerEvent>, ServerError> {
        match self {
            Backend::InProcess(s) => s.borrow_mut().tick(now),
            Backend::Http(s) => s.tick(now),
        }
    }

    /// Asks for what the server holds of endpoint `index` (see [`Sim::touch_ahead`]).
    fn touch(&self, index: usize) {
        if let Backend::InProcess(s) = self {
            if let Ok(s) = s.try_borrow() {
                s.touch(index);
            }
        }
    }

    /// The rollout and its waves' thresholds.
    fn rollout(
        &self,
    ) -> Result<
        Option<(
            bulwark_rollout::ChannelRollout,
            bulwark_rollout::WaveThresholds,
        )>,
        ServerError,
    > {
        match self {
            Backend::InProcess(s) => {
                let s = s.borrow();
                Ok(s.rollout_state().cloned().zip(s.thresholds().cloned()))
            }
            Backend::Http(s) => s.rollout(),
        }
    }
}

/// Asks the processor to bring the cache line holding the start of `x` closer, without waiting
/// for it (a hint: nothing is read, nothing can fault).
pub(crate) fn prefetch<T>(x: &T) {
    prefetch_index::prefetch_index(core::slice::from_ref(x), 0);
}

/// Asks the processor for every cache line `x` spans, as [`prefetch`] asks for its first.
pub(crate) fn prefetch_lines<T>(x: &T) {
    const LINE: usize = 64;
    let start = core::ptr::from_ref(x) as usize;
    let end = start.saturating_add(core::mem::size_of::<T>());
    // Each line's address as an offset from a byte of this frame: a prefetch reads nothing and
    // cannot fault wherever it points, and the offset arithmetic wraps rather than overflows.
    let anchor = [0u8; 1];
    let from = anchor.as_ptr() as usize;
    let mut line = start & !(LINE - 1);
    while line < end {
        prefetch_index::prefetch_index(&anchor[..], line.wrapping_sub(from));
        line += LINE;
    }
}

/// Asks for each field an agent shows (see [`Sim::touch_ahead`]), every line of it.
struct Prefetch;

impl FieldVisitor for Prefetch {
    fn field<F>(&mut self, field: &F) {
        prefetch_lines(field);
    }
}

/// An endpoint's agent, over the run's transport.
// The in-process agent is kept inline (100,000 of them, stepped in turn); the few HTTP ones are
// boxed.
#[allow(clippy::large_enum_variant)]
enum FleetAgent {
    InProcess(SimAgent),
    Http(Box<HttpAgent>),
}

impl FleetAgent {
    /// One step; the seconds until the next.
    fn step(&mut self) -> u64 {
        match self {
            FleetAgent::InProcess(a) => {
                let wait = a.step();
                a.log.clear();
                wait
            }
            FleetAgent::Http(a) => {
                let wait = a.step();
                a.log.clear();
                wait
            }
        }
    }

    /// The id the server gave it at enrollment.
    fn endpoint_id(&self) -> Option<[u8; 16]> {
        let state = match self {
            FleetAgent::InProcess(a) => a.state(),
            FleetAgent::Http(a) => a.state(),
        };
        bulwark_rollout::hex::decode::<16>(&state.enrolled.as_ref()?.endpoint_id).ok()
    }

    /// Its index at the in-process server, which its token names (`bwe_{index}_{id}`).
    fn server_index(&self) -> Option<u32> {
        let FleetAgent::InProcess(a) = self else {
            return None;
        };
        let index = crate::server::index_named_by(&a.state().enrolled.as_ref()?.token)?;
        u32::try_from(index).ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// A new day: plan every endpoint's on-line intervals.
    Day(u64),
    /// The release is published and its rollout started.
    Release,
    /// The controller steps.
    Tick,
    /// A sample of the fleet.
    Sample,
    /// Power on (the epoch of the node when scheduled).
    PowerOn(u32),
    /// Clean shutdown at the end of an on-line interval.
    PowerOff(u32),
    /// The service's next step.
    Step(u32),
    /// The machine crashes (its index, with [`BASELINE_CRASH`] set for a crash unrelated to
    /// content).
    Crash(u32),
}

/// The bit of [`Ev::Crash`] that marks a baseline crash; the rest is the endpoint's index.
const BASELINE_CRASH: u32 = 0x8000_0000;

struct EndpointSim {
    facts: bulwark_rollout::EndpointFacts,
    /// Whether the release ran on it at least once.
    ran_release: bool,
    node: Rc<RefCell<Node>>,
    agent: FleetAgent,
    /// Whether `facts.id` is the one the server gave (an HTTP run learns it at enrollment).
    id_known: bool,
    /// Bumped whenever the machine goes down: events scheduled before are stale.
    epoch: u32,
    /// Its index at the in-process server, once enrolled (`u32::MAX` before; beside `epoch`, which
    /// the look-ahead reads with it).
    server_index: u32,
    schedule: OnlineSchedule,
    /// Whether the release crashes this machine at a load (drawn per load).
    fate: Rng,
    affected: bool,
    on_until: u64,
    release_crashes: u64,
    baseline_crashes: u64,
    life: Rng,
    /// Its processes, and what the sensor does with them.
    activity: Activity,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The server model refused.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// An agent could not be opened.
    #[error("agent: {0}")]
    Agent(String),
    /// `--transport http` cannot run this.
    #[error("--transport http: {0}")]
    Http(String),
    /// False halts are counted over good releases only.
    #[error(
        "--releases counts false halts of good releases; scenario {0:?}'s release is not good"
    )]
    NotGood(String),
}

/// What a sample of the fleet counts, kept up to date as endpoints change (each endpoint's part
/// is counted again after each of its events) instead of counted over the whole fleet at each
/// sample: at 100,000 endpoints that count read three records of each (its node, its machine
/// and its guard's state), 5% of a `good` run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    online: u64,
    on_release: u64,
    on_previous: u64,
    release_crashes: u64,
    baseline_crashes: u64,
}

/// What [`Counts`] holds of one endpoint: whether it is up, and which release its content is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counted {
    up: bool,
    on_release: bool,
    on_previous: bool,
}

impl Counted {
    fn of(e: &EndpointSim) -> Counted {
        let n = e.node.borrow();
        let version = n.machine.content().map(|c| c.version);
        Counted {
            up: n.machine.is_up(),
            on_release: version == Some(RELEASE),
            on_previous: version == Some(PREVIOUS),
        }
    }
}

impl Counts {
    /// Moves one endpoint from `was` to `is`.
    fn recount(&mut self, was: Counted, is: Counted) {
        let mv = |n: &mut u64, was: bool, is: bool| {
            *n = *n + u64::from(is) - u64::from(was);
        };
        mv(&mut self.online, was.up, is.up);
        mv(&mut self.on_release, was.on_release, is.on_release);
        mv(&mut self.on_previous, was.on_previous, is.on_previous);
    }
}

/// A run of `scenario` seeded with `seed`.
pub struct Sim {
    scenario: Scenario,
    seed: u64,
    clock: Rc<Cell<u64>>,
    backend: Backend,
    keys: Rc<TrustedKeys>,
    fleet: Vec<EndpointSim>,
    agenda: Agenda<(Ev, u32)>,
    release_envelope: Vec<u8>,
    timeline: Timeline,
    first_crash: Option<u64>,
    /// The release's rule that fires on every process creation (`fp-storm`, `block-storm`).
    storm: Option<StormRule>,
    /// The fleet's counts, and each endpoint's part in them (`counted[i]` is `fleet[i]`'s).
    counts: Counts,
    counted: Vec<Counted>,
}

fn envelope(secret: &[u8; 32], version: u64, storm: Option<StormRule>) -> Vec<u8> {
    let mut text = String::new();
    // The same ordinary rules in every version: their detections on a release are compared with
    // theirs on the baseline.
    for r in 0..RULES {
        text.push_str(&format!(
            "rule\n  id \"sim-rule-{r}\"\n  title \"simulated rule {r}\"\n  author \"bulwark sim\"\n  level medium\n  action alert\n  event process_creation\n  str.contains CommandLine \"sim-marker-{r}\"\n  ret\nend\n"
        ));
    }
    if let Some(s) = storm {
        let action = if s.block { "block" } else { "alert" };
        text.push_str(&format!(
            "rule\n  id \"sim-{version}-storm\"\n  title \"matches every process\"\n  author \"bulwark sim\"\n  level high\n  action {action}\n  event process_creation\n  str.contains Image \".exe\"\n  ret\nend\n"
        ));
    }
    let pack = bulwark_interpreter::text::asm(&text).unwrap_or_default();
    bulwark_loader_boot_guard::seal(
        secret,
        1,
        version,
        bulwark_interpreter::schema_hash(),
        &pack,
    )
    .unwrap_or_default()
}

impl Sim {
    /// Sets up the fleet (in process): every machine running the previous release as
    /// last-known-good, every agent enrolled.
    pub fn new(scenario: &Scenario, seed: u64) -> Result<Sim, SimError> {
        Sim::with_transport(scenario, seed, Transport::InProcess)
    }

    /// [`Sim::new`] over `transport`.
    pub fn with_transport(
        scenario: &Scenario,
        seed: u64,
        transport: Transport,
    ) -> Result<Sim, SimError> {
        let clock = Rc::new(Cell::new(EPOCH));
        let keys = Keys::from_seed(seed);
        let secret = keys.release_secret();
        // Every agent verifies the same signed metadata, and every machine's guard opens the same
        // envelopes: each distinct check is done once for the fleet (the same answer for the same
        // bytes; a damaged copy is another message, checked afresh).
        let metadata_memo = MetadataMemo::shared();
        // And every agent saves the same trust state: held once for the fleet.
        let documents = SharedDocuments::default();
        let trusted = Rc::new(
            EnvelopeMemo::new(metadata_memo.clone()).attach(
                TrustedKeys::new(&[keys.release_public()])
                    .map_err(|e| SimError::Agent(e.to_string()))?,
            ),
        );
        let health = if scenario.rollout.health_analysis {
            scenario.rollout.health.clone()
        } else {
            // No analysis (July 2024): nothing halts or holds a wave; bake times alone.
            bulwark_rollout::HealthConfig {
                alpha_halt: 0.0,
                alpha_hold: 0.0,
                storm_min_count: u64::MAX,
                quarantine_floor: u64::MAX,
                rejection_floor: u64::MAX,
                ..scenario.rollout.health.clone()
            }
        };
        let mut backend = match transport {
            Transport::InProcess => {
                let mut server = SimServer::new(keys, "stable", EPOCH)?;
                server.set_health(health);
                Backend::InProcess(Rc::new(RefCell::new(server)))
            }
            Transport::Http => {
                if scenario.fleet.endpoints > crate::http::MAX_ENDPOINTS {
                    return Err(SimError::Http(format!(
                        "{} endpoints; an HTTP run takes at most {} (each is a real agent with its own TLS connection): pass --endpoints",
                        scenario.fleet.endpoints,
                        crate::http::MAX_ENDPOINTS
                    )));
                }
                if health != bulwark_rollout::HealthConfig::default() {
                    return Err(SimError::Http(format!(
                        "scenario {:?} sets its own health analysis (rollout.health or health_analysis = false); bulwark-server runs the default one",
                        scenario.name
                    )));
                }
                Backend::Http(Box::new(HttpServer::launch(
                    keys,
                    EPOCH,
                    ENROLLMENT_SECRET,
                )?))
            }
        };
        let storm = match scenario.release.behaviour {
            Behaviour::FpStorm | Behaviour::BlockStorm => Some(StormRule {
                version: RELEASE,
                rule_index: RULES,
                block: scenario.release.behaviour == Behaviour::BlockStorm,
            }),
            _ => None,
        };
        let previous = envelope(&secret, PREVIOUS, None);
        let release_envelope = envelope(&secret, RELEASE, storm);
        backend.publish(PREVIOUS, &previous)?;
        // The previous release went to the whole fleet and completed: the baseline.
        backend.completed(PREVIOUS)?;
        let r = &scenario.rollout;
        let guard = GuardConfig {
            channel: 1,
            threshold: r.threshold,
            stable_secs: r.stable_secs,
        };
        let (root, release_public) = match &backend {
            Backend::InProcess(s) => {
                let s = s.borrow();
                (s.root().to_owned(), s.keys().release_public())
            }
            Backend::Http(s) => (s.root().to_owned(), s.keys().release_public()),
        };
        // The previous release, installed and blessed before the simulation starts (the
        // installer checks what it installed: no faults here), alike on every machine: installed
        // once, copied to each, then power cuts from now on.
        let mut installed = Machine::for_endpoint(guard, seed, u64::MAX, 0.0, 0.0);
        installed.boot(&trusted, EPOCH);
        let _ = installed.stage(&trusted, &previous, true, EPOCH);
        let _ = installed.confirm_healthy(EPOCH);
        installed.shutdown(EPOCH);
        let _ = installed.take_events();
        // Its size known: no room to spare (an endpoint is about 1.5 KB here) and no copy as it
        // grows.
        let mut fleet = Vec::with_capacity(usize::try_from(scenario.fleet.endpoints).unwrap_or(0));
        for index in 0..u32::try_from(scenario.fleet.endpoints).unwrap_or(u32::MAX) {
            let e = Endpoint::generate(scenario, seed, index);
            let facts = e.facts(scenario);
            let machine = Machine::installed_like(
                &installed,
                seed,
                u64::from(index),
                scenario.faults.power_cut_per_write,
                scenario.faults.torn_share,
            );
            let node = Rc::new(RefCell::new(Node::new(machine)));
            // The link flags every hot stage of the release; whether it crashes is drawn here.
            node.borrow_mut().crashes_on = Some(RELEASE);
            let config = AgentConfig {
                channel: "stable".into(),
                channel_number: 1,
                enrollment_secret: ENROLLMENT_SECRET.into(),
                os_build: facts.os_build.clone(),
                hw_class: facts.hw_class.clone(),
                host_group: facts.host_group.clone(),
                release_keys: vec![release_public],
                root: root.clone(),
                heartbeat_secs: scenario.fleet.heartbeat_secs,
                health_window_secs: r.health_window_secs,
                backoff_base_secs: 30,
                backoff_max_secs: 900,
                spool_max_bytes: 1 << 20,
                hot: r.stage_hot,
                health_requires_events: true,
                metadata_memo: metadata_memo.clone(),
            };
            let link = SimLink::new(node.clone(), trusted.clone());
            let clock = SimClock(clock.clone());
            let random = SimRandom(Rng::stream(seed, u64::from(index), Purpose::Agent));
            let agent = match &backend {
                Backend::InProcess(server) => FleetAgent::InProcess(
                    Agent::with_storage(
                        config,
                        MemoryStorage::sharing(documents.clone()),
                        link,
                        SimSource(server.clone()),
                        SimSink {
                            server: server.clone(),
                            facts: facts.clone(),
                        },
                        clock,
                        random,
                    )
                    .map_err(|e| SimError::Agent(e.to_string()))?,
                ),
                Backend::Http(server) => {
                    let client = server
                        .client()
                        .map_err(|e| SimError::Agent(e.to_string()))?;
                    FleetAgent::Http(Box::new(
                        Agent::with_storage(
                            config,
                            MemoryStorage::sharing(documents.clone()),
                            link,
                            client.clone(),
                            client,
                            clock,
                            random,
                        )
                        .map_err(|e| SimError::Agent(e.to_string()))?,
                    ))
                }
            };
            fleet.push(EndpointSim {
                facts,
                ran_release: false,
                node,
                agent,
                id_known: transport == Transport::InProcess,
                epoch: 0,
                server_index: u32::MAX,
                schedule: OnlineSchedule::new(seed, index),
                fate: Rng::stream(seed, u64::from(index), Purpose::Release),
                affected: e.affected(scenario),
                on_until: 0,
                release_crashes: 0,
                baseline_crashes: 0,
                life: Rng::stream(seed ^ 0x5eed, u64::from(index), Purpose::Life),
                activity: Activity::new(Rng::stream(seed, u64::from(index), Purpose::Detections)),
            });
        }
        let timeline = Timeline {
            endpoints: scenario.fleet.endpoints,
            sample_minutes: SAMPLE_MINUTES,
            release_start_minute: scenario.release.start_minute,
            halt_minute: None,
            halt_reason: None,
            samples: Vec::new(),
            waves: Vec::new(),
        };
        let counted = vec![Counted::default(); fleet.len()];
        let mut sim = Sim {
            scenario: scenario.clone(),
            seed,
            clock,
            backend,
            keys: trusted,
            fleet,
            agenda: Agenda::new(EPOCH),
            release_envelope,
            timeline,
            first_crash: None,
            storm,
            counts: Counts::default(),
            counted,
        };
        for i in 0..sim.fleet.len() {
            sim.recount(i);
        }
        sim.push(EPOCH, Ev::Day(0), 0);
        sim.push(EPOCH + scenario.release.start_minute * 60, Ev::Release, 0);
        sim.push(EPOCH, Ev::Tick, 0);
        sim.push(EPOCH, Ev::Sample, 0);
        Ok(sim)
    }

    /// `releases` good releases, each a run of `scenario` (whose release must be `good`) with
    /// its own seed (`seed`, `seed + 1`, ...): the first run's outcome and time series, with
    /// `false_halts`, how many of them the controller halted against the fleet's noise (baseline
    /// crashes and detections).
    pub fn run_releases(
        scenario: &Scenario,
        seed: u64,
        releases: u64,
        transport: Transport,
    ) -> Result<(Outcome, Timeline), SimError> {
        if scenario.release.behaviour != Behaviour::Good {
            return Err(SimError::NotGood(scenario.name.clone()));
        }
        let mut first = None;
        let mut halts = 0;
        for k in 0..releases.max(1) {
            let (outcome, timeline) =
                Sim::with_transport(scenario, seed.wrapping_add(k), transport)?
                    .run_with_timeline()?;
            halts += u64::from(outcome.halted);
            if first.is_none() {
                first = Some((outcome, timeline));
            }
        }
        let (mut outcome, timeline) = first.ok_or(SimError::NotGood(scenario.name.clone()))?;
        outcome.false_halts = Some(halts);
        outcome.releases = Some(releases.max(1));
        Ok((outcome, timeline))
    }

    fn push(&mut self, at: u64, ev: Ev, epoch: u32) {
        self.agenda.push(at, (ev, epoch));
    }

    fn crash_fate(&mut self, i: usize) -> bool {
        let behaviour = self.scenario.release.behaviour;
        let p = self.scenario.release.probability;
        let Some(e) = self.fleet.get_mut(i) else {
            return false;
        };
        matches!(
            behaviour,
            Behaviour::CrashOnLoad | Behaviour::CrashOnHotUpdate
        ) && e.affected
            && e.fate.chance(p)
    }

    /// Runs to the end of the scenario's hours and returns what it measured.
    pub fn run(self) -> Result<Outcome, SimError> {
        self.run_with_timeline().map(|(o, _)| o)
    }

    /// [`Sim::run`], with the time series behind the report's charts.
    pub fn run_with_timeline(mut self) -> Result<(Outcome, Timeline), SimError> {
        let end = EPOCH + self.scenario.fleet.hours * 3600;
        while let Some((at, (ev, epoch))) = self.agenda.pop() {
            if at > end {
                break;
            }
            self.next(at, ev, epoch)?;
        }
        let outcome = self.outcome()?;
        Ok((outcome, self.timeline))
    }

    /// The next event, `ev` at `at`, taken from the agenda.
    fn next(&mut self, at: u64, ev: Ev, epoch: u32) -> Result<(), SimError> {
        self.touch_ahead();
        self.clock.set(at);
        self.event(at, ev, epoch)?;
        if let Ev::PowerOn(i) | Ev::PowerOff(i) | Ev::Step(i) | Ev::Crash(i) = ev {
            // An endpoint's state changes only at its own events.
            self.recount((i & !BASELINE_CRASH) as usize);
        }
        Ok(())
    }

    /// Reads a little of the state the next events will use, so that its cache misses overlap
    /// this event's instead of following them: the endpoint of the event after next, and the
    /// node of the next one (whose endpoint the previous call read). At 100,000 endpoints each
    /// step's first reads of its endpoint, its node and its guard were a quarter of a run.
    ///
    /// And, without waiting (prefetches): four events ahead, the line of the endpoint's record
    /// that says where its agent is, whose address needs nothing read (reading it three events
    /// ahead waited on memory: a quarter of the engine loop's own samples at 40,000 endpoints);
    /// three events ahead, every field of the agent a step reads ([`Agent::show_fields`]); two
    /// ahead, what they point to (the bearer token its heartbeat is sent with, which the server
    /// reads; the spool's messages, where the heartbeat is pushed; the versions reverted and
    /// rejected, which a decision is checked against; the channel's and host group's names,
    /// which it looks its rollout and policy up by), its node, and the server's record of it
    /// (its index there, learned from its token, is read beside its epoch); for the next event,
    /// its guard's state, found through the node. Those misses were about a seventh of a `good`
    /// run, and the agent's fields another tenth.
    fn touch_ahead(&self) {
        let endpoint = |n: usize| match self.agenda.peek_after_next(n) {
            Some((Ev::Step(i) | Ev::PowerOn(i) | Ev::PowerOff(i), _)) => self.fleet.get(i as usize),
            _ => None,
        };
        if let Some(e) = endpoint(3) {
            prefetch(&e.agent);
        }
        if let Some(FleetAgent::InProcess(a)) = endpoint(2).map(|e| &e.agent) {
            a.show_fields(&mut Prefetch);
        }
        if let Some(e) = endpoint(1) {
            std::hint::black_box(e.epoch);
            prefetch(&*e.node);
            self.backend.touch(e.server_index as usize);
            if let FleetAgent::InProcess(a) = &e.agent {
                if let Some(enrolled) = &a.state().enrolled {
                    prefetch_index::prefetch_index(enrolled.token.as_bytes(), 0);
                }
                prefetch(a.spool().held());
                a.show_names(&mut Prefetch);
                // What the decision is checked against when it is a release not run here.
                let state = a.state();
                if let Some(r) = state.reverted.first() {
                    prefetch(r);
                }
                if let Some(r) = state.rejections.first() {
                    prefetch(r);
                }
            }
        }
        if let Some(e) = endpoint(0) {
            if let Ok(n) = e.node.try_borrow() {
                std::hint::black_box(n.now);
                n.machine.touch();
            }
        }
    }

    fn event(&mut self, now: u64, ev: Ev, epoch: u32) -> Result<(), SimError> {
        let boot_secs = self.scenario.fleet.boot_secs;
        match ev {
            Ev::Day(day) => {
                let hours = self.scenario.fleet.online_by_hour.clone();
                for i in 0..self.fleet.len() {
                    let intervals = match self.fleet.get_mut(i) {
                        Some(e) => e.schedule.day(&hours, day),
                        None => continue,
                    };
                    let index = u32::try_from(i).unwrap_or(u32::MAX);
                    for (on, off) in intervals {
                        self.push(EPOCH + on, Ev::PowerOn(index), 0);
                        self.push(EPOCH + off, Ev::PowerOff(index), 0);
                    }
                }
                self.push(EPOCH + (day + 1) * DAY, Ev::Day(day + 1), 0);
            }
            Ev::Release => {
                self.backend.set_now(now);
                self.backend.publish(RELEASE, &self.release_envelope)?;
                let plan = self.scenario.rollout.plan();
                self.backend.start(RELEASE, plan)?;
            }
            Ev::Tick => {
                let events = self.backend.tick(now)?;
                for e in events {
                    if let ControllerEvent::Halted { record } = &e {
                        if self.timeline.halt_minute.is_none() {
                            self.timeline.halt_minute = Some((now - EPOCH) / 60);
                            self.timeline.halt_reason = Some(format!("{:?}", record.cause));
                        }
                    }
                }
                self.push(
                    now + self.scenario.rollout.controller_tick_secs.max(1),
                    Ev::Tick,
                    0,
                );
            }
            Ev::Sample => {
                self.sample(now);
                self.push(now + SAMPLE_MINUTES * 60, Ev::Sample, 0);
            }
            Ev::PowerOn(i) => {
                let idx = i as usize;
                let crash = {
                    let Some(e) = self.fleet.get_mut(idx) else {
                        return Ok(());
                    };
                    let mut n = e.node.borrow_mut();
                    if n.machine.is_up() {
                        return Ok(());
                    }
                    n.now = now;
                    n.machine.boot(&self.keys, now);
                    n.events = 0;
                    e.activity.boot(now);
                    e.epoch += 1;
                    e.on_until = e.on_until.max(now);
                    let runs = n.machine.running().map(|c| c.version) == Some(RELEASE);
                    e.ran_release |= runs;
                    runs
                };
                if self
                    .fleet
                    .get(idx)
                    .is_some_and(|e| e.node.borrow().machine.lost_power())
                {
                    // The power went again while the guard wrote its boot record.
                    self.go_down(idx, now);
                    return Ok(());
                }
                let epoch = self.fleet.get(idx).map_or(0, |e| e.epoch);
                let on_boot = self.scenario.release.behaviour == Behaviour::CrashOnLoad;
                if crash && on_boot && self.crash_fate(idx) {
                    self.push(now + 30, Ev::Crash(i), epoch);
                } else {
                    self.push(now + boot_secs, Ev::Step(i), epoch);
                }
                // Baseline crashes: the next one of this run.
                let mean = 86_400.0
                    / self
                        .scenario
                        .fleet
                        .baseline_crashes_per_endpoint_day
                        .max(1e-9);
                let next = self
                    .fleet
                    .get_mut(idx)
                    .map_or(f64::MAX, |e| e.life.exponential(mean));
                if next < 30.0 * 86_400.0 {
                    self.push(now + next as u64, Ev::Crash(i | BASELINE_CRASH), epoch);
                }
            }
            Ev::PowerOff(i) => {
                if let Some(e) = self.fleet.get_mut(i as usize) {
                    let mut n = e.node.borrow_mut();
                    if n.machine.is_up() {
                        n.machine.shutdown(now);
                        e.epoch += 1;
                    }
                }
            }
            Ev::Step(i) => {
                let idx = i as usize;
                let Some(e) = self.fleet.get_mut(idx) else {
                    return Ok(());
                };
                if e.epoch != epoch || !e.node.borrow().machine.is_up() {
                    return Ok(());
                }
                {
                    let mut n = e.node.borrow_mut();
                    n.now = now;
                    // Processes start: events flow through the sensor.
                    let running = n.machine.running().map(|c| Running {
                        version: c.version,
                        blessed: n
                            .machine
                            .guard()
                            .and_then(|g| g.state().lkg)
                            .is_some_and(|l| l == c),
                    });
                    let node = &mut *n;
                    let started = e.activity.run(
                        now,
                        self.scenario.fleet.processes_per_endpoint_hour,
                        self.scenario.fleet.baseline_detections_per_endpoint_hour,
                        running,
                        self.storm,
                        &mut node.detections,
                    );
                    node.events = node.events.saturating_add(started.max(1));
                }
                self.backend.set_now(now);
                let wait = e.agent.step();
                if !e.id_known {
                    // The server gave this endpoint its id at enrollment; its wave hashes it.
                    if let Some(id) = e.agent.endpoint_id() {
                        e.facts.id = bulwark_rollout::EndpointId(id);
                        e.id_known = true;
                    }
                }
                if e.server_index == u32::MAX {
                    e.server_index = e.agent.server_index().unwrap_or(u32::MAX);
                }
                // A hot stage of the release this step: the load that may crash the machine.
                let staged_release = {
                    let mut n = e.node.borrow_mut();
                    e.ran_release |= n.machine.running().map(|c| c.version) == Some(RELEASE);
                    std::mem::take(&mut n.crash_pending)
                };
                let epoch = e.epoch;
                if e.node.borrow().machine.lost_power() {
                    // A power cut hit one of this step's writes: the machine went down there.
                    self.go_down(idx, now);
                    return Ok(());
                }
                if staged_release && self.crash_fate(idx) {
                    self.push(now + 5, Ev::Crash(i), epoch);
                } else {
                    self.push(now + wait.max(1), Ev::Step(i), epoch);
                }
            }
            Ev::Crash(raw) => {
                let baseline = raw & BASELINE_CRASH != 0;
                let idx = (raw & !BASELINE_CRASH) as usize;
                let Some(e) = self.fleet.get_mut(idx) else {
                    return Ok(());
                };
                if e.epoch != epoch || !e.node.borrow().machine.is_up() {
                    return Ok(());
                }
                if baseline {
                    e.baseline_crashes += 1;
                    self.counts.baseline_crashes += 1;
                } else {
                    e.release_crashes += 1;
                    self.counts.release_crashes += 1;
                    if self.first_crash.is_none() {
                        self.first_crash = Some(now);
                    }
                }
                // The machine restarts by itself after a crash.
                self.go_down(idx, now);
            }
        }
        Ok(())
    }

    /// The machine goes down without a clean shutdown (a crash, or lost power) and restarts
    /// after its boot time; the guard counts the interrupted run at that boot.
    fn go_down(&mut self, idx: usize, now: u64) {
        let Some(e) = self.fleet.get_mut(idx) else {
            return;
        };
        e.node.borrow_mut().machine.crash();
        e.epoch += 1;
        let index = u32::try_from(idx).unwrap_or(u32::MAX);
        let reboot = now + self.scenario.fleet.boot_secs;
        self.push(reboot, Ev::PowerOn(index), 0);
    }

    /// Counts endpoint `i` again (after an event of its own).
    fn recount(&mut self, i: usize) {
        let (Some(e), Some(was)) = (self.fleet.get(i), self.counted.get_mut(i)) else {
            return;
        };
        let is = Counted::of(e);
        self.counts.recount(*was, is);
        *was = is;
    }

    /// The counts taken over the whole fleet, as [`Sim::counts`] must hold them.
    fn counted_over_fleet(&self) -> Counts {
        let mut c = Counts::default();
        for e in &self.fleet {
            c.recount(Counted::default(), Counted::of(e));
            c.release_crashes += e.release_crashes;
            c.baseline_crashes += e.baseline_crashes;
        }
        c
    }

    fn sample(&mut self, now: u64) {
        debug_assert_eq!(self.counts, self.counted_over_fleet());
        let c = self.counts;
        self.timeline.samples.push(Sample {
            minute: (now - EPOCH) / 60,
            online: c.online,
            on_release: c.on_release,
            on_previous: c.on_previous,
            down: 0,
            release_crashes: c.release_crashes,
            baseline_crashes: c.baseline_crashes,
            reverts: 0,
        });
    }

    fn outcome(&mut self) -> Result<Outcome, SimError> {
        let rollout = self.backend.rollout()?;
        if let Some((state, _)) = &rollout {
            self.timeline.waves = state
                .plan
                .waves
                .iter()
                .enumerate()
                .map(|(w, wave)| WaveStats {
                    name: wave.name.clone(),
                    opened_after_minutes: state.opened_at(w).map(|t| {
                        t.0.saturating_sub(EPOCH + self.scenario.release.start_minute * 60) / 60
                    }),
                    ..WaveStats::default()
                })
                .collect();
            if let Status::Halted { .. } = state.status {
                if self.timeline.halt_minute.is_none() {
                    self.timeline.halt_minute = Some(self.timeline.release_start_minute);
                }
            }
        }
        for e in &self.fleet {
            let Some(w) = rollout
                .as_ref()
                .and_then(|(_, t)| t.wave_of(&e.facts))
                .and_then(|w| self.timeline.waves.get_mut(w))
            else {
                continue;
            };
            w.endpoints += 1;
            w.exposed += u64::from(e.ran_release);
            w.crashed += u64::from(e.release_crashes > 0);
            w.crashes += e.release_crashes;
            let n = e.node.borrow();
            let state = n.machine.guard().map(|g| g.state());
            w.quarantines += u64::from(
                state.is_some_and(|s| s.quarantine().iter().any(|c| c.version == RELEASE)),
            );
        }
        let tallies: Vec<EndpointTally> = self
            .fleet
            .iter()
            .map(|e| {
                let n = e.node.borrow();
                // Unusable: no content it can run (records lost, or nothing left), or blessed
                // content whose block rule denies every process its user starts (nothing takes
                // last-known-good away without a person).
                let blessed_release = n
                    .machine
                    .guard()
                    .and_then(|g| g.state().lkg)
                    .is_some_and(|l| l.version == RELEASE)
                    && n.machine.content().is_some_and(|c| c.version == RELEASE);
                let bricked = n.machine.guard().is_none()
                    || n.machine.content().is_none()
                    || (blessed_release && e.activity.blocking_now);
                EndpointTally {
                    release_crashes: e.release_crashes,
                    bricked,
                    blocked_processes: e.activity.blocked,
                }
            })
            .collect();
        let first = self.first_crash.map(|t| {
            t.saturating_sub(EPOCH + self.scenario.release.start_minute * 60) as f64 / 60.0
        });
        let mut outcome = Outcome::from_run(
            &self.scenario.name,
            self.seed,
            self.scenario.fleet.hours,
            &self.timeline,
            &tallies,
            first,
        );
        if let Backend::Http(_) = self.backend {
            outcome.transport = "http".to_owned();
        }
        if self.storm.is_some_and(|s| s.block) {
            outcome.blocked_processes = Some(tallies.iter().map(|t| t.blocked_processes).sum());
            outcome.endpoints_with_blocks =
                Some(tallies.iter().filter(|t| t.blocked_processes > 0).count() as u64);
        }
        Ok(outcome)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The look-ahead asks for the server's record at the index each endpoint's token names:
    /// once enrolled, every endpoint knows it, and the server holds that endpoint there.
    #[test]
    fn each_endpoint_knows_its_index_at_the_server() {
        let mut scenario = crate::scenario::builtin("good").unwrap();
        scenario.fleet.endpoints = 200;
        let mut sim = Sim::new(&scenario, 7).unwrap();
        let end = EPOCH + 24 * 3600;
        while let Some((at, (ev, epoch))) = sim.agenda.pop() {
            if at > end {
                break;
            }
            sim.next(at, ev, epoch).unwrap();
        }
        let Backend::InProcess(server) = &sim.backend else {
            panic!("in process");
        };
        let server = server.borrow();
        let mut enrolled = 0;
        for e in &sim.fleet {
            let FleetAgent::InProcess(a) = &e.agent else {
                panic!("in process");
            };
            let Some(token) = a.state().enrolled.as_ref().map(|x| x.token.as_str()) else {
                assert_eq!(e.server_index, u32::MAX);
                continue;
            };
            enrolled += 1;
            let index = e.server_index as usize;
            assert!(index < sim.fleet.len(), "{token}");
            assert_eq!(server.endpoint_index_of(token).unwrap(), index, "{token}");
        }
        assert!(enrolled > 100, "{enrolled} of 200 enrolled in a day");
    }
}
