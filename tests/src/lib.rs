//! Cross-crate tests live in `tests/tests/`; this library is empty on purpose (a package needs a target).
