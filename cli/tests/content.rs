//! `bulwark asm`, `disasm` and `verify` as a release engineer runs them: exit codes and messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bulwark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .output()
        .expect("run bulwark")
}

fn examples(sub: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/content")
        .join(sub);
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bwasm"))
        .collect();
    v.sort();
    v
}

fn assemble(src: &Path, dir: &Path) -> PathBuf {
    let out = dir.join(src.file_stem().unwrap()).with_extension("pack");
    let o = bulwark(&["asm", src.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "asm {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bulwark-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn valid_examples_exit_0_and_invalid_exit_1_with_reason() {
    let dir = tmp("examples");
    for src in examples("") {
        let pack = assemble(&src, &dir);
        let o = bulwark(&["verify", pack.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}: {}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let d = bulwark(&["disasm", pack.to_str().unwrap()]);
        assert_eq!(d.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&d.stdout).contains("\nrule "));
    }
    for src in examples("invalid") {
        let expect = std::fs::read_to_string(&src)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("; expect: ").map(String::from))
            .unwrap();
        let pack = assemble(&src, &dir);
        let o = bulwark(&["verify", pack.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", src.display());
        assert!(
            err.contains("rejected") && err.contains(&expect),
            "{}: {err}",
            src.display()
        );
    }
}

#[test]
fn usage_and_io_errors_exit_2() {
    assert_eq!(
        bulwark(&["verify", "/nonexistent/pack"]).status.code(),
        Some(2)
    );
    assert_eq!(bulwark(&["verify"]).status.code(), Some(2));
    assert_eq!(bulwark(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn asm_reports_syntax_errors_with_line() {
    let dir = tmp("asm-err");
    let src = dir.join("bad.bwasm");
    std::fs::write(
        &src,
        "rule\n  event process_creation\n  str.contains NoSuchField \"x\"\n  ret\nend\n",
    )
    .unwrap();
    let o = bulwark(&[
        "asm",
        src.to_str().unwrap(),
        "-o",
        dir.join("x.pack").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 3") && err.contains("process_creation has no field NoSuchField"),
        "{err}"
    );
}

/// Random corruption of valid packs (bit flips, truncation, splicing) never makes `verify` exit
/// with anything but 0 or 1. A small deterministic generator keeps the test reproducible.
#[test]
fn corrupted_packs_exit_0_or_1() {
    let dir = tmp("corrupt");
    let packs: Vec<Vec<u8>> = examples("")
        .iter()
        .map(|s| std::fs::read(assemble(s, &dir)).unwrap())
        .collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    let target = dir.join("mutant.pack");
    for i in 0..150 {
        let base = &packs[i % packs.len()];
        let mut m = base.clone();
        match i % 3 {
            0 => {
                for _ in 0..1 + rnd(4) {
                    let at = rnd(m.len());
                    m[at] ^= 1 << rnd(8);
                }
            }
            1 => m.truncate(rnd(m.len())),
            _ => {
                let other = &packs[rnd(packs.len())];
                let from = rnd(other.len());
                let at = rnd(m.len());
                m.splice(at..at, other[from..].iter().copied());
            }
        }
        std::fs::write(&target, &m).unwrap();
        let o = bulwark(&["verify", target.to_str().unwrap()]);
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "mutant {i}: {:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
