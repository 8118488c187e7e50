//! Regex DFAs the VM's search cannot use are rejected by the verifier, each with its reason; the
//! ones the compiler builds verify, and the VM's verdict is the DFA's (a plain walk of its
//! transitions).
#![cfg(feature = "build")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use bulwark_interpreter::build::compile_regex;
use bulwark_interpreter::format::RawPack;
use bulwark_interpreter::schema::ProcessCreation;
use bulwark_interpreter::{text, verify, ErrorKind, Event};
use regex_automata::dfa::{dense, sparse, Automaton, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, Input};

/// A pack with the DFA as regex 0 and one rule `regex CommandLine $0`, by the assembler.
fn pack(dfa: &[u8]) -> Vec<u8> {
    let hex: String = dfa.iter().map(|b| format!("{b:02x}")).collect();
    text::asm(&format!(
        "dfa {hex}\nrule\n  id \"dfa-rule\"\n  title \"t\"\n  author \"a\"\n  level high\n  \
         event process_creation\n  regex CommandLine $0\n  ret\nend\n"
    ))
    .unwrap()
}

/// The verifier's reason for rejecting the DFA, checking that the error is at regex 0's offset.
fn rejection(dfa: &[u8]) -> String {
    let p = pack(dfa);
    let at = RawPack::decode(&p).unwrap().offsets.regexes[0];
    let Err(e) = verify(&p) else {
        panic!("the pack must be rejected")
    };
    assert_eq!(e.offset, at, "{e}");
    let msg = e.to_string();
    match e.kind {
        ErrorKind::BadRegex { index: 0, reason } => {
            assert!(msg.contains("regex 0 is not a valid DFA"), "{msg}");
            reason
        }
        k => panic!("expected BadRegex, got {k:?}"),
    }
}

fn assert_rejected(dfa: &[u8], reason: &str) {
    let got = rejection(dfa);
    assert!(got.contains(reason), "{got:?} does not contain {reason:?}");
}

/// Whether the verified pack's rule matches `CommandLine = hay`, with no runtime error.
fn vm_matches(pack: &[u8], hay: &str) -> bool {
    let v = verify(pack).unwrap();
    let pc = ProcessCreation {
        command_line: Some(hay),
        ..Default::default()
    };
    let values = pc.values();
    let stats = v.evaluate(&Event::from_typed((&values).into()), &mut |_| {});
    assert_eq!(stats.errors, 0, "runtime error on {hay:?}");
    stats.matches == 1
}

/// The DFA's own verdict: from the unanchored start state (no look-behind), follow each byte's
/// transition, then the end-of-input transition; a match if any state entered is a match state.
fn naive(dfa: &sparse::DFA<&[u8]>, hay: &[u8]) -> bool {
    let mut s = dfa
        .start_state(&start::Config::new().anchored(Anchored::No))
        .unwrap();
    let mut m = false;
    for &b in hay {
        s = dfa.next_state(s, b);
        m |= dfa.is_match_state(s);
    }
    m | dfa.is_match_state(dfa.next_eoi_state(s))
}

fn sparse_bytes(d: &dense::DFA<Vec<u32>>) -> Vec<u8> {
    d.to_sparse().unwrap().to_bytes_little_endian()
}

fn builder() -> dense::Builder {
    let mut b = dense::Builder::new();
    b.syntax(syntax::Config::new().unicode(false).utf8(false))
        .thompson(thompson::Config::new().utf8(false));
    b
}

fn build(pattern: &str, config: dense::Config) -> Vec<u8> {
    sparse_bytes(&builder().configure(config).build(pattern).unwrap())
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

fn put32(b: &mut [u8], at: usize, v: usize) {
    b[at..at + 4].copy_from_slice(&u32::try_from(v).unwrap().to_le_bytes());
}

/// Where the sparse transition table is in a serialized sparse DFA with one start table stride
/// pair: after a 48-byte header, the state and pattern counts and the 256-byte class map, and its
/// length; after it come the start table (324 bytes), the special state IDs (32) and the quit
/// set (32). Checked against the length field, so a layout change fails loudly here.
fn transitions(b: &[u8]) -> core::ops::Range<usize> {
    let start = 48 + 4 + 4 + 256 + 4;
    let len = le32(b, start - 4);
    assert_eq!(start + len + 324 + 32 + 32, b.len(), "sparse DFA layout");
    start..start + len
}

/// Offset of the special state IDs: max, quit, min/max match, min/max accel, min/max start.
fn special(b: &[u8]) -> usize {
    b.len() - 64
}

/// The search's result, and that it is an error the VM would count as "no match".
fn search(bytes: &[u8], hay: &str) -> Result<bool, String> {
    let (dfa, _) = sparse::DFA::from_bytes(bytes).unwrap();
    dfa.try_search_fwd(&Input::new(hay))
        .map(|m| m.is_some())
        .map_err(|e| e.to_string())
}

#[test]
fn anchored_only_start_kind_is_rejected() {
    let bytes = build("abc", dense::Config::new().start_kind(StartKind::Anchored));
    // It deserializes, and every unanchored search fails.
    assert!(search(&bytes, "xxabc").unwrap_err().contains("anchored"));
    assert_rejected(
        &bytes,
        "start kind is anchored-only; the sensor searches unanchored",
    );
    // Unanchored-only and both are fine.
    for kind in [StartKind::Unanchored, StartKind::Both] {
        let bytes = build("abc", dense::Config::new().start_kind(kind));
        assert!(vm_matches(&pack(&bytes), "xxabc"));
        assert!(!vm_matches(&pack(&bytes), "xxab"));
    }
}

#[test]
fn quit_bytes_are_rejected() {
    let bytes = build("abc", dense::Config::new().quit(b'!', true));
    assert!(search(&bytes, "x!abc").unwrap_err().contains("quit"));
    assert_rejected(&bytes, "quit byte 0x21");
}

#[test]
fn unicode_word_boundary_heuristic_is_rejected() {
    // Unicode `\b` builds only with the heuristic that quits on every non-ASCII byte.
    let bytes = sparse_bytes(
        &dense::Builder::new()
            .syntax(syntax::Config::new().unicode(true).utf8(false))
            .thompson(thompson::Config::new().utf8(false))
            .configure(dense::Config::new().unicode_word_boundary(true))
            .build(r"\bfoo\b")
            .unwrap(),
    );
    assert!(search(&bytes, "é foo").unwrap_err().contains("quit"));
    assert_rejected(&bytes, "quit byte 0x80");
}

#[test]
fn reachable_quit_state_without_a_quit_set_is_rejected() {
    // Transitions to the quit state, but the quit set itself cleared: the start state lookups
    // all succeed and only the transitions betray it.
    let mut bytes = build("abc", dense::Config::new().quit(b'!', true));
    let n = bytes.len();
    bytes[n - 32..].fill(0);
    assert!(search(&bytes, "x!abc").unwrap_err().contains("quit"));
    assert_eq!(search(&bytes, "xabc"), Ok(true));
    assert_rejected(&bytes, "byte 0x21 leads from state");
}

#[test]
fn utf8_mode_with_empty_matches_is_rejected() {
    let bytes = sparse_bytes(
        &dense::Builder::new()
            .thompson(thompson::Config::new().utf8(true))
            .build("a*")
            .unwrap(),
    );
    assert_rejected(&bytes, "UTF-8 mode and can match the empty string");
    // UTF-8 mode without empty matches searches like any other DFA.
    let bytes = sparse_bytes(
        &dense::Builder::new()
            .thompson(thompson::Config::new().utf8(true))
            .build("a+")
            .unwrap(),
    );
    assert!(vm_matches(&pack(&bytes), "xa"));
}

#[test]
fn inconsistent_accelerator_is_rejected() {
    // After "a", the state loops on every byte but 'x': accelerated on 'x'. Point the
    // accelerator at 'y' instead: the search would skip the 'x' that leads to the match.
    let good = build("a[^x]*x", dense::Config::new());
    assert_eq!(search(&good, "abx"), Ok(true));
    let range = transitions(&good);
    let sites: Vec<usize> = (range.start..range.end - 1)
        .filter(|&i| good[i] == 1 && good[i + 1] == b'x')
        .collect();
    let mut rejected = 0;
    for at in sites {
        let mut bad = good.clone();
        bad[at + 1] = b'y';
        let Ok((dfa, _)) = sparse::DFA::from_bytes(&bad) else {
            continue;
        };
        if naive(&dfa, b"abx") && dfa.try_search_fwd(&Input::new("abx")) == Ok(None) {
            assert_rejected(&bad, "is accelerated on [79] but byte 0x78 leaves it");
            rejected += 1;
        }
    }
    assert_eq!(rejected, 1, "the accelerator byte was found");
}

#[test]
fn dead_state_with_a_way_out_is_rejected() {
    // `^abc`: any other first byte leads to the dead state, where the search stops. Make the
    // dead state's end-of-input transition lead to a match state: the DFA then matches "x",
    // the search does not.
    let mut bytes = build("^abc", dense::Config::new());
    let min_match = le32(&bytes, special(&bytes) + 8);
    let dead = transitions(&bytes).start;
    // The dead state: one (EOI) transition, its byte range, then its target.
    assert_eq!(le32(&bytes, dead) & 0xffff, 1);
    assert_eq!(le32(&bytes, dead + 4), 0);
    put32(&mut bytes, dead + 4, min_match);
    let (dfa, _) = sparse::DFA::from_bytes(&bytes).unwrap();
    assert!(naive(&dfa, b"x"));
    assert_eq!(search(&bytes, "x"), Ok(false));
    assert_rejected(&bytes, "the dead state leads to state");
}

#[test]
fn match_state_in_the_start_range_is_rejected() {
    // Declare the match state a start state too: the search ignores its match (matches are
    // seen one byte late, so on the byte after "abc"; at the end of input the search checks
    // for a match state directly).
    let mut bytes = build("abc", dense::Config::new().accelerate(false));
    let sp = special(&bytes);
    let (min_match, max_match) = (le32(&bytes, sp + 8), le32(&bytes, sp + 12));
    assert!(min_match != 0 && min_match == max_match, "one match state");
    put32(&mut bytes, sp + 24, max_match);
    put32(&mut bytes, sp + 28, max_match);
    let (dfa, _) = sparse::DFA::from_bytes(&bytes).unwrap();
    assert!(naive(&dfa, b"abcx"));
    assert_eq!(search(&bytes, "abcx"), Ok(false));
    assert_rejected(&bytes, "is both a start state and a match state");
}

/// Patterns as the Sigma compiler and the assembler write them, through `compile_regex`.
const PATTERNS: &[(&str, bool)] = &[
    ("abc", false),
    ("", false),
    ("a*", false),
    ("^abc$", false),
    ("(?m)^abc$", false),
    (r"\bnet\s+user\b", true),
    (r"\s-e(nc(odedcommand)?)?\s+[a-z0-9+/=]{16,}", true),
    (r"\w+\.exe", false),
    (r"(?i)[\x{e9}\x{c9}]t\x{e9}", false),
    (r"\p{Greek}+", false),
    ("[^a]", false),
    (r"(?s).", false),
    (r"^$", false),
    (r"\B-\B", false),
    (r"[\x00-\xff]", false),
    (r"powershell(\.exe)?\s+-(w|window)\s+h(idden)?", true),
    ("é", true),
];

const HAYSTACKS: &[&str] = &[
    "",
    "abc",
    "xabcx",
    "net user admin",
    "NET  USER",
    "powershell.exe -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBi",
    "cmd.exe /c whoami",
    "Été été ÉTÉ",
    "αβγ",
    "a-b - c",
    "\u{0}\u{7f}\u{ff}",
    "POWERSHELL -W H",
    "x",
];

#[test]
fn compiled_regexes_verify_and_the_vm_gives_the_dfas_verdict() {
    for &(pattern, ci) in PATTERNS {
        let bytes = compile_regex(pattern, ci).unwrap();
        let p = pack(&bytes);
        verify(&p).unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
        let (dfa, _) = sparse::DFA::from_bytes(&bytes).unwrap();
        for &hay in HAYSTACKS {
            let want = naive(&dfa, hay.as_bytes());
            assert_eq!(vm_matches(&p, hay), want, "{pattern:?} on {hay:?}");
            assert_eq!(search(&bytes, hay), Ok(want), "{pattern:?} on {hay:?}");
        }
    }
}

#[test]
fn compiled_regexes_have_their_expected_verdicts() {
    let cases: &[(&str, bool, &str, bool)] = &[
        (r"\bnet\s+user\b", true, "NET  USER x", true),
        (r"\bnet\s+user\b", true, "inet user", false),
        ("^abc$", false, "abc", true),
        ("^abc$", false, "xabc", false),
        ("é", true, "É", false),
        ("é", true, "café", true),
        ("", false, "", true),
    ];
    for &(pattern, ci, hay, want) in cases {
        let p = pack(&compile_regex(pattern, ci).unwrap());
        assert_eq!(vm_matches(&p, hay), want, "{pattern:?} on {hay:?}");
    }
}

#[test]
fn builder_options_the_search_supports_still_verify() {
    let configs = [
        dense::Config::new().specialize_start_states(true),
        dense::Config::new().accelerate(false),
        dense::Config::new().starts_for_each_pattern(true),
        dense::Config::new().byte_classes(false),
        dense::Config::new().minimize(true),
    ];
    for config in configs {
        for pattern in ["abc", r"a[^x]*x", r"\bfoo", "^x", ""] {
            let bytes = build(pattern, config.clone());
            let p = pack(&bytes);
            verify(&p).unwrap_or_else(|e| panic!("{pattern:?} {config:?}: {e}"));
            let (dfa, _) = sparse::DFA::from_bytes(&bytes).unwrap();
            for &hay in HAYSTACKS {
                assert_eq!(
                    vm_matches(&p, hay),
                    naive(&dfa, hay.as_bytes()),
                    "{pattern:?} {config:?} on {hay:?}"
                );
            }
        }
    }
}
