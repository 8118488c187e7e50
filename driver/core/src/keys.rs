//! The trusted-key list compiled into the driver (`driver/trusted-keys.txt`): one ed25519 public
//! key per line as 64 hex digits, `#` comments and blank lines ignored. Release engineering owns
//! the file; a driver built with an empty list admits no content at all.

use alloc::vec::Vec;

use bulwark_loader_boot_guard::envelope::MAX_TRUSTED_KEYS;

/// What is wrong with the key list, and on which line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyListError {
    /// A line is not 64 hex digits.
    #[error("trusted-keys line {line}: expected 64 hex digits (an ed25519 public key), found {found} characters")]
    BadLength {
        /// 1-based line number.
        line: usize,
        /// Characters found.
        found: usize,
    },
    /// A character is not a hex digit.
    #[error("trusted-keys line {line}, column {column}: {ch:?} is not a hex digit")]
    BadDigit {
        /// 1-based line number.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The character.
        ch: char,
    },
    /// Too many keys.
    #[error("trusted-keys: {count} keys, at most {max} are allowed")]
    TooMany {
        /// Keys found.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Parses the key list.
pub fn parse_key_list(text: &str) -> Result<Vec<[u8; 32]>, KeyListError> {
    let mut keys = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i.saturating_add(1);
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let hex = content.split_whitespace().next().unwrap_or("");
        if hex.len() != 64 {
            return Err(KeyListError::BadLength {
                line,
                found: hex.chars().count(),
            });
        }
        let mut key = [0u8; 32];
        let start = raw.find(hex).unwrap_or(0);
        for (j, (byte, pair)) in key
            .iter_mut()
            .zip(hex.as_bytes().chunks_exact(2))
            .enumerate()
        {
            let digit = |k: usize| -> Result<u8, KeyListError> {
                let c = pair.get(k).copied().unwrap_or(b'?');
                char::from(c)
                    .to_digit(16)
                    .map(|d| d as u8)
                    .ok_or(KeyListError::BadDigit {
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
        keys.push(key);
    }
    if keys.len() > MAX_TRUSTED_KEYS {
        return Err(KeyListError::TooMany {
            count: keys.len(),
            max: MAX_TRUSTED_KEYS,
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_comments_and_errors() {
        let text = "# release key\n\n  0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20  # 2026\n";
        let keys = parse_key_list(text).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0][0], 1);
        assert_eq!(keys[0][31], 0x20);
        assert_eq!(parse_key_list("# none\n").unwrap().len(), 0);
        assert_eq!(
            parse_key_list("abcd\n"),
            Err(KeyListError::BadLength { line: 1, found: 4 })
        );
        let bad = "x".repeat(64);
        assert_eq!(
            parse_key_list(&alloc::format!("\n {bad}")),
            Err(KeyListError::BadDigit {
                line: 2,
                column: 2,
                ch: 'x'
            })
        );
        let many = "00".repeat(32) + "\n";
        assert!(matches!(
            parse_key_list(&many.repeat(9)),
            Err(KeyListError::TooMany { count: 9, .. })
        ));
    }
}
