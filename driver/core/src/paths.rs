//! Kernel paths to the `C:\...` form Sysmon reports and Sigma rules are written against.
//!
//! The kernel names files by NT path: `\Device\HarddiskVolume3\Windows\System32\cmd.exe` from image
//! notifications, `\??\C:\Windows\...` from process parameters, `\SystemRoot\System32\...` for boot
//! drivers, `\Device\Mup\server\share\...` for network files. The Windows layer reads the volume
//! device names behind the drive letters once at start (and when volumes arrive) into a
//! [`VolumeMap`]; [`to_dos_path`] does the rest, in plain Rust.

use crate::text::{self, NoMemory};
use alloc::string::String;

/// The most drive letters, and so volume mappings, there can be.
pub const MAX_VOLUMES: usize = 26;
/// The longest volume device name kept (`\Device\HarddiskVolume123` and the like).
pub const MAX_DEVICE_NAME: usize = 96;

/// Maps volume device names (`\Device\HarddiskVolume3`) to drive letters, with a fixed capacity.
#[derive(Debug, Clone)]
pub struct VolumeMap {
    entries: [Option<(u8, [u8; MAX_DEVICE_NAME], u8)>; MAX_VOLUMES],
    system_root: [u8; 64],
    system_root_len: u8,
}

/// Why a mapping was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VolumeMapError {
    /// Not a drive letter A–Z.
    #[error("drive letter {0:?} is not A-Z")]
    BadLetter(char),
    /// The device name is empty, too long, or does not start with `\Device\`.
    #[error("volume device name is empty, longer than 96 bytes, or not under \\Device\\")]
    BadDeviceName,
    /// The system root is not a `C:\...` path of at most 64 bytes.
    #[error("system root must be a drive path such as C:\\Windows, at most 64 bytes")]
    BadSystemRoot,
}

impl Default for VolumeMap {
    fn default() -> Self {
        let mut map = VolumeMap {
            entries: [None; MAX_VOLUMES],
            system_root: [0; 64],
            system_root_len: 0,
        };
        // Windows' own default; the Windows layer replaces it with the real value at start.
        let _ = map.set_system_root("C:\\Windows");
        map
    }
}

impl VolumeMap {
    /// Maps `device` (for example `\Device\HarddiskVolume3`) to drive `letter`, replacing any
    /// earlier mapping of that letter.
    pub fn insert(&mut self, letter: char, device: &str) -> Result<(), VolumeMapError> {
        let upper = letter.to_ascii_uppercase();
        if !upper.is_ascii_uppercase() {
            return Err(VolumeMapError::BadLetter(letter));
        }
        let device = device.trim_end_matches('\\');
        if device.len() <= "\\Device\\".len()
            || device.len() > MAX_DEVICE_NAME
            || !starts_with_ignore_case(device, "\\Device\\")
        {
            return Err(VolumeMapError::BadDeviceName);
        }
        let mut name = [0u8; MAX_DEVICE_NAME];
        if let Some(dst) = name.get_mut(..device.len()) {
            dst.copy_from_slice(device.as_bytes());
        }
        let slot = usize::from((upper as u8).saturating_sub(b'A'));
        if let Some(e) = self.entries.get_mut(slot) {
            *e = Some((upper as u8, name, device.len() as u8));
        }
        Ok(())
    }

    /// Sets the directory `\SystemRoot` stands for (for example `C:\Windows`).
    pub fn set_system_root(&mut self, dos_path: &str) -> Result<(), VolumeMapError> {
        let bytes = dos_path.trim_end_matches('\\').as_bytes();
        let ok = bytes.len() >= 3
            && bytes.len() <= self.system_root.len()
            && bytes.first().is_some_and(u8::is_ascii_alphabetic)
            && bytes.get(1..3) == Some(b":\\");
        if !ok {
            return Err(VolumeMapError::BadSystemRoot);
        }
        self.system_root = [0; 64];
        if let Some(dst) = self.system_root.get_mut(..bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.system_root_len = bytes.len() as u8;
        Ok(())
    }

    /// The directory `\SystemRoot` stands for (`C:\Windows` unless set).
    pub fn system_root(&self) -> &str {
        self.system_root
            .get(..usize::from(self.system_root_len))
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("C:\\Windows")
    }

    /// The drive letter whose volume device is a prefix of `path` at a component boundary, and
    /// the length of that prefix.
    fn lookup(&self, path: &str) -> Option<(char, usize)> {
        self.entries
            .iter()
            .flatten()
            .find_map(|(letter, name, len)| {
                let name = core::str::from_utf8(name.get(..usize::from(*len))?).ok()?;
                let rest = strip_prefix_ignore_case(path, name)?;
                (rest.is_empty() || rest.starts_with('\\'))
                    .then_some((char::from(*letter), name.len()))
            })
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    strip_prefix_ignore_case(s, prefix).is_some()
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Decodes UTF-16 from the kernel (`UNICODE_STRING` contents) into `out`, replacing unpaired
/// surrogates with U+FFFD. At most `max_bytes` of UTF-8 are written, cut on a char boundary.
/// Room is reserved once, for the most the decoded text can take (3 bytes a unit).
pub fn utf16_to_string(units: &[u16], max_bytes: usize, out: &mut String) -> Result<(), NoMemory> {
    out.clear();
    text::reserve(out, units.len().saturating_mul(3).min(max_bytes))?;
    for c in char::decode_utf16(units.iter().copied()) {
        let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
        if out.len().saturating_add(c.len_utf8()) > max_bytes {
            break;
        }
        text::push(out, c)?;
    }
    Ok(())
}

/// Rewrites the NT path in `path` in place into the `C:\...` form. Paths it cannot map (an
/// unknown device) are left as they are, which is what Sysmon does too.
pub fn to_dos_path(path: &mut String, volumes: &VolumeMap) -> Result<(), NoMemory> {
    let p = path.as_str();
    // Win32 and NT forms of a drive path: \??\C:\x, \DosDevices\C:\x, \GLOBAL??\C:\x, \\?\C:\x.
    for prefix in [
        "\\??\\",
        "\\DosDevices\\",
        "\\GLOBAL??\\",
        "\\\\?\\",
        "\\\\.\\",
    ] {
        if let Some(rest) = strip_prefix_ignore_case(p, prefix) {
            if let Some(unc) = strip_prefix_ignore_case(rest, "UNC\\") {
                let unc = unc.len();
                return replace_prefix(path, unc, "\\\\");
            }
            if is_drive_path(rest) {
                let keep = rest.len();
                replace_prefix(path, keep, "")?;
                uppercase_drive(path);
                return Ok(());
            }
        }
    }
    if let Some(rest) = strip_prefix_ignore_case(p, "\\SystemRoot") {
        if rest.is_empty() || rest.starts_with('\\') {
            let keep = rest.len();
            let root = volumes.system_root();
            let mut buf = [0u8; 64];
            let root_len = root.len().min(buf.len());
            if let (Some(dst), Some(src)) =
                (buf.get_mut(..root_len), root.as_bytes().get(..root_len))
            {
                dst.copy_from_slice(src);
            }
            let root = core::str::from_utf8(buf.get(..root_len).unwrap_or(&[])).unwrap_or("");
            return replace_prefix(path, keep, root);
        }
    }
    for prefix in ["\\Device\\Mup\\", "\\Device\\LanmanRedirector\\"] {
        if let Some(rest) = strip_prefix_ignore_case(p, prefix) {
            // \Device\Mup\;LanmanRedirector\;Z:0000000000012345\server\share is also seen; strip the
            // provider-specific ";..." components.
            let mut rest = rest;
            while let Some(r) = rest.strip_prefix(';') {
                rest = r.split_once('\\').map_or("", |(_, tail)| tail);
            }
            let keep = rest.len();
            return replace_prefix(path, keep, "\\\\");
        }
    }
    if let Some((letter, prefix_len)) = volumes.lookup(p) {
        let keep = p.len().saturating_sub(prefix_len);
        let mut drive = [0u8; 2];
        drive[0] = letter as u8;
        drive[1] = b':';
        let drive = core::str::from_utf8(&drive).unwrap_or("");
        replace_prefix(path, keep, drive)?;
        if path.len() == 2 {
            text::push(path, '\\')?;
        }
    }
    Ok(())
}

fn is_drive_path(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphabetic)
        && b.get(1) == Some(&b':')
        && (b.len() == 2 || b.get(2) == Some(&b'\\'))
}

fn uppercase_drive(path: &mut str) {
    if let Some(first) = path.get_mut(..1) {
        first.make_ascii_uppercase();
    }
}

/// Replaces everything before the last `keep` bytes of `path` with `new_prefix`.
fn replace_prefix(path: &mut String, keep: usize, new_prefix: &str) -> Result<(), NoMemory> {
    let cut = path.len().saturating_sub(keep);
    text::replace_front(path, cut, new_prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn volumes() -> VolumeMap {
        let mut v = VolumeMap::default();
        v.insert('C', "\\Device\\HarddiskVolume3").unwrap();
        v.insert('d', "\\Device\\HarddiskVolume12\\").unwrap();
        v.insert('E', "\\Device\\CdRom0").unwrap();
        v
    }

    fn dos(p: &str) -> String {
        let mut s = p.to_string();
        to_dos_path(&mut s, &volumes()).unwrap();
        s
    }

    #[test]
    fn real_world_samples() {
        let cases = [
            // image-load notifications (FullImageName)
            (
                "\\Device\\HarddiskVolume3\\Windows\\System32\\ntdll.dll",
                "C:\\Windows\\System32\\ntdll.dll",
            ),
            (
                "\\Device\\HarddiskVolume3\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
                "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
            ),
            // HarddiskVolume3 must not match HarddiskVolume31, nor 12 match 1
            (
                "\\Device\\HarddiskVolume31\\x.exe",
                "\\Device\\HarddiskVolume31\\x.exe",
            ),
            ("\\Device\\HarddiskVolume12\\tools\\a.exe", "D:\\tools\\a.exe"),
            ("\\device\\harddiskvolume3\\Temp\\A.EXE", "C:\\Temp\\A.EXE"),
            ("\\Device\\CdRom0\\setup.exe", "E:\\setup.exe"),
            ("\\Device\\HarddiskVolume3", "C:\\"),
            // process parameters (ImagePathName) and command-line paths
            ("\\??\\C:\\Windows\\system32\\conhost.exe", "C:\\Windows\\system32\\conhost.exe"),
            ("\\??\\c:\\temp\\x.exe", "C:\\temp\\x.exe"),
            ("\\DosDevices\\C:\\Windows\\explorer.exe", "C:\\Windows\\explorer.exe"),
            ("\\GLOBAL??\\D:\\x", "D:\\x"),
            ("\\\\?\\C:\\Users\\bob\\AppData\\Local\\Temp\\a.exe", "C:\\Users\\bob\\AppData\\Local\\Temp\\a.exe"),
            // boot drivers
            ("\\SystemRoot\\System32\\drivers\\Bulwark.sys", "C:\\Windows\\System32\\drivers\\Bulwark.sys"),
            ("\\SystemRoot", "C:\\Windows"),
            ("\\SystemRootX\\a", "\\SystemRootX\\a"),
            // network paths
            ("\\Device\\Mup\\fileserver\\share\\tool.exe", "\\\\fileserver\\share\\tool.exe"),
            (
                "\\Device\\Mup\\;LanmanRedirector\\;Z:000000000001a2b3\\fileserver\\share\\t.exe",
                "\\\\fileserver\\share\\t.exe",
            ),
            ("\\??\\UNC\\fileserver\\share\\t.exe", "\\\\fileserver\\share\\t.exe"),
            // already in DOS form, or unknown devices: unchanged
            ("C:\\Windows\\notepad.exe", "C:\\Windows\\notepad.exe"),
            ("\\Device\\VhdHardDisk{5ac9}\\x.exe", "\\Device\\VhdHardDisk{5ac9}\\x.exe"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(dos(input), want, "{input}");
        }
    }

    #[test]
    fn system_root_is_configurable() {
        let mut v = volumes();
        v.set_system_root("D:\\WINNT\\").unwrap();
        let mut s = "\\SystemRoot\\system32\\a.dll".to_string();
        to_dos_path(&mut s, &v).unwrap();
        assert_eq!(s, "D:\\WINNT\\system32\\a.dll");
        assert_eq!(
            v.set_system_root("WINNT"),
            Err(VolumeMapError::BadSystemRoot)
        );
    }

    #[test]
    fn bad_mappings_are_refused() {
        let mut v = VolumeMap::default();
        assert_eq!(
            v.insert('1', "\\Device\\X"),
            Err(VolumeMapError::BadLetter('1'))
        );
        assert_eq!(
            v.insert('C', "\\Device\\"),
            Err(VolumeMapError::BadDeviceName)
        );
        assert_eq!(
            v.insert('C', "\\??\\C:"),
            Err(VolumeMapError::BadDeviceName)
        );
        let long = alloc::format!("\\Device\\{}", "x".repeat(100));
        assert_eq!(v.insert('C', &long), Err(VolumeMapError::BadDeviceName));
    }

    #[test]
    fn utf16_is_decoded_lossily_and_bounded() {
        let units: alloc::vec::Vec<u16> = "C:\\Ünï\\😀.exe".encode_utf16().collect();
        let mut s = String::new();
        utf16_to_string(&units, 1000, &mut s).unwrap();
        assert_eq!(s, "C:\\Ünï\\😀.exe");
        utf16_to_string(&[0x43, 0xD800, 0x44], 1000, &mut s).unwrap();
        assert_eq!(s, "C\u{FFFD}D");
        utf16_to_string(&units, 9, &mut s).unwrap();
        assert_eq!(s, "C:\\Ünï\\");
        utf16_to_string(&units, 10, &mut s).unwrap();
        assert_eq!(s, "C:\\Ünï\\");
    }
}
