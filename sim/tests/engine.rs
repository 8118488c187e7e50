//! Runs on small fleets: the real agents, guards, verifier and controller, end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bulwark_sim::engine::Sim;
use bulwark_sim::outcome::Outcome;
use bulwark_sim::scenario::Scenario;

/// A fleet of 300 with a plan made for its size: a 10% canary, then everyone.
fn scenario(behaviour: &str, health: bool) -> Scenario {
    Scenario::from_toml(&format!(
        r#"
name = "small-{behaviour}"
[fleet]
endpoints = 300
hours = 12
heartbeat_secs = 300
boot_secs = 60
baseline_crashes_per_endpoint_day = 0.0
[release]
behaviour = "{behaviour}"
probability = 1.0
start_minute = 60
[rollout]
plan = "custom"
health_analysis = {health}
controller_tick_secs = 60
health_window_secs = 300
[[rollout.waves]]
name = "canary"
fraction_ppm = 100000
bake_secs = 3600
min_healthy = 5
[[rollout.waves]]
name = "all"
fraction_ppm = 1000000
bake_secs = 3600
min_healthy = 5
"#
    ))
    .unwrap()
}

fn run(s: &Scenario, seed: u64) -> Outcome {
    Sim::new(s, seed).unwrap().run().unwrap()
}

#[test]
fn a_release_that_crashes_every_machine_is_halted_in_its_canary_and_bricks_none() {
    let o = run(&scenario("crash-on-load", true), 7);
    eprintln!("{}", o.to_json());
    assert!(o.halted, "{}", o.to_json());
    assert_eq!(o.bricked, 0);
    // Only the canary (10%, about 30 of 300) ever ran it, each at most the guard's threshold.
    let canary = &o.waves[0];
    assert_eq!(o.crashed_once, canary.crashed);
    assert!(
        o.crashed_once > 0 && o.crashed_once <= canary.endpoints,
        "{}",
        o.to_json()
    );
    assert_eq!(
        o.waves[1].exposed, 0,
        "no endpoint outside the canary ran it"
    );
    assert!(o.max_crashes_per_endpoint <= 3);
    // Halted within 15 minutes of the first crash.
    let (first, halt) = (
        o.first_crash_after_minutes.unwrap(),
        o.halt_after_minutes.unwrap(),
    );
    assert!(
        halt - first <= 15.0,
        "first crash {first} min, halt {halt} min"
    );
    // The halt names the guard's quarantines; no endpoint reports a refusal of its own.
    let reason = o.halt_reason.clone().unwrap();
    assert!(reason.contains("quarantine-ceiling"), "{reason}");
    assert!(!reason.contains("\"rejection-ceiling\""), "{reason}");
    assert_eq!(o.final_fraction_on_release, 0.0);
}

#[test]
fn without_health_analysis_nothing_halts_it_and_only_the_guard_saves_the_machines() {
    let o = run(&scenario("crash-on-load", false), 7);
    assert!(!o.halted);
    assert_eq!(o.bricked, 0, "the guard reverts every crashed machine");
    assert!(o.crashed_once > 0);
}

#[test]
fn a_good_release_is_taken_by_the_fleet_and_the_same_seed_gives_the_same_run() {
    let s = scenario("good", true);
    let o = run(&s, 11);
    assert!(!o.halted, "{}", o.to_json());
    assert_eq!((o.crashed_once, o.bricked), (0, 0));
    // Both waves opened; most of the fleet (those on line) runs it after 11 hours.
    assert!(o.waves[1].opened_after_minutes.is_some(), "{}", o.to_json());
    assert!(o.final_fraction_on_release > 0.6, "{}", o.to_json());
    assert_eq!(run(&s, 11).to_json(), o.to_json());
    assert_ne!(run(&s, 12).to_json(), o.to_json());
}

/// Power cuts at one write in twenty, half of them tearing the write: the guard keeps every
/// machine usable, and a stage that fails on a machine's own storage is retried, not reported as a
/// refusal of the release (one such report would halt a good release under the rejection
/// ceiling).
#[test]
fn power_cuts_brick_nothing_and_a_failed_write_is_no_refusal_of_a_good_release() {
    let mut s = scenario("good", true);
    s.faults.power_cut_per_write = 0.05;
    s.faults.torn_share = 0.5;
    let o = run(&s, 5);
    assert!(!o.halted, "{}", o.to_json());
    assert_eq!(o.bricked, 0, "{}", o.to_json());
    assert!(o.final_fraction_on_release > 0.6, "{}", o.to_json());
}

/// A rule that fires on every process: the canary's detections halt the release before it
/// reaches the rest of the fleet.
#[test]
fn a_detection_storm_is_halted_in_the_canary() {
    let o = run(&scenario("fp-storm", true), 3);
    assert!(o.halted, "{}", o.to_json());
    let reason = o.halt_reason.clone().unwrap();
    assert!(reason.contains("sim-2-storm"), "{reason}");
    assert_eq!(o.waves[1].exposed, 0, "{}", o.to_json());
    assert_eq!(o.bricked, 0);
}

/// A block rule that matches every process: halted while it only alerts (not yet blessed), so no
/// user process is ever denied; without the analysis the fleet blesses it and every user process
/// is denied from then on: the guard cannot see it (nothing crashes), and the driver's storm
/// limiter only stops bursts.
#[test]
fn a_block_storm_is_halted_before_it_blocks_and_without_analysis_leaves_machines_unusable() {
    let o = run(&scenario("block-storm", true), 3);
    assert!(o.halted, "{}", o.to_json());
    assert_eq!(o.bricked, 0, "{}", o.to_json());
    assert_eq!(o.blocked_processes, Some(0), "{}", o.to_json());
    let o = run(&scenario("block-storm", false), 3);
    assert!(!o.halted);
    assert!(o.blocked_processes.unwrap() > 0, "{}", o.to_json());
    assert!(o.bricked > 0, "{}", o.to_json());
    assert_eq!(o.endpoints_with_blocks, Some(o.bricked), "{}", o.to_json());
}

/// The fleet's ordinary detections, on the release as on the baseline, do not halt a good
/// release: the baseline's are reported under their rule ids too (the agents never staged the
/// baseline, installed before the run; they learn its rules' names from its signed envelope).
#[test]
fn ordinary_detections_do_not_halt_a_good_release() {
    let mut s = scenario("good", true);
    s.fleet.baseline_detections_per_endpoint_hour = 20.0;
    let o = run(&s, 4);
    assert!(!o.halted, "{}", o.to_json());
    assert!(o.final_fraction_on_release > 0.6, "{}", o.to_json());
}
