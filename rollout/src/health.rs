//! Health analysis: is the new release hurting the endpoints that run it?
//!
//! For each open wave, the wave's cohort on the new release is compared with the baseline cohort
//! on the previous release. Every comparison is an *exact* test that stays valid with rare events
//! and a baseline of zero, and each result is recorded as a [`TestVerdict`] with its numbers and a
//! reason a person can read.
//!
//! # The tests
//!
//! *Safety family*, per open wave:
//! * `crash-rate`, `revert-rate`, `quarantine-rate`: crash-counted guard events, reverts to
//!   last-known-good and quarantines per endpoint-hour, new against baseline, by the conditional
//!   binomial test for two Poisson rates: given `k = k_new + k_base` events, under H0 (the new
//!   rate is at most the baseline's) `k_new ~ Binomial(k, e_new / (e_new + e_base))`, and the
//!   one-sided p-value is `P(X >= k_new)`, computed exactly ([`crate::stats`]). With a baseline of
//!   zero it is `(e_new / (e_new + e_base))^k_new`: 3 crashes in 100 canary endpoints against none
//!   in 10,000 give `(1/101)^3 ≈ 1e-6`.
//! * `silence`: endpoints that staged the release and then fell silent past the timeout,
//!   against the baseline's silent endpoints, by Fisher's exact test (hypergeometric upper tail).
//!   A crashed machine cannot report, so silence counts as failure; the baseline's silence
//!   (laptops closing their lids) is what makes ordinary silence not count.
//! * `quarantine-ceiling`: an absolute ceiling, not a statistical test: the guard quarantines a
//!   candidate only after N failed boots in a row on one machine, which a good release essentially
//!   never causes, and baselines are usually zero. The wave fails at `max(2, ceil(endpoints *
//!   100 / 10^6))` quarantines: 2 for any wave up to 20,000 endpoints (so any 2 in canary), one in
//!   10,000 endpoints above that.
//! * `rejection-ceiling`: the same ceiling for refusals of the release by the endpoints
//!   themselves (their verifier, run against the running sensor's schema, or their loader):
//!   content that does not fit the sensor it was sent to, which a release the server verified
//!   should never be. The wave fails at `max(1, ceil(endpoints * 100 / 10^6))`: any one refusal in
//!   a wave up to 10,000 endpoints.
//!
//! *Storm family*, per open wave and per rule of the new release (a false-positive storm):
//! * `detection-storm`, for a rule the baseline release also has: the same conditional binomial
//!   test, against H0 "the new rate is at most 10x the baseline's" (`p = 10 e_new / (10 e_new +
//!   e_base)`): content changes may legitimately move a rule's rate, a storm is an order of
//!   magnitude or more.
//! * `new-rule-storm`, for a rule the baseline does not have (no baseline to compare with): exact
//!   Poisson test against an expectation ceiling of 0.01 detections per endpoint-hour (1,000
//!   detections an hour on a fleet of 100,000).
//! * Either needs at least 20 detections in the cohort: fewer is not a storm, whatever the ratio
//!   (one administrator's script looping on one machine should not halt a release).
//!
//! # Thresholds and multiplicity
//!
//! A halt is costly (a good release stops and is reverted) but a missed bad release is what this
//! crate exists to prevent; bad releases of the Channel File 291 kind give p-values below
//! `10^-100`, and the examples above below `10^-6`. So the family-wise false-halt probability of
//! one evaluation is `alpha_halt = 10^-4`, split evenly between the two families and within each
//! by Bonferroni over *all* its tests (every rule of the release counts, tested or not, so the
//! split does not depend on the data): with 2 open waves, each safety test halts at `p < 10^-4 /
//! 2 / 8 = 6.25e-6`. The controller evaluates repeatedly as data accumulate; successive
//! evaluations of cumulative counts are strongly correlated, but even as if they were independent,
//! a release evaluated hourly through the default plan's 68 hours has a false-halt probability
//! below `68 * 10^-4 < 0.7%`. The discrete tests are conservative, so the real rate is lower.
//!
//! A weaker signal *holds* the rollout (the next wave does not open; nothing halts): any test with
//! `p < alpha_hold = 10^-2` (family-wise, split the same way). Counts are cumulative, so a hold on a
//! good release resolves itself as exposure grows, and one on a bad release turns into a halt.
//! Missing data also holds: a wave with no endpoint reporting on the release, a baseline with no
//! endpoint or no exposure (the rate tests cannot run; the ceiling and new-rule tests still do),
//! observations of another release.

use serde::{Deserialize, Serialize};

use crate::observations::{CohortObservations, HealthObservations};
use crate::plan::Plan;
use crate::stats::{binomial_sf, hypergeometric_sf, poisson_sf};

/// The analysis's parameters; [`HealthConfig::default`] holds the values justified in the module
/// documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// Family-wise probability that one evaluation of a good release halts it.
    pub alpha_halt: f64,
    /// Family-wise level below which a signal holds the rollout.
    pub alpha_hold: f64,
    /// Rate ratio over the baseline that counts as a detection storm.
    pub storm_ratio: f64,
    /// Fewest detections of one rule in one cohort that can be a storm.
    pub storm_min_count: u64,
    /// Expected ceiling of a rule new in this release, in detections per endpoint-hour.
    pub new_rule_max_per_endpoint_hour: f64,
    /// Fewest quarantines that fail a wave, whatever its size.
    pub quarantine_floor: u64,
    /// Quarantines per million endpoints that fail a wave (above the floor).
    pub quarantine_ceiling_per_million: u64,
    /// Fewest refusals by the endpoints' own verifier or loader that fail a wave.
    #[serde(default = "default_rejection_floor")]
    pub rejection_floor: u64,
    /// Refusals per million endpoints that fail a wave (above the floor).
    #[serde(default = "default_rejection_ceiling_per_million")]
    pub rejection_ceiling_per_million: u64,
    /// Seconds without news after which an endpoint that staged counts as silent.
    pub silence_timeout_secs: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            alpha_halt: 1e-4,
            alpha_hold: 1e-2,
            storm_ratio: 10.0,
            storm_min_count: 20,
            new_rule_max_per_endpoint_hour: 0.01,
            quarantine_floor: 2,
            quarantine_ceiling_per_million: 100,
            rejection_floor: default_rejection_floor(),
            rejection_ceiling_per_million: default_rejection_ceiling_per_million(),
            silence_timeout_secs: 3600,
        }
    }
}

fn default_rejection_floor() -> u64 {
    1
}

fn default_rejection_ceiling_per_million() -> u64 {
    100
}

/// A test's (or the analysis's) outcome, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// No evidence against the release.
    Pass,
    /// Not enough data, or a signal too weak to halt: do not advance, do not halt.
    Hold,
    /// The release is hurting endpoints: halt.
    Fail,
}

/// What the counts of a verdict are measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExposureUnit {
    /// Events per endpoint-hour.
    EndpointHours,
    /// Endpoints (a proportion).
    Endpoints,
}

/// The record of one test (or of one data check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestVerdict {
    /// The test's name: `crash-rate`, `revert-rate`, `quarantine-rate`, `quarantine-ceiling`, `rejection-ceiling`,
    /// `silence`, `detection-storm`, `new-rule-storm`, or `data` for a missing-data check.
    pub test: String,
    /// The wave whose cohort was tested.
    pub wave: usize,
    /// That wave's name.
    pub wave_name: String,
    /// The rule, for storm tests.
    pub rule: Option<String>,
    /// Events (or endpoints) counted in the wave's cohort.
    pub new_count: u64,
    /// The cohort's exposure, in `unit`.
    pub new_exposure: f64,
    /// Events (or endpoints) counted in the baseline cohort.
    pub base_count: u64,
    /// The baseline's exposure, in `unit`.
    pub base_exposure: f64,
    /// The unit of the exposures.
    pub unit: ExposureUnit,
    /// The one-sided p-value (statistical tests only).
    pub p_value: Option<f64>,
    /// The p-value below which the test fails (statistical tests only).
    pub halt_below: Option<f64>,
    /// The p-value below which the test holds (statistical tests only).
    pub hold_below: Option<f64>,
    /// The count at or above which the test fails (ceiling tests only).
    pub ceiling: Option<u64>,
    /// The outcome.
    pub outcome: Outcome,
    /// Why, in words.
    pub reason: String,
}

/// The result of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The worst outcome of all verdicts (`Pass` if there are none).
    pub outcome: Outcome,
    /// Every verdict, in wave order, safety tests before storm tests.
    pub verdicts: Vec<TestVerdict>,
    /// Statistical tests in the safety family (the Bonferroni divisor).
    pub safety_tests: usize,
    /// Statistical tests in the storm family (the Bonferroni divisor).
    pub storm_tests: usize,
}

impl HealthReport {
    /// The verdicts with the given outcome.
    pub fn with_outcome(&self, outcome: Outcome) -> impl Iterator<Item = &TestVerdict> {
        self.verdicts.iter().filter(move |v| v.outcome == outcome)
    }
}

/// Number of statistical safety tests per wave (crash, revert, quarantine rates and silence).
const SAFETY_TESTS_PER_WAVE: usize = 4;

struct Levels {
    halt: f64,
    hold: f64,
}

fn classify(p: f64, levels: &Levels) -> Outcome {
    if p < levels.halt {
        Outcome::Fail
    } else if p < levels.hold {
        Outcome::Hold
    } else {
        Outcome::Pass
    }
}

fn describe(outcome: Outcome, p: f64, levels: &Levels) -> String {
    match outcome {
        Outcome::Fail => format!("p = {p:.3e} < halt level {:.3e}", levels.halt),
        Outcome::Hold => format!(
            "p = {p:.3e} < hold level {:.3e} (not below halt level {:.3e})",
            levels.hold, levels.halt
        ),
        Outcome::Pass => format!("p = {p:.3e} >= hold level {:.3e}", levels.hold),
    }
}

/// Analyses the cohorts of the first `open_waves` waves of `plan` against the baseline.
///
/// `obs.waves` holds one cohort per open wave; a missing one is a `data` hold. The release version
/// in `obs` is the caller's business (the controller checks it).
#[must_use]
pub fn analyze(
    obs: &HealthObservations,
    plan: &Plan,
    open_waves: usize,
    config: &HealthConfig,
) -> HealthReport {
    let waves = open_waves.min(plan.waves.len());
    let base = &obs.baseline;
    let base_ok = base.endpoints > 0 && base.exposure_secs > 0;
    // Every wave open, the last one the whole fleet: no baseline cohort can exist.
    let all_open = waves == plan.waves.len()
        && plan
            .waves
            .last()
            .is_some_and(|w| w.fraction_ppm >= crate::plan::WHOLE_FLEET_PPM);
    let safety_tests = SAFETY_TESTS_PER_WAVE.saturating_mul(waves);
    let storm_tests: usize = (0..waves)
        .filter_map(|w| obs.waves.get(w))
        .map(|c| c.rules.len())
        .sum();
    let per_family = |alpha: f64, tests: usize| alpha / 2.0 / tests.max(1) as f64;
    let safety = Levels {
        halt: per_family(config.alpha_halt, safety_tests),
        hold: per_family(config.alpha_hold, safety_tests),
    };
    let storm = Levels {
        halt: per_family(config.alpha_halt, storm_tests),
        hold: per_family(config.alpha_hold, storm_tests),
    };

    let mut verdicts = Vec::new();
    for (w, wave) in plan.waves.iter().enumerate().take(waves) {
        let name = wave.name.as_str();
        let data = |reason: String| TestVerdict {
            test: "data".to_owned(),
            wave: w,
            wave_name: name.to_owned(),
            rule: None,
            new_count: 0,
            new_exposure: 0.0,
            base_count: 0,
            base_exposure: 0.0,
            unit: ExposureUnit::Endpoints,
            p_value: None,
            halt_below: None,
            hold_below: None,
            ceiling: None,
            outcome: Outcome::Hold,
            reason,
        };
        let Some(cohort) = obs.waves.get(w) else {
            verdicts.push(data(format!(
                "no observations of wave {w} ({name}): cannot judge it"
            )));
            continue;
        };
        if cohort.endpoints == 0 || cohort.exposure_secs == 0 {
            verdicts.push(data(format!(
                "wave {w} ({name}): {} endpoints, {:.1} endpoint-hours on the release: no evidence \
                 yet",
                cohort.endpoints,
                cohort.exposure_hours()
            )));
        }
        if !base_ok && all_open && base.endpoints == 0 {
            // The last wave holds the whole fleet: nobody is held back, by design. The rate and
            // silence tests ran while a baseline existed; the ceiling and storm tests still run.
            verdicts.push(TestVerdict {
                outcome: Outcome::Pass,
                ..data(format!(
                    "every wave is open and no endpoint is held back: no baseline to compare wave \
                     {w} ({name}) with (the rate and silence tests ran while one existed; the \
                     quarantine ceiling and storm tests still apply)"
                ))
            });
        } else if !base_ok {
            verdicts.push(data(format!(
                "baseline cohort: {} endpoints, {:.1} endpoint-hours: nothing to compare wave {w} \
                 ({name}) with; the rate and silence tests cannot run",
                base.endpoints,
                base.exposure_hours()
            )));
        }

        let ctx = Ctx {
            wave: w,
            wave_name: name,
            cohort,
            base,
        };
        verdicts.push(ctx.quarantine_ceiling(config));
        verdicts.push(ctx.rejection_ceiling(config));
        if base_ok && cohort.endpoints > 0 {
            verdicts.push(ctx.rate_test(
                "crash-rate",
                "crash-counted guard events",
                cohort.crashes,
                base.crashes,
                1.0,
                &safety,
            ));
            verdicts.push(ctx.rate_test(
                "revert-rate",
                "reverts to last-known-good",
                cohort.reverts,
                base.reverts,
                1.0,
                &safety,
            ));
            verdicts.push(ctx.rate_test(
                "quarantine-rate",
                "quarantines",
                cohort.quarantines,
                base.quarantines,
                1.0,
                &safety,
            ));
            verdicts.push(ctx.silence_test(&safety));
        }
        for (rule, &count) in &cohort.rules {
            match base.rules.get(rule) {
                Some(&base_count) if base_ok => {
                    verdicts.push(ctx.storm_test(rule, count, base_count, config, &storm));
                }
                Some(_) => {}
                None => verdicts.push(ctx.new_rule_test(rule, count, config, &storm)),
            }
        }
    }
    let outcome = verdicts
        .iter()
        .map(|v| v.outcome)
        .max()
        .unwrap_or(Outcome::Pass);
    HealthReport {
        outcome,
        verdicts,
        safety_tests,
        storm_tests,
    }
}

struct Ctx<'a> {
    wave: usize,
    wave_name: &'a str,
    cohort: &'a CohortObservations,
    base: &'a CohortObservations,
}

impl Ctx<'_> {
    fn verdict(&self, test: &str, unit: ExposureUnit) -> TestVerdict {
        let (new_exposure, base_exposure) = match unit {
            ExposureUnit::EndpointHours => {
                (self.cohort.exposure_hours(), self.base.exposure_hours())
            }
            ExposureUnit::Endpoints => (self.cohort.endpoints as f64, self.base.endpoints as f64),
        };
        TestVerdict {
            test: test.to_owned(),
            wave: self.wave,
            wave_name: self.wave_name.to_owned(),
            rule: None,
            new_count: 0,
            new_exposure,
            base_count: 0,
            base_exposure,
            unit,
            p_value: None,
            halt_below: None,
            hold_below: None,
            ceiling: None,
            outcome: Outcome::Pass,
            reason: String::new(),
        }
    }

    fn where_(&self) -> String {
        format!("wave {} ({})", self.wave, self.wave_name)
    }

    /// The conditional binomial test of H0: rate_new <= ratio * rate_base.
    fn rate_test(
        &self,
        test: &str,
        what: &str,
        k_new: u64,
        k_base: u64,
        ratio: f64,
        levels: &Levels,
    ) -> TestVerdict {
        let mut v = self.verdict(test, ExposureUnit::EndpointHours);
        let (e_new, e_base) = (v.new_exposure, v.base_exposure);
        let share = ratio * e_new / (ratio * e_new + e_base);
        let p = binomial_sf(k_new, k_new.saturating_add(k_base), share);
        let outcome = classify(p, levels);
        let h0 = if ratio == 1.0 {
            "the baseline's rate".to_owned()
        } else {
            format!("{ratio}x the baseline's rate")
        };
        v.reason = format!(
            "{what}: {k_new} in {e_new:.1} endpoint-hours in {} vs {k_base} in {e_base:.1} on the \
             baseline; P(>= {k_new} of {} | rate at most {h0}, share {share:.4}) : {}",
            self.where_(),
            k_new.saturating_add(k_base),
            describe(outcome, p, levels)
        );
        v.new_count = k_new;
        v.base_count = k_base;
        v.p_value = Some(p);
        v.halt_below = Some(levels.halt);
        v.hold_below = Some(levels.hold);
        v.outcome = outcome;
        v
    }

    fn silence_test(&self, levels: &Levels) -> TestVerdict {
        let mut v = self.verdict("silence", ExposureUnit::Endpoints);
        let (s_new, n_new) = (self.cohort.silent, self.cohort.endpoints);
        let (s_base, n_base) = (self.base.silent, self.base.endpoints);
        let p = hypergeometric_sf(
            s_new,
            n_new,
            s_new.saturating_add(s_base),
            n_new.saturating_add(n_base),
        );
        // Counts that do not fit their cohorts (more silent endpoints than endpoints) are data we
        // cannot trust: fail closed.
        let p = if p.is_nan() { 0.0 } else { p };
        let outcome = classify(p, levels);
        v.reason = format!(
            "endpoints silent past the timeout after staging: {s_new} of {n_new} in {} vs {s_base} \
             of {n_base} on the baseline (Fisher's exact test): {}",
            self.where_(),
            describe(outcome, p, levels)
        );
        v.new_count = s_new;
        v.base_count = s_base;
        v.p_value = Some(p);
        v.halt_below = Some(levels.halt);
        v.hold_below = Some(levels.hold);
        v.outcome = outcome;
        v
    }

    fn quarantine_ceiling(&self, config: &HealthConfig) -> TestVerdict {
        let mut v = self.verdict("quarantine-ceiling", ExposureUnit::Endpoints);
        let n = self.cohort.endpoints;
        let scaled = n
            .saturating_mul(config.quarantine_ceiling_per_million)
            .div_ceil(1_000_000);
        let ceiling = config.quarantine_floor.max(scaled).max(1);
        let q = self.cohort.quarantines;
        v.new_count = q;
        v.base_count = self.base.quarantines;
        v.ceiling = Some(ceiling);
        v.outcome = if q >= ceiling {
            Outcome::Fail
        } else {
            Outcome::Pass
        };
        v.reason =
            format!(
            "quarantines: {q} among {n} endpoints in {}; the ceiling is {ceiling} (at least {}, \
             and {} per million endpoints): {}",
            self.where_(),
            config.quarantine_floor,
            config.quarantine_ceiling_per_million,
            if q >= ceiling { "reached" } else { "not reached" }
        );
        v
    }

    fn rejection_ceiling(&self, config: &HealthConfig) -> TestVerdict {
        let mut v = self.verdict("rejection-ceiling", ExposureUnit::Endpoints);
        let n = self.cohort.endpoints;
        let scaled = n
            .saturating_mul(config.rejection_ceiling_per_million)
            .div_ceil(1_000_000);
        let ceiling = config.rejection_floor.max(scaled).max(1);
        let r = self.cohort.rejections;
        v.new_count = r;
        v.base_count = self.base.rejections;
        v.ceiling = Some(ceiling);
        v.outcome = if r >= ceiling {
            Outcome::Fail
        } else {
            Outcome::Pass
        };
        v.reason = format!(
            "refusals of the release by the endpoints' own verifier or loader: {r} among {n} \
             endpoints in {}; the ceiling is {ceiling} (at least {}, and {} per million \
             endpoints): {}",
            self.where_(),
            config.rejection_floor,
            config.rejection_ceiling_per_million,
            if r >= ceiling {
                "reached"
            } else {
                "not reached"
            }
        );
        v
    }

    fn storm_test(
        &self,
        rule: &str,
        count: u64,
        base_count: u64,
        config: &HealthConfig,
        levels: &Levels,
    ) -> TestVerdict {
        let mut v = self.rate_test(
            "detection-storm",
            &format!("detections of rule {rule}"),
            count,
            base_count,
            config.storm_ratio,
            levels,
        );
        v.rule = Some(rule.to_owned());
        if count < config.storm_min_count && v.outcome != Outcome::Pass {
            v.outcome = Outcome::Pass;
            v.reason = format!(
                "{}; but {count} detections are fewer than the {} a storm needs",
                v.reason, config.storm_min_count
            );
        }
        v
    }

    fn new_rule_test(
        &self,
        rule: &str,
        count: u64,
        config: &HealthConfig,
        levels: &Levels,
    ) -> TestVerdict {
        let mut v = self.verdict("new-rule-storm", ExposureUnit::EndpointHours);
        let e_new = v.new_exposure;
        let mu = config.new_rule_max_per_endpoint_hour * e_new;
        let p = poisson_sf(count, mu);
        let mut outcome = classify(p, levels);
        v.reason = format!(
            "detections of rule {rule} (not in the baseline release): {count} in {e_new:.1} \
             endpoint-hours in {}; P(>= {count} | Poisson, {} per endpoint-hour, mean {mu:.2}): {}",
            self.where_(),
            config.new_rule_max_per_endpoint_hour,
            describe(outcome, p, levels)
        );
        if count < config.storm_min_count && outcome != Outcome::Pass {
            outcome = Outcome::Pass;
            v.reason = format!(
                "{}; but {count} detections are fewer than the {} a storm needs",
                v.reason, config.storm_min_count
            );
        }
        v.rule = Some(rule.to_owned());
        v.new_count = count;
        v.p_value = Some(p);
        v.halt_below = Some(levels.halt);
        v.hold_below = Some(levels.hold);
        v.outcome = outcome;
        v
    }
}
