//! Security 4688 read as process creation, on real recordings: OTRF's Security Datasets in
//! ../shared/corpus/security-datasets hold 1,312 Security 4688 events beside 1,003 Sysmon process
//! creations recorded during the same attacks, as flat JSON lines whose provider is in
//! `SourceName`. Every SigmaHQ process_creation rule that compiles runs on both; for each process
//! seen by both logs (same host, process id, image and command line), the two views must give
//! the same detections from every rule whose fields are all present in both events.
//! Skipped with the reason when the corpus is absent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use bulwark_interpreter::{verify, EventType, FieldValue};
use bulwark_sigma::events::{read_path, Owned, Record};
use bulwark_sigma::{compile_paths, Options};

fn corpus() -> Option<std::path::PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    (p.join("security-datasets").is_dir() && p.join("sigma/rules").is_dir()).then_some(p)
}

/// Which process an event is about: host, process id, image and command line, compared
/// case-insensitively.
fn key(r: &Record) -> Option<(String, u64, String, String)> {
    let text = |n: &str| r.get(n).text().map(|t| t.to_lowercase());
    let Owned::Int(pid) = r.get("ProcessId") else {
        return None;
    };
    Some((
        r.computer.clone()?.to_lowercase(),
        *pid,
        text("Image")?,
        text("CommandLine")?,
    ))
}

#[test]
fn security_4688_and_sysmon_agree() {
    let Some(corpus) = corpus() else {
        println!("skipped: ../shared/corpus/security-datasets or ../shared/corpus/sigma is absent");
        return;
    };
    let rules = corpus.join("sigma/rules/windows/process_creation");
    let compiled = compile_paths(&[rules], &Options::default()).unwrap();
    let pack = verify(&compiled.pack).unwrap();

    let mut security = Vec::new();
    let mut sysmon = Vec::new();
    let mut skipped: BTreeMap<&'static str, u64> = BTreeMap::new();
    for f in bulwark_sigma::find_files(&corpus.join("security-datasets"), ".jsonl") {
        read_path(&f, &mut |r| match r {
            Ok(r) if r.source == "Security 4688" => security.push(r),
            Ok(r) if r.source == "Sysmon 1" => sysmon.push(r),
            Ok(_) => {}
            Err((_, why)) => *skipped.entry(why.kind()).or_default() += 1,
        })
        .unwrap();
    }
    assert_eq!(
        security.len(),
        1312,
        "every 4688 is read as a process creation"
    );
    assert_eq!(sysmon.len(), 1003);
    assert!(security
        .iter()
        .all(|r| r.event_type == EventType::ProcessCreation));
    assert!(
        skipped.is_empty(),
        "nothing of these files is skipped: {skipped:?}"
    );

    let fired = |r: &Record| -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        let mut buf: Vec<FieldValue<'_>> = Vec::new();
        r.with_event(&mut buf, |ev| {
            pack.evaluate(ev, &mut |rule| {
                out.insert(rule.index);
            })
        });
        out
    };
    let fields: HashMap<u32, &[&str]> = compiled
        .rules
        .iter()
        .map(|r| (r.index, r.fields.as_slice()))
        .collect();

    let mut by_key: HashMap<_, &Record> = HashMap::new();
    for r in &sysmon {
        if let Some(k) = key(r) {
            by_key.insert(k, r);
        }
    }
    let (mut pairs, mut compared, mut agreeing_hits) = (0, 0u64, 0u64);
    let mut security_hits = 0;
    let mut wrong = Vec::new();
    for sec in &security {
        let sec_fired = fired(sec);
        security_hits += sec_fired.len();
        let Some(sys) = key(sec).and_then(|k| by_key.get(&k)) else {
            continue;
        };
        pairs += 1;
        let sys_fired = fired(sys);
        // The rules both events can answer: every field the rule reads is present in both.
        let present = |r: &Record, f: &str| *r.get(f) != Owned::Absent;
        for (&index, rule_fields) in &fields {
            if !rule_fields
                .iter()
                .all(|f| present(sec, f) && present(sys, f))
            {
                continue;
            }
            compared += 1;
            let (a, b) = (sec_fired.contains(&index), sys_fired.contains(&index));
            if a && b {
                agreeing_hits += 1;
            }
            if a != b {
                let rule = pack
                    .rule(index as usize)
                    .map(|r| r.title.to_owned())
                    .unwrap_or_default();
                wrong.push(format!(
                    "{rule:?} (fields {rule_fields:?}): Security 4688 line {} of {:?} {}, Sysmon line {} {}",
                    sec.position,
                    sec.computer,
                    if a { "fires" } else { "does not fire" },
                    sys.position,
                    if b { "fires" } else { "does not fire" },
                ));
            }
        }
    }
    println!(
        "security datasets: {} Security 4688 and {} Sysmon 1 events; {} rules; the 4688 events fire {} \
         detections; {pairs} processes seen by both logs; {compared} (process, rule) pairs compared \
         where the rule's fields are present in both, {agreeing_hits} detections by both, {} disagreements",
        security.len(),
        sysmon.len(),
        compiled.rules.len(),
        security_hits,
        wrong.len()
    );
    assert!(pairs >= 300, "only {pairs} processes seen by both logs");
    assert!(
        agreeing_hits >= 10,
        "only {agreeing_hits} detections by both views"
    );
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
