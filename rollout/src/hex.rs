//! Serde helper: fixed-size byte arrays (hashes, endpoint ids) as lowercase hex strings, so the
//! signed state reads as text and has one spelling per value.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// Lowercase hex of `bytes`.
#[must_use]
pub fn encode(bytes: &[u8]) -> String {
    let digit = |n: u8| char::from(if n < 10 { b'0' + n } else { b'a' + (n - 10) });
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        s.push(digit(b >> 4));
        s.push(digit(b & 0x0f));
    }
    s
}

/// Parses exactly `N` bytes of hex (either case).
pub fn decode<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let raw = s.as_bytes();
    if raw.len() != N.saturating_mul(2) {
        return Err(format!(
            "expected {} hex digits, found {}",
            N.saturating_mul(2),
            raw.len()
        ));
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
        let digit = |c: u8| -> Result<u8, String> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(format!("not a hex digit: {:?}", char::from(c))),
            }
        };
        let (hi, lo) = match pair {
            [hi, lo] => (digit(*hi)?, digit(*lo)?),
            _ => return Err("odd number of hex digits".to_owned()),
        };
        *byte = (hi << 4) | lo;
    }
    Ok(out)
}

/// `#[serde(with = "crate::hex")]` serializer.
pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&encode(bytes))
}

/// `#[serde(with = "crate::hex")]` deserializer.
pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    let s = String::deserialize(d)?;
    decode(&s).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = [0x00, 0x0f, 0xa5, 0xff];
        assert_eq!(encode(&bytes), "000fa5ff");
        assert_eq!(decode::<4>("000FA5ff"), Ok(bytes));
        assert!(decode::<4>("000fa5f").is_err());
        assert!(decode::<4>("000fa5fg").is_err());
    }
}
