//! The fleet: each endpoint's facts, drawn from the scenario's shares, and when it is on line.
//!
//! **Facts.** Endpoint `i` of a run draws its OS build, hardware class and host group from its own
//! random stream ([`Purpose::Facts`]), and gets a 16-byte id from it: the same seed gives the same
//! fleet, and its ring positions are the real ones ([`bulwark_rollout::position`]).
//!
//! **On line.** The scenario gives, for each hour of the day, the probability `p(h)` that an
//! endpoint is on line. Each endpoint draws, once per simulated day, a place `u` in `[0, 1)` in
//! that day's pattern: it is on line in hour `h` exactly when `u < p(h)`, switching at a random
//! minute of the hour where `p` crosses `u`. So the fleet's share on line follows `p` hour by
//! hour, a machine switches a few times a day rather than every hour (low `u`: on most of the
//! day, like a server; high `u`: on only at the peak), and over several days every machine with
//! a chance of being on line comes on line.

use bulwark_rollout::endpoint::{EndpointFacts, EndpointId};

use crate::rng::{Purpose, Rng};
use crate::scenario::{Scenario, Share};

/// Seconds in a day.
pub const DAY: u64 = 86_400;
/// Seconds in an hour.
pub const HOUR: u64 = 3_600;

/// One endpoint's facts, as indexes into the scenario's lists (compact: the fleet is large).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Its index in the fleet.
    pub index: u32,
    /// Its id.
    pub id: EndpointId,
    /// Index into `fleet.os_builds`.
    pub os_build: u16,
    /// Index into `fleet.hw_classes`.
    pub hw_class: u16,
    /// Index into `fleet.host_groups`.
    pub host_group: u16,
}

fn pick(rng: &mut Rng, shares: &[Share]) -> u16 {
    let weights: Vec<f64> = shares.iter().map(|s| s.share).collect();
    u16::try_from(rng.weighted(&weights)).unwrap_or(0)
}

impl Endpoint {
    /// Endpoint `index` of the run seeded with `seed`.
    #[must_use]
    pub fn generate(scenario: &Scenario, seed: u64, index: u32) -> Endpoint {
        let mut rng = Rng::stream(seed, u64::from(index), Purpose::Facts);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        id[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        let f = &scenario.fleet;
        Endpoint {
            index,
            id: EndpointId(id),
            os_build: pick(&mut rng, &f.os_builds),
            hw_class: pick(&mut rng, &f.hw_classes),
            host_group: pick(&mut rng, &f.host_groups),
        }
    }

    /// The facts it reports (what the rollout model places it by).
    #[must_use]
    pub fn facts(&self, scenario: &Scenario) -> EndpointFacts {
        let f = &scenario.fleet;
        let name = |list: &[Share], i: u16| {
            list.get(usize::from(i))
                .map(|s| s.name.clone())
                .unwrap_or_default()
        };
        EndpointFacts {
            id: self.id,
            os_build: name(&f.os_builds, self.os_build),
            hw_class: name(&f.hw_classes, self.hw_class),
            host_group: name(&f.host_groups, self.host_group),
        }
    }

    /// Whether the release's behaviour applies to this endpoint (its stratum is the one the
    /// scenario names, or none is named).
    #[must_use]
    pub fn affected(&self, scenario: &Scenario) -> bool {
        let f = &scenario.fleet;
        let r = &scenario.release;
        let os_ok = r.os_build.as_ref().is_none_or(|b| {
            f.os_builds
                .get(usize::from(self.os_build))
                .is_some_and(|s| &s.name == b)
        });
        let hw_ok = r.hw_class.as_ref().is_none_or(|c| {
            f.hw_classes
                .get(usize::from(self.hw_class))
                .is_some_and(|s| &s.name == c)
        });
        os_ok && hw_ok
    }
}

/// When one endpoint is on line: the switches of one day, computed on demand.
#[derive(Debug, Clone)]
pub struct OnlineSchedule {
    rng: Rng,
}

impl OnlineSchedule {
    /// The schedule of endpoint `index` in the run seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64, index: u32) -> OnlineSchedule {
        OnlineSchedule {
            rng: Rng::stream(seed, u64::from(index), Purpose::Life),
        }
    }

    /// The on-line intervals of day `day` (seconds from the start of the simulation, which is
    /// midnight UTC of day 0), in order: `[start, end)` pairs. Draws from the schedule's stream,
    /// so call it once per day, in order.
    pub fn day(&mut self, online_by_hour: &[f64], day: u64) -> Vec<(u64, u64)> {
        let u = self.rng.unit();
        let base = day.saturating_mul(DAY);
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut start: Option<u64> = None;
        for (h, p) in online_by_hour.iter().enumerate() {
            let on = u < *p;
            let hour_start = base + h as u64 * HOUR;
            // The switch happens at a random second of the hour (a switch at the day's start is
            // exact, so that a machine on over midnight stays on).
            let at = |rng: &mut Rng| {
                if h == 0 {
                    hour_start
                } else {
                    hour_start + rng.below_or_eq(HOUR - 1)
                }
            };
            match (on, start) {
                (true, None) => start = Some(at(&mut self.rng)),
                (false, Some(s)) => {
                    let end = at(&mut self.rng).max(s);
                    if end > s {
                        out.push((s, end));
                    }
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push((s, base + DAY));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::builtin;

    #[test]
    fn the_fleet_follows_the_shares_and_the_seed() {
        let s = builtin("crash-one-build").unwrap();
        let fleet: Vec<Endpoint> = (0..20_000).map(|i| Endpoint::generate(&s, 5, i)).collect();
        let affected = fleet.iter().filter(|e| e.affected(&s)).count();
        assert!((3_700..4_300).contains(&affected), "{affected}");
        let again: Vec<Endpoint> = (0..20_000).map(|i| Endpoint::generate(&s, 5, i)).collect();
        assert_eq!(fleet, again);
        let other = Endpoint::generate(&s, 6, 0);
        assert_ne!(other.id, fleet[0].id);
        let f = fleet[0].facts(&s);
        assert_eq!(f.id, fleet[0].id);
        assert!(s.fleet.os_builds.iter().any(|b| b.name == f.os_build));
        // Every endpoint is affected when the release names no stratum.
        let all = builtin("crash-on-load").unwrap();
        assert!(fleet.iter().all(|e| e.affected(&all)));
        // Ids are distinct.
        let mut ids: Vec<_> = fleet.iter().map(|e| e.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), fleet.len());
    }

    #[test]
    fn the_share_on_line_follows_the_hour() {
        let s = builtin("good").unwrap();
        let p = &s.fleet.online_by_hour;
        let n = 20_000u32;
        let mut on_at = [0u32; 48];
        let mut ever = 0;
        let mut switches = 0usize;
        for i in 0..n {
            let mut sched = OnlineSchedule::new(1, i);
            let mut any = false;
            for day in 0..2 {
                let intervals = sched.day(p, day);
                switches += intervals.len() * 2;
                for (a, b) in &intervals {
                    assert!(a < b && *b <= (day + 1) * DAY);
                    any = true;
                    for (h, c) in on_at.iter_mut().enumerate() {
                        // the middle of each hour
                        let t = h as u64 * HOUR + HOUR / 2;
                        if (*a..*b).contains(&t) {
                            *c += 1;
                        }
                    }
                }
            }
            ever += u32::from(any);
        }
        for (h, c) in on_at.iter().enumerate() {
            let share = f64::from(*c) / f64::from(n);
            // The switch falls anywhere in the hour: at its middle, the share is between the
            // neighbouring hours' probabilities.
            let (lo, hi) = {
                let a = p[h % 24];
                let b = p[(h + 23) % 24];
                (a.min(b) - 0.02, a.max(b) + 0.02)
            };
            assert!(
                share > lo && share < hi,
                "hour {h}: {share} not in {lo}..{hi}"
            );
        }
        // Two days: all but about 1% come on line at some point.
        assert!(f64::from(ever) / f64::from(n) > 0.98, "{ever}");
        // A few switches a day, not one an hour.
        assert!(switches / (n as usize) < 8, "{switches}");
    }
}
