//! String predicates: comparisons with optional ASCII case folding and wildcard patterns. All are
//! total functions over any input and run in time bounded by the product of the lengths.

use alloc::vec::Vec;

use crate::insn::{Case, StrOp};

fn eq_bytes(a: &[u8], b: &[u8], case: Case) -> bool {
    match case {
        Case::Insensitive => a.eq_ignore_ascii_case(b),
        Case::Sensitive => a == b,
    }
}

/// Compares `value` with the constant `needle`.
pub fn compare(value: &str, op: StrOp, needle: &str, case: Case) -> bool {
    let (v, n) = (value.as_bytes(), needle.as_bytes());
    match op {
        StrOp::Eq => eq_bytes(v, n, case),
        StrOp::StartsWith => v.get(..n.len()).is_some_and(|p| eq_bytes(p, n, case)),
        StrOp::EndsWith => v
            .len()
            .checked_sub(n.len())
            .and_then(|s| v.get(s..))
            .is_some_and(|p| eq_bytes(p, n, case)),
        StrOp::Contains => contains(v, n, case),
    }
}

fn contains(hay: &[u8], needle: &[u8], case: Case) -> bool {
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
    let first = fold(first);
    let last_start = hay.len().saturating_sub(needle.len());
    let mut i = 0usize;
    while i <= last_start {
        if hay.get(i).is_some_and(|b| fold(*b) == first)
            && hay
                .get(i..i.saturating_add(needle.len()))
                .is_some_and(|w| eq_bytes(w, needle, case))
        {
            return true;
        }
        i = i.saturating_add(1);
    }
    false
}

/// A token of a parsed wildcard pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobTok {
    /// A literal character.
    Lit(char),
    /// `?`: any one character.
    One,
    /// `*`: any run of characters, including none.
    Any,
}

/// Parses a wildcard pattern: `*` any run, `?` one character, `\*` `\?` `\\` literals, and a
/// backslash before any other character (or at the end) is itself literal, as in Sigma. `None` if
/// the pattern is not UTF-8.
pub fn parse_glob(pattern: &[u8]) -> Option<Vec<GlobTok>> {
    let mut out = Vec::new();
    parse_glob_into(pattern, &mut out).then_some(out)
}

/// [`parse_glob`], appending the tokens to `out` (which may hold other patterns' tokens); on
/// failure `out` may hold some of this pattern's tokens, and the caller drops them.
pub(crate) fn parse_glob_into(pattern: &[u8], out: &mut Vec<GlobTok>) -> bool {
    let Ok(s) = core::str::from_utf8(pattern) else {
        return false;
    };
    let start = out.len();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if out.len() == start || out.last() != Some(&GlobTok::Any) {
                    out.push(GlobTok::Any);
                }
            }
            '?' => out.push(GlobTok::One),
            '\\' => match chars.peek() {
                Some(&n @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push(GlobTok::Lit(n));
                }
                _ => out.push(GlobTok::Lit('\\')),
            },
            c => out.push(GlobTok::Lit(c)),
        }
    }
    true
}

fn char_eq(a: char, b: char, case: Case) -> bool {
    match case {
        Case::Insensitive => a.eq_ignore_ascii_case(&b),
        Case::Sensitive => a == b,
    }
}

/// Matches `value` against a parsed wildcard pattern (whole value), with the classic linear
/// backtracking over the last `*`: O(len(value) x len(pattern)) at worst, never exponential.
pub fn glob_match(value: &str, pat: &[GlobTok], case: Case) -> bool {
    let mut vi = 0usize; // byte index into value
    let mut pi = 0usize; // token index
    let mut star: Option<(usize, usize)> = None; // (token after star, value index to retry)
    loop {
        let cur = value.get(vi..).and_then(|s| s.chars().next());
        match (pat.get(pi), cur) {
            (Some(GlobTok::Any), _) => {
                star = Some((pi.saturating_add(1), vi));
                pi = pi.saturating_add(1);
                continue;
            }
            (Some(GlobTok::One), Some(c)) => {
                pi = pi.saturating_add(1);
                vi = vi.saturating_add(c.len_utf8());
                continue;
            }
            (Some(GlobTok::Lit(l)), Some(c)) if char_eq(*l, c, case) => {
                pi = pi.saturating_add(1);
                vi = vi.saturating_add(c.len_utf8());
                continue;
            }
            (None, None) => return true,
            _ => {}
        }
        // Mismatch: retry from the last star one character further on.
        match star {
            Some((after, retry)) => {
                let Some(c) = value.get(retry..).and_then(|s| s.chars().next()) else {
                    return false;
                };
                let next = retry.saturating_add(c.len_utf8());
                star = Some((after, next));
                pi = after;
                vi = next;
            }
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str, v: &str) -> bool {
        glob_match(
            v,
            &parse_glob(p.as_bytes()).unwrap_or_default(),
            Case::Insensitive,
        )
    }

    #[test]
    fn comparisons_fold_ascii_case_only() {
        assert!(compare(
            "C:\\Windows\\CMD.exe",
            StrOp::EndsWith,
            "\\cmd.EXE",
            Case::Insensitive
        ));
        assert!(!compare(
            "C:\\Windows\\CMD.exe",
            StrOp::EndsWith,
            "\\cmd.EXE",
            Case::Sensitive
        ));
        assert!(compare("abc", StrOp::Contains, "", Case::Insensitive));
        assert!(!compare("ab", StrOp::Contains, "abc", Case::Insensitive));
        assert!(compare(
            "xxABCyy",
            StrOp::Contains,
            "abc",
            Case::Insensitive
        ));
        assert!(compare("ÄBC", StrOp::Eq, "ÄbC", Case::Insensitive));
        assert!(!compare("äbc", StrOp::Eq, "Äbc", Case::Insensitive));
        assert!(compare("abc", StrOp::StartsWith, "AB", Case::Insensitive));
        assert!(!compare("a", StrOp::StartsWith, "ab", Case::Insensitive));
    }

    #[test]
    fn a_pattern_appended_after_another_keeps_its_leading_star() {
        let mut out = parse_glob(b"a*").unwrap();
        assert!(parse_glob_into(b"*b", &mut out));
        assert_eq!(out[2..], parse_glob(b"*b").unwrap()[..]);
    }

    #[test]
    fn globs() {
        assert!(g("*\\cmd.exe", "C:\\Windows\\System32\\cmd.exe"));
        // Sigma: `\*` is a literal backslash then a wildcard; `\*` alone escapes the star.
        assert!(g("c:\\\\*\\cmd.exe", "C:\\a\\b\\cmd.exe"));
        assert!(!g("c:\\\\*\\cmd.exe", "C:\\cmd.exe"));
        assert!(g("c:\\*\\cmd.exe", "C:*\\cmd.exe"));
        assert!(g("a?c", "abc"));
        assert!(g("a?c", "aéc"));
        assert!(!g("a?c", "ac"));
        assert!(g("a\\*c", "a*c"));
        assert!(!g("a\\*c", "abc"));
        assert!(g("*", ""));
        assert!(g("**a**", "bab"));
        assert!(!g("", "a"));
        assert!(g("a\\b", "a\\b"));
        let mut long = "a".repeat(30);
        assert!(!g("*a*a*a*a*b", &long));
        long.push('b');
        assert!(g("*a*a*a*a*b", &long));
    }
}
