//! The control device: created with an SDDL that admits only SYSTEM and Administrators, buffered
//! IOCTLs handed to the core's protocol handler, and the shutdown notification.

use core::ptr;

use bulwark_protocol::{ProtocolError, DEVICE_SDDL, FILE_DEVICE_UNKNOWN};
use wdk_sys::ntddk::{
    IoCreateSymbolicLink, IoDeleteDevice, IoDeleteSymbolicLink, IofCompleteRequest,
};
use wdk_sys::{
    DEVICE_OBJECT, DRIVER_OBJECT, FILE_DEVICE_SECURE_OPEN, IO_NO_INCREMENT, IRP, NTSTATUS,
    PDEVICE_OBJECT, STATUS_BUFFER_TOO_SMALL, STATUS_DEVICE_BUSY, STATUS_DEVICE_NOT_READY,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED, STATUS_SUCCESS,
};

use super::ffi::{
    current_stack_location, init_unicode, on_large_stack, sleep_ms, wide, IoCreateDeviceSecure,
    DEVICE_CLASS_GUID,
};
use super::state;

/// `\Device\Bulwark` (bulwark_protocol::DEVICE_NAME).
static DEVICE_NAME: &[u16] = wide!("\\Device\\Bulwark");
/// `\DosDevices\Bulwark` (bulwark_protocol::SYMLINK_NAME).
static SYMLINK_NAME: &[u16] = wide!("\\DosDevices\\Bulwark");
/// The SDDL of bulwark_protocol::DEVICE_SDDL.
static SDDL: &[u16] = wide!("D:P(A;;GA;;;SY)(A;;GA;;;BA)");

const _: () = assert!(DEVICE_SDDL.len() + 1 == SDDL.len());

/// Creates the control device and its symbolic link.
pub fn create(driver: *mut DRIVER_OBJECT) -> Result<PDEVICE_OBJECT, NTSTATUS> {
    let mut name = init_unicode(DEVICE_NAME);
    let sddl = init_unicode(SDDL);
    let mut device: PDEVICE_OBJECT = ptr::null_mut();
    // SAFETY: `driver` is our driver object (DriverEntry); the strings live across the call; the
    // SDDL is applied by the I/O manager before any handle can be opened; FILE_DEVICE_SECURE_OPEN
    // applies it to opens of names under the device too.
    let status = unsafe {
        IoCreateDeviceSecure(
            driver,
            0,
            &mut name,
            FILE_DEVICE_UNKNOWN,
            FILE_DEVICE_SECURE_OPEN,
            0,
            &sddl,
            &DEVICE_CLASS_GUID,
            &mut device,
        )
    };
    if status != STATUS_SUCCESS {
        return Err(status);
    }
    let mut link = init_unicode(SYMLINK_NAME);
    // SAFETY: both strings are valid for the call.
    let status = unsafe { IoCreateSymbolicLink(&mut link, &mut name) };
    if status != STATUS_SUCCESS {
        // SAFETY: the device was created above and nothing else refers to it yet.
        unsafe { IoDeleteDevice(device) };
        return Err(status);
    }
    Ok(device)
}

/// Deletes the symbolic link and the device.
///
/// # Safety
/// `device` must be the device [`create`] returned, with no IRP in flight.
pub unsafe fn delete(device: PDEVICE_OBJECT) {
    let mut link = init_unicode(SYMLINK_NAME);
    // SAFETY: the link was created by `create`.
    let _ = unsafe { IoDeleteSymbolicLink(&mut link) };
    // SAFETY: guaranteed by the caller.
    unsafe { IoDeleteDevice(device) };
}

/// Completes `irp` with `status` and `information` bytes.
///
/// # Safety
/// `irp` must be an IRP dispatched to us and not yet completed.
unsafe fn complete(irp: *mut IRP, status: NTSTATUS, information: usize) -> NTSTATUS {
    // SAFETY: guaranteed by the caller; the IRP is ours until completed here.
    unsafe {
        (*irp).IoStatus.__bindgen_anon_1.Status = status;
        (*irp).IoStatus.Information = information as u64;
        IofCompleteRequest(irp, IO_NO_INCREMENT as i8);
    }
    status
}

/// IRP_MJ_CREATE and IRP_MJ_CLOSE: access was already checked against the device's SDDL.
pub unsafe extern "C" fn dispatch_create_close(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: an IRP dispatched to us.
    unsafe { complete(irp, STATUS_SUCCESS, 0) }
}

/// IRP_MJ_SHUTDOWN: a clean shutdown is recorded, so the next boot is not counted as a crash.
pub unsafe extern "C" fn dispatch_shutdown(_device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    if let Some(state) = state() {
        state.clean_shutdown();
    }
    // SAFETY: an IRP dispatched to us.
    unsafe { complete(irp, STATUS_SUCCESS, 0) }
}

fn status_of(e: &ProtocolError) -> NTSTATUS {
    match e {
        ProtocolError::OutputTooSmall { .. } => STATUS_BUFFER_TOO_SMALL,
        ProtocolError::UnknownIoctl { .. } => STATUS_INVALID_DEVICE_REQUEST,
        ProtocolError::UnsupportedVersion { .. } => STATUS_NOT_SUPPORTED,
        _ => STATUS_INVALID_PARAMETER,
    }
}

/// IRP_MJ_DEVICE_CONTROL: METHOD_BUFFERED only, so the driver reads and writes the system buffer
/// the I/O manager copied, never user memory. Runs at PASSIVE_LEVEL.
pub unsafe extern "C" fn dispatch_ioctl(_device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // A stage verifies a signature and a whole pack: all requests run on the large stack.
    // SAFETY: our caller's IRP, passed on; completed exactly once, by `ioctl` or here.
    match on_large_stack(|| unsafe { ioctl(irp) }) {
        Ok(status) => status,
        // SAFETY: `ioctl` did not run, so the IRP is still ours to complete.
        Err(status) => unsafe { complete(irp, status, 0) },
    }
}

/// The IOCTL's work, on the large stack.
///
/// # Safety
/// `irp` is an IRP_MJ_DEVICE_CONTROL dispatched to us and not yet completed.
unsafe fn ioctl(irp: *mut IRP) -> NTSTATUS {
    let Some(state) = state() else {
        // SAFETY: an IRP dispatched to us.
        return unsafe { complete(irp, STATUS_DEVICE_NOT_READY, 0) };
    };
    // SAFETY: an IRP dispatched to us has a current stack location.
    let stack = unsafe { &*current_stack_location(irp) };
    // SAFETY: for IRP_MJ_DEVICE_CONTROL, Parameters.DeviceIoControl is the active union member.
    let params = unsafe { stack.Parameters.DeviceIoControl };
    let code = params.IoControlCode;
    if code & 3 != bulwark_protocol::METHOD_BUFFERED {
        // SAFETY: as above.
        return unsafe { complete(irp, STATUS_INVALID_DEVICE_REQUEST, 0) };
    }
    // SAFETY: METHOD_BUFFERED: SystemBuffer holds max(input, output) bytes, the input copied in.
    let system = unsafe { (*irp).AssociatedIrp.SystemBuffer }.cast::<u8>();
    let in_len = params.InputBufferLength as usize;
    let out_len = params.OutputBufferLength as usize;
    if system.is_null() && (in_len > 0 || out_len > 0) {
        // SAFETY: as above.
        return unsafe { complete(irp, STATUS_INVALID_PARAMETER, 0) };
    }
    if in_len > bulwark_protocol::MAX_REQUEST_LEN {
        // Longer than any request: refused before a byte of it is copied.
        // SAFETY: as above.
        return unsafe { complete(irp, STATUS_INVALID_PARAMETER, 0) };
    }
    // The request is copied out first, because the reply is written into the same buffer.
    let input = if in_len == 0 {
        alloc::vec::Vec::new()
    } else {
        // SAFETY: SystemBuffer holds at least InputBufferLength bytes of input.
        match super::ffi::try_copy(unsafe { core::slice::from_raw_parts(system, in_len) }) {
            Some(input) => input,
            // SAFETY: as above.
            None => return unsafe { complete(irp, STATUS_INSUFFICIENT_RESOURCES, 0) },
        }
    };
    let output: &mut [u8] = if out_len == 0 {
        &mut []
    } else {
        // SAFETY: SystemBuffer holds at least OutputBufferLength writable bytes; `input` no longer
        // borrows it.
        unsafe { core::slice::from_raw_parts_mut(system, out_len) }
    };
    let Some(mut control) = state.try_control() else {
        // SAFETY: as above.
        return unsafe { complete(irp, STATUS_DEVICE_BUSY, 0) };
    };
    let result = state.sensor.handle_ioctl(
        code,
        &input,
        output,
        control.plane(),
        super::ffi::now(),
        &mut || sleep_ms(1),
    );
    drop(control);
    match result {
        // SAFETY: as above.
        Ok(n) => unsafe { complete(irp, STATUS_SUCCESS, n) },
        // SAFETY: as above.
        Err(e) => unsafe { complete(irp, status_of(&e), 0) },
    }
}
