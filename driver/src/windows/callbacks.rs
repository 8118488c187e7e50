//! The kernel notification callbacks: gather the kernel's facts, hand them to the core's sensor,
//! carry out its verdict. All three run at PASSIVE_LEVEL in the context of the acting thread.

use core::ptr;

use bulwark_driver_core::events::{ImageLoadFacts, ProcessCreateFacts, RegistryFacts, RegistryOp};
use bulwark_driver_core::identity::{Sid, MAX_SUB_AUTHORITIES};
use wdk_sys::ntddk::{
    CmCallbackGetKeyObjectID, ObfDereferenceObject, PsDereferencePrimaryToken,
    PsGetProcessCreateTimeQuadPart, PsLookupProcessByProcessId, PsReferencePrimaryToken,
    SeQueryInformationToken,
};
use wdk_sys::_REG_NOTIFY_CLASS::{
    RegNtPostCreateKeyEx, RegNtPostDeleteValueKey, RegNtPostRenameKey, RegNtPostSetValueKey,
    RegNtPreDeleteKey,
};
use wdk_sys::_TOKEN_INFORMATION_CLASS::{
    TokenIntegrityLevel, TokenSessionId, TokenStatistics, TokenUser,
};
use wdk_sys::{
    _REG_CREATE_KEY_INFORMATION_V1, _REG_DELETE_KEY_INFORMATION, _REG_DELETE_VALUE_KEY_INFORMATION,
    _REG_POST_OPERATION_INFORMATION, _REG_RENAME_KEY_INFORMATION, _REG_SET_VALUE_KEY_INFORMATION,
    HANDLE, NTSTATUS, PCUNICODE_STRING, PEPROCESS, PIMAGE_INFO, PPS_CREATE_NOTIFY_INFO,
    PUNICODE_STRING, PVOID, SID, STATUS_ACCESS_DENIED, STATUS_SUCCESS, TOKEN_MANDATORY_LABEL,
    TOKEN_STATISTICS, TOKEN_USER, ULONG_PTR,
};

use super::ffi::{free_pool, now, units};
use super::state;

fn pid(h: HANDLE) -> u32 {
    u32::try_from(h as usize).unwrap_or(u32::MAX)
}

/// The creation time of process `process_id`, if it is alive.
fn create_time_of(process_id: HANDLE) -> Option<u64> {
    let mut process: PEPROCESS = ptr::null_mut();
    // SAFETY: `process` is a valid out pointer; on success we own one reference, released below.
    let status = unsafe { PsLookupProcessByProcessId(process_id, &mut process) };
    if status != STATUS_SUCCESS || process.is_null() {
        return None;
    }
    // SAFETY: `process` is a referenced, valid EPROCESS.
    let t = unsafe { PsGetProcessCreateTimeQuadPart(process) };
    // SAFETY: releases the reference PsLookupProcessByProcessId took.
    unsafe { ObfDereferenceObject(process.cast()) };
    u64::try_from(t).ok()
}

/// Token facts of a process: user SID (copied), integrity RID, logon id, session.
struct TokenFacts {
    authority: [u8; 6],
    revision: u8,
    sub: [u32; MAX_SUB_AUTHORITIES],
    sub_count: usize,
    has_user: bool,
    integrity: Option<u32>,
    logon_id: Option<u64>,
    session_id: Option<u32>,
}

impl TokenFacts {
    fn sid(&self) -> Option<Sid<'_>> {
        self.has_user.then(|| Sid {
            revision: self.revision,
            authority: self.authority,
            sub_authorities: self.sub.get(..self.sub_count).unwrap_or(&[]),
        })
    }
}

/// Copies the facts out of a SID the kernel owns.
///
/// # Safety
/// `sid` must be null or point to a valid SID.
unsafe fn read_sid(sid: *const SID, facts: &mut TokenFacts) {
    // SAFETY: guaranteed by the caller.
    let Some(s) = (unsafe { sid.as_ref() }) else {
        return;
    };
    let count = usize::from(s.SubAuthorityCount).min(MAX_SUB_AUTHORITIES);
    // SubAuthority is declared [ULONG; 1] but holds SubAuthorityCount entries.
    let first = ptr::addr_of!(s.SubAuthority).cast::<u32>();
    for (i, slot) in facts.sub.iter_mut().enumerate().take(count) {
        // SAFETY: a valid SID holds SubAuthorityCount sub-authorities after its header.
        *slot = unsafe { first.add(i).read_unaligned() };
    }
    facts.sub_count = count;
    facts.revision = s.Revision;
    facts.authority = s.IdentifierAuthority.Value;
    facts.has_user = true;
}

fn token_facts(process: PEPROCESS) -> TokenFacts {
    let mut facts = TokenFacts {
        authority: [0; 6],
        revision: 0,
        sub: [0; MAX_SUB_AUTHORITIES],
        sub_count: 0,
        has_user: false,
        integrity: None,
        logon_id: None,
        session_id: None,
    };
    // SAFETY: `process` is the referenced EPROCESS the notification passed; the token reference
    // is released below.
    let token = unsafe { PsReferencePrimaryToken(process) };
    if token.is_null() {
        return facts;
    }
    let mut info: PVOID = ptr::null_mut();
    // SAFETY: `token` is a referenced token; on success `info` is pool we free.
    if unsafe { SeQueryInformationToken(token, TokenUser, &mut info) } == STATUS_SUCCESS {
        // SAFETY: TokenUser output is a TOKEN_USER whose SID lives in the same allocation.
        unsafe { read_sid((*info.cast::<TOKEN_USER>()).User.Sid.cast(), &mut facts) };
        // SAFETY: `info` came from SeQueryInformationToken and is not used afterwards.
        unsafe { free_pool(info) };
    }
    let mut info: PVOID = ptr::null_mut();
    // SAFETY: as above.
    if unsafe { SeQueryInformationToken(token, TokenIntegrityLevel, &mut info) } == STATUS_SUCCESS {
        let mut label = TokenFacts {
            has_user: false,
            ..facts
        };
        // SAFETY: TokenIntegrityLevel output is a TOKEN_MANDATORY_LABEL with its SID inside.
        unsafe {
            read_sid(
                (*info.cast::<TOKEN_MANDATORY_LABEL>()).Label.Sid.cast(),
                &mut label,
            )
        };
        if label.has_user && label.sub_count > 0 {
            facts.integrity = label.sub.get(label.sub_count.saturating_sub(1)).copied();
        }
        // SAFETY: as above.
        unsafe { free_pool(info) };
    }
    let mut info: PVOID = ptr::null_mut();
    // SAFETY: as above.
    if unsafe { SeQueryInformationToken(token, TokenStatistics, &mut info) } == STATUS_SUCCESS {
        // SAFETY: TokenStatistics output is a TOKEN_STATISTICS.
        let luid = unsafe { (*info.cast::<TOKEN_STATISTICS>()).AuthenticationId };
        facts.logon_id = Some((u64::from(luid.HighPart as u32) << 32) | u64::from(luid.LowPart));
        // SAFETY: as above.
        unsafe { free_pool(info) };
    }
    let mut info: PVOID = ptr::null_mut();
    // SAFETY: TokenSessionId returns the ULONG by value in `info`'s place (no allocation).
    if unsafe { SeQueryInformationToken(token, TokenSessionId, &mut info) } == STATUS_SUCCESS {
        facts.session_id = u32::try_from(info as usize).ok();
    }
    // SAFETY: releases the reference PsReferencePrimaryToken took.
    unsafe { PsDereferencePrimaryToken(token) };
    facts
}

/// `PsSetCreateProcessNotifyRoutineEx` callback: creation (with `CreateInfo`) or exit (without).
pub unsafe extern "C" fn on_process(
    process: PEPROCESS,
    process_id: HANDLE,
    create_info: PPS_CREATE_NOTIFY_INFO,
) {
    let Some(state) = state() else {
        return;
    };
    // SAFETY: the kernel passes a valid CreateInfo for the duration of the callback, or null.
    let Some(info) = (unsafe { create_info.as_mut() }) else {
        state.sensor.on_process_exit(pid(process_id));
        return;
    };
    let token = token_facts(process);
    let facts = ProcessCreateFacts {
        process_id: pid(process_id),
        // SAFETY: `process` is the new process's EPROCESS, valid during the callback.
        create_time: u64::try_from(unsafe { PsGetProcessCreateTimeQuadPart(process) }).unwrap_or(0),
        parent_process_id: pid(info.ParentProcessId),
        parent_create_time: create_time_of(info.ParentProcessId),
        // SAFETY: ImageFileName and CommandLine are valid UNICODE_STRINGs (or null) for the
        // duration of the callback.
        image_file_name: unsafe { units(info.ImageFileName) },
        // SAFETY: as above.
        command_line: unsafe { units(info.CommandLine) },
        user: token.sid(),
        integrity: token.integrity.map(|rid| (rid, false)),
        logon_id: token.logon_id,
        session_id: token.session_id,
    };
    let verdict = state.sensor.on_process_create(&facts, now());
    if verdict.block {
        info.CreationStatus = STATUS_ACCESS_DENIED;
    }
}

/// `PsSetLoadImageNotifyRoutine` callback.
pub unsafe extern "C" fn on_image(
    full_image_name: PUNICODE_STRING,
    process_id: HANDLE,
    image_info: PIMAGE_INFO,
) {
    let Some(state) = state() else {
        return;
    };
    // SAFETY: the kernel passes a valid IMAGE_INFO for the duration of the callback.
    let properties = unsafe { image_info.as_ref() }
        // SAFETY: reading the plain ULONG view of the bitfield union.
        .map_or(0, |i| unsafe { i.__bindgen_anon_1.Properties });
    let facts = ImageLoadFacts {
        process_id: pid(process_id),
        // SAFETY: FullImageName is valid (or null) for the duration of the callback.
        full_image_name: unsafe { units(full_image_name) },
        // IMAGE_INFO.ImageSignatureLevel: bits 12..16 of Properties.
        signature_level: ((properties >> 12) & 0xF) as u8,
    };
    state.sensor.on_image_load(&facts, now());
}

/// The registry path of a key object, valid while the object is.
///
/// # Safety
/// `object` must be a key object the registry callback was given.
unsafe fn key_name<'a>(cookie: &mut wdk_sys::LARGE_INTEGER, object: PVOID) -> Option<&'a [u16]> {
    let mut id: ULONG_PTR = 0;
    let mut name: PCUNICODE_STRING = ptr::null();
    // SAFETY: `object` is a registry key object from the callback; `name` is owned by the
    // configuration manager and valid while the object is referenced (the callback's duration).
    let status = unsafe { CmCallbackGetKeyObjectID(cookie, object, &mut id, &mut name) };
    if status != STATUS_SUCCESS {
        return None;
    }
    // SAFETY: see above.
    unsafe { units(name) }
}

/// What one registry notification reports, before the key's name is looked up.
struct RegistryWrite<'a> {
    op: RegistryOp,
    /// The key object (named while the callback runs).
    object: PVOID,
    value_name: Option<&'a [u16]>,
    data: Option<(u32, &'a [u8])>,
    new_name: Option<&'a [u16]>,
}

/// The operation's own structure for a post notification that succeeded.
///
/// # Safety
/// `info` must be the `REG_POST_OPERATION_INFORMATION` of a post notification, and `T` the
/// pre-operation structure of that notification class.
unsafe fn succeeded<'a, T>(info: PVOID) -> Option<(&'a _REG_POST_OPERATION_INFORMATION, &'a T)> {
    // SAFETY: guaranteed by the caller; valid for the duration of the callback.
    let post = unsafe { info.cast::<_REG_POST_OPERATION_INFORMATION>().as_ref() }?;
    if post.Status != STATUS_SUCCESS {
        return None;
    }
    // SAFETY: PreInformation is the operation's `T`, valid during the post callback.
    let pre = unsafe { post.PreInformation.cast::<T>().as_ref() }?;
    Some((post, pre))
}

/// Decodes the notifications Bulwark reports; `None` for every other class.
///
/// # Safety
/// `class` and `info` are the callback's arguments, valid for its duration.
unsafe fn registry_write<'a>(class: i32, info: PVOID) -> Option<RegistryWrite<'a>> {
    // The notification class selects the structure `info` points to, as the registry callback
    // contract documents; all are valid during the callback.
    if class == RegNtPostSetValueKey as i32 {
        // SAFETY: a RegNtPostSetValueKey post notification; its pre structure is the set-value one.
        let (post, set) = unsafe { succeeded::<_REG_SET_VALUE_KEY_INFORMATION>(info) }?;
        let data = if set.Data.is_null() {
            &[][..]
        } else {
            // SAFETY: Data holds DataSize bytes captured by the configuration manager (kernel
            // memory) for the duration of the callback.
            unsafe { core::slice::from_raw_parts(set.Data.cast::<u8>(), set.DataSize as usize) }
        };
        return Some(RegistryWrite {
            op: RegistryOp::SetValue,
            object: post.Object,
            // SAFETY: ValueName is valid during the callback.
            value_name: unsafe { units(set.ValueName) },
            data: Some((set.Type, data)),
            new_name: None,
        });
    }
    if class == RegNtPostDeleteValueKey as i32 {
        // SAFETY: a RegNtPostDeleteValueKey post notification and its pre structure.
        let (post, del) = unsafe { succeeded::<_REG_DELETE_VALUE_KEY_INFORMATION>(info) }?;
        return Some(RegistryWrite {
            op: RegistryOp::DeleteValue,
            object: post.Object,
            // SAFETY: ValueName is valid during the callback.
            value_name: unsafe { units(del.ValueName) },
            data: None,
            new_name: None,
        });
    }
    if class == RegNtPostCreateKeyEx as i32 {
        // SAFETY: a RegNtPostCreateKeyEx post notification and its pre structure.
        let (post, create) = unsafe { succeeded::<_REG_CREATE_KEY_INFORMATION_V1>(info) }?;
        // REG_CREATED_NEW_KEY = 1: report creations, not opens of existing keys.
        // SAFETY: Disposition points to the operation's result for a successful create.
        let created = unsafe { create.Disposition.as_ref() }.is_some_and(|d| *d == 1);
        return created.then_some(RegistryWrite {
            op: RegistryOp::CreateKey,
            object: post.Object,
            value_name: None,
            data: None,
            new_name: None,
        });
    }
    if class == RegNtPreDeleteKey as i32 {
        // A pre notification: the key still has its name.
        // SAFETY: for RegNtPreDeleteKey `info` is a REG_DELETE_KEY_INFORMATION.
        let del = unsafe { info.cast::<_REG_DELETE_KEY_INFORMATION>().as_ref() }?;
        return Some(RegistryWrite {
            op: RegistryOp::DeleteKey,
            object: del.Object,
            value_name: None,
            data: None,
            new_name: None,
        });
    }
    if class == RegNtPostRenameKey as i32 {
        // The key's name is the new one after the operation; the old path is not available.
        // SAFETY: a RegNtPostRenameKey post notification and its pre structure.
        let (_, ren) = unsafe { succeeded::<_REG_RENAME_KEY_INFORMATION>(info) }?;
        return Some(RegistryWrite {
            op: RegistryOp::RenameKey,
            object: ren.Object,
            value_name: None,
            data: None,
            // SAFETY: NewName is valid during the callback.
            new_name: unsafe { units(ren.NewName) },
        });
    }
    None
}

/// `CmRegisterCallbackEx` callback: registry writes, after they succeed (deletes before, while
/// the key still has a name). Never changes the operation's outcome.
pub unsafe extern "C" fn on_registry(_context: PVOID, class: PVOID, info: PVOID) -> NTSTATUS {
    let Some(state) = state() else {
        return STATUS_SUCCESS;
    };
    // SAFETY: the callback's own arguments.
    let Some(write) = (unsafe { registry_write(class as usize as i32, info) }) else {
        return STATUS_SUCCESS;
    };
    let mut cookie = state.registry_cookie();
    // SAFETY: the key object of this notification, valid during the callback.
    let Some(key) = (unsafe { key_name(&mut cookie, write.object) }) else {
        return STATUS_SUCCESS;
    };
    let facts = RegistryFacts {
        op: write.op,
        // SAFETY: always callable; the current process's id.
        process_id: pid(unsafe { wdk_sys::ntddk::PsGetCurrentProcessId() }),
        key_path: key,
        value_name: write.value_name,
        data: write.data,
        new_name: write.new_name,
    };
    state.sensor.on_registry(&facts, now());
    STATUS_SUCCESS
}
