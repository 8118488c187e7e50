//! Bulwark's progressive delivery, as a pure model: which endpoints get a content release when,
//! how the evidence from the first ones is judged, and when the rollout stops by itself.
//!
//! On 19 July 2024 CrowdStrike's Channel File 291 reached every online machine within 78 minutes:
//! no canary, no rings, no signal that stopped it. This crate is the part of Bulwark that exposes
//! a release to a few machines first, sees it go bad, and stops (and sends those machines back to
//! their last-known-good content).
//!
//! It is **pure and deterministic**: no I/O, no clock (time is a [`Timestamp`] argument), no
//! randomness except a keyed hash. The server (controller), the endpoint service and the fleet
//! simulator all call the same functions, so what the server expects an endpoint to do is what
//! the endpoint does.
//!
//! # Modules
//!
//! * [`time`]: [`Timestamp`], seconds since the Unix epoch, saturating arithmetic.
//! * [`channel`], [`release`]: a [`Channel`] (`critical` ones cannot be paused by endpoints) and
//!   a [`Release`] on it (version, pack and envelope hashes).
//! * [`plan`]: a [`Plan`] of [`Wave`]s (cumulative fraction in parts per million, bake time,
//!   healthy confirmations needed), validation with the failing wave named, the default plan
//!   (0.1%, 1%, 10%, 50%, 100%; bake 2 h, 6 h, 12 h, 24 h, 24 h; 30 to 10,000 confirmations by the
//!   rule of three) and an expedited one, and [`Plan::check_fleet`] for fleets too small for it.
//! * [`endpoint`]: [`EndpointId`], [`EndpointFacts`] (OS build, hardware class, host group) and
//!   the [`Stratum`] (OS build x hardware class).
//! * [`position`]: an endpoint's position in a channel's order, uniform in `[0, 10^6)`, from
//!   SHA-256 keyed by the channel's name.
//! * [`census`]: the server's [`Census`]: each stratum's sorted positions.
//! * [`thresholds`]: [`WaveThresholds::compute`]: per wave and stratum, the position below which
//!   an endpoint is in; each wave holds its fraction of *every* stratum, and every stratum has an
//!   endpoint from the first wave with room (a release that crashes one Windows build is seen in
//!   the first wave). Endpoints decide their wave themselves from these signed thresholds.
//! * [`policy`]: [`Policy`] (`Ga`, `Early`, `Pause`, `Delay` 0-72 h, `Pin` until expiry) and the
//!   [`PolicyTable`] by (host group, channel) with a default; `Pause` on a critical channel is a
//!   validation error; pins lapse to `Ga` on their own and are reported while active.
//! * [`state`]: the signed, fetched [`ChannelRollout`] (release, plan, baseline version, wave
//!   opening times, open waves, [`Status`], `revert`, a revision) and [`RolloutState`].
//! * [`decision`]: [`decide`], an endpoint's [`Decision`]: `Run`, `Stay` (with the reason),
//!   `RevertToLastKnownGood`, `Pinned`.
//! * [`observations`]: per endpoint [`EndpointRecord`]s (silence after staging counts as failure)
//!   aggregated into [`CohortObservations`]; [`HealthObservations`] for one controller step.
//! * [`stats`]: exact binomial, Poisson and hypergeometric tails in log space.
//! * [`health`]: [`analyze`]: each open wave's cohort against the baseline cohort, every result a
//!   [`TestVerdict`] with its numbers and a reason.
//! * [`controller`]: [`step`] (open the next wave, halt, or hold) and the operator's commands
//!   [`start`], [`pause`], [`resume`], [`halt`], [`revert`].
//!
//! # How a rollout runs
//!
//! [`start`] opens the first wave. Each [`step`] analyses the open waves' health: a failed test
//! halts the rollout at once with `revert = true`, so every endpoint that runs the release goes
//! back to its guard's last-known-good (no new pack needed). Otherwise the next wave opens only
//! when the newest wave has baked its full time **and** has `min_healthy` confirmed healthy boots
//! or hot updates **and** no test holds (a weak signal or missing data). A step opens at most one
//! wave; after the last wave bakes healthy the rollout is complete and its release becomes the
//! next rollout's baseline. A paused rollout starts nobody and opens nothing, but still halts on
//! a failure. A halted release is never a baseline.
//!
//! # Health tests and thresholds
//!
//! Details and justification in [`health`]. In short: crash-counted guard events, reverts and
//! quarantines per endpoint-hour by the exact conditional binomial test of two Poisson rates
//! (valid with a zero baseline: 3 crashes in 100 canaries against none in 10,000 give
//! `p ≈ 1e-6`); endpoints silent past a one-hour timeout after staging by Fisher's exact test
//! against the baseline's silence (a crashed machine cannot report, so silence is failure);
//! quarantines against an absolute ceiling (2 in any wave up to 20,000 endpoints, one in 10,000
//! above); refusals of the release by the endpoints' own verifier or loader against a ceiling of
//! one in any wave up to 10,000 endpoints; each rule's detections against 10x its baseline rate (conditional binomial), or a new
//! rule's against 0.01 per endpoint-hour (exact Poisson), from 20 detections up. The false-halt
//! probability of one evaluation is `1e-4`, split between the safety and storm families and by
//! Bonferroni over every test of each (every rule counts); `p < 1e-2` on the same split holds the
//! rollout without halting it. With hourly evaluations through the default plan's 68 hours a good
//! release is halted with probability below 0.7% even if the evaluations were independent.
//!
//! # Tests
//!
//! Every test was seen to fail against a deliberately broken implementation.
//! * `stats` unit tests: every tail (both branches) against exact values computed with Python's
//!   `fractions` and `decimal` (scipy is not available here).
//! * `tests/controller.rs`: a wave opens only after bake time *and* confirmations (each alone is
//!   not enough, one second short is not enough); missing or foreign data holds; halts on 3
//!   crashes in 100 canaries against none in 10,000 (with the exact p-value and threshold
//!   recorded), on endpoints silent after staging (from raw endpoint records), on a 50x detection
//!   storm and on a new rule's storm, on 2 quarantines; no halt at 5x, at one quarantine, below 20
//!   detections, before the silence timeout; 1000 noisy good releases give at most 3 false halts
//!   (designed 0.1 expected); the safety tests' p-values are valid under the null at 1-50%;
//!   a simulated 100,000-endpoint fleet stepped hourly completes the default plan in 68-74 hours;
//!   every operator command and its refusals; the state's JSON round trip.
//! * `tests/decision.rs`: every policy (`Ga`, `Early`, `Pause`, `Delay` 0/24/72 h at their
//!   boundaries, `Pin` active and expired) in progressing, paused, halted with and without
//!   revert, and complete rollouts; `Pause` on a critical channel; inconsistent inputs fail closed.
//! * `tests/policy.rs`: `Pause` refused on critical channels (entry and default), precise
//!   validation errors, resolution, pin expiry and reporting.
//! * `tests/stratification.rs`: 100,000 endpoints in 7 OS builds (one of 30 machines) x 4
//!   hardware classes: the 0.1% wave holds all 28 strata (a plain threshold would not), each wave
//!   within one endpoint per stratum of its fraction, each stratum at its own fraction, membership
//!   monotonic; unknown strata and newcomers; 30 random fleets and plans keep every property.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod census;
pub mod channel;
pub mod controller;
pub mod decision;
pub mod endpoint;
pub mod health;
pub mod hex;
pub mod observations;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod position;
pub mod release;
pub mod state;
pub mod stats;
pub mod thresholds;
pub mod time;

pub use census::Census;
pub use channel::Channel;
pub use controller::{halt, pause, resume, revert, start, step, step_with, ControllerEvent};
pub use decision::{decide, decide_placed, decide_validated, Decision, StayReason};
pub use endpoint::{EndpointFacts, EndpointId, Stratum};
pub use health::{analyze, HealthConfig, HealthReport, Outcome, TestVerdict};
pub use observations::{CohortObservations, EndpointRecord, HealthObservations};
pub use observe::{
    observe, CohortPart, EndpointReports, GuardReport, GuardReportKind, Heard, Observer,
};
pub use plan::{Plan, Wave};
pub use policy::{Policy, PolicyTable};
pub use position::Placement;
pub use release::Release;
pub use state::{ChannelRollout, HaltRecord, RolloutState, Status};
pub use thresholds::WaveThresholds;
pub use time::Timestamp;
