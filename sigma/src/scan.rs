//! Scanning recorded events with a verified pack: the same interpreter the driver runs.
//!
//! Each detection comes with the fields the rule matched on, as far as the VM can say: the
//! fields of the event without which the rule would not have fired (found by evaluating the
//! event again with each present field made absent, once per event that fired anything). A
//! rule that fires on either of two fields names neither, and a field a rule needs absent is
//! never named.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bulwark_interpreter::{FieldValue, RuleInfo, VerifiedPack};

use crate::events::{
    normalize_time, read_input_counted, Input, Owned, ReadError, Record, SkipEvent,
};

/// Totals of a scan.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Events read (scanned or skipped; a damaged EVTX file's lost records count as read).
    pub read: u64,
    /// Events evaluated.
    pub scanned: u64,
    /// Events skipped, by reason kind.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Events outside the time window (read, not scanned, not skips).
    pub outside_window: u64,
    /// Detections.
    pub detections: u64,
    /// Distinct rules that fired (by index).
    pub rules_fired: BTreeSet<u32>,
    /// Runtime errors the VM counted (always 0 for a verified pack).
    pub eval_errors: u64,
    /// Bytes of input read so far (an EVTX file's once it is done).
    pub bytes: u64,
}

/// One rule that fired on an event.
#[derive(Debug, Clone)]
pub struct Detection<'p> {
    /// The rule.
    pub rule: RuleInfo<'p>,
    /// The fields it matched on (see the module doc), in schema order.
    pub matched: Vec<&'static str>,
}

/// What to scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Work out the fields each detection matched on.
    pub matched_fields: bool,
    /// Scan only events at or after this time (compared in [`normalize_time`]'s form, as far
    /// as the bound goes: `2024-01-02` is the start of that day).
    pub from: Option<String>,
    /// Scan only events before or at this time (`2024-01-02` takes in the whole day).
    pub to: Option<String>,
}

impl ScanOptions {
    /// Whether an event at `time` is inside the window (an event without a time is outside any
    /// window that has a bound).
    pub fn in_window(&self, time: Option<&str>) -> bool {
        if self.from.is_none() && self.to.is_none() {
            return true;
        }
        let Some(time) = time else {
            return false;
        };
        let t = time.trim_end_matches('Z');
        if let Some(from) = &self.from {
            let from = normalize_time(from);
            if t < from.trim_end_matches('Z') {
                return false;
            }
        }
        if let Some(to) = &self.to {
            let to = normalize_time(to);
            let to = to.trim_end_matches('Z');
            // compare as far as the bound goes: a bound of a day includes all of it
            let cut = t.get(..to.len()).unwrap_or(t);
            if cut > to {
                return false;
            }
        }
        true
    }
}

fn evaluate(pack: &VerifiedPack, record: &Record, values: &[Owned], out: &mut Vec<u32>) -> u32 {
    out.clear();
    let buf: Vec<FieldValue<'_>> = values.iter().map(Owned::as_value).collect();
    let stats = bulwark_interpreter::Event::new(record.event_type, &buf)
        .ok()
        .map(|ev| pack.evaluate(&ev, &mut |rule| out.push(rule.index)));
    stats.map_or(0, |s| s.errors)
}

/// For each of `fired`, the present fields without which it would not have fired.
fn matched_fields(pack: &VerifiedPack, record: &Record, fired: &[u32]) -> Vec<Vec<&'static str>> {
    let mut out = vec![Vec::new(); fired.len()];
    let mut values = record.values.clone();
    let mut still = Vec::new();
    for (i, def) in record.event_type.fields().iter().enumerate() {
        let Some(v) = values.get_mut(i) else { continue };
        if *v == Owned::Absent {
            continue;
        }
        let kept = std::mem::replace(v, Owned::Absent);
        evaluate(pack, record, &values, &mut still);
        if let Some(v) = values.get_mut(i) {
            *v = kept;
        }
        for (k, index) in fired.iter().enumerate() {
            if !still.contains(index) {
                if let Some(list) = out.get_mut(k) {
                    list.push(def.name);
                }
            }
        }
    }
    out
}

/// Scans every event of `input` with `pack`. `on_event` gets each event that fired something,
/// with its detections; `on_skip` each event that could not be scanned (position and reason);
/// `on_progress` is called every 4096 events.
pub fn scan_input_with(
    pack: &VerifiedPack,
    input: &Input,
    opts: &ScanOptions,
    totals: &mut Totals,
    on_event: &mut dyn FnMut(&Record, &[Detection<'_>]),
    on_skip: &mut dyn FnMut(u64, &SkipEvent),
    on_progress: &mut dyn FnMut(&Totals),
) -> Result<(), ReadError> {
    let mut fired = Vec::new();
    let bytes = Cell::new(0u64);
    let start_bytes = totals.bytes;
    let result = read_input_counted(input, &bytes, &mut |r| {
        totals.read += 1;
        if totals.read % 4096 == 0 {
            totals.bytes = start_bytes + bytes.get();
            on_progress(totals);
        }
        match r {
            Ok(record) => {
                if !opts.in_window(record.time.as_deref()) {
                    totals.outside_window += 1;
                    return;
                }
                totals.scanned += 1;
                totals.eval_errors +=
                    u64::from(evaluate(pack, &record, &record.values, &mut fired));
                if fired.is_empty() {
                    return;
                }
                let matched = if opts.matched_fields {
                    matched_fields(pack, &record, &fired)
                } else {
                    vec![Vec::new(); fired.len()]
                };
                let detections: Vec<Detection<'_>> = fired
                    .iter()
                    .zip(matched)
                    .filter_map(|(&index, matched)| {
                        Some(Detection {
                            rule: pack.rule(index as usize)?,
                            matched,
                        })
                    })
                    .collect();
                for d in &detections {
                    totals.detections += 1;
                    totals.rules_fired.insert(d.rule.index);
                }
                on_event(&record, &detections);
            }
            Err((position, why)) => {
                // A damaged EVTX file's report stands for all the records it lost.
                totals.read += why.count().saturating_sub(1);
                *totals.skipped.entry(why.kind()).or_default() += why.count();
                on_skip(position, &why);
            }
        }
    });
    totals.bytes = start_bytes + bytes.get();
    result
}

/// Scans every event of `input` with `pack`. `on_detection` gets each matching rule and its
/// event; `on_skip` each event that could not be scanned (position and reason); `on_progress`
/// is called every 4096 events.
pub fn scan_input(
    pack: &VerifiedPack,
    input: &Input,
    totals: &mut Totals,
    on_detection: &mut dyn FnMut(&RuleInfo<'_>, &Record),
    on_skip: &mut dyn FnMut(u64, &SkipEvent),
    on_progress: &mut dyn FnMut(&Totals),
) -> Result<(), ReadError> {
    scan_input_with(
        pack,
        input,
        &ScanOptions::default(),
        totals,
        &mut |record, detections| {
            for d in detections {
                on_detection(&d.rule, record);
            }
        },
        on_skip,
        on_progress,
    )
}

/// [`scan_input`] on one file, with errors as I/O errors.
pub fn scan_file(
    pack: &VerifiedPack,
    path: &Path,
    totals: &mut Totals,
    on_detection: &mut dyn FnMut(&RuleInfo<'_>, &Record),
    on_skip: &mut dyn FnMut(u64, &SkipEvent),
    on_progress: &mut dyn FnMut(&Totals),
) -> std::io::Result<()> {
    scan_input(
        pack,
        &Input::File(path.to_path_buf()),
        totals,
        on_detection,
        on_skip,
        on_progress,
    )
    .map_err(|e| match e {
        ReadError::Io(e) => e,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_windows() {
        let w = |from: Option<&str>, to: Option<&str>| ScanOptions {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            ..ScanOptions::default()
        };
        let t = Some("2024-01-02T03:04:05.678Z");
        assert!(w(None, None).in_window(None));
        assert!(!w(Some("2024-01-01"), None).in_window(None));
        assert!(w(Some("2024-01-02"), Some("2024-01-02")).in_window(t));
        assert!(w(Some("2024-01-02 03:04"), None).in_window(t));
        assert!(!w(Some("2024-01-02 03:05"), None).in_window(t));
        assert!(!w(None, Some("2024-01-02T03:03:59")).in_window(t));
        assert!(w(None, Some("2024-01-02T03:04")).in_window(t));
    }
}
