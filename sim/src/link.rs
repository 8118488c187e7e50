//! The service's driver link in the simulation: the endpoint service's agent core (the real one,
//! `bulwark_service::agent`) talks to the simulated machine's guard through this, as on Windows
//! it talks to the driver over DeviceIoControl. The machine is shared with the engine, which
//! powers it on and off, crashes it, and lets time pass.

use std::cell::RefCell;
use std::rc::Rc;

use bulwark_loader_boot_guard::{Active, TrustedKeys};
use bulwark_protocol::{ContentSource, GuardEventRecord};
use bulwark_service::link::{
    schema_field_counts, Answer, Detection, DriverLink, DriverStatus, LinkError, StageMode,
};

use crate::machine::Machine;

/// One endpoint's machine as the engine and the agent's link share it.
pub struct Node {
    /// The machine.
    pub machine: Machine,
    /// The simulation's clock (seconds).
    pub now: u64,
    /// Events the sensor has evaluated since it booted (the engine adds them while it is up).
    pub events: u64,
    /// Whether running the release crashes this machine (the scenario's behaviour for it).
    pub crashes_on: Option<u64>,
    /// Set by a hot stage of content that crashes this machine: the engine crashes it next.
    pub crash_pending: bool,
    /// Detections the sensor raised and the service has not read (`fp-storm`, `block-storm`).
    pub detections: Vec<Detection>,
}

impl Node {
    /// A node around `machine`.
    #[must_use]
    pub fn new(machine: Machine) -> Node {
        Node {
            machine,
            now: 0,
            events: 0,
            crashes_on: None,
            crash_pending: false,
            detections: Vec::new(),
        }
    }
}

/// The agent's driver link to a [`Node`].
pub struct SimLink {
    node: Rc<RefCell<Node>>,
    keys: Rc<TrustedKeys>,
}

impl SimLink {
    /// A link to `node`, whose guard trusts `keys`.
    #[must_use]
    pub fn new(node: Rc<RefCell<Node>>, keys: Rc<TrustedKeys>) -> SimLink {
        SimLink { node, keys }
    }
}

fn down() -> LinkError {
    LinkError::Unsupported("the machine is down")
}

fn answer(r: Result<String, bulwark_loader_boot_guard::GuardError>) -> Answer {
    match r {
        Ok(message) => Answer {
            accepted: true,
            code: 0,
            message,
        },
        Err(e) => Answer {
            accepted: false,
            code: e.code(),
            message: e.to_string(),
        },
    }
}

impl DriverLink for SimLink {
    fn status(&mut self) -> Result<DriverStatus, LinkError> {
        let n = self.node.borrow();
        if !n.machine.is_up() {
            return Err(down());
        }
        let state = n.machine.guard().map(|g| g.state());
        let source = match state.map(|s| s.active) {
            Some(Active::Candidate) => ContentSource::Candidate,
            Some(Active::Lkg) => ContentSource::LastKnownGood,
            _ => ContentSource::None,
        };
        Ok(DriverStatus {
            schema_hash: bulwark_interpreter::schema_hash(),
            field_counts: schema_field_counts(),
            content_version: n.machine.running().map_or(0, |c| c.version),
            source,
            last_known_good: state.and_then(|s| s.lkg).map(|c| c.version),
            candidate: state.and_then(|s| s.candidate).map(|c| c.version),
            events_evaluated: n.events,
        })
    }

    fn stage(&mut self, envelope: &[u8], mode: StageMode) -> Result<Answer, LinkError> {
        let mut n = self.node.borrow_mut();
        if !n.machine.is_up() {
            return Err(down());
        }
        let now = n.now;
        let hot = mode == StageMode::Hot;
        let r = n.machine.stage(&self.keys, envelope, hot, now);
        if let Ok(id) = &r {
            if hot && n.crashes_on == Some(id.version) {
                n.crash_pending = true;
            }
        }
        Ok(answer(r.map(|id| {
            format!("content version {} staged", id.version)
        })))
    }

    fn confirm_healthy(&mut self) -> Result<Answer, LinkError> {
        let mut n = self.node.borrow_mut();
        if !n.machine.is_up() {
            return Err(down());
        }
        let now = n.now;
        Ok(answer(n.machine.confirm_healthy(now).map(|id| {
            format!("content version {} is now last-known-good", id.version)
        })))
    }

    fn revert(&mut self) -> Result<Answer, LinkError> {
        let mut n = self.node.borrow_mut();
        if !n.machine.is_up() {
            return Err(down());
        }
        let now = n.now;
        Ok(answer(n.machine.revert(&self.keys, now).map(|id| {
            format!("last-known-good version {} is running", id.version)
        })))
    }

    fn guard_events(&mut self) -> Result<Vec<GuardEventRecord>, LinkError> {
        let mut n = self.node.borrow_mut();
        if !n.machine.is_up() {
            return Err(down());
        }
        Ok(n.machine
            .take_events()
            .into_iter()
            .map(|e| bulwark_driver_core::control::guard_event_record(&e, e.seq))
            .collect())
    }

    fn detections(&mut self) -> Result<Vec<Detection>, LinkError> {
        let mut n = self.node.borrow_mut();
        if !n.machine.is_up() {
            return Err(down());
        }
        Ok(std::mem::take(&mut n.detections))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::machine::FaultyStore;
    use crate::rng::Rng;
    use bulwark_loader_boot_guard::state::EventKind;
    use bulwark_loader_boot_guard::Config;

    const SECRET: [u8; 32] = [7; 32];

    fn envelope(version: u64) -> Vec<u8> {
        let text = format!(
            "rule\n  id \"r{version}\"\n  title \"t\"\n  author \"a\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"m{version}\"\n  ret\nend\n"
        );
        let pack = bulwark_interpreter::text::asm(&text).unwrap();
        bulwark_loader_boot_guard::seal(
            &SECRET,
            1,
            version,
            bulwark_interpreter::schema_hash(),
            &pack,
        )
        .unwrap()
    }

    #[test]
    fn the_agents_requests_reach_the_machines_guard() {
        let keys = Rc::new(
            TrustedKeys::new(&[bulwark_loader_boot_guard::envelope::public_key(&SECRET)]).unwrap(),
        );
        let machine = Machine::new(
            Config {
                channel: 1,
                threshold: 3,
                stable_secs: 3600,
            },
            FaultyStore::new(Rng::new(1), 0.0, 0.0),
        );
        let node = Rc::new(RefCell::new(Node::new(machine)));
        let mut link = SimLink::new(node.clone(), keys.clone());
        // Down: the link cannot reach the driver.
        assert!(link.status().is_err());
        node.borrow_mut().machine.boot(&keys, 10);
        node.borrow_mut().crashes_on = Some(2);
        let s = link.status().unwrap();
        assert_eq!(
            (s.content_version, s.last_known_good, s.candidate),
            (0, None, None)
        );
        assert!(link.stage(&envelope(1), StageMode::Hot).unwrap().accepted);
        assert_eq!(link.status().unwrap().content_version, 1);
        assert!(link.confirm_healthy().unwrap().accepted);
        assert_eq!(link.status().unwrap().last_known_good, Some(1));
        // The release that crashes this machine: staged hot, the engine is told to crash it.
        assert!(link.stage(&envelope(2), StageMode::Hot).unwrap().accepted);
        assert!(node.borrow().crash_pending);
        // A revert goes back to 1; a replay of 1 is refused with the guard's code.
        let a = link.revert().unwrap();
        assert!(a.accepted, "{}", a.message);
        assert_eq!(link.status().unwrap().content_version, 1);
        let a = link.stage(&envelope(1), StageMode::Hot).unwrap();
        assert!(!a.accepted);
        assert_eq!(a.code, 122);
        // The guard's events, as the driver's records.
        let kinds: Vec<u16> = link
            .guard_events()
            .unwrap()
            .iter()
            .map(|e| e.kind)
            .collect();
        for k in [
            EventKind::Staged,
            EventKind::Blessed,
            EventKind::Quarantined,
            EventKind::Reverted,
        ] {
            assert!(kinds.contains(&k.code()), "{k:?} in {kinds:?}");
        }
        assert!(
            link.guard_events().unwrap().is_empty(),
            "each event handed out once"
        );
    }
}
