//! From what endpoints reported to the [`HealthObservations`] the health analysis reads: who
//! counts in which cohort, from when, and which of their reports count. A pure function over
//! per-endpoint reports, so the server (from its tables) and the fleet simulator (from its
//! endpoints in memory) observe a rollout the same way.
//!
//! Each endpoint heard from on the channel is placed by its wave (from the wave thresholds the
//! endpoints were told): in an open wave it belongs to that wave's cohort once it has reported
//! running the release or a guard event on it after the wave opened (observed from the first
//! such report; before that it is not counted), so a machine whose guard reverted the release
//! before it ever ran is counted; in a wave not yet open it belongs to the baseline cohort
//! (observed from the rollout's start, on the baseline release). Guard events and detections
//! count for the cohort's release only, events from the start of the observation on.

use std::collections::{BTreeMap, VecDeque};

use crate::health::HealthConfig;
use crate::observations::{CohortObservations, EndpointRecord, HealthObservations};
use crate::state::ChannelRollout;
use crate::time::Timestamp;

/// What an endpoint's heartbeats say with respect to the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// Its last heartbeat (server time, seconds).
    pub last: u64,
    /// Whether that one announced a shutdown.
    pub shutdown: bool,
    /// Its first heartbeat on the release.
    pub staged: Option<u64>,
    /// Whether it confirmed healthy on the release.
    pub healthy: bool,
}

/// Kinds of guard events that count against a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardReportKind {
    /// An attempt that ended in neither a clean shutdown nor a blessing.
    Crash,
    /// A revert to last-known-good.
    Revert,
    /// The guard gave up on the candidate.
    Quarantine,
    /// The endpoint refused the release before its driver saw it.
    Reject,
}

/// One guard event an endpoint reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardReport {
    /// The release it happened on.
    pub release_version: u64,
    /// What happened.
    pub kind: GuardReportKind,
    /// When the server received it (seconds).
    pub at: u64,
}

/// Everything one endpoint reported on the channel.
#[derive(Debug, Clone, Copy)]
pub struct EndpointReports<'a> {
    /// Its wave under the rollout's thresholds (`None`: in none).
    pub wave: Option<usize>,
    /// Its heartbeats.
    pub heard: Heard,
    /// Its guard events on the release or the baseline.
    pub guard_events: &'a [GuardReport],
    /// Its detection counts: (release, rule id, count).
    pub detections: &'a [(u64, &'a str, u64)],
}

/// The observations of `state`'s rollout at `now` from every endpoint heard from on the
/// channel. Linear in the reports (see [`Observer`] for the same, tick after tick, in the
/// reports that changed).
#[must_use]
pub fn observe<'a>(
    state: &ChannelRollout,
    reports: impl IntoIterator<Item = EndpointReports<'a>>,
    release_rules: &[String],
    baseline_rules: &[String],
    now: Timestamp,
    config: &HealthConfig,
) -> HealthObservations {
    let frame = Frame::of(state, now, config);
    // Each endpoint's record is added to its cohort as it is made (no record kept, no detection
    // map built): the same counts as aggregating the records.
    let mut waves: Vec<CohortObservations> = (0..frame.open)
        .map(|_| CohortObservations::with_rules(release_rules.iter().map(String::as_str)))
        .collect();
    let mut baseline = CohortObservations::with_rules(baseline_rules.iter().map(String::as_str));
    for e in reports {
        let Some(p) = frame.place(&e) else {
            continue;
        };
        let cohort = match p.wave {
            Some(w) => waves.get_mut(w),
            None => Some(&mut baseline),
        };
        if let Some(c) = cohort {
            c.add(&p.record, now, frame.timeout);
            for &(v, rule, count) in e.detections {
                if Some(v) == p.version {
                    c.add_detections(rule, count);
                }
            }
        }
    }
    HealthObservations {
        release_version: frame.version,
        baseline,
        waves,
    }
}

/// What places an endpoint in a cohort, and which of its reports count: the rollout's release,
/// baseline, start and open waves, and the silence timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    version: u64,
    baseline_version: Option<u64>,
    started: u64,
    open: usize,
    /// When each open wave opened (the rollout's start for one without a time).
    opened: Vec<u64>,
    timeout: u64,
}

/// An endpoint placed in a cohort: an open wave's, or (`wave` `None`) the baseline's.
struct Placed {
    wave: Option<usize>,
    /// The release whose reports count for it (none: a baseline cohort without a baseline
    /// release counts none).
    version: Option<u64>,
    /// Its record, all but its detections.
    record: EndpointRecord,
}

impl Frame {
    fn of(state: &ChannelRollout, now: Timestamp, config: &HealthConfig) -> Frame {
        let started = state.opened_at(0).unwrap_or(now).0;
        let open = state.open_waves as usize;
        Frame {
            version: state.release.version,
            baseline_version: state.baseline_version,
            started,
            open,
            opened: (0..open)
                .map(|w| state.opened_at(w).map_or(started, |t| t.0))
                .collect(),
            timeout: config.silence_timeout_secs,
        }
    }

    /// Where `e` counts, if it does: in an open wave, from its first report on the release after
    /// the wave opened; in a wave not yet open, in the baseline from the start; in no wave, or
    /// before any such report, nowhere.
    fn place(&self, e: &EndpointReports<'_>) -> Option<Placed> {
        let wave = e.wave?;
        let heard = e.heard;
        let (placed_wave, version, since) = if wave < self.open {
            // Staged: its first heartbeat on the release, or, for a machine that never got to run
            // it (crashed on load until its guard reverted, or refused it), its first guard event
            // on the release after the wave opened: those are the reports that matter most.
            let opened = self.opened.get(wave).copied().unwrap_or(self.started);
            let first_event = e
                .guard_events
                .iter()
                .filter(|g| g.release_version == self.version && g.at >= opened)
                .map(|g| g.at)
                .min();
            let since = match (heard.staged, first_event) {
                (Some(s), Some(f)) => s.min(f),
                (Some(s), None) | (None, Some(s)) => s,
                (None, None) => return None,
            };
            (Some(wave), Some(self.version), since)
        } else {
            (None, self.baseline_version, self.started)
        };
        let mut r = EndpointRecord {
            observed_since: Timestamp(since),
            last_heartbeat: Some(Timestamp(heard.last)),
            shutdown_announced: heard.shutdown,
            confirmed_healthy: placed_wave.is_some() && heard.healthy,
            ..EndpointRecord::default()
        };
        for g in e
            .guard_events
            .iter()
            .filter(|g| Some(g.release_version) == version && g.at >= since)
        {
            match g.kind {
                GuardReportKind::Crash => r.crashes = r.crashes.saturating_add(1),
                GuardReportKind::Revert => r.reverts = r.reverts.saturating_add(1),
                GuardReportKind::Quarantine => r.quarantines = r.quarantines.saturating_add(1),
                GuardReportKind::Reject => r.rejections = r.rejections.saturating_add(1),
            }
        }
        Some(Placed {
            wave: placed_wave,
            version,
            record: r,
        })
    }
}

/// [`observe`], tick after tick, in the work of the reports that changed: each endpoint's part in
/// its cohort is counted when it reports ([`Observer::update`]), so that an observation reads
/// only the sums, not the fleet; the same [`HealthObservations`] as [`observe`] over every
/// endpoint. A controller observing every endpoint each minute spends most of its time on
/// endpoints it heard nothing new from, and reads each one's reports long after they were
/// written, from memory instead of cache.
///
/// The caller tells it of every change of an endpoint's reports, its first included
/// ([`Observer::update`], with the reports as they now are), or that any may have changed
/// ([`Observer::changed_all`]: after endpoints moved between waves, for one); an endpoint never
/// told of has no reports. Parts are counted under the rollout as its last observation saw it
/// (its release, baseline, start, open waves and when each opened, the rules, the silence
/// timeout): an observation that finds any of these changed, the clock gone back or fewer
/// endpoints reads every endpoint again. Each endpoint's part is kept (its cohort, counts,
/// detections of the cohort's rules, when it falls silent), and each cohort's exact sums, so that
/// a part can be taken out again; sums saturate only when read, as [`observe`]'s saturating sums
/// do.
#[derive(Debug, Clone, Default)]
pub struct Observer {
    /// What the parts are counted under (`None`: nothing yet, or to be read afresh).
    frame: Option<(Frame, Vec<String>, Vec<String>)>,
    /// The last observation's time: a part silent after `t` is counted silent iff `t < now`.
    now: u64,
    /// Each endpoint's part (`parts[i]` is endpoint `i`'s).
    parts: Vec<CohortPart>,
    /// Endpoints whose exposure depends on the clock (their last heartbeat is later than
    /// the last observation): (index, that heartbeat, whether its part takes the next observation
    /// to be at or after it). Each is checked at the next observation.
    clocked: Vec<(usize, u64, bool)>,
    /// The cohorts' sums: the open waves', then the baseline's.
    cohorts: Vec<Sums>,
}

/// One endpoint's part in its cohort's sums, as an [`Observer`] keeps it: one cache line, read
/// and written at each of the endpoint's reports.
#[derive(Debug, Clone)]
#[repr(align(64))]
pub struct CohortPart {
    exposure_secs: u64,
    /// It is silent at any time after this one (`u64::MAX`: never).
    silent_after: u64,
    /// Its detections of the cohort's rules: (the rule's index among them, count).
    detections: Vec<(usize, u64)>,
    crashes: u32,
    reverts: u32,
    quarantines: u32,
    rejections: u32,
    /// Its cohort's index in [`Observer::cohorts`] (`u32::MAX`: counted in none).
    cohort: u32,
    confirmed_healthy: bool,
}

impl Default for CohortPart {
    fn default() -> CohortPart {
        CohortPart {
            exposure_secs: 0,
            silent_after: u64::MAX,
            detections: Vec::new(),
            crashes: 0,
            reverts: 0,
            quarantines: 0,
            rejections: 0,
            cohort: NO_COHORT,
            confirmed_healthy: false,
        }
    }
}

/// [`CohortPart::cohort`] of a part counted in none.
const NO_COHORT: u32 = u32::MAX;

/// A cohort's exact sums (wide enough never to overflow), and its members' silence: those
/// silent at the last observation, and the others by when they fall silent.
#[derive(Debug, Clone, Default)]
struct Sums {
    endpoints: u128,
    exposure_secs: u128,
    crashes: u128,
    reverts: u128,
    quarantines: u128,
    rejections: u128,
    confirmed_healthy: u128,
    silent: u128,
    /// Members not silent at the last observation, by the time after which they are.
    falls_silent: SilenceQueue,
    /// Its rules' ids, sorted and distinct, and their detections (`detections[k]` is `rules[k]`'s).
    rules: Vec<String>,
    detections: Vec<u128>,
}

/// Members not yet silent, counted by the second after which they are: a ring of one count per
/// second from `base` (a heartbeat's silence falls within the timeout, a few thousand seconds
/// ahead), and a map for the few further ahead. No member falls silent before `base`.
#[derive(Debug, Clone, Default)]
struct SilenceQueue {
    base: u64,
    /// `ring[k]`: members silent after `base + k`; covers `base..base + RING`.
    ring: VecDeque<u64>,
    /// Members silent after a time from `base + RING` on.
    far: BTreeMap<u64, u64>,
}

/// Seconds [`SilenceQueue`]'s ring covers.
const RING: u64 = 1 << 14;

impl SilenceQueue {
    /// The count of members silent after `t`, `t` at or after `base`.
    fn slot(&mut self, t: u64) -> Option<&mut u64> {
        let k = t.checked_sub(self.base)?;
        if k >= RING {
            return Some(self.far.entry(t).or_insert(0));
        }
        let k = k as usize;
        if self.ring.len() <= k {
            self.ring.resize(k + 1, 0);
        }
        self.ring.get_mut(k)
    }

    fn add(&mut self, t: u64) {
        if let Some(n) = self.slot(t) {
            *n += 1;
        }
    }

    fn take(&mut self, t: u64) {
        if let Some(n) = self.slot(t) {
            *n -= 1;
        }
        if t.saturating_sub(self.base) >= RING && self.far.get(&t) == Some(&0) {
            self.far.remove(&t);
        }
    }

    /// Moves the clock to `now`; returns how many fell silent (after a time before `now`).
    fn advance(&mut self, now: u64) -> u128 {
        let mut fell = 0u128;
        while self.base < now {
            match self.ring.pop_front() {
                Some(n) => {
                    fell += u128::from(n);
                    self.base += 1;
                }
                None => {
                    // Nothing in reach: on to the next time ahead, or to `now`.
                    self.base = match self.far.first_key_value() {
                        Some((&t, _)) => t.min(now),
                        None => now,
                    };
                }
            }
            // What came within reach joins the ring.
            while let Some(entry) = self.far.first_entry() {
                let Some(k) = entry.key().checked_sub(self.base).filter(|&k| k < RING) else {
                    break;
                };
                let n = entry.remove();
                let k = k as usize;
                if self.ring.len() <= k {
                    self.ring.resize(k + 1, 0);
                }
                if let Some(slot) = self.ring.get_mut(k) {
                    *slot += n;
                }
            }
        }
        fell
    }
}

impl Sums {
    fn with_rules(rules: &[String]) -> Sums {
        let mut rules = rules.to_vec();
        rules.sort();
        rules.dedup();
        Sums {
            detections: vec![0; rules.len()],
            rules,
            ..Sums::default()
        }
    }

    fn rule_index(&self, rule: &str) -> Option<usize> {
        self.rules.binary_search_by(|r| r.as_str().cmp(rule)).ok()
    }

    /// Adds `p` (`add`) or takes it out again, its silence judged at `now` (as it was added).
    fn apply(&mut self, p: &CohortPart, now: u64, add: bool) {
        let f = |sum: &mut u128, n: u128| {
            if add {
                *sum += n;
            } else {
                *sum -= n;
            }
        };
        f(&mut self.endpoints, 1);
        f(&mut self.exposure_secs, u128::from(p.exposure_secs));
        f(&mut self.crashes, u128::from(p.crashes));
        f(&mut self.reverts, u128::from(p.reverts));
        f(&mut self.quarantines, u128::from(p.quarantines));
        f(&mut self.rejections, u128::from(p.rejections));
        f(&mut self.confirmed_healthy, u128::from(p.confirmed_healthy));
        for &(k, n) in &p.detections {
            if let Some(d) = self.detections.get_mut(k) {
                f(d, u128::from(n));
            }
        }
        match p.silent_after {
            u64::MAX => {}
            t if t < now => f(&mut self.silent, 1),
            t => {
                if add {
                    self.falls_silent.add(t);
                } else {
                    self.falls_silent.take(t);
                }
            }
        }
    }

    /// The clock moved to `now`: members whose time came are silent.
    fn advance(&mut self, now: u64) {
        self.silent += self.falls_silent.advance(now);
    }

    fn observations(&self) -> CohortObservations {
        let sat = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
        CohortObservations {
            endpoints: sat(self.endpoints),
            exposure_secs: sat(self.exposure_secs),
            crashes: sat(self.crashes),
            reverts: sat(self.reverts),
            quarantines: sat(self.quarantines),
            rejections: sat(self.rejections),
            silent: sat(self.silent),
            confirmed_healthy: sat(self.confirmed_healthy),
            rules: self
                .rules
                .iter()
                .zip(&self.detections)
                .map(|(r, &n)| (r.clone(), sat(n)))
                .collect(),
        }
    }
}

impl Observer {
    /// An observer that has seen nothing: its first observation reads every endpoint.
    #[must_use]
    pub fn new() -> Observer {
        Observer::default()
    }

    /// Endpoint `index`'s part, for a caller that asks the processor for it ahead of the
    /// endpoint's next report (see [`Observer::update`]).
    #[must_use]
    pub fn part(&self, index: usize) -> Option<&CohortPart> {
        self.parts.get(index)
    }

    /// Every endpoint's reports may have changed: the next observation reads them all.
    pub fn changed_all(&mut self) {
        self.frame = None;
    }

    /// Endpoint `index`'s reports are now `reports` (`None`: not heard from): its part is
    /// counted again, as the next observation would count it if it is at or after its last
    /// heartbeat (and checked then).
    pub fn update(&mut self, index: usize, reports: Option<EndpointReports<'_>>) {
        if self.frame.is_none() {
            // Read afresh at the next observation.
            return;
        }
        if self.parts.len() <= index {
            self.parts.resize(index + 1, CohortPart::default());
        }
        if self.clocked.len() > 2 * self.parts.len() + 64 {
            // Many reports and no observation: rather than keep a list longer than the fleet,
            // the next observation reads every endpoint.
            self.clocked = Vec::new();
            self.changed_all();
            return;
        }
        self.count(index, reports, None);
    }

    /// Takes endpoint `index`'s part out and counts it again from `reports`, its exposure at
    /// `now` (`None`: at its last heartbeat or later), its silence judged at the last
    /// observation's time.
    fn count(&mut self, index: usize, reports: Option<EndpointReports<'_>>, now: Option<u64>) {
        let (Some((frame, _, _)), Some(slot)) = (&self.frame, self.parts.get_mut(index)) else {
            return;
        };
        let mut old = core::mem::take(slot);
        if let Some(c) = self.cohorts.get_mut(old.cohort as usize) {
            c.apply(&old, self.now, false);
        }
        // The new part's detections in the old one's allocation: none made per report.
        let mut detections = core::mem::take(&mut old.detections);
        detections.clear();
        let Some(e) = reports else {
            return;
        };
        let Some(placed) = frame.place(&e) else {
            return;
        };
        let cohort = placed.wave.unwrap_or(frame.open);
        let (Ok(index_of_cohort), Some(sums)) =
            (u32::try_from(cohort), self.cohorts.get_mut(cohort))
        else {
            return;
        };
        detections.extend(
            e.detections
                .iter()
                .filter(|&&(v, _, _)| Some(v) == placed.version)
                .filter_map(|&(_, rule, n)| Some((sums.rule_index(rule)?, n))),
        );
        let r = &placed.record;
        let part = CohortPart {
            cohort: index_of_cohort,
            exposure_secs: r.exposure_secs(Timestamp(now.unwrap_or(u64::MAX))),
            crashes: r.crashes,
            reverts: r.reverts,
            quarantines: r.quarantines,
            rejections: r.rejections,
            confirmed_healthy: r.confirmed_healthy,
            silent_after: r.silent_after(frame.timeout).map_or(u64::MAX, |t| t.0),
            detections,
        };
        sums.apply(&part, self.now, true);
        *slot = part;
        let last = e.heard.last;
        if last > now.unwrap_or(self.now) {
            self.clocked.push((index, last, now.is_none()));
        }
    }

    /// [`observe`] at `now` over `endpoints` endpoints, `reports(i)` being endpoint `i`'s
    /// (`None`: not heard from): from the parts counted as endpoints reported, reading again
    /// only those whose exposure the clock decides, unless the rollout, the rules, the timeout
    /// or the number of endpoints changed (other than by endpoints added) or the clock went
    /// back: then from every endpoint.
    #[allow(clippy::too_many_arguments)] // observe's, and how many endpoints there are
    pub fn observe<'a>(
        &mut self,
        state: &ChannelRollout,
        endpoints: usize,
        reports: impl Fn(usize) -> Option<EndpointReports<'a>>,
        release_rules: &[String],
        baseline_rules: &[String],
        now: Timestamp,
        config: &HealthConfig,
    ) -> HealthObservations {
        let frame = Frame::of(state, now, config);
        let same = self.frame.as_ref().is_some_and(|(f, r, b)| {
            *f == frame
                && r.as_slice() == release_rules
                && b.as_slice() == baseline_rules
                && now.0 >= self.now
                && endpoints >= self.parts.len()
        });
        if same {
            // Parts whose exposure was counted for another time than this one: counted again.
            let clocked = core::mem::take(&mut self.clocked);
            let mut again: Vec<usize> = clocked
                .iter()
                .filter(|&&(_, last, at_or_after)| !(at_or_after && last <= now.0))
                .map(|&(i, _, _)| i)
                .collect();
            again.sort_unstable();
            again.dedup();
            for &i in &again {
                self.count(i, None, None);
            }
            self.advance(now.0);
            for i in again {
                self.count(i, reports(i), Some(now.0));
            }
            if self.parts.len() < endpoints {
                self.parts.resize(endpoints, CohortPart::default());
            }
        } else {
            self.cohorts = (0..frame.open)
                .map(|_| Sums::with_rules(release_rules))
                .chain([Sums::with_rules(baseline_rules)])
                .collect();
            self.parts.clear();
            self.parts.resize(endpoints, CohortPart::default());
            self.clocked.clear();
            self.frame = Some((frame, release_rules.to_vec(), baseline_rules.to_vec()));
            self.now = now.0;
            for i in 0..endpoints {
                self.count(i, reports(i), Some(now.0));
            }
        }
        let mut waves: Vec<CohortObservations> =
            self.cohorts.iter().map(Sums::observations).collect();
        let baseline = waves.pop().unwrap_or_default();
        HealthObservations {
            release_version: state.release.version,
            baseline,
            waves,
        }
    }

    /// The clock moved to `now`: members whose time came are silent.
    fn advance(&mut self, now: u64) {
        self.now = now;
        for c in &mut self.cohorts {
            c.advance(now);
        }
    }
}
