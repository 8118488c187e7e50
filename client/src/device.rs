//! The control device on Windows: `CreateFileW(\\.\Bulwark)` and `DeviceIoControl`.

use std::io;

use windows_sys::Win32::Foundation::{
    CloseHandle, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::IO::DeviceIoControl;

use crate::{ClientError, Transport};

/// An open handle to `\\.\Bulwark` (needs an elevated administrator or SYSTEM: the device's SDDL
/// admits no one else).
pub struct DeviceTransport {
    handle: HANDLE,
}

impl DeviceTransport {
    /// Opens the device for reading and writing.
    pub fn open() -> Result<Self, ClientError> {
        let path: Vec<u16> = bulwark_protocol::USER_PATH
            .encode_utf16()
            .chain([0])
            .collect();
        // SAFETY: `path` is a NUL-terminated UTF-16 string that outlives the call; the other
        // arguments are plain values or null where the API allows it.
        let handle = unsafe {
            CreateFileW(
                path.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                std::ptr::null(),
                OPEN_EXISTING,
                0,
                std::ptr::null_mut(),
            )
        };
        if handle == INVALID_HANDLE_VALUE {
            return Err(ClientError::Open(io::Error::last_os_error()));
        }
        Ok(DeviceTransport { handle })
    }
}

impl Transport for DeviceTransport {
    fn ioctl(&mut self, ioctl: u32, input: &[u8], output: &mut [u8]) -> Result<usize, ClientError> {
        let mut returned = 0u32;
        let in_len =
            u32::try_from(input.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let out_len = u32::try_from(output.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the buffers are valid for their lengths for the duration of this synchronous
        // call (the handle was not opened for overlapped I/O); `returned` is a valid out pointer.
        let ok = unsafe {
            DeviceIoControl(
                self.handle,
                ioctl,
                input.as_ptr().cast(),
                in_len,
                output.as_mut_ptr().cast(),
                out_len,
                &mut returned,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(ClientError::Io(io::Error::last_os_error()));
        }
        Ok(returned as usize)
    }
}

impl Drop for DeviceTransport {
    fn drop(&mut self) {
        // SAFETY: `handle` was opened by `open` and is closed exactly once, here.
        unsafe { CloseHandle(self.handle) };
    }
}
