//! The user-mode client of Bulwark's control device, used by the service and by `bulwark driver`.
//!
//! [`Client`] speaks the control protocol ([`bulwark_protocol`], the same request and reply types
//! the driver parses and writes) over a [`Transport`]: on Windows the device `\\.\Bulwark` through
//! `DeviceIoControl` ([`DeviceTransport`]); in tests, anything that answers IOCTLs, such as the
//! driver core's own handler.

use bulwark_protocol::limits::{MAX_DETECTIONS_PER_READ, MAX_GUARD_EVENTS_PER_READ};
use bulwark_protocol::{
    parse_detections, parse_guard_events, Outcome, ProtocolError, Request, StatusReply,
};

#[cfg(windows)]
mod device;
#[cfg(windows)]
pub use device::DeviceTransport;

/// Sends one IOCTL and receives its reply.
pub trait Transport {
    /// Sends `input` with control code `ioctl`; the reply is written to `output`. Returns the
    /// reply's length.
    fn ioctl(&mut self, ioctl: u32, input: &[u8], output: &mut [u8]) -> Result<usize, ClientError>;
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The device could not be opened (not installed, not running, or access denied).
    #[error("cannot reach the Bulwark control device: {0}")]
    Open(std::io::Error),
    /// The device was opened but the request failed (the driver refused it with an NT status, or
    /// the I/O manager did).
    #[error("the control request failed: {0}")]
    Io(#[from] std::io::Error),
    /// The driver refused the request (its status code is given).
    #[error("the driver refused the request: {0}")]
    Driver(String),
    /// The reply does not follow the protocol.
    #[error("malformed reply from the driver: {0}")]
    Protocol(#[from] ProtocolError),
}

/// A detection, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// Sequence number (gaps mean the driver dropped detections).
    pub seq: u64,
    /// Windows system time (100 ns since 1601).
    pub time: u64,
    /// The content version whose rule fired.
    pub content_version: u64,
    /// The rule's index in that pack (the pack gives id, title and author).
    pub rule_index: u32,
    /// Event type id.
    pub event_type: u8,
    /// Rule action (0 alert, 1 block).
    pub action: u8,
    /// Whether the process creation was denied.
    pub blocked: bool,
    /// Process id.
    pub process_id: u32,
    /// Parent process id.
    pub parent_process_id: u32,
    /// Image path.
    pub image: String,
    /// The event's command line (empty when its type has none).
    pub command_line: String,
    /// The event's user.
    pub user: String,
    /// The event's parent image.
    pub parent_image: String,
    /// The event's hashes.
    pub hashes: String,
    /// The fields the driver cut to their capacity.
    pub truncated: Vec<&'static str>,
}

/// A batch of detections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detections {
    /// Detections the driver dropped since it started (its ring was full).
    pub dropped_total: u64,
    /// Oldest first.
    pub records: Vec<Detection>,
}

/// A batch of guard events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardEvents {
    /// Events the driver dropped since it started.
    pub dropped_total: u64,
    /// Oldest first.
    pub records: Vec<bulwark_protocol::GuardEventRecord>,
}

/// The answer to a stage or confirm request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Accepted or refused.
    pub accepted: bool,
    /// The driver's reason code.
    pub code: u16,
    /// The driver's message.
    pub message: String,
}

/// A client of the control device.
pub struct Client<T: Transport> {
    transport: T,
}

impl<T: Transport> Client<T> {
    /// A client over `transport`.
    pub fn new(transport: T) -> Self {
        Client { transport }
    }

    fn call(&mut self, request: &Request<'_>) -> Result<Vec<u8>, ClientError> {
        let mut input = vec![0u8; request.encoded_len()];
        request.encode(&mut input)?;
        let op = request.op();
        let mut output = vec![0u8; op.max_reply_len()];
        let n = self.transport.ioctl(op.ioctl(), &input, &mut output)?;
        output.truncate(n);
        Ok(output)
    }

    /// Driver, content, guard and counters.
    pub fn status(&mut self) -> Result<StatusReply, ClientError> {
        let reply = self.call(&Request::Status)?;
        Ok(StatusReply::parse(&reply)?)
    }

    /// Takes up to `max` detections (capped at the per-read limit).
    pub fn read_detections(&mut self, max: u32) -> Result<Detections, ClientError> {
        let max = max.clamp(1, MAX_DETECTIONS_PER_READ);
        let reply = self.call(&Request::ReadDetections { max })?;
        let list = parse_detections(&reply)?;
        Ok(Detections {
            dropped_total: list.dropped_total,
            records: list
                .records
                .map(|r| Detection {
                    seq: r.seq,
                    time: r.time,
                    content_version: r.content_version,
                    rule_index: r.rule_index,
                    event_type: r.event_type,
                    action: r.action,
                    blocked: r.blocked,
                    process_id: r.process_id,
                    parent_process_id: r.parent_process_id,
                    image: r.image.to_owned(),
                    command_line: r.command_line.to_owned(),
                    user: r.user.to_owned(),
                    parent_image: r.parent_image.to_owned(),
                    hashes: r.hashes.to_owned(),
                    truncated: r.truncated_fields().collect(),
                })
                .collect(),
        })
    }

    /// Takes up to `max` guard events.
    pub fn read_guard_events(&mut self, max: u32) -> Result<GuardEvents, ClientError> {
        let max = max.clamp(1, MAX_GUARD_EVENTS_PER_READ);
        let reply = self.call(&Request::ReadGuardEvents { max })?;
        let list = parse_guard_events(&reply)?;
        Ok(GuardEvents {
            dropped_total: list.dropped_total,
            records: list.records.collect(),
        })
    }

    fn outcome(&mut self, request: &Request<'_>) -> Result<Answer, ClientError> {
        let reply = self.call(request)?;
        let o = Outcome::parse(request.op(), &reply)?;
        Ok(Answer {
            accepted: o.accepted,
            code: o.code,
            message: o.message.to_owned(),
        })
    }

    /// Stages a signed envelope (as `bulwark sign` wrote it). A refusal is an `Ok` answer with
    /// `accepted == false` and the driver's reason; the running content is then unchanged.
    pub fn stage(&mut self, envelope: &[u8]) -> Result<Answer, ClientError> {
        self.outcome(&Request::StagePack { envelope })
    }

    /// Confirms a healthy boot: the running candidate becomes last-known-good.
    pub fn confirm_healthy(&mut self) -> Result<Answer, ClientError> {
        self.outcome(&Request::ConfirmHealthy)
    }

    /// Stages a signed envelope for the next boot: it becomes the candidate without running.
    pub fn stage_next_boot(&mut self, envelope: &[u8]) -> Result<Answer, ClientError> {
        self.outcome(&Request::StageNextBoot { envelope })
    }

    /// Back to last-known-good: the candidate is quarantined and last-known-good runs.
    pub fn revert(&mut self) -> Result<Answer, ClientError> {
        self.outcome(&Request::Revert)
    }
}
