//! The block safety net: a `block` rule can cost processes, never the machine.
//!
//! A `block` rule that matches every process creation would leave a machine that boots, crashes
//! nothing, and runs nothing: the boot-count guard never notices, because nothing crashes. So a
//! matching `block` rule denies a process creation only when all of these hold (otherwise the
//! detection is still raised, with `blocked` false, and the spared block is counted):
//!
//! 1. **The process is not one the system needs** ([`is_protected`]): the session manager, the
//!    Win32 subsystem, start-up, logon, the service control manager, authentication, service
//!    hosts, the logon screen and desktop, the shell, the console host, and Bulwark's own service,
//!    each by its full path under the system root (so a copy elsewhere is not protected).
//! 2. **The content is blessed**: new content's `block` actions run as `alert` until the user-mode
//!    service has confirmed a healthy boot with it and the guard has made it last-known-good. A
//!    bad release then shows up as detections, not as a machine that runs nothing.
//! 3. **The rule is not in a storm** ([`StormLimiter`]): a rule that blocks more than
//!    [`BlockPolicy::storm_limit`] processes within [`BlockPolicy::storm_window_secs`] is demoted
//!    to `alert` until the next content update, with a guard event
//!    ([`GuardEventRecord::KIND_BLOCK_DEMOTED`](bulwark_protocol::GuardEventRecord)) the service
//!    forwards. This is what stops a blessed rule that turns out to match everything (a boot-time
//!    storm: the 21st denied process creation of a minute is where it stops).
//!
//! Everything here is fixed-size and allocation-free: it runs in the process-creation callback.

/// What the net allows, per sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPolicy {
    /// The most processes one rule may block within the window before it is demoted.
    pub storm_limit: u32,
    /// The window, in seconds.
    pub storm_window_secs: u32,
}

impl Default for BlockPolicy {
    /// 20 blocks a minute. A real `block` rule stops a payload and the few retries of whatever
    /// launched it; malware that respawns faster than once every three seconds is alerted on
    /// (every detection is still raised) rather than fought one process at a time, and a rule
    /// that matches ordinary processes stops blocking within a minute of first doing harm.
    fn default() -> Self {
        BlockPolicy {
            storm_limit: 20,
            storm_window_secs: 60,
        }
    }
}

/// Why a matching `block` rule did not deny the process creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spared {
    /// The process is one the system needs.
    Protected,
    /// The running content has not been confirmed healthy yet.
    Unblessed,
    /// The rule was demoted for blocking too many processes too fast.
    Demoted,
    /// Every storm-tracking slot is in use; blocking untracked could not be stopped, so it is not
    /// done.
    Untracked,
    /// Another CPU held the storm table for longer than a callback waits.
    Busy,
}

/// Processes under `<system root>\System32` the system needs to boot, log on, run services or be
/// repaired. Without any one of them Windows bugchecks (csrss, wininit, winlogon, smss, services
/// and lsass are critical processes), cannot log anyone on (LogonUI, userinit, fontdrvhost, dwm,
/// lsaiso with Credential Guard), has no desktop shell (sihost), runs no services (svchost), or gives an administrator no console
/// to repair it from (conhost, which every console program needs).
pub const SYSTEM32_PROTECTED: [&str; 14] = [
    "smss.exe",
    "csrss.exe",
    "wininit.exe",
    "winlogon.exe",
    "services.exe",
    "lsass.exe",
    "lsaiso.exe",
    "svchost.exe",
    "LogonUI.exe",
    "userinit.exe",
    "fontdrvhost.exe",
    "dwm.exe",
    "sihost.exe",
    "conhost.exe",
];

/// Processes directly under `<system root>`: the shell.
pub const SYSTEM_ROOT_PROTECTED: [&str; 1] = ["explorer.exe"];

/// Bulwark's own service, relative to the system drive (`C:`): it confirms healthy boots and
/// brings the next content update, which is what ends a demotion. The service's installer puts it
/// here.
pub const SERVICE_IMAGE: &str = "\\Program Files\\Bulwark\\bulwark-service.exe";

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Whether `image` (a process's image in `C:\...` form, as the event builder makes it) is a process
/// the system needs, given the system root (`C:\Windows`). Case-insensitive, whole paths only.
pub fn is_protected(image: &str, system_root: &str) -> bool {
    if let Some(rest) = strip_prefix_ignore_case(image, system_root) {
        if let Some(name) = strip_prefix_ignore_case(rest, "\\System32\\") {
            return SYSTEM32_PROTECTED
                .iter()
                .any(|p| p.eq_ignore_ascii_case(name));
        }
        if let Some(name) = rest.strip_prefix('\\') {
            return SYSTEM_ROOT_PROTECTED
                .iter()
                .any(|p| p.eq_ignore_ascii_case(name));
        }
    }
    match (image.get(..2), system_root.get(..2), image.get(2..)) {
        (Some(drive), Some(system_drive), Some(rest)) => {
            drive.eq_ignore_ascii_case(system_drive) && rest.eq_ignore_ascii_case(SERVICE_IMAGE)
        }
        _ => false,
    }
}

/// How many `block` rules the storm limiter tracks at once. A rule's slot is taken when it first
/// blocks and freed when its window has passed (a demoted rule keeps its slot until the next
/// content update).
pub const MAX_TRACKED_RULES: usize = 64;

/// 100 ns units a second (the unit of the sensor's clock).
const TICKS_PER_SEC: u64 = 10_000_000;

#[derive(Debug, Clone, Copy)]
struct Tracked {
    rule: u32,
    window_start: u64,
    blocks: u32,
    demoted: bool,
}

/// What the storm limiter says about one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StormDecision {
    /// Block.
    Block,
    /// This block is the one over the limit: the rule is demoted from now on (report it).
    DemotedNow,
    /// Do not block.
    Spared(Spared),
}

/// Per-rule block counts in fixed windows, for the running content only: a content update (a
/// different version) starts afresh, which is what ends a demotion.
#[derive(Debug, Clone)]
pub struct StormLimiter {
    version: Option<u64>,
    rules: [Option<Tracked>; MAX_TRACKED_RULES],
}

impl Default for StormLimiter {
    fn default() -> Self {
        StormLimiter {
            version: None,
            rules: [None; MAX_TRACKED_RULES],
        }
    }
}

impl StormLimiter {
    /// Rule `rule` of content `version` wants to block at `now` (100 ns units).
    pub fn decide(
        &mut self,
        version: u64,
        rule: u32,
        now: u64,
        policy: &BlockPolicy,
    ) -> StormDecision {
        if self.version != Some(version) {
            *self = StormLimiter {
                version: Some(version),
                ..StormLimiter::default()
            };
        }
        let window = u64::from(policy.storm_window_secs).saturating_mul(TICKS_PER_SEC);
        let expired = |t: &Tracked| {
            // A clock that went backwards also starts a new window.
            now < t.window_start || now.saturating_sub(t.window_start) >= window
        };
        let index = match self
            .rules
            .iter()
            .position(|t| t.is_some_and(|t| t.rule == rule))
        {
            Some(i) => i,
            None => {
                let free = self
                    .rules
                    .iter()
                    .position(|t| t.is_none_or(|t| !t.demoted && expired(&t)));
                let Some(i) = free else {
                    return StormDecision::Spared(Spared::Untracked);
                };
                if let Some(slot) = self.rules.get_mut(i) {
                    *slot = Some(Tracked {
                        rule,
                        window_start: now,
                        blocks: 0,
                        demoted: false,
                    });
                }
                i
            }
        };
        let Some(Some(t)) = self.rules.get_mut(index) else {
            return StormDecision::Spared(Spared::Untracked);
        };
        if t.demoted {
            return StormDecision::Spared(Spared::Demoted);
        }
        if expired(t) {
            t.window_start = now;
            t.blocks = 0;
        }
        if t.blocks < policy.storm_limit {
            t.blocks = t.blocks.saturating_add(1);
            StormDecision::Block
        } else {
            t.demoted = true;
            StormDecision::DemotedNow
        }
    }

    /// The rules of content `version` demoted so far.
    pub fn demoted(&self, version: u64) -> impl Iterator<Item = u32> + '_ {
        self.rules
            .iter()
            .flatten()
            .filter(move |t| t.demoted && self.version == Some(version))
            .map(|t| t.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = TICKS_PER_SEC;

    #[test]
    fn protected_processes_by_full_path_only() {
        let root = "C:\\Windows";
        for p in [
            "C:\\Windows\\System32\\smss.exe",
            "c:\\windows\\system32\\CSRSS.EXE",
            "C:\\Windows\\System32\\lsass.exe",
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\System32\\LogonUI.exe",
            "C:\\Windows\\explorer.exe",
            "C:\\Program Files\\Bulwark\\bulwark-service.exe",
        ] {
            assert!(is_protected(p, root), "{p}");
        }
        for p in [
            "C:\\Users\\Public\\lsass.exe",
            "C:\\Windows\\Temp\\svchost.exe",
            "C:\\Windows\\System32\\cmd.exe",
            "C:\\Windows\\System32\\sub\\lsass.exe",
            "C:\\Windows\\System32\\lsass.exe.bak",
            "D:\\Windows\\System32\\lsass.exe",
            "C:\\Windows\\System32\\",
            "D:\\Program Files\\Bulwark\\bulwark-service.exe",
            "",
        ] {
            assert!(!is_protected(p, root), "{p}");
        }
        assert!(is_protected(
            "D:\\WINNT\\System32\\winlogon.exe",
            "D:\\WINNT"
        ));
        assert!(is_protected(
            "D:\\Program Files\\Bulwark\\bulwark-service.exe",
            "D:\\WINNT"
        ));
    }

    #[test]
    fn a_rule_is_demoted_at_the_limit_until_the_next_content() {
        let policy = BlockPolicy {
            storm_limit: 3,
            storm_window_secs: 60,
        };
        let mut l = StormLimiter::default();
        for i in 0..3 {
            assert_eq!(l.decide(7, 1, i * S, &policy), StormDecision::Block);
        }
        assert_eq!(l.decide(7, 1, 4 * S, &policy), StormDecision::DemotedNow);
        assert_eq!(
            l.decide(7, 1, 5 * S, &policy),
            StormDecision::Spared(Spared::Demoted)
        );
        // Still demoted long after the window: only new content ends it.
        assert_eq!(
            l.decide(7, 1, 1000 * S, &policy),
            StormDecision::Spared(Spared::Demoted)
        );
        assert_eq!(l.demoted(7).collect::<alloc::vec::Vec<_>>(), [1]);
        // Another rule has its own count.
        assert_eq!(l.decide(7, 2, 5 * S, &policy), StormDecision::Block);
        // The next content starts afresh.
        assert_eq!(l.decide(8, 1, 6 * S, &policy), StormDecision::Block);
        assert_eq!(l.demoted(8).count(), 0);
    }

    #[test]
    fn blocks_spread_out_are_never_a_storm() {
        let policy = BlockPolicy {
            storm_limit: 3,
            storm_window_secs: 60,
        };
        let mut l = StormLimiter::default();
        for i in 0..100 {
            // Three a minute, every minute.
            let now = (i / 3) * 60 * S + (i % 3) * S;
            assert_eq!(l.decide(1, 0, now, &policy), StormDecision::Block, "{i}");
        }
    }

    #[test]
    fn untracked_rules_do_not_block() {
        let policy = BlockPolicy::default();
        let mut l = StormLimiter::default();
        for rule in 0..MAX_TRACKED_RULES as u32 {
            assert_eq!(l.decide(1, rule, S, &policy), StormDecision::Block);
        }
        assert_eq!(
            l.decide(1, 9999, S, &policy),
            StormDecision::Spared(Spared::Untracked)
        );
        // Once a window has passed, slots are reused.
        assert_eq!(l.decide(1, 9999, 61 * S, &policy), StormDecision::Block);
    }
}
