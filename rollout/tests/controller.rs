//! The controller step: when waves open, when rollouts halt, when they hold, and the operator's
//! commands.

mod common;

use bulwark_rollout::controller::{
    halt, pause, resume, revert, start, step, CommandError, ControllerEvent,
};
use bulwark_rollout::health::{analyze, HealthConfig, Outcome};
use bulwark_rollout::observations::{CohortObservations, EndpointRecord, HealthObservations};
use bulwark_rollout::plan::Plan;
use bulwark_rollout::state::{ChannelRollout, HaltCause, Status};
use bulwark_rollout::time::{Timestamp, HOUR};
use common::{cohort, detections, release, Rng};

const T0: Timestamp = Timestamp(1_700_000_000);

fn started() -> ChannelRollout {
    let ch = detections();
    let (s, events) = start(ch.clone(), release(&ch, 7), Plan::default_plan(), None, T0).unwrap();
    assert_eq!(events.len(), 2);
    assert!(matches!(events[1], ControllerEvent::WaveOpened { wave: 0, at, .. } if at == T0));
    s
}

/// Observations of the first `waves` waves: each wave's cohort 100 endpoints observed `hours`,
/// `confirmed` healthy; baseline 10,000 endpoints observed `hours`; nothing bad anywhere.
fn healthy(waves: usize, hours: u64, confirmed: u64) -> HealthObservations {
    HealthObservations {
        release_version: 7,
        baseline: cohort(10_000, hours),
        waves: (0..waves)
            .map(|_| CohortObservations {
                confirmed_healthy: confirmed,
                ..cohort(100, hours)
            })
            .collect(),
    }
}

/// The rollout with the canary (wave 1) open at T0 + 2 h.
fn canary_open() -> ChannelRollout {
    let (s, events) = step(&started(), &healthy(1, 2, 30), T0.plus_hours(2));
    assert!(
        matches!(events[..], [ControllerEvent::WaveOpened { wave: 1, .. }]),
        "{events:?}"
    );
    s
}

fn held_reasons(events: &[ControllerEvent]) -> Vec<String> {
    match events {
        [ControllerEvent::Held { reasons, .. }] => reasons.clone(),
        other => panic!("expected one Held event, got {other:?}"),
    }
}

#[test]
fn a_wave_opens_only_after_bake_time_and_healthy_confirmations() {
    let s = started();
    assert_eq!(s.open_waves, 1);
    // Wave 0 (internal): bake 2 h, 30 confirmations.

    // Confirmations but not baked (one second short): held, for the bake alone.
    let (s1, ev) = step(&s, &healthy(1, 2, 1000), T0.plus_secs(2 * HOUR - 1));
    assert_eq!(s1, s);
    let reasons = held_reasons(&ev);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("bakes until"), "{reasons:?}");

    // Baked long ago but 29 of 30 confirmations: held, for the confirmations alone.
    let (s2, ev) = step(&s, &healthy(1, 48, 29), T0.plus_hours(48));
    assert_eq!(s2, s);
    let reasons = held_reasons(&ev);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("29 of the 30"), "{reasons:?}");

    // Neither: both reasons.
    let (_, ev) = step(&s, &healthy(1, 1, 0), T0.plus_hours(1));
    assert_eq!(held_reasons(&ev).len(), 2);

    // Both: the canary opens, now.
    let now = T0.plus_secs(2 * HOUR);
    let (s3, ev) = step(&s, &healthy(1, 2, 30), now);
    assert_eq!(
        ev,
        vec![ControllerEvent::WaveOpened {
            wave: 1,
            name: "canary".into(),
            fraction_ppm: 10_000,
            at: now
        }]
    );
    assert_eq!(s3.open_waves, 2);
    assert_eq!(s3.opened_at(1), Some(now));
    assert_eq!(s3.revision, s.revision + 1);
    assert_eq!(s3.status, Status::Progressing);

    // One wave per step: the next step judges the canary by its own bake and confirmations.
    let (s4, ev) = step(&s3, &healthy(2, 3, 30), now.plus_hours(1));
    assert_eq!(s4.open_waves, 2);
    let reasons = held_reasons(&ev);
    assert!(
        reasons.iter().any(|r| r.contains("wave 1 (canary) bakes")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("30 of the 300")),
        "{reasons:?}"
    );
}

#[test]
fn missing_or_foreign_data_holds_without_halting() {
    let s = started();
    let now = T0.plus_hours(3);
    // No baseline: the rate tests cannot run.
    let mut obs = healthy(1, 3, 30);
    obs.baseline = CohortObservations::default();
    let (s1, ev) = step(&s, &obs, now);
    assert_eq!(s1, s);
    assert!(held_reasons(&ev)
        .iter()
        .any(|r| r.contains("baseline cohort")));
    // No cohort for the open wave.
    let mut obs = healthy(1, 3, 30);
    obs.waves.clear();
    let (s2, ev) = step(&s, &obs, now);
    assert_eq!(s2, s);
    assert!(held_reasons(&ev)
        .iter()
        .any(|r| r.contains("no observations of wave 0")));
    // The wave's cohort has no exposure yet.
    let mut obs = healthy(1, 3, 30);
    obs.waves[0].exposure_secs = 0;
    let (s3, _) = step(&s, &obs, now);
    assert_eq!(s3, s);
    // Observations of another release.
    let mut obs = healthy(1, 3, 30);
    obs.release_version = 6;
    let (s4, ev) = step(&s, &obs, now);
    assert_eq!(s4, s);
    assert!(held_reasons(&ev)[0].contains("release 6"));
}

fn halt_record(s: &ChannelRollout) -> &bulwark_rollout::state::HaltRecord {
    match &s.status {
        Status::Halted { halt } => halt,
        other => panic!("expected halted, got {other:?}"),
    }
}

#[test]
fn three_crashes_in_100_canaries_against_none_in_10000_halts_and_reverts() {
    let s = canary_open();
    let now = T0.plus_hours(4);
    let mut obs = healthy(2, 2, 0);
    obs.waves[1].crashes = 3;
    let (h, ev) = step(&s, &obs, now);
    assert!(h.revert);
    let record = halt_record(&h);
    assert_eq!(record.at, now);
    assert_eq!(record.open_waves, 2);
    assert_eq!(
        ev,
        vec![ControllerEvent::Halted {
            record: record.clone()
        }]
    );
    let HaltCause::Automatic { failed } = &record.cause else {
        panic!("automatic halt expected");
    };
    assert_eq!(failed.len(), 1, "{failed:?}");
    let v = &failed[0];
    assert_eq!(
        (v.test.as_str(), v.wave, v.wave_name.as_str()),
        ("crash-rate", 1, "canary")
    );
    assert_eq!((v.new_count, v.base_count), (3, 0));
    assert_eq!((v.new_exposure, v.base_exposure), (200.0, 20_000.0));
    // (200 / 20200)^3, against 1e-4 / 2 (safety family) / 8 (4 tests x 2 waves).
    let p = v.p_value.unwrap();
    assert!((p - 9.705901479276445e-07).abs() < 1e-15, "{p}");
    assert_eq!(v.halt_below, Some(1e-4 / 2.0 / 8.0));
    assert!(
        v.reason.contains("3 in 200.0 endpoint-hours"),
        "{}",
        v.reason
    );
    assert_eq!(h.revision, s.revision + 1);
    // A halted rollout stays halted.
    let (again, ev) = step(&h, &healthy(2, 10, 1000), now.plus_hours(24));
    assert_eq!((again, ev), (h.clone(), vec![]));

    // Two crashes: a signal (p ≈ 1e-4) that holds, but does not halt.
    let mut obs = healthy(2, 2, 1000);
    obs.waves[1].crashes = 2;
    let (held, ev) = step(&s, &obs, now.plus_hours(24));
    assert_eq!(held, s);
    assert!(held_reasons(&ev)
        .iter()
        .any(|r| r.contains("crash-counted guard events: 2")));
}

#[test]
fn endpoints_silent_after_staging_halt() {
    let s = canary_open();
    let staged = T0.plus_hours(2);
    let now = staged.plus_hours(3);
    let timeout = HealthConfig::default().silence_timeout_secs;
    let mut rng = Rng(7);
    // Canary: 100 staged; 10 sent one heartbeat five minutes after staging, then nothing.
    let canary: Vec<EndpointRecord> = (0..100)
        .map(|i| EndpointRecord {
            observed_since: staged,
            last_heartbeat: Some(if i < 10 { staged.plus_secs(300) } else { now }),
            confirmed_healthy: i >= 10,
            ..EndpointRecord::default()
        })
        .collect();
    // Baseline: 10,000 endpoints over the same window, 1% silent (ordinary offline machines), and
    // 2% that announced a clean shutdown.
    let baseline: Vec<EndpointRecord> = (0..10_000)
        .map(|_| {
            let silent = rng.unit() < 0.01;
            EndpointRecord {
                observed_since: staged,
                last_heartbeat: Some(if silent { staged.plus_secs(600) } else { now }),
                shutdown_announced: !silent && rng.unit() < 0.02,
                ..EndpointRecord::default()
            }
        })
        .collect();
    let internal: Vec<EndpointRecord> = (0..100)
        .map(|_| EndpointRecord {
            observed_since: T0,
            last_heartbeat: Some(now),
            confirmed_healthy: true,
            ..EndpointRecord::default()
        })
        .collect();
    let none: [&str; 0] = [];
    let obs = HealthObservations {
        release_version: 7,
        baseline: CohortObservations::aggregate(&baseline, none, now, timeout),
        waves: vec![
            CohortObservations::aggregate(&internal, none, now, timeout),
            CohortObservations::aggregate(&canary, none, now, timeout),
        ],
    };
    assert_eq!(obs.waves[1].silent, 10);
    let (h, _) = step(&s, &obs, now);
    let HaltCause::Automatic { failed } = &halt_record(&h).cause else {
        panic!()
    };
    assert!(h.revert);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].test, "silence");
    assert_eq!(failed[0].new_count, 10);
    assert!(
        failed[0].reason.contains("10 of 100"),
        "{}",
        failed[0].reason
    );

    // The same endpoints before the timeout has passed are not silent yet: no halt.
    let early = staged.plus_secs(300 + timeout);
    let obs_early = HealthObservations {
        waves: vec![
            CohortObservations::aggregate(&internal, none, early, timeout),
            CohortObservations::aggregate(&canary, none, early, timeout),
        ],
        ..obs
    };
    assert_eq!(obs_early.waves[1].silent, 0);
    let (not_halted, _) = step(&s, &obs_early, early);
    assert!(!not_halted.is_halted());
}

/// Observations where 40 rules fire at their baseline rates in both cohorts (no noise: expected
/// counts), and `storm` fires `factor` times its baseline rate in the canary.
fn with_rules(factor: u64) -> HealthObservations {
    let mut obs = healthy(2, 24, 0);
    for r in 0..40u64 {
        let per_endpoint_day = r + 1; // baseline: 10,000 endpoints -> 10,000 * (r+1) detections
        let rule = format!("rule-{r:02}");
        obs.baseline
            .rules
            .insert(rule.clone(), 10_000 * per_endpoint_day / 100);
        for w in &mut obs.waves {
            w.rules.insert(rule.clone(), 100 * per_endpoint_day / 100);
        }
    }
    // The storm rule: baseline 0.001 per endpoint-hour: 240 in 240,000 endpoint-hours; 2.4
    // expected in the canary's 2,400.
    obs.baseline.rules.insert("storm".into(), 240);
    obs.waves[0].rules.insert("storm".into(), 2);
    obs.waves[1]
        .rules
        .insert("storm".into(), 240 * factor / 100);
    obs
}

#[test]
fn a_false_positive_storm_halts() {
    let s = canary_open();
    let now = T0.plus_hours(26);
    let (h, _) = step(&s, &with_rules(50), now);
    let HaltCause::Automatic { failed } = &halt_record(&h).cause else {
        panic!()
    };
    assert_eq!(failed.len(), 1, "{failed:?}");
    let v = &failed[0];
    assert_eq!(v.test, "detection-storm");
    assert_eq!(v.rule.as_deref(), Some("storm"));
    assert_eq!((v.new_count, v.base_count), (120, 240));
    assert!(v.p_value.unwrap() < 1e-30, "{v:?}");
    // 41 rules in each of 2 waves share the storm family's half of alpha.
    assert_eq!(v.halt_below, Some(1e-4 / 2.0 / 82.0));

    // 5x the baseline is below the storm ratio (10x): no halt.
    let (ok, _) = step(&s, &with_rules(5), now);
    assert!(!ok.is_halted());
}

#[test]
fn a_new_rule_far_above_expectation_halts() {
    let s = canary_open();
    let mut obs = healthy(2, 2, 0);
    // 1 detection per endpoint-hour in the canary (200 in 200 endpoint-hours), against a ceiling
    // of 0.01.
    obs.waves[1].rules.insert("brand-new".into(), 200);
    let (h, _) = step(&s, &obs, T0.plus_hours(4));
    let HaltCause::Automatic { failed } = &halt_record(&h).cause else {
        panic!()
    };
    assert_eq!(failed[0].test, "new-rule-storm");
    // Below the minimum count, however unlikely: not a storm.
    obs.waves[1].rules.insert("brand-new".into(), 19);
    let (ok, _) = step(&s, &obs, T0.plus_hours(4));
    assert!(!ok.is_halted());
}

#[test]
fn two_quarantines_in_canary_halt_even_against_a_zero_baseline() {
    let s = canary_open();
    let mut obs = healthy(2, 2, 0);
    obs.waves[1].quarantines = 1;
    let (ok, _) = step(&s, &obs, T0.plus_hours(4));
    assert!(!ok.is_halted());
    obs.waves[1].quarantines = 2;
    let (h, _) = step(&s, &obs, T0.plus_hours(4));
    let HaltCause::Automatic { failed } = &halt_record(&h).cause else {
        panic!()
    };
    assert!(failed
        .iter()
        .any(|v| v.test == "quarantine-ceiling" && v.ceiling == Some(2)));
}

#[test]
fn one_refusal_by_an_endpoints_own_verifier_halts_a_canary() {
    let s = canary_open();
    let obs = healthy(2, 2, 0);
    let (ok, _) = step(&s, &obs, T0.plus_hours(4));
    assert!(!ok.is_halted());
    // The baseline's refusals (of its own release) do not count against the new one.
    let mut obs = healthy(2, 2, 0);
    obs.baseline.rejections = 3;
    let (ok, _) = step(&s, &obs, T0.plus_hours(4));
    assert!(!ok.is_halted());
    obs.waves[1].rejections = 1;
    let (h, _) = step(&s, &obs, T0.plus_hours(4));
    let HaltCause::Automatic { failed } = &halt_record(&h).cause else {
        panic!()
    };
    let v = failed
        .iter()
        .find(|v| v.test == "rejection-ceiling")
        .expect("the rejection ceiling failed");
    assert_eq!((v.new_count, v.ceiling), (1, Some(1)));
    assert!(v.reason.contains("own verifier"), "{}", v.reason);
}

/// A good release against a noisy baseline: both cohorts draw their counts from the same rates.
fn noisy_good_release(rng: &mut Rng) -> HealthObservations {
    let draw =
        |rng: &mut Rng, c: &mut CohortObservations, base_rules: Option<&CohortObservations>| {
            let eh = c.exposure_hours();
            c.crashes = rng.poisson(2e-4 * eh);
            c.reverts = rng.poisson(5e-5 * eh);
            c.quarantines = rng.poisson(1e-6 * eh);
            c.silent = rng.binomial(c.endpoints, 0.02);
            for r in 0..30u64 {
                let rate = 1e-4 * (1.25f64).powi(r as i32); // 1e-4 .. 0.065 per endpoint-hour
                c.rules
                    .insert(format!("rule-{r:02}"), rng.poisson(rate * eh));
            }
            if base_rules.is_some() {
                for r in 0..3 {
                    c.rules.insert(format!("new-{r}"), rng.poisson(0.002 * eh));
                }
            }
        };
    let mut base = cohort(10_000, 6);
    draw(rng, &mut base, None);
    let mut waves = vec![cohort(100, 6), cohort(1_000, 4)];
    for w in &mut waves {
        draw(rng, w, Some(&base));
        w.confirmed_healthy = w.endpoints;
    }
    HealthObservations {
        release_version: 7,
        baseline: base,
        waves,
    }
}

#[test]
fn a_good_release_against_a_noisy_baseline_does_not_halt() {
    let plan = Plan::default_plan();
    let config = HealthConfig::default();
    let mut rng = Rng(20_240_719);
    let (mut fails, mut holds) = (0, 0);
    let runs = 1000;
    for _ in 0..runs {
        let obs = noisy_good_release(&mut rng);
        let report = analyze(&obs, &plan, 2, &config);
        // Every rule and every safety test was run.
        assert_eq!(report.safety_tests, 8);
        assert_eq!(report.storm_tests, 66);
        match report.outcome {
            Outcome::Fail => {
                fails += 1;
                for v in report.with_outcome(Outcome::Fail) {
                    eprintln!("false halt: {}", v.reason);
                }
            }
            Outcome::Hold => holds += 1,
            Outcome::Pass => {}
        }
    }
    // Designed: at most alpha_halt = 1e-4 per evaluation (0.1 expected in 1000), and at most
    // alpha_hold = 1e-2 holds (10 expected).
    assert!(fails <= 3, "{fails} false halts in {runs}");
    assert!(holds <= 40, "{holds} holds in {runs}");
    eprintln!("{fails} false halts and {holds} holds in {runs} evaluations");
}

#[test]
fn the_tests_p_values_are_valid_under_the_null() {
    // Halts are too rare to measure the halt level itself in a test's time; what can be measured
    // is that each safety test's p-value is valid (P(p < a) <= a) at levels where 2,000 draws
    // have power, with counts large enough (tens in the wave, hundreds in the baseline) that the
    // discrete tests are not trivially conservative. A test biased towards small p-values here
    // would be biased at 1e-6 too.
    let plan = Plan::default_plan();
    let config = HealthConfig::default();
    let mut rng = Rng(7_777);
    let draws = 2000u32;
    let levels = [0.01, 0.05, 0.1, 0.5];
    let mut below: std::collections::BTreeMap<String, [u32; 4]> = Default::default();
    for _ in 0..draws {
        let mut draw = |c: &mut CohortObservations| {
            let eh = c.exposure_hours();
            c.crashes = rng.poisson(3e-3 * eh);
            c.reverts = rng.poisson(1e-3 * eh);
            c.quarantines = rng.poisson(5e-4 * eh);
            c.silent = rng.binomial(c.endpoints, 0.05);
        };
        let mut baseline = cohort(10_000, 6);
        draw(&mut baseline);
        let mut wave = cohort(1_000, 6);
        draw(&mut wave);
        let obs = HealthObservations {
            release_version: 7,
            baseline,
            waves: vec![wave],
        };
        for v in analyze(&obs, &plan, 1, &config).verdicts {
            let Some(p) = v.p_value else { continue };
            let b = below.entry(v.test.clone()).or_default();
            for (i, a) in levels.iter().enumerate() {
                b[i] += u32::from(p < *a);
            }
        }
    }
    assert_eq!(below.len(), 4, "{below:?}");
    for (test, b) in &below {
        let n = f64::from(draws);
        for (i, a) in levels.iter().enumerate() {
            // The observed rate may exceed a by sampling noise only: 4 standard errors.
            let bound = a + 4.0 * (a * (1.0 - a) / n).sqrt();
            let rate = f64::from(b[i]) / n;
            assert!(
                rate <= bound,
                "{test}: P(p < {a}) = {rate} over {n} (bound {bound})"
            );
        }
        // Not vacuous: the tests do produce small p-values at about their rate.
        assert!(
            b[2] as f64 / n > 0.03,
            "{test}: only {} p-values below 0.1",
            b[2]
        );
    }
}

#[test]
fn a_good_release_goes_through_every_wave_to_complete() {
    // A fleet of 100,000 stepped hourly through the default plan; every count drawn anew each
    // hour from rates shared by the release and the baseline (independent looks: the worst case
    // for repeated testing).
    const FLEET: f64 = 100_000.0;
    let mut halted = 0;
    let seeds = 10;
    for seed in 0..seeds {
        let mut rng = Rng(seed);
        let mut s = started();
        let mut now = T0;
        while !matches!(s.status, Status::Complete { .. } | Status::Halted { .. }) {
            now = now.plus_hours(1);
            let mut previous_ppm = 0u32;
            let mut waves = Vec::new();
            for (w, wave) in s.plan.waves.iter().enumerate().take(s.open_waves as usize) {
                let n = (FLEET * f64::from(wave.fraction_ppm - previous_ppm) / 1e6) as u64;
                previous_ppm = wave.fraction_ppm;
                let hours = now.secs_since(s.opened_at(w).unwrap()) / HOUR;
                let mut c = cohort(n, hours);
                c.crashes = rng.poisson(2e-4 * c.exposure_hours());
                c.silent = rng.binomial(n, 0.01);
                c.confirmed_healthy = if hours >= 1 { n * 9 / 10 } else { 0 };
                waves.push(c);
            }
            let remaining = (FLEET * f64::from(1_000_000 - previous_ppm) / 1e6) as u64;
            // Once everything is open, a historical baseline of 10,000 endpoints over 24 hours.
            let mut baseline = if remaining > 0 {
                cohort(remaining, 24)
            } else {
                cohort(10_000, 24)
            };
            baseline.crashes = rng.poisson(2e-4 * baseline.exposure_hours());
            baseline.silent = rng.binomial(baseline.endpoints, 0.01);
            let obs = HealthObservations {
                release_version: 7,
                baseline,
                waves,
            };
            s = step(&s, &obs, now).0;
            assert!(now < T0.plus_hours(200), "stuck: {s:?}");
        }
        match s.status {
            Status::Complete { at } => {
                // 2 + 6 + 12 + 24 + 24 hours of bake, and perhaps a few hours held by a weak
                // signal (designed: at most 1% of looks) that the next look did not repeat.
                assert!(
                    at >= T0.plus_hours(68),
                    "seed {seed}: completed early at {at}"
                );
                assert!(
                    at <= T0.plus_hours(74),
                    "seed {seed}: completed late at {at}"
                );
                assert_eq!(s.open_waves, 5);
            }
            _ => halted += 1,
        }
    }
    assert!(halted <= 1, "{halted} of {seeds} good rollouts halted");
}

#[test]
fn the_last_wave_completes_without_a_baseline_but_still_halts_on_quarantines() {
    // Every wave open, the last the whole fleet: nobody is held back.
    let mut s = started();
    s.open_waves = 5;
    let opened = T0.plus_hours(100);
    s.wave_opened_at = vec![Some(T0); 5];
    s.wave_opened_at[4] = Some(opened);
    let now = opened.plus_hours(24);
    let mut obs = healthy(5, 24, 10_000);
    obs.baseline = CohortObservations::default();
    let (done, ev) = step(&s, &obs, now);
    assert!(
        matches!(done.status, Status::Complete { .. }),
        "{ev:?} {:?}",
        done.status
    );
    let report = analyze(&obs, &s.plan, 5, &HealthConfig::default());
    assert!(report
        .verdicts
        .iter()
        .any(|v| v.test == "data" && v.outcome == Outcome::Pass && v.reason.contains("held back")));

    // The quarantine ceiling still applies to it.
    obs.waves[4].quarantines = 2;
    let (halted, _) = step(&s, &obs, now);
    assert!(halted.is_halted(), "{:?}", halted.status);

    // With a wave still closed, an empty baseline holds as before.
    let mut four = s.clone();
    four.open_waves = 4;
    four.wave_opened_at[4] = None;
    four.wave_opened_at[3] = Some(opened);
    let mut obs = healthy(4, 24, 10_000);
    obs.baseline = CohortObservations::default();
    let (same, ev) = step(&four, &obs, now);
    assert_eq!(same, four);
    assert!(held_reasons(&ev)
        .iter()
        .any(|r| r.contains("baseline cohort")));
}

#[test]
fn operator_commands() {
    let s = started();
    let now = T0.plus_hours(1);

    // Pause needs a reason and a progressing rollout; resume needs a paused one.
    assert_eq!(
        pause(&s, "  ", now),
        Err(CommandError::EmptyReason { command: "pause" })
    );
    assert_eq!(
        resume(&s, now),
        Err(CommandError::WrongStatus {
            command: "resume",
            status: "progressing"
        })
    );
    let (p, ev) = pause(&s, "investigating ticket 4711", now).unwrap();
    assert!(matches!(ev[..], [ControllerEvent::Paused { .. }]));
    assert_eq!(p.revision, s.revision + 1);
    assert!(pause(&p, "again", now).is_err());

    // Paused: a healthy, baked, confirmed wave does not advance...
    let (p2, ev) = step(&p, &healthy(1, 3, 1000), T0.plus_hours(3));
    assert_eq!(p2, p);
    assert_eq!(held_reasons(&ev), vec!["paused by an operator".to_owned()]);
    // ...but a failing one still halts.
    let mut bad = healthy(1, 3, 1000);
    bad.waves[0].quarantines = 5;
    let (ph, _) = step(&p, &bad, T0.plus_hours(3));
    assert!(ph.is_halted() && ph.revert);

    // Resume: the bake time kept running while paused.
    let (r, ev) = resume(&p, T0.plus_hours(3)).unwrap();
    assert_eq!(
        ev,
        vec![ControllerEvent::Resumed {
            at: T0.plus_hours(3)
        }]
    );
    let (r2, _) = step(&r, &healthy(1, 3, 1000), T0.plus_hours(3));
    assert_eq!(r2.open_waves, 2);

    // Halt by hand: a reason is required; endpoints keep what runs until revert is ordered.
    assert_eq!(
        halt(&r, "", now),
        Err(CommandError::EmptyReason { command: "halt" })
    );
    let (h, ev) = halt(&r, "customer reports slow logons", T0.plus_hours(4)).unwrap();
    assert!(!h.revert);
    let record = halt_record(&h).clone();
    assert_eq!(
        record.cause,
        HaltCause::Operator {
            reason: "customer reports slow logons".into()
        }
    );
    assert_eq!(ev, vec![ControllerEvent::Halted { record }]);
    assert!(halt(&h, "twice", now).is_err());
    assert!(pause(&h, "x", now).is_err());
    assert!(resume(&h, now).is_err());

    // Revert: only when halted; ordering it twice changes nothing.
    assert!(revert(&r, now).is_err());
    let (rv, ev) = revert(&h, T0.plus_hours(5)).unwrap();
    assert!(rv.revert);
    assert_eq!(
        ev,
        vec![ControllerEvent::RevertOrdered {
            version: 7,
            at: T0.plus_hours(5)
        }]
    );
    assert_eq!(rv.revision, h.revision + 1);
    let (rv2, ev) = revert(&rv, T0.plus_hours(6)).unwrap();
    assert_eq!((rv2, ev), (rv.clone(), vec![]));
    assert_eq!(rv.validate(), Ok(()));
}

#[test]
fn start_takes_its_baseline_from_the_previous_rollout() {
    let ch = detections();
    let s = started();
    // Not while the previous one is in progress.
    assert_eq!(
        start(
            ch.clone(),
            release(&ch, 8),
            Plan::default_plan(),
            Some(&s),
            T0
        ),
        Err(CommandError::WrongStatus {
            command: "start",
            status: "progressing"
        })
    );
    // After a completed rollout: its release is the baseline.
    let mut done = s.clone();
    done.open_waves = 5;
    done.wave_opened_at = vec![Some(T0); 5];
    done.status = Status::Complete { at: T0 };
    let (next, _) = start(
        ch.clone(),
        release(&ch, 8),
        Plan::default_plan(),
        Some(&done),
        T0,
    )
    .unwrap();
    assert_eq!(next.baseline_version, Some(7));
    assert!(next.revision > done.revision);
    // After a halted one: the halted release is never a baseline.
    let (h, _) = halt(&next, "bad", T0).unwrap();
    let (after, _) = start(
        ch.clone(),
        release(&ch, 9),
        Plan::default_plan(),
        Some(&h),
        T0,
    )
    .unwrap();
    assert_eq!(after.baseline_version, Some(7));
    // Versions only move forward.
    assert_eq!(
        start(
            ch.clone(),
            release(&ch, 8),
            Plan::default_plan(),
            Some(&h),
            T0
        ),
        Err(CommandError::VersionNotNewer {
            version: 8,
            previous: 8
        })
    );
    // The release must be of the channel; the plan must be valid.
    let other = bulwark_rollout::channel::Channel::new("other", false);
    assert!(matches!(
        start(
            ch.clone(),
            release(&other, 1),
            Plan::default_plan(),
            None,
            T0
        ),
        Err(CommandError::ReleaseChannel { .. })
    ));
    assert!(matches!(
        start(
            ch.clone(),
            release(&ch, 1),
            Plan { waves: vec![] },
            None,
            T0
        ),
        Err(CommandError::Plan(_))
    ));
}

#[test]
fn the_state_serializes_deterministically_and_round_trips() {
    let s = canary_open();
    let mut obs = healthy(2, 2, 0);
    obs.waves[1].crashes = 3;
    let (h, _) = step(&s, &obs, T0.plus_hours(4));
    let json = serde_json::to_string(&h).unwrap();
    assert_eq!(json, serde_json::to_string(&h.clone()).unwrap());
    assert!(json.starts_with("{\"revision\":"), "{json}");
    let back: ChannelRollout = serde_json::from_str(&json).unwrap();
    assert_eq!(back, h);
    assert!(json.contains(&"07".repeat(32)), "pack hash as hex: {json}");
}
