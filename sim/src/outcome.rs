//! What a run measured: the `--json` object ([`Outcome`]) and the time series behind the report's
//! charts ([`Timeline`]).
//!
//! Every figure is computed from the timeline and the per-endpoint counts by the functions here,
//! so the JSON and the charts cannot disagree. Real numbers are rounded ([`round`]) before they
//! are printed: the same seed gives the same JSON, byte for byte.

use serde::{Deserialize, Serialize};

/// One sample of the fleet, taken every [`Timeline::sample_minutes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Minutes from the start of the simulation.
    pub minute: u64,
    /// Endpoints on line.
    pub online: u64,
    /// Endpoints whose content is the release (running it, or on line last with it).
    pub on_release: u64,
    /// Endpoints whose content is the previous release.
    pub on_previous: u64,
    /// Endpoints crashing or booting right now (neither running content nor off line by choice).
    pub down: u64,
    /// Crashes caused by the release since the previous sample.
    pub release_crashes: u64,
    /// Crashes unrelated to content since the previous sample.
    pub baseline_crashes: u64,
    /// Guard reverts (quarantines included) since the previous sample.
    pub reverts: u64,
}

/// One wave's figures.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WaveStats {
    /// The wave's name.
    pub name: String,
    /// Endpoints whose ring position falls in this wave.
    pub endpoints: u64,
    /// When it opened, in minutes from the release's start (`None`: never).
    pub opened_after_minutes: Option<u64>,
    /// Endpoints of the wave that ran the release at least once.
    pub exposed: u64,
    /// Endpoints of the wave that crashed at least once because of the release.
    pub crashed: u64,
    /// Crashes caused by the release in the wave.
    pub crashes: u64,
    /// Guard reverts in the wave.
    pub reverts: u64,
    /// Quarantines in the wave.
    pub quarantines: u64,
}

/// The fleet over time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timeline {
    /// Endpoints simulated.
    pub endpoints: u64,
    /// Minutes between samples.
    pub sample_minutes: u64,
    /// When the release was published, in minutes from the start.
    pub release_start_minute: u64,
    /// When the controller halted it, in minutes from the start (`None`: never).
    pub halt_minute: Option<u64>,
    /// Why, in the controller's words.
    pub halt_reason: Option<String>,
    /// The samples, in order of time.
    pub samples: Vec<Sample>,
    /// The plan's waves.
    pub waves: Vec<WaveStats>,
}

/// Per endpoint, what the release did to it (the engine fills one per endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointTally {
    /// Crashes the release caused on this endpoint.
    pub release_crashes: u64,
    /// At the end: stuck in a boot loop or otherwise unusable, with no way back without a
    /// person (the guard's records lost, or crashing on last-known-good).
    pub bricked: bool,
    /// User processes the release denied on this endpoint.
    pub blocked_processes: u64,
}

/// The `--json` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// How the endpoints reached the rollout server: `inproc` (the server model in process) or
    /// `http` (the real `bulwark-server` over TLS on loopback).
    pub transport: String,
    /// Endpoints simulated.
    pub endpoints: u64,
    /// Simulated hours.
    pub simulated_hours: u64,
    /// Endpoints left in a boot loop or unusable, without recovery.
    pub bricked: u64,
    /// Endpoints that crashed at least once because of the release.
    pub crashed_once: u64,
    /// The most crashes the release caused on one endpoint.
    pub max_crashes_per_endpoint: u64,
    /// Whether the controller halted the release.
    pub halted: bool,
    /// Why, in the controller's words.
    pub halt_reason: Option<String>,
    /// Minutes from the release's start to its first crash.
    pub first_crash_after_minutes: Option<f64>,
    /// Minutes from the release's start to the halt.
    pub halt_after_minutes: Option<f64>,
    /// The fleet's share on the release at the end.
    pub final_fraction_on_release: f64,
    /// Hours from the release's start until 95% of the fleet is on it.
    pub hours_to_95pct: Option<f64>,
    /// User processes the release's block rules denied, fleet-wide (`block-storm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_processes: Option<u64>,
    /// Endpoints on which the release denied at least one user process (`block-storm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints_with_blocks: Option<u64>,
    /// With `--releases K`: how many of K good releases were halted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub false_halts: Option<u64>,
    /// With `--releases K`: K.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub releases: Option<u64>,
    /// Each wave's figures.
    pub waves: Vec<WaveStats>,
}

/// `x` rounded to `decimals` places (half away from zero), for stable printing.
#[must_use]
pub fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

impl Timeline {
    /// Minutes from the release's start to the first sample with a crash it caused (the sample's
    /// minute: the crash happened in the interval ending there).
    #[must_use]
    pub fn first_release_crash_minute(&self) -> Option<u64> {
        self.samples
            .iter()
            .find(|s| s.release_crashes > 0)
            .map(|s| s.minute.saturating_sub(self.release_start_minute))
    }

    /// Hours from the release's start until the share of the fleet on it first reaches
    /// `fraction`.
    #[must_use]
    pub fn hours_to_fraction(&self, fraction: f64) -> Option<f64> {
        if self.endpoints == 0 {
            return None;
        }
        self.samples
            .iter()
            .filter(|s| s.minute >= self.release_start_minute)
            .find(|s| s.on_release as f64 >= fraction * self.endpoints as f64)
            .map(|s| s.minute.saturating_sub(self.release_start_minute) as f64 / 60.0)
    }

    /// The share of the fleet on the release in the last sample.
    #[must_use]
    pub fn final_fraction_on_release(&self) -> f64 {
        match (self.samples.last(), self.endpoints) {
            (Some(s), n) if n > 0 => s.on_release as f64 / n as f64,
            _ => 0.0,
        }
    }
}

impl Outcome {
    /// The outcome of one run, from its timeline and per-endpoint tallies. `first_crash_minute`
    /// is the exact minute (from the release's start) of the release's first crash, when the
    /// engine knows it; otherwise the timeline's sample is used.
    #[must_use]
    pub fn from_run(
        scenario: &str,
        seed: u64,
        simulated_hours: u64,
        timeline: &Timeline,
        tallies: &[EndpointTally],
        first_crash_minute: Option<f64>,
    ) -> Outcome {
        let crashed_once = tallies.iter().filter(|t| t.release_crashes > 0).count() as u64;
        let first_crash =
            first_crash_minute.or_else(|| timeline.first_release_crash_minute().map(|m| m as f64));
        Outcome {
            scenario: scenario.to_owned(),
            transport: "inproc".to_owned(),
            seed,
            endpoints: timeline.endpoints,
            simulated_hours,
            bricked: tallies.iter().filter(|t| t.bricked).count() as u64,
            crashed_once,
            max_crashes_per_endpoint: tallies.iter().map(|t| t.release_crashes).max().unwrap_or(0),
            halted: timeline.halt_minute.is_some(),
            halt_reason: timeline.halt_reason.clone(),
            first_crash_after_minutes: first_crash.map(|m| round(m, 1)),
            halt_after_minutes: timeline
                .halt_minute
                .map(|m| round(m.saturating_sub(timeline.release_start_minute) as f64, 1)),
            final_fraction_on_release: round(timeline.final_fraction_on_release(), 4),
            hours_to_95pct: timeline.hours_to_fraction(0.95).map(|h| round(h, 2)),
            blocked_processes: None,
            endpoints_with_blocks: None,
            false_halts: None,
            releases: None,
            waves: timeline.waves.clone(),
        }
    }

    /// The JSON object, one line.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline() -> Timeline {
        let mut samples = Vec::new();
        for m in (0..=600).step_by(10) {
            samples.push(Sample {
                minute: m,
                online: 100,
                // the release starts at minute 60 and reaches 10 endpoints per 10 minutes
                on_release: if m >= 60 {
                    ((m - 60) / 10 * 10).min(100)
                } else {
                    0
                },
                release_crashes: u64::from(m == 130),
                ..Sample::default()
            });
        }
        Timeline {
            endpoints: 100,
            sample_minutes: 10,
            release_start_minute: 60,
            halt_minute: Some(150),
            halt_reason: Some("crash rate".into()),
            samples,
            waves: vec![],
        }
    }

    #[test]
    fn figures_come_from_the_timeline() {
        let t = timeline();
        assert_eq!(t.first_release_crash_minute(), Some(70));
        // 95 endpoints at 60 + 100 minutes: the sample at 160 has (160-60)/10*10 = 100
        assert_eq!(t.hours_to_fraction(0.95), Some(100.0 / 60.0));
        assert_eq!(t.hours_to_fraction(0.5), Some(50.0 / 60.0));
        assert_eq!(t.final_fraction_on_release(), 1.0);
        let tallies = [
            EndpointTally {
                release_crashes: 3,
                bricked: false,
                blocked_processes: 0,
            },
            EndpointTally {
                release_crashes: 1,
                bricked: true,
                blocked_processes: 0,
            },
            EndpointTally::default(),
        ];
        let o = Outcome::from_run("x", 7, 10, &t, &tallies, None);
        assert_eq!(o.crashed_once, 2);
        assert_eq!(o.bricked, 1);
        assert_eq!(o.max_crashes_per_endpoint, 3);
        assert!(o.halted);
        assert_eq!(o.halt_after_minutes, Some(90.0));
        assert_eq!(o.first_crash_after_minutes, Some(70.0));
        assert_eq!(o.hours_to_95pct, Some(1.67));
        let o = Outcome::from_run("x", 7, 10, &t, &tallies, Some(64.25));
        assert_eq!(o.first_crash_after_minutes, Some(64.3));
    }

    #[test]
    fn never_reached_is_null() {
        let mut t = timeline();
        for s in &mut t.samples {
            s.on_release = s.on_release.min(50);
            s.release_crashes = 0;
        }
        t.halt_minute = None;
        let o = Outcome::from_run("x", 1, 10, &t, &[], None);
        assert_eq!(o.hours_to_95pct, None);
        assert_eq!(o.first_crash_after_minutes, None);
        assert_eq!(o.halt_after_minutes, None);
        assert!(!o.halted);
        let json: serde_json::Value = serde_json::from_str(&o.to_json()).unwrap();
        for key in [
            "scenario",
            "endpoints",
            "simulated_hours",
            "bricked",
            "crashed_once",
            "max_crashes_per_endpoint",
            "halted",
            "first_crash_after_minutes",
            "halt_after_minutes",
            "final_fraction_on_release",
            "hours_to_95pct",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert!(json["hours_to_95pct"].is_null());
        assert!(json.get("false_halts").is_none());
    }

    #[test]
    fn rounding_is_stable() {
        assert_eq!(round(1.0 / 3.0, 4), 0.3333);
        assert_eq!(round(2.675, 1), 2.7);
        assert_eq!(round(-0.05, 1), -0.1);
    }
}
