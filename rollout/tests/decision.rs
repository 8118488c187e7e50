//! The endpoint's decision for every policy in every rollout status.

mod common;

use bulwark_rollout::census::Census;
use bulwark_rollout::channel::Channel;
use bulwark_rollout::decision::{decide, decide_placed, decide_validated, Decision, StayReason};
use bulwark_rollout::endpoint::EndpointFacts;
use bulwark_rollout::plan::Plan;
use bulwark_rollout::policy::Policy;
use bulwark_rollout::state::{ChannelRollout, HaltCause, HaltRecord, Status};
use bulwark_rollout::thresholds::WaveThresholds;
use bulwark_rollout::time::Timestamp;
use bulwark_rollout::Placement;
use common::{critical, detections, facts, release};

const T0: Timestamp = Timestamp(1_700_000_000);
/// When wave 1 (canary) opened.
const T1: Timestamp = Timestamp(1_700_000_000 + 2 * 3600);

struct Fixture {
    channel: Channel,
    thresholds: WaveThresholds,
    /// An endpoint in each wave, by wave index.
    in_wave: Vec<EndpointFacts>,
}

fn fixture(channel: Channel) -> Fixture {
    let fleet: Vec<EndpointFacts> = (0..20_000)
        .map(|n| facts(n, "10.0.19045", "x64", "office"))
        .collect();
    let census = Census::from_endpoints(&channel.name, &fleet);
    let plan = Plan::default_plan();
    let thresholds = WaveThresholds::compute(&plan, &census, &channel.name).unwrap();
    let in_wave = (0..plan.waves.len())
        .map(|w| {
            fleet
                .iter()
                .find(|f| thresholds.wave_of(f) == Some(w))
                .expect("every wave has an endpoint")
                .clone()
        })
        .collect();
    Fixture {
        channel,
        thresholds,
        in_wave,
    }
}

/// Release 7 over baseline 6; waves 0 and 1 open (at T0 and T1).
fn progressing(channel: &Channel) -> ChannelRollout {
    let mut wave_opened_at = vec![None; 5];
    wave_opened_at[0] = Some(T0);
    wave_opened_at[1] = Some(T1);
    ChannelRollout {
        revision: 3,
        channel: channel.clone(),
        release: release(channel, 7),
        plan: Plan::default_plan(),
        baseline_version: Some(6),
        wave_opened_at,
        open_waves: 2,
        status: Status::Progressing,
        revert: false,
    }
}

fn paused(channel: &Channel) -> ChannelRollout {
    ChannelRollout {
        status: Status::Paused {
            at: T1,
            reason: "look".into(),
        },
        ..progressing(channel)
    }
}

fn halted(channel: &Channel, revert: bool) -> ChannelRollout {
    ChannelRollout {
        status: Status::Halted {
            halt: HaltRecord {
                at: T1,
                open_waves: 2,
                cause: HaltCause::Operator {
                    reason: "bad".into(),
                },
            },
        },
        revert,
        ..progressing(channel)
    }
}

/// Every wave open, the last (wave 4) at T0 + 44 h.
fn complete(channel: &Channel) -> ChannelRollout {
    let hours = [0, 2, 8, 20, 44];
    ChannelRollout {
        wave_opened_at: hours.iter().map(|h| Some(T0.plus_hours(*h))).collect(),
        open_waves: 5,
        status: Status::Complete {
            at: T0.plus_hours(68),
        },
        ..progressing(channel)
    }
}

fn run() -> Decision {
    Decision::Run {
        version: 7,
        pack_hash: [7; 32],
    }
}

fn stay(reason: StayReason) -> Decision {
    Decision::Stay { reason }
}

const REVERT: Decision = Decision::RevertToLastKnownGood { halted_version: 7 };

fn delay(hours: u32) -> Policy {
    Policy::Delay { hours }
}

#[test]
fn ga_runs_once_its_own_wave_is_open() {
    let f = fixture(detections());
    let s = progressing(&f.channel);
    let d = |w: usize, now| decide(&s, &f.in_wave[w], &Policy::Ga, &f.thresholds, now);
    assert_eq!(d(0, T0), run());
    assert_eq!(d(1, T1), run());
    assert_eq!(
        d(2, T1.plus_hours(100)),
        stay(StayReason::WaveNotOpen {
            wave: 2,
            open_waves: 2
        })
    );
    assert_eq!(
        d(4, T1),
        stay(StayReason::WaveNotOpen {
            wave: 4,
            open_waves: 2
        })
    );
}

#[test]
fn early_runs_from_the_first_wave_whatever_its_position() {
    let f = fixture(detections());
    let s = progressing(&f.channel);
    for w in 0..5 {
        assert_eq!(
            decide(&s, &f.in_wave[w], &Policy::Early, &f.thresholds, T0),
            run()
        );
    }
}

#[test]
fn pause_takes_nothing_new() {
    let f = fixture(detections());
    for s in [progressing(&f.channel), complete(&f.channel)] {
        for w in 0..5 {
            assert_eq!(
                decide(
                    &s,
                    &f.in_wave[w],
                    &Policy::Pause,
                    &f.thresholds,
                    T0.plus_hours(1000)
                ),
                stay(StayReason::PolicyPause)
            );
        }
    }
}

#[test]
fn pause_on_a_critical_channel_is_ga() {
    // Validation refuses it; an unvalidated table still cannot pause critical content.
    let f = fixture(critical());
    let s = progressing(&f.channel);
    assert_eq!(
        decide(&s, &f.in_wave[1], &Policy::Pause, &f.thresholds, T1),
        run()
    );
    assert_eq!(
        decide(&s, &f.in_wave[2], &Policy::Pause, &f.thresholds, T1),
        stay(StayReason::WaveNotOpen {
            wave: 2,
            open_waves: 2
        })
    );
}

#[test]
fn delay_counts_from_the_opening_of_the_endpoints_own_wave() {
    let f = fixture(detections());
    let s = progressing(&f.channel);
    let d = |w: usize, p: &Policy, now| decide(&s, &f.in_wave[w], p, &f.thresholds, now);
    // Delay 0 is Ga.
    assert_eq!(d(1, &delay(0), T1), run());
    for hours in [24u32, 72] {
        let due = T1.plus_hours(u64::from(hours));
        // One second before: delayed until the wave's opening plus the delay.
        assert_eq!(
            d(1, &delay(hours), Timestamp(due.0 - 1)),
            stay(StayReason::Delayed { until: due })
        );
        // At the boundary and after: run.
        assert_eq!(d(1, &delay(hours), due), run());
        assert_eq!(d(1, &delay(hours), due.plus_secs(1)), run());
        // Wave 0 opened two hours earlier, so its endpoint is due two hours earlier.
        assert_eq!(d(0, &delay(hours), Timestamp(due.0 - 2 * 3600)), run());
        // A wave not open is not open, whatever the delay.
        assert_eq!(
            d(2, &delay(hours), due.plus_hours(1000)),
            stay(StayReason::WaveNotOpen {
                wave: 2,
                open_waves: 2
            })
        );
    }
    // More than 72 hours (never valid) is 72 hours.
    assert_eq!(d(1, &delay(500), T1.plus_hours(72)), run());
    // Complete: the delay still counts from the endpoint's own wave (wave 4 opened at T0 + 44 h).
    let c = complete(&f.channel);
    let due = T0.plus_hours(44 + 72);
    assert_eq!(
        decide(
            &c,
            &f.in_wave[4],
            &delay(72),
            &f.thresholds,
            Timestamp(due.0 - 1)
        ),
        stay(StayReason::Delayed { until: due })
    );
    assert_eq!(
        decide(&c, &f.in_wave[4], &delay(72), &f.thresholds, due),
        run()
    );
}

#[test]
fn a_pin_holds_until_it_expires_then_lapses_to_ga() {
    let f = fixture(detections());
    let s = progressing(&f.channel);
    let expires_at = T1.plus_hours(10);
    let pin = Policy::Pin {
        version: 5,
        expires_at,
    };
    let pinned = Decision::Pinned {
        version: 5,
        expires_at,
    };
    // Active: pinned, whatever the wave.
    for w in [0, 1, 4] {
        assert_eq!(decide(&s, &f.in_wave[w], &pin, &f.thresholds, T0), pinned);
        assert_eq!(
            decide(
                &s,
                &f.in_wave[w],
                &pin,
                &f.thresholds,
                Timestamp(expires_at.0 - 1)
            ),
            pinned
        );
    }
    // Expired (at expires_at exactly): Ga.
    assert_eq!(
        decide(&s, &f.in_wave[1], &pin, &f.thresholds, expires_at),
        run()
    );
    assert_eq!(
        decide(&s, &f.in_wave[4], &pin, &f.thresholds, expires_at),
        stay(StayReason::WaveNotOpen {
            wave: 4,
            open_waves: 2
        })
    );
}

#[test]
fn paused_rollout_starts_nobody() {
    let f = fixture(detections());
    let s = paused(&f.channel);
    for p in [
        Policy::Ga,
        Policy::Early,
        Policy::Pause,
        delay(0),
        delay(24),
        delay(72),
    ] {
        for w in 0..5 {
            assert_eq!(
                decide(&s, &f.in_wave[w], &p, &f.thresholds, T1.plus_hours(100)),
                stay(StayReason::RolloutPaused),
                "{p:?} wave {w}"
            );
        }
    }
    let pin = Policy::Pin {
        version: 5,
        expires_at: T1.plus_hours(1),
    };
    assert!(matches!(
        decide(&s, &f.in_wave[0], &pin, &f.thresholds, T1),
        Decision::Pinned { version: 5, .. }
    ));
    // The expired pin lapses to Ga: paused, stay.
    assert_eq!(
        decide(&s, &f.in_wave[0], &pin, &f.thresholds, T1.plus_hours(1)),
        stay(StayReason::RolloutPaused)
    );
}

#[test]
fn halted_with_revert_sends_everyone_back_to_last_known_good() {
    let f = fixture(detections());
    let s = halted(&f.channel, true);
    for p in [
        Policy::Ga,
        Policy::Early,
        Policy::Pause,
        delay(0),
        delay(24),
        delay(72),
    ] {
        for w in 0..5 {
            assert_eq!(
                decide(&s, &f.in_wave[w], &p, &f.thresholds, T1.plus_hours(1)),
                REVERT,
                "{p:?} wave {w}"
            );
        }
    }
    // A pin to the halted release does not protect it; a pin to another version holds.
    let expires_at = T1.plus_hours(5);
    let pin7 = Policy::Pin {
        version: 7,
        expires_at,
    };
    let pin5 = Policy::Pin {
        version: 5,
        expires_at,
    };
    assert_eq!(decide(&s, &f.in_wave[0], &pin7, &f.thresholds, T1), REVERT);
    assert_eq!(
        decide(&s, &f.in_wave[0], &pin5, &f.thresholds, T1),
        Decision::Pinned {
            version: 5,
            expires_at
        }
    );
    // Expired pins lapse to Ga: revert.
    assert_eq!(
        decide(&s, &f.in_wave[0], &pin5, &f.thresholds, expires_at),
        REVERT
    );
}

#[test]
fn halted_without_revert_keeps_what_runs() {
    let f = fixture(detections());
    let s = halted(&f.channel, false);
    for p in [
        Policy::Ga,
        Policy::Early,
        Policy::Pause,
        delay(0),
        delay(72),
    ] {
        for w in 0..5 {
            assert_eq!(
                decide(&s, &f.in_wave[w], &p, &f.thresholds, T1),
                stay(StayReason::RolloutHalted)
            );
        }
    }
    let pin7 = Policy::Pin {
        version: 7,
        expires_at: T1.plus_hours(5),
    };
    assert!(matches!(
        decide(&s, &f.in_wave[0], &pin7, &f.thresholds, T1),
        Decision::Pinned { version: 7, .. }
    ));
}

#[test]
fn complete_rollout_runs_everywhere_policies_allow() {
    let f = fixture(detections());
    let s = complete(&f.channel);
    let now = T0.plus_hours(200);
    for w in 0..5 {
        assert_eq!(
            decide(&s, &f.in_wave[w], &Policy::Ga, &f.thresholds, now),
            run()
        );
        assert_eq!(
            decide(&s, &f.in_wave[w], &Policy::Early, &f.thresholds, now),
            run()
        );
        assert_eq!(
            decide(&s, &f.in_wave[w], &delay(72), &f.thresholds, now),
            run()
        );
        assert_eq!(
            decide(&s, &f.in_wave[w], &Policy::Pause, &f.thresholds, now),
            stay(StayReason::PolicyPause)
        );
    }
}

/// Given valid inputs, the decision that skips their validation is the same decision, for every
/// status, policy, wave and time of these fixtures.
#[test]
fn decide_validated_and_decide_placed_agree_with_decide_on_valid_inputs() {
    let f = fixture(detections());
    let states = [
        progressing(&f.channel),
        paused(&f.channel),
        halted(&f.channel, true),
        halted(&f.channel, false),
        complete(&f.channel),
    ];
    let policies = [
        Policy::Ga,
        Policy::Early,
        Policy::Pause,
        delay(3),
        delay(72),
        Policy::Pin {
            version: 6,
            expires_at: T0.plus_hours(10),
        },
    ];
    let mut compared = 0;
    for s in &states {
        assert!(s.validate().is_ok());
        for p in &policies {
            for e in &f.in_wave {
                for h in [0, 1, 2, 5, 11, 100, 400] {
                    let now = T0.plus_hours(h);
                    let decided = decide(s, e, p, &f.thresholds, now);
                    assert_eq!(
                        decide_validated(s, e, p, &f.thresholds, now),
                        decided,
                        "{s:?} {p:?} {e:?} {now:?}"
                    );
                    // A kept placement decides the same, whether kept for this channel or
                    // another (then its position is computed for this one).
                    for kept in [f.channel.name.as_str(), "another-channel"] {
                        let placement = Placement::of(e, kept);
                        assert_eq!(
                            decide_placed(s, &placement, p, &f.thresholds, now),
                            decided,
                            "{s:?} {p:?} {e:?} {now:?} kept for {kept}"
                        );
                    }
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 5 * 6 * 5 * 7);
}

#[test]
fn bad_inputs_fail_closed() {
    let f = fixture(detections());
    let s = progressing(&f.channel);
    // Thresholds of another channel: stay (Early needs no thresholds and still runs).
    let other = fixture(Channel::new("other", false));
    assert!(matches!(
        decide(&s, &f.in_wave[0], &Policy::Ga, &other.thresholds, T1),
        Decision::Stay {
            reason: StayReason::InvalidThresholds { .. }
        }
    ));
    assert_eq!(
        decide(&s, &f.in_wave[0], &Policy::Early, &other.thresholds, T1),
        run()
    );
    // Thresholds whose last wave does not cover everything.
    let mut short = f.thresholds.clone();
    short.strata[0].thresholds[4] = 999_999;
    assert!(matches!(
        decide(&s, &f.in_wave[0], &Policy::Ga, &short, T1),
        Decision::Stay {
            reason: StayReason::InvalidThresholds { .. }
        }
    ));
    // An inconsistent state (a wave open without an opening time): stay, even if reverting.
    let mut broken = halted(&f.channel, true);
    broken.wave_opened_at[1] = None;
    assert!(matches!(
        decide(&broken, &f.in_wave[0], &Policy::Ga, &f.thresholds, T1),
        Decision::Stay {
            reason: StayReason::InvalidState { .. }
        }
    ));
}
