//! NT conventions the Windows layer needs, as plain computations tested on any OS: the sizes of a
//! counted UTF-16 string (`UNICODE_STRING`), the directories to create for the content directory
//! (parent by parent, below the volume it lives on), and what an open failure means (the volume is
//! not mounted yet, so try again later; or anything else, which retrying will not fix).

/// The most UTF-16 units a `UNICODE_STRING` built by the driver holds: `MaximumLength` (a `u16`
/// count of bytes) must fit the string and its terminating NUL, so 32,766 units (65,532 bytes, 65,534
/// with the NUL).
pub const MAX_COUNTED_UNITS: usize = (u16::MAX as usize - 2) / 2;

/// `Length` and `MaximumLength` (bytes) of a NUL-terminated counted string of `units` UTF-16 units,
/// or `None` when it does not fit (more than [`MAX_COUNTED_UNITS`]).
pub fn counted_string_sizes(units: usize) -> Option<(u16, u16)> {
    if units > MAX_COUNTED_UNITS {
        return None;
    }
    let length = u16::try_from(units.checked_mul(2)?).ok()?;
    let maximum = length.checked_add(2)?;
    Some((length, maximum))
}

/// The object-manager prefix of an NT path that names a volume's root, and the rest: `\SystemRoot`
/// (a link to the Windows directory), `\??\C:`, `\DosDevices\C:`, `\GLOBAL??\C:`, or
/// `\Device\<name>`. `None` for anything else (a relative path, or a path the driver would not know
/// how to wait for).
pub fn split_volume(path: &str) -> Option<(&str, &str)> {
    let after = |prefix_len: usize| -> Option<(&str, &str)> {
        let (root, rest) = path.split_at_checked(prefix_len)?;
        (rest.is_empty() || rest.starts_with('\\')).then_some((root, rest))
    };
    let lower = |p: &str| {
        path.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    };
    if lower("\\SystemRoot") {
        return after("\\SystemRoot".len());
    }
    for link in ["\\??\\", "\\DosDevices\\", "\\GLOBAL??\\"] {
        if lower(link) {
            // A drive letter and a colon.
            let drive = path.get(link.len()..link.len().checked_add(2)?)?;
            let mut chars = drive.chars();
            let letter = chars.next()?;
            if letter.is_ascii_alphabetic() && chars.next() == Some(':') {
                return after(link.len().checked_add(2)?);
            }
            return None;
        }
    }
    if lower("\\Device\\") {
        let name_end = path
            .get("\\Device\\".len()..)?
            .find('\\')
            .map_or(path.len(), |i| i.saturating_add("\\Device\\".len()));
        if name_end == "\\Device\\".len() {
            return None;
        }
        return after(name_end);
    }
    None
}

/// The directories to open-or-create, in order, so that `path` exists: every prefix of `path`
/// below its volume (see [`split_volume`]), ending with `path` itself. Empty components (`\\`) and
/// `.`/`..` make the path unusable (`None`): the driver creates directories only where it was told.
pub fn directories_to_create(path: &str) -> Option<impl Iterator<Item = &str> + '_> {
    let (root, rest) = split_volume(path)?;
    let rest = rest.strip_suffix('\\').unwrap_or(rest);
    if rest.is_empty() {
        return None;
    }
    let components = rest.get(1..)?;
    if components
        .split('\\')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    let ends = rest
        .match_indices('\\')
        .map(|(i, _)| i)
        .skip(1)
        .chain(core::iter::once(rest.len()));
    Some(ends.filter_map(move |end| path.get(..root.len().checked_add(end)?)))
}

/// The path to open to learn whether the volume under `path` is mounted: its root directory
/// (`\??\C:\`, `\Device\HarddiskVolume3\`, or `\SystemRoot` itself, the Windows directory).
pub fn volume_probe(path: &str) -> Option<(&str, bool)> {
    let (root, _) = split_volume(path)?;
    // Drive letters and devices name the volume object; their root directory needs the trailing
    // backslash. `\SystemRoot` already names a directory.
    let needs_slash = !root.eq_ignore_ascii_case("\\SystemRoot");
    Some((root, needs_slash))
}

/// What an `NTSTATUS` from opening a directory says about retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// The volume, or the link to it, is not there yet (a boot-start driver runs before the file
    /// systems mount): try again at the next reinitialization.
    NotMounted,
    /// A parent directory does not exist on a mounted volume: create the parents.
    ParentMissing,
    /// Anything else (access denied, a file where a directory should be, a full disk, a bad name):
    /// retrying will not help; report it.
    Permanent,
}

/// `STATUS_OBJECT_NAME_NOT_FOUND`.
pub const STATUS_OBJECT_NAME_NOT_FOUND: u32 = 0xC000_0034;
/// `STATUS_OBJECT_PATH_NOT_FOUND`.
pub const STATUS_OBJECT_PATH_NOT_FOUND: u32 = 0xC000_003A;
/// `STATUS_NO_SUCH_DEVICE`.
pub const STATUS_NO_SUCH_DEVICE: u32 = 0xC000_000E;
/// `STATUS_NO_MEDIA_IN_DEVICE`.
pub const STATUS_NO_MEDIA_IN_DEVICE: u32 = 0xC000_0013;
/// `STATUS_DEVICE_NOT_READY`.
pub const STATUS_DEVICE_NOT_READY: u32 = 0xC000_00A3;
/// `STATUS_UNRECOGNIZED_VOLUME`.
pub const STATUS_UNRECOGNIZED_VOLUME: u32 = 0xC000_014F;
/// `STATUS_VOLUME_DISMOUNTED`.
pub const STATUS_VOLUME_DISMOUNTED: u32 = 0xC000_026E;

impl OpenFailure {
    /// Classifies a failed open of the volume's root (`probe` true, see [`volume_probe`]) or of a
    /// directory on it (`probe` false). A missing object at the root means no volume yet; below a
    /// root that opened, it means a missing parent.
    pub fn classify(status: u32, probe: bool) -> OpenFailure {
        match status {
            STATUS_NO_SUCH_DEVICE
            | STATUS_NO_MEDIA_IN_DEVICE
            | STATUS_DEVICE_NOT_READY
            | STATUS_UNRECOGNIZED_VOLUME
            | STATUS_VOLUME_DISMOUNTED => OpenFailure::NotMounted,
            STATUS_OBJECT_NAME_NOT_FOUND | STATUS_OBJECT_PATH_NOT_FOUND if probe => {
                OpenFailure::NotMounted
            }
            STATUS_OBJECT_PATH_NOT_FOUND => OpenFailure::ParentMissing,
            _ => OpenFailure::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn counted_strings_fit_u16() {
        assert_eq!(counted_string_sizes(0), Some((0, 2)));
        assert_eq!(counted_string_sizes(10), Some((20, 22)));
        assert_eq!(MAX_COUNTED_UNITS, 32_766);
        assert_eq!(counted_string_sizes(32_766), Some((65_532, 65_534)));
        // 32,767 units: 65,534 bytes + 2 would be 65,536, which a u16 cannot hold.
        assert_eq!(counted_string_sizes(32_767), None);
        assert_eq!(counted_string_sizes(usize::MAX), None);
    }

    fn dirs(p: &str) -> Option<Vec<&str>> {
        directories_to_create(p).map(Iterator::collect)
    }

    #[test]
    fn parents_below_the_volume() {
        assert_eq!(
            dirs("\\SystemRoot\\Bulwark\\Content"),
            Some(alloc::vec![
                "\\SystemRoot\\Bulwark",
                "\\SystemRoot\\Bulwark\\Content"
            ])
        );
        assert_eq!(
            dirs("\\??\\C:\\Bulwark\\Content\\"),
            Some(alloc::vec![
                "\\??\\C:\\Bulwark",
                "\\??\\C:\\Bulwark\\Content"
            ])
        );
        assert_eq!(
            dirs("\\Device\\HarddiskVolume3\\ProgramData\\Bulwark"),
            Some(alloc::vec![
                "\\Device\\HarddiskVolume3\\ProgramData",
                "\\Device\\HarddiskVolume3\\ProgramData\\Bulwark"
            ])
        );
        assert_eq!(
            dirs("\\systemroot\\B"),
            Some(alloc::vec!["\\systemroot\\B"])
        );
        // No directory to create, or a path the driver will not create.
        assert_eq!(dirs("\\SystemRoot"), None);
        assert_eq!(dirs("\\??\\C:\\"), None);
        assert_eq!(dirs("\\SystemRoot\\a\\\\b"), None);
        assert_eq!(dirs("\\SystemRoot\\a\\..\\b"), None);
        assert_eq!(dirs("C:\\Bulwark"), None);
        assert_eq!(dirs("\\??\\CC:\\x"), None);
        assert_eq!(dirs("\\SystemRootX\\x"), None);
        assert_eq!(dirs("\\Device\\\\x"), None);
    }

    #[test]
    fn probes_and_failures() {
        assert_eq!(
            volume_probe("\\SystemRoot\\Bulwark\\Content"),
            Some(("\\SystemRoot", false))
        );
        assert_eq!(volume_probe("\\??\\C:\\Bulwark"), Some(("\\??\\C:", true)));
        assert_eq!(
            OpenFailure::classify(STATUS_OBJECT_PATH_NOT_FOUND, true),
            OpenFailure::NotMounted
        );
        assert_eq!(
            OpenFailure::classify(STATUS_OBJECT_PATH_NOT_FOUND, false),
            OpenFailure::ParentMissing
        );
        assert_eq!(
            OpenFailure::classify(STATUS_DEVICE_NOT_READY, false),
            OpenFailure::NotMounted
        );
        // STATUS_ACCESS_DENIED, STATUS_OBJECT_NAME_COLLISION (a file in the way), STATUS_DISK_FULL.
        for s in [0xC000_0022, 0xC000_0035, 0xC000_007F] {
            assert_eq!(OpenFailure::classify(s, false), OpenFailure::Permanent);
            assert_eq!(OpenFailure::classify(s, true), OpenFailure::Permanent);
        }
    }
}
