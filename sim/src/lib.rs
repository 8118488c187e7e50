//! Bulwark's fleet simulator (issue 15): a deterministic simulation of a fleet of endpoints, to
//! measure the blast radius of a bad release and show that the rollout stops it.
//!
//! # What is here
//!
//! * [`scenario`]: scenarios (TOML): the fleet (OS builds, hardware classes, host groups, when
//!   machines are on line, heartbeat interval, boot time, the baseline's crashes and detections),
//!   what the release does (good, crash on load for a stratum or for all with a probability,
//!   crash on hot update only, a detection storm, a block storm), the rollout (plan, health
//!   analysis on or off, the guard's threshold and stable period) and the storage faults
//!   injected into the guard's records. The built-in scenarios are the files in
//!   `sim/scenarios/`.
//! * [`fleet`]: each endpoint's facts (OS build, hardware class, host group, id) drawn from the
//!   scenario's shares, and when it is on line.
//! * [`machine`]: one endpoint's machine: the real boot-count guard, loader and verifier over an
//!   in-memory store with power cuts and torn writes injected.
//! * [`rng`]: deterministic randomness, one independent stream per endpoint and purpose, so the
//!   same seed gives the same run byte for byte.
//! * [`engine`]: the run: every endpoint's agent, machine and schedule as discrete events, the
//!   controller's ticks, samples, and the [`outcome::Outcome`] at the end.
//! * [`link`]: the endpoint service's driver link to a simulated machine ([`link::SimLink`]):
//!   the service's real agent core reaches the machine's guard through it.
//! * [`server`]: the rollout server in process: signed metadata, the real controller stepped on
//!   `bulwark_rollout::observe`, and the service's fetch path and reports ([`server::SimSource`],
//!   [`server::SimSink`]); and the release engineers' [`server::Desk`] (the root, and the
//!   releases metadata they sign as they publish).
//! * [`http`]: `--transport http`: the real `bulwark-server` on loopback (TLS, its SQLite store,
//!   its controller loop's body at each tick) and each endpoint's service HTTPS client, on the
//!   simulation's accelerated clock.
//! * [`activity`]: the processes a machine starts (at the fleet's rate, and a burst at each
//!   boot), the running content's ordinary detections (the baseline's noise), and a storm rule's
//!   detections through the driver's real block safety net.
//! * [`outcome`]: what a run measured (the `--json` object) and the time series behind the
//!   report's charts.
//! * [`report`]: the HTML report with SVG charts (version share over time, crashes and reverts
//!   per wave, the moment of halt), each chart also as a file of its own.
//!
//! `bulwark sim --scenario NAME_OR_FILE [--endpoints N] [--hours H] [--seed S] [--releases K]
//! [--transport inproc|http] [--json] [--report DIR]` (cli/src/sim.rs) runs it; `cargo bench -p bulwark-sim --bench goals`
//! prints every scenario against its goal (figures in `sim/BENCHMARKS.md`).
//!
//! # Speed
//!
//! The goal is 100,000 endpoints over 48 simulated hours in under 60 s on one core: the goals
//! benchmark at a80f000 took 36 to 51 s a scenario (all-at-once the slowest) on a 2.0 GHz EPYC
//! whose speed varies by a third from hour to hour (in its slowest hour seen, about 58 s), and
//! 1.9 GiB (about 20 KiB per endpoint). The fleet's agents and guards share one
//! [`bulwark_distribution::MetadataMemo`]: each distinct signature check and each distinct
//! pack's verification is done once, and each metadata file and the release keys are parsed
//! once and held once. 1,000,000 endpoints (crash-on-load, 48 hours) took 618 s and 14.4 GiB,
//! every goal met at that size. `sim/BENCHMARKS.md` has the figures.
//!
//! # Not done yet (issue 15)
//!
//! * `good`: 95% of the fleet within 24 hours is out of reach of the built-in fleet under any
//!   plan: at most 90% of its machines are on at any hour, so a tenth stays off all day, and
//!   about 93.5% is the most a release at hour 1 can reach by hour 25 (93.65% measured). On the
//!   same fleet with 97% of its machines on in office hours, the expedited plan reaches 95% in
//!   10.8 hours (`sim/BENCHMARKS.md`).
#![forbid(unsafe_code)]
// The guard's errors carry the loader's reasons (hashes included); they are returned once per
// stage, not in a loop.
#![allow(clippy::result_large_err)]

pub mod activity;
pub mod agenda;
pub mod engine;
pub mod fleet;
pub mod http;
pub mod link;
pub mod machine;
pub mod outcome;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod server;
pub mod sparse;
