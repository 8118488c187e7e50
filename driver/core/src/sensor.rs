//! The sensor: kernel callbacks in, verdicts and detections out, and the control protocol's
//! handler. The Windows layer owns one `Sensor` for the driver's lifetime and calls it from its
//! callbacks and its IOCTL dispatch; it passes the current time in, so everything here is
//! deterministic and tested on any OS.
//!
//! Callbacks never wait on a lock unboundedly: locks are tried a fixed number of times and a busy
//! lock costs a table update or a detection (counted), never a stalled kernel thread. Evaluation
//! itself allocates nothing (the interpreter's guarantee); building the event copies the kernel's
//! UTF-16 text into owned UTF-8 before evaluation starts, with fallible allocations only
//! ([`crate::text`]): an event that finds no memory is dropped and counted (`events_dropped`),
//! and the process it was about is let run. The tables and rings are allocated once, in
//! [`Sensor::new`], which fails rather than aborts when the memory is not there.
//!
//! A matching `block` rule denies a process creation only through the safety net in
//! [`crate::blocking`].

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use bulwark_interpreter::{Action, Event, EventType, FieldValue, VerifiedPack};
use bulwark_protocol::limits::{
    DETECTION_COMMAND_LINE_BYTES, DETECTION_HASHES_BYTES, DETECTION_IMAGE_BYTES,
    DETECTION_PARENT_IMAGE_BYTES, DETECTION_USER_BYTES,
};
use bulwark_protocol::{
    encode_list_header, encode_reply, ContentSource, ContentStatus, Counters, DetectionRecord,
    GuardEventRecord, GuardStatus, Outcome, ProtocolError, ReplyStatus, Request, StatusReply,
    Writer, LIST_HEADER_LEN, REPLY_HEADER_LEN,
};

use crate::blocking::{self, BlockPolicy, Spared, StormDecision, StormLimiter};
use crate::content::{Content, ContentSwap};
use crate::events::{
    ImageLoad, ImageLoadFacts, ProcessCreateFacts, ProcessCreation, Registry, RegistryFacts,
};
use crate::paths::VolumeMap;
use crate::process::{ProcessInfo, ProcessTable};
use crate::ring::{Record, Ring};
use crate::text::NoMemory;

/// Fixed sizes of the sensor's tables.
#[derive(Debug, Clone, Copy)]
pub struct Capacities {
    /// Processes remembered for parent fields.
    pub processes: usize,
    /// Detections buffered until user mode reads them (each slot about 1.4 KiB with the event's
    /// context: 2,048 take about 2.8 MiB; a full ring drops and counts the newest).
    pub detections: usize,
    /// Guard events buffered until user mode reads them.
    pub guard_events: usize,
    /// The block safety net's storm limit.
    pub block_policy: BlockPolicy,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            processes: crate::process::DEFAULT_CAPACITY,
            detections: 2048,
            guard_events: 256,
            block_policy: BlockPolicy::default(),
        }
    }
}

/// How many times a callback tries a lock before it gives up (and counts it).
const LOCK_TRIES: u32 = 4096;

/// Text kept in a fixed-size field of a ring record: its bytes and length.
#[derive(Debug, Clone, Copy)]
struct FixedText<const N: usize> {
    bytes: [u8; N],
    len: u16,
}

impl<const N: usize> FixedText<N> {
    const EMPTY: Self = FixedText {
        bytes: [0; N],
        len: 0,
    };

    /// Keeps `text`, cut to `N` bytes on a char boundary; whether it was cut.
    fn set(&mut self, text: &str) -> bool {
        let kept = bulwark_protocol::truncate_utf8(text, N);
        if let Some(dst) = self.bytes.get_mut(..kept.len()) {
            dst.copy_from_slice(kept.as_bytes());
        }
        self.len = u16::try_from(kept.len()).unwrap_or(0);
        kept.len() < text.len()
    }

    fn get(&self) -> &str {
        self.bytes
            .get(..usize::from(self.len))
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

/// A detection as kept in the ring: fixed size (about 1.4 KiB), no heap, written in place.
#[derive(Debug, Clone, Copy)]
pub struct DetectionSlot {
    seq: u64,
    time: u64,
    content_version: u64,
    rule_index: u32,
    event_type: u8,
    action: u8,
    blocked: bool,
    truncated: u8,
    process_id: u32,
    parent_process_id: u32,
    image: FixedText<DETECTION_IMAGE_BYTES>,
    command_line: FixedText<DETECTION_COMMAND_LINE_BYTES>,
    user: FixedText<DETECTION_USER_BYTES>,
    parent_image: FixedText<DETECTION_PARENT_IMAGE_BYTES>,
    hashes: FixedText<DETECTION_HASHES_BYTES>,
}

impl Record for DetectionSlot {
    const EMPTY: Self = DetectionSlot {
        seq: 0,
        time: 0,
        content_version: 0,
        rule_index: 0,
        event_type: 0,
        action: 0,
        blocked: false,
        truncated: 0,
        process_id: 0,
        parent_process_id: 0,
        image: FixedText::EMPTY,
        command_line: FixedText::EMPTY,
        user: FixedText::EMPTY,
        parent_image: FixedText::EMPTY,
        hashes: FixedText::EMPTY,
    };

    fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }
}

/// A text field of `ev` by its schema name ("" when the type has no such field or it is absent).
fn text_field<'e>(ev: &Event<'e, '_>, name: &str) -> &'e str {
    match ev.event_type().field_by_name(name).map(|f| ev.get(f.index)) {
        Some(FieldValue::Str(s)) => s,
        _ => "",
    }
}

impl DetectionSlot {
    /// Writes the detection of `rule` on `ev` in place: its identity, and the event's image,
    /// command line, user, parent image and hashes, each cut to its field on a char boundary
    /// (flagged in `truncated`).
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        now: u64,
        content_version: u64,
        rule: (u32, u8),
        blocked: bool,
        ev: &Event<'_, '_>,
        pids: (u32, u32),
        image: &str,
    ) {
        self.time = now;
        self.content_version = content_version;
        self.rule_index = rule.0;
        self.action = rule.1;
        self.event_type = ev.event_type().id();
        self.blocked = blocked;
        self.process_id = pids.0;
        self.parent_process_id = pids.1;
        let mut truncated = 0;
        let mut flag = |cut: bool, bit: u8| {
            if cut {
                truncated |= bit;
            }
        };
        flag(self.image.set(image), DetectionRecord::TRUNCATED_IMAGE);
        flag(
            self.command_line.set(text_field(ev, "CommandLine")),
            DetectionRecord::TRUNCATED_COMMAND_LINE,
        );
        flag(
            self.user.set(text_field(ev, "User")),
            DetectionRecord::TRUNCATED_USER,
        );
        flag(
            self.parent_image.set(text_field(ev, "ParentImage")),
            DetectionRecord::TRUNCATED_PARENT_IMAGE,
        );
        flag(
            self.hashes.set(text_field(ev, "Hashes")),
            DetectionRecord::TRUNCATED_HASHES,
        );
        self.truncated = truncated;
    }

    fn record(&self) -> DetectionRecord<'_> {
        DetectionRecord {
            seq: self.seq,
            time: self.time,
            content_version: self.content_version,
            rule_index: self.rule_index,
            event_type: self.event_type,
            action: self.action,
            blocked: self.blocked,
            truncated: self.truncated,
            process_id: self.process_id,
            parent_process_id: self.parent_process_id,
            image: self.image.get(),
            command_line: self.command_line.get(),
            user: self.user.get(),
            parent_image: self.parent_image.get(),
            hashes: self.hashes.get(),
        }
    }
}

/// A guard event as kept in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardEventSlot(pub GuardEventRecord);

impl Record for GuardEventSlot {
    const EMPTY: Self = GuardEventSlot(GuardEventRecord {
        seq: 0,
        time: 0,
        kind: 0,
        attempts: 0,
        detail: 0,
        version: 0,
        hash: [0; 32],
    });

    fn set_seq(&mut self, seq: u64) {
        self.0.seq = seq;
    }
}

/// The control side of the sensor: the loader and the boot-count guard, which decide what content
/// runs.
pub trait ControlPlane {
    /// A signed envelope arrived: open it (size, signature, version, verifier), stage it with the
    /// guard, and on success, with `hot`, make it the running content through `swap` (without,
    /// it runs from the next boot). A refusal leaves the running content untouched.
    fn stage(
        &mut self,
        envelope: &[u8],
        hot: bool,
        now: u64,
        swap: &mut dyn FnMut(Content),
    ) -> OutcomeBuf;
    /// The user-mode service confirms a healthy boot: bless the candidate.
    fn confirm_healthy(&mut self, now: u64) -> OutcomeBuf;
    /// The user-mode service asks to go back to last-known-good: the guard quarantines the
    /// candidate and last-known-good becomes the running content through `swap`.
    fn revert(&mut self, now: u64, swap: &mut dyn FnMut(Content)) -> OutcomeBuf;
    /// The guard's state for the status reply.
    fn guard_status(&self) -> GuardStatus;
    /// Where the running content came from, according to the guard (a candidate becomes
    /// last-known-good while it runs, without being swapped).
    fn running_source(&self) -> ContentSource;
    /// Hands the guard events not yet forwarded to `sink`, oldest first.
    fn take_events(&mut self, sink: &mut dyn FnMut(GuardEventRecord));
}

/// An owned [`Outcome`] with a fixed message buffer.
#[derive(Debug, Clone)]
pub struct OutcomeBuf {
    /// Accepted or not.
    pub accepted: bool,
    /// A stable reason code.
    pub code: u16,
    message: [u8; bulwark_protocol::limits::MESSAGE_BYTES],
    len: usize,
}

impl OutcomeBuf {
    /// An outcome with `message` (truncated on a char boundary).
    pub fn new(accepted: bool, code: u16, message: &str) -> Self {
        let mut out = OutcomeBuf {
            accepted,
            code,
            message: [0; bulwark_protocol::limits::MESSAGE_BYTES],
            len: 0,
        };
        let text = bulwark_protocol::truncate_utf8(message, out.message.len());
        if let Some(dst) = out.message.get_mut(..text.len()) {
            dst.copy_from_slice(text.as_bytes());
            out.len = text.len();
        }
        out
    }

    /// An outcome whose message is formatted (into the fixed buffer, truncated).
    pub fn format(accepted: bool, code: u16, args: core::fmt::Arguments<'_>) -> Self {
        let mut w = FixedWriter {
            buf: [0; bulwark_protocol::limits::MESSAGE_BYTES],
            len: 0,
        };
        let _ = core::fmt::write(&mut w, args);
        let text = core::str::from_utf8(w.buf.get(..w.len).unwrap_or(&[])).unwrap_or("");
        OutcomeBuf::new(accepted, code, text)
    }

    /// The message.
    pub fn message(&self) -> &str {
        core::str::from_utf8(self.message.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }

    fn outcome(&self) -> Outcome<'_> {
        Outcome {
            accepted: self.accepted,
            code: self.code,
            message: self.message(),
        }
    }
}

struct FixedWriter {
    buf: [u8; bulwark_protocol::limits::MESSAGE_BYTES],
    len: usize,
}

impl core::fmt::Write for FixedWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len().saturating_sub(self.len);
        let s = bulwark_protocol::truncate_utf8(s, room);
        let end = self.len.saturating_add(s.len());
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
        }
        Ok(())
    }
}

/// What a process-creation callback must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Deny the process creation (a matching rule's action is `block`).
    pub block: bool,
}

#[derive(Default)]
struct Stats {
    events: [AtomicU64; 3],
    detections: AtomicU64,
    blocked: AtomicU64,
    eval_errors: AtomicU64,
    over_budget: AtomicU64,
    table_busy: AtomicU64,
    events_dropped: AtomicU64,
    blocks_spared: AtomicU64,
    rules_demoted: AtomicU64,
}

/// The version of the content the guard holds as last-known-good while it runs (blessed), if any.
#[derive(Default)]
struct Blessed {
    known: core::sync::atomic::AtomicBool,
    version: AtomicU64,
}

impl Blessed {
    fn set(&self, version: Option<u64>) {
        // Cleared first and set last, so a reader never pairs the flag with another version.
        self.known.store(false, Ordering::Release);
        if let Some(v) = version {
            self.version.store(v, Ordering::Release);
            self.known.store(true, Ordering::Release);
        }
    }

    fn is(&self, version: u64) -> bool {
        self.known.load(Ordering::Acquire) && self.version.load(Ordering::Acquire) == version
    }
}

/// The sensor.
pub struct Sensor {
    volumes: spin::RwLock<VolumeMap>,
    processes: spin::Mutex<ProcessTable>,
    content: ContentSwap,
    detections: Ring<DetectionSlot>,
    guard_events: Ring<GuardEventSlot>,
    stats: Stats,
    blessed: Blessed,
    storms: spin::Mutex<StormLimiter>,
    block_policy: BlockPolicy,
    boot_salt: u64,
    driver_version: u32,
}

impl Sensor {
    /// A sensor with no content. Allocates its tables here, once; fails (and the driver does not
    /// start) when the memory is not there.
    pub fn new(
        capacities: Capacities,
        boot_salt: u64,
        driver_version: u32,
    ) -> Result<Self, NoMemory> {
        // Every fallible claim before the process table's entries, which cannot report failure.
        let detections = Ring::new(capacities.detections)?;
        let guard_events = Ring::new(capacities.guard_events)?;
        let processes = ProcessTable::with_capacity(capacities.processes)?;
        Ok(Sensor {
            volumes: spin::RwLock::new(VolumeMap::default()),
            processes: spin::Mutex::new(processes),
            content: ContentSwap::new(),
            detections,
            guard_events,
            stats: Stats::default(),
            blessed: Blessed::default(),
            storms: spin::Mutex::new(StormLimiter::default()),
            block_policy: capacities.block_policy,
            boot_salt,
            driver_version,
        })
    }

    /// Replaces the volume map (at start, and when volumes arrive).
    pub fn set_volumes(&self, volumes: VolumeMap) {
        *self.volumes.write() = volumes;
    }

    /// The running content's swap (the control plane installs content through it).
    pub fn content(&self) -> &ContentSwap {
        &self.content
    }

    /// Records a guard event for user mode.
    pub fn report_guard_event(&self, record: GuardEventRecord) {
        self.guard_events.push(GuardEventSlot(record));
    }

    /// Reports an evaluation stopped at the pack's proven cost bound: a guard event of kind
    /// [`GuardEventRecord::KIND_OVER_BUDGET`] whose detail is the rule that was running.
    fn report_over_budget(&self, now: u64, version: u64, hash: [u8; 32], rule: u32) {
        self.report_guard_event(GuardEventRecord {
            seq: 0,
            time: now,
            kind: GuardEventRecord::KIND_OVER_BUDGET,
            attempts: 0,
            detail: rule,
            version,
            hash,
        });
    }

    fn lookup(
        &self,
        f: impl FnOnce(&ProcessTable) -> Option<Arc<ProcessInfo>>,
    ) -> Option<Arc<ProcessInfo>> {
        for _ in 0..LOCK_TRIES {
            if let Some(t) = self.processes.try_lock() {
                return f(&t);
            }
            core::hint::spin_loop();
        }
        self.stats.table_busy.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn update(&self, f: impl FnOnce(&mut ProcessTable)) {
        for _ in 0..LOCK_TRIES {
            if let Some(mut t) = self.processes.try_lock() {
                f(&mut t);
                return;
            }
            core::hint::spin_loop();
        }
        self.stats.table_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// An event lost for lack of memory.
    fn dropped(&self, _: NoMemory) {
        self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A process is being created. Returns whether to deny it.
    pub fn on_process_create(&self, facts: &ProcessCreateFacts<'_>, now: u64) -> Verdict {
        let parent = self.lookup(|t| match facts.parent_create_time {
            Some(ct) => t.get(facts.parent_process_id, ct),
            None => t.get_live(facts.parent_process_id),
        });
        let built = ProcessCreation::build(facts, &self.volumes.read(), parent, self.boot_salt);
        let pc = match built {
            Ok(pc) => pc,
            Err(e) => {
                // Not seen, so not blocked either.
                self.dropped(e);
                return Verdict { block: false };
            }
        };
        let block = pc.with_event(|ev| {
            self.evaluate(
                ev,
                now,
                facts.process_id,
                facts.parent_process_id,
                &pc.info.image,
            )
        });
        if !block {
            // A denied process never runs, so it is not remembered.
            self.update(|t| t.insert(pc.info));
        }
        Verdict { block }
    }

    /// A process exited.
    pub fn on_process_exit(&self, process_id: u32) {
        self.update(|t| {
            t.remove(process_id);
        });
    }

    /// An image was mapped.
    pub fn on_image_load(&self, facts: &ImageLoadFacts<'_>, now: u64) {
        let process = self.lookup(|t| t.get_live(facts.process_id));
        let built = ImageLoad::build(facts, &self.volumes.read(), process.clone());
        let il = match built {
            Ok(il) => il,
            Err(e) => return self.dropped(e),
        };
        let image = process.as_deref().map_or("", |p| p.image.as_str());
        il.with_event(|ev| self.evaluate(ev, now, facts.process_id, 0, image));
    }

    /// A registry write happened.
    pub fn on_registry(&self, facts: &RegistryFacts<'_>, now: u64) {
        let process = self.lookup(|t| t.get_live(facts.process_id));
        let r = match Registry::build(facts, process.clone()) {
            Ok(r) => r,
            Err(e) => return self.dropped(e),
        };
        let image = process.as_deref().map_or("", |p| p.image.as_str());
        r.with_event(|ev| self.evaluate(ev, now, facts.process_id, 0, image));
    }

    /// Evaluates one event against the running content; returns whether a `block` rule matched.
    fn evaluate(
        &self,
        ev: &Event<'_, '_>,
        now: u64,
        process_id: u32,
        parent_process_id: u32,
        image: &str,
    ) -> bool {
        let type_index = usize::from(ev.event_type().id());
        if let Some(c) = self.stats.events.get(type_index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let can_block = ev.event_type() == EventType::ProcessCreation;
        let result = self.content.with_active(|content| {
            let Some(content) = content else {
                return false;
            };
            // The safety net's per-event checks, made once, only if a block rule matches.
            let mut spared = None::<Option<Spared>>;
            let mut block = false;
            let stats = content.pack.evaluate(ev, &mut |rule| {
                let mut blocks = false;
                if can_block && rule.action == Action::Block {
                    let standing = *spared.get_or_insert_with(|| self.standing(image, content));
                    let why = match standing {
                        Some(why) => Some(why),
                        None => self.storm(content, rule.index, now),
                    };
                    match why {
                        None => blocks = true,
                        Some(_) => {
                            self.stats.blocks_spared.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                block |= blocks;
                self.stats.detections.fetch_add(1, Ordering::Relaxed);
                // The event's text is copied into the ring's slot, in place, only when a rule
                // matches.
                self.detections.push_with(|slot| {
                    slot.fill(
                        now,
                        content.version,
                        (rule.index, rule.action as u8),
                        blocks,
                        ev,
                        (process_id, parent_process_id),
                        image,
                    );
                });
            });
            if stats.errors > 0 {
                self.stats
                    .eval_errors
                    .fetch_add(u64::from(stats.errors), Ordering::Relaxed);
            }
            if let Some(rule) = stats.over_budget {
                // The cost model's bound was about to be passed: the evaluation stopped. Counted,
                // and reported to user mode as a guard event naming the rule.
                self.stats.over_budget.fetch_add(1, Ordering::Relaxed);
                self.report_over_budget(now, content.version, content.hash, rule);
            }
            block
        });
        let block = result.unwrap_or(false);
        if block {
            self.stats.blocked.fetch_add(1, Ordering::Relaxed);
        }
        block
    }

    /// Why a `block` rule of `content` may not deny the creation of `image` whatever the rule
    /// (a process the system needs; content not blessed), or `None` when it may.
    fn standing(&self, image: &str, content: &Content) -> Option<Spared> {
        let protected = blocking::is_protected(image, self.volumes.read().system_root());
        if protected {
            Some(Spared::Protected)
        } else if !self.blessed.is(content.version) {
            Some(Spared::Unblessed)
        } else {
            None
        }
    }

    /// The storm limiter's word on rule `rule` blocking now; a demotion is reported as a guard
    /// event.
    fn storm(&self, content: &Content, rule: u32, now: u64) -> Option<Spared> {
        let mut decision = StormDecision::Spared(Spared::Busy);
        for _ in 0..LOCK_TRIES {
            if let Some(mut storms) = self.storms.try_lock() {
                decision = storms.decide(content.version, rule, now, &self.block_policy);
                break;
            }
            core::hint::spin_loop();
        }
        match decision {
            StormDecision::Block => None,
            StormDecision::DemotedNow => {
                self.stats.rules_demoted.fetch_add(1, Ordering::Relaxed);
                self.report_guard_event(GuardEventRecord {
                    seq: 0,
                    time: now,
                    kind: GuardEventRecord::KIND_BLOCK_DEMOTED,
                    attempts: 0,
                    detail: rule,
                    version: content.version,
                    hash: content.hash,
                });
                Some(Spared::Demoted)
            }
            StormDecision::Spared(why) => Some(why),
        }
    }

    /// The status reply's content part.
    pub fn content_status(&self) -> ContentStatus {
        self.content
            .with_active(|c| {
                c.map_or_else(ContentStatus::default, |c| ContentStatus {
                    source: c.source,
                    channel: c.channel,
                    version: c.version,
                    hash: c.hash,
                    rules: u32::try_from(c.pack.rule_count()).unwrap_or(u32::MAX),
                })
            })
            .unwrap_or_default()
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            events: [
                l(&self.stats.events[0]),
                l(&self.stats.events[1]),
                l(&self.stats.events[2]),
            ],
            detections: l(&self.stats.detections),
            detections_dropped: self.detections.dropped(),
            blocked: l(&self.stats.blocked),
            eval_errors: l(&self.stats.eval_errors),
            over_budget: l(&self.stats.over_budget),
            content_busy: self.content.busy(),
            events_dropped: l(&self.stats.events_dropped),
            blocks_spared: l(&self.stats.blocks_spared),
            rules_demoted: l(&self.stats.rules_demoted),
            detections_pending: u32::try_from(self.detections.pending()).unwrap_or(u32::MAX),
            guard_events_pending: u32::try_from(self.guard_events.pending()).unwrap_or(u32::MAX),
        }
    }

    /// Handles one IOCTL: parses the request (the one place untrusted user-mode bytes are read),
    /// carries it out, and writes the reply into `output`. Returns the reply's length. Nothing is
    /// taken from a ring unless the reply can hold it.
    pub fn handle_ioctl(
        &self,
        ioctl: u32,
        input: &[u8],
        output: &mut [u8],
        control: &mut dyn ControlPlane,
        now: u64,
        backoff: &mut dyn FnMut(),
    ) -> Result<usize, ProtocolError> {
        let request = Request::parse(ioctl, input)?;
        let result = self.handle_request(request, output, control, now, backoff);
        self.forward_guard_events(control);
        result
    }

    /// Moves the control plane's new guard events into the ring user mode reads, and takes the
    /// guard's word on whether the running content is blessed (last-known-good). Called after
    /// start-up, every request and every tick of the guard.
    pub fn forward_guard_events(&self, control: &mut dyn ControlPlane) {
        control.take_events(&mut |e| self.report_guard_event(e));
        let running = self.content_status();
        let blessed = (running.source != ContentSource::None
            && control.running_source() == ContentSource::LastKnownGood)
            .then_some(running.version);
        self.blessed.set(blessed);
    }

    fn handle_request(
        &self,
        request: Request<'_>,
        output: &mut [u8],
        control: &mut dyn ControlPlane,
        now: u64,
        backoff: &mut dyn FnMut(),
    ) -> Result<usize, ProtocolError> {
        let op = request.op();
        match request {
            Request::Status => {
                let mut content = self.content_status();
                if content.source != ContentSource::None {
                    content.source = control.running_source();
                }
                let reply = StatusReply {
                    driver_version: self.driver_version,
                    schema_hash: bulwark_interpreter::schema_hash(),
                    content,
                    guard: control.guard_status(),
                    counters: self.counters(),
                };
                encode_reply(output, op, ReplyStatus::Ok, |w| reply.encode(w))
            }
            Request::ReadDetections { max } => drain_reply(
                output,
                op,
                &self.detections,
                DetectionRecord::LEN,
                max,
                |d, w| d.record().encode(w),
            ),
            Request::ReadGuardEvents { max } => drain_reply(
                output,
                op,
                &self.guard_events,
                GuardEventRecord::LEN,
                max,
                |e, w| e.0.encode(w),
            ),
            Request::StagePack { envelope } => outcome_reply(output, op, || {
                control.stage(envelope, true, now, &mut |content| {
                    self.content.swap(content, backoff);
                })
            }),
            Request::StageNextBoot { envelope } => outcome_reply(output, op, || {
                control.stage(envelope, false, now, &mut |content| {
                    self.content.swap(content, backoff);
                })
            }),
            Request::ConfirmHealthy => outcome_reply(output, op, || control.confirm_healthy(now)),
            Request::Revert => outcome_reply(output, op, || {
                control.revert(now, &mut |content| self.install(content, backoff))
            }),
        }
    }

    /// Installs content (start-up, or a revert) without going through a request. Last-known-good
    /// content is blessed; a candidate is not until the guard says so.
    pub fn install(&self, content: Content, backoff: &mut dyn FnMut()) {
        let blessed = (content.source == ContentSource::LastKnownGood).then_some(content.version);
        self.blessed.set(None);
        self.content.swap(content, backoff);
        self.blessed.set(blessed);
    }

    /// Rule metadata of the running content, for tests and the status of one rule.
    pub fn with_pack<R>(&self, f: impl FnOnce(Option<&VerifiedPack>) -> R) -> Option<R> {
        self.content.with_active(|c| f(c.map(|c| &c.pack)))
    }
}

/// The reply to a request that changes state: the output must be able to hold the answer before
/// `act` runs, so a change is never made that the caller cannot be told about.
fn outcome_reply(
    output: &mut [u8],
    op: bulwark_protocol::Op,
    act: impl FnOnce() -> OutcomeBuf,
) -> Result<usize, ProtocolError> {
    if output.len() < op.max_reply_len() {
        return Err(ProtocolError::OutputTooSmall {
            need: op.max_reply_len(),
            have: output.len(),
        });
    }
    let outcome = act();
    let o = outcome.outcome();
    encode_reply(output, op, o.status(), |w| o.encode(w))
}

/// A list reply with up to `max` records taken from `ring`: nothing is taken unless the reply can
/// hold it.
fn drain_reply<T: Record>(
    output: &mut [u8],
    op: bulwark_protocol::Op,
    ring: &Ring<T>,
    record_len: usize,
    max: u32,
    encode: impl Fn(&T, &mut Writer<'_>) -> Result<(), ProtocolError>,
) -> Result<usize, ProtocolError> {
    let n = fit(output.len(), record_len, max)?;
    let dropped = ring.dropped();
    encode_reply(output, op, ReplyStatus::Ok, |w| {
        let count_at = w.len();
        encode_list_header(w, 0, dropped)?;
        let mut count = 0u32;
        let mut result = Ok(());
        ring.drain(n, |r| {
            if result.is_ok() {
                result = encode(r, w);
                count = count.saturating_add(1);
            }
        });
        result?;
        w.patch_u32(count_at, count)
    })
}

/// How many records of `record_len` bytes fit in `output` after the headers, capped at `max`.
fn fit(output: usize, record_len: usize, max: u32) -> Result<usize, ProtocolError> {
    let head = REPLY_HEADER_LEN.saturating_add(LIST_HEADER_LEN);
    let room = output
        .saturating_sub(head)
        .checked_div(record_len)
        .unwrap_or(0);
    let n = room.min(max as usize);
    if n == 0 {
        return Err(ProtocolError::OutputTooSmall {
            need: head.saturating_add(record_len),
            have: output,
        });
    }
    Ok(n)
}
