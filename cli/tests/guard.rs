//! `bulwark keygen`, `sign` and `guard` as a release engineer or a demo runs them: the boot-loop
//! scenario from the command line, signature refusals, and damaged state files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bulwark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .output()
        .expect("run bulwark")
}

struct Run {
    code: i32,
    json: Value,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let o = bulwark(args);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "bulwark {args:?} panicked: {stderr}"
    );
    Run {
        code: o.status.code().expect("exit code, not a signal"),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stderr,
    }
}

fn ok(args: &[&str]) -> Value {
    let r = run(args);
    assert_eq!(r.code, 0, "bulwark {args:?}: {}", r.stderr);
    r.json
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bulwark-guard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A directory with a key pair, a good and a bad pack, envelopes, and an initialised state dir.
struct Demo {
    dir: PathBuf,
    state: PathBuf,
}

impl Demo {
    fn new(name: &str, threshold: u8) -> Demo {
        let dir = tmp(name);
        let good = dir.join("good.pack");
        let shells = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/content/suspicious-shells.bwasm");
        ok(&["asm", s(&shells), "-o", s(&good)]);
        let bad_src = dir.join("bad.bwasm");
        std::fs::write(
            &bad_src,
            "rule\n  id \"bad\"\n  title \"crashes the kernel\"\n  author \"demo\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"boom\"\n  ret\nend\n",
        )
        .unwrap();
        ok(&["asm", s(&bad_src), "-o", s(&dir.join("bad.pack"))]);
        let key = dir.join("key");
        ok(&["keygen", "-o", s(&key)]);
        let state = dir.join("state");
        ok(&[
            "guard",
            "init",
            "--state",
            s(&state),
            "--trust",
            s(&dir.join("key.pub")),
            "--threshold",
            &threshold.to_string(),
            "--stable-secs",
            "600",
        ]);
        Demo { dir, state }
    }

    fn sign(&self, pack: &str, version: u64) -> PathBuf {
        let out = self.dir.join(format!("{pack}-v{version}.envelope"));
        ok(&[
            "sign",
            "--key",
            s(&self.dir.join("key")),
            "--channel",
            "1",
            "--version",
            &version.to_string(),
            s(&self.dir.join(format!("{pack}.pack"))),
            "-o",
            s(&out),
        ]);
        out
    }

    fn guard(&self, cmd: &str, extra: &[&str]) -> Run {
        let mut args = vec!["guard", cmd, "--state", s(&self.state)];
        args.extend_from_slice(extra);
        run(&args)
    }

    fn ok(&self, cmd: &str, extra: &[&str]) -> Value {
        let r = self.guard(cmd, extra);
        assert_eq!(r.code, 0, "guard {cmd}: {}", r.stderr);
        r.json
    }
}

fn kinds(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_boot_loop_scenario_runs_from_the_command_line() {
    let d = Demo::new("scenario", 3);
    let good = d.sign("good", 1);
    let bad = d.sign("bad", 2);

    // Good content: staged, tried at the next boot, blessed after the stable period.
    let st = d.ok("stage", &[s(&good)]);
    assert_eq!(st["staged"]["version"], 1);
    let boot = d.ok("boot", &[]);
    assert_eq!(boot["decision"], "candidate");
    assert_eq!(boot["attempt"], 1);
    assert_eq!(boot["load"]["version"], 1);
    assert!(Path::new(boot["load"]["file"].as_str().unwrap()).exists());
    let r = d.ok("run", &["--secs", "599"]);
    assert_eq!(r["blessed"], Value::Null);
    let r = d.ok("run", &["--secs", "1"]);
    assert_eq!(r["blessed"]["version"], 1);
    d.ok("shutdown", &[]);
    let lkg = d.ok("status", &[])["last_known_good"].clone();
    assert_eq!(lkg["version"], 1);

    // Bad content: every boot with it crashes; after N = 3 the guard reverts by itself.
    d.ok("stage", &[s(&bad)]);
    for attempt in 1..=3 {
        let b = d.ok("boot", &[]);
        assert_eq!(b["decision"], "candidate", "{b}");
        assert_eq!(b["attempt"], attempt);
        assert_eq!(b["load"]["version"], 2);
        d.ok("crash", &[]);
    }
    let b = d.ok("boot", &[]);
    assert_eq!(b["decision"], "last-known-good", "{b}");
    assert_eq!(
        b["reason"],
        "the candidate failed the threshold of boots and was quarantined"
    );
    assert_eq!(b["load"]["version"], 1);
    let k = kinds(&b);
    for want in ["crash-counted", "quarantined", "reverted", "boot-lkg"] {
        assert!(k.contains(&want.to_string()), "{want} in {k:?}");
    }
    let status = d.ok("status", &[]);
    assert_eq!(status["last_known_good"], lkg);
    assert_eq!(status["candidate"], Value::Null);
    assert_eq!(status["quarantine"][0]["version"], 2);
    assert_eq!(status["active"], "last-known-good");

    // Delivered again, as it was or re-signed as a newer version: refused, exit 1.
    let bad3 = d.sign("bad", 3);
    for env in [&bad, &bad3] {
        let r = d.guard("stage", &[s(env)]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r.stderr.contains("is quarantined"), "{}", r.stderr);
        assert_eq!(r.json["code"], 121);
    }
    // And the machine keeps booting last-known-good.
    d.ok("shutdown", &[]);
    assert_eq!(d.ok("boot", &[])["decision"], "last-known-good");
}

#[test]
fn one_power_cut_is_counted_but_does_not_quarantine_and_the_service_can_bless() {
    let d = Demo::new("power", 3);
    let good = d.sign("good", 7);
    d.ok("stage", &[s(&good)]);
    assert_eq!(d.ok("boot", &[])["attempt"], 1);
    d.ok("crash", &[]);
    let b = d.ok("boot", &[]);
    assert_eq!(b["attempt"], 2);
    assert!(kinds(&b).contains(&"crash-counted".to_string()));
    // Clean shutdowns do not count.
    d.ok("shutdown", &[]);
    assert_eq!(d.ok("boot", &[])["attempt"], 2);
    let h = d.ok("healthy", &[]);
    assert_eq!(h["blessed"]["version"], 7);
    let r = d.guard("healthy", &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no candidate is running"), "{}", r.stderr);
}

#[test]
fn a_hot_update_that_crashes_counts_at_the_next_boot() {
    let d = Demo::new("hot", 2);
    let bad = d.sign("bad", 1);
    let st = d.ok("stage", &["--hot", s(&bad)]);
    assert_eq!(st["active"], "candidate");
    assert_eq!(st["attempts"], 1);
    d.ok("crash", &[]);
    assert_eq!(d.ok("boot", &[])["attempt"], 2);
    d.ok("crash", &[]);
    let b = d.ok("boot", &[]);
    assert_eq!(b["decision"], "none");
    assert_eq!(b["reason"], "there is no last-known-good content");
    assert_eq!(d.ok("status", &[])["quarantine"][0]["version"], 1);
}

#[test]
fn tampered_foreign_replayed_and_invalid_content_is_refused_with_a_reason() {
    let d = Demo::new("refuse", 3);
    let v5 = d.sign("good", 5);
    d.ok("stage", &[s(&v5)]);

    let mut bytes = std::fs::read(&v5).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    let tampered = d.dir.join("tampered.envelope");
    std::fs::write(&tampered, &bytes).unwrap();
    let r = d.guard("stage", &[s(&tampered)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("bad signature"), "{}", r.stderr);

    let other = d.dir.join("other");
    ok(&["keygen", "-o", s(&other)]);
    let foreign = d.dir.join("foreign.envelope");
    ok(&[
        "sign",
        "--key",
        s(&other),
        "--channel",
        "1",
        "--version",
        "9",
        s(&d.dir.join("good.pack")),
        "-o",
        s(&foreign),
    ]);
    let r = d.guard("stage", &[s(&foreign)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not a trusted key"), "{}", r.stderr);

    let old = d.sign("bad", 4);
    let r = d.guard("stage", &[s(&old)]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("version 4 is not newer than version 5"),
        "{}",
        r.stderr
    );

    let ch2 = d.dir.join("ch2.envelope");
    ok(&[
        "sign",
        "--key",
        s(&d.dir.join("key")),
        "--channel",
        "2",
        "--version",
        "9",
        s(&d.dir.join("good.pack")),
        "-o",
        s(&ch2),
    ]);
    let r = d.guard("stage", &[s(&ch2)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("channel 2"), "{}", r.stderr);

    // Larger than any envelope can be: refused without reading it all.
    let huge = d.dir.join("huge.envelope");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(17 * 1024 * 1024).unwrap();
    let r = d.guard("stage", &[s(&huge)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("more than the limit of"), "{}", r.stderr);

    // Nothing of that changed the candidate; refusals are in the event log.
    let st = d.ok("status", &[]);
    assert_eq!(st["candidate"]["version"], 5);
    assert_eq!(
        kinds(&st).iter().filter(|k| *k == "refused").count(),
        4,
        "{st}"
    );

    // An invalid pack is never signed.
    let mut pack = std::fs::read(d.dir.join("good.pack")).unwrap();
    pack[0] = b'X';
    let badpack = d.dir.join("invalid.pack");
    std::fs::write(&badpack, &pack).unwrap();
    let r = run(&[
        "sign",
        "--key",
        s(&d.dir.join("key")),
        "--channel",
        "1",
        "--version",
        "10",
        s(&badpack),
        "-o",
        s(&d.dir.join("x.envelope")),
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("invalid.pack: rejected: byte offset 0: bad magic"),
        "{}",
        r.stderr
    );
}

#[test]
fn key_files_are_checked() {
    let d = tmp("keys");
    let key = d.join("k");
    ok(&["keygen", "-o", s(&key)]);
    let r = run(&["keygen", "-o", s(&key)]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("exists"), "{}", r.stderr);
    let pack = d.join("p.pack");
    std::fs::write(&pack, b"unused").unwrap();
    let r = run(&[
        "sign",
        "--key",
        s(&key),
        "--channel",
        "1",
        "--version",
        "0",
        s(&pack),
        "-o",
        s(&d.join("x")),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--version must be at least 1"),
        "{}",
        r.stderr
    );
    let text = std::fs::read_to_string(d.join("k.pub")).unwrap();
    assert!(text.starts_with("bulwark-ed25519-public-key "));
    std::fs::write(d.join("bad.pub"), "bulwark-ed25519-public-key 12zz\n").unwrap();
    let r = run(&[
        "guard",
        "init",
        "--state",
        s(&d.join("st")),
        "--trust",
        s(&d.join("bad.pub")),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(
            "bad.pub: line 1: expected 64 hex digits (an ed25519 key), found 4 characters"
        ),
        "{}",
        r.stderr
    );
    // Using the secret key as a public key is caught by its label.
    let r = run(&[
        "guard",
        "init",
        "--state",
        s(&d.join("st")),
        "--trust",
        s(&key),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("expected \"bulwark-ed25519-public-key"),
        "{}",
        r.stderr
    );
    let r = run(&[
        "guard",
        "init",
        "--state",
        s(&d.join("st")),
        "--trust",
        s(&d.join("k.pub")),
        "--threshold",
        "11",
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("threshold 11 is out of range 1..=10"),
        "{}",
        r.stderr
    );
}

type Damage = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// A state directory with a blessed LKG (v1) and a staged candidate (v2), whose records are then
/// damaged in every way: the guard either falls back to the other record or stops with a clear
/// error, never panics, and never loses last-known-good.
#[test]
fn damaged_state_files_fall_back_or_fail_clearly_and_never_lose_lkg() {
    let d = Demo::new("damaged", 3);
    let good = d.sign("good", 1);
    d.ok("stage", &[s(&good)]);
    d.ok("boot", &[]);
    d.ok("healthy", &[]);
    d.ok("shutdown", &[]);
    let bad = d.sign("bad", 2);
    d.ok("stage", &[s(&bad)]);
    let lkg = d.ok("status", &[])["last_known_good"].clone();
    assert_eq!(lkg["version"], 1);
    let a = d.state.join("record-a");
    let b = d.state.join("record-b");
    let orig_a = std::fs::read(&a).unwrap();
    let orig_b = std::fs::read(&b).unwrap();
    let len = orig_a.len();

    let damages: Vec<(&str, Damage)> = vec![
        ("truncated to 0", Box::new(|_| vec![])),
        ("truncated to 1", Box::new(|r| r[..1].to_vec())),
        (
            "truncated by half",
            Box::new(move |r| r[..len / 2].to_vec()),
        ),
        ("last byte cut", Box::new(move |r| r[..len - 1].to_vec())),
        ("one byte longer", Box::new(|r| [r, &[0]].concat())),
        (
            "bit flip in the middle",
            Box::new(|r| {
                let mut v = r.to_vec();
                v[1000] ^= 4;
                v
            }),
        ),
        (
            "bit flip in the CRC",
            Box::new(move |r| {
                let mut v = r.to_vec();
                v[len - 1] ^= 1;
                v
            }),
        ),
        ("garbage", Box::new(move |_| vec![0xA5; len])),
        (
            "torn: new head, old tail",
            Box::new(move |r| {
                let mut v = r.to_vec();
                v[len / 2..].fill(0);
                v
            }),
        ),
    ];
    for (what, damage) in &damages {
        for (target, other) in [(&a, &b), (&b, &a)] {
            std::fs::write(&a, &orig_a).unwrap();
            std::fs::write(&b, &orig_b).unwrap();
            std::fs::write(target, damage(&std::fs::read(target).unwrap())).unwrap();
            let st = d.guard("status", &[]);
            assert_eq!(st.code, 0, "{what} in {}: {}", target.display(), st.stderr);
            assert_eq!(st.json["last_known_good"], lkg, "{what}: LKG lost");
            if *what != "truncated to 0" {
                assert!(st.stderr.contains("not trusted"), "{what}: {}", st.stderr);
            }
            // A boot falls back to the other record and still works.
            let boot = d.guard("boot", &[]);
            assert_eq!(boot.code, 0, "{what}: {}", boot.stderr);
            assert!(
                boot.json["load"]["version"].is_u64(),
                "{what}: {}",
                boot.json
            );
            assert_eq!(d.ok("status", &[])["last_known_good"], lkg);
            d.ok("shutdown", &[]);
            let _ = other;
        }
        // Both slots damaged: a clear error, exit 2, and nothing is written; staging is refused.
        if *what != "truncated to 0" {
            std::fs::write(&a, damage(&orig_a)).unwrap();
            std::fs::write(&b, damage(&orig_b)).unwrap();
            let before = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
            for cmd in ["status", "boot", "shutdown"] {
                let r = d.guard(cmd, &[]);
                assert_eq!(r.code, 2, "{what}: {cmd}");
                assert!(
                    r.stderr
                        .contains("guard records unusable: guard records lost: slot A:"),
                    "{what}: {}",
                    r.stderr
                );
                assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
                assert!(r.stderr.contains("bulwark guard reset"), "{}", r.stderr);
            }
            let r = d.guard("stage", &[s(&good)]);
            assert_eq!(r.code, 1, "{what}: stage: {}", r.stderr);
            assert!(
                r.stderr.contains("refused: guard records lost"),
                "{}",
                r.stderr
            );
            assert_eq!(
                (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap()),
                before
            );
        }
    }
    std::fs::write(&a, &orig_a).unwrap();
    std::fs::write(&b, &orig_b).unwrap();
    assert_eq!(d.ok("status", &[])["last_known_good"], lkg);

    // A damaged configuration names the file and line.
    let conf = d.state.join("guard.conf");
    std::fs::write(&conf, "channel = 1\nthreshold = three\n").unwrap();
    let r = d.guard("status", &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("guard.conf: line 2: \"three\" is not a number"),
        "{}",
        r.stderr
    );
    // Not a state directory at all.
    let r = run(&["guard", "status", "--state", s(&d.dir.join("nowhere"))]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("bulwark guard init"), "{}", r.stderr);
}

/// Damaged stored packs: a damaged candidate is dropped and last-known-good loads; a damaged
/// last-known-good means no content this boot, but the records keep it, and it loads again once
/// its file is good.
#[test]
fn damaged_stored_packs_are_never_loaded_and_lkg_is_kept() {
    let d = Demo::new("blobs", 3);
    let good = d.sign("good", 1);
    d.ok("stage", &[s(&good)]);
    let lkg_file = PathBuf::from(d.ok("boot", &[])["load"]["file"].as_str().unwrap());
    d.ok("healthy", &[]);
    d.ok("shutdown", &[]);
    let bad = d.sign("bad", 2);
    d.ok("stage", &[s(&bad)]);
    let packs = d.state.join("packs");
    let cand_file = std::fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p != &lkg_file)
        .unwrap();
    let mut bytes = std::fs::read(&cand_file).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&cand_file, &bytes).unwrap();
    let b = d.ok("boot", &[]);
    assert_eq!(b["decision"], "last-known-good", "{b}");
    assert_eq!(b["reason"], "the stored candidate could not be loaded");
    assert!(kinds(&b).contains(&"candidate-unusable".to_string()));
    d.ok("shutdown", &[]);

    let orig = std::fs::read(&lkg_file).unwrap();
    let mut flipped = orig.clone();
    let n = flipped.len();
    flipped[n - 10] ^= 0x40;
    std::fs::write(&lkg_file, &flipped).unwrap();
    let b = d.ok("boot", &[]);
    assert_eq!(b["decision"], "none", "{b}");
    assert_eq!(
        b["reason"],
        "the stored last-known-good could not be loaded"
    );
    assert_eq!(b["last_known_good"]["version"], 1, "kept in the records");
    d.ok("shutdown", &[]);
    std::fs::write(&lkg_file, &orig).unwrap();
    let b = d.ok("boot", &[]);
    assert_eq!(b["decision"], "last-known-good", "{b}");
    assert_eq!(b["load"]["version"], 1);
}

fn fix_crc(bytes: &mut [u8]) {
    let n = bytes.len();
    let crc = bulwark_loader_boot_guard::crc32(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// The state files rewritten by someone who can write them: a record whose floor (`newest`) is
/// below the last-known-good version it names is refused even with a valid CRC; one slot damaged
/// and the other missing is reported as both lost (never "using the other slot") and staging is
/// refused until `bulwark guard reset`, which re-creates the records with the floor it is given.
#[test]
fn tampered_and_lost_records_are_refused_until_an_administrator_resets_them() {
    let d = Demo::new("tampered", 3);
    let v1 = d.sign("good", 1);
    let v2 = d.sign("good", 2);
    d.ok("stage", &[s(&v2)]);
    d.ok("boot", &[]);
    d.ok("healthy", &[]);
    d.ok("shutdown", &[]);
    let st = d.ok("status", &[]);
    assert_eq!(st["last_known_good"]["version"], 2);
    // Four records: sequence 3 in slot A, 4 (the newest) in slot B.
    assert_eq!(st["record"]["slot"], "B");
    let rec_b = d.state.join("record-b");
    let rec_a = d.state.join("record-a");
    let orig_b = std::fs::read(&rec_b).unwrap();

    // The floor rewritten to 0 in the newest record: not trusted, named, and the floor of the
    // other record still refuses version 1.
    let mut low = orig_b.clone();
    low[20..28].copy_from_slice(&0u64.to_le_bytes());
    fix_crc(&mut low);
    std::fs::write(&rec_b, &low).unwrap();
    let r = d.guard("stage", &[s(&v1)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "record slot B not trusted (inconsistent record: newest accepted version 0 (byte offset 20) is below last-known-good version 2 (byte offset 40)"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("using slot A (sequence 3)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("is not newer than version 2"),
        "{}",
        r.stderr
    );

    // Slot A (sequence 3) damaged and slot B missing: that used to be a silent fresh start
    // (floor 0, no LKG) "using the other slot". Both are lost, and staging is refused.
    let orig_a = std::fs::read(&rec_a).unwrap();
    let mut damaged_a = orig_a.clone();
    damaged_a[1000] ^= 4;
    std::fs::write(&rec_a, &damaged_a).unwrap();
    std::fs::remove_file(&rec_b).unwrap();
    let r = d.guard("stage", &[s(&v1)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "refused: guard records lost: slot A: record checksum mismatch: stored CRC-32"
        ) && r.stderr.contains("slot B: missing (empty or absent)"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("other slot"), "{}", r.stderr);
    assert!(!rec_b.exists());
    std::fs::write(&rec_b, &orig_b).unwrap();
    std::fs::write(&rec_a, &orig_a).unwrap();
    assert_eq!(d.ok("status", &[])["last_known_good"]["version"], 2);

    // Slot B damaged and slot A missing: both lost, status says so, staging is refused.
    let mut torn = orig_b.clone();
    torn[1000] ^= 4;
    std::fs::write(&rec_b, &torn).unwrap();
    std::fs::remove_file(&rec_a).unwrap();
    let r = d.guard("status", &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("guard records lost: slot A: missing (empty or absent); slot B: record checksum mismatch"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("other slot"), "{}", r.stderr);
    for env in [&v1, &v2] {
        let r = d.guard("stage", &[s(env)]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("refused: guard records lost"),
            "{}",
            r.stderr
        );
        assert_eq!(r.json["code"], 220);
    }
    assert_eq!(std::fs::read(&rec_b).unwrap(), torn, "nothing written");
    assert!(!rec_a.exists());

    // The administrator re-creates the records with floor 1: version 1 stays refused, version 2
    // stages again.
    let r = d.ok("reset", &["--floor", "1"]);
    assert_eq!(r["newest_version"], 1);
    assert_eq!(kinds(&r), ["records-reset"]);
    assert!(
        r["events"][0]["detail_text"]
            .as_str()
            .unwrap()
            .contains("floor 1 (slot A was missing, slot B bad checksum)"),
        "{r}"
    );
    let r = d.guard("stage", &[s(&v1)]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("is not newer than version 1"),
        "{}",
        r.stderr
    );
    let st = d.ok("stage", &[s(&v2)]);
    assert_eq!(st["staged"]["version"], 2);
    let st = d.guard("status", &[]);
    assert_eq!(st.code, 0);
    assert!(!st.stderr.contains("not trusted"), "{}", st.stderr);
    // Usable records: a reset is refused and changes nothing.
    let before = (
        std::fs::read(&rec_b).unwrap(),
        std::fs::read(&rec_a).unwrap(),
    );
    let r = d.guard("reset", &["--floor", "0"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("never lowers the floor"), "{}", r.stderr);
    assert_eq!(
        (
            std::fs::read(&rec_b).unwrap(),
            std::fs::read(&rec_a).unwrap()
        ),
        before
    );

    // The request an administrator sends to the driver.
    let req = d.dir.join("reset.bwreset");
    let r = ok(&[
        "guard",
        "reset-request",
        "--channel",
        "1",
        "--floor",
        "7",
        "-o",
        s(&req),
    ]);
    assert_eq!(r["floor"], 7);
    let bytes = std::fs::read(&req).unwrap();
    assert_eq!(
        bulwark_loader_boot_guard::ResetRequest::parse(&bytes).unwrap(),
        bulwark_loader_boot_guard::ResetRequest {
            channel: 1,
            floor: 7
        }
    );
}
