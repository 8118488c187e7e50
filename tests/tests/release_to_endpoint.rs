//! A release from the release engineers' keys to the endpoints' decisions, across the crates that
//! carry it: the rollout model starts it and halts it, the distribution metadata signs it, and
//! each endpoint verifies what it fetched before deciding what to run. The first wave (and only
//! it) takes the release, every stratum in it; a halt with revert tells every endpoint to go back
//! to its last-known-good if it runs the release; metadata the online key forged, replayed or let
//! go stale changes nothing.

use bulwark_distribution::{sign, Releases, Role, Rollout, Root, TrustState};
use bulwark_rollout::{
    decide, halt, revert, start, Census, Channel, Decision, EndpointFacts, EndpointId, Plan,
    Release, Timestamp, WaveThresholds,
};
use ed25519_dalek::SigningKey;

const T0: Timestamp = Timestamp(1_800_000_000);
const DAY: u64 = 86_400;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn release(version: u64) -> Release {
    Release {
        channel: "detections".to_owned(),
        version,
        pack_hash: [version as u8; 32],
        envelope_sha256: [version as u8 + 100; 32],
        notes: format!("release {version}"),
    }
}

/// 20,000 endpoints on 3 Windows builds (one rare) and 2 hardware classes.
fn fleet() -> Vec<EndpointFacts> {
    (0u32..20_000)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            EndpointFacts {
                id: EndpointId(id),
                os_build: match i % 100 {
                    0 => "10.0.17763".to_owned(),
                    1..=49 => "10.0.19045".to_owned(),
                    _ => "10.0.22631".to_owned(),
                },
                hw_class: if i % 3 == 0 { "vm" } else { "laptop" }.to_owned(),
                host_group: "default".to_owned(),
            }
        })
        .collect()
}

#[test]
fn a_release_reaches_its_first_wave_and_a_halt_with_revert_reaches_every_endpoint() {
    let root_keys = [key(1), key(2)];
    let release_keys = [key(11)];
    let online = key(21);
    let root = Root::new(1, T0.plus_secs(365 * DAY))
        .with_role(
            Role::Root,
            &root_keys.each_ref().map(|k| k.verifying_key().to_bytes()),
            2,
        )
        .with_role(
            Role::Releases,
            &[release_keys[0].verifying_key().to_bytes()],
            1,
        )
        .with_role(Role::Rollout, &[online.verifying_key().to_bytes()], 1);
    let root_file = sign(&root, &[&root_keys[0], &root_keys[1]]).unwrap();

    // Release engineers sign release 2; the server starts its rollout and signs the state.
    let releases = Releases::new(1, T0.plus_secs(30 * DAY)).with(&release(2));
    let releases_file = sign(&releases, &[&release_keys[0]]).unwrap();
    let channel = Channel::new("detections", false);
    let plan = Plan::default_plan();
    let (rollout, _) = start(channel.clone(), release(2), plan.clone(), None, T0).unwrap();
    let mut state = bulwark_rollout::RolloutState::default();
    state
        .channels
        .insert("detections".to_owned(), rollout.clone());
    let endpoints = fleet();
    let census = Census::from_endpoints("detections", &endpoints);
    let thresholds = WaveThresholds::compute(&plan, &census, "detections").unwrap();
    let signed = |version: u64, state: &bulwark_rollout::RolloutState, key: &SigningKey| {
        sign(
            &Rollout::new(
                version,
                T0.plus_secs(DAY),
                1,
                state.clone(),
                std::collections::BTreeMap::from([("detections".to_owned(), thresholds.clone())]),
                bulwark_rollout::PolicyTable::default(),
            ),
            &[key],
        )
        .unwrap()
    };
    let rollout_v1 = signed(1, &state, &online);

    // Every endpoint verifies the chain, then decides.
    let now = T0.plus_secs(60);
    let decisions = |trust: &TrustState| -> Vec<Decision> {
        let signed = trust.current(now).unwrap().expect("a verified rollout");
        let rollout = signed.state.channel("detections").unwrap();
        // The thresholds and policies come signed with the state.
        let thresholds = &signed.thresholds["detections"];
        endpoints
            .iter()
            .map(|e| {
                let policy = signed.policies.resolve(&e.host_group, "detections");
                decide(rollout, e, policy, thresholds, now)
            })
            .collect()
    };
    let mut trust = TrustState::bootstrap(&root_file).unwrap();
    trust.update_releases(&releases_file, now).unwrap();
    trust.update_rollout(&rollout_v1, now).unwrap();
    let first = decisions(&trust);
    let took: Vec<usize> = first
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d, Decision::Run { version: 2, .. }))
        .map(|(i, _)| i)
        .collect();
    // The first wave is 0.1%: about 20 of 20,000, and every stratum among them (the rare build
    // too).
    assert!((15..=40).contains(&took.len()), "{} took it", took.len());
    for build in ["10.0.17763", "10.0.19045", "10.0.22631"] {
        assert!(
            took.iter().any(|&i| endpoints[i].os_build == build),
            "no {build} endpoint in the first wave"
        );
    }
    assert!(first
        .iter()
        .all(|d| matches!(d, Decision::Run { .. } | Decision::Stay { .. })));

    // A compromised online key cannot ship a pack nobody released.
    let mut forged = state.clone();
    let mut bad = rollout.clone();
    bad.release = release(3);
    forged.channels.insert("detections".to_owned(), bad);
    assert!(trust
        .update_rollout(&signed(2, &forged, &online), now)
        .is_err());
    assert_eq!(decisions(&trust), first, "a refused file changes nothing");

    // The canary crashes: halted and reverted, signed as rollout 2.
    let (halted, _) = halt(&rollout, "crashes in canary", now).unwrap();
    let (reverted, _) = revert(&halted, now).unwrap();
    state.channels.insert("detections".to_owned(), reverted);
    trust
        .update_rollout(&signed(2, &state, &online), now)
        .unwrap();
    let after = decisions(&trust);
    for (i, d) in after.iter().enumerate() {
        assert_eq!(
            d,
            &Decision::RevertToLastKnownGood { halted_version: 2 },
            "endpoint {i}: every endpoint is told the release is halted with revert"
        );
    }
    // The older, progressing rollout cannot be replayed to undo the halt.
    assert!(trust.update_rollout(&rollout_v1, now).is_err());

    // A server that stops signing leaves endpoints with a state that expires, and then none.
    assert!(trust.current_rollout(T0.plus_secs(DAY)).is_err());
}
