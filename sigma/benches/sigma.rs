//! `cargo bench -p bulwark-sigma --bench sigma`: SigmaHQ's process_creation rules, one core,
//! Bulwark against rsigma-eval and sigma-rust on the same rules and events in the same run.
//!
//! Reports per-event evaluation time (median, p99), events per second, the ratio to Bulwark,
//! heap allocations per event (Bulwark, counted by a global allocator), the pack's size, the
//! time to verify and load it, and the cost model's bound for the pack against its budget, with
//! what dominates it and an event built to approach it (every rule's anchor in every field, each
//! field at its longest): its work, its time, and the nanoseconds a work unit took. Needs
//! ../shared/corpus; prints why and exits 0 without it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bulwark_interpreter::cost::BUDGET_PER_EVENT;
use bulwark_interpreter::format::RawPack;
use bulwark_interpreter::{verify, Event, EventType, FieldValue, VerifiedPack};
use bulwark_sigma::events::{flatten, from_json, json_documents, Owned, Record};
use bulwark_sigma::{compile_sources, Options};
use serde_json::Value;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[path = "common/synthetic.rs"]
mod synthetic;
use synthetic::synthetic;

/// Per-event times (ns) of `eval` over `events`, each event `iters` times, and the matches.
fn measure<T>(events: &[T], iters: u32, eval: impl FnMut(&T) -> usize) -> (Vec<f64>, usize) {
    let mut times = Vec::with_capacity(events.len());
    let hits = measure_into(&mut times, events, iters, eval);
    (times, hits)
}

/// [`measure`] into `times`, which has room for every event: what it does between its first
/// and last evaluation allocates nothing, so allocations counted around it are `eval`'s.
fn measure_into<T>(
    times: &mut Vec<f64>,
    events: &[T],
    iters: u32,
    mut eval: impl FnMut(&T) -> usize,
) -> usize {
    assert!(times.is_empty() && times.capacity() >= events.len());
    let mut hits = 0;
    for e in events {
        let t = Instant::now();
        for _ in 0..iters {
            hits += std::hint::black_box(eval(std::hint::black_box(e)));
        }
        times.push(t.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    hits / iters as usize
}

/// Per-event times over several rounds: each round's, and each event's fastest.
#[derive(Default)]
struct Rounds {
    first: Vec<f64>,
    best: Vec<f64>,
    hits: usize,
}

impl Rounds {
    fn add(&mut self, (times, hits): (Vec<f64>, usize)) {
        if self.first.is_empty() {
            self.first = times.clone();
            self.best = times;
            self.hits = hits;
        } else {
            for (b, t) in self.best.iter_mut().zip(times) {
                *b = b.min(t);
            }
        }
    }
}

struct Row {
    name: &'static str,
    median: f64,
    p99: f64,
    eps: f64,
    hits: usize,
}

fn summarize(name: &'static str, mut times: Vec<f64>, hits: usize) -> Row {
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    Row {
        name,
        median: pick(0.5),
        p99: pick(0.99),
        eps: 1e9 / mean,
        hits,
    }
}

/// An event of type `t` built to approach the pack's bound: each string field holds, up to its
/// longest, the anchors the pack's rules have on it (each once, space-separated, so every
/// anchored rule is a candidate), then the most common anchor repeated to the field's end.
fn costliest_event(raw: &RawPack, t: EventType) -> Vec<String> {
    let mut fields: Vec<String> = t.fields().iter().map(|_| String::new()).collect();
    let mut seen = std::collections::HashSet::new();
    for r in raw.rules.iter().filter(|r| r.event_type == t.id()) {
        for &(f, s) in &r.anchors {
            let lit =
                String::from_utf8_lossy(raw.strings.get(s as usize).unwrap_or(&[])).into_owned();
            let max = t.max_len(f);
            if let Some(v) = fields.get_mut(f as usize) {
                if seen.insert((f, lit.clone())) && v.len() + lit.len() < max {
                    v.push_str(&lit);
                    v.push(' ');
                }
            }
        }
    }
    for (i, v) in fields.iter_mut().enumerate() {
        let max = t.max_len(i as u8);
        let fill = if v.is_empty() {
            "x".to_string()
        } else {
            v.clone()
        };
        while v.len() < max {
            v.push_str(&fill[..fill.len().min(max - v.len())]);
        }
    }
    fields
}

/// The cost model's report on the pack: its bound, the budget, what dominates, and an event
/// built to approach the bound, timed.
fn cost_report(raw: &RawPack, pack: &VerifiedPack) {
    let t = EventType::ProcessCreation;
    let bound = pack.cost_bound(t);
    let prefilters: u64 = pack.prefilter_costs(t).iter().map(|(_, c)| c).sum();
    let mut rules: Vec<(u64, usize)> = (0..pack.rule_count())
        .filter_map(|i| Some((pack.rule_cost(i)?, i)))
        .collect();
    rules.sort_unstable_by(|a, b| b.cmp(a));
    let rule_total: u64 = rules.iter().map(|(c, _)| c).sum();
    let top: u64 = rules.iter().take(20).map(|(c, _)| c).sum();
    println!(
        "cost bound per process_creation event: {bound} work units, budget {BUDGET_PER_EVENT} ({:.2}x headroom); prefilters {prefilters} ({:.1}%), rules {rule_total} ({:.1}%; the 20 costliest {:.1}%, the costliest {} units: {})",
        BUDGET_PER_EVENT as f64 / bound as f64,
        prefilters as f64 * 100.0 / bound as f64,
        rule_total as f64 * 100.0 / bound as f64,
        top as f64 * 100.0 / bound as f64,
        rules.first().map_or(0, |r| r.0),
        rules.first().and_then(|r| pack.rule(r.1)).map_or("", |r| r.title),
    );
    let fields = costliest_event(raw, t);
    let values: Vec<FieldValue<'_>> = t
        .fields()
        .iter()
        .zip(&fields)
        .map(|(d, v)| match d.ty {
            bulwark_interpreter::FieldType::Str => FieldValue::Str(v),
            bulwark_interpreter::FieldType::Int => FieldValue::Int(4),
        })
        .collect();
    let ev = Event::new(t, &values).expect("event");
    let mut best = f64::MAX;
    let mut stats = Default::default();
    for _ in 0..5 {
        let started = Instant::now();
        stats = pack.evaluate(&ev, &mut |_| {});
        best = best.min(started.elapsed().as_secs_f64());
    }
    let stats: bulwark_interpreter::EvalStats = stats;
    println!(
        "costliest event built: {} rules run, {} work units ({:.1}% of the bound), {:.2} ms ({:.2} ns per unit; the bound at that rate: {:.0} ms, the budget {:.0} ms), {} errors",
        stats.rules_run,
        stats.work,
        stats.work as f64 * 100.0 / bound as f64,
        best * 1e3,
        best * 1e9 / stats.work as f64,
        bound as f64 * best * 1e3 / stats.work as f64,
        BUDGET_PER_EVENT as f64 * best * 1e3 / stats.work as f64,
        stats.errors
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let rules_dir = corpus.join("sigma/rules/windows/process_creation");
    if !rules_dir.is_dir() {
        println!("skipped: {} is absent", rules_dir.display());
        return;
    }
    let mut files = Vec::new();
    files.extend(bulwark_sigma::find_files(&rules_dir, ".yml"));
    files.sort();
    let sources: Vec<(String, String)> = files
        .iter()
        .filter_map(|f| Some((f.display().to_string(), std::fs::read_to_string(f).ok()?)))
        .collect();

    // Bulwark: compile, then verify+load (what the driver does at start or a hot update).
    let compiled = compile_sources(&sources, &Options::default()).expect("compile");
    let mut loads = Vec::new();
    let load = |loads: &mut Vec<f64>| {
        for _ in 0..10 {
            let t = Instant::now();
            let loaded = std::hint::black_box(verify(&compiled.pack).expect("verify"));
            loads.push(t.elapsed().as_secs_f64() * 1e3);
            // Freeing it is the unload of the content it replaces, not part of loading.
            drop(loaded);
        }
    };
    let pack = verify(&compiled.pack).expect("verify");
    cost_report(&RawPack::decode(&compiled.pack).expect("decode"), &pack);
    // The same rule texts for the other evaluators: only the rules Bulwark compiled.
    let kept: std::collections::HashSet<&str> =
        compiled.rules.iter().map(|r| r.path.as_str()).collect();
    let same: Vec<&(String, String)> = sources
        .iter()
        .filter(|(p, _)| kept.contains(p.as_str()))
        .collect();

    // Events: every process creation in SigmaHQ's regression data, plus benign synthetic ones.
    let mut docs = Vec::new();
    let mut jsons = Vec::new();
    jsons.extend(bulwark_sigma::find_files(
        &corpus.join("sigma-regression"),
        ".json",
    ));
    for f in jsons {
        if let Ok(text) = std::fs::read_to_string(&f) {
            docs.extend(json_documents(&text));
        }
    }
    let mut flat: Vec<Value> = docs
        .iter()
        .filter_map(flatten)
        .filter(|m| m.get("EventID").and_then(Value::as_u64) == Some(1))
        .map(Value::Object)
        .collect();
    let regression = flat.len();
    flat.extend(synthetic(1000));
    let records: Vec<Record> = flat.iter().filter_map(|v| from_json(v, 0).ok()).collect();
    assert_eq!(records.len(), flat.len());

    // BULWARK_BENCH_ITERS: more repetitions, for profiling evaluation.
    let iters: u32 = std::env::var("BULWARK_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // Bulwark: the events are built once, outside the timing.
    let event_values: Vec<Vec<FieldValue<'_>>> = records
        .iter()
        .map(|r| r.values.iter().map(Owned::as_value).collect())
        .collect();
    let events: Vec<Event<'_, '_>> = records
        .iter()
        .zip(&event_values)
        .map(|(r, v)| Event::new(r.event_type, v).expect("event"))
        .collect();
    let eval_bulwark = |ev: &Event<'_, '_>| {
        let mut n = 0;
        pack.evaluate(ev, &mut |_| n += 1);
        n
    };
    // Allocations are counted during Bulwark's evaluations only (the warm-up included).
    let mut eval_allocs = 0;
    let mut evals = events.len() as u64;
    let mut times = Vec::with_capacity(events.len());
    let before = ALLOCS.load(Ordering::Relaxed);
    std::hint::black_box(measure_into(&mut times, &events, 1, eval_bulwark));
    eval_allocs += ALLOCS.load(Ordering::Relaxed) - before;

    // rsigma-eval, on the same rules (unless only Bulwark is measured).
    let only = std::env::var_os("BULWARK_BENCH_ONLY").is_some();
    let mut engine = rsigma_eval::Engine::new();
    let mut rs_rules = 0;
    for (_, text) in same.iter().filter(|_| !only) {
        if let Ok(c) = rsigma_parser::parse_sigma_yaml(text) {
            if engine.add_collection(&c).is_ok() {
                rs_rules += 1;
            }
        }
    }
    let eval_rsigma = |v: &Value| engine.evaluate(&rsigma_eval::JsonEvent::borrow(v)).len();
    let _ = eval_rsigma(&flat[0]);

    // Rounds: loads, Bulwark and rsigma-eval in turn, so a slow spell of this shared machine
    // falls on all of them; each event's time is also kept as its fastest over the rounds.
    let mut bulwark_rounds = Rounds::default();
    let mut rsigma_rounds = Rounds::default();
    for _ in 0..ROUNDS {
        load(&mut loads);
        let mut times = Vec::with_capacity(events.len());
        let before = ALLOCS.load(Ordering::Relaxed);
        let hits = measure_into(&mut times, &events, iters, eval_bulwark);
        eval_allocs += ALLOCS.load(Ordering::Relaxed) - before;
        bulwark_rounds.add((times, hits));
        evals += u64::from(iters) * events.len() as u64;
        if !only {
            rsigma_rounds.add(measure(&flat, iters.min(5), eval_rsigma));
        }
    }
    loads.sort_by(f64::total_cmp);
    let bulwark = summarize("bulwark", bulwark_rounds.best.clone(), bulwark_rounds.hits);
    let bulwark_one = summarize("bulwark", bulwark_rounds.first, bulwark_rounds.hits);

    let run: u64 = events
        .iter()
        .map(|ev| u64::from(pack.evaluate(ev, &mut |_| {}).rules_run))
        .sum();
    println!(
        "bulwark runs {:.1} rules per event after the prefilter (of {})",
        run as f64 / events.len() as f64,
        compiled.rules.len()
    );
    if only {
        println!("pack {} bytes, verify+load median {:.2} ms (min {:.2}); bulwark median {:.0} ns p99 {:.0} ns, {:.0} events/s (one round: median {:.0} ns), {eval_allocs} allocations", compiled.pack.len(), loads[loads.len() / 2], loads[0], bulwark.median, bulwark.p99, bulwark.eps, bulwark_one.median);
        return;
    }
    let rsigma = summarize("rsigma-eval 0.23", rsigma_rounds.best, rsigma_rounds.hits);
    let rsigma_one = summarize("rsigma-eval 0.23", rsigma_rounds.first, rsigma_rounds.hits);

    // sigma-rust
    let sr_rules: Vec<sigma_rust::Rule> = same
        .iter()
        .filter_map(|(_, t)| sigma_rust::rule_from_yaml(t).ok())
        .collect();
    let sr_events: Vec<sigma_rust::Event> = flat
        .iter()
        .filter_map(|v| sigma_rust::event_from_json(&v.to_string()).ok())
        .collect();
    // One round of one evaluation per event: it takes milliseconds per event.
    let (t, h) = measure(&sr_events, 1, |e| {
        sr_rules.iter().filter(|r| r.is_match(e)).count()
    });
    let sigma_rust_row = summarize("sigma-rust 0.7", t, h);

    println!("rules: {} process_creation rules, {} compiled by Bulwark ({} skipped); rsigma-eval loaded {rs_rules}, sigma-rust {}", sources.len(), compiled.rules.len(), compiled.skipped.len(), sr_rules.len());
    println!(
        "events: {} ({regression} from SigmaHQ regression data, {} synthetic benign); one core",
        records.len(),
        records.len() - regression
    );
    println!(
        "pack: {} bytes; verify+load median {:.2} ms (min {:.2}, max {:.2} over {} loads, {ROUNDS} rounds of 10)",
        compiled.pack.len(),
        loads[loads.len() / 2],
        loads[0],
        loads[loads.len() - 1],
        loads.len()
    );
    println!("bulwark heap allocations during evaluation: {eval_allocs} over {evals} evaluations ({:.3} per event)", eval_allocs as f64 / evals as f64);
    println!();
    println!("per-event times: each event's fastest of {ROUNDS} rounds ({iters} evaluations per event per round for bulwark, {} for rsigma-eval, one round of one for sigma-rust)", iters.min(5));
    println!(
        "{:<18} {:>12} {:>12} {:>14} {:>10} {:>14}",
        "evaluator", "median ns", "p99 ns", "events/s", "matches", "vs bulwark"
    );
    for r in [&bulwark, &rsigma, &sigma_rust_row] {
        println!(
            "{:<18} {:>12.0} {:>12.0} {:>14.0} {:>10} {:>13.1}x",
            r.name,
            r.median,
            r.p99,
            r.eps,
            r.hits,
            bulwark.eps / r.eps
        );
    }
    println!(
        "first round alone: bulwark median {:.0} ns, {:.0} events/s; rsigma-eval median {:.0} ns, {:.0} events/s ({:.1}x)",
        bulwark_one.median,
        bulwark_one.eps,
        rsigma_one.median,
        rsigma_one.eps,
        bulwark_one.eps / rsigma_one.eps
    );
}

/// Measurement rounds (see `main`).
const ROUNDS: usize = 5;
