//! Stratified wave membership: every stratum is seen in the first wave, waves hold their fraction,
//! membership only grows.

mod common;

use bulwark_rollout::census::Census;
use bulwark_rollout::endpoint::{EndpointFacts, Stratum};
use bulwark_rollout::plan::{Plan, Wave, WHOLE_FLEET_PPM};
use bulwark_rollout::position::position;
use bulwark_rollout::thresholds::{ThresholdsError, WaveThresholds};
use common::{facts, Rng};
use std::collections::{BTreeMap, BTreeSet};

const CHANNEL: &str = "detections";

/// 100,000 endpoints: 7 OS builds of very different sizes (the smallest 30 machines) crossed with
/// 4 hardware classes of different shares.
fn fleet() -> Vec<EndpointFacts> {
    let builds = [
        ("10.0.19045", 41_000),
        ("10.0.22631", 30_000),
        ("10.0.22621", 15_000),
        ("10.0.19044", 8_000),
        ("10.0.26100", 4_470),
        ("6.3.9600", 1_500),
        ("10.0.17763", 30),
    ];
    let hw = [
        ("x64-laptop", 0.5),
        ("x64-desktop", 0.3),
        ("x64-vm", 0.15),
        ("arm64", 0.05),
    ];
    let mut rng = Rng(291);
    let mut n = 0u64;
    let mut out = Vec::new();
    for (build, count) in builds {
        for i in 0..count {
            // The first four machines of each build cover the hardware classes; the rest by share.
            let class = if i < 4 {
                hw[i].0
            } else {
                let u = rng.unit();
                let mut acc = 0.0;
                hw.iter()
                    .find(|(_, share)| {
                        acc += share;
                        u < acc
                    })
                    .map_or(hw[3].0, |(c, _)| c)
            };
            out.push(facts(n, build, class, "all"));
            n += 1;
        }
    }
    assert_eq!(out.len(), 100_000);
    out
}

/// Per wave: the endpoints whose wave is at most that wave (the cumulative set).
fn cumulative_sizes(t: &WaveThresholds, fleet: &[EndpointFacts], waves: usize) -> Vec<usize> {
    let mut sizes = vec![0usize; waves];
    for f in fleet {
        let w = t.wave_of(f).expect("every endpoint has a wave");
        for s in sizes.iter_mut().skip(w) {
            *s += 1;
        }
    }
    sizes
}

#[test]
fn the_first_wave_holds_every_stratum_and_waves_hold_their_fractions() {
    let fleet = fleet();
    let plan = Plan::default_plan();
    let census = Census::from_endpoints(CHANNEL, &fleet);
    let strata: BTreeSet<Stratum> = fleet.iter().map(EndpointFacts::stratum).collect();
    assert_eq!(strata.len(), 28);
    assert_eq!(census.strata().count(), 28);
    let t = WaveThresholds::compute(&plan, &census, CHANNEL).unwrap();
    assert_eq!(t.validate(&plan, CHANNEL), Ok(()));

    // Every stratum, including the 30-machine build's, has an endpoint in wave 0 (0.1%).
    let first: BTreeSet<Stratum> = fleet
        .iter()
        .filter(|f| t.wave_of(f) == Some(0))
        .map(EndpointFacts::stratum)
        .collect();
    assert_eq!(first, strata);

    // The plain fraction would have missed some: the smallest strata have nobody below 1,000 ppm.
    let plain_first: BTreeSet<Stratum> = fleet
        .iter()
        .filter(|f| position(&f.id, CHANNEL) < 1_000)
        .map(EndpointFacts::stratum)
        .collect();
    assert!(plain_first.len() < strata.len(), "{}", plain_first.len());

    // Each wave's cumulative size is its fraction of 100,000, give or take one endpoint per
    // stratum (rounding, and the one forced in).
    let sizes = cumulative_sizes(&t, &fleet, plan.waves.len());
    for (w, wave) in plan.waves.iter().enumerate() {
        let target = 100_000 * wave.fraction_ppm as usize / 1_000_000;
        let off = sizes[w].abs_diff(target);
        assert!(off <= strata.len(), "wave {w}: {} vs {target}", sizes[w]);
    }
    assert_eq!(sizes[4], 100_000);

    // And every stratum holds its own fraction in every wave (exactly, up to rounding and ties).
    for (stratum, positions) in census.strata() {
        let n = positions.len();
        let th = t.for_stratum(stratum);
        for (w, wave) in plan.waves.iter().enumerate() {
            let inside = positions.iter().filter(|&&p| p < th[w]).count();
            let want = ((n as u64 * u64::from(wave.fraction_ppm) + 500_000) / 1_000_000) as usize;
            let want = want.max(1).min(n);
            assert!(
                inside >= want && inside <= want + 1,
                "{stratum} wave {w}: {inside} of {n}, want {want}"
            );
        }
    }
}

#[test]
fn membership_is_monotonic() {
    let fleet = fleet();
    let plan = Plan::default_plan();
    let census = Census::from_endpoints(CHANNEL, &fleet);
    let t = WaveThresholds::compute(&plan, &census, CHANNEL).unwrap();
    for f in &fleet {
        let p = position(&f.id, CHANNEL);
        let th = t.for_stratum(&f.stratum());
        let w = t.wave_of(f).unwrap();
        // In wave w's cumulative set, and in every later one's; in no earlier one's.
        for (k, &threshold) in th.iter().enumerate() {
            assert_eq!(p < threshold, k >= w, "{f:?} wave {k}");
        }
    }
}

#[test]
fn strata_absent_from_the_census_use_the_plain_fraction() {
    let fleet = fleet();
    let plan = Plan::default_plan();
    let census = Census::from_endpoints(CHANNEL, &fleet);
    let t = WaveThresholds::compute(&plan, &census, CHANNEL).unwrap();
    let unknown = Stratum::new("10.0.99999", "riscv");
    assert_eq!(
        t.for_stratum(&unknown),
        [1_000, 10_000, 100_000, 500_000, 1_000_000]
    );
    // Newcomers of a known stratum join waves at about the stratum's fraction.
    let newcomers: Vec<EndpointFacts> = (1_000_000..1_020_000)
        .map(|n| facts(n, "10.0.19045", "x64-laptop", "all"))
        .collect();
    let sizes = cumulative_sizes(&t, &newcomers, 5);
    // 10%: 2,000 expected of 20,000, +- 5 sigma (about 212).
    assert!(sizes[2].abs_diff(2_000) < 212, "{sizes:?}");
    assert!(sizes[3].abs_diff(10_000) < 354, "{sizes:?}");
}

#[test]
fn the_endpoint_decides_from_the_signed_thresholds_alone() {
    // Serialized and read back (what an endpoint receives), the thresholds give every endpoint
    // the same wave as the server's.
    let fleet = fleet();
    let plan = Plan::default_plan();
    let t =
        WaveThresholds::compute(&plan, &Census::from_endpoints(CHANNEL, &fleet), CHANNEL).unwrap();
    let json = serde_json::to_string(&t).unwrap();
    let received: WaveThresholds = serde_json::from_str(&json).unwrap();
    assert_eq!(received, t);
    for f in fleet.iter().step_by(97) {
        assert_eq!(received.wave_of(f), t.wave_of(f));
    }
}

#[test]
fn many_random_fleets_keep_every_property() {
    let mut rng = Rng(19_072_024);
    for fleet_no in 0..30 {
        // Between 200 and 10,000 endpoints, 1 to 40 strata of skewed sizes.
        let size = 200 + rng.below(9_800);
        let strata = 1 + rng.below(40);
        let weights: Vec<f64> = (0..strata).map(|_| rng.unit().powi(4) + 1e-4).collect();
        let total: f64 = weights.iter().sum();
        let fleet: Vec<EndpointFacts> = (0..size)
            .map(|n| {
                let u = rng.unit() * total;
                let mut acc = 0.0;
                let s = weights
                    .iter()
                    .position(|w| {
                        acc += w;
                        u < acc
                    })
                    .unwrap_or(0);
                facts(n + fleet_no * 1_000_000, &format!("build-{s}"), "x64", "g")
            })
            .collect();
        // A random valid plan of 2 to 6 waves.
        let waves = 2 + rng.below(5) as usize;
        let mut fractions: Vec<u32> = (0..waves - 1)
            .map(|_| 1 + rng.below(u64::from(WHOLE_FLEET_PPM) - 1) as u32)
            .collect();
        fractions.sort_unstable();
        fractions.dedup();
        fractions.push(WHOLE_FLEET_PPM);
        let plan = Plan {
            waves: fractions
                .iter()
                .enumerate()
                .map(|(i, &f)| Wave {
                    name: format!("w{i}"),
                    fraction_ppm: f,
                    bake_secs: 0,
                    min_healthy: 1,
                })
                .collect(),
        };
        let census = Census::from_endpoints(CHANNEL, &fleet);
        let t = WaveThresholds::compute(&plan, &census, CHANNEL).unwrap();
        assert_eq!(t.validate(&plan, CHANNEL), Ok(()));

        // The first wave with room holds every stratum; sizes within one per stratum of target.
        let n = fleet.len() as u64;
        let first_room = plan
            .waves
            .iter()
            .position(|w| (n * u64::from(w.fraction_ppm) + 500_000) / 1_000_000 >= 1)
            .unwrap();
        let mut per_wave: BTreeMap<usize, BTreeSet<Stratum>> = BTreeMap::new();
        for f in &fleet {
            per_wave
                .entry(t.wave_of(f).unwrap())
                .or_default()
                .insert(f.stratum());
        }
        let all: BTreeSet<Stratum> = fleet.iter().map(EndpointFacts::stratum).collect();
        let seen_by_first_room: BTreeSet<Stratum> = per_wave
            .range(..=first_room)
            .flat_map(|(_, s)| s.iter().cloned())
            .collect();
        assert_eq!(seen_by_first_room, all, "fleet {fleet_no}");
        let sizes = cumulative_sizes(&t, &fleet, plan.waves.len());
        for (w, wave) in plan.waves.iter().enumerate() {
            let target = (n * u64::from(wave.fraction_ppm) / 1_000_000) as usize;
            assert!(
                sizes[w].abs_diff(target) <= all.len() + 1,
                "fleet {fleet_no} wave {w}: {} vs {target}",
                sizes[w]
            );
        }
        assert_eq!(sizes[plan.waves.len() - 1], fleet.len());
        // Monotonic thresholds everywhere.
        for s in &t.strata {
            assert!(s.thresholds.windows(2).all(|p| p[0] <= p[1]));
        }
    }
}

#[test]
fn thresholds_refuse_a_census_of_another_channel_and_a_bad_plan() {
    let census = Census::new("critical");
    assert!(matches!(
        WaveThresholds::compute(&Plan::default_plan(), &census, CHANNEL),
        Err(ThresholdsError::WrongChannel { .. })
    ));
    assert!(matches!(
        WaveThresholds::compute(&Plan { waves: vec![] }, &Census::new(CHANNEL), CHANNEL),
        Err(ThresholdsError::Plan(_))
    ));
    // An empty census: only the plain fractions.
    let t = WaveThresholds::compute(&Plan::default_plan(), &Census::new(CHANNEL), CHANNEL).unwrap();
    assert!(t.strata.is_empty());
}

#[test]
fn incremental_census_equals_the_batch_one() {
    let fleet: Vec<EndpointFacts> = fleet().into_iter().step_by(50).collect();
    let batch = Census::from_endpoints(CHANNEL, &fleet);
    let mut inc = Census::new(CHANNEL);
    for f in fleet.iter().rev() {
        inc.add(f);
    }
    assert_eq!(inc, batch);
    assert_eq!(inc.len(), fleet.len());
    let mut by_position = Census::new(CHANNEL);
    for f in &fleet {
        by_position
            .insert_position(f.stratum(), position(&f.id, CHANNEL))
            .unwrap();
    }
    assert_eq!(by_position, batch);
    assert!(by_position
        .insert_position(Stratum::new("a", "b"), WHOLE_FLEET_PPM)
        .is_err());
}
