//! The guard's persistence on Windows: its two records as REG_BINARY values of the service's
//! `Parameters` key, each write followed by `ZwFlushKey` (a bugcheck seconds after a lazy registry
//! write would lose it), and the signed envelopes as write-through files in the content directory,
//! named by version and hash (a torn file fails its signature check and is never trusted).
//! PASSIVE_LEVEL only.

use alloc::vec::Vec;
use core::ptr;

use bulwark_loader_boot_guard::{ContentId, Slot, Store, StoreError};
use wdk_sys::ntddk::{
    ZwClose, ZwCreateFile, ZwDeleteFile, ZwFlushBuffersFile, ZwFlushKey, ZwQueryInformationFile,
    ZwQueryValueKey, ZwReadFile, ZwSetValueKey, ZwWriteFile,
};
use wdk_sys::_FILE_INFORMATION_CLASS::FileStandardInformation;
use wdk_sys::_KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation;
use wdk_sys::{
    FILE_ATTRIBUTE_NORMAL, FILE_DIRECTORY_FILE, FILE_NON_DIRECTORY_FILE, FILE_OPEN, FILE_OPEN_IF,
    FILE_OVERWRITE_IF, FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_STANDARD_INFORMATION,
    FILE_SYNCHRONOUS_IO_NONALERT, FILE_WRITE_THROUGH, GENERIC_READ, GENERIC_WRITE, HANDLE,
    IO_STATUS_BLOCK, KEY_VALUE_PARTIAL_INFORMATION, NTSTATUS, OBJECT_ATTRIBUTES,
    OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, REG_BINARY, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS, SYNCHRONIZE,
};

use super::ffi::{try_copy, try_zeroed, OwnedUnicode};

/// An open kernel handle, closed on drop.
pub struct Handle(pub HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the handle was opened by this module as a kernel handle and is closed once.
            let _ = unsafe { ZwClose(self.0) };
        }
    }
}

fn io(status: NTSTATUS) -> StoreError {
    StoreError::Io(status as u32)
}

/// Object attributes for a kernel handle to `name`.
fn attributes(name: &mut OwnedUnicode, root: HANDLE) -> OBJECT_ATTRIBUTES {
    OBJECT_ATTRIBUTES {
        Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: root,
        ObjectName: name.as_ptr(),
        Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: ptr::null_mut(),
        SecurityQualityOfService: ptr::null_mut(),
    }
}

/// Opens a directory by its full NT path; `create` creates it if it is missing (its parent must
/// exist: see `open_content_directory`).
pub fn open_directory(path: &str, create: bool) -> Result<Handle, NTSTATUS> {
    let mut name = OwnedUnicode::new(path)?;
    let mut oa = attributes(&mut name, ptr::null_mut());
    let mut iosb = IO_STATUS_BLOCK::default();
    let mut h: HANDLE = ptr::null_mut();
    // SAFETY: all pointers are valid for the call; a kernel handle is returned in `h`.
    let status = unsafe {
        ZwCreateFile(
            &mut h,
            GENERIC_READ | SYNCHRONIZE,
            &mut oa,
            &mut iosb,
            ptr::null_mut(),
            FILE_ATTRIBUTE_NORMAL,
            FILE_SHARE_READ | FILE_SHARE_WRITE,
            if create { FILE_OPEN_IF } else { FILE_OPEN },
            FILE_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT,
            ptr::null_mut(),
            0,
        )
    };
    if status == STATUS_SUCCESS {
        Ok(Handle(h))
    } else {
        Err(status)
    }
}

/// The length of an envelope's file name.
const BLOB_NAME_LEN: usize = 20 + 1 + 32 + 6;

/// An envelope's file name (ASCII).
struct BlobName {
    bytes: [u8; BLOB_NAME_LEN],
}

impl BlobName {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes).unwrap_or("")
    }
}

/// The registry and file store.
pub struct WindowsStore {
    /// The `Parameters` key (kernel handle, open for the driver's lifetime).
    key: Handle,
    /// The content directory (kernel handle; files are opened relative to it).
    dir: Handle,
}

impl WindowsStore {
    /// A store over an open `Parameters` key and content directory.
    pub fn new(key: Handle, dir: Handle) -> Self {
        WindowsStore { key, dir }
    }

    fn value_name(slot: Slot) -> Result<OwnedUnicode, StoreError> {
        OwnedUnicode::new(match slot {
            Slot::A => "GuardRecordA",
            Slot::B => "GuardRecordB",
        })
        .map_err(io)
    }

    /// `<version, 20 digits>-<first 16 bytes of the hash, hex>.bwenv`, in a fixed buffer (no
    /// allocation on the worker and IOCTL paths that write content).
    fn blob_name(id: &ContentId) -> BlobName {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let digit = |d: u64| {
            DIGITS
                .get(usize::try_from(d).unwrap_or(0))
                .copied()
                .unwrap_or(b'?')
        };
        let mut bytes = [0u8; BLOB_NAME_LEN];
        let (version, rest) = bytes.split_at_mut(20);
        let mut v = id.version;
        for slot in version.iter_mut().rev() {
            *slot = digit(v % 10);
            v /= 10;
        }
        let (dash, rest) = rest.split_at_mut(1);
        dash.fill(b'-');
        let (hex, suffix) = rest.split_at_mut(32);
        for (pair, b) in hex.chunks_exact_mut(2).zip(id.hash.iter()) {
            if let [hi, lo] = pair {
                *hi = digit(u64::from(b >> 4));
                *lo = digit(u64::from(b & 0xf));
            }
        }
        suffix.copy_from_slice(b".bwenv");
        BlobName { bytes }
    }

    fn open_file(&self, name: &str, write: bool) -> Result<Handle, StoreError> {
        let mut uname = OwnedUnicode::new(name).map_err(io)?;
        let mut oa = attributes(&mut uname, self.dir.0);
        let mut iosb = IO_STATUS_BLOCK::default();
        let mut h: HANDLE = ptr::null_mut();
        let (access, disposition, options) = if write {
            (
                GENERIC_WRITE | SYNCHRONIZE,
                FILE_OVERWRITE_IF,
                FILE_NON_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT | FILE_WRITE_THROUGH,
            )
        } else {
            (
                GENERIC_READ | SYNCHRONIZE,
                FILE_OPEN,
                FILE_NON_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT,
            )
        };
        // SAFETY: all pointers are valid for the call; the directory handle is open.
        let status = unsafe {
            ZwCreateFile(
                &mut h,
                access,
                &mut oa,
                &mut iosb,
                ptr::null_mut(),
                FILE_ATTRIBUTE_NORMAL,
                FILE_SHARE_READ,
                disposition,
                options,
                ptr::null_mut(),
                0,
            )
        };
        match status {
            STATUS_SUCCESS => Ok(Handle(h)),
            STATUS_OBJECT_NAME_NOT_FOUND => Err(StoreError::NotFound),
            s => Err(io(s)),
        }
    }
}

impl Store for WindowsStore {
    fn read_record(&mut self, slot: Slot, buf: &mut Vec<u8>, max: usize) -> Result<(), StoreError> {
        buf.clear();
        let mut name = Self::value_name(slot)?;
        let header = core::mem::size_of::<KEY_VALUE_PARTIAL_INFORMATION>();
        let mut info = try_zeroed(header.saturating_add(max).saturating_add(1))
            .ok_or(StoreError::Io(STATUS_INSUFFICIENT_RESOURCES as u32))?;
        let mut got = 0u32;
        // SAFETY: `info` is writable for its length; `name` lives across the call.
        let status = unsafe {
            ZwQueryValueKey(
                self.key.0,
                name.as_ptr(),
                KeyValuePartialInformation,
                info.as_mut_ptr().cast(),
                info.len() as u32,
                &mut got,
            )
        };
        if status == STATUS_OBJECT_NAME_NOT_FOUND {
            return Ok(());
        }
        if status != STATUS_SUCCESS {
            return Err(io(status));
        }
        // SAFETY: on success the buffer starts with a KEY_VALUE_PARTIAL_INFORMATION header; it is
        // read unaligned because a Vec<u8> has byte alignment.
        let partial =
            unsafe { ptr::read_unaligned(info.as_ptr().cast::<KEY_VALUE_PARTIAL_INFORMATION>()) };
        let len = partial.DataLength as usize;
        if len > max {
            return Err(StoreError::TooLarge { max });
        }
        let data_at = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data);
        match info.get(data_at..data_at.saturating_add(len)) {
            Some(data) => {
                buf.try_reserve_exact(data.len())
                    .map_err(|_| StoreError::Io(STATUS_INSUFFICIENT_RESOURCES as u32))?;
                buf.extend_from_slice(data);
                Ok(())
            }
            None => Err(StoreError::TooLarge { max }),
        }
    }

    fn write_record(&mut self, slot: Slot, bytes: &[u8]) -> Result<(), StoreError> {
        let mut name = Self::value_name(slot)?;
        let mut data =
            try_copy(bytes).ok_or(StoreError::Io(STATUS_INSUFFICIENT_RESOURCES as u32))?;
        // SAFETY: `data` is valid for its length; `name` lives across the call.
        let status = unsafe {
            ZwSetValueKey(
                self.key.0,
                name.as_ptr(),
                0,
                REG_BINARY,
                data.as_mut_ptr().cast(),
                data.len() as u32,
            )
        };
        if status != STATUS_SUCCESS {
            return Err(io(status));
        }
        // SAFETY: the key handle is open. Flushing makes the write durable before we act on it.
        let status = unsafe { ZwFlushKey(self.key.0) };
        if status != STATUS_SUCCESS {
            return Err(io(status));
        }
        Ok(())
    }

    fn put_blob(&mut self, id: &ContentId, bytes: &[u8]) -> Result<(), StoreError> {
        let file = self.open_file(Self::blob_name(id).as_str(), true)?;
        let mut iosb = IO_STATUS_BLOCK::default();
        let mut data =
            try_copy(bytes).ok_or(StoreError::Io(STATUS_INSUFFICIENT_RESOURCES as u32))?;
        // SAFETY: `data` is valid for its length; synchronous I/O on our own kernel handle.
        let status = unsafe {
            ZwWriteFile(
                file.0,
                ptr::null_mut(),
                None,
                ptr::null_mut(),
                &mut iosb,
                data.as_mut_ptr().cast(),
                data.len() as u32,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if status != STATUS_SUCCESS || iosb.Information as usize != data.len() {
            return Err(io(status));
        }
        // SAFETY: as above.
        let status = unsafe { ZwFlushBuffersFile(file.0, &mut iosb) };
        if status != STATUS_SUCCESS {
            return Err(io(status));
        }
        Ok(())
    }

    fn get_blob(
        &mut self,
        id: &ContentId,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), StoreError> {
        buf.clear();
        let file = self.open_file(Self::blob_name(id).as_str(), false)?;
        let mut iosb = IO_STATUS_BLOCK::default();
        let mut info = FILE_STANDARD_INFORMATION::default();
        // SAFETY: `info` is a writable FILE_STANDARD_INFORMATION.
        let status = unsafe {
            ZwQueryInformationFile(
                file.0,
                &mut iosb,
                ptr::addr_of_mut!(info).cast(),
                core::mem::size_of::<FILE_STANDARD_INFORMATION>() as u32,
                FileStandardInformation,
            )
        };
        if status != STATUS_SUCCESS {
            return Err(io(status));
        }
        // SAFETY: reading the i64 view of the union.
        let size = unsafe { info.EndOfFile.QuadPart };
        let size = usize::try_from(size).map_err(|_| StoreError::TooLarge { max })?;
        if size > max {
            return Err(StoreError::TooLarge { max });
        }
        buf.try_reserve_exact(size)
            .map_err(|_| StoreError::Io(STATUS_INSUFFICIENT_RESOURCES as u32))?;
        buf.resize(size, 0);
        // SAFETY: `buf` is writable for `size` bytes; synchronous I/O.
        let status = unsafe {
            ZwReadFile(
                file.0,
                ptr::null_mut(),
                None,
                ptr::null_mut(),
                &mut iosb,
                buf.as_mut_ptr().cast(),
                size as u32,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if status != STATUS_SUCCESS || iosb.Information as usize != size {
            buf.clear();
            return Err(io(status));
        }
        Ok(())
    }

    fn remove_blob(&mut self, id: &ContentId) -> Result<(), StoreError> {
        let mut name = OwnedUnicode::new(Self::blob_name(id).as_str()).map_err(io)?;
        let mut oa = attributes(&mut name, self.dir.0);
        // SAFETY: `oa` names a file relative to our open directory handle.
        match unsafe { ZwDeleteFile(&mut oa) } {
            STATUS_SUCCESS | STATUS_OBJECT_NAME_NOT_FOUND => Ok(()),
            s => Err(io(s)),
        }
    }
}
