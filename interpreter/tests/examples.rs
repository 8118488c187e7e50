//! Every example under examples/content assembles; the valid ones verify, and each invalid one is
//! rejected with the message its `; expect:` line names.
#![cfg(feature = "build")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::path::{Path, PathBuf};

use bulwark_interpreter::{text, verify};

fn examples(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bwasm"))
        .collect();
    v.sort();
    v
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/content")
}

#[test]
fn valid_examples_verify() {
    let files = examples(&root());
    assert!(!files.is_empty());
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        let pack = text::asm(&src).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let v = verify(&pack).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(v.rule_count() > 0);
        // The disassembly assembles again to a pack that verifies and has the same rules.
        let again = text::asm(&text::disasm(&pack).unwrap()).unwrap();
        assert_eq!(
            verify(&again).unwrap().rule_count(),
            v.rule_count(),
            "{}",
            f.display()
        );
    }
}

#[test]
fn invalid_examples_are_rejected_with_their_reason() {
    let files = examples(&root().join("invalid"));
    assert!(files.len() >= 20, "one invalid example per rejection class");
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        let expect = src
            .lines()
            .find_map(|l| l.strip_prefix("; expect: "))
            .unwrap_or_else(|| panic!("{} has no `; expect:` line", f.display()));
        let pack = text::asm(&src).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        match verify(&pack) {
            Ok(_) => panic!("{} verified, it must be rejected", f.display()),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(expect),
                    "{}: {msg:?} does not contain {expect:?}",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn channel_291_error_names_rule_instruction_field_and_offset() {
    let src = std::fs::read_to_string(root().join("invalid/channel-291.bwasm")).unwrap();
    let err = verify(&text::asm(&src).unwrap()).unwrap_err();
    assert_eq!(err.rule, Some((0, Some("test-rule".into()))));
    assert_eq!(err.insn, Some(0));
    assert!(err.offset > 0);
    let msg = err.to_string();
    assert!(
        msg.starts_with("rule 0 (test-rule), instruction 0, byte offset "),
        "{msg}"
    );
}

/// A string keyed by a window other than the one the compiler chooses still finds every
/// occurrence; the disassembly keeps the window, and assembles to the same bytes.
#[test]
fn any_key_window_inside_the_string_works() {
    use bulwark_interpreter::{Event, EventType, FieldValue};
    let src = r#"
keywindow "powershell" 7
rule
  id "test-rule"
  title "test"
  author "Bulwark tests"
  level high
  event process_creation
  anchor CommandLine "powershell"
  str.contains CommandLine "powershell"
  ret
end
"#;
    let pack = text::asm(src).unwrap();
    let v = verify(&pack).unwrap();
    let dis = text::disasm(&pack).unwrap();
    assert!(dis.contains("keywindow \"powershell\" 7"), "{dis}");
    assert_eq!(text::asm(&dis).unwrap(), pack);
    let t = EventType::ProcessCreation;
    let field = t
        .fields()
        .iter()
        .position(|f| f.name == "CommandLine")
        .unwrap();
    for (cmd, want) in [
        ("C:\\x\\PowerShell.exe -enc", 1),
        ("powershel", 0),
        ("xpowershell", 1),
    ] {
        let mut values = vec![FieldValue::Absent; usize::from(t.field_count())];
        values[field] = FieldValue::Str(cmd);
        let ev = Event::new(t, &values).unwrap();
        assert_eq!(v.evaluate(&ev, &mut |_| {}).matches, want, "{cmd}");
    }
}
