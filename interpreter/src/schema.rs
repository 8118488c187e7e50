//! The event schema: the one source of truth for which event types the sensor produces and which
//! fields each carries, in which order and of which type.
//!
//! Everything else derives from the table in [`schema!`] below: the field tables the verifier binds
//! content to, the schema hash written into every pack, and the typed event structs the driver's
//! event builders fill in (one struct per event type with one member per field), so the sensor
//! cannot produce an event that disagrees with what content was verified against.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// The type of a field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// UTF-8 text.
    Str,
    /// An unsigned integer.
    Int,
}

impl FieldType {
    /// The name used in the schema listing and the assembly text.
    pub const fn name(self) -> &'static str {
        match self {
            FieldType::Str => "str",
            FieldType::Int => "int",
        }
    }
}

/// One field of an event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDef {
    /// The field's index in the event.
    pub index: u8,
    /// The field name as Sysmon and Sigma spell it.
    pub name: &'static str,
    /// The field's value type.
    pub ty: FieldType,
    /// The longest value the sensor produces for this field, in bytes of UTF-8 (0 for integers).
    /// The driver's event builders keep every value within it (tested there), the VM reads at
    /// most this many bytes of any value (a longer one is seen cut at a char boundary, as the
    /// builders cut it), and the verifier's cost model bounds a pack's work per event with it.
    pub max_len: u32,
}

/// A field's value in one event. An absent field is not the same as an empty string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FieldValue<'a> {
    /// The sensor did not observe this field for this event.
    #[default]
    Absent,
    /// A text value (possibly empty).
    Str(&'a str),
    /// An integer value.
    Int(u64),
}

impl<'a> FieldValue<'a> {
    /// The type of this value, or `None` when absent.
    pub const fn ty(&self) -> Option<FieldType> {
        match self {
            FieldValue::Absent => None,
            FieldValue::Str(_) => Some(FieldType::Str),
            FieldValue::Int(_) => Some(FieldType::Int),
        }
    }
}

macro_rules! field_value {
    (Str, $v:expr) => {
        match $v {
            Some(s) => FieldValue::Str(s),
            None => FieldValue::Absent,
        }
    };
    (Int, $v:expr) => {
        match $v {
            Some(i) => FieldValue::Int(i),
            None => FieldValue::Absent,
        }
    };
}

macro_rules! field_rust_type {
    ('a, Str) => { Option<&'a str> };
    ('a, Int) => { Option<u64> };
}

macro_rules! schema {
    ($(
        $(#[$tmeta:meta])*
        $variant:ident = $id:literal, $name:literal, sysmon [$($eid:literal),*],
        $strukt:ident { $( $member:ident : $fty:ident = $fname:literal / $max:expr ),* $(,)? }
    )*) => {
        /// The event types the sensor produces.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum EventType {
            $( $(#[$tmeta])* $variant = $id, )*
        }

        impl EventType {
            /// Every event type, in id order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),*];

            /// The event type with this wire id.
            pub const fn from_id(id: u8) -> Option<EventType> {
                match id {
                    $( $id => Some(EventType::$variant), )*
                    _ => None,
                }
            }

            /// The event type with this name (`process_creation`, ...).
            pub fn from_name(name: &str) -> Option<EventType> {
                match name {
                    $( $name => Some(EventType::$variant), )*
                    _ => None,
                }
            }

            /// The wire id.
            pub const fn id(self) -> u8 {
                self as u8
            }

            /// The name, as Sigma's log source category spells it.
            pub const fn name(self) -> &'static str {
                match self {
                    $( EventType::$variant => $name, )*
                }
            }

            /// The Sysmon event ids that carry this event type.
            pub const fn sysmon_event_ids(self) -> &'static [u16] {
                match self {
                    $( EventType::$variant => &[$($eid),*], )*
                }
            }

            /// The event type that Sysmon's event id carries.
            pub fn from_sysmon_event_id(eid: u16) -> Option<EventType> {
                EventType::ALL.iter().copied().find(|t| t.sysmon_event_ids().contains(&eid))
            }

            /// The fields of this event type, in index order.
            pub const fn fields(self) -> &'static [FieldDef] {
                match self {
                    $( EventType::$variant => $strukt::FIELDS, )*
                }
            }

            /// How many fields an event of this type carries.
            pub const fn field_count(self) -> u8 {
                // Every field table has fewer than 256 entries (checked by a test).
                self.fields().len() as u8
            }

            /// The field with this index, if the event type has it.
            pub fn field(self, index: u8) -> Option<&'static FieldDef> {
                self.fields().get(usize::from(index))
            }

            /// The longest value field `index` has, in bytes ([`FieldDef::max_len`]; 0 for a
            /// field the event type does not have).
            pub fn max_len(self, index: u8) -> usize {
                self.field(index)
                    .map_or(0, |f| usize::try_from(f.max_len).unwrap_or(usize::MAX))
            }

            /// The field with this name (exact, case-sensitive, as Sysmon spells it).
            pub fn field_by_name(self, name: &str) -> Option<&'static FieldDef> {
                self.fields().iter().find(|f| f.name == name)
            }
        }

        $(
            /// A typed event builder: one member per schema field, so an event built from it
            /// always has exactly the schema's fields, in order, with the schema's types.
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
            pub struct $strukt<'a> {
                $( #[doc = $fname] pub $member: field_rust_type!('a, $fty), )*
            }

            impl<'a> $strukt<'a> {
                /// The schema's field table for this event type.
                pub const FIELDS: &'static [FieldDef] = &schema!(@defs 0u8; []; $( $fname, $fty, $max; )*);
                /// The number of fields.
                pub const FIELD_COUNT: usize = Self::FIELDS.len();
                /// The event type this struct builds.
                pub const EVENT_TYPE: EventType = EventType::$variant;

                /// The field values, in schema order.
                pub fn values(&self) -> [FieldValue<'a>; $strukt::FIELD_COUNT] {
                    [$( field_value!($fty, self.$member), )*]
                }
            }

            impl<'a, 'b> From<&'b [FieldValue<'a>; $strukt::FIELD_COUNT]> for TypedValues<'a, 'b> {
                fn from(values: &'b [FieldValue<'a>; $strukt::FIELD_COUNT]) -> Self {
                    TypedValues { event_type: EventType::$variant, values }
                }
            }
        )*
    };
    (@defs $i:expr; [$($acc:expr,)*]; ) => { [$($acc,)*] };
    (@defs $i:expr; [$($acc:expr,)*]; $fname:literal, $fty:ident, $max:expr; $($rest:tt)*) => {
        schema!(@defs $i + 1u8; [$($acc,)* FieldDef { index: $i, name: $fname, ty: FieldType::$fty, max_len: $max },]; $($rest)*)
    };
}

/// Field values produced by a typed event builder, tagged with their event type. Only the typed
/// builders' `values()` arrays convert into this, so it is always consistent with the schema.
#[derive(Clone, Copy, Debug)]
pub struct TypedValues<'a, 'b> {
    pub(crate) event_type: EventType,
    pub(crate) values: &'b [FieldValue<'a>],
}

schema! {
    /// A process was created (Sysmon event 1).
    ProcessCreation = 0, "process_creation", sysmon [1],
    ProcessCreation {
        image: Str = "Image" / max_len::PATH,
        command_line: Str = "CommandLine" / max_len::COMMAND_LINE,
        parent_image: Str = "ParentImage" / max_len::PATH,
        parent_command_line: Str = "ParentCommandLine" / max_len::COMMAND_LINE,
        original_file_name: Str = "OriginalFileName" / max_len::VERSION_TEXT,
        description: Str = "Description" / max_len::VERSION_TEXT,
        product: Str = "Product" / max_len::VERSION_TEXT,
        company: Str = "Company" / max_len::VERSION_TEXT,
        file_version: Str = "FileVersion" / max_len::VERSION_TEXT,
        current_directory: Str = "CurrentDirectory" / max_len::PATH,
        user: Str = "User" / max_len::USER,
        integrity_level: Str = "IntegrityLevel" / max_len::SHORT,
        hashes: Str = "Hashes" / max_len::HASHES,
        logon_id: Str = "LogonId" / max_len::SHORT,
        process_id: Int = "ProcessId" / 0,
        parent_process_id: Int = "ParentProcessId" / 0,
        parent_user: Str = "ParentUser" / max_len::USER,
        process_guid: Str = "ProcessGuid" / max_len::SHORT,
        parent_process_guid: Str = "ParentProcessGuid" / max_len::SHORT,
        terminal_session_id: Int = "TerminalSessionId" / 0,
    }
    /// An image (executable or DLL) was mapped into a process (Sysmon event 7).
    ImageLoad = 1, "image_load", sysmon [7],
    ImageLoad {
        image: Str = "Image" / max_len::PATH,
        image_loaded: Str = "ImageLoaded" / max_len::PATH,
        original_file_name: Str = "OriginalFileName" / max_len::VERSION_TEXT,
        description: Str = "Description" / max_len::VERSION_TEXT,
        product: Str = "Product" / max_len::VERSION_TEXT,
        company: Str = "Company" / max_len::VERSION_TEXT,
        file_version: Str = "FileVersion" / max_len::VERSION_TEXT,
        hashes: Str = "Hashes" / max_len::HASHES,
        signed: Str = "Signed" / max_len::SHORT,
        signature: Str = "Signature" / max_len::VERSION_TEXT,
        signature_status: Str = "SignatureStatus" / max_len::SHORT,
        user: Str = "User" / max_len::USER,
        process_id: Int = "ProcessId" / 0,
        process_guid: Str = "ProcessGuid" / max_len::SHORT,
    }
    /// A registry key or value was created, deleted, set or renamed (Sysmon events 12, 13, 14).
    RegistryEvent = 2, "registry_event", sysmon [12, 13, 14],
    RegistryEvent {
        event_type: Str = "EventType" / max_len::SHORT,
        target_object: Str = "TargetObject" / max_len::REGISTRY_TARGET,
        details: Str = "Details" / max_len::REGISTRY_DETAILS,
        new_name: Str = "NewName" / max_len::REGISTRY_NAME,
        image: Str = "Image" / max_len::PATH,
        user: Str = "User" / max_len::USER,
        process_id: Int = "ProcessId" / 0,
        process_guid: Str = "ProcessGuid" / max_len::SHORT,
    }
}

/// The longest value of each kind of field, in bytes of UTF-8: the one table of field sizes,
/// which the schema's fields name and the driver's event builders cut their values to.
pub mod max_len {
    /// File paths (`Image`, `ParentImage`, `ImageLoaded`, `CurrentDirectory`).
    pub const PATH: u32 = 1024;
    /// Command lines (Windows allows 32,767 UTF-16 units; the sensor keeps the first 16 KiB).
    pub const COMMAND_LINE: u32 = 16 * 1024;
    /// PE version resource texts and signer names (`OriginalFileName`, `Description`, ...).
    pub const VERSION_TEXT: u32 = 256;
    /// Account names (`DOMAIN\name`, or a SID's string form).
    pub const USER: u32 = 512;
    /// `Hashes` (`SHA1=...,MD5=...,SHA256=...,IMPHASH=...`).
    pub const HASHES: u32 = 512;
    /// Short fixed-form texts (GUIDs, logon ids, integrity levels, `EventType`, `Signed`).
    pub const SHORT: u32 = 64;
    /// A registry key or value name (`NewName`; each part of `TargetObject`).
    pub const REGISTRY_NAME: u32 = 4096;
    /// A registry `TargetObject`: key path, `\`, value name, cut to this.
    pub const REGISTRY_TARGET: u32 = 8 * 1024;
    /// Registry value `Details`.
    pub const REGISTRY_DETAILS: u32 = 4096;
}

/// `s` cut to at most `max` bytes at a char boundary: how the sensor cuts a value to its field's
/// [`FieldDef::max_len`].
pub fn cut_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    // A char is at most 4 bytes, so a boundary lies within the last 4 positions.
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or("")
}

/// The most fields any event type may have (a fixed limit of the pack format).
pub const MAX_FIELDS: u8 = 64;

/// A stable hash of the whole schema: event type ids and names, and every field's index, name and
/// type. A pack records the hash of the schema it was built for; the verifier refuses a pack whose
/// hash differs from the running sensor's.
///
/// Computed once per process (the schema is fixed at build time) and kept: a pack's
/// verification, every envelope a guard opens and every status the service reads compare
/// against it.
pub fn schema_hash() -> [u8; 32] {
    SCHEMA_HASH.get()
}

/// [`schema_hash`], once computed: four words, published by `ready` (a thread that finds it not
/// ready computes the hash and stores it; threads racing to do so store the same words).
struct SchemaHashCell {
    words: [AtomicU64; 4],
    ready: AtomicBool,
}

static SCHEMA_HASH: SchemaHashCell = SchemaHashCell {
    words: [const { AtomicU64::new(0) }; 4],
    ready: AtomicBool::new(false),
};

impl SchemaHashCell {
    fn get(&self) -> [u8; 32] {
        if !self.ready.load(Ordering::Acquire) {
            let hash = compute_schema_hash();
            for (word, bytes) in self.words.iter().zip(hash.chunks_exact(8)) {
                let mut w = [0u8; 8];
                w.copy_from_slice(bytes);
                word.store(u64::from_le_bytes(w), Ordering::Relaxed);
            }
            self.ready.store(true, Ordering::Release);
            return hash;
        }
        let mut hash = [0u8; 32];
        for (bytes, word) in hash.chunks_exact_mut(8).zip(&self.words) {
            bytes.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        hash
    }
}

/// [`schema_hash`], computed.
fn compute_schema_hash() -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"bulwark-schema-v1\n");
    for t in EventType::ALL {
        h.update([t.id(), t.field_count()]);
        h.update(t.name().as_bytes());
        h.update(b"\n");
        for f in t.fields() {
            h.update([f.index, f.ty as u8]);
            h.update(f.name.as_bytes());
            h.update(b"\n");
        }
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_tables_are_consistent() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_id(t.id()), Some(*t));
            assert_eq!(EventType::from_name(t.name()), Some(*t));
            assert!(t.fields().len() <= usize::from(MAX_FIELDS));
            for (i, f) in t.fields().iter().enumerate() {
                assert_eq!(usize::from(f.index), i);
                assert_eq!(t.field_by_name(f.name), Some(f));
            }
        }
    }

    #[test]
    fn process_creation_has_the_sigma_fields() {
        let t = EventType::ProcessCreation;
        for name in [
            "Image",
            "CommandLine",
            "ParentImage",
            "ParentCommandLine",
            "OriginalFileName",
            "Description",
            "Product",
            "Company",
            "FileVersion",
            "CurrentDirectory",
            "User",
            "IntegrityLevel",
            "Hashes",
            "LogonId",
            "ProcessId",
            "ParentProcessId",
            "ParentUser",
        ] {
            assert!(t.field_by_name(name).is_some(), "{name}");
        }
        assert_eq!(t.field_count(), 20);
    }

    #[test]
    fn typed_builder_matches_schema() {
        let ev = ProcessCreation {
            image: Some("C:\\x.exe"),
            process_id: Some(4),
            ..Default::default()
        };
        let v = ev.values();
        assert_eq!(
            v.len(),
            usize::from(EventType::ProcessCreation.field_count())
        );
        assert_eq!(v.first(), Some(&FieldValue::Str("C:\\x.exe")));
        assert_eq!(v.get(14), Some(&FieldValue::Int(4)));
        assert_eq!(v.get(1), Some(&FieldValue::Absent));
        for (val, def) in v.iter().zip(ProcessCreation::FIELDS) {
            assert!(val.ty().is_none() || val.ty() == Some(def.ty));
        }
    }

    #[test]
    fn schema_hash_is_kept_as_computed() {
        let computed = compute_schema_hash();
        // The first call may compute it or find it kept (tests run in parallel); later calls read
        // the kept words, which must give back the same bytes in the same order.
        for _ in 0..3 {
            assert_eq!(schema_hash(), computed);
        }
        assert!(SCHEMA_HASH.ready.load(Ordering::Acquire));
    }

    #[test]
    fn schema_hash_is_stable() {
        // Changing the schema changes this hash, and every pack must be rebuilt: update it on purpose.
        let hex: alloc::string::String = schema_hash()
            .iter()
            .map(|b| alloc::format!("{b:02x}"))
            .collect();
        assert_eq!(hex, include_str!("../schema.hash").trim());
    }
}
