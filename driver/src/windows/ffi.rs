//! Small safe wrappers over the kernel calls and structures the rest of the layer uses, and the
//! declarations the WDK headers wdk-sys binds do not carry.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use bulwark_driver_core::nt;

use wdk_sys::ntddk::{
    ExFreePool, KeDelayExecutionThread, KeExpandKernelStackAndCallout, RtlInitUnicodeString,
};
use wdk_sys::{
    _IO_STACK_LOCATION, _IRP, _MODE::KernelMode, LARGE_INTEGER, NTSTATUS, PCUNICODE_STRING,
    PDEVICE_OBJECT, PDRIVER_OBJECT, PUNICODE_STRING, PVOID, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_NAME_TOO_LONG, STATUS_SUCCESS, STATUS_UNSUCCESSFUL, ULONG, UNICODE_STRING,
};

unsafe extern "C" {
    /// `wdmsec.h`: creates a device object with a security descriptor given in SDDL, applied
    /// before any handle can be opened (not in the headers wdk-sys binds; linked from wdmsec.lib).
    pub fn IoCreateDeviceSecure(
        DriverObject: PDRIVER_OBJECT,
        DeviceExtensionSize: ULONG,
        DeviceName: PUNICODE_STRING,
        DeviceType: ULONG,
        DeviceCharacteristics: ULONG,
        Exclusive: u8,
        DefaultSDDLString: PCUNICODE_STRING,
        DeviceClassGuid: *const wdk_sys::GUID,
        DeviceObject: *mut PDEVICE_OBJECT,
    ) -> NTSTATUS;

    /// The system time in 100 ns units since 1601 (Windows 8 and later).
    pub fn KeQuerySystemTimePrecise(CurrentTime: *mut LARGE_INTEGER);
}

/// The kernel stack the control plane's work runs on (see [`on_large_stack`]): 64 KiB, under the
/// x64 limit of `MAXIMUM_EXPANSION_SIZE` (`KERNEL_LARGE_STACK_SIZE`, 0x12000 = 72 KiB on AMD64,
/// less half a page). `bulwark-stack-budget` holds what runs on it to 56 KiB.
pub const LARGE_STACK_BYTES: usize = 64 * 1024;

/// Runs `f` on a fresh kernel stack of [`LARGE_STACK_BYTES`] (`KeExpandKernelStackAndCallout`)
/// and returns its result, or the status when the kernel cannot provide the stack (then `f` has
/// not run). The control plane's work (opening the guard's records, verifying a staged pack's
/// signature and program, writing records) needs more stack than the 24 KiB thread stack leaves
/// a driver that is called with part of it already used; everything else (the callbacks) runs on
/// the caller's stack and is held to a small budget by `bulwark-stack-budget`.
/// IRQL <= DISPATCH_LEVEL (every caller is at PASSIVE_LEVEL).
pub fn on_large_stack<R>(f: impl FnOnce() -> R) -> Result<R, NTSTATUS> {
    let mut f = Some(f);
    let mut out: Option<R> = None;
    let mut call = || {
        if let Some(f) = f.take() {
            out = Some(f());
        }
    };
    let mut call: &mut dyn FnMut() = &mut call;
    let parameter: *mut &mut dyn FnMut() = &mut call;
    // SAFETY: `large_stack_callout` receives `parameter`, a pointer to a live `&mut dyn FnMut()`
    // on this frame, and the kernel calls it synchronously on this thread before returning.
    let status = unsafe {
        KeExpandKernelStackAndCallout(
            Some(large_stack_callout),
            parameter.cast(),
            LARGE_STACK_BYTES as u64,
        )
    };
    if status != STATUS_SUCCESS {
        return Err(status);
    }
    out.ok_or(STATUS_UNSUCCESSFUL)
}

/// The callout [`on_large_stack`] hands the kernel; `bulwark-stack-budget` holds what it reaches to
/// the large stack's budget.
unsafe extern "C" fn large_stack_callout(parameter: PVOID) {
    // SAFETY: `parameter` is the `*mut &mut dyn FnMut()` on_large_stack passed, valid for the call.
    if let Some(f) = unsafe { parameter.cast::<&mut dyn FnMut()>().as_mut() } {
        f();
    }
}

/// The class GUID of the control device, so an administrator can set its security in the registry.
/// {4b8e7f0a-52c1-4d2e-9c55-7a1f0c3b9e21}
pub const DEVICE_CLASS_GUID: wdk_sys::GUID = wdk_sys::GUID {
    Data1: 0x4b8e_7f0a,
    Data2: 0x52c1,
    Data3: 0x4d2e,
    Data4: [0x9c, 0x55, 0x7a, 0x1f, 0x0c, 0x3b, 0x9e, 0x21],
};

/// The current system time (100 ns since 1601-01-01 UTC).
pub fn now() -> u64 {
    let mut t = LARGE_INTEGER::default();
    // SAFETY: `t` is a valid, writable LARGE_INTEGER; the call only writes it. Callable at any IRQL.
    unsafe { KeQuerySystemTimePrecise(&mut t) };
    // SAFETY: every bit pattern of the union is a valid i64.
    let v = unsafe { t.QuadPart };
    u64::try_from(v).unwrap_or(0)
}

/// Sleeps the current thread for `ms` milliseconds. PASSIVE_LEVEL only.
pub fn sleep_ms(ms: u32) {
    let mut interval = LARGE_INTEGER::default();
    // Negative: relative, in 100 ns units.
    interval.QuadPart = i64::from(ms).saturating_mul(-10_000);
    // SAFETY: `interval` is valid for the call; kernel-mode, non-alertable wait at PASSIVE_LEVEL
    // (every caller of this function runs there: IOCTL dispatch, the worker thread, unload).
    let _ = unsafe { KeDelayExecutionThread(KernelMode as i8, 0, &mut interval) };
}

/// The UTF-16 units of a `UNICODE_STRING` the kernel handed over, or `None` for a null pointer.
///
/// # Safety
/// `s` must be null or point to a valid `UNICODE_STRING` whose `Buffer` holds `Length` bytes, and
/// both must stay valid and unchanged for `'a`.
pub unsafe fn units<'a>(s: *const UNICODE_STRING) -> Option<&'a [u16]> {
    // SAFETY: the caller guarantees `s` is null or valid for `'a`.
    let s = unsafe { s.as_ref() }?;
    if s.Buffer.is_null() || s.Length == 0 {
        return Some(&[]);
    }
    let len = usize::from(s.Length / 2);
    // SAFETY: the caller guarantees `Buffer` holds `Length` bytes, valid for `'a`; u16 alignment is
    // guaranteed for UNICODE_STRING buffers.
    Some(unsafe { core::slice::from_raw_parts(s.Buffer, len) })
}

/// A counted UTF-16 string built from a Rust `&str`, owned, for passing names to the kernel.
pub struct OwnedUnicode {
    buf: Vec<u16>,
    us: UNICODE_STRING,
}

impl OwnedUnicode {
    /// Encodes `s`. A name longer than a `UNICODE_STRING` can count
    /// ([`nt::MAX_COUNTED_UNITS`] units) is refused, never cut (a cut name names another object),
    /// and so is a name the pool has no room for: neither can bugcheck.
    pub fn new(s: &str) -> Result<Self, NTSTATUS> {
        let units = s.encode_utf16().count();
        let (length, maximum) = nt::counted_string_sizes(units).ok_or(STATUS_NAME_TOO_LONG)?;
        let mut buf: Vec<u16> = Vec::new();
        buf.try_reserve_exact(units.saturating_add(1))
            .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
        // Within the reserved capacity: no reallocation.
        buf.extend(s.encode_utf16());
        buf.push(0);
        let us = UNICODE_STRING {
            Length: length,
            MaximumLength: maximum,
            Buffer: buf.as_mut_ptr(),
        };
        Ok(OwnedUnicode { buf, us })
    }

    /// A pointer for calls that take `PUNICODE_STRING`; valid while `self` lives and is not moved.
    pub fn as_ptr(&mut self) -> PUNICODE_STRING {
        self.us.Buffer = self.buf.as_mut_ptr();
        &mut self.us
    }
}

/// A zeroed byte buffer of `len` bytes, or `None` when the pool has no room (never a bugcheck).
pub fn try_zeroed(len: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, 0);
    Some(v)
}

/// A copy of `bytes`, or `None` when the pool has no room.
pub fn try_copy(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(bytes.len()).ok()?;
    v.extend_from_slice(bytes);
    Some(v)
}

/// `Box::new` that gives `None` when the pool has no room, instead of aborting (which wdk-panic
/// turns into a bugcheck).
pub fn try_box<T>(value: T) -> Option<Box<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(1).ok()?;
    v.push(value);
    // Length and capacity are both 1: no reallocation.
    let array: Box<[T; 1]> = v.into_boxed_slice().try_into().ok()?;
    // SAFETY: `[T; 1]` and `T` have the same size, alignment and layout, so the allocation made
    // for the array is the allocation `Box<T>` would make, and ownership moves whole.
    Some(unsafe { Box::from_raw(Box::into_raw(array).cast::<T>()) })
}

/// A `String` from UTF-16 units (invalid units become U+FFFD), or `None` when the pool has no room.
pub fn try_string_from_utf16(units: &[u16]) -> Option<String> {
    let decoded = || char::decode_utf16(units.iter().copied()).map(|c| c.unwrap_or('\u{fffd}'));
    let len = decoded()
        .map(char::len_utf8)
        .fold(0usize, usize::saturating_add);
    let mut s = String::new();
    s.try_reserve_exact(len).ok()?;
    s.extend(decoded());
    Some(s)
}

/// A `UNICODE_STRING` over a static, NUL-terminated UTF-16 literal.
pub fn init_unicode(s: &'static [u16]) -> UNICODE_STRING {
    let mut us = UNICODE_STRING::default();
    // SAFETY: `s` is a NUL-terminated static UTF-16 string; `us` is written only.
    unsafe { RtlInitUnicodeString(&mut us, s.as_ptr()) };
    us
}

/// The current I/O stack location of `irp` (the `IoGetCurrentIrpStackLocation` inline).
///
/// # Safety
/// `irp` must be a valid IRP being dispatched to this driver.
pub unsafe fn current_stack_location(irp: *mut _IRP) -> *mut _IO_STACK_LOCATION {
    // SAFETY: the caller guarantees `irp` is valid; CurrentStackLocation is set by the I/O manager
    // for an IRP in dispatch.
    unsafe {
        (*irp)
            .Tail
            .Overlay
            .__bindgen_anon_2
            .__bindgen_anon_1
            .CurrentStackLocation
    }
}

/// Frees pool the kernel allocated for us (for example `SeQueryInformationToken` output).
///
/// # Safety
/// `p` must be a pool allocation owned by the caller, not used afterwards.
pub unsafe fn free_pool(p: PVOID) {
    if !p.is_null() {
        // SAFETY: guaranteed by the caller.
        unsafe { ExFreePool(p) };
    }
}

/// Encodes an ASCII literal as a NUL-terminated UTF-16 array at compile time.
macro_rules! wide {
    ($s:literal) => {{
        const S: &str = $s;
        #[allow(clippy::arithmetic_side_effects)]
        const N: usize = S.len() + 1;
        // Evaluated by the compiler: an out-of-bounds index is a build error, never a bugcheck.
        #[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
        const W: [u16; N] = {
            let bytes = S.as_bytes();
            let mut out = [0u16; N];
            let mut i = 0;
            while i < bytes.len() {
                out[i] = bytes[i] as u16;
                i += 1;
            }
            out
        };
        &W
    }};
}
pub(crate) use wide;
