//! Little-endian readers and writers over byte slices: every access is checked, nothing panics.

use crate::ProtocolError;

/// Reads little-endian fields from a byte slice, tracking the offset for error messages.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
    /// Added to offsets in errors, so they are relative to the whole buffer.
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`; `base` is the offset of `bytes` in the whole message.
    pub fn new(bytes: &'a [u8], base: usize) -> Self {
        Reader {
            bytes,
            offset: 0,
            base,
        }
    }

    /// The offset of the next byte, counted from the start of the whole message.
    pub fn position(&self) -> usize {
        self.base.saturating_add(self.offset)
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.offset)
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ProtocolError> {
        let end = self.offset.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.offset..end).map(|s| (s, end))) {
            Some((s, end)) => {
                self.offset = end;
                Ok(s)
            }
            None => Err(ProtocolError::Truncated {
                field,
                offset: self.position(),
                need: n,
                have: self.remaining(),
            }),
        }
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtocolError> {
        let s = self.bytes(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// A `u8`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        Ok(u8::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// `n` bytes that must all be zero (reserved space for later versions).
    pub fn reserved(&mut self, n: usize, field: &'static str) -> Result<(), ProtocolError> {
        let at = self.position();
        let s = self.bytes(n, field)?;
        match s.iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(ProtocolError::ReservedNotZero {
                field,
                offset: at.saturating_add(i),
            }),
        }
    }

    /// A boolean stored as one byte, 0 or 1.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        let at = self.position();
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(ProtocolError::BadField {
                field,
                offset: at,
                value: u64::from(v),
                expected: "0 or 1",
            }),
        }
    }

    /// A UTF-8 string stored as a `u16` length and a fixed `cap`-byte area (zero-padded).
    pub fn fixed_str(
        &mut self,
        cap: usize,
        field: &'static str,
    ) -> Result<FixedStr<'a>, ProtocolError> {
        let at = self.position();
        let len = usize::from(self.u16(field)?);
        let area = self.bytes(cap, field)?;
        let Some(text) = area.get(..len) else {
            return Err(ProtocolError::BadField {
                field,
                offset: at,
                value: len as u64,
                expected: "a length within the field's capacity",
            });
        };
        let Ok(text) = core::str::from_utf8(text) else {
            return Err(ProtocolError::BadField {
                field,
                offset: at.saturating_add(2),
                value: len as u64,
                expected: "UTF-8 text",
            });
        };
        if area
            .get(len..)
            .is_some_and(|pad| pad.iter().any(|&b| b != 0))
        {
            return Err(ProtocolError::ReservedNotZero {
                field,
                offset: at.saturating_add(2).saturating_add(len),
            });
        }
        Ok(FixedStr(text))
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self, what: &'static str) -> Result<(), ProtocolError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes {
                what,
                offset: self.position(),
                count: self.remaining(),
            })
        }
    }
}

/// Text read from a fixed-size string field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedStr<'a>(pub &'a str);

/// Writes little-endian fields into a caller-provided buffer; never allocates.
#[derive(Debug)]
pub struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `out`.
    pub fn new(out: &'a mut [u8]) -> Self {
        Writer { out, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `bytes`.
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        let end = self.len.checked_add(bytes.len());
        let capacity = self.out.len();
        match end.and_then(|end| self.out.get_mut(self.len..end).map(|s| (s, end))) {
            Some((s, end)) => {
                s.copy_from_slice(bytes);
                self.len = end;
                Ok(())
            }
            None => Err(ProtocolError::OutputTooSmall {
                need: self.len.saturating_add(bytes.len()),
                have: capacity,
            }),
        }
    }

    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> Result<(), ProtocolError> {
        self.bytes(&[v])
    }

    /// Appends a little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> Result<(), ProtocolError> {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> Result<(), ProtocolError> {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> Result<(), ProtocolError> {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends `n` zero bytes.
    pub fn zeros(&mut self, n: usize) -> Result<(), ProtocolError> {
        for _ in 0..n {
            self.u8(0)?;
        }
        Ok(())
    }

    /// Appends `text` as a fixed string field of `cap` bytes, truncated on a char boundary.
    pub fn fixed_str(&mut self, text: &str, cap: usize) -> Result<(), ProtocolError> {
        let text = truncate_utf8(text, cap.min(usize::from(u16::MAX)));
        let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
        self.u16(len)?;
        self.bytes(text.as_bytes())?;
        self.zeros(cap.saturating_sub(text.len()))
    }

    /// Overwrites 4 bytes at `at` (used to fill in a length once the body is written).
    pub fn patch_u32(&mut self, at: usize, v: u32) -> Result<(), ProtocolError> {
        let capacity = self.out.len();
        match at
            .checked_add(4)
            .filter(|&end| end <= self.len)
            .and_then(|end| self.out.get_mut(at..end))
        {
            Some(s) => {
                s.copy_from_slice(&v.to_le_bytes());
                Ok(())
            }
            None => Err(ProtocolError::OutputTooSmall {
                need: at.saturating_add(4),
                have: capacity,
            }),
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or("")
}
