//! The event schema: the one source of truth for which event types the sensor produces and which
//! fields each carries, in which order and of which type.
//!
//! Everything else derives from the table in [`schema!`] below: the field tables the verifier binds
//! content to, the schema hash written into every pack, and the typed event structs the driver's
//! event builders fill in (one struct per event type with one member per field), so the sensor
//! cannot produce an event that disagrees with what content was verified against.

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
        $strukt:ident { $( $member:ident : $fty:ident = $fname:literal ),* $(,)? }
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
                pub const FIELDS: &'static [FieldDef] = &schema!(@defs 0u8; []; $( $fname, $fty; )*);
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
    (@defs $i:expr; [$($acc:expr,)*]; $fname:literal, $fty:ident; $($rest:tt)*) => {
        schema!(@defs $i + 1u8; [$($acc,)* FieldDef { index: $i, name: $fname, ty: FieldType::$fty },]; $($rest)*)
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
        image: Str = "Image",
        command_line: Str = "CommandLine",
        parent_image: Str = "ParentImage",
        parent_command_line: Str = "ParentCommandLine",
        original_file_name: Str = "OriginalFileName",
        description: Str = "Description",
        product: Str = "Product",
        company: Str = "Company",
        file_version: Str = "FileVersion",
        current_directory: Str = "CurrentDirectory",
        user: Str = "User",
        integrity_level: Str = "IntegrityLevel",
        hashes: Str = "Hashes",
        logon_id: Str = "LogonId",
        process_id: Int = "ProcessId",
        parent_process_id: Int = "ParentProcessId",
        parent_user: Str = "ParentUser",
        process_guid: Str = "ProcessGuid",
        parent_process_guid: Str = "ParentProcessGuid",
        terminal_session_id: Int = "TerminalSessionId",
    }
    /// An image (executable or DLL) was mapped into a process (Sysmon event 7).
    ImageLoad = 1, "image_load", sysmon [7],
    ImageLoad {
        image: Str = "Image",
        image_loaded: Str = "ImageLoaded",
        original_file_name: Str = "OriginalFileName",
        description: Str = "Description",
        product: Str = "Product",
        company: Str = "Company",
        file_version: Str = "FileVersion",
        hashes: Str = "Hashes",
        signed: Str = "Signed",
        signature: Str = "Signature",
        signature_status: Str = "SignatureStatus",
        user: Str = "User",
        process_id: Int = "ProcessId",
        process_guid: Str = "ProcessGuid",
    }
    /// A registry key or value was created, deleted, set or renamed (Sysmon events 12, 13, 14).
    RegistryEvent = 2, "registry_event", sysmon [12, 13, 14],
    RegistryEvent {
        event_type: Str = "EventType",
        target_object: Str = "TargetObject",
        details: Str = "Details",
        new_name: Str = "NewName",
        image: Str = "Image",
        user: Str = "User",
        process_id: Int = "ProcessId",
        process_guid: Str = "ProcessGuid",
    }
}

/// The most fields any event type may have (a fixed limit of the pack format).
pub const MAX_FIELDS: u8 = 64;

/// A stable hash of the whole schema: event type ids and names, and every field's index, name and
/// type. A pack records the hash of the schema it was built for; the verifier refuses a pack whose
/// hash differs from the running sensor's.
pub fn schema_hash() -> [u8; 32] {
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
    fn schema_hash_is_stable() {
        // Changing the schema changes this hash, and every pack must be rebuilt: update it on purpose.
        let hex: alloc::string::String = schema_hash()
            .iter()
            .map(|b| alloc::format!("{b:02x}"))
            .collect();
        assert_eq!(hex, include_str!("../schema.hash").trim());
    }
}
