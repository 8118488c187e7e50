//! The drive letters' volume devices (`\GLOBAL??\C:` -> `\Device\HarddiskVolume3`) and the system
//! root, read from the object manager's symbolic links into the core's volume map. PASSIVE_LEVEL.

use alloc::string::String;
use core::ptr;

use bulwark_driver_core::paths::{to_dos_path, VolumeMap};
use wdk_sys::ntddk::{ZwOpenSymbolicLinkObject, ZwQuerySymbolicLinkObject};
use wdk_sys::{
    HANDLE, OBJECT_ATTRIBUTES, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, STATUS_SUCCESS,
    SYMBOLIC_LINK_QUERY, UNICODE_STRING,
};

use super::ffi::{try_string_from_utf16, OwnedUnicode};
use super::store::Handle;

/// The target of the symbolic link `name`, if it exists.
fn link_target(name: &str) -> Option<String> {
    let mut uname = OwnedUnicode::new(name).ok()?;
    let mut oa = OBJECT_ATTRIBUTES {
        Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: ptr::null_mut(),
        ObjectName: uname.as_ptr(),
        Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: ptr::null_mut(),
        SecurityQualityOfService: ptr::null_mut(),
    };
    let mut h: HANDLE = ptr::null_mut();
    // SAFETY: valid pointers for the call; a kernel handle is returned and closed by `Handle`.
    if unsafe { ZwOpenSymbolicLinkObject(&mut h, SYMBOLIC_LINK_QUERY, &mut oa) } != STATUS_SUCCESS {
        return None;
    }
    let link = Handle(h);
    let mut buf = [0u16; 512];
    let mut target = UNICODE_STRING {
        Length: 0,
        MaximumLength: u16::try_from(core::mem::size_of_val(&buf)).unwrap_or(u16::MAX),
        Buffer: buf.as_mut_ptr(),
    };
    // SAFETY: `target` describes `buf`, writable for MaximumLength bytes.
    let status = unsafe { ZwQuerySymbolicLinkObject(link.0, &mut target, ptr::null_mut()) };
    if status != STATUS_SUCCESS {
        return None;
    }
    let len = usize::from(target.Length / 2).min(buf.len());
    try_string_from_utf16(buf.get(..len)?)
}

/// Reads every drive letter's volume device and the system root.
pub fn read() -> VolumeMap {
    let mut map = VolumeMap::default();
    for letter in 'A'..='Z' {
        let mut name = *b"\\GLOBAL??\\?:";
        if let Some(slot) = name.get_mut(10) {
            *slot = u8::try_from(letter).unwrap_or(b'?');
        }
        let Ok(name) = core::str::from_utf8(&name) else {
            continue;
        };
        if let Some(device) = link_target(name) {
            // Only volume devices map to letters; other links (SUBST, network) are left alone.
            let _ = map.insert(letter, &device);
        }
    }
    // \SystemRoot -> \Device\HarddiskVolume3\Windows -> C:\Windows
    if let Some(mut root) = link_target("\\SystemRoot") {
        // Out of memory, the default (C:\Windows) stays.
        if to_dos_path(&mut root, &map).is_ok() {
            let _ = map.set_system_root(&root);
        }
    }
    map
}
