//! Fallible text building for the event path.
//!
//! Every `String` a callback builds grows only through these functions, which reserve with
//! `try_reserve` before they write, so running out of pool is an error ([`NoMemory`]) that drops the
//! event (counted), never `handle_alloc_error`, which in the kernel is a bugcheck. The plain
//! `String` methods called after a reservation (`push`, `push_str`, `replace_range`, `truncate`)
//! then stay within the capacity and do not allocate. `tests/tests/event_alloc_failure.rs` fails
//! every allocation of an event's path in turn and checks the event is dropped and counted, with
//! no panic and no abort.

use alloc::string::String;
use core::fmt;

/// An allocation for an event failed: the event is dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoMemory;

impl fmt::Display for NoMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("out of memory")
    }
}

/// Makes room for `additional` more bytes in `s`.
pub fn reserve(s: &mut String, additional: usize) -> Result<(), NoMemory> {
    s.try_reserve(additional).map_err(|_| NoMemory)
}

/// Appends `c`.
pub fn push(s: &mut String, c: char) -> Result<(), NoMemory> {
    reserve(s, c.len_utf8())?;
    s.push(c);
    Ok(())
}

/// Appends `t`.
pub fn push_str(s: &mut String, t: &str) -> Result<(), NoMemory> {
    reserve(s, t.len())?;
    s.push_str(t);
    Ok(())
}

/// Replaces `s`'s first `end` bytes with `new` (nothing happens unless `end` is a char boundary).
pub fn replace_front(s: &mut String, end: usize, new: &str) -> Result<(), NoMemory> {
    if !s.is_char_boundary(end) {
        return Ok(());
    }
    reserve(s, new.len().saturating_sub(end))?;
    s.replace_range(..end, new);
    Ok(())
}

/// Appends formatted text: `write(s, format_args!(...))`.
pub fn write(s: &mut String, args: fmt::Arguments<'_>) -> Result<(), NoMemory> {
    struct Fallible<'a>(&'a mut String);
    impl fmt::Write for Fallible<'_> {
        fn write_str(&mut self, t: &str) -> fmt::Result {
            push_str(self.0, t).map_err(|_| fmt::Error)
        }
    }
    // The only error a `Display` of integers and strings can give here is the writer's own.
    fmt::write(&mut Fallible(s), args).map_err(|_| NoMemory)
}

/// A new empty string with room for `capacity` bytes.
pub fn with_capacity(capacity: usize) -> Result<String, NoMemory> {
    let mut s = String::new();
    reserve(&mut s, capacity)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_text() {
        let mut s = with_capacity(4).unwrap();
        push_str(&mut s, "\\??\\c:\\x").unwrap();
        replace_front(&mut s, 4, "").unwrap();
        push(&mut s, 'é').unwrap();
        write(&mut s, format_args!("-{:x}", 255)).unwrap();
        assert_eq!(s, "c:\\xé-ff");
        replace_front(&mut s, 2, "\\\\server").unwrap();
        assert_eq!(s, "\\\\server\\xé-ff");
        // Not a char boundary (inside 'é'): left alone.
        let before = s.clone();
        let inside = s.find('é').unwrap() + 1;
        replace_front(&mut s, inside, "").unwrap();
        assert_eq!(s, before);
    }

    #[test]
    fn an_impossible_reservation_is_an_error_not_an_abort() {
        let mut s = String::from("x");
        assert_eq!(reserve(&mut s, usize::MAX), Err(NoMemory));
        assert_eq!(s, "x");
    }
}
