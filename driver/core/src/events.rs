//! The event builders: raw kernel facts in, schema events out.
//!
//! One builder per event type. Each owns the text it converted from the kernel's UTF-16, and lends
//! an [`Event`] built from the interpreter's typed struct for that type, listing every field by
//! name (no defaults), so a field added to the schema fails to compile here until it is filled in,
//! and no builder can produce an event that disagrees with the schema the content was verified
//! against.
//!
//! Fields the kernel does not hand over cheaply are absent, never empty: the PE version resource
//! (`OriginalFileName`, `Description`, `Product`, `Company`, `FileVersion`), `Hashes` and
//! `CurrentDirectory` of a new process, `ParentUser` when the parent started before the driver.
//!
//! Every text a builder owns is at most its field's [`max_len`](bulwark_interpreter::FieldDef)
//! bytes, from the schema's one table of sizes ([`schema::max_len`]), cut at a char boundary
//! exactly as [`schema::cut_to`] cuts: the builders decode a little more than the limit, rewrite
//! (NT path to `C:\...`, `\REGISTRY\MACHINE` to `HKLM`, which can shorten or lengthen the text),
//! then cut, so a value is the longest prefix of the full value that fits (but for a string
//! `Details`, whose trailing spaces are dropped after the cut, and a network path whose provider
//! components are longer than [`REWRITE_SLACK`]), and the VM, which reads every value cut to its
//! field's `max_len`, sees exactly what the builder made. `driver/core/tests/field_sizes.rs` checks
//! every field of every event type against the table, from the longest and most hostile inputs.

use alloc::string::String;
use alloc::sync::Arc;

use bulwark_interpreter::schema::{self, max_len};
use bulwark_interpreter::{Event, EventType};

use crate::identity::{integrity_level, logon_id, process_guid, Sid};
use crate::paths::{to_dos_path, utf16_to_string, VolumeMap};
use crate::process::ProcessInfo;
use crate::text::{self, NoMemory};

/// A `max_len` from the schema's table, in bytes.
pub const fn bytes(max_len: u32) -> usize {
    // usize is at least 32 bits on every target the driver builds for.
    max_len as usize
}

/// Cuts `s` in place to at most `max_len` bytes, at a char boundary: [`schema::cut_to`], owned.
pub fn cut(s: &mut String, max_len: u32) {
    let keep = schema::cut_to(s, bytes(max_len)).len();
    s.truncate(keep);
}

/// How much more than a field's `max_len` is decoded before a prefix rewrite, so a rewrite that
/// shortens the text (`\Device\HarddiskVolume3` to `C:`, `\REGISTRY\MACHINE` to `HKLM`) still
/// leaves a full field after the cut. Larger than any prefix the rewrites remove (a volume device
/// name is at most 96 bytes) except a network path's provider components, which have no bound.
pub const REWRITE_SLACK: usize = 256;

/// A kernel NT path as a path field (`Image`, `ImageLoaded`): decoded, rewritten to the `C:\...`
/// form, cut to [`max_len::PATH`].
pub fn path_field(units: &[u16], volumes: &VolumeMap, out: &mut String) -> Result<(), NoMemory> {
    utf16_to_string(
        units,
        bytes(max_len::PATH).saturating_add(REWRITE_SLACK),
        out,
    )?;
    to_dos_path(out, volumes)?;
    cut(out, max_len::PATH);
    Ok(())
}

/// A registry `TargetObject`: the key path (rewritten to the `HKLM\...` form) and the value name,
/// each cut to [`max_len::REGISTRY_NAME`], joined with `\`, cut to [`max_len::REGISTRY_TARGET`].
/// An empty value name is the default value, which Sysmon writes as `(Default)`.
pub fn registry_target(
    key_path: &[u16],
    value_name: Option<&[u16]>,
    out: &mut String,
) -> Result<(), NoMemory> {
    utf16_to_string(
        key_path,
        bytes(max_len::REGISTRY_NAME).saturating_add(REWRITE_SLACK),
        out,
    )?;
    to_registry_path(out)?;
    cut(out, max_len::REGISTRY_NAME);
    if let Some(name) = value_name {
        let mut v = String::new();
        utf16_to_string(name, bytes(max_len::REGISTRY_NAME), &mut v)?;
        text::push(out, '\\')?;
        text::push_str(out, if v.is_empty() { "(Default)" } else { &v })?;
    }
    cut(out, max_len::REGISTRY_TARGET);
    Ok(())
}

/// What the kernel says about a process being created (`PS_CREATE_NOTIFY_INFO` and the new
/// process's token).
#[derive(Debug, Clone, Copy)]
pub struct ProcessCreateFacts<'a> {
    /// The new process.
    pub process_id: u32,
    /// Its creation time (100 ns since 1601).
    pub create_time: u64,
    /// `ParentProcessId`.
    pub parent_process_id: u32,
    /// The parent's creation time, when the parent is still alive.
    pub parent_create_time: Option<u64>,
    /// `ImageFileName` (an NT path), if the kernel gave one.
    pub image_file_name: Option<&'a [u16]>,
    /// `CommandLine`, if the kernel gave one.
    pub command_line: Option<&'a [u16]>,
    /// The token's user.
    pub user: Option<Sid<'a>>,
    /// The token's mandatory label RID, and whether it is an AppContainer token.
    pub integrity: Option<(u32, bool)>,
    /// The token's logon session LUID.
    pub logon_id: Option<u64>,
    /// The terminal session.
    pub session_id: Option<u32>,
}

/// A process-creation event under construction: owns its text.
#[derive(Debug)]
pub struct ProcessCreation {
    /// What goes into the process table for this process.
    pub info: ProcessInfo,
    parent: Option<Arc<ProcessInfo>>,
    parent_process_id: u32,
    integrity: Option<&'static str>,
    logon: Option<String>,
    session_id: Option<u32>,
    has_image: bool,
    has_command_line: bool,
    has_user: bool,
}

impl ProcessCreation {
    /// Converts the kernel's facts. `parent` is the parent's entry in the process table, if any.
    /// Out of memory for the text, the event is lost: [`NoMemory`].
    pub fn build(
        facts: &ProcessCreateFacts<'_>,
        volumes: &VolumeMap,
        parent: Option<Arc<ProcessInfo>>,
        boot_salt: u64,
    ) -> Result<Self, NoMemory> {
        let mut image = String::new();
        if let Some(units) = facts.image_file_name {
            path_field(units, volumes, &mut image)?;
        }
        let mut command_line = String::new();
        if let Some(units) = facts.command_line {
            utf16_to_string(units, bytes(max_len::COMMAND_LINE), &mut command_line)?;
        }
        let mut user = String::new();
        let has_user = match facts.user {
            Some(sid) => sid.user_name(&mut user)?,
            None => false,
        };
        cut(&mut user, max_len::USER);
        let logon = match facts.logon_id {
            Some(luid) => {
                let mut s = String::new();
                logon_id(luid, &mut s)?;
                cut(&mut s, max_len::SHORT);
                Some(s)
            }
            None => None,
        };
        let mut guid = String::new();
        process_guid(boot_salt, facts.process_id, facts.create_time, &mut guid)?;
        cut(&mut guid, max_len::SHORT);
        // A parent entry counts only if it is the same process (ids are reused).
        let parent = parent.filter(|p| {
            p.process_id == facts.parent_process_id
                && facts.parent_create_time.is_none_or(|t| t == p.create_time)
        });
        Ok(ProcessCreation {
            info: ProcessInfo {
                process_id: facts.process_id,
                create_time: facts.create_time,
                image,
                command_line,
                user,
                guid,
            },
            parent,
            parent_process_id: facts.parent_process_id,
            integrity: facts
                .integrity
                .map(|(rid, app_container)| integrity_level(rid, app_container)),
            logon,
            session_id: facts.session_id,
            has_image: facts.image_file_name.is_some(),
            has_command_line: facts.command_line.is_some(),
            has_user,
        })
    }

    /// Lends the schema event to `f`.
    pub fn with_event<R>(&self, f: impl FnOnce(&Event<'_, '_>) -> R) -> R {
        let p = self.parent.as_deref();
        let typed = schema::ProcessCreation {
            image: self.has_image.then_some(self.info.image.as_str()),
            command_line: self
                .has_command_line
                .then_some(self.info.command_line.as_str()),
            parent_image: p.map(|p| p.image.as_str()),
            parent_command_line: p.map(|p| p.command_line.as_str()),
            original_file_name: None,
            description: None,
            product: None,
            company: None,
            file_version: None,
            current_directory: None,
            user: self.has_user.then_some(self.info.user.as_str()),
            integrity_level: self.integrity,
            hashes: None,
            logon_id: self.logon.as_deref(),
            process_id: Some(u64::from(self.info.process_id)),
            parent_process_id: Some(u64::from(self.parent_process_id)),
            parent_user: p.map(|p| p.user.as_str()).filter(|u| !u.is_empty()),
            process_guid: Some(self.info.guid.as_str()),
            parent_process_guid: p.map(|p| p.guid.as_str()),
            terminal_session_id: self.session_id.map(u64::from),
        };
        let values = typed.values();
        f(&Event::from_typed((&values).into()))
    }
}

/// What the kernel says about an image being mapped (`PsSetLoadImageNotifyRoutine`).
#[derive(Debug, Clone, Copy)]
pub struct ImageLoadFacts<'a> {
    /// The process the image is mapped into (0 for drivers loaded into the system).
    pub process_id: u32,
    /// `FullImageName` (an NT path).
    pub full_image_name: Option<&'a [u16]>,
    /// `IMAGE_INFO.ImageSignatureLevel` (0 = unchecked, 1 = unsigned, higher = signed).
    pub signature_level: u8,
}

/// An image-load event under construction.
#[derive(Debug)]
pub struct ImageLoad {
    loaded: Option<String>,
    process: Option<Arc<ProcessInfo>>,
    process_id: u32,
    signed: Option<&'static str>,
    signature_status: Option<&'static str>,
}

impl ImageLoad {
    /// Converts the kernel's facts; `process` is the loading process's table entry.
    pub fn build(
        facts: &ImageLoadFacts<'_>,
        volumes: &VolumeMap,
        process: Option<Arc<ProcessInfo>>,
    ) -> Result<Self, NoMemory> {
        let loaded = match facts.full_image_name {
            Some(units) => {
                let mut s = String::new();
                path_field(units, volumes, &mut s)?;
                Some(s)
            }
            None => None,
        };
        // SE_SIGNING_LEVEL_UNCHECKED = 0, SE_SIGNING_LEVEL_UNSIGNED = 1.
        let (signed, status) = match facts.signature_level {
            0 => (None, None),
            1 => (Some("false"), Some("Unavailable")),
            _ => (Some("true"), Some("Valid")),
        };
        Ok(ImageLoad {
            loaded,
            process,
            process_id: facts.process_id,
            signed,
            signature_status: status,
        })
    }

    /// Lends the schema event to `f`.
    pub fn with_event<R>(&self, f: impl FnOnce(&Event<'_, '_>) -> R) -> R {
        let p = self.process.as_deref();
        let typed = schema::ImageLoad {
            image: p.map(|p| p.image.as_str()),
            image_loaded: self.loaded.as_deref(),
            original_file_name: None,
            description: None,
            product: None,
            company: None,
            file_version: None,
            hashes: None,
            signed: self.signed,
            signature: None,
            signature_status: self.signature_status,
            user: p.map(|p| p.user.as_str()).filter(|u| !u.is_empty()),
            process_id: Some(u64::from(self.process_id)),
            process_guid: p.map(|p| p.guid.as_str()),
        };
        let values = typed.values();
        f(&Event::from_typed((&values).into()))
    }
}

/// Which registry operation (`REG_NOTIFY_CLASS`, post-operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryOp {
    /// A key was created.
    CreateKey,
    /// A key was deleted.
    DeleteKey,
    /// A value was set.
    SetValue,
    /// A value was deleted.
    DeleteValue,
    /// A key was renamed.
    RenameKey,
}

impl RegistryOp {
    /// Sysmon's `EventType` text.
    pub fn name(self) -> &'static str {
        match self {
            RegistryOp::CreateKey => "CreateKey",
            RegistryOp::DeleteKey => "DeleteKey",
            RegistryOp::SetValue => "SetValue",
            RegistryOp::DeleteValue => "DeleteValue",
            RegistryOp::RenameKey => "RenameKey",
        }
    }
}

/// Registry value types (`REG_*`).
pub mod reg_type {
    /// `REG_SZ`.
    pub const SZ: u32 = 1;
    /// `REG_EXPAND_SZ`.
    pub const EXPAND_SZ: u32 = 2;
    /// `REG_BINARY`.
    pub const BINARY: u32 = 3;
    /// `REG_DWORD`.
    pub const DWORD: u32 = 4;
    /// `REG_MULTI_SZ`.
    pub const MULTI_SZ: u32 = 7;
    /// `REG_QWORD`.
    pub const QWORD: u32 = 11;
}

/// What the kernel says about a registry write (`CmRegisterCallbackEx`).
#[derive(Debug, Clone, Copy)]
pub struct RegistryFacts<'a> {
    /// The operation.
    pub op: RegistryOp,
    /// The acting process.
    pub process_id: u32,
    /// The key's full path (`\REGISTRY\MACHINE\...`).
    pub key_path: &'a [u16],
    /// The value name, for value operations.
    pub value_name: Option<&'a [u16]>,
    /// The value's type and data, for `SetValue`.
    pub data: Option<(u32, &'a [u8])>,
    /// The new name, for `RenameKey`.
    pub new_name: Option<&'a [u16]>,
}

/// A registry event under construction.
#[derive(Debug)]
pub struct Registry {
    op: RegistryOp,
    target: String,
    details: Option<String>,
    new_name: Option<String>,
    process: Option<Arc<ProcessInfo>>,
    process_id: u32,
}

impl Registry {
    /// Converts the kernel's facts; `process` is the acting process's table entry.
    pub fn build(
        facts: &RegistryFacts<'_>,
        process: Option<Arc<ProcessInfo>>,
    ) -> Result<Self, NoMemory> {
        let mut target = String::new();
        registry_target(facts.key_path, facts.value_name, &mut target)?;
        let details = match facts.data {
            Some((ty, data)) => {
                let mut s = String::new();
                registry_details(ty, data, &mut s)?;
                Some(s)
            }
            None => None,
        };
        let new_name = match facts.new_name {
            Some(units) => {
                let mut s = String::new();
                utf16_to_string(units, bytes(max_len::REGISTRY_NAME), &mut s)?;
                Some(s)
            }
            None => None,
        };
        Ok(Registry {
            op: facts.op,
            target,
            details,
            new_name,
            process,
            process_id: facts.process_id,
        })
    }

    /// Lends the schema event to `f`.
    pub fn with_event<R>(&self, f: impl FnOnce(&Event<'_, '_>) -> R) -> R {
        let p = self.process.as_deref();
        let typed = schema::RegistryEvent {
            event_type: Some(self.op.name()),
            target_object: Some(self.target.as_str()),
            details: self.details.as_deref(),
            new_name: self.new_name.as_deref(),
            image: p.map(|p| p.image.as_str()),
            user: p.map(|p| p.user.as_str()).filter(|u| !u.is_empty()),
            process_id: Some(u64::from(self.process_id)),
            process_guid: p.map(|p| p.guid.as_str()),
        };
        let values = typed.values();
        f(&Event::from_typed((&values).into()))
    }
}

/// The event types the builders produce, for counters.
pub const EVENT_TYPES: [EventType; 3] = [
    EventType::ProcessCreation,
    EventType::ImageLoad,
    EventType::RegistryEvent,
];

/// Rewrites a kernel registry path (`\REGISTRY\MACHINE\...`) into the form Sysmon reports
/// (`HKLM\...`, `HKU\...`, with `ControlSet00N` as `CurrentControlSet`).
pub fn to_registry_path(path: &mut String) -> Result<(), NoMemory> {
    for (prefix, short) in [("\\REGISTRY\\MACHINE", "HKLM"), ("\\REGISTRY\\USER", "HKU")] {
        let matches = path
            .get(..prefix.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
            && path
                .get(prefix.len()..)
                .is_some_and(|r| r.is_empty() || r.starts_with('\\'));
        if matches {
            text::replace_front(path, prefix.len(), short)?;
            break;
        }
    }
    // HKLM\SYSTEM\ControlSet001\... -> HKLM\System\CurrentControlSet\...
    let cs = "HKLM\\SYSTEM\\ControlSet00";
    if path
        .get(..cs.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(cs))
        && path
            .as_bytes()
            .get(cs.len())
            .is_some_and(u8::is_ascii_digit)
        && path
            .as_bytes()
            .get(cs.len().saturating_add(1))
            .is_none_or(|&b| b == b'\\')
    {
        let end = cs.len().saturating_add(1);
        text::replace_front(path, end, "HKLM\\System\\CurrentControlSet")?;
    }
    Ok(())
}

/// Sysmon's `Details` text for a value's data: strings as they are, `DWORD (0x0000002a)`,
/// `QWORD (0x00000000-0x0000002a)`, `Binary Data` for the rest; at most
/// [`max_len::REGISTRY_DETAILS`] bytes (a string is decoded only that far, then its trailing
/// spaces, the terminating NULs among them, are dropped).
pub fn registry_details(ty: u32, data: &[u8], out: &mut String) -> Result<(), NoMemory> {
    out.clear();
    match ty {
        reg_type::SZ | reg_type::EXPAND_SZ | reg_type::MULTI_SZ => {
            // MULTI_SZ items are separated by spaces; the terminating NULs are dropped.
            let units = data.chunks_exact(2).map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            });
            for c in char::decode_utf16(units) {
                let c = match c {
                    Ok('\0') => ' ',
                    Ok(c) => c,
                    Err(_) => char::REPLACEMENT_CHARACTER,
                };
                if out.len().saturating_add(c.len_utf8()) > bytes(max_len::REGISTRY_DETAILS) {
                    break;
                }
                text::push(out, c)?;
            }
            let kept = out.trim_end_matches(' ').len();
            out.truncate(kept);
        }
        reg_type::DWORD if data.len() == 4 => {
            let v = u32::from_le_bytes([
                data.first().copied().unwrap_or(0),
                data.get(1).copied().unwrap_or(0),
                data.get(2).copied().unwrap_or(0),
                data.get(3).copied().unwrap_or(0),
            ]);
            text::write(out, format_args!("DWORD (0x{v:08x})"))?;
        }
        reg_type::QWORD if data.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(data.get(..8).unwrap_or(&[0; 8]));
            let v = u64::from_le_bytes(b);
            text::write(
                out,
                format_args!("QWORD (0x{:08x}-0x{:08x})", v >> 32, v & 0xFFFF_FFFF),
            )?;
        }
        _ => text::push_str(out, "Binary Data")?,
    }
    cut(out, max_len::REGISTRY_DETAILS);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use bulwark_interpreter::FieldValue;

    fn utf16(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn volumes() -> VolumeMap {
        let mut v = VolumeMap::default();
        v.insert('C', "\\Device\\HarddiskVolume3").unwrap();
        v
    }

    fn field(ev: &Event<'_, '_>, name: &str) -> String {
        let f = ev.event_type().field_by_name(name).unwrap();
        match ev.get(f.index) {
            FieldValue::Absent => "<absent>".into(),
            FieldValue::Str(s) => s.into(),
            FieldValue::Int(i) => alloc::format!("{i}"),
        }
    }

    #[test]
    fn process_creation_from_kernel_facts() {
        let parent = Arc::new(ProcessInfo {
            process_id: 1000,
            create_time: 5,
            image: "C:\\Windows\\explorer.exe".into(),
            command_line: "C:\\Windows\\Explorer.EXE".into(),
            user: "S-1-5-21-1-2-3-1001".into(),
            guid: "{P}".into(),
        });
        let image = utf16("\\??\\C:\\Windows\\System32\\cmd.exe");
        let cmd = utf16("cmd.exe /c whoami");
        let sub = [18u32];
        let facts = ProcessCreateFacts {
            process_id: 4242,
            create_time: 9,
            parent_process_id: 1000,
            parent_create_time: Some(5),
            image_file_name: Some(&image),
            command_line: Some(&cmd),
            user: Some(Sid {
                revision: 1,
                authority: [0, 0, 0, 0, 0, 5],
                sub_authorities: &sub,
            }),
            integrity: Some((0x4000, false)),
            logon_id: Some(0x3e7),
            session_id: Some(0),
        };
        let pc = ProcessCreation::build(&facts, &volumes(), Some(parent.clone()), 1).unwrap();
        pc.with_event(|ev| {
            assert_eq!(ev.event_type(), EventType::ProcessCreation);
            assert_eq!(field(ev, "Image"), "C:\\Windows\\System32\\cmd.exe");
            assert_eq!(field(ev, "CommandLine"), "cmd.exe /c whoami");
            assert_eq!(field(ev, "ParentImage"), "C:\\Windows\\explorer.exe");
            assert_eq!(field(ev, "ParentCommandLine"), "C:\\Windows\\Explorer.EXE");
            assert_eq!(field(ev, "ParentUser"), "S-1-5-21-1-2-3-1001");
            assert_eq!(field(ev, "User"), "NT AUTHORITY\\SYSTEM");
            assert_eq!(field(ev, "IntegrityLevel"), "System");
            assert_eq!(field(ev, "LogonId"), "0x3e7");
            assert_eq!(field(ev, "ProcessId"), "4242");
            assert_eq!(field(ev, "ParentProcessId"), "1000");
            assert_eq!(field(ev, "TerminalSessionId"), "0");
            assert_eq!(field(ev, "ParentProcessGuid"), "{P}");
            assert_eq!(field(ev, "OriginalFileName"), "<absent>");
            assert_eq!(field(ev, "Hashes"), "<absent>");
        });
        assert_eq!(pc.info.image, "C:\\Windows\\System32\\cmd.exe");

        // A parent entry from a reused process id is not used.
        let stale = ProcessCreateFacts {
            parent_create_time: Some(6),
            ..facts
        };
        let pc = ProcessCreation::build(&stale, &volumes(), Some(parent), 1).unwrap();
        pc.with_event(|ev| {
            assert_eq!(field(ev, "ParentImage"), "<absent>");
            assert_eq!(field(ev, "ParentProcessId"), "1000");
        });
    }

    #[test]
    fn missing_facts_are_absent_and_empty_ones_empty() {
        let empty: [u16; 0] = [];
        let facts = ProcessCreateFacts {
            process_id: 8,
            create_time: 1,
            parent_process_id: 4,
            parent_create_time: None,
            image_file_name: None,
            command_line: Some(&empty),
            user: None,
            integrity: None,
            logon_id: None,
            session_id: None,
        };
        ProcessCreation::build(&facts, &volumes(), None, 0)
            .unwrap()
            .with_event(|ev| {
                assert_eq!(field(ev, "Image"), "<absent>");
                assert_eq!(field(ev, "CommandLine"), "");
                assert_eq!(field(ev, "User"), "<absent>");
                assert_eq!(field(ev, "IntegrityLevel"), "<absent>");
            });
    }

    #[test]
    fn image_load_from_kernel_facts() {
        let proc_info = Arc::new(ProcessInfo {
            process_id: 77,
            create_time: 1,
            image: "C:\\Windows\\System32\\rundll32.exe".into(),
            command_line: String::new(),
            user: "NT AUTHORITY\\SYSTEM".into(),
            guid: "{G}".into(),
        });
        let name = utf16("\\Device\\HarddiskVolume3\\Users\\bob\\evil.dll");
        let il = ImageLoad::build(
            &ImageLoadFacts {
                process_id: 77,
                full_image_name: Some(&name),
                signature_level: 1,
            },
            &volumes(),
            Some(proc_info),
        )
        .unwrap();
        il.with_event(|ev| {
            assert_eq!(ev.event_type(), EventType::ImageLoad);
            assert_eq!(field(ev, "ImageLoaded"), "C:\\Users\\bob\\evil.dll");
            assert_eq!(field(ev, "Image"), "C:\\Windows\\System32\\rundll32.exe");
            assert_eq!(field(ev, "Signed"), "false");
            assert_eq!(field(ev, "ProcessGuid"), "{G}");
        });
    }

    #[test]
    fn registry_paths_and_details_match_sysmon() {
        let cases = [
            (
                "\\REGISTRY\\MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
                "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
            ),
            (
                "\\REGISTRY\\USER\\S-1-5-21-1-2-3-1001\\Software\\x",
                "HKU\\S-1-5-21-1-2-3-1001\\Software\\x",
            ),
            (
                "\\Registry\\Machine\\SYSTEM\\ControlSet001\\Services\\Bulwark",
                "HKLM\\System\\CurrentControlSet\\Services\\Bulwark",
            ),
            (
                "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet0012\\x",
                "HKLM\\SYSTEM\\ControlSet0012\\x",
            ),
            ("\\REGISTRY\\MACHINEX\\a", "\\REGISTRY\\MACHINEX\\a"),
        ];
        for (input, want) in cases {
            let mut s = String::from(input);
            to_registry_path(&mut s).unwrap();
            assert_eq!(s, want);
        }
        let mut s = String::new();
        registry_details(reg_type::DWORD, &42u32.to_le_bytes(), &mut s).unwrap();
        assert_eq!(s, "DWORD (0x0000002a)");
        registry_details(reg_type::QWORD, &((1u64 << 32) | 42).to_le_bytes(), &mut s).unwrap();
        assert_eq!(s, "QWORD (0x00000001-0x0000002a)");
        let sz: Vec<u8> = "C:\\evil.exe\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        registry_details(reg_type::SZ, &sz, &mut s).unwrap();
        assert_eq!(s, "C:\\evil.exe");
        let multi: Vec<u8> = "a\0b\0\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        registry_details(reg_type::MULTI_SZ, &multi, &mut s).unwrap();
        assert_eq!(s, "a b");
        registry_details(reg_type::BINARY, &[1, 2, 3], &mut s).unwrap();
        assert_eq!(s, "Binary Data");
        registry_details(reg_type::DWORD, &[1, 2], &mut s).unwrap();
        assert_eq!(s, "Binary Data", "a DWORD of the wrong size is not misread");
        registry_details(reg_type::SZ, &[0x41], &mut s).unwrap();
        assert_eq!(s, "", "an odd byte is ignored");
    }

    #[test]
    fn registry_event_from_kernel_facts() {
        let key = utf16("\\REGISTRY\\MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run");
        let value = utf16("Updater");
        let data: Vec<u8> = "C:\\Users\\Public\\u.exe\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let r = Registry::build(
            &RegistryFacts {
                op: RegistryOp::SetValue,
                process_id: 5,
                key_path: &key,
                value_name: Some(&value),
                data: Some((reg_type::SZ, &data)),
                new_name: None,
            },
            None,
        )
        .unwrap();
        r.with_event(|ev| {
            assert_eq!(field(ev, "EventType"), "SetValue");
            assert_eq!(
                field(ev, "TargetObject"),
                "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\Updater"
            );
            assert_eq!(field(ev, "Details"), "C:\\Users\\Public\\u.exe");
            assert_eq!(field(ev, "Image"), "<absent>");
        });
        let empty: [u16; 0] = [];
        let r = Registry::build(
            &RegistryFacts {
                op: RegistryOp::DeleteValue,
                process_id: 5,
                key_path: &key,
                value_name: Some(&empty),
                data: None,
                new_name: None,
            },
            None,
        )
        .unwrap();
        r.with_event(|ev| assert!(field(ev, "TargetObject").ends_with("\\Run\\(Default)")));
    }
}
