//! Processes a machine starts, and what the sensor does with them when the running content has a
//! rule that fires on every process creation (`fp-storm`: an alert; `block-storm`: a block).
//!
//! Processes arrive at the fleet's `processes_per_endpoint_hour` (a running remainder, no
//! randomness: the same run every time), plus a burst at each boot: [`BOOT_PROCESSES`] within the
//! first minute, of which [`BOOT_SYSTEM_PROCESSES`] are the system's own (session manager,
//! services, service hosts, logon, the shell), which the driver never blocks
//! (`bulwark_driver_core::blocking::is_protected`). A block runs through the driver's real
//! safety net: content not yet blessed (confirmed healthy, last-known-good) only alerts, and the
//! driver's own [`StormLimiter`] demotes a rule that blocks more than its limit within its window
//! (it lives in the driver's memory: a reboot starts it afresh).
//!
//! Besides, the running content's ordinary rules fire now and then (the fleet's
//! `baseline_detections_per_endpoint_hour`, a Poisson process): the noise against which the
//! health analysis must not halt a good release.
//!
//! Each detection reaches the service through the driver link, which reports them (counts per
//! rule, alerts) to the server, whose health analysis halts a storm.

use bulwark_driver_core::blocking::{BlockPolicy, StormDecision, StormLimiter};
use bulwark_service::link::Detection;

use crate::rng::Rng;

/// The ordinary rules every simulated pack carries (indexes `0..RULES`, the same ids in every
/// version); a storm rule, if any, comes after them.
pub const RULES: u32 = 4;

/// Processes started within the first minute of a boot.
pub const BOOT_PROCESSES: u64 = 40;
/// Of those, the system's own (never blocked).
pub const BOOT_SYSTEM_PROCESSES: u64 = 28;
/// 100 ns units a second (the sensor's clock).
const TICKS_PER_SEC: u64 = 10_000_000;
/// 100 ns units from 1601-01-01 to 1970-01-01.
const EPOCH_DIFF: u64 = 116_444_736_000_000_000;

/// The storm rule the release carries, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormRule {
    /// The content version that carries it.
    pub version: u64,
    /// Its index in the pack.
    pub rule_index: u32,
    /// Whether its action is `block`.
    pub block: bool,
}

/// One machine's process activity and the sensor's per-boot blocking state.
#[derive(Debug, Default)]
pub struct Activity {
    /// Fractional processes carried to the next interval.
    carry: f64,
    /// When processes were last counted (seconds).
    last: u64,
    /// The boot's burst is still to come.
    burst_pending: bool,
    /// The driver's storm limiter (allocated the first time content blocks here).
    limiter: Option<Box<StormLimiter>>,
    seq: u64,
    /// The ordinary rules' detections.
    noise: Option<Rng>,
    /// User processes the release denied, in all.
    pub blocked: u64,
    /// Whether the last user process that the release's block rule matched was denied (the
    /// machine, as its user sees it, runs nothing new).
    pub blocking_now: bool,
}

/// What a machine runs when its processes start.
#[derive(Debug, Clone, Copy)]
pub struct Running {
    /// The content version.
    pub version: u64,
    /// Whether it is blessed (last-known-good).
    pub blessed: bool,
}

impl Activity {
    /// An activity whose ordinary detections are drawn from `noise`.
    #[must_use]
    pub fn new(noise: Rng) -> Activity {
        Activity {
            noise: Some(noise),
            ..Activity::default()
        }
    }

    /// The machine booted at `now`: a new burst, and the driver's memory starts afresh.
    pub fn boot(&mut self, now: u64) {
        self.last = now;
        self.burst_pending = true;
        self.limiter = None;
    }

    /// The processes started from the last count to `now` (with the boot's burst, if due), each
    /// run through the sensor: returns how many started, and pushes the storm rule's detections
    /// to `out`.
    pub fn run(
        &mut self,
        now: u64,
        per_hour: f64,
        noise_per_hour: f64,
        running: Option<Running>,
        storm: Option<StormRule>,
        out: &mut Vec<Detection>,
    ) -> u64 {
        let elapsed = now.saturating_sub(self.last);
        let start = self.last;
        self.last = now;
        if let (Some(r), Some(rng)) = (running, self.noise.as_mut()) {
            if noise_per_hour > 0.0 {
                let mean_gap = 3600.0 / noise_per_hour;
                let mut t = rng.exponential(mean_gap);
                while t < elapsed as f64 {
                    let rule = u32::try_from(rng.below_or_eq(u64::from(RULES - 1))).unwrap_or(0);
                    self.seq += 1;
                    out.push(detection(
                        self.seq,
                        start + t as u64,
                        r.version,
                        rule,
                        false,
                        false,
                        false,
                    ));
                    t += rng.exponential(mean_gap);
                }
            }
        }
        let expected = self.carry + per_hour * elapsed as f64 / 3600.0;
        let steady = expected.floor().max(0.0);
        self.carry = expected - steady;
        let steady = steady as u64;
        let burst = if std::mem::take(&mut self.burst_pending) {
            BOOT_PROCESSES
        } else {
            0
        };
        let fires = match (running, storm) {
            (Some(r), Some(s)) if r.version == s.version => Some((r, s)),
            _ => None,
        };
        let Some((running, rule)) = fires else {
            return steady + burst;
        };
        for k in 0..burst {
            // Within the boot's first minute, in order.
            let at = start.saturating_add(k * 60 / BOOT_PROCESSES.max(1));
            self.process(at, k < BOOT_SYSTEM_PROCESSES, running, rule, out);
        }
        for k in 0..steady {
            let at = start.saturating_add((k + 1) * elapsed / steady.max(1));
            self.process(at, false, running, rule, out);
        }
        steady + burst
    }

    fn process(
        &mut self,
        at: u64,
        system: bool,
        running: Running,
        rule: StormRule,
        out: &mut Vec<Detection>,
    ) {
        let ticks = EPOCH_DIFF.saturating_add(at.saturating_mul(TICKS_PER_SEC));
        let blocked = if rule.block && running.blessed && !system {
            let limiter = self.limiter.get_or_insert_with(Box::default);
            let decision = limiter.decide(
                running.version,
                rule.rule_index,
                ticks,
                &BlockPolicy::default(),
            );
            matches!(decision, StormDecision::Block)
        } else {
            false
        };
        if !system && rule.block {
            self.blocking_now = blocked;
        }
        self.blocked += u64::from(blocked);
        self.seq += 1;
        out.push(detection(
            self.seq,
            at,
            running.version,
            rule.rule_index,
            rule.block,
            blocked,
            system,
        ));
    }
}

/// A detection of rule `rule_index` of content `version` on a process started at `at`.
fn detection(
    seq: u64,
    at: u64,
    version: u64,
    rule_index: u32,
    block: bool,
    blocked: bool,
    system: bool,
) -> Detection {
    Detection {
        seq,
        time: EPOCH_DIFF.saturating_add(at.saturating_mul(TICKS_PER_SEC)),
        content_version: version,
        rule_index,
        event_type: "process_creation".into(),
        action: if block { "block" } else { "alert" }.into(),
        blocked,
        process_id: u32::try_from(seq % 65_536).unwrap_or(0) * 4,
        parent_process_id: 4,
        image: if system {
            "C:\\Windows\\System32\\svchost.exe"
        } else {
            "C:\\Program Files\\App\\app.exe"
        }
        .into(),
        command_line: String::new(),
        user: String::new(),
        parent_image: String::new(),
        hashes: String::new(),
        truncated: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const STORM: StormRule = StormRule {
        version: 2,
        rule_index: 4,
        block: true,
    };

    #[test]
    fn processes_arrive_at_the_rate_with_a_burst_at_boot_and_carry_their_fractions() {
        let mut a = Activity::default();
        a.boot(1000);
        let mut out = Vec::new();
        // 120 an hour: 30 in 900 s, plus the burst.
        assert_eq!(
            a.run(1900, 120.0, 0.0, None, None, &mut out),
            30 + BOOT_PROCESSES
        );
        // 7 s at 120 an hour is 0.233...: nothing yet, then it adds up.
        let n: u64 = (1..=30)
            .map(|k| a.run(1900 + 7 * k, 120.0, 0.0, None, None, &mut out))
            .sum();
        assert_eq!(n, 7);
        assert!(out.is_empty(), "no storm rule, no detections");
    }

    #[test]
    fn the_ordinary_rules_fire_at_the_baseline_rate_on_whatever_content_runs() {
        let mut a = Activity::new(Rng::new(9));
        a.boot(0);
        let mut out = Vec::new();
        let v1 = Running {
            version: 1,
            blessed: true,
        };
        // 0.02 an hour over 10,000 hours: about 200.
        for h in 1..=10_000 {
            a.run(h * 3600, 0.0, 0.02, Some(v1), None, &mut out);
        }
        assert!((150..=250).contains(&out.len()), "{}", out.len());
        assert!(out
            .iter()
            .all(|d| d.rule_index < RULES && d.content_version == 1 && !d.blocked));
        assert!(out.windows(2).all(|w| w[0].time <= w[1].time));
        // Nothing runs (the machine is down between boots): nothing fires.
        let n = out.len();
        a.run(10_001 * 3600, 0.0, 0.02, None, None, &mut out);
        assert_eq!(out.len(), n);
    }

    #[test]
    fn unblessed_content_only_alerts_and_the_system_is_never_blocked() {
        let mut a = Activity::default();
        a.boot(0);
        let mut out = Vec::new();
        let unblessed = Running {
            version: 2,
            blessed: false,
        };
        a.run(600, 120.0, 0.0, Some(unblessed), Some(STORM), &mut out);
        assert_eq!(out.len() as u64, BOOT_PROCESSES + 20);
        assert!(out.iter().all(|d| !d.blocked && d.action == "block"));
        assert_eq!(a.blocked, 0);
        assert!(!a.blocking_now);
    }

    #[test]
    fn a_blessed_block_all_rule_denies_every_user_process_and_the_limiter_stops_only_bursts() {
        let mut a = Activity::default();
        let blessed = Running {
            version: 2,
            blessed: true,
        };
        let mut out = Vec::new();
        a.boot(0);
        a.run(60, 120.0, 0.0, Some(blessed), Some(STORM), &mut out);
        // 12 user processes in the burst's minute (and 2 steady ones): all blocked, under the
        // limit of 20 a minute.
        assert_eq!(a.blocked, 14);
        // The steady flow never reaches 20 a minute: every user process is denied.
        a.run(3600, 120.0, 0.0, Some(blessed), Some(STORM), &mut out);
        assert_eq!(a.blocked, 14 + 118);
        assert!(a.blocking_now);
        // The system's processes were not.
        assert!(out
            .iter()
            .filter(|d| d.image.contains("System32"))
            .all(|d| !d.blocked));
        // A burst (one a second) is stopped at the limit: the rule is demoted, until a reboot.
        // (The limiter's window already holds the steady flow's last blocks.)
        let before = a.blocked;
        a.run(3700, 3600.0, 0.0, Some(blessed), Some(STORM), &mut out);
        let in_burst = a.blocked - before;
        assert!((1..=20).contains(&in_burst), "{in_burst}");
        assert!(!a.blocking_now);
        a.run(4000, 3600.0, 0.0, Some(blessed), Some(STORM), &mut out);
        assert_eq!(a.blocked, before + in_burst);
        let before = a.blocked;
        a.boot(5000);
        a.run(5001, 120.0, 0.0, Some(blessed), Some(STORM), &mut out);
        assert_eq!(a.blocked, before + 12);
        assert!(a.blocking_now);
    }
}
