//! Recorded events in, schema events out: JSON lines (one flat Sysmon event per line), JSON
//! documents in the shape `evtx` exports (`{"Event": {"System": ..., "EventData": ...}}`, one or
//! an array), and Windows `.evtx` files.
//!
//! Field values follow the schema: a key missing from the event is an absent field, `""` an empty
//! one, JSON `null` absent; numbers become text in text fields and integers in integer fields.
//! The event type comes from Sysmon's `EventID` (1 process creation, 7 image load, 12/13/14
//! registry). Other events are counted and skipped, never fatal.

use std::path::Path;

use bulwark_interpreter::{Event, EventType, FieldType, FieldValue};
use serde_json::Value;

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
}

/// One recorded event, converted to the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its event type.
    pub event_type: EventType,
    /// Where it is in its input: the 0-based line of a JSON-lines file, the EventRecordID of an
    /// EVTX record or exported document (else its index).
    pub position: u64,
    /// One value per schema field.
    pub values: Vec<Owned>,
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
}

/// Why an event was not scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipEvent {
    /// Not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// No `EventID`.
    #[error("no EventID")]
    NoEventId,
    /// An event the sensor does not produce.
    #[error("EventID {0} is not an event type of the sensor")]
    OtherEvent(u64),
    /// Not a Sysmon event.
    #[error("provider {0} is not Sysmon")]
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
}

impl SkipEvent {
    /// A short stable name for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            SkipEvent::NotJson(_) => "not JSON",
            SkipEvent::NoEventId => "no EventID",
            SkipEvent::OtherEvent(_) => "other event type",
            SkipEvent::OtherProvider(_) => "other provider",
            SkipEvent::BadField { .. } => "bad field",
            SkipEvent::Evtx(_) => "bad EVTX record",
        }
    }
}

fn event_id(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        // evtx renders EventID with qualifiers as {"#attributes": {...}, "#text": 4688}
        Value::Object(o) => o.get("#text").and_then(event_id),
        _ => None,
    }
}

/// Converts a flat map of fields (plus the event id) to a record.
fn from_fields(
    fields: &serde_json::Map<String, Value>,
    eid: u64,
    position: u64,
) -> Result<Record, SkipEvent> {
    let eid16 = u16::try_from(eid).map_err(|_| SkipEvent::OtherEvent(eid))?;
    let event_type = EventType::from_sysmon_event_id(eid16).ok_or(SkipEvent::OtherEvent(eid))?;
    let mut values = Vec::with_capacity(event_type.fields().len());
    for def in event_type.fields() {
        let v = match fields.get(def.name) {
            None | Some(Value::Null) => Owned::Absent,
            Some(v) => match (def.ty, v) {
                (FieldType::Str, Value::String(s)) => Owned::Str(s.clone()),
                (FieldType::Str, Value::Number(n)) => Owned::Str(n.to_string()),
                (FieldType::Str, Value::Bool(b)) => Owned::Str(b.to_string()),
                (FieldType::Str, other) => Owned::Str(other.to_string()),
                (FieldType::Int, Value::Number(n)) => match n.as_u64() {
                    Some(i) => Owned::Int(i),
                    None => {
                        return Err(SkipEvent::BadField {
                            field: def.name.into(),
                            why: format!("{n} is not a non-negative integer"),
                        })
                    }
                },
                (FieldType::Int, Value::String(s)) => match s.trim().parse() {
                    Ok(i) => Owned::Int(i),
                    Err(_) if s.is_empty() || s == "-" => Owned::Absent,
                    Err(_) => {
                        return Err(SkipEvent::BadField {
                            field: def.name.into(),
                            why: format!("{s:?} is not an integer"),
                        })
                    }
                },
                (FieldType::Int, other) => {
                    return Err(SkipEvent::BadField {
                        field: def.name.into(),
                        why: format!("{other} is not an integer"),
                    })
                }
            },
        };
        values.push(v);
    }
    Ok(Record {
        event_type,
        position,
        values,
    })
}

/// The flat form of an event (`EventID` plus its fields) from either shape: a flat event as it
/// is, an exported `{"Event": ...}` document as its `EventData` plus `EventID`. Other evaluators
/// take this form (the differential tests and the benchmark feed it to them).
pub fn flatten(v: &Value) -> Option<serde_json::Map<String, Value>> {
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

/// Converts one JSON value: a flat event, or an exported `{"Event": ...}` document.
/// `position` is used when the event carries no EventRecordID.
pub fn from_json(v: &Value, position: u64) -> Result<Record, SkipEvent> {
    let Some(obj) = v.as_object() else {
        return Err(SkipEvent::NotJson("not an object".into()));
    };
    if let Some(event) = obj.get("Event").and_then(Value::as_object) {
        let system = event.get("System").and_then(Value::as_object);
        let provider = system
            .and_then(|s| s.get("Provider"))
            .and_then(|p| p.get("#attributes").unwrap_or(p).get("Name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !provider.is_empty() && !provider.contains("Sysmon") {
            return Err(SkipEvent::OtherProvider(provider.into()));
        }
        let eid = system
            .and_then(|s| s.get("EventID"))
            .and_then(event_id)
            .ok_or(SkipEvent::NoEventId)?;
        let record_id = system
            .and_then(|s| s.get("EventRecordID"))
            .and_then(Value::as_u64)
            .unwrap_or(position);
        let empty = serde_json::Map::new();
        let data = event
            .get("EventData")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        return from_fields(data, eid, record_id);
    }
    let eid = obj
        .get("EventID")
        .and_then(event_id)
        .ok_or(SkipEvent::NoEventId)?;
    from_fields(obj, eid, position)
}

/// Reads every event of a file, handing each record (or the reason it was skipped, with its
/// position) to `f`. `.evtx` files are parsed as EVTX, others by [`read_text`].
pub fn read_file(
    path: &Path,
    f: &mut dyn FnMut(Result<Record, (u64, SkipEvent)>),
) -> std::io::Result<()> {
    if path.extension().and_then(|e| e.to_str()) == Some("evtx") {
        let mut parser = evtx::EvtxParser::from_path(path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        for (i, r) in parser.records_json_value().enumerate() {
            match r {
                Ok(rec) => {
                    f(from_json(&rec.data, rec.event_record_id)
                        .map_err(|e| (rec.event_record_id, e)))
                }
                Err(e) => f(Err((i as u64, SkipEvent::Evtx(e.to_string())))),
            }
        }
        return Ok(());
    }
    let text = std::fs::read_to_string(path)?;
    read_text(&text, f);
    Ok(())
}

/// Reads events from text: a JSON array of events, one or more JSON documents one after another
/// (JSON lines, or pretty-printed exports), or, when that fails to parse, JSON lines with the
/// malformed ones reported by line number and skipped.
pub fn read_text(text: &str, f: &mut dyn FnMut(Result<Record, (u64, SkipEvent)>)) {
    let line_at = |offset: usize| text.get(..offset).map_or(0, |t| t.matches('\n').count()) as u64;
    let mut docs = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut start = 0usize;
    let streamed = loop {
        // The line a document starts on: skip the whitespace before it.
        let rest = text.get(start..).unwrap_or("");
        let skipped = rest.len() - rest.trim_start().len();
        match stream.next() {
            None => break true,
            Some(Ok(v)) => {
                docs.push((line_at(start + skipped), v));
                start = stream.byte_offset();
            }
            Some(Err(_)) => break false,
        }
    };
    if streamed {
        for (line, doc) in docs {
            match doc {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        f(from_json(item, i as u64).map_err(|e| (i as u64, e)));
                    }
                }
                v => f(from_json(&v, line).map_err(|e| (line, e))),
            }
        }
        return;
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = match serde_json::from_str::<Value>(line) {
            Ok(v) => from_json(&v, i as u64),
            Err(e) => Err(SkipEvent::NotJson(e.to_string())),
        };
        f(record.map_err(|e| (i as u64, e)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let pid = EventType::ProcessCreation
            .field_by_name("ProcessId")
            .unwrap()
            .index;
        assert_eq!(r.values[usize::from(pid)], Owned::Int(42));

        let doc = json!({"Event": {"System": {"Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon"}}, "EventID": 13, "EventRecordID": 991},
            "EventData": {"EventType": "SetValue", "TargetObject": "HKLM\\x", "Details": "DWORD (0x00000001)", "ProcessId": 4}}});
        let r = from_json(&doc, 0).unwrap();
        assert_eq!(r.event_type, EventType::RegistryEvent);
        assert_eq!(r.position, 991);
    }

    #[test]
    fn text_forms() {
        let mut got = Vec::new();
        let jsonl = "{\"EventID\": 1, \"Image\": \"a\"}\n\n{\"EventID\": 7}\n";
        read_text(jsonl, &mut |r| {
            got.push(r.map(|r| r.position).map_err(|e| e.0))
        });
        assert_eq!(got, [Ok(0), Ok(2)]);
        got.clear();
        let broken = "{\"EventID\": 1}\nnot json\n{\"EventID\": 1}\n";
        read_text(broken, &mut |r| {
            got.push(r.map(|r| r.position).map_err(|e| e.0))
        });
        assert_eq!(got, [Ok(0), Err(1), Ok(2)]);
        got.clear();
        let pretty = "{\n \"Event\": {\"System\": {\"EventID\": 1, \"EventRecordID\": 5}}\n}\n{\n \"Event\": {\"System\": {\"EventID\": 1, \"EventRecordID\": 6}}\n}";
        read_text(pretty, &mut |r| {
            got.push(r.map(|r| r.position).map_err(|e| e.0))
        });
        assert_eq!(got, [Ok(5), Ok(6)]);
    }

    #[test]
    fn skips_say_why() {
        assert_eq!(
            from_json(&json!({"Image": "x"}), 0),
            Err(SkipEvent::NoEventId)
        );
        assert_eq!(
            from_json(&json!({"EventID": 4688}), 0),
            Err(SkipEvent::OtherEvent(4688))
        );
        assert!(matches!(
            from_json(&json!({"EventID": 1, "ProcessId": "abc"}), 0),
            Err(SkipEvent::BadField { .. })
        ));
        let sec = json!({"Event": {"System": {"Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing"}}, "EventID": 1}}});
        assert!(matches!(
            from_json(&sec, 0),
            Err(SkipEvent::OtherProvider(_))
        ));
    }
}
