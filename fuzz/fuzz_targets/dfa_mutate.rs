//! DFA mutation: a valid regex DFA, compiled at startup by the project's `compile_regex` (the
//! input's first byte picks which), has bytes of its serialization overwritten as the input says.
//! If the result still deserializes (`sparse::DFA::from_bytes`, all bytes used), it goes into a
//! pack as regex 0 of a rule `regex CommandLine $0; ret`. The verifier either rejects it as a bad
//! regex (and for no other reason) or accepts it, and then for every haystack in the rest of the
//! input the VM must give the DFA's own verdict with no runtime error: the verdict of a naive
//! walk written here (the unanchored start state with no look-behind, each byte's transition,
//! then the end-of-input transition; a match if any state entered is a match state), which uses
//! none of the search's shortcuts (dead state, accelerators, special-state ranges). Besides the
//! input's haystacks, haystacks guided by the DFA cover every transition from every reachable
//! state (see `guided`).
//!
//! Input: pattern selector, mutation count (mod 9), that many mutations (kind, u16 LE position,
//! value: even kinds write the byte, odd ones the value-th reachable state's ID as a u32, kinds 3
//! mod 4 where the DFA held a state ID), then
//! haystacks separated by NUL (lossily UTF-8: event fields are text).
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bulwark_interpreter::build::{compile_regex, Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::format::RawPack;
use bulwark_interpreter::schema::ProcessCreation;
use bulwark_interpreter::{verify, Action, ErrorKind, Event, EventType, Level};
use regex_automata::dfa::{sparse, Automaton};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, Input};

const PATTERNS: &[(&str, bool)] = &[
    ("abc", false),
    ("a[^x]*x", false),
    ("^abc$", false),
    (r"\bnet\s+user\b", true),
    ("(a|b)*c+", false),
    ("", false),
    ("[0-9]{2,4}-x", false),
    ("é+", true),
    (r"(?m)^\w+$", false),
    (r"\s-e(nc)?\s+[a-z0-9]{4,}", true),
];

struct Setup {
    dfas: Vec<Vec<u8>>,
    /// For each DFA, the IDs of its states reachable from the unanchored start state (a
    /// mutation can write one of them anywhere: a transition or special-range field that names
    /// a real state gets past `from_bytes` far more often than a random byte).
    states: Vec<Vec<u32>>,
    /// For each DFA, the offsets where its serialization holds one of those IDs (transitions,
    /// start table, special ranges, and some coincidences): where writing another ID matters.
    slots: Vec<Vec<usize>>,
    /// A one-rule pack whose rule is `regex CommandLine $0; ret` with no prefilter anchors.
    template: PackBuilder,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dfas: Vec<Vec<u8>> = PATTERNS
            .iter()
            .map(|&(p, ci)| compile_regex(p, ci).expect("the patterns compile"))
            .collect();
        let states: Vec<Vec<u32>> = dfas
            .iter()
            .map(|bytes| {
                let (dfa, _) = sparse::DFA::from_bytes(bytes).expect("compiled DFAs deserialize");
                guided(&dfa).1.iter().map(|s| s.as_u32()).collect()
            })
            .collect();
        let slots = dfas
            .iter()
            .zip(&states)
            .map(|(bytes, ids)| {
                (0..bytes.len().saturating_sub(3))
                    .filter(|&i| {
                        ids.contains(&u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()))
                    })
                    .collect()
            })
            .collect();
        let mut template = PackBuilder::new();
        template
            .rule(RuleSpec {
                event_type: EventType::ProcessCreation,
                id: "dfa".into(),
                title: "t".into(),
                author: "a".into(),
                level: Level::High,
                action: Action::Alert,
                tags: vec![],
                expr: Expr::Pred(Pred::Regex {
                    field: EventType::ProcessCreation
                        .field_by_name("CommandLine")
                        .expect("CommandLine exists")
                        .index,
                    // Matches the empty string: no anchors, the rule runs on every event.
                    pattern: "(?s:.)*".into(),
                    case_insensitive: false,
                }),
            })
            .expect("the template rule builds");
        let raw = RawPack::decode(&template.clone().finish()).expect("the template decodes");
        assert_eq!(raw.regexes.len(), 1);
        assert!(
            raw.rules[0].anchors.is_empty(),
            "the template rule has no anchors"
        );
        Setup {
            dfas,
            states,
            slots,
            template,
        }
    })
}

fn naive(dfa: &sparse::DFA<&[u8]>, hay: &[u8]) -> bool {
    let mut s = dfa
        .start_state(&start::Config::new().anchored(Anchored::No))
        .expect("the verifier accepted an unsearchable start configuration");
    let mut m = false;
    for &b in hay {
        s = dfa.next_state(s, b);
        m |= dfa.is_match_state(s);
    }
    m | dfa.is_match_state(dfa.next_eoi_state(s))
}

/// Haystacks that exercise every transition the naive walk can take (up to `MAX_GUIDED_STATES`
/// states): for each state reachable from the start state, the shortest way there, then each
/// byte class's representative, then the shortest way from there to a match (entering a match
/// state, or a state whose end-of-input transition is one). Any shortcut the search takes
/// wrongly (skipping a byte that leaves an accelerated state, stopping at a dead state that has
/// a way out, ignoring a match state) shows on one of them. Also returns the states visited and
/// their end-of-input targets.
fn guided(dfa: &sparse::DFA<&[u8]>) -> (Vec<Vec<u8>>, Vec<StateID>) {
    const MAX_GUIDED_STATES: usize = 64;
    let Ok(s0) = dfa.start_state(&start::Config::new().anchored(Anchored::No)) else {
        return (vec![], vec![]);
    };
    let reps: Vec<u8> = dfa
        .byte_classes()
        .representatives(0..=255)
        .filter_map(|u| u.as_u8())
        .collect();
    // Forward BFS: the shortest path to each state, and every edge.
    let mut path: BTreeMap<StateID, Vec<u8>> = BTreeMap::from([(s0, vec![])]);
    let mut order = vec![s0];
    let mut edges: Vec<(StateID, u8, StateID)> = vec![];
    let mut i = 0;
    while i < order.len() && order.len() <= MAX_GUIDED_STATES {
        let s = order[i];
        i += 1;
        for &b in &reps {
            let t = dfa.next_state(s, b);
            edges.push((s, b, t));
            if !path.contains_key(&t) {
                let mut w = path[&s].clone();
                w.push(b);
                path.insert(t, w);
                order.push(t);
            }
        }
    }
    // Backward BFS from the states that are a match already: the shortest completion.
    let good = |s: StateID| dfa.is_match_state(s) || dfa.is_match_state(dfa.next_eoi_state(s));
    let mut next: BTreeMap<StateID, Option<(u8, StateID)>> = order
        .iter()
        .filter(|&&s| good(s))
        .map(|&s| (s, None))
        .collect();
    loop {
        let before = next.len();
        for &(s, b, t) in &edges {
            if !next.contains_key(&s) && next.contains_key(&t) {
                next.insert(s, Some((b, t)));
            }
        }
        if next.len() == before {
            break;
        }
    }
    let completion = |mut s: StateID| {
        let mut w = vec![];
        while let Some(Some((b, t))) = next.get(&s) {
            w.push(*b);
            s = *t;
            if w.len() > MAX_GUIDED_STATES {
                break;
            }
        }
        w
    };
    let haystacks = edges
        .iter()
        .map(|&(s, b, t)| {
            let mut w = path[&s].clone();
            w.push(b);
            w.extend(completion(t));
            w
        })
        .collect();
    // The states for mutations: also those only an end-of-input transition enters.
    let mut states = order.clone();
    for s in &order {
        let t = dfa.next_eoi_state(*s);
        if !states.contains(&t) {
            states.push(t);
        }
    }
    (haystacks, states)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let setup = setup();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Some((&count, mut rest)) = rest.split_first() else {
        return;
    };
    let which = usize::from(pick) % setup.dfas.len();
    let mut bytes = setup.dfas[which].clone();
    let (states, slots) = (&setup.states[which], &setup.slots[which]);
    for _ in 0..count % 9 {
        let Some(([kind, lo, hi, v], r)) = rest.split_first_chunk::<4>() else {
            break;
        };
        rest = r;
        let pos = usize::from(u16::from_le_bytes([*lo, *hi]));
        let at = match kind % 4 {
            3 => slots[pos % slots.len()],
            _ => pos % bytes.len(),
        };
        if kind % 2 == 0 {
            bytes[at] = *v;
        } else if let Some(slot) = bytes.get_mut(at..at + 4) {
            slot.copy_from_slice(&states[usize::from(*v) % states.len()].to_le_bytes());
        }
    }
    let Ok((dfa, used)) = sparse::DFA::from_bytes(&bytes) else {
        return;
    };
    if used != bytes.len() {
        return;
    }

    let mut b = setup.template.clone();
    b.raw_mut().regexes[0] = bytes.clone();
    let pack = match verify(&b.finish()) {
        Ok(pack) => pack,
        Err(e) => {
            assert!(
                matches!(e.kind, ErrorKind::BadRegex { index: 0, .. }),
                "{e}"
            );
            return;
        }
    };

    // The search on any bytes; the VM on text (event fields are strings).
    // (The VM's regex instruction is this search; the VM also runs a few of the guided
    // haystacks that are text, a different few each time, which keeps the target fast.)
    let (guided, _) = guided(&dfa);
    for hay in &guided {
        let got = dfa.try_search_fwd(&Input::new(hay));
        assert_eq!(
            got.map(|m| m.is_some()),
            Ok(naive(&dfa, hay)),
            "search on {hay:?}"
        );
    }
    let text = String::from_utf8_lossy(rest);
    let start = usize::from(count) * 7 % guided.len().max(1);
    let texts = text.split('\u{0}').chain(
        guided
            .iter()
            .cycle()
            .skip(start)
            .take(guided.len().min(8))
            .filter_map(|h| std::str::from_utf8(h).ok()),
    );
    for hay in texts {
        let want = naive(&dfa, hay.as_bytes());
        let got = dfa.try_search_fwd(&Input::new(hay));
        assert_eq!(got.map(|m| m.is_some()), Ok(want), "search on {hay:?}");
        let pc = ProcessCreation {
            command_line: Some(hay),
            ..Default::default()
        };
        let values = pc.values();
        let stats = pack.evaluate(&Event::from_typed((&values).into()), &mut |_| {});
        assert_eq!(
            stats.errors, 0,
            "a verified regex faulted at run time on {hay:?}"
        );
        assert_eq!(stats.matches == 1, want, "VM verdict on {hay:?}");
    }
});
