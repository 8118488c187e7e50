//! Bulwark's evaluation built as the driver gets it, for the hostile benchmark (`../src/main.rs`).
//!
//! The hostile benchmark links the peer and the Sigma compiler, which turn on features of the
//! interpreter's dependencies that the driver's build does not have: memchr's `std` (with which
//! the skips of regex DFAs' accelerated states pick AVX2 at run time; the driver's memchr is
//! SSE2) and more of regex-automata's. This package depends on the interpreter alone, so its
//! build has the driver's features (its own lock file and feature resolution), and what it
//! measures is the driver's evaluation code.
//!
//! `bulwark-bench-driver-config PACK EVENTS ITERS`: verifies the pack (the bytes the benchmark
//! compiled), reads the benchmark's event sets (the format [`read_sets`] reads, written by the
//! benchmark), and prints for each set one line: `set NAME mean median p99 max matches`, times
//! in nanoseconds per event, each event's fastest of 3 rounds of ITERS evaluations.

use std::time::Instant;

use bulwark_interpreter::{verify, Event, EventType, FieldValue};

/// An owned field value, as the file holds it.
enum Value {
    Absent,
    Str(String),
    Int(u64),
}

/// A reader over the events file, failing with where it stopped.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("events file ends at byte {}", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| "u32")?,
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| "u64")?,
        ))
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|e| format!("byte {at}: {e}"))
    }
}

/// A set: its name and its events (type and values).
type Set = (String, Vec<(EventType, Vec<Value>)>);

/// The sets: `BWEV1`, then the number of sets (u32); each a name (u32 length, UTF-8), the number
/// of events (u32), each event its type id (u8), its number of values (u32) and each value a tag
/// (0 absent, 1 text: u32 length and UTF-8, 2 integer: u64). Little-endian.
fn read_sets(bytes: &[u8]) -> Result<Vec<Set>, String> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(5)? != b"BWEV1" {
        return Err("not a BWEV1 events file".into());
    }
    let mut sets = Vec::new();
    for _ in 0..r.u32()? {
        let name = r.str()?;
        let mut events = Vec::new();
        for _ in 0..r.u32()? {
            let at = r.at;
            let id = r.u8()?;
            let t = EventType::from_id(id).ok_or_else(|| format!("byte {at}: event type {id}"))?;
            let mut values = Vec::new();
            for _ in 0..r.u32()? {
                let at = r.at;
                values.push(match r.u8()? {
                    0 => Value::Absent,
                    1 => Value::Str(r.str()?),
                    2 => Value::Int(r.u64()?),
                    tag => return Err(format!("byte {at}: value tag {tag}")),
                });
            }
            events.push((t, values));
        }
        sets.push((name, events));
    }
    Ok(sets)
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, pack, events, iters] = args.as_slice() else {
        return Err("usage: bulwark-bench-driver-config PACK EVENTS ITERS".into());
    };
    let pack = std::fs::read(pack).map_err(|e| format!("{pack}: {e}"))?;
    let pack = verify(&pack).map_err(|e| format!("pack: {e}"))?;
    let bytes = std::fs::read(events).map_err(|e| format!("{events}: {e}"))?;
    let iters: u32 = iters.parse().map_err(|e| format!("ITERS {iters}: {e}"))?;
    for (name, set) in read_sets(&bytes)? {
        let values: Vec<Vec<FieldValue<'_>>> = set
            .iter()
            .map(|(_, vs)| {
                vs.iter()
                    .map(|v| match v {
                        Value::Absent => FieldValue::Absent,
                        Value::Str(s) => FieldValue::Str(s),
                        Value::Int(n) => FieldValue::Int(*n),
                    })
                    .collect()
            })
            .collect();
        let events: Vec<Event<'_, '_>> = set
            .iter()
            .zip(&values)
            .map(|((t, _), v)| Event::new(*t, v).map_err(|e| format!("set {name}: {e}")))
            .collect::<Result<_, _>>()?;
        let mut best = vec![f64::MAX; events.len()];
        let mut matches = 0usize;
        for _ in 0..3 {
            matches = 0;
            for (ev, best) in events.iter().zip(best.iter_mut()) {
                let t = Instant::now();
                for _ in 0..iters {
                    let mut n = 0usize;
                    pack.evaluate(std::hint::black_box(ev), &mut |_| n += 1);
                    matches += std::hint::black_box(n);
                }
                *best = best.min(t.elapsed().as_nanos() as f64 / f64::from(iters.max(1)));
            }
        }
        // As the hostile benchmark's `stats`.
        let mut sorted = best.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1);
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let at = |q: f64| {
            let i = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
            sorted.get(i).copied().unwrap_or(0.0)
        };
        println!(
            "set {name} {mean:.0} {:.0} {:.0} {:.0} {}",
            at(0.5),
            at(0.99),
            sorted.last().copied().unwrap_or(0.0),
            matches / iters.max(1) as usize
        );
    }
    Ok(())
}
