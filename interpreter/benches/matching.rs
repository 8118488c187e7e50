//! String predicates, old (naive substring search, backtracking glob) against new (linear, metered),
//! on typical Sigma-like inputs and on hostile ones. `cargo bench -p bulwark-interpreter --bench
//! matching`. Prints the median of several interleaved rounds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bulwark_interpreter::matching::{
    compare_bound, compare_metered, glob_bound, glob_match_metered, parse_glob, GlobTok,
};
use bulwark_interpreter::{Case, StrOp};

// ---- The previous implementations, for comparison. ----

fn old_contains(hay: &[u8], needle: &[u8], case: Case) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    if needle.len() > hay.len() {
        return false;
    }
    let fold = |b: u8| match case {
        Case::Insensitive => b.to_ascii_lowercase(),
        Case::Sensitive => b,
    };
    let eq = |a: &[u8], b: &[u8]| match case {
        Case::Insensitive => a.eq_ignore_ascii_case(b),
        Case::Sensitive => a == b,
    };
    let first = fold(first);
    let last_start = hay.len() - needle.len();
    let mut i = 0usize;
    while i <= last_start {
        if fold(hay[i]) == first && eq(&hay[i..i + needle.len()], needle) {
            return true;
        }
        i += 1;
    }
    false
}

fn old_glob(value: &str, pat: &[GlobTok], case: Case) -> bool {
    let char_eq = |a: char, b: char| match case {
        Case::Insensitive => a.eq_ignore_ascii_case(&b),
        Case::Sensitive => a == b,
    };
    let mut vi = 0usize;
    let mut pi = 0usize;
    let mut star: Option<(usize, usize)> = None;
    loop {
        let cur = value.get(vi..).and_then(|s| s.chars().next());
        match (pat.get(pi), cur) {
            (Some(GlobTok::Any), _) => {
                star = Some((pi + 1, vi));
                pi += 1;
                continue;
            }
            (Some(GlobTok::One), Some(c)) => {
                pi += 1;
                vi += c.len_utf8();
                continue;
            }
            (Some(GlobTok::Lit(l)), Some(c)) if char_eq(*l, c) => {
                pi += 1;
                vi += c.len_utf8();
                continue;
            }
            (None, None) => return true,
            _ => {}
        }
        match star {
            Some((after, retry)) => {
                let Some(c) = value.get(retry..).and_then(|s| s.chars().next()) else {
                    return false;
                };
                let next = retry + c.len_utf8();
                star = Some((after, next));
                pi = after;
                vi = next;
            }
            None => return false,
        }
    }
}

// ---- Inputs. ----

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const EXES: &[&str] = &[
    "C:\\Windows\\System32\\cmd.exe",
    "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
    "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
    "C:\\Windows\\System32\\svchost.exe",
    "C:\\Users\\alice\\AppData\\Local\\Temp\\setup_x64.exe",
    "C:\\Windows\\System32\\rundll32.exe",
    "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
    "C:\\Windows\\System32\\conhost.exe",
];
const ARGS: &[&str] = &[
    "/c echo hello",
    "-NoProfile -ExecutionPolicy Bypass -File C:\\scripts\\backup.ps1",
    "--type=renderer --field-trial-handle=1844,i,1520813407283390837,1013424871 --lang=en-US",
    "-k netsvcs -p -s Schedule",
    "/S /D=C:\\Program Files\\Vendor",
    "C:\\Windows\\System32\\shell32.dll,Control_RunDLL desk.cpl",
    "0xffffffff -ForceV1",
    "--single-argument https://example.com/path/to/page?query=1&x=2",
    "-Command \"Get-ChildItem -Path C:\\Users -Recurse | Out-File C:\\temp\\list.txt\"",
];
const NEEDLES: &[&str] = &[
    " -enc ",
    "\\cmd.exe",
    "powershell",
    "invoke-webrequest",
    "downloadstring(",
    "/c start",
    "-nop",
    "bypass",
    "\\appdata\\local\\temp\\",
    "rundll32",
    "javascript:",
    "frombase64string",
    "net user",
    " /add",
    "certutil",
    "-urlcache",
    "mshta",
    "vssadmin delete shadows",
    "wmic shadowcopy delete",
    "reg add hklm\\software\\microsoft\\windows\\currentversion\\run",
    "-windowstyle hidden",
    "iex(",
    ".dll,",
    "sekurlsa::logonpasswords",
];
const GLOBS: &[&str] = &[
    "*\\cmd.exe",
    "*\\powershell.exe",
    "*powershell*-enc*",
    "c:\\windows\\*\\svchost.exe",
    "*\\appdata\\*\\*.exe",
    "* -nop *",
    "*rundll32*,*",
    "*\\users\\*\\appdata\\local\\temp\\*",
    "*.dll,?*",
    "*vssadmin*delete*shadows*",
];

fn values(rng: &mut Rng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let mut v = String::from(rng.pick(EXES));
            let extra = (rng.next() % 4) as usize;
            for _ in 0..=extra {
                v.push(' ');
                v.push_str(rng.pick(ARGS));
            }
            v
        })
        .collect()
}

fn time(mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let t = Instant::now();
    let r = f();
    (t.elapsed(), r)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// Runs `old` and `new` in alternation `rounds` times; prints the medians per call.
fn race(
    name: &str,
    calls: usize,
    rounds: usize,
    mut old: impl FnMut() -> usize,
    mut new: impl FnMut() -> usize,
) {
    let (mut to, mut tn) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (a, ra) = time(&mut old);
        let (b, rb) = time(&mut new);
        assert_eq!(ra, rb, "{name}: old and new disagree");
        to.push(a);
        tn.push(b);
    }
    let (o, n) = (median(to), median(tn));
    let per = |d: Duration| d.as_nanos() as f64 / calls as f64;
    println!(
        "{name:<44} old {:>12.1} ns/call   new {:>12.1} ns/call   new/old {:.2}",
        per(o),
        per(n),
        per(n) / per(o)
    );
}

fn main() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let vals = values(&mut rng, 400);
    let avg = vals.iter().map(String::len).sum::<usize>() / vals.len();
    println!(
        "typical: {} values (average {avg} bytes), {} needles, {} globs",
        vals.len(),
        NEEDLES.len(),
        GLOBS.len()
    );
    let globs: Vec<Vec<GlobTok>> = GLOBS
        .iter()
        .map(|g| parse_glob(g.as_bytes()).unwrap())
        .collect();

    for case in [Case::Insensitive, Case::Sensitive] {
        let calls = vals.len() * NEEDLES.len();
        race(
            &format!("contains, typical, {case:?}"),
            calls,
            31,
            || {
                let mut hits = 0;
                for v in &vals {
                    for n in NEEDLES {
                        hits += usize::from(old_contains(
                            black_box(v.as_bytes()),
                            black_box(n.as_bytes()),
                            case,
                        ));
                    }
                }
                hits
            },
            || {
                let mut hits = 0;
                let mut work = 0u64;
                for v in &vals {
                    for n in NEEDLES {
                        hits += usize::from(compare_metered(
                            black_box(v),
                            StrOp::Contains,
                            black_box(n),
                            case,
                            &mut work,
                        ));
                    }
                }
                black_box(work);
                hits
            },
        );
    }
    let calls = vals.len() * NEEDLES.len();
    race(
        "endswith, typical, Insensitive",
        calls,
        31,
        || {
            let mut hits = 0;
            for v in &vals {
                for n in NEEDLES {
                    let (v, n) = (black_box(v.as_bytes()), black_box(n.as_bytes()));
                    hits += usize::from(
                        v.len() >= n.len() && v[v.len() - n.len()..].eq_ignore_ascii_case(n),
                    );
                }
            }
            hits
        },
        || {
            let mut hits = 0;
            let mut work = 0u64;
            for v in &vals {
                for n in NEEDLES {
                    hits += usize::from(compare_metered(
                        black_box(v),
                        StrOp::EndsWith,
                        black_box(n),
                        Case::Insensitive,
                        &mut work,
                    ));
                }
            }
            black_box(work);
            hits
        },
    );
    let calls = vals.len() * GLOBS.len();
    race(
        "glob, typical, Insensitive",
        calls,
        31,
        || {
            let mut hits = 0;
            for v in &vals {
                for g in &globs {
                    hits += usize::from(old_glob(black_box(v), black_box(g), Case::Insensitive));
                }
            }
            hits
        },
        || {
            let mut hits = 0;
            let mut work = 0u64;
            for v in &vals {
                for g in &globs {
                    hits += usize::from(glob_match_metered(
                        black_box(v),
                        black_box(g),
                        Case::Insensitive,
                        &mut work,
                    ));
                }
            }
            black_box(work);
            hits
        },
    );

    // Hostile inputs: 16 KiB of `a`, needle a^8191 b; glob `*` a^8192 b.
    let text = "a".repeat(16 * 1024);
    let needle = "a".repeat(8 * 1024 - 1) + "b";
    race(
        "contains, a^16384 / a^8191 b, Insensitive",
        1,
        5,
        || {
            usize::from(old_contains(
                black_box(text.as_bytes()),
                black_box(needle.as_bytes()),
                Case::Insensitive,
            ))
        },
        || {
            usize::from(compare_metered(
                black_box(&text),
                StrOp::Contains,
                black_box(&needle),
                Case::Insensitive,
                &mut 0,
            ))
        },
    );
    let needle40 = "a".repeat(39) + "b";
    race(
        "contains, a^16384 / a^39 b, Insensitive",
        1,
        11,
        || {
            usize::from(old_contains(
                black_box(text.as_bytes()),
                black_box(needle40.as_bytes()),
                Case::Insensitive,
            ))
        },
        || {
            usize::from(compare_metered(
                black_box(&text),
                StrOp::Contains,
                black_box(&needle40),
                Case::Insensitive,
                &mut 0,
            ))
        },
    );
    let hostile_glob = parse_glob(format!("*{}b", "a".repeat(8 * 1024)).as_bytes()).unwrap();
    race(
        "glob, a^16384 / *a^8192 b, Insensitive",
        1,
        3,
        || {
            usize::from(old_glob(
                black_box(&text),
                black_box(&hostile_glob),
                Case::Insensitive,
            ))
        },
        || {
            usize::from(glob_match_metered(
                black_box(&text),
                black_box(&hostile_glob),
                Case::Insensitive,
                &mut 0,
            ))
        },
    );
    let mid_glob = parse_glob(format!("*{}b*", "a".repeat(8 * 1024)).as_bytes()).unwrap();
    race(
        "glob, a^16384 / *a^8192 b*, Insensitive",
        1,
        3,
        || {
            usize::from(old_glob(
                black_box(&text),
                black_box(&mid_glob),
                Case::Insensitive,
            ))
        },
        || {
            usize::from(glob_match_metered(
                black_box(&text),
                black_box(&mid_glob),
                Case::Insensitive,
                &mut 0,
            ))
        },
    );

    // Work measured against the bounds.
    let mut w = 0u64;
    compare_metered(&text, StrOp::Contains, &needle, Case::Insensitive, &mut w);
    println!(
        "units: contains a^16384 / a^8191 b: {w} (bound {})",
        compare_bound(StrOp::Contains, text.len(), needle.len())
    );
    for (name, g) in [("*a^8192 b", &hostile_glob), ("*a^8192 b*", &mid_glob)] {
        let mut w = 0u64;
        glob_match_metered(&text, g, Case::Insensitive, &mut w);
        println!(
            "units: glob a^16384 / {name}: {w} (bound {})",
            glob_bound(g, text.len())
        );
    }
    let (mut w, mut b) = (0u64, 0u64);
    for v in &vals {
        for n in NEEDLES {
            compare_metered(v, StrOp::Contains, n, Case::Insensitive, &mut w);
            b += compare_bound(StrOp::Contains, v.len(), n.len());
        }
    }
    println!("units: contains, typical, total {w} (sum of bounds {b})");
}
