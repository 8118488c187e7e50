//! The text format of ed25519 key files, in one place: `bulwark keygen -o KEY` writes
//! `bulwark-ed25519-secret-key <64 hex digits>` to `KEY` and `bulwark-ed25519-public-key <64 hex
//! digits>` to `KEY.pub`. The driver's trusted-key list (`driver/trusted-keys.txt`) is KEY.pub
//! lines, one per trusted key, with `#` comments and blank lines; the driver's build script parses
//! it with this module (included by path, so it depends on nothing but `core` and `alloc`) and
//! fails the build with the line and column of the first mistake.

use alloc::vec::Vec;
use core::fmt;

/// The label of a public key file's line.
pub const PUBLIC_KEY_LABEL: &str = "bulwark-ed25519-public-key";
/// The label of a secret key file's line.
pub const SECRET_KEY_LABEL: &str = "bulwark-ed25519-secret-key";

/// What is wrong with a key line or list, and where (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    /// The line does not start with the expected label.
    MissingLabel {
        /// 1-based line number.
        line: usize,
        /// The label expected.
        label: &'static str,
    },
    /// The key is not 64 hex digits.
    BadLength {
        /// 1-based line number.
        line: usize,
        /// Characters found after the label.
        found: usize,
    },
    /// A character of the key is not a hex digit.
    BadDigit {
        /// 1-based line number.
        line: usize,
        /// 1-based column of the character.
        column: usize,
        /// The character.
        ch: char,
    },
    /// Something follows the key on its line (other than a comment).
    TrailingText {
        /// 1-based line number.
        line: usize,
        /// 1-based column where it starts.
        column: usize,
    },
    /// A key file holds no key.
    Empty,
    /// More keys than the list may hold.
    TooMany {
        /// Keys found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The same key twice.
    Duplicate {
        /// 1-based line of the repeat.
        line: usize,
        /// 1-based line of the first occurrence.
        first: usize,
    },
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::MissingLabel { line, label } => write!(
                f,
                "line {line}: expected \"{label} <64 hex digits>\" (the line `bulwark keygen` writes)"
            ),
            KeyFileError::BadLength { line, found } => write!(
                f,
                "line {line}: expected 64 hex digits (an ed25519 key), found {found} characters"
            ),
            KeyFileError::BadDigit { line, column, ch } => {
                write!(f, "line {line}, column {column}: {ch:?} is not a hex digit")
            }
            KeyFileError::TrailingText { line, column } => write!(
                f,
                "line {line}, column {column}: unexpected text after the key (comments start with #)"
            ),
            KeyFileError::Empty => f.write_str("line 1: no key in the file"),
            KeyFileError::TooMany { count, max } => {
                write!(f, "{count} keys, at most {max} are allowed")
            }
            KeyFileError::Duplicate { line, first } => {
                write!(f, "line {line}: the same key as line {first}")
            }
        }
    }
}

/// Parses one line (without its comment) as `LABEL <64 hex digits>`; `line` is its 1-based
/// number and `raw` the whole line, for columns.
fn parse_line(
    raw: &str,
    line: usize,
    label: &'static str,
) -> Result<Option<[u8; 32]>, KeyFileError> {
    let content = raw.split('#').next().unwrap_or("");
    let trimmed = content.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let Some(rest) = trimmed.strip_prefix(label) else {
        return Err(KeyFileError::MissingLabel { line, label });
    };
    if !rest.starts_with([' ', '\t']) {
        return Err(KeyFileError::MissingLabel { line, label });
    }
    let rest = rest.trim_start();
    let hex = rest.split_whitespace().next().unwrap_or("");
    // Byte offset of the key in `raw` (both are slices of `raw`).
    let start = (hex.as_ptr() as usize).saturating_sub(raw.as_ptr() as usize);
    let found = hex.chars().count();
    if found != 64 {
        return Err(KeyFileError::BadLength { line, found });
    }
    let after = rest.get(hex.len()..).unwrap_or("");
    if !after.trim().is_empty() {
        let offset = after.len().saturating_sub(after.trim_start().len());
        return Err(KeyFileError::TrailingText {
            line,
            column: start
                .saturating_add(hex.len())
                .saturating_add(offset)
                .saturating_add(1),
        });
    }
    let mut key = [0u8; 32];
    for (j, (byte, pair)) in key
        .iter_mut()
        .zip(hex.as_bytes().chunks_exact(2))
        .enumerate()
    {
        let digit = |k: usize| -> Result<u8, KeyFileError> {
            let c = pair.get(k).copied().unwrap_or(b'?');
            char::from(c)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
                .ok_or(KeyFileError::BadDigit {
                    line,
                    column: start
                        .saturating_add(j.saturating_mul(2))
                        .saturating_add(k)
                        .saturating_add(1),
                    ch: char::from(c),
                })
        };
        *byte = (digit(0)? << 4) | digit(1)?;
    }
    Ok(Some(key))
}

/// Parses a key file (`KEY.pub` or `KEY`): its first key line, `label` first.
pub fn parse_key_file(text: &str, label: &'static str) -> Result<[u8; 32], KeyFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        if let Some(key) = parse_line(raw, i.saturating_add(1), label)? {
            return Ok(key);
        }
    }
    Err(KeyFileError::Empty)
}

/// Parses a list of public keys: KEY.pub lines, `#` comments, blank lines; at most `max` keys, no
/// key twice. An empty list is valid (a driver that admits no content).
pub fn parse_key_list(text: &str, max: usize) -> Result<Vec<[u8; 32]>, KeyFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut keys: Vec<([u8; 32], usize)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i.saturating_add(1);
        let Some(key) = parse_line(raw, line, PUBLIC_KEY_LABEL)? else {
            continue;
        };
        if let Some(&(_, first)) = keys.iter().find(|(k, _)| *k == key) {
            return Err(KeyFileError::Duplicate { line, first });
        }
        keys.push((key, line));
    }
    if keys.len() > max {
        return Err(KeyFileError::TooMany {
            count: keys.len(),
            max,
        });
    }
    Ok(keys.into_iter().map(|(k, _)| k).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::String;

    fn line(hex: &str) -> String {
        format!("{PUBLIC_KEY_LABEL} {hex}\n")
    }

    #[test]
    fn lists_comments_and_errors() {
        let k1 = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";
        let text = format!("# release key\n\n  {}  # 2026\n", line(k1).trim_end());
        let keys = parse_key_list(&text, 8).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0][0], 1);
        assert_eq!(keys[0][31], 0x20);
        assert_eq!(parse_key_list("# none\n", 8).unwrap().len(), 0);
        // A bare hex line (the old format) names the label it wants.
        assert_eq!(
            parse_key_list(&format!("{k1}\n"), 8),
            Err(KeyFileError::MissingLabel {
                line: 1,
                label: PUBLIC_KEY_LABEL
            })
        );
        // A secret key pasted into the list is refused by its label.
        assert!(matches!(
            parse_key_list(&format!("{SECRET_KEY_LABEL} {k1}\n"), 8),
            Err(KeyFileError::MissingLabel { line: 1, .. })
        ));
        assert_eq!(
            parse_key_list(&line("abcd"), 8),
            Err(KeyFileError::BadLength { line: 1, found: 4 })
        );
        let bad = "x".repeat(64);
        let e = parse_key_list(&format!("\n {}", line(&bad)), 8).unwrap_err();
        assert_eq!(
            e,
            KeyFileError::BadDigit {
                line: 2,
                column: 2 + PUBLIC_KEY_LABEL.len() + 1,
                ch: 'x'
            }
        );
        assert!(format!("{e}").starts_with("line 2, column 29:"));
        assert!(matches!(
            parse_key_list(&format!("{} extra\n", line(k1).trim_end()), 8),
            Err(KeyFileError::TrailingText { line: 1, .. })
        ));
        assert_eq!(
            parse_key_list(&format!("{}{}", line(k1), line(k1)), 8),
            Err(KeyFileError::Duplicate { line: 2, first: 1 })
        );
        let many: String = (0..9u8)
            .map(|i| line(&format!("{i:02x}").repeat(32)))
            .collect();
        assert_eq!(
            parse_key_list(&many, 8),
            Err(KeyFileError::TooMany { count: 9, max: 8 })
        );
    }

    #[test]
    fn key_files() {
        let k = "ab".repeat(32);
        assert_eq!(
            parse_key_file(&line(&k), PUBLIC_KEY_LABEL).unwrap(),
            [0xab; 32]
        );
        assert_eq!(
            parse_key_file(&format!("\u{feff}{}", line(&k)), PUBLIC_KEY_LABEL).unwrap(),
            [0xab; 32]
        );
        assert_eq!(
            parse_key_file("", PUBLIC_KEY_LABEL),
            Err(KeyFileError::Empty)
        );
        assert!(matches!(
            parse_key_file(&line(&k), SECRET_KEY_LABEL),
            Err(KeyFileError::MissingLabel { line: 1, .. })
        ));
        // "bulwark-ed25519-public-keyab..." (no space) is not the label.
        assert!(matches!(
            parse_key_file(&format!("{PUBLIC_KEY_LABEL}{k}\n"), PUBLIC_KEY_LABEL),
            Err(KeyFileError::MissingLabel { line: 1, .. })
        ));
    }
}
