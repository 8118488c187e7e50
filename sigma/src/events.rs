//! Recorded events in, schema events out, streamed: JSON lines (one flat event per line), JSON
//! documents in the shape `evtx` exports (`{"Event": {"System": ..., "EventData": ...}}`, one after
//! another, pretty-printed or in an array), and Windows EVTX files, read chunk by chunk.
//!
//! **Streaming.** Every format is read in one pass, in time linear in its size and in memory
//! bounded by the largest single document ([`MAX_DOCUMENT`]) or one EVTX chunk, never by the
//! size of the input. The format is chosen by content, not by name: EVTX by its `ElfFile` magic,
//! JSON by its first character, after an optional byte-order mark (UTF-8, or UTF-16 LE/BE, which
//! is converted to UTF-8 as it is read).
//!
//! **Positions.** One convention everywhere, detections and skips alike: the 1-based line an
//! event starts on in a text input, the EventRecordID in an EVTX file. [`Record::record_id`]
//! carries an exported document's EventRecordID too.
//!
//! **Text inputs.** A document that is not valid UTF-8 or not JSON is reported with its line and
//! skipped, never fatal. In a JSON-lines file (its first document on one line) a document ends at
//! the end of its line; in pretty-printed input a `{` at the start of a line while a document is
//! still open means the open one was cut short. A document over [`MAX_DOCUMENT`] is skipped.
//!
//! **EVTX.** Positions are the EventRecordID inside each record's System element. A record whose
//! content cannot be parsed has none to read: it is reported with its record header's number
//! (the only place the two can differ; SigmaHQ's recordings number their headers from 1). A file
//! that is cut short (fewer bytes than its header's chunk count needs, or a partial last chunk)
//! or whose chunks do not hold every record their headers claim is reported as damaged with the
//! number of records lost.
//!
//! **Field values** follow the schema: a key missing from the event is an absent field, `""` an
//! empty one, JSON `null` absent; numbers become text in text fields and integers in integer
//! fields. The event type comes from the provider and `EventID`: Sysmon's 1 (process creation),
//! 7 (image load) and 12/13/14 (registry), and Security's 4688, a process creation too (mapped as
//! Sigma's Windows pipelines map it: see [`from_json`]). Events of other providers and types are
//! counted and skipped, never fatal. Flat events name their provider in `SourceName`,
//! `Provider_Name` or `Channel`; without one, the EventID alone decides.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bulwark_interpreter::{Event, EventType, FieldType, FieldValue};
use serde_json::{Map, Value};

/// The largest JSON document read; a larger one is skipped (a Windows event is at most 64 KiB of
/// XML, so this only guards memory against a file that is not what it claims to be).
pub const MAX_DOCUMENT: usize = 16 << 20;

/// A field value owned by a [`Record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    /// The event does not carry the field.
    Absent,
    /// Text.
    Str(String),
    /// An integer.
    Int(u64),
}

impl Owned {
    /// The value as the interpreter takes it.
    pub fn as_value(&self) -> FieldValue<'_> {
        match self {
            Owned::Absent => FieldValue::Absent,
            Owned::Str(s) => FieldValue::Str(s),
            Owned::Int(i) => FieldValue::Int(*i),
        }
    }

    /// The value as text (`None` when absent).
    pub fn text(&self) -> Option<String> {
        match self {
            Owned::Absent => None,
            Owned::Str(s) => Some(s.clone()),
            Owned::Int(i) => Some(i.to_string()),
        }
    }
}

/// One recorded event, converted to the schema, with the context a detection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its event type.
    pub event_type: EventType,
    /// Where it is in its input: the 1-based line it starts on in a text input, the
    /// EventRecordID in an EVTX file.
    pub position: u64,
    /// One value per schema field.
    pub values: Vec<Owned>,
    /// The EventRecordID, where the event carries one.
    pub record_id: Option<u64>,
    /// The event's time as recorded (`UtcTime`, else the system time), in the form
    /// `YYYY-MM-DDTHH:MM:SS[.fff...][Z]`.
    pub time: Option<String>,
    /// The computer it was recorded on.
    pub computer: Option<String>,
    /// Its provider and EventID, as `Sysmon 1` or `Security 4688`.
    pub source: String,
}

impl Record {
    /// Lends the schema event to `f`, using `buf` for the field values (no allocation once `buf`
    /// has grown to the largest event type).
    pub fn with_event<'r, R>(
        &'r self,
        buf: &mut Vec<FieldValue<'r>>,
        f: impl FnOnce(&Event<'r, '_>) -> R,
    ) -> Option<R> {
        buf.clear();
        buf.extend(self.values.iter().map(Owned::as_value));
        let ev = Event::new(self.event_type, buf).ok()?;
        Some(f(&ev))
    }

    /// The value of the schema field `name` (absent if the type has no such field).
    pub fn get(&self, name: &str) -> &Owned {
        self.event_type
            .field_by_name(name)
            .and_then(|d| self.values.get(usize::from(d.index)))
            .unwrap_or(&Owned::Absent)
    }
}

/// Why an event was not scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipEvent {
    /// Not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// Not valid UTF-8.
    #[error("not valid UTF-8: {0}")]
    NotUtf8(String),
    /// A document over [`MAX_DOCUMENT`].
    #[error("document larger than {} bytes", MAX_DOCUMENT)]
    TooLarge,
    /// No `EventID`.
    #[error("no EventID")]
    NoEventId,
    /// An event the sensor does not produce.
    #[error("EventID {0} is not an event type of the sensor")]
    OtherEvent(u64),
    /// Not a Sysmon (or Security 4688) event.
    #[error("provider {0} is neither Sysmon nor Security")]
    OtherProvider(String),
    /// A field of the wrong type.
    #[error("field {field}: {why}")]
    BadField {
        /// The field.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// An EVTX record that could not be parsed.
    #[error("EVTX record: {0}")]
    Evtx(String),
    /// A damaged or truncated EVTX file: records its chunks claim that could not be read.
    #[error("damaged EVTX file: {lost} records lost ({why})")]
    Damaged {
        /// How many records were lost.
        lost: u64,
        /// What is damaged.
        why: String,
    },
}

impl SkipEvent {
    /// A short stable name for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            SkipEvent::NotJson(_) => "not JSON",
            SkipEvent::NotUtf8(_) => "not UTF-8",
            SkipEvent::TooLarge => "too large",
            SkipEvent::NoEventId => "no EventID",
            SkipEvent::OtherEvent(_) => "other event type",
            SkipEvent::OtherProvider(_) => "other provider",
            SkipEvent::BadField { .. } => "bad field",
            SkipEvent::Evtx(_) => "bad EVTX record",
            SkipEvent::Damaged { .. } => "lost in damaged EVTX",
        }
    }

    /// How many events this skip stands for (a damaged file's lost records, else one).
    pub fn count(&self) -> u64 {
        match self {
            SkipEvent::Damaged { lost, .. } => *lost,
            _ => 1,
        }
    }
}

/// What a reader hands on: a record, or an event that was skipped with its position and why.
pub type Item = Result<Record, (u64, SkipEvent)>;

fn event_id(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        // evtx renders EventID with qualifiers as {"#attributes": {...}, "#text": 4688}
        Value::Object(o) => o.get("#text").and_then(event_id),
        _ => None,
    }
}

/// An integer as events write it: decimal, or `0x` hexadecimal (Security's process ids).
fn parse_int(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Converts one JSON value to a schema value of type `ty`.
fn owned(name: &str, ty: FieldType, v: Option<&Value>) -> Result<Owned, SkipEvent> {
    let Some(v) = v else {
        return Ok(Owned::Absent);
    };
    Ok(match (ty, v) {
        (_, Value::Null) => Owned::Absent,
        (FieldType::Str, Value::String(s)) => Owned::Str(s.clone()),
        (FieldType::Str, Value::Number(n)) => Owned::Str(n.to_string()),
        (FieldType::Str, Value::Bool(b)) => Owned::Str(b.to_string()),
        (FieldType::Str, other) => Owned::Str(other.to_string()),
        (FieldType::Int, Value::Number(n)) => match n.as_u64() {
            Some(i) => Owned::Int(i),
            None => {
                return Err(SkipEvent::BadField {
                    field: name.into(),
                    why: format!("{n} is not a non-negative integer"),
                })
            }
        },
        (FieldType::Int, Value::String(s)) => match parse_int(s) {
            Some(i) => Owned::Int(i),
            None if s.is_empty() || s == "-" => Owned::Absent,
            None => {
                return Err(SkipEvent::BadField {
                    field: name.into(),
                    why: format!("{s:?} is not an integer"),
                })
            }
        },
        (FieldType::Int, other) => {
            return Err(SkipEvent::BadField {
                field: name.into(),
                why: format!("{other} is not an integer"),
            })
        }
    })
}

/// Which log an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider<'a> {
    Sysmon,
    Security,
    Other(&'a str),
    /// The event does not say.
    Unknown,
}

fn provider_of<'a>(name: Option<&'a str>, channel: Option<&'a str>) -> Provider<'a> {
    let name = name.filter(|n| !n.is_empty());
    match (name, channel.filter(|c| !c.is_empty())) {
        (Some(n), _) if n.contains("Sysmon") => Provider::Sysmon,
        (Some("Microsoft-Windows-Security-Auditing"), _) => Provider::Security,
        (Some(n), _) => Provider::Other(n),
        (None, Some(c)) if c.starts_with("Microsoft-Windows-Sysmon") => Provider::Sysmon,
        (None, Some("Security")) => Provider::Security,
        (None, Some(c)) => Provider::Other(c),
        (None, None) => Provider::Unknown,
    }
}

/// The parts of an event, whichever shape it came in.
struct Parts<'a> {
    provider: Provider<'a>,
    eid: u64,
    data: &'a Map<String, Value>,
    record_id: Option<u64>,
    time: Option<String>,
    computer: Option<String>,
}

/// Event times in one form: `2020-10-19 04:29:00.004` and `2020-10-19T04:29:00.004Z` both become
/// `2020-10-19T04:29:00.004...`, so that times compare as text.
pub fn normalize_time(s: &str) -> String {
    let s = s.trim();
    let mut out = s.to_owned();
    if s.len() > 10 && s.as_bytes().get(10) == Some(&b' ') && s.get(4..5) == Some("-") {
        out.replace_range(10..11, "T");
    }
    out
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn u64_of(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => parse_int(s),
        _ => None,
    }
}

fn parts(v: &Value) -> Result<Parts<'_>, SkipEvent> {
    let Some(obj) = v.as_object() else {
        return Err(SkipEvent::NotJson("not an object".into()));
    };
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let empty = EMPTY.get_or_init(Map::new);
    if let Some(event) = obj.get("Event").and_then(Value::as_object) {
        let system = event.get("System").and_then(Value::as_object);
        let sys = |k: &str| system.and_then(|s| s.get(k));
        let name = sys("Provider")
            .and_then(|p| p.get("#attributes").unwrap_or(p).get("Name"))
            .and_then(Value::as_str);
        let channel = sys("Channel").and_then(Value::as_str);
        let eid = sys("EventID")
            .and_then(event_id)
            .ok_or(SkipEvent::NoEventId)?;
        let data = event
            .get("EventData")
            .and_then(Value::as_object)
            .unwrap_or(empty);
        let system_time = sys("TimeCreated")
            .and_then(|t| t.get("#attributes").unwrap_or(t).get("SystemTime"))
            .and_then(Value::as_str);
        let time = text_of(data.get("UtcTime")).or(system_time.map(str::to_owned));
        return Ok(Parts {
            provider: provider_of(name, channel),
            eid,
            data,
            record_id: u64_of(sys("EventRecordID")),
            time: time.as_deref().map(normalize_time),
            computer: text_of(sys("Computer")),
        });
    }
    let name = ["SourceName", "Provider_Name", "ProviderName", "Provider"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str));
    let channel = obj.get("Channel").and_then(Value::as_str);
    let eid = obj
        .get("EventID")
        .and_then(event_id)
        .ok_or(SkipEvent::NoEventId)?;
    let time = [
        "UtcTime",
        "SystemTime",
        "@timestamp",
        "TimeCreated",
        "EventTime",
    ]
    .iter()
    .find_map(|k| text_of(obj.get(*k)));
    let computer = ["Computer", "Hostname", "ComputerName"]
        .iter()
        .find_map(|k| text_of(obj.get(*k)));
    Ok(Parts {
        provider: provider_of(name, channel),
        eid,
        data: obj,
        record_id: u64_of(obj.get("EventRecordID")).or(u64_of(obj.get("RecordNumber"))),
        time: time.as_deref().map(normalize_time),
        computer,
    })
}

/// A Sysmon event's fields: the schema's names are Sysmon's.
fn sysmon_values(
    event_type: EventType,
    data: &Map<String, Value>,
) -> Result<Vec<Owned>, SkipEvent> {
    event_type
        .fields()
        .iter()
        .map(|def| owned(def.name, def.ty, data.get(def.name)))
        .collect()
}

/// A Security 4688 ("A new process has been created") as a process creation, the way Sigma's
/// Windows pipelines map the two (pySigma's and sigmac's `windows-audit` field mappings), with
/// values rendered the way Sysmon renders them so that one rule reads both:
///
/// | schema (Sysmon) | Security 4688 |
/// | --- | --- |
/// | `Image` | `NewProcessName` |
/// | `CommandLine` | `CommandLine` (present only with command-line auditing on) |
/// | `ParentImage` | `ParentProcessName` (Windows 10 and later) |
/// | `ProcessId` | `NewProcessId` (hexadecimal) |
/// | `ParentProcessId` | `ProcessId` (hexadecimal) |
/// | `User` | `TargetDomainName\TargetUserName` when set (the new process runs as another account, often beside the NULL SID), else `SubjectDomainName\SubjectUserName`; the well-known service SIDs as Sysmon names them (`NT AUTHORITY\SYSTEM`...) |
/// | `LogonId` | `TargetLogonId` when set, else `SubjectLogonId` |
/// | `IntegrityLevel` | `MandatoryLabel`, the SID named as Sysmon does (`S-1-16-12288` is `High`) |
///
/// Everything else Sysmon reports (hashes, version information, `CurrentDirectory`,
/// `ParentCommandLine`, GUIDs...) 4688 does not carry: absent. `TokenElevationType` has no schema
/// field and is not used.
fn security_4688(data: &Map<String, Value>) -> Result<Vec<Owned>, SkipEvent> {
    let t = EventType::ProcessCreation;
    let mut values = vec![Owned::Absent; t.fields().len()];
    // A value that says something: present, not empty, not the "-" Windows writes for none.
    let text = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty() && *v != "-")
    };
    let mut set = |name: &str, v: Owned| {
        if let Some(slot) = t
            .field_by_name(name)
            .and_then(|d| values.get_mut(usize::from(d.index)))
        {
            *slot = v;
        }
    };
    for (schema, security) in [
        ("Image", "NewProcessName"),
        ("CommandLine", "CommandLine"),
        ("ParentImage", "ParentProcessName"),
    ] {
        // CommandLine may be empty (a process started without arguments is still logged).
        if let Some(v) = data.get(security) {
            set(schema, owned(schema, FieldType::Str, Some(v))?);
        }
    }
    set(
        "ProcessId",
        owned("NewProcessId", FieldType::Int, data.get("NewProcessId"))?,
    );
    set(
        "ParentProcessId",
        owned("ProcessId", FieldType::Int, data.get("ProcessId"))?,
    );
    let account = |prefix: &str| {
        let sid = text(&format!("{prefix}UserSid"));
        let named = match sid {
            Some("S-1-5-18") => Some("NT AUTHORITY\\SYSTEM".to_owned()),
            Some("S-1-5-19") => Some("NT AUTHORITY\\LOCAL SERVICE".to_owned()),
            Some("S-1-5-20") => Some("NT AUTHORITY\\NETWORK SERVICE".to_owned()),
            _ => None,
        };
        named.or_else(|| {
            let user = text(&format!("{prefix}UserName"))?;
            Some(match text(&format!("{prefix}DomainName")) {
                Some(domain) => format!("{domain}\\{user}"),
                None => user.to_owned(),
            })
        })
    };
    // Windows 10 names the new process's account in Target*, often with the NULL SID beside it.
    let target_set = text("TargetUserName").is_some();
    let user = if target_set { account("Target") } else { None }.or_else(|| account("Subject"));
    if let Some(user) = user {
        set("User", Owned::Str(user));
    }
    let logon = text("TargetLogonId")
        .filter(|l| *l != "0x0")
        .or_else(|| text("SubjectLogonId"));
    if let Some(l) = logon {
        set("LogonId", Owned::Str(l.to_owned()));
    }
    if let Some(label) = text("MandatoryLabel") {
        let level = match label {
            "S-1-16-0" => "Untrusted",
            "S-1-16-4096" => "Low",
            "S-1-16-8192" => "Medium",
            "S-1-16-8448" => "Medium Plus",
            "S-1-16-12288" => "High",
            "S-1-16-16384" => "System",
            "S-1-16-20480" => "Protected Process",
            other => other,
        };
        set("IntegrityLevel", Owned::Str(level.to_owned()));
    }
    Ok(values)
}

/// Converts one JSON value: a flat event, or an exported `{"Event": ...}` document, recorded at
/// `position` (the caller's convention: a line, or an EVTX record's id). A Security 4688 becomes
/// a process creation (see `security_4688` for the field mapping).
pub fn from_json(v: &Value, position: u64) -> Result<Record, SkipEvent> {
    let p = parts(v)?;
    let sysmon_type = u16::try_from(p.eid)
        .ok()
        .and_then(EventType::from_sysmon_event_id);
    let (event_type, values, source) = match (p.provider, sysmon_type) {
        (Provider::Sysmon | Provider::Unknown, Some(t)) => {
            (t, sysmon_values(t, p.data)?, format!("Sysmon {}", p.eid))
        }
        (Provider::Security | Provider::Unknown, _) if p.eid == 4688 => (
            EventType::ProcessCreation,
            security_4688(p.data)?,
            "Security 4688".to_owned(),
        ),
        (Provider::Other(name), _) => return Err(SkipEvent::OtherProvider(name.into())),
        _ => return Err(SkipEvent::OtherEvent(p.eid)),
    };
    Ok(Record {
        event_type,
        position,
        values,
        record_id: p.record_id,
        time: p.time,
        computer: p.computer,
        source,
    })
}

/// The flat form of an event (`EventID` plus its fields) from either shape: a flat event as it
/// is, an exported `{"Event": ...}` document as its `EventData` plus `EventID`. Other evaluators
/// take this form (the differential tests and the benchmark feed it to them).
pub fn flatten(v: &Value) -> Option<Map<String, Value>> {
    let obj = v.as_object()?;
    let Some(event) = obj.get("Event").and_then(Value::as_object) else {
        return Some(obj.clone());
    };
    let mut flat = event
        .get("EventData")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let eid = event
        .get("System")
        .and_then(|s| s.get("EventID"))
        .and_then(event_id)?;
    flat.insert("EventID".into(), Value::from(eid));
    Some(flat)
}

/// Every JSON document in `text` (JSON lines, concatenated or pretty-printed documents, or an
/// array of them), skipping what does not parse.
pub fn json_documents(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match v {
            Ok(Value::Array(items)) => out.extend(items),
            Ok(v) => out.push(v),
            Err(_) => break,
        }
    }
    out
}

/// The format of an input, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A Windows event log file (`ElfFile\0`).
    Evtx,
    /// JSON text (lines, documents or arrays) in UTF-8, after a byte-order mark of `bom` bytes.
    Json {
        /// Bytes of byte-order mark to skip.
        bom: usize,
    },
    /// JSON text in UTF-16, converted as it is read.
    JsonUtf16 {
        /// Big-endian (else little-endian).
        big_endian: bool,
        /// Bytes of byte-order mark to skip.
        bom: usize,
    },
}

/// The format of an input whose first bytes (up to 4 KiB is plenty) are `head`; `None` when it
/// is neither EVTX nor JSON. Empty or blank input is JSON holding no events.
pub fn detect(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"ElfFile\0") {
        return Some(Format::Evtx);
    }
    let (format, rest) = if let Some(r) = head.strip_prefix(b"\xEF\xBB\xBF") {
        (Format::Json { bom: 3 }, r)
    } else if let Some(r) = head.strip_prefix(b"\xFF\xFE") {
        let f = Format::JsonUtf16 {
            big_endian: false,
            bom: 2,
        };
        return utf16_starts_json(r, false).then_some(f);
    } else if let Some(r) = head.strip_prefix(b"\xFE\xFF") {
        let f = Format::JsonUtf16 {
            big_endian: true,
            bom: 2,
        };
        return utf16_starts_json(r, true).then_some(f);
    } else if head.len() >= 2 && head[0] != 0 && head[1] == 0 {
        let f = Format::JsonUtf16 {
            big_endian: false,
            bom: 0,
        };
        return utf16_starts_json(head, false).then_some(f);
    } else if head.len() >= 2 && head[0] == 0 && head[1] != 0 {
        let f = Format::JsonUtf16 {
            big_endian: true,
            bom: 0,
        };
        return utf16_starts_json(head, true).then_some(f);
    } else {
        (Format::Json { bom: 0 }, head)
    };
    match rest.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'{' | b'[') => Some(format),
        Some(_) => None,
    }
}

fn utf16_starts_json(bytes: &[u8], big_endian: bool) -> bool {
    let units = bytes.chunks_exact(2).map(|c| {
        if big_endian {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_le_bytes([c[0], c[1]])
        }
    });
    for u in units {
        match u {
            0x20 | 0x09 | 0x0A | 0x0D => continue,
            0x7B | 0x5B => return true,
            _ => return false,
        }
    }
    true
}

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// An I/O error (the events read before it were handed on).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Neither EVTX nor JSON.
    #[error("not an event file (neither EVTX nor JSON)")]
    NotEvents,
    /// The EVTX file header is unreadable.
    #[error("not a readable EVTX file: {0}")]
    BadEvtx(String),
}

/// One input: a file, or standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A file.
    File(PathBuf),
    /// Standard input (`-`).
    Stdin,
}

impl Input {
    /// Its name in reports: the path, or `-`.
    pub fn name(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Stdin => "-".into(),
        }
    }
}

/// One input found by [`expand`] (and whether a folder walk found it), or a path that cannot be
/// read.
pub type Expanded = Result<(Input, bool), (PathBuf, std::io::Error)>;

/// The inputs `paths` name: `-` is standard input, a directory every file below it (recursively,
/// in sorted order; `walked` is true for those). A path that does not exist is an error of its
/// own, and the others are still returned.
pub fn expand(paths: &[PathBuf]) -> Vec<Expanded> {
    fn walk(dir: &Path, out: &mut Vec<Expanded>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                out.push(Err((dir.to_path_buf(), e)));
                return;
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => walk(&p, out),
                Ok(m) if m.is_file() => out.push(Ok((Input::File(p), true))),
                Ok(_) => {}
                Err(e) => out.push(Err((p, e))),
            }
        }
    }
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(Ok((Input::Stdin, false)));
            continue;
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut out),
            Ok(_) => out.push(Ok((Input::File(p.clone()), false))),
            Err(e) => out.push(Err((p.clone(), e))),
        }
    }
    out
}

/// Reads every event of `input`, handing each record (or the reason it was skipped, with its
/// position) to `f`; the format is detected from the content.
pub fn read_input(input: &Input, f: &mut dyn FnMut(Item)) -> Result<(), ReadError> {
    read_input_counted(input, &std::cell::Cell::new(0), f)
}

/// [`read_input`], adding the bytes read to `bytes` as it goes (for progress reports; an EVTX
/// file's bytes are added when it is done).
pub fn read_input_counted(
    input: &Input,
    bytes: &std::cell::Cell<u64>,
    f: &mut dyn FnMut(Item),
) -> Result<(), ReadError> {
    match input {
        Input::File(p) => read_path_counted(p, bytes, f),
        Input::Stdin => read_stdin_counted(bytes, f),
    }
}

/// Reads every event of the file at `path` (see [`read_input`]).
pub fn read_path(path: &Path, f: &mut dyn FnMut(Item)) -> Result<(), ReadError> {
    read_path_counted(path, &std::cell::Cell::new(0), f)
}

fn read_path_counted(
    path: &Path,
    bytes: &std::cell::Cell<u64>,
    f: &mut dyn FnMut(Item),
) -> Result<(), ReadError> {
    let mut file = File::open(path)?;
    let mut head = [0u8; 4096];
    let n = read_full(&mut file, &mut head)?;
    let format = detect(head.get(..n).unwrap_or(&[])).ok_or(ReadError::NotEvents)?;
    if format == Format::Evtx {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        drop(file);
        let result = read_evtx(path, f);
        bytes.set(bytes.get() + len);
        return result;
    }
    bytes.set(bytes.get() + n as u64);
    read_text_stream(format, head.get(..n).unwrap_or(&[]), file, bytes, f)
}

/// Reads events from standard input. EVTX needs to seek, so an EVTX stream is first copied to a
/// temporary file (removed afterwards); text is read as it comes.
pub fn read_stdin(f: &mut dyn FnMut(Item)) -> Result<(), ReadError> {
    read_stdin_counted(&std::cell::Cell::new(0), f)
}

fn read_stdin_counted(
    bytes: &std::cell::Cell<u64>,
    f: &mut dyn FnMut(Item),
) -> Result<(), ReadError> {
    let mut stdin = std::io::stdin().lock();
    let mut head = [0u8; 4096];
    let n = read_full(&mut stdin, &mut head)?;
    let head = head.get(..n).unwrap_or(&[]);
    let format = detect(head).ok_or(ReadError::NotEvents)?;
    if format == Format::Evtx {
        let tmp = std::env::temp_dir().join(format!("bulwark-stdin-{}.evtx", std::process::id()));
        let copied = (|| {
            let mut out = File::create(&tmp)?;
            std::io::Write::write_all(&mut out, head)?;
            std::io::copy(&mut stdin, &mut out)?;
            Ok::<_, std::io::Error>(())
        })();
        let result = copied
            .map_err(ReadError::from)
            .and_then(|()| read_evtx(&tmp, f));
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    bytes.set(bytes.get() + head.len() as u64);
    read_text_stream(format, head, stdin, bytes, f)
}

/// Fills `buf` as far as the reader allows; the number of bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or(&mut [])) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Streams JSON text: `head` (already read) then the rest of `r`.
fn read_text_stream(
    format: Format,
    head: &[u8],
    mut r: impl Read,
    bytes: &std::cell::Cell<u64>,
    f: &mut dyn FnMut(Item),
) -> Result<(), ReadError> {
    let mut scan = JsonScan::new(f);
    let mut utf16 = match format {
        Format::JsonUtf16 { big_endian, .. } => Some(Utf16Decoder::new(big_endian)),
        _ => None,
    };
    let bom = match format {
        Format::Json { bom } | Format::JsonUtf16 { bom, .. } => bom,
        Format::Evtx => 0,
    };
    let mut converted = Vec::new();
    let mut feed = |scan: &mut JsonScan<'_>, bytes: &[u8]| match utf16.as_mut() {
        Some(d) => {
            converted.clear();
            d.decode(bytes, &mut converted);
            scan.feed(&converted);
        }
        None => scan.feed(bytes),
    };
    feed(&mut scan, head.get(bom..).unwrap_or(&[]));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                scan.finish();
                return Err(e.into());
            }
        };
        bytes.set(bytes.get() + n as u64);
        feed(&mut scan, buf.get(..n).unwrap_or(&[]));
    }
    scan.finish();
    Ok(())
}

/// Reads events from text held in memory (see the module doc for the forms it takes).
pub fn read_text(text: &str, f: &mut dyn FnMut(Item)) {
    let mut scan = JsonScan::new(f);
    let bytes = text.as_bytes();
    scan.feed(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes));
    scan.finish();
}

/// UTF-16 to UTF-8, a buffer at a time (a code unit or surrogate pair split between buffers is
/// carried over; unpaired surrogates become U+FFFD).
struct Utf16Decoder {
    big_endian: bool,
    odd: Option<u8>,
    high: Option<u16>,
}

impl Utf16Decoder {
    fn new(big_endian: bool) -> Self {
        Utf16Decoder {
            big_endian,
            odd: None,
            high: None,
        }
    }

    fn decode(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut push = |c: char| {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        };
        for &b in bytes {
            let Some(first) = self.odd.take() else {
                self.odd = Some(b);
                continue;
            };
            let unit = if self.big_endian {
                u16::from_be_bytes([first, b])
            } else {
                u16::from_le_bytes([first, b])
            };
            match (self.high.take(), unit) {
                (None, 0xD800..=0xDBFF) => self.high = Some(unit),
                (Some(h), 0xDC00..=0xDFFF) => {
                    let c = 0x10000 + ((u32::from(h) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
                    push(char::from_u32(c).unwrap_or('\u{FFFD}'));
                }
                (Some(_), 0xD800..=0xDBFF) => {
                    push('\u{FFFD}');
                    self.high = Some(unit);
                }
                (h, u) => {
                    if h.is_some() {
                        push('\u{FFFD}');
                    }
                    push(char::from_u32(u32::from(u)).unwrap_or('\u{FFFD}'));
                }
            }
        }
    }
}

/// The streaming JSON splitter: finds each document's bytes by tracking nesting and strings
/// (linear, one pass), then parses that document alone.
struct JsonScan<'f> {
    f: &'f mut dyn FnMut(Item),
    /// The line of the next byte (1-based).
    line: u64,
    /// The next byte is the first of its line.
    line_start: bool,
    doc: Vec<u8>,
    doc_line: u64,
    depth: u32,
    in_str: bool,
    esc: bool,
    broken: Option<String>,
    too_large: bool,
    /// Inside a top-level array.
    array: bool,
    /// JSON lines (documents end with their line): decided by the first complete document.
    jsonl: Option<bool>,
    /// The line of a run of text that is not JSON, skipped to the end of its line.
    garbage: Option<u64>,
}

impl<'f> JsonScan<'f> {
    fn new(f: &'f mut dyn FnMut(Item)) -> Self {
        JsonScan {
            f,
            line: 1,
            line_start: true,
            doc: Vec::new(),
            doc_line: 0,
            depth: 0,
            in_str: false,
            esc: false,
            broken: None,
            too_large: false,
            array: false,
            jsonl: None,
            garbage: None,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            // Fast path: inside a string, copy up to the next quote, backslash or newline.
            if self.in_str && !self.esc && self.garbage.is_none() {
                let rest = bytes.get(i..).unwrap_or(&[]);
                let run = rest
                    .iter()
                    .position(|&c| c == b'"' || c == b'\\' || c == b'\n')
                    .unwrap_or(rest.len());
                if run > 0 {
                    self.push(rest.get(..run).unwrap_or(&[]));
                    self.line_start = false;
                    i += run;
                    continue;
                }
            }
            self.byte(b);
            i += 1;
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.doc.len() + bytes.len() > MAX_DOCUMENT {
            self.too_large = true;
        } else {
            self.doc.extend_from_slice(bytes);
        }
    }

    fn byte(&mut self, b: u8) {
        let at_start = self.line_start;
        self.line_start = b == b'\n';
        if let Some(line) = self.garbage {
            if b == b'\n' {
                self.garbage = None;
                self.line += 1;
                (self.f)(Err((
                    line,
                    SkipEvent::NotJson("not a JSON document".into()),
                )));
            }
            return;
        }
        if self.depth == 0 {
            match b {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                b'[' if !self.array => self.array = true,
                b',' if self.array => {}
                b']' if self.array => self.array = false,
                b'{' | b'[' => self.start(b),
                _ => self.garbage = Some(self.line),
            }
            return;
        }
        if b == b'\n' {
            if self.in_str {
                self.in_str = false;
                self.esc = false;
                self.broken
                    .get_or_insert_with(|| "a line ends inside a string".into());
            }
            if self.jsonl == Some(true) {
                self.broken
                    .get_or_insert_with(|| "the line ends inside the document".into());
                self.depth = 0;
                self.complete();
                self.line += 1;
                return;
            }
            self.line += 1;
            self.push(b"\n");
            return;
        }
        if at_start && b == b'{' && !self.in_str && !self.array {
            // A document starting at the start of a line while another is open: the open one
            // was cut short.
            self.broken.get_or_insert_with(|| {
                "incomplete document (another starts at the start of a line)".into()
            });
            self.depth = 0;
            self.complete();
            self.start(b);
            return;
        }
        self.push(&[b]);
        if self.in_str {
            if self.esc {
                self.esc = false;
            } else if b == b'\\' {
                self.esc = true;
            } else if b == b'"' {
                self.in_str = false;
            }
            return;
        }
        match b {
            b'"' => self.in_str = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    self.complete();
                }
            }
            _ => {}
        }
    }

    fn start(&mut self, b: u8) {
        self.doc.clear();
        self.doc.push(b);
        self.doc_line = self.line;
        self.depth = 1;
        self.in_str = false;
        self.esc = false;
        self.broken = None;
        self.too_large = false;
    }

    /// The document ended (or was found broken): parse it and hand it on.
    fn complete(&mut self) {
        let line = self.doc_line;
        if self.jsonl.is_none() && self.broken.is_none() {
            self.jsonl = Some(!self.array && line == self.line);
        }
        let item = if self.too_large {
            Err((line, SkipEvent::TooLarge))
        } else if let Some(why) = self.broken.take() {
            Err((line, SkipEvent::NotJson(why)))
        } else {
            match std::str::from_utf8(&self.doc) {
                Err(e) => {
                    let before = self.doc.get(..e.valid_up_to()).unwrap_or(&[]);
                    let at = line + before.iter().filter(|&&c| c == b'\n').count() as u64;
                    Err((
                        at,
                        SkipEvent::NotUtf8(format!(
                            "invalid byte at column {}",
                            before.len()
                                - before
                                    .iter()
                                    .rposition(|&c| c == b'\n')
                                    .map_or(0, |p| p + 1)
                                + 1
                        )),
                    ))
                }
                Ok(text) => match serde_json::from_str::<Value>(text) {
                    Ok(v) => from_json(&v, line).map_err(|e| (line, e)),
                    Err(e) => Err((
                        line + (e.line() as u64).saturating_sub(1),
                        SkipEvent::NotJson(e.to_string()),
                    )),
                },
            }
        };
        self.doc.clear();
        self.too_large = false;
        (self.f)(item);
    }

    fn finish(&mut self) {
        if let Some(line) = self.garbage.take() {
            (self.f)(Err((
                line,
                SkipEvent::NotJson("not a JSON document".into()),
            )));
        }
        if self.depth > 0 {
            self.broken
                .get_or_insert_with(|| "incomplete document at the end of the input".into());
            self.depth = 0;
            self.complete();
        }
    }
}

const EVTX_HEADER: u64 = 4096;
const EVTX_CHUNK: u64 = 65536;

/// Reads an EVTX file chunk by chunk, then reports the records its chunks claim that were not
/// read (a truncated file, damaged chunks or records) as one [`SkipEvent::Damaged`].
fn read_evtx(path: &Path, f: &mut dyn FnMut(Item)) -> Result<(), ReadError> {
    let file_len = std::fs::metadata(path)?.len();
    let mut parser = evtx::EvtxParser::from_path(path)
        .map_err(|e| ReadError::BadEvtx(error_chain(&e)))?
        .with_configuration(evtx::ParserSettings::new().num_threads(1));
    let (chunk_count, next_record_id) =
        (parser.header().chunk_count, parser.header().next_record_id);
    let (mut read, mut last_id) = (0u64, 0u64);
    let mut failed = 0u64;
    for r in parser.records_json_value() {
        match r {
            Ok(rec) => {
                read += 1;
                // The record's own EventRecordID (the parser's is its header's number).
                let id = rec
                    .data
                    .pointer("/Event/System/EventRecordID")
                    .and_then(|v| u64_of(Some(v)))
                    .unwrap_or(rec.event_record_id);
                last_id = id;
                f(from_json(&rec.data, id).map_err(|e| (id, e)))
            }
            Err(e) => {
                failed += 1;
                let at = match &e {
                    evtx::err::EvtxError::FailedToParseRecord { record_id, .. } => *record_id,
                    _ => last_id,
                };
                f(Err((at, SkipEvent::Evtx(error_chain(&e)))))
            }
        }
    }
    // What the chunk headers claim, read directly: the parser skips a partial last chunk.
    let mut file = File::open(path)?;
    let chunks_in_file = file_len.saturating_sub(EVTX_HEADER).div_ceil(EVTX_CHUNK);
    let mut claimed = 0u64;
    let mut max_id = 0u64;
    let mut chunk = [0u8; 40];
    for i in 0..chunks_in_file {
        let offset = EVTX_HEADER + i * EVTX_CHUNK;
        if file.seek(SeekFrom::Start(offset)).is_err() || read_full(&mut file, &mut chunk)? < 40 {
            continue;
        }
        if !chunk.starts_with(b"ElfChnk\0") {
            continue;
        }
        let word = |at: usize| {
            chunk
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        let (first, last) = (word(24), word(32));
        if first == 0 || last < first || last - first > EVTX_CHUNK {
            continue; // a header that says nothing usable
        }
        claimed += last - first + 1;
        max_id = max_id.max(last);
    }
    // Chunks the file header counts that are not in the file at all: their records run up to
    // the header's next record id.
    let missing_tail = next_record_id.saturating_sub(1).saturating_sub(max_id);
    let complete = file_len.saturating_sub(EVTX_HEADER) / EVTX_CHUNK;
    let short =
        complete < u64::from(chunk_count) || file_len.saturating_sub(EVTX_HEADER) % EVTX_CHUNK != 0;
    let lost = (claimed + if short { missing_tail } else { 0 }).saturating_sub(read);
    if lost > 0 || short {
        let mut why = Vec::new();
        if short {
            why.push(format!(
                "truncated: {file_len} bytes, {complete} complete chunks of the {} its header counts",
                chunk_count
            ));
        }
        if failed > 0 {
            why.push(format!("{failed} records unreadable"));
        }
        why.push(format!("{read} records read"));
        f(Err((
            last_id,
            SkipEvent::Damaged {
                lost: lost.max(failed),
                why: why.join(", "),
            },
        )));
    }
    Ok(())
}

/// An error with its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn positions(text: &str) -> Vec<Result<u64, u64>> {
        let mut got = Vec::new();
        read_text(text, &mut |r| {
            got.push(r.map(|r| r.position).map_err(|e| e.0))
        });
        got
    }

    #[test]
    fn flat_and_exported_shapes() {
        let flat = json!({"EventID": 1, "Image": "C:\\x.exe", "CommandLine": "", "ProcessId": "42", "Unknown": 1});
        let r = from_json(&flat, 7).unwrap();
        assert_eq!(r.event_type, EventType::ProcessCreation);
        assert_eq!(r.position, 7);
        assert_eq!(r.values[0], Owned::Str("C:\\x.exe".into()));
        assert_eq!(
            r.values[1],
            Owned::Str(String::new()),
            "empty is not absent"
        );
        assert_eq!(r.values[2], Owned::Absent);
        assert_eq!(*r.get("ProcessId"), Owned::Int(42));

        let doc = json!({"Event": {"System": {"Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon"}}, "EventID": 13, "EventRecordID": 991,
            "Computer": "ws1", "TimeCreated": {"#attributes": {"SystemTime": "2024-01-02T03:04:05.678Z"}}},
            "EventData": {"EventType": "SetValue", "TargetObject": "HKLM\\x", "Details": "DWORD (0x00000001)", "ProcessId": 4}}});
        let r = from_json(&doc, 3).unwrap();
        assert_eq!(r.event_type, EventType::RegistryEvent);
        assert_eq!(r.position, 3);
        assert_eq!(r.record_id, Some(991));
        assert_eq!(r.computer.as_deref(), Some("ws1"));
        assert_eq!(r.time.as_deref(), Some("2024-01-02T03:04:05.678Z"));
        assert_eq!(r.source, "Sysmon 13");
    }

    #[test]
    fn text_forms_and_one_based_lines() {
        assert_eq!(
            positions("{\"EventID\": 1, \"Image\": \"a\"}\n\n{\"EventID\": 7}\n"),
            [Ok(1), Ok(3)]
        );
        assert_eq!(
            positions("{\"EventID\": 1}\nnot json\n{\"EventID\": 1}\n"),
            [Ok(1), Err(2), Ok(3)]
        );
        // a line cut short in JSON lines does not swallow the next
        assert_eq!(
            positions("{\"EventID\": 1}\n{\"EventID\": 1, \"CommandLine\": \n{\"EventID\": 1}\n"),
            [Ok(1), Err(2), Ok(3)]
        );
        // ... nor when it is the first line
        assert_eq!(
            positions("{\"EventID\": 1, \"CommandLine\": \n{\"EventID\": 1}\n{\"EventID\": 1}"),
            [Err(1), Ok(2), Ok(3)]
        );
        // pretty-printed documents, one after another
        let pretty = "{\n \"Event\": {\"System\": {\"EventID\": 1, \"EventRecordID\": 5}}\n}\n{\n \"Event\": {\"System\": {\"EventID\": 1, \"EventRecordID\": 6}}\n}";
        assert_eq!(positions(pretty), [Ok(1), Ok(4)]);
        // an array, one line or many
        assert_eq!(
            positions("[{\"EventID\": 1}, {\"EventID\": 7},\n {\"EventID\": 1}]"),
            [Ok(1), Ok(1), Ok(2)]
        );
        assert_eq!(
            positions("[\n  {\n    \"EventID\": 1\n  },\n  {\n    \"EventID\": 1\n  }\n]\n"),
            [Ok(2), Ok(5)]
        );
        // a truncated file
        assert_eq!(
            positions("{\"EventID\": 1}\n{\"EventID\": 1, "),
            [Ok(1), Err(2)]
        );
        // a BOM costs nothing
        assert_eq!(
            positions("\u{feff}{\"EventID\": 1}\n{\"EventID\": 1}"),
            [Ok(1), Ok(2)]
        );
        // a string with a raw newline is broken; the rest survives
        assert_eq!(
            positions(
                "{\"EventID\": 1}\n{\"EventID\": 1, \"Image\": \"a\nb\"}\n{\"EventID\": 1}\n"
            ),
            [Ok(1), Err(2), Err(3), Ok(4)]
        );
    }

    #[test]
    fn invalid_utf8_costs_one_line() {
        let mut bytes = b"{\"EventID\": 1}\n{\"EventID\": 1, \"Image\": \"".to_vec();
        bytes.extend_from_slice(b"\xff\xfe\"}\n{\"EventID\": 1}\n");
        let mut got = Vec::new();
        let mut scan_items =
            |r: Item| got.push(r.map(|r| r.position).map_err(|e| (e.0, e.1.kind())));
        let mut scan = JsonScan::new(&mut scan_items);
        scan.feed(&bytes);
        scan.finish();
        assert_eq!(got, [Ok(1), Err((2, "not UTF-8")), Ok(3)]);
    }

    #[test]
    fn split_anywhere_gives_the_same_items() {
        let text = "{\"EventID\": 1, \"CommandLine\": \"a \\\"q\\\" b\"}\nnope\n[{\"EventID\": 7}]\n{\"EventID\": 1";
        let want = positions(text);
        for cut in 0..text.len() {
            let mut got = Vec::new();
            let mut sink = |r: Item| got.push(r.map(|r| r.position).map_err(|e| e.0));
            let mut scan = JsonScan::new(&mut sink);
            scan.feed(&text.as_bytes()[..cut]);
            scan.feed(&text.as_bytes()[cut..]);
            scan.finish();
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn formats_by_content() {
        assert_eq!(detect(b"ElfFile\0rest"), Some(Format::Evtx));
        assert_eq!(detect(b"  \n{\"a\": 1}"), Some(Format::Json { bom: 0 }));
        assert_eq!(detect(b"\xEF\xBB\xBF[{}]"), Some(Format::Json { bom: 3 }));
        assert_eq!(detect(b""), Some(Format::Json { bom: 0 }));
        assert_eq!(detect(b"title: a rule\n"), None);
        assert_eq!(
            detect(b"\xFF\xFE{\0\"\0"),
            Some(Format::JsonUtf16 {
                big_endian: false,
                bom: 2
            })
        );
        assert_eq!(
            detect(b"{\0\"\0"),
            Some(Format::JsonUtf16 {
                big_endian: false,
                bom: 0
            })
        );
        let mut d = Utf16Decoder::new(false);
        let mut out = Vec::new();
        let src: Vec<u8> = "a\u{1F600}é"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        for b in &src {
            d.decode(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(String::from_utf8(out).unwrap(), "a\u{1F600}é");
    }

    #[test]
    fn security_4688_is_a_process_creation() {
        let flat = json!({"Channel": "Security", "CommandLine": "esentutl.exe  /y /vss C:\\windows/system32/config/SAM /d C:\\ProgramData\\SAM",
            "EventID": 4688, "Hostname": "WORKSTATION5", "MandatoryLabel": "S-1-16-12288", "NewProcessId": "0x1410",
            "NewProcessName": "C:\\Windows\\System32\\esentutl.exe", "ParentProcessName": "C:\\Windows\\System32\\cmd.exe",
            "ProcessId": "0x16fc", "SourceName": "Microsoft-Windows-Security-Auditing", "SubjectDomainName": "WORKSTATION5",
            "SubjectLogonId": "0xc61d9", "SubjectUserName": "wardog", "SubjectUserSid": "S-1-5-21-3940915590-64593676-1414006259-500",
            "TargetDomainName": "-", "TargetLogonId": "0x0", "TargetUserName": "-", "TargetUserSid": "S-1-0-0",
            "TimeCreated": "2020-10-19 12:28:31.089", "TokenElevationType": "%%1936", "@timestamp": "2020-10-19T04:28:31.089Z"});
        let r = from_json(&flat, 1).unwrap();
        assert_eq!(r.event_type, EventType::ProcessCreation);
        assert_eq!(r.source, "Security 4688");
        let get = |n: &str| r.get(n).clone();
        assert_eq!(
            get("Image"),
            Owned::Str("C:\\Windows\\System32\\esentutl.exe".into())
        );
        assert_eq!(
            get("ParentImage"),
            Owned::Str("C:\\Windows\\System32\\cmd.exe".into())
        );
        assert!(matches!(get("CommandLine"), Owned::Str(c) if c.starts_with("esentutl.exe")));
        assert_eq!(get("ProcessId"), Owned::Int(0x1410));
        assert_eq!(get("ParentProcessId"), Owned::Int(0x16fc));
        assert_eq!(get("User"), Owned::Str("WORKSTATION5\\wardog".into()));
        assert_eq!(get("LogonId"), Owned::Str("0xc61d9".into()));
        assert_eq!(get("IntegrityLevel"), Owned::Str("High".into()));
        assert_eq!(get("Hashes"), Owned::Absent);
        assert_eq!(r.time.as_deref(), Some("2020-10-19T04:28:31.089Z"));
        assert_eq!(r.computer.as_deref(), Some("WORKSTATION5"));
        // SYSTEM as Sysmon names it; the exported shape too
        let doc = json!({"Event": {"System": {"Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing"}},
            "EventID": 4688, "EventRecordID": 77},
            "EventData": {"NewProcessName": "C:\\x.exe", "SubjectUserSid": "S-1-5-18", "SubjectUserName": "WS$", "SubjectDomainName": "CORP"}}});
        let r = from_json(&doc, 1).unwrap();
        assert_eq!(*r.get("User"), Owned::Str("NT AUTHORITY\\SYSTEM".into()));
        assert_eq!(r.record_id, Some(77));
    }

    #[test]
    fn skips_say_why() {
        assert_eq!(
            from_json(&json!({"Image": "x"}), 0),
            Err(SkipEvent::NoEventId)
        );
        assert_eq!(
            from_json(&json!({"EventID": 4624}), 0),
            Err(SkipEvent::OtherEvent(4624))
        );
        // Sysmon has no event 4688; Security has no event 1
        assert_eq!(
            from_json(
                &json!({"EventID": 4688, "SourceName": "Microsoft-Windows-Sysmon"}),
                0
            ),
            Err(SkipEvent::OtherEvent(4688))
        );
        assert_eq!(
            from_json(&json!({"EventID": 1, "Channel": "Security"}), 0),
            Err(SkipEvent::OtherEvent(1))
        );
        assert!(matches!(
            from_json(&json!({"EventID": 1, "ProcessId": "abc"}), 0),
            Err(SkipEvent::BadField { .. })
        ));
        let sec = json!({"Event": {"System": {"Provider": {"#attributes": {"Name": "Microsoft-Windows-PowerShell"}}, "EventID": 1}}});
        assert!(matches!(
            from_json(&sec, 0),
            Err(SkipEvent::OtherProvider(_))
        ));
        // a flat event's provider counts too: EventID 1 of another log is not a process creation
        let other = json!({"SourceName": "Microsoft-Windows-Kernel-General", "EventID": 1});
        assert!(matches!(
            from_json(&other, 0),
            Err(SkipEvent::OtherProvider(_))
        ));
    }
}
