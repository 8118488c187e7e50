//! Endpoint policies and the policy table: validation, resolution, pin expiry.

mod common;

use bulwark_rollout::policy::{ActivePin, Policy, PolicyError, PolicyTable};
use bulwark_rollout::time::Timestamp;
use common::{critical, detections};

const NOW: Timestamp = Timestamp(1_700_000_000);

#[test]
fn pause_is_refused_for_critical_channels() {
    let channels = [detections(), critical()];
    let mut t = PolicyTable::default();
    t.set("lab", "detections", Policy::Pause);
    assert_eq!(t.validate(&channels), Ok(()));
    t.set("lab", "critical", Policy::Pause);
    let err = t.validate(&channels).unwrap_err();
    assert_eq!(
        err,
        PolicyError::PauseOnCriticalChannel {
            scope: "host group \"lab\"".into(),
            channel: "critical".into()
        }
    );
    assert!(
        err.to_string().contains("refused on critical channel"),
        "{err}"
    );
    // A default of Pause would apply to the critical channel too.
    let t = PolicyTable::new(Policy::Pause);
    assert_eq!(
        t.validate(&channels),
        Err(PolicyError::PauseOnCriticalChannel {
            scope: "default policy".into(),
            channel: "critical".into()
        })
    );
    assert_eq!(t.validate(&[detections()]), Ok(()));
    // Delays and pins are allowed on critical channels (both bounded in time).
    let mut t = PolicyTable::default();
    t.set("lab", "critical", Policy::Delay { hours: 72 });
    assert_eq!(t.validate(&channels), Ok(()));
}

#[test]
fn validation_errors_are_precise() {
    let channels = [detections(), critical()];
    let mut t = PolicyTable::default();
    t.set("servers", "detections", Policy::Delay { hours: 73 });
    assert_eq!(
        t.validate(&channels),
        Err(PolicyError::DelayTooLong {
            scope: "host group \"servers\"".into(),
            channel: "detections".into(),
            hours: 73
        })
    );
    let mut t = PolicyTable::default();
    t.set("servers", "nope", Policy::Ga);
    assert_eq!(
        t.validate(&channels),
        Err(PolicyError::UnknownChannel {
            host_group: "servers".into(),
            channel: "nope".into()
        })
    );
    let mut t = PolicyTable::default();
    t.set(
        "servers",
        "detections",
        Policy::Pin {
            version: 0,
            expires_at: NOW,
        },
    );
    assert!(matches!(
        t.validate(&channels),
        Err(PolicyError::PinToVersionZero { .. })
    ));
    let mut t = PolicyTable::default();
    t.set("", "detections", Policy::Ga);
    assert!(matches!(
        t.validate(&channels),
        Err(PolicyError::EmptyHostGroup { .. })
    ));
    // Duplicates can only come from a table built by hand or received.
    let mut t = PolicyTable::default();
    t.set("a", "detections", Policy::Ga);
    t.entries.push(t.entries[0].clone());
    assert_eq!(
        t.validate(&channels),
        Err(PolicyError::Duplicate {
            host_group: "a".into(),
            channel: "detections".into()
        })
    );
    // Delay 0 and 72 are the bounds, both valid.
    let mut t = PolicyTable::default();
    t.set("a", "detections", Policy::Delay { hours: 0 });
    t.set("b", "detections", Policy::Delay { hours: 72 });
    assert_eq!(t.validate(&channels), Ok(()));
}

#[test]
fn resolution_by_group_and_channel_with_a_default() {
    let mut t = PolicyTable::new(Policy::Delay { hours: 4 });
    t.set("lab", "detections", Policy::Early);
    t.set("lab", "critical", Policy::Ga);
    t.set("dc", "detections", Policy::Pause);
    assert_eq!(t.resolve("lab", "detections"), &Policy::Early);
    assert_eq!(t.resolve("lab", "critical"), &Policy::Ga);
    assert_eq!(t.resolve("dc", "detections"), &Policy::Pause);
    assert_eq!(t.resolve("dc", "critical"), &Policy::Delay { hours: 4 });
    assert_eq!(
        t.resolve("other", "detections"),
        &Policy::Delay { hours: 4 }
    );
    // Setting again replaces; entries stay sorted and unique.
    t.set("lab", "detections", Policy::Ga);
    assert_eq!(t.resolve("lab", "detections"), &Policy::Ga);
    assert_eq!(t.entries.len(), 3);
    let keys: Vec<_> = t
        .entries
        .iter()
        .map(|e| (e.host_group.as_str(), e.channel.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("dc", "detections"),
            ("lab", "critical"),
            ("lab", "detections")
        ]
    );
}

#[test]
fn a_pin_is_reported_while_active_and_lapses_to_ga_on_its_own() {
    let expires_at = NOW.plus_hours(24);
    let pin = Policy::Pin {
        version: 41,
        expires_at,
    };
    let ch = detections();
    let mut t = PolicyTable::default();
    t.set("finance", "detections", pin.clone());

    // Before expiry: in force and reported.
    let before = Timestamp(expires_at.0 - 1);
    assert!(pin.is_active_pin(before));
    assert_eq!(pin.effective(&ch, before), pin);
    assert_eq!(
        t.active_pins(before),
        vec![ActivePin {
            host_group: Some("finance".into()),
            channel: Some("detections".into()),
            version: 41,
            expires_at
        }]
    );
    // At expiry and after: lapsed to Ga, no longer reported, with nobody editing the table.
    for now in [expires_at, expires_at.plus_hours(1000)] {
        assert!(!pin.is_active_pin(now));
        assert_eq!(pin.effective(&ch, now), Policy::Ga);
        assert_eq!(t.active_pins(now), vec![]);
    }
    // A default pin is reported too, for every group and channel.
    let t = PolicyTable::new(pin);
    assert_eq!(t.active_pins(before)[0].host_group, None);
}

#[test]
fn the_table_round_trips_through_json() {
    let mut t = PolicyTable::new(Policy::Ga);
    t.set(
        "finance",
        "detections",
        Policy::Pin {
            version: 41,
            expires_at: NOW,
        },
    );
    t.set("lab", "detections", Policy::Delay { hours: 24 });
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(serde_json::from_str::<PolicyTable>(&json).unwrap(), t);
}
