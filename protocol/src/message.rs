//! Operations, requests and replies: one definition of every layout, used by both ends.

use crate::codec::{Reader, Writer};
use crate::limits::{
    DETECTION_COMMAND_LINE_BYTES, DETECTION_HASHES_BYTES, DETECTION_IMAGE_BYTES,
    DETECTION_PARENT_IMAGE_BYTES, DETECTION_USER_BYTES, MAX_DETECTIONS_PER_READ,
    MAX_GUARD_EVENTS_PER_READ, MAX_STAGE_BYTES, MESSAGE_BYTES,
};
use crate::{
    ctl_code, ProtocolError, FILE_DEVICE_UNKNOWN, FILE_READ_ACCESS, FILE_WRITE_ACCESS,
    METHOD_BUFFERED, PROTOCOL_VERSION, REPLY_MAGIC, REQUEST_MAGIC,
};

/// Size of the request and reply headers.
pub const REQUEST_HEADER_LEN: usize = 12;

/// The longest request any operation accepts (a stage of the largest envelope): the driver refuses
/// a longer input before it copies it.
pub const MAX_REQUEST_LEN: usize = REQUEST_HEADER_LEN + MAX_STAGE_BYTES;
/// Size of the reply header.
pub const REPLY_HEADER_LEN: usize = 16;

/// The operations of the control device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// Driver, content, guard and counter status.
    Status = 1,
    /// Take detections from the driver's ring.
    ReadDetections = 2,
    /// Take guard events (decisions, attempts, blessings, reverts, quarantines).
    ReadGuardEvents = 3,
    /// Stage a signed pack: it goes through the loader and the guard.
    StagePack = 4,
    /// The service confirms a healthy boot: the candidate is blessed.
    ConfirmHealthy = 5,
    /// Back to last-known-good: the candidate (running or staged) is quarantined and
    /// last-known-good runs.
    Revert = 6,
    /// Stage a signed pack for the next boot: it goes through the loader and the guard and
    /// becomes the candidate, without running until the machine boots again.
    StageNextBoot = 7,
}

impl Op {
    /// Every operation, in code order.
    pub const ALL: [Op; 7] = [
        Op::Status,
        Op::ReadDetections,
        Op::ReadGuardEvents,
        Op::StagePack,
        Op::ConfirmHealthy,
        Op::Revert,
        Op::StageNextBoot,
    ];

    /// The operation with this number.
    pub fn from_u16(v: u16) -> Option<Op> {
        Op::ALL.into_iter().find(|op| *op as u16 == v)
    }

    /// The operation's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Op::Status => "status",
            Op::ReadDetections => "read-detections",
            Op::ReadGuardEvents => "read-guard-events",
            Op::StagePack => "stage-pack",
            Op::ConfirmHealthy => "confirm-healthy",
            Op::Revert => "revert",
            Op::StageNextBoot => "stage-next-boot",
        }
    }

    /// The IOCTL code: reads need a handle opened for reading, changes one opened for writing.
    pub const fn ioctl(self) -> u32 {
        let access = match self {
            Op::Status | Op::ReadDetections | Op::ReadGuardEvents => FILE_READ_ACCESS,
            Op::StagePack | Op::ConfirmHealthy | Op::Revert | Op::StageNextBoot => {
                FILE_WRITE_ACCESS
            }
        };
        ctl_code(
            FILE_DEVICE_UNKNOWN,
            0x800 | self as u32,
            METHOD_BUFFERED,
            access,
        )
    }

    /// The operation an IOCTL code selects.
    pub fn from_ioctl(code: u32) -> Result<Op, ProtocolError> {
        Op::ALL
            .into_iter()
            .find(|op| op.ioctl() == code)
            .ok_or(ProtocolError::UnknownIoctl { code })
    }

    /// The size of this operation's reply when it is complete (lists at their maximum).
    pub fn max_reply_len(self) -> usize {
        const DETECTIONS: usize = REPLY_HEADER_LEN
            + LIST_HEADER_LEN
            + MAX_DETECTIONS_PER_READ as usize * DetectionRecord::LEN;
        const GUARD_EVENTS: usize = REPLY_HEADER_LEN
            + LIST_HEADER_LEN
            + MAX_GUARD_EVENTS_PER_READ as usize * GuardEventRecord::LEN;
        match self {
            Op::Status => REPLY_HEADER_LEN + StatusReply::LEN,
            Op::ReadDetections => DETECTIONS,
            Op::ReadGuardEvents => GUARD_EVENTS,
            Op::StagePack | Op::ConfirmHealthy | Op::Revert | Op::StageNextBoot => {
                REPLY_HEADER_LEN + Outcome::LEN
            }
        }
    }
}

/// A parsed, validated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// See [`Op::Status`].
    Status,
    /// See [`Op::ReadDetections`]: at most `max` records (1..=[`MAX_DETECTIONS_PER_READ`]).
    ReadDetections {
        /// How many records the caller can take.
        max: u32,
    },
    /// See [`Op::ReadGuardEvents`]: at most `max` records (1..=[`MAX_GUARD_EVENTS_PER_READ`]).
    ReadGuardEvents {
        /// How many records the caller can take.
        max: u32,
    },
    /// See [`Op::StagePack`]: the signed envelope, 1..=[`MAX_STAGE_BYTES`] bytes.
    StagePack {
        /// The envelope's bytes, exactly as `bulwark sign` wrote them.
        envelope: &'a [u8],
    },
    /// See [`Op::ConfirmHealthy`].
    ConfirmHealthy,
    /// See [`Op::Revert`].
    Revert,
    /// See [`Op::StageNextBoot`]: the signed envelope, 1..=[`MAX_STAGE_BYTES`] bytes.
    StageNextBoot {
        /// The envelope's bytes, exactly as `bulwark sign` wrote them.
        envelope: &'a [u8],
    },
}

impl<'a> Request<'a> {
    /// The operation of this request.
    pub fn op(&self) -> Op {
        match self {
            Request::Status => Op::Status,
            Request::ReadDetections { .. } => Op::ReadDetections,
            Request::ReadGuardEvents { .. } => Op::ReadGuardEvents,
            Request::StagePack { .. } => Op::StagePack,
            Request::ConfirmHealthy => Op::ConfirmHealthy,
            Request::Revert => Op::Revert,
            Request::StageNextBoot { .. } => Op::StageNextBoot,
        }
    }

    /// Parses the input buffer of an IOCTL: the one entry point for untrusted bytes from user mode.
    pub fn parse(ioctl: u32, input: &'a [u8]) -> Result<Request<'a>, ProtocolError> {
        let op = Op::from_ioctl(ioctl)?;
        let mut r = Reader::new(input, 0);
        let magic = r.u32("request magic")?;
        if magic != REQUEST_MAGIC {
            return Err(ProtocolError::BadMagic {
                found: magic,
                expected: REQUEST_MAGIC,
            });
        }
        let version = r.u16("request version")?;
        if version != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion {
                found: version,
                supported: PROTOCOL_VERSION,
            });
        }
        let header_op = r.u16("request operation")?;
        if header_op != op as u16 {
            return Err(ProtocolError::OpMismatch {
                ioctl: op as u16,
                header: header_op,
            });
        }
        let declared = r.u32("request body length")?;
        if usize::try_from(declared).ok() != Some(r.remaining()) {
            return Err(ProtocolError::LengthMismatch {
                declared,
                actual: r.remaining(),
            });
        }
        let body_len = r.remaining();
        let exact = |expected: usize| {
            if body_len == expected {
                Ok(())
            } else {
                Err(ProtocolError::BodyLength {
                    op: op.name(),
                    expected,
                    got: body_len,
                })
            }
        };
        let request = match op {
            Op::Status => {
                exact(0)?;
                Request::Status
            }
            Op::ConfirmHealthy => {
                exact(0)?;
                Request::ConfirmHealthy
            }
            Op::Revert => {
                exact(0)?;
                Request::Revert
            }
            Op::ReadDetections | Op::ReadGuardEvents => {
                exact(8)?;
                let at = r.position();
                let max = r.u32("max records")?;
                r.reserved(4, "read reserved")?;
                let limit = if op == Op::ReadDetections {
                    MAX_DETECTIONS_PER_READ
                } else {
                    MAX_GUARD_EVENTS_PER_READ
                };
                if max == 0 || max > limit {
                    return Err(ProtocolError::BadField {
                        field: "max records",
                        offset: at,
                        value: u64::from(max),
                        expected: if op == Op::ReadDetections {
                            "1 to 256"
                        } else {
                            "1 to 64"
                        },
                    });
                }
                if op == Op::ReadDetections {
                    Request::ReadDetections { max }
                } else {
                    Request::ReadGuardEvents { max }
                }
            }
            Op::StagePack | Op::StageNextBoot => {
                if body_len == 0 || body_len > MAX_STAGE_BYTES {
                    return Err(ProtocolError::BodyLength {
                        op: op.name(),
                        expected: MAX_STAGE_BYTES,
                        got: body_len,
                    });
                }
                let envelope = r.bytes(body_len, "envelope")?;
                if op == Op::StagePack {
                    Request::StagePack { envelope }
                } else {
                    Request::StageNextBoot { envelope }
                }
            }
        };
        r.finish("request")?;
        Ok(request)
    }

    /// The size of the encoded request.
    pub fn encoded_len(&self) -> usize {
        REQUEST_HEADER_LEN.saturating_add(match self {
            Request::Status | Request::ConfirmHealthy | Request::Revert => 0,
            Request::ReadDetections { .. } | Request::ReadGuardEvents { .. } => 8,
            Request::StagePack { envelope } | Request::StageNextBoot { envelope } => envelope.len(),
        })
    }

    /// Encodes the request (the client side). Returns the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ProtocolError> {
        let body_len = self.encoded_len().saturating_sub(REQUEST_HEADER_LEN);
        let mut w = Writer::new(out);
        w.u32(REQUEST_MAGIC)?;
        w.u16(PROTOCOL_VERSION)?;
        w.u16(self.op() as u16)?;
        w.u32(u32::try_from(body_len).unwrap_or(u32::MAX))?;
        match self {
            Request::Status | Request::ConfirmHealthy | Request::Revert => {}
            Request::ReadDetections { max } | Request::ReadGuardEvents { max } => {
                w.u32(*max)?;
                w.zeros(4)?;
            }
            Request::StagePack { envelope } | Request::StageNextBoot { envelope } => {
                w.bytes(envelope)?
            }
        }
        Ok(w.len())
    }
}

/// The status of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ReplyStatus {
    /// Done.
    Ok = 0,
    /// Refused; the body's [`Outcome`] says why.
    Rejected = 1,
}

impl core::fmt::Display for ReplyStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ReplyStatus::Ok => "ok",
            ReplyStatus::Rejected => "rejected",
        })
    }
}

/// Writes a reply header followed by the body `body` writes; returns the total length.
pub fn encode_reply(
    out: &mut [u8],
    op: Op,
    status: ReplyStatus,
    body: impl FnOnce(&mut Writer<'_>) -> Result<(), ProtocolError>,
) -> Result<usize, ProtocolError> {
    let mut w = Writer::new(out);
    w.u32(REPLY_MAGIC)?;
    w.u16(PROTOCOL_VERSION)?;
    w.u16(op as u16)?;
    w.u32(status as u32)?;
    w.u32(0)?;
    body(&mut w)?;
    let body_len = w.len().saturating_sub(REPLY_HEADER_LEN);
    w.patch_u32(12, u32::try_from(body_len).unwrap_or(u32::MAX))?;
    Ok(w.len())
}

/// Checks a reply's header against the operation that was asked for; returns its status and body.
pub fn parse_reply(op: Op, bytes: &[u8]) -> Result<(ReplyStatus, Reader<'_>), ProtocolError> {
    let mut r = Reader::new(bytes, 0);
    let magic = r.u32("reply magic")?;
    if magic != REPLY_MAGIC {
        return Err(ProtocolError::BadMagic {
            found: magic,
            expected: REPLY_MAGIC,
        });
    }
    let version = r.u16("reply version")?;
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion {
            found: version,
            supported: PROTOCOL_VERSION,
        });
    }
    let header_op = r.u16("reply operation")?;
    if header_op != op as u16 {
        return Err(ProtocolError::OpMismatch {
            ioctl: op as u16,
            header: header_op,
        });
    }
    let at = r.position();
    let status = match r.u32("reply status")? {
        0 => ReplyStatus::Ok,
        1 => ReplyStatus::Rejected,
        v => {
            return Err(ProtocolError::BadField {
                field: "reply status",
                offset: at,
                value: u64::from(v),
                expected: "0 (ok) or 1 (rejected)",
            })
        }
    };
    let declared = r.u32("reply body length")?;
    if usize::try_from(declared).ok() != Some(r.remaining()) {
        return Err(ProtocolError::LengthMismatch {
            declared,
            actual: r.remaining(),
        });
    }
    let body = r.bytes(r.remaining(), "reply body")?;
    Ok((status, Reader::new(body, REPLY_HEADER_LEN)))
}

/// Where the running content came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ContentSource {
    /// No content is loaded (first boot, or nothing valid was found).
    None = 0,
    /// Last-known-good content.
    LastKnownGood = 1,
    /// A candidate on trial, not yet blessed.
    Candidate = 2,
}

impl ContentSource {
    fn from_u8(v: u8) -> Option<ContentSource> {
        match v {
            0 => Some(ContentSource::None),
            1 => Some(ContentSource::LastKnownGood),
            2 => Some(ContentSource::Candidate),
            _ => None,
        }
    }

    /// A short name for output.
    pub fn name(self) -> &'static str {
        match self {
            ContentSource::None => "none",
            ContentSource::LastKnownGood => "last-known-good",
            ContentSource::Candidate => "candidate",
        }
    }
}

/// The reply to [`Op::Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusReply {
    /// The driver's version, `major << 16 | minor << 8 | patch`.
    pub driver_version: u32,
    /// The hash of the event schema compiled into the driver.
    pub schema_hash: [u8; 32],
    /// The running content.
    pub content: ContentStatus,
    /// The boot-count guard.
    pub guard: GuardStatus,
    /// Counters since the driver started.
    pub counters: Counters,
}

/// The running content, in [`StatusReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentStatus {
    /// Where it came from.
    pub source: ContentSource,
    /// Its update channel.
    pub channel: u32,
    /// Its content version.
    pub version: u64,
    /// SHA-256 of the pack.
    pub hash: [u8; 32],
    /// The number of rules.
    pub rules: u32,
}

impl Default for ContentStatus {
    fn default() -> Self {
        ContentStatus {
            source: ContentSource::None,
            channel: 0,
            version: 0,
            hash: [0; 32],
            rules: 0,
        }
    }
}

/// The guard, in [`StatusReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuardStatus {
    /// Failed or unfinished boots with the current candidate.
    pub attempts: u8,
    /// Attempts after which the candidate is quarantined.
    pub threshold: u8,
    /// Whether a candidate is staged and not yet blessed or quarantined.
    pub candidate_staged: bool,
    /// The candidate's content version (0 when none).
    pub candidate_version: u64,
    /// Entries in the quarantine list.
    pub quarantined: u32,
    /// Seconds a candidate must run before it is blessed.
    pub stable_period_secs: u32,
    /// Seconds the running candidate has run so far.
    pub stable_elapsed_secs: u32,
    /// Last-known-good's content version (0 when there is none).
    pub lkg_version: u64,
}

/// Counters, in [`StatusReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Events evaluated, per event type (process creation, image load, registry).
    pub events: [u64; 3],
    /// Detections raised.
    pub detections: u64,
    /// Detections lost because the ring was full.
    pub detections_dropped: u64,
    /// Process creations denied by `block` rules.
    pub blocked: u64,
    /// Runtime errors the VM turned into "no match" (defence in depth; should stay 0).
    pub eval_errors: u64,
    /// Evaluations stopped at the cost model's bound for the pack (a correct model keeps this 0).
    pub over_budget: u64,
    /// Events not evaluated because content was being swapped at that instant.
    pub content_busy: u64,
    /// Events lost because memory for their text ran out (the driver drops the event rather than
    /// fail an allocation into a bugcheck).
    pub events_dropped: u64,
    /// Process creations a `block` rule matched but that were let run: a process the system needs,
    /// content not yet confirmed healthy, or a rule demoted for blocking too many.
    pub blocks_spared: u64,
    /// Rules demoted from `block` to `alert` for blocking too many processes too fast (until the
    /// next content update).
    pub rules_demoted: u64,
    /// Detections waiting in the ring.
    pub detections_pending: u32,
    /// Guard events waiting in their ring.
    pub guard_events_pending: u32,
}

impl StatusReply {
    /// The encoded size of the body.
    pub const LEN: usize =
        4 + 32 + (4 + 4 + 8 + 32 + 4) + (4 + 8 + 4 + 4 + 4 + 8) + (8 * 12 + 4 + 4);

    /// Writes the body.
    pub fn encode(&self, w: &mut Writer<'_>) -> Result<(), ProtocolError> {
        w.u32(self.driver_version)?;
        w.bytes(&self.schema_hash)?;
        let c = &self.content;
        w.u8(c.source as u8)?;
        w.zeros(3)?;
        w.u32(c.channel)?;
        w.u64(c.version)?;
        w.bytes(&c.hash)?;
        w.u32(c.rules)?;
        let g = &self.guard;
        w.u8(g.attempts)?;
        w.u8(g.threshold)?;
        w.u8(u8::from(g.candidate_staged))?;
        w.u8(0)?;
        w.u64(g.candidate_version)?;
        w.u32(g.quarantined)?;
        w.u32(g.stable_period_secs)?;
        w.u32(g.stable_elapsed_secs)?;
        w.u64(g.lkg_version)?;
        let n = &self.counters;
        for v in n.events {
            w.u64(v)?;
        }
        for v in [
            n.detections,
            n.detections_dropped,
            n.blocked,
            n.eval_errors,
            n.over_budget,
            n.content_busy,
            n.events_dropped,
            n.blocks_spared,
            n.rules_demoted,
        ] {
            w.u64(v)?;
        }
        w.u32(n.detections_pending)?;
        w.u32(n.guard_events_pending)
    }

    /// Parses a status reply.
    pub fn parse(reply: &[u8]) -> Result<StatusReply, ProtocolError> {
        let (status, mut r) = parse_reply(Op::Status, reply)?;
        if status != ReplyStatus::Ok {
            return Err(ProtocolError::Refused { status });
        }
        let driver_version = r.u32("driver version")?;
        let schema_hash = r.array("schema hash")?;
        let at = r.position();
        let source = r.u8("content source")?;
        let source = ContentSource::from_u8(source).ok_or(ProtocolError::BadField {
            field: "content source",
            offset: at,
            value: u64::from(source),
            expected: "0, 1 or 2",
        })?;
        r.reserved(3, "content reserved")?;
        let content = ContentStatus {
            source,
            channel: r.u32("content channel")?,
            version: r.u64("content version")?,
            hash: r.array("content hash")?,
            rules: r.u32("rule count")?,
        };
        let attempts = r.u8("guard attempts")?;
        let threshold = r.u8("guard threshold")?;
        let candidate_staged = r.bool("candidate staged")?;
        r.reserved(1, "guard reserved")?;
        let guard = GuardStatus {
            attempts,
            threshold,
            candidate_staged,
            candidate_version: r.u64("candidate version")?,
            quarantined: r.u32("quarantined")?,
            stable_period_secs: r.u32("stable period")?,
            stable_elapsed_secs: r.u32("stable elapsed")?,
            lkg_version: r.u64("last-known-good version")?,
        };
        let mut events = [0u64; 3];
        for e in &mut events {
            *e = r.u64("events")?;
        }
        let counters = Counters {
            events,
            detections: r.u64("detections")?,
            detections_dropped: r.u64("detections dropped")?,
            blocked: r.u64("blocked")?,
            eval_errors: r.u64("evaluation errors")?,
            over_budget: r.u64("over budget")?,
            content_busy: r.u64("content busy")?,
            events_dropped: r.u64("events dropped")?,
            blocks_spared: r.u64("blocks spared")?,
            rules_demoted: r.u64("rules demoted")?,
            detections_pending: r.u32("detections pending")?,
            guard_events_pending: r.u32("guard events pending")?,
        };
        r.finish("status reply")?;
        Ok(StatusReply {
            driver_version,
            schema_hash,
            content,
            guard,
            counters,
        })
    }
}

/// Size of the header of a list reply (count, reserved, dropped total).
pub const LIST_HEADER_LEN: usize = 16;

/// One detection, as the driver reports it, with the event's key fields. Rule id, title and
/// author come from the pack the record's `content_version` names (the service has it; the
/// Detection Rule License requires the author in alerts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectionRecord<'a> {
    /// Sequence number, increasing by one per detection raised (gaps mean drops).
    pub seq: u64,
    /// When, in 100 ns units since 1601-01-01 UTC (Windows system time).
    pub time: u64,
    /// The version of the content that raised it.
    pub content_version: u64,
    /// The rule's index in that pack.
    pub rule_index: u32,
    /// The event type (schema numbering).
    pub event_type: u8,
    /// The rule's action (interpreter numbering: 0 alert, 1 block).
    pub action: u8,
    /// Whether the process creation was denied.
    pub blocked: bool,
    /// Which text fields were cut to their capacity: [`DetectionRecord::TRUNCATED_IMAGE`] and
    /// the others.
    pub truncated: u8,
    /// The process the event is about.
    pub process_id: u32,
    /// Its parent.
    pub parent_process_id: u32,
    /// The image path, `C:\...` form, UTF-8, at most [`DETECTION_IMAGE_BYTES`].
    pub image: &'a str,
    /// The event's `CommandLine` (empty when its type has none), at most
    /// [`DETECTION_COMMAND_LINE_BYTES`].
    pub command_line: &'a str,
    /// The event's `User`, at most [`DETECTION_USER_BYTES`].
    pub user: &'a str,
    /// The event's `ParentImage`, at most [`DETECTION_PARENT_IMAGE_BYTES`].
    pub parent_image: &'a str,
    /// The event's `Hashes`, at most [`DETECTION_HASHES_BYTES`].
    pub hashes: &'a str,
}

impl<'a> DetectionRecord<'a> {
    /// The encoded size of one record.
    pub const LEN: usize = 8
        + 8
        + 8
        + 4
        + 4
        + 4
        + 4
        + (2 + DETECTION_IMAGE_BYTES)
        + (2 + DETECTION_COMMAND_LINE_BYTES)
        + (2 + DETECTION_USER_BYTES)
        + (2 + DETECTION_PARENT_IMAGE_BYTES)
        + (2 + DETECTION_HASHES_BYTES);

    /// `truncated` bit: the image path was cut.
    pub const TRUNCATED_IMAGE: u8 = 1;
    /// `truncated` bit: the command line was cut.
    pub const TRUNCATED_COMMAND_LINE: u8 = 2;
    /// `truncated` bit: the user was cut.
    pub const TRUNCATED_USER: u8 = 4;
    /// `truncated` bit: the parent image was cut.
    pub const TRUNCATED_PARENT_IMAGE: u8 = 8;
    /// `truncated` bit: the hashes were cut.
    pub const TRUNCATED_HASHES: u8 = 16;

    /// The names of the fields `truncated` says were cut.
    pub fn truncated_fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            (Self::TRUNCATED_IMAGE, "image"),
            (Self::TRUNCATED_COMMAND_LINE, "command_line"),
            (Self::TRUNCATED_USER, "user"),
            (Self::TRUNCATED_PARENT_IMAGE, "parent_image"),
            (Self::TRUNCATED_HASHES, "hashes"),
        ]
        .into_iter()
        .filter(|(bit, _)| self.truncated & bit != 0)
        .map(|(_, name)| name)
    }

    /// Writes the record.
    pub fn encode(&self, w: &mut Writer<'_>) -> Result<(), ProtocolError> {
        w.u64(self.seq)?;
        w.u64(self.time)?;
        w.u64(self.content_version)?;
        w.u32(self.rule_index)?;
        w.u8(self.event_type)?;
        w.u8(self.action)?;
        w.u8(u8::from(self.blocked))?;
        w.u8(self.truncated)?;
        w.u32(self.process_id)?;
        w.u32(self.parent_process_id)?;
        w.fixed_str(self.image, DETECTION_IMAGE_BYTES)?;
        w.fixed_str(self.command_line, DETECTION_COMMAND_LINE_BYTES)?;
        w.fixed_str(self.user, DETECTION_USER_BYTES)?;
        w.fixed_str(self.parent_image, DETECTION_PARENT_IMAGE_BYTES)?;
        w.fixed_str(self.hashes, DETECTION_HASHES_BYTES)
    }

    fn parse(r: &mut Reader<'a>) -> Result<Self, ProtocolError> {
        let seq = r.u64("detection seq")?;
        let time = r.u64("detection time")?;
        let content_version = r.u64("detection content version")?;
        let rule_index = r.u32("detection rule index")?;
        let event_type = r.u8("detection event type")?;
        let action = r.u8("detection action")?;
        let blocked = r.bool("detection blocked")?;
        let at = r.position();
        let truncated = r.u8("detection truncated")?;
        if truncated >= 32 {
            return Err(ProtocolError::BadField {
                field: "detection truncated",
                offset: at,
                value: u64::from(truncated),
                expected: "bits 0 to 4",
            });
        }
        Ok(DetectionRecord {
            seq,
            time,
            content_version,
            rule_index,
            event_type,
            action,
            blocked,
            truncated,
            process_id: r.u32("detection process id")?,
            parent_process_id: r.u32("detection parent process id")?,
            image: r.fixed_str(DETECTION_IMAGE_BYTES, "detection image")?.0,
            command_line: r
                .fixed_str(DETECTION_COMMAND_LINE_BYTES, "detection command line")?
                .0,
            user: r.fixed_str(DETECTION_USER_BYTES, "detection user")?.0,
            parent_image: r
                .fixed_str(DETECTION_PARENT_IMAGE_BYTES, "detection parent image")?
                .0,
            hashes: r.fixed_str(DETECTION_HASHES_BYTES, "detection hashes")?.0,
        })
    }
}

/// One guard event (decision, attempt, blessing, revert, quarantine). `kind` and `detail` are the
/// guard's own codes (`bulwark-loader-boot-guard` names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardEventRecord {
    /// Sequence number, increasing by one per event (gaps mean drops).
    pub seq: u64,
    /// When, in 100 ns units since 1601-01-01 UTC.
    pub time: u64,
    /// What happened.
    pub kind: u16,
    /// The attempt counter at that moment.
    pub attempts: u8,
    /// Kind-specific detail (a reason code).
    pub detail: u32,
    /// The content version concerned (0 when none).
    pub version: u64,
    /// The content hash concerned (zero when none).
    pub hash: [u8; 32],
}

impl GuardEventRecord {
    /// A kind the sensor itself reports, not the boot-count guard (whose kinds are small numbers
    /// below these): an evaluation stopped at the cost bound the verifier proved for the running
    /// pack (`detail`: the rule that was running).
    pub const KIND_OVER_BUDGET: u16 = 0x100;

    /// A kind the sensor itself reports: a `block` rule blocked more processes in its window than
    /// the storm limit allows and now only alerts, until the next content update (`detail`: the
    /// rule).
    pub const KIND_BLOCK_DEMOTED: u16 = 0x101;

    /// The encoded size of one record.
    pub const LEN: usize = 8 + 8 + 2 + 1 + 1 + 4 + 8 + 32;

    /// Writes the record.
    pub fn encode(&self, w: &mut Writer<'_>) -> Result<(), ProtocolError> {
        w.u64(self.seq)?;
        w.u64(self.time)?;
        w.u16(self.kind)?;
        w.u8(self.attempts)?;
        w.u8(0)?;
        w.u32(self.detail)?;
        w.u64(self.version)?;
        w.bytes(&self.hash)
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let seq = r.u64("guard event seq")?;
        let time = r.u64("guard event time")?;
        let kind = r.u16("guard event kind")?;
        let attempts = r.u8("guard event attempts")?;
        r.reserved(1, "guard event reserved")?;
        Ok(GuardEventRecord {
            seq,
            time,
            kind,
            attempts,
            detail: r.u32("guard event detail")?,
            version: r.u64("guard event version")?,
            hash: r.array("guard event hash")?,
        })
    }
}

/// A list reply: records taken from one of the driver's rings.
#[derive(Debug, Clone)]
pub struct ListReply<'a, T> {
    /// Records lost to overflow since the driver started.
    pub dropped_total: u64,
    /// The records, oldest first.
    pub records: alloc_free::Records<'a, T>,
}

/// Writes the header of a list reply; the caller then writes `count` records.
pub fn encode_list_header(
    w: &mut Writer<'_>,
    count: u32,
    dropped_total: u64,
) -> Result<(), ProtocolError> {
    w.u32(count)?;
    w.u32(0)?;
    w.u64(dropped_total)
}

fn parse_list<'a>(
    op: Op,
    reply: &'a [u8],
    record_len: usize,
    max: u32,
) -> Result<(u64, u32, Reader<'a>), ProtocolError> {
    let (status, mut r) = parse_reply(op, reply)?;
    if status != ReplyStatus::Ok {
        return Err(ProtocolError::Refused { status });
    }
    let at = r.position();
    let count = r.u32("record count")?;
    if count > max {
        return Err(ProtocolError::BadField {
            field: "record count",
            offset: at,
            value: u64::from(count),
            expected: "at most the per-read limit",
        });
    }
    r.reserved(4, "list reserved")?;
    let dropped_total = r.u64("dropped total")?;
    let need = (count as usize).saturating_mul(record_len);
    if r.remaining() != need {
        return Err(ProtocolError::BodyLength {
            op: op.name(),
            expected: LIST_HEADER_LEN.saturating_add(need),
            got: LIST_HEADER_LEN.saturating_add(r.remaining()),
        });
    }
    Ok((dropped_total, count, r))
}

/// Parses a [`Op::ReadDetections`] reply. Every record is validated before any is returned.
pub fn parse_detections(reply: &[u8]) -> Result<ListReply<'_, DetectionRecord<'_>>, ProtocolError> {
    let (dropped_total, count, r) = parse_list(
        Op::ReadDetections,
        reply,
        DetectionRecord::LEN,
        MAX_DETECTIONS_PER_READ,
    )?;
    let mut check = r.clone();
    for _ in 0..count {
        DetectionRecord::parse(&mut check)?;
    }
    Ok(ListReply {
        dropped_total,
        records: alloc_free::Records::new(r, count, DetectionRecord::parse),
    })
}

/// Parses a [`Op::ReadGuardEvents`] reply. Every record is validated before any is returned.
pub fn parse_guard_events(reply: &[u8]) -> Result<ListReply<'_, GuardEventRecord>, ProtocolError> {
    let (dropped_total, count, r) = parse_list(
        Op::ReadGuardEvents,
        reply,
        GuardEventRecord::LEN,
        MAX_GUARD_EVENTS_PER_READ,
    )?;
    let mut check = r.clone();
    for _ in 0..count {
        GuardEventRecord::parse(&mut check)?;
    }
    Ok(ListReply {
        dropped_total,
        records: alloc_free::Records::new(r, count, GuardEventRecord::parse),
    })
}

/// Iteration over validated records without allocating.
pub mod alloc_free {
    use super::*;

    /// Records of a list reply, already validated.
    #[derive(Clone)]
    pub struct Records<'a, T> {
        reader: Reader<'a>,
        left: u32,
        parse: fn(&mut Reader<'a>) -> Result<T, ProtocolError>,
    }

    impl<T> core::fmt::Debug for Records<'_, T> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("Records").field("left", &self.left).finish()
        }
    }

    impl<'a, T> Records<'a, T> {
        pub(super) fn new(
            reader: Reader<'a>,
            left: u32,
            parse: fn(&mut Reader<'a>) -> Result<T, ProtocolError>,
        ) -> Self {
            Records {
                reader,
                left,
                parse,
            }
        }
    }

    impl<T> Iterator for Records<'_, T> {
        type Item = T;
        fn next(&mut self) -> Option<T> {
            if self.left == 0 {
                return None;
            }
            self.left = self.left.saturating_sub(1);
            (self.parse)(&mut self.reader).ok()
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (self.left as usize, Some(self.left as usize))
        }
    }
}

/// The result of [`Op::StagePack`], [`Op::StageNextBoot`], [`Op::ConfirmHealthy`] or
/// [`Op::Revert`]: accepted, or refused with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'a> {
    /// Whether the driver accepted.
    pub accepted: bool,
    /// A stable reason code (0 when accepted; the loader's and guard's codes otherwise).
    pub code: u16,
    /// What happened, for people: the loader's or the guard's message, truncated to
    /// [`MESSAGE_BYTES`].
    pub message: &'a str,
}

impl<'a> Outcome<'a> {
    /// The encoded size of the body.
    pub const LEN: usize = 1 + 1 + 2 + 2 + MESSAGE_BYTES;

    /// The reply status that goes with this outcome.
    pub fn status(&self) -> ReplyStatus {
        if self.accepted {
            ReplyStatus::Ok
        } else {
            ReplyStatus::Rejected
        }
    }

    /// Writes the body.
    pub fn encode(&self, w: &mut Writer<'_>) -> Result<(), ProtocolError> {
        w.u8(u8::from(self.accepted))?;
        w.u8(0)?;
        w.u16(self.code)?;
        w.fixed_str(self.message, MESSAGE_BYTES)
    }

    /// Parses a stage or confirm reply.
    pub fn parse(op: Op, reply: &'a [u8]) -> Result<Outcome<'a>, ProtocolError> {
        let (status, mut r) = parse_reply(op, reply)?;
        let accepted = r.bool("accepted")?;
        r.reserved(1, "outcome reserved")?;
        let code = r.u16("reason code")?;
        let message = r.fixed_str(MESSAGE_BYTES, "message")?.0;
        r.finish("outcome reply")?;
        if accepted != (status == ReplyStatus::Ok) {
            return Err(ProtocolError::BadField {
                field: "accepted",
                offset: REPLY_HEADER_LEN,
                value: u64::from(accepted),
                expected: "agreement with the reply status",
            });
        }
        Ok(Outcome {
            accepted,
            code,
            message,
        })
    }
}
