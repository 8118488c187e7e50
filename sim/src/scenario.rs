//! Scenarios: the fleet, what the release does to it, and how it is rolled out.
//!
//! A scenario is a TOML file (`bulwark sim --scenario FILE`) or the name of a built-in one
//! (`sim/scenarios/*.toml`, compiled in: [`builtin`]). Every key has a default, so a scenario file
//! says only what differs from the default fleet and plan; [`Scenario::from_toml`] parses and
//! validates it, and every error names the key (`fleet.os_builds[2].share`) and, for syntax
//! errors, the line and column.
//!
//! ```toml
//! name = "crash-one-build"
//! description = "The release crashes only machines on one OS build, a fifth of the fleet."
//!
//! [fleet]
//! endpoints = 100000
//! os_builds = [{ name = "19045", share = 0.2 }, { name = "22631", share = 0.5 }, { name = "26100", share = 0.3 }]
//!
//! [release]
//! behaviour = "crash-on-load"
//! os_build = "19045"
//!
//! [rollout]
//! plan = "default"
//! ```

use bulwark_rollout::health::HealthConfig;
use bulwark_rollout::plan::{Plan, Wave, WHOLE_FLEET_PPM};
use serde::{Deserialize, Serialize};

/// The most endpoints a scenario may simulate (the in-process engine's memory grows linearly
/// with the fleet).
pub const MAX_ENDPOINTS: u64 = 10_000_000;
/// The longest simulated span, in hours (30 days).
pub const MAX_HOURS: u64 = 30 * 24;

/// A scenario: what is simulated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name (the JSON output's `scenario`).
    pub name: String,
    /// What it shows, for people.
    #[serde(default)]
    pub description: String,
    /// The fleet.
    #[serde(default)]
    pub fleet: Fleet,
    /// What the release does.
    #[serde(default)]
    pub release: Release,
    /// How it is rolled out.
    #[serde(default)]
    pub rollout: Rollout,
    /// Storage faults injected into the guard's records.
    #[serde(default)]
    pub faults: Faults,
}

/// A named share of the fleet (an OS build, a hardware class, a host group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    /// The name the endpoint reports.
    pub name: String,
    /// Its weight; the shares of a list are normalised to sum to 1.
    pub share: f64,
}

fn share(name: &str, share: f64) -> Share {
    Share {
        name: name.to_owned(),
        share,
    }
}

/// The fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleet {
    /// How many endpoints (`--endpoints` overrides it).
    pub endpoints: u64,
    /// Simulated hours.
    pub hours: u64,
    /// OS builds and their shares.
    pub os_builds: Vec<Share>,
    /// Hardware classes and their shares.
    pub hw_classes: Vec<Share>,
    /// Host groups and their shares (endpoint policies are set per host group).
    pub host_groups: Vec<Share>,
    /// For each hour of the day (UTC, 0..24), the probability that an endpoint is on line.
    pub online_by_hour: Vec<f64>,
    /// The service's heartbeat interval, in seconds (each heartbeat comes after a uniformly
    /// random 0..=interval: full jitter).
    pub heartbeat_secs: u64,
    /// Seconds from power-on to the service's first step.
    pub boot_secs: u64,
    /// Crashes unrelated to content, per endpoint per day (a Poisson process): the noise the
    /// health analysis must not mistake for a bad release.
    pub baseline_crashes_per_endpoint_day: f64,
    /// Detections per endpoint-hour from the running content on a healthy machine.
    pub baseline_detections_per_endpoint_hour: f64,
    /// Process creations per endpoint-hour (what a rule that fires on every event fires on).
    pub processes_per_endpoint_hour: f64,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            endpoints: 100_000,
            hours: 48,
            os_builds: vec![
                share("19045", 0.2),
                share("22631", 0.5),
                share("26100", 0.3),
            ],
            hw_classes: vec![
                share("laptop", 0.6),
                share("desktop", 0.3),
                share("server", 0.1),
            ],
            host_groups: vec![share("default", 1.0)],
            // Office hours in one region: most machines on from 7 to 19, a third over night.
            online_by_hour: vec![
                0.35, 0.33, 0.32, 0.32, 0.33, 0.38, 0.5, 0.7, 0.85, 0.9, 0.9, 0.9, 0.88, 0.9, 0.9,
                0.9, 0.88, 0.8, 0.65, 0.5, 0.45, 0.42, 0.4, 0.37,
            ],
            heartbeat_secs: 900,
            boot_secs: 90,
            baseline_crashes_per_endpoint_day: 0.002,
            baseline_detections_per_endpoint_hour: 0.02,
            processes_per_endpoint_hour: 120.0,
        }
    }
}

/// What the release does to the machines that run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Nothing bad: the baseline's noise only.
    Good,
    /// Loading it crashes the machine (Channel File 291): at every boot with it and at a hot
    /// update, with the release's `probability`.
    CrashOnLoad,
    /// It crashes only when staged hot into a running sensor; boots with it are fine.
    CrashOnHotUpdate,
    /// A rule that fires on every process creation: a detection storm.
    FpStorm,
    /// A block rule that matches every process creation: the driver's safety net (system
    /// processes spared, the rule demoted after a burst) keeps the machine usable; the
    /// detections and demotions must halt the release.
    BlockStorm,
}

/// The release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Release {
    /// What it does.
    pub behaviour: Behaviour,
    /// For crashes: the probability that a load (or hot update) on an affected machine crashes.
    pub probability: f64,
    /// Only machines on this OS build are affected (any if absent).
    pub os_build: Option<String>,
    /// Only machines of this hardware class are affected (any if absent).
    pub hw_class: Option<String>,
    /// When the release is published, in minutes from the start of the simulation (the fleet
    /// runs the previous release until then).
    pub start_minute: u64,
}

impl Default for Release {
    fn default() -> Self {
        Release {
            behaviour: Behaviour::Good,
            probability: 1.0,
            os_build: None,
            hw_class: None,
            start_minute: 60,
        }
    }
}

/// Which plan the release goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanName {
    /// `Plan::default_plan`: internal 0.1%, canary 1%, early 10%, broad 50%, all.
    Default,
    /// `Plan::expedited`: the same waves, baking 1.5 to 4 hours.
    Expedited,
    /// One wave of the whole fleet (July 2024).
    OneWave,
    /// The waves listed under `[[rollout.waves]]`.
    Custom,
}

/// How the release is rolled out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rollout {
    /// The plan.
    pub plan: PlanName,
    /// The waves, for `plan = "custom"`.
    pub waves: Vec<Wave>,
    /// Whether the controller analyses health and halts by itself. Off, the waves open on their
    /// bake times alone and nothing halts the release.
    pub health_analysis: bool,
    /// The health analysis's parameters.
    pub health: HealthConfig,
    /// How often the controller steps, in seconds.
    pub controller_tick_secs: u64,
    /// Stage hot into the running sensor (`true`) or for the next boot.
    pub stage_hot: bool,
    /// The service's health window after staging, in seconds, before it confirms healthy.
    pub health_window_secs: u64,
    /// The guard's stable period, in seconds, after which a running candidate is blessed even
    /// without the service's confirmation.
    pub stable_secs: u32,
    /// The guard's threshold: failed boots with a candidate before it is quarantined.
    pub threshold: u8,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            plan: PlanName::Default,
            waves: Vec::new(),
            health_analysis: true,
            health: HealthConfig::default(),
            controller_tick_secs: 60,
            stage_hot: true,
            health_window_secs: 600,
            stable_secs: 600,
            threshold: 3,
        }
    }
}

impl Rollout {
    /// The plan the scenario names (validated by [`Scenario::validate`]).
    #[must_use]
    pub fn plan(&self) -> Plan {
        match self.plan {
            PlanName::Default => Plan::default_plan(),
            PlanName::Expedited => Plan::expedited(),
            PlanName::OneWave => one_wave(),
            PlanName::Custom => Plan {
                waves: self.waves.clone(),
            },
        }
    }
}

/// One wave of the whole fleet, no bake (July 2024's rollout; and how the previous release is
/// recorded as completed before a run).
#[must_use]
pub fn one_wave() -> Plan {
    Plan {
        waves: vec![Wave {
            name: "all".to_owned(),
            fraction_ppm: WHOLE_FLEET_PPM,
            bake_secs: 0,
            min_healthy: 1,
        }],
    }
}

/// Storage faults injected into the guard's records on every endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Probability that power is cut during a given write of the guard's records or blobs.
    pub power_cut_per_write: f64,
    /// Of the power cuts, the share that tear the write (the rest lose it whole).
    pub torn_share: f64,
}

impl Default for Faults {
    /// One write in 100,000. A cut per write falls where the writes are: a machine taking a
    /// release writes three or four times at that moment, so at one in 1,000 a fleet taking a
    /// good release lost power on one machine in 300 as it did (35 times the baseline's crash
    /// rate in the wave just opened), and the health analysis halted the release for it. Power
    /// cuts strike by the clock, not by the write; this rate keeps them rare at the moments that
    /// matter while the guard still meets torn records (the tests raise it).
    fn default() -> Self {
        Faults {
            power_cut_per_write: 0.000_01,
            torn_share: 0.5,
        }
    }
}

/// What is wrong with a scenario: the key, and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    /// The TOML does not parse or does not fit the schema.
    #[error("{0}")]
    Syntax(String),
    /// A value is out of range or inconsistent.
    #[error("{key}: {problem}")]
    Invalid {
        /// The key, as written in the file (`fleet.os_builds[2].share`).
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// No built-in scenario has that name, and no such file exists.
    #[error("no scenario {0:?}: not a file, and not a built-in ({builtins})", builtins = BUILTIN_NAMES.join(", "))]
    Unknown(String),
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The built-in scenarios, by name.
pub const BUILTIN_NAMES: &[&str] = &[
    "good",
    "crash-on-load",
    "crash-one-build",
    "fp-storm",
    "block-storm",
    "all-at-once",
];

/// The text of a built-in scenario.
#[must_use]
pub fn builtin_text(name: &str) -> Option<&'static str> {
    Some(match name {
        "good" => include_str!("../scenarios/good.toml"),
        "crash-on-load" => include_str!("../scenarios/crash-on-load.toml"),
        "crash-one-build" => include_str!("../scenarios/crash-one-build.toml"),
        "fp-storm" => include_str!("../scenarios/fp-storm.toml"),
        "block-storm" => include_str!("../scenarios/block-storm.toml"),
        "all-at-once" => include_str!("../scenarios/all-at-once.toml"),
        _ => return None,
    })
}

/// A built-in scenario, parsed.
pub fn builtin(name: &str) -> Result<Scenario, ScenarioError> {
    let text = builtin_text(name).ok_or_else(|| ScenarioError::Unknown(name.to_owned()))?;
    Scenario::from_toml(text)
}

fn check_shares(key: &str, list: &[Share]) -> Result<(), ScenarioError> {
    if list.is_empty() {
        return Err(invalid(key, "the list is empty"));
    }
    let mut total = 0.0;
    for (i, s) in list.iter().enumerate() {
        if s.name.is_empty() || s.name.len() > 64 {
            return Err(invalid(
                format!("{key}[{i}].name"),
                "must be 1 to 64 characters",
            ));
        }
        if list[..i].iter().any(|o| o.name == s.name) {
            return Err(invalid(
                format!("{key}[{i}].name"),
                format!("{:?} is listed twice", s.name),
            ));
        }
        if !s.share.is_finite() || s.share < 0.0 {
            return Err(invalid(
                format!("{key}[{i}].share"),
                format!("{} is not a finite number at least 0", s.share),
            ));
        }
        total += s.share;
    }
    if total <= 0.0 {
        return Err(invalid(key, "the shares sum to 0"));
    }
    Ok(())
}

fn check_probability(key: &str, p: f64) -> Result<(), ScenarioError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(invalid(key, format!("{p} is not a probability in 0..=1")));
    }
    Ok(())
}

fn check_rate(key: &str, r: f64, max: f64) -> Result<(), ScenarioError> {
    if !r.is_finite() || !(0.0..=max).contains(&r) {
        return Err(invalid(key, format!("{r} is not in 0..={max}")));
    }
    Ok(())
}

impl Scenario {
    /// Parses and validates a scenario.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Syntax(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// A built-in scenario by name, or else a scenario file.
    pub fn load(name_or_file: &str) -> Result<Scenario, ScenarioError> {
        if let Some(text) = builtin_text(name_or_file) {
            return Scenario::from_toml(text);
        }
        let path = std::path::Path::new(name_or_file);
        match std::fs::read_to_string(path) {
            Ok(text) => Scenario::from_toml(&text).map_err(|e| match e {
                ScenarioError::Syntax(m) => ScenarioError::Syntax(format!("{name_or_file}: {m}")),
                ScenarioError::Invalid { key, problem } => ScenarioError::Invalid {
                    key: format!("{name_or_file}: {key}"),
                    problem,
                },
                other => other,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ScenarioError::Unknown(name_or_file.to_owned()))
            }
            Err(e) => Err(ScenarioError::Syntax(format!("{name_or_file}: {e}"))),
        }
    }

    /// Checks every value's range and the consistency between them; the first problem found.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(invalid("name", "must be 1 to 64 characters"));
        }
        let f = &self.fleet;
        if f.endpoints == 0 || f.endpoints > MAX_ENDPOINTS {
            return Err(invalid(
                "fleet.endpoints",
                format!("{} is not in 1..={MAX_ENDPOINTS}", f.endpoints),
            ));
        }
        if f.hours == 0 || f.hours > MAX_HOURS {
            return Err(invalid(
                "fleet.hours",
                format!("{} is not in 1..={MAX_HOURS}", f.hours),
            ));
        }
        check_shares("fleet.os_builds", &f.os_builds)?;
        check_shares("fleet.hw_classes", &f.hw_classes)?;
        check_shares("fleet.host_groups", &f.host_groups)?;
        if f.online_by_hour.len() != 24 {
            return Err(invalid(
                "fleet.online_by_hour",
                format!(
                    "has {} values; it needs one per hour of the day (24)",
                    f.online_by_hour.len()
                ),
            ));
        }
        for (h, p) in f.online_by_hour.iter().enumerate() {
            check_probability(&format!("fleet.online_by_hour[{h}]"), *p)?;
        }
        if !(60..=86_400).contains(&f.heartbeat_secs) {
            return Err(invalid(
                "fleet.heartbeat_secs",
                format!("{} is not in 60..=86400", f.heartbeat_secs),
            ));
        }
        if !(1..=3600).contains(&f.boot_secs) {
            return Err(invalid(
                "fleet.boot_secs",
                format!("{} is not in 1..=3600", f.boot_secs),
            ));
        }
        check_rate(
            "fleet.baseline_crashes_per_endpoint_day",
            f.baseline_crashes_per_endpoint_day,
            24.0,
        )?;
        check_rate(
            "fleet.baseline_detections_per_endpoint_hour",
            f.baseline_detections_per_endpoint_hour,
            1e6,
        )?;
        check_rate(
            "fleet.processes_per_endpoint_hour",
            f.processes_per_endpoint_hour,
            1e6,
        )?;

        let r = &self.release;
        check_probability("release.probability", r.probability)?;
        if let Some(b) = &r.os_build {
            if !f.os_builds.iter().any(|s| &s.name == b) {
                return Err(invalid(
                    "release.os_build",
                    format!("{b:?} is not one of fleet.os_builds"),
                ));
            }
        }
        if let Some(c) = &r.hw_class {
            if !f.hw_classes.iter().any(|s| &s.name == c) {
                return Err(invalid(
                    "release.hw_class",
                    format!("{c:?} is not one of fleet.hw_classes"),
                ));
            }
        }
        if r.start_minute >= f.hours.saturating_mul(60) {
            return Err(invalid(
                "release.start_minute",
                format!(
                    "{} is not before the end of the simulation ({} minutes)",
                    r.start_minute,
                    f.hours * 60
                ),
            ));
        }

        let ro = &self.rollout;
        if ro.plan != PlanName::Custom && !ro.waves.is_empty() {
            return Err(invalid(
                "rollout.waves",
                "waves are listed but rollout.plan is not \"custom\"",
            ));
        }
        // The plan, and that each wave of this fleet can give the evidence it waits for.
        ro.plan()
            .check_fleet(f.endpoints)
            .map_err(|e| invalid("rollout.waves", e.to_string()))?;
        if !(10..=3600).contains(&ro.controller_tick_secs) {
            return Err(invalid(
                "rollout.controller_tick_secs",
                format!("{} is not in 10..=3600", ro.controller_tick_secs),
            ));
        }
        if !(10..=86_400).contains(&ro.health_window_secs) {
            return Err(invalid(
                "rollout.health_window_secs",
                format!("{} is not in 10..=86400", ro.health_window_secs),
            ));
        }
        bulwark_loader_boot_guard_config_check(ro.threshold, ro.stable_secs)?;

        check_probability(
            "faults.power_cut_per_write",
            self.faults.power_cut_per_write,
        )?;
        check_probability("faults.torn_share", self.faults.torn_share)?;
        Ok(())
    }

    /// The same scenario with another fleet size (`--endpoints`), validated.
    pub fn with_endpoints(mut self, endpoints: u64) -> Result<Scenario, ScenarioError> {
        self.fleet.endpoints = endpoints;
        self.validate()?;
        Ok(self)
    }
}

/// The guard's bounds (`loader-boot-guard`'s `Config::validate`: threshold 1..=10, stable period
/// 10 s to a week), checked here so that a scenario names the key.
fn bulwark_loader_boot_guard_config_check(threshold: u8, stable: u32) -> Result<(), ScenarioError> {
    if !(1..=10).contains(&threshold) {
        return Err(invalid(
            "rollout.threshold",
            format!("{threshold} is not in 1..=10"),
        ));
    }
    if !(10..=7 * 24 * 3600).contains(&stable) {
        return Err(invalid(
            "rollout.stable_secs",
            format!("{stable} is not in 10..=604800"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_says_what_it_is() {
        for name in BUILTIN_NAMES {
            let s = builtin(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&s.name, name);
            assert!(!s.description.is_empty(), "{name}");
        }
        assert!(matches!(builtin("nope"), Err(ScenarioError::Unknown(_))));
    }

    #[test]
    fn builtins_are_what_the_issue_asks() {
        let s = builtin("crash-on-load").unwrap();
        assert_eq!(s.release.behaviour, Behaviour::CrashOnLoad);
        assert_eq!(s.release.probability, 1.0);
        assert!(s.rollout.health_analysis);
        let s = builtin("crash-one-build").unwrap();
        assert_eq!(s.release.behaviour, Behaviour::CrashOnLoad);
        let build = s.release.os_build.clone().unwrap();
        let total: f64 = s.fleet.os_builds.iter().map(|b| b.share).sum();
        let of_build = s.fleet.os_builds.iter().find(|b| b.name == build).unwrap();
        assert!((of_build.share / total - 0.2).abs() < 1e-9);
        let s = builtin("all-at-once").unwrap();
        assert_eq!(s.rollout.plan().waves.len(), 1);
        assert_eq!(s.rollout.plan().waves[0].fraction_ppm, WHOLE_FLEET_PPM);
        assert!(!s.rollout.health_analysis);
        assert_eq!(
            builtin("fp-storm").unwrap().release.behaviour,
            Behaviour::FpStorm
        );
        assert_eq!(
            builtin("block-storm").unwrap().release.behaviour,
            Behaviour::BlockStorm
        );
        assert_eq!(builtin("good").unwrap().release.behaviour, Behaviour::Good);
    }

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let s = Scenario::from_toml("name = \"x\"\n").unwrap();
        assert_eq!(s.fleet, Fleet::default());
        assert_eq!(s.rollout, Rollout::default());
        assert_eq!(s.release, Release::default());
    }

    fn err(text: &str) -> String {
        Scenario::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        assert_eq!(
            err("name = \"x\"\n[fleet]\nos_builds = [{ name = \"a\", share = 1.0 }, { name = \"b\", share = -1.0 }]\n"),
            "fleet.os_builds[1].share: -1 is not a finite number at least 0"
        );
        assert_eq!(
            err("name = \"x\"\n[fleet]\nonline_by_hour = [0.5]\n"),
            "fleet.online_by_hour: has 1 values; it needs one per hour of the day (24)"
        );
        assert_eq!(
            err("name = \"x\"\n[release]\nos_build = \"xp\"\n"),
            "release.os_build: \"xp\" is not one of fleet.os_builds"
        );
        assert_eq!(
            err("name = \"x\"\n[release]\nprobability = 1.5\n"),
            "release.probability: 1.5 is not a probability in 0..=1"
        );
        assert_eq!(
            err("name = \"x\"\n[fleet]\nendpoints = 0\n"),
            "fleet.endpoints: 0 is not in 1..=10000000"
        );
        assert_eq!(
            err("name = \"x\"\n[rollout]\nthreshold = 0\n"),
            "rollout.threshold: 0 is not in 1..=10"
        );
        assert!(err("name = \"x\"\n[rollout]\nplan = \"custom\"\n")
            .starts_with("rollout.waves: the plan has no waves"));
        assert!(err("name = \"x\"\n[rollout]\nwaves = [{ name = \"a\", fraction_ppm = 1000000, bake_secs = 0, min_healthy = 1 }]\n")
            .contains("rollout.plan is not \"custom\""));
        // Syntax and schema errors come from the TOML parser, with the line.
        let e = err("name = \"x\"\n[fleet]\nendpoint = 5\n");
        assert!(e.contains("endpoint") && e.contains("line 3"), "{e}");
        let e = err("name = \"x\"\n[release]\nbehaviour = \"explode\"\n");
        assert!(e.contains("explode") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn a_custom_plan_is_validated_as_the_controller_would() {
        let ok = "name = \"x\"\n[rollout]\nplan = \"custom\"\n[[rollout.waves]]\nname = \"a\"\nfraction_ppm = 10000\nbake_secs = 3600\nmin_healthy = 5\n[[rollout.waves]]\nname = \"b\"\nfraction_ppm = 1000000\nbake_secs = 3600\nmin_healthy = 5\n";
        let s = Scenario::from_toml(ok).unwrap();
        assert_eq!(s.rollout.plan().waves.len(), 2);
        let bad = ok.replace("fraction_ppm = 1000000", "fraction_ppm = 5000");
        assert!(err(&bad).starts_with("rollout.waves: "), "{}", err(&bad));
    }

    #[test]
    fn endpoints_override_is_validated() {
        let s = builtin("good").unwrap();
        assert_eq!(
            s.clone().with_endpoints(50_000).unwrap().fleet.endpoints,
            50_000
        );
        assert!(s.clone().with_endpoints(MAX_ENDPOINTS + 1).is_err());
        // The default plan's internal wave waits for 30 confirmations: 0.1% of 500 is too few.
        let e = s.with_endpoints(500).unwrap_err().to_string();
        assert!(
            e.starts_with("rollout.waves: ") && e.contains("internal"),
            "{e}"
        );
    }
}
