//! Scanning recorded events with a verified pack: the same interpreter the driver runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bulwark_interpreter::{FieldValue, RuleInfo, VerifiedPack};

use crate::events::{read_input, Input, ReadError, Record, SkipEvent};

/// Totals of a scan.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Events read (scanned or skipped; a damaged EVTX file's lost records count as read).
    pub read: u64,
    /// Events evaluated.
    pub scanned: u64,
    /// Events skipped, by reason kind.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Detections.
    pub detections: u64,
    /// Distinct rules that fired (by index).
    pub rules_fired: BTreeSet<u32>,
    /// Runtime errors the VM counted (always 0 for a verified pack).
    pub eval_errors: u64,
    /// Bytes of input read so far (of files; standard input is not counted).
    pub bytes: u64,
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
    let mut matched = Vec::new();
    read_input(input, &mut |r| {
        totals.read += 1;
        if totals.read % 4096 == 0 {
            on_progress(totals);
        }
        match r {
            Ok(record) => {
                totals.scanned += 1;
                matched.clear();
                // The values borrow from this record, so the buffer is per record here; the
                // benchmark shows evaluation itself allocates nothing.
                let mut values: Vec<FieldValue<'_>> = Vec::with_capacity(32);
                let stats = record.with_event(&mut values, |ev| {
                    pack.evaluate(ev, &mut |rule| matched.push(rule.index))
                });
                if let Some(stats) = stats {
                    totals.eval_errors += u64::from(stats.errors);
                }
                for &index in &matched {
                    if let Some(rule) = pack.rule(index as usize) {
                        totals.detections += 1;
                        totals.rules_fired.insert(index);
                        on_detection(&rule, &record);
                    }
                }
            }
            Err((position, why)) => {
                // A damaged EVTX file's report stands for all the records it lost.
                totals.read += why.count().saturating_sub(1);
                *totals.skipped.entry(why.kind()).or_default() += why.count();
                on_skip(position, &why);
            }
        }
    })
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
