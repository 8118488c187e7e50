//! The Windows layer: `DriverEntry`, unload, and the glue between kernel facilities and the
//! platform-neutral core. Only FFI calls, IRQL and memory rules live here; every decision is the
//! core's.
//!
//! Start-up order: read the configuration from the `Parameters` key, build the sensor, create the
//! control device, register the callbacks (nothing evaluates until content is installed), then
//! start the control plane (the guard's boot decision, then the chosen content) as soon as the
//! content directory can be opened: at once when the driver starts late, or in the boot-driver
//! reinitialization routine for a boot-start driver whose volume is not mounted yet. A worker
//! thread ticks the guard's stable period.

#[cfg(not(test))]
extern crate wdk_panic;

#[cfg(not(test))]
use wdk_alloc::WdkAllocator;

#[cfg(not(test))]
#[global_allocator]
static GLOBAL_ALLOCATOR: WdkAllocator = WdkAllocator;

mod callbacks;
mod device;
mod ffi;
mod store;
mod volumes;

use alloc::boxed::Box;
use alloc::string::String;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, Ordering};

use bulwark_driver_core::control::{Control, Lifecycle, Starting};
use bulwark_driver_core::nt::{self, OpenFailure};
use bulwark_driver_core::plane_lock::{PlaneGuard, PlaneLock};
use bulwark_driver_core::sensor::{Capacities, Sensor};
use bulwark_loader_boot_guard::{Config, TrustedKeys};
use wdk_sys::ntddk::{
    CmRegisterCallbackEx, CmUnRegisterCallback, IoRegisterBootDriverReinitialization,
    IoRegisterShutdownNotification, IoUnregisterShutdownNotification, KeInitializeEvent,
    KeSetEvent, KeWaitForSingleObject, ObReferenceObjectByHandle, ObfDereferenceObject,
    PsCreateSystemThread, PsRemoveLoadImageNotifyRoutine, PsSetCreateProcessNotifyRoutineEx,
    PsSetLoadImageNotifyRoutine, PsTerminateSystemThread, ZwCreateKey, ZwQueryValueKey,
};
use wdk_sys::_EVENT_TYPE::NotificationEvent;
use wdk_sys::_KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation;
use wdk_sys::_KWAIT_REASON::Executive;
use wdk_sys::_MODE::KernelMode;
use wdk_sys::{
    DRIVER_OBJECT, HANDLE, IRP_MJ_CLOSE, IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL, IRP_MJ_SHUTDOWN,
    KEVENT, KEY_ALL_ACCESS, KEY_VALUE_PARTIAL_INFORMATION, LARGE_INTEGER, NTSTATUS,
    OBJECT_ATTRIBUTES, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, PCUNICODE_STRING, PDEVICE_OBJECT,
    PVOID, REG_DWORD, REG_OPTION_NON_VOLATILE, REG_SZ, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_SUCCESS, STATUS_TIMEOUT, THREAD_ALL_ACCESS,
};

use ffi::{init_unicode, now, on_large_stack, sleep_ms, try_zeroed, units, wide, OwnedUnicode};
use store::{open_directory, Handle, WindowsStore};

/// The driver's version for the status reply (`major << 16 | minor << 8 | patch`).
const DRIVER_VERSION: u32 = 0x0001_0000;
/// How often the worker ticks the guard's stable period.
const TICK_SECS: u32 = 5;
/// The registry callback's altitude (the range for activity monitors).
static ALTITUDE: &[u16] = wide!("385201");
// The trusted keys compiled in: `driver/trusted-keys.txt` (or `BULWARK_TRUSTED_KEYS`), checked by
// build.rs.
include!(concat!(env!("OUT_DIR"), "/trusted_keys.rs"));
const _: () = assert!(TRUSTED_KEYS.len() <= bulwark_loader_boot_guard::envelope::MAX_TRUSTED_KEYS);
/// The content directory when the `Parameters` key does not name one.
const DEFAULT_CONTENT_DIRECTORY: &str = "\\SystemRoot\\Bulwark\\Content";

/// Everything the driver keeps between calls. Allocated once in `DriverEntry` (non-paged, through
/// the WDK allocator) and freed in unload after every callback is unregistered.
pub struct DriverState {
    /// The sensor (lock-free or bounded-lock; see the core).
    pub sensor: Sensor,
    control: PlaneLock<Lifecycle<WindowsStore>>,
    keys: TrustedKeys,
    config: Config,
    content_directory: String,
    /// The `Parameters` key, until the control plane takes it.
    parameters: spin::Mutex<Option<Handle>>,
    registry_cookie: AtomicI64,
    device: AtomicPtr<wdk_sys::DEVICE_OBJECT>,
    stop: UnsafeCell<KEVENT>,
    worker: AtomicPtr<core::ffi::c_void>,
    stopping: AtomicBool,
}

// SAFETY: the only non-Sync member is the KEVENT, which is touched only through the kernel's
// event functions (themselves synchronised) after KeInitializeEvent in DriverEntry.
unsafe impl Sync for DriverState {}
// SAFETY: as above; the state is created on one thread and then only shared.
unsafe impl Send for DriverState {}

static STATE: AtomicPtr<DriverState> = AtomicPtr::new(ptr::null_mut());

/// The driver's state, while it is loaded.
pub fn state() -> Option<&'static DriverState> {
    let p = STATE.load(Ordering::Acquire);
    // SAFETY: STATE is set once in DriverEntry to a leaked Box and cleared in unload only after
    // every callback and the device are gone, so a non-null pointer is valid here.
    unsafe { p.as_ref() }
}

impl DriverState {
    /// The control plane for an IOCTL, if no other request holds it (requests never wait).
    pub fn try_control(&self) -> Option<PlaneGuard<'_, Lifecycle<WindowsStore>>> {
        self.control.try_lock()
    }

    /// The registry callback's cookie.
    pub fn registry_cookie(&self) -> LARGE_INTEGER {
        LARGE_INTEGER {
            QuadPart: self.registry_cookie.load(Ordering::Relaxed),
        }
    }

    /// Records a clean shutdown with the guard (IRP_MJ_SHUTDOWN, unload) without spinning: if a
    /// request holds the control plane, it records the shutdown as it releases it; this waits for
    /// that at most SHUTDOWN_TRIES sleeps of 10 ms.
    ///
    /// Recording writes the guard's records, on the large stack; without one (no memory for it)
    /// nothing is recorded, and the next boot counts as an unfinished run of the content.
    pub fn clean_shutdown(&self) {
        let recorded = on_large_stack(|| {
            self.control
                .clean_shutdown(SHUTDOWN_TRIES, &mut || sleep_ms(10))
        });
        match recorded {
            Ok(true) => {}
            Ok(false) => wdk::println!(
                "bulwark: a request still holds the control plane; it records the shutdown"
            ),
            Err(status) => {
                wdk::println!("bulwark: no stack to record the clean shutdown ({status:#x})")
            }
        }
    }

    /// Opens the content directory (creating it, parent by parent, on a fresh install) and starts
    /// the control plane: the guard's boot decision and the chosen content. `Retry` while the
    /// volume is not mounted; `Failed` for an error retrying will not fix.
    fn start_control(&self) -> Started {
        let dir = match open_content_directory(&self.content_directory) {
            Ok(d) => d,
            Err((OpenFailure::NotMounted, status)) => {
                wdk::println!("bulwark: content directory's volume not mounted yet ({status:#x})");
                return Started::Retry;
            }
            Err((_, status)) => {
                wdk::println!(
                    "bulwark: content directory {} cannot be opened or created ({status:#x}); running without content",
                    self.content_directory
                );
                return Started::Failed;
            }
        };
        // Start-up happens once (DriverEntry or a reinitialization pass); a status request may
        // hold the Starting plane for an instant.
        let Some(mut plane) = self.wait_for_plane() else {
            return Started::Retry;
        };
        let Some(key) = self.parameters.lock().take() else {
            return Started::Failed;
        };
        // The volumes are mounted now: drive letters can be mapped.
        self.sensor.set_volumes(volumes::read());
        let store = WindowsStore::new(key, dir);
        let (mut control, start) = Control::start(store, self.config, self.keys.clone(), now());
        if let Some(e) = &start.error {
            wdk::println!("bulwark: guard records unusable, running without content: {e}");
        }
        if let Some(content) = start.content {
            self.sensor.install(content, &mut || sleep_ms(1));
        }
        self.sensor.forward_guard_events(&mut control);
        let Some(control) = ffi::try_box(control) else {
            // The content the guard chose runs; only requests are refused (as while starting)
            // until the next boot. Never a failed allocation turned into a bugcheck.
            wdk::println!("bulwark: not enough memory for the control plane; requests refused");
            return Started::Failed;
        };
        *plane = Lifecycle::Running(control);
        Started::Running
    }

    /// The control plane, waiting for it with sleeps (PASSIVE_LEVEL) at most one second.
    fn wait_for_plane(&self) -> Option<PlaneGuard<'_, Lifecycle<WindowsStore>>> {
        for _ in 0..1000 {
            if let Some(plane) = self.control.try_lock() {
                return Some(plane);
            }
            sleep_ms(1);
        }
        None
    }
}

/// How the start of the control plane went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Started {
    /// Running (with or without content, as the guard decided).
    Running,
    /// The content directory's volume is not mounted yet: try again at the next reinitialization.
    Retry,
    /// The content directory cannot be used: run without content (reported); do not retry.
    Failed,
}

/// How many 10 ms sleeps a clean shutdown waits for a request holding the control plane (2 s).
const SHUTDOWN_TRIES: u32 = 200;

/// Opens the content directory, creating it and its missing parents below the volume on a fresh
/// install, and tells "the volume is not mounted yet" apart from every other failure.
fn open_content_directory(path: &str) -> Result<Handle, (OpenFailure, NTSTATUS)> {
    let status = match open_directory(path, true) {
        Ok(h) => return Ok(h),
        Err(status) => status,
    };
    match OpenFailure::classify(status as u32, false) {
        OpenFailure::ParentMissing => {}
        failure => return Err((failure, status)),
    }
    // A parent is missing: is it the volume (not mounted yet) or a directory on it?
    let (root, slash) = nt::volume_probe(path).ok_or((OpenFailure::Permanent, status))?;
    let mut probe = String::new();
    probe
        .try_reserve_exact(root.len().saturating_add(1))
        .map_err(|_| (OpenFailure::Permanent, STATUS_INSUFFICIENT_RESOURCES))?;
    probe.push_str(root);
    if slash {
        probe.push('\\');
    }
    if let Err(status) = open_directory(&probe, false) {
        return Err((OpenFailure::classify(status as u32, true), status));
    }
    let parents = nt::directories_to_create(path).ok_or((OpenFailure::Permanent, status))?;
    for dir in parents {
        if let Err(status) = open_directory(dir, true) {
            return Err((OpenFailure::classify(status as u32, false), status));
        }
    }
    open_directory(path, true).map_err(|s| (OpenFailure::classify(s as u32, false), s))
}

fn read_value(key: HANDLE, name: &str, ty: u32) -> Option<alloc::vec::Vec<u8>> {
    let mut uname = OwnedUnicode::new(name).ok()?;
    let header = core::mem::size_of::<KEY_VALUE_PARTIAL_INFORMATION>();
    let mut info = try_zeroed(header.saturating_add(1024))?;
    let mut got = 0u32;
    // SAFETY: `info` is writable for its length; `uname` lives across the call.
    let status = unsafe {
        ZwQueryValueKey(
            key,
            uname.as_ptr(),
            KeyValuePartialInformation,
            info.as_mut_ptr().cast(),
            u32::try_from(info.len()).unwrap_or(u32::MAX),
            &mut got,
        )
    };
    if status != STATUS_SUCCESS {
        return None;
    }
    // SAFETY: on success the buffer starts with the header (read unaligned from a byte buffer).
    let p = unsafe { ptr::read_unaligned(info.as_ptr().cast::<KEY_VALUE_PARTIAL_INFORMATION>()) };
    if p.Type != ty {
        return None;
    }
    let at = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data);
    let end = at.checked_add(usize::try_from(p.DataLength).ok()?)?;
    ffi::try_copy(info.get(at..end)?)
}

fn read_dword(key: HANDLE, name: &str) -> Option<u32> {
    let v = read_value(key, name, REG_DWORD)?;
    Some(u32::from_le_bytes(v.get(..4)?.try_into().ok()?))
}

fn read_string(key: HANDLE, name: &str) -> Option<String> {
    let v = read_value(key, name, REG_SZ)?;
    // At most 1024 bytes: 512 units on the stack.
    let mut units = [0u16; 512];
    let mut n = 0usize;
    for (slot, pair) in units.iter_mut().zip(v.chunks_exact(2)) {
        let unit = u16::from_le_bytes([*pair.first()?, *pair.get(1)?]);
        if unit == 0 {
            break;
        }
        *slot = unit;
        n = n.saturating_add(1);
    }
    ffi::try_string_from_utf16(units.get(..n)?)
}

/// Opens (or creates) `<service key>\Parameters`.
fn open_parameters(registry_path: PCUNICODE_STRING) -> Result<Handle, NTSTATUS> {
    // SAFETY: the I/O manager passes a valid registry path for the duration of DriverEntry.
    let service = unsafe { units(registry_path) }.unwrap_or(&[]);
    let mut path = ffi::try_string_from_utf16(service).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
    path.try_reserve_exact("\\Parameters".len())
        .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
    path.push_str("\\Parameters");
    let mut name = OwnedUnicode::new(&path)?;
    let mut oa = OBJECT_ATTRIBUTES {
        Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: ptr::null_mut(),
        ObjectName: name.as_ptr(),
        Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: ptr::null_mut(),
        SecurityQualityOfService: ptr::null_mut(),
    };
    let mut key: HANDLE = ptr::null_mut();
    let mut disposition = 0u32;
    // SAFETY: all pointers are valid for the call; a kernel handle is returned.
    let status = unsafe {
        ZwCreateKey(
            &mut key,
            KEY_ALL_ACCESS,
            &mut oa,
            0,
            ptr::null_mut(),
            REG_OPTION_NON_VOLATILE,
            &mut disposition,
        )
    };
    if status == STATUS_SUCCESS {
        Ok(Handle(key))
    } else {
        Err(status)
    }
}

/// Boot-driver reinitialization: the boot volume is mounted now.
unsafe extern "C" fn reinitialize(_driver: *mut DRIVER_OBJECT, _context: PVOID, count: u32) {
    let Some(state) = state() else {
        return;
    };
    let started = on_large_stack(|| state.start_control()).unwrap_or(Started::Retry);
    if started == Started::Retry && count < 30 {
        // Still not available: try again at the next reinitialization pass.
        // SAFETY: `_driver` is our driver object, valid while the driver is loaded.
        unsafe {
            IoRegisterBootDriverReinitialization(_driver, Some(reinitialize), ptr::null_mut())
        };
    }
}

/// The worker thread: every few seconds, tick the guard (a candidate that has run the stable
/// period is blessed) and forward guard events. Runs at PASSIVE_LEVEL until unload.
unsafe extern "C" fn worker(_context: PVOID) {
    let Some(state) = state() else {
        // SAFETY: terminating the current system thread.
        let _ = unsafe { PsTerminateSystemThread(STATUS_SUCCESS) };
        return;
    };
    let mut timeout = LARGE_INTEGER {
        QuadPart: i64::from(TICK_SECS).saturating_mul(-10_000_000),
    };
    loop {
        // SAFETY: the event lives in the state, which outlives this thread (unload waits for it).
        let status = unsafe {
            KeWaitForSingleObject(
                state.stop.get().cast(),
                Executive,
                KernelMode as i8,
                0,
                &mut timeout,
            )
        };
        if status != STATUS_TIMEOUT || state.stopping.load(Ordering::Acquire) {
            break;
        }
        // A request holding the control plane (a stage being verified) skips this tick rather
        // than making the worker spin; the stable period then counts a few seconds later.
        // A tick may write the guard's records: on the large stack (skipped when the kernel
        // cannot provide one; the stable period then counts at the next tick).
        let _ = on_large_stack(|| {
            if let Some(mut control) = state.try_control() {
                if let Lifecycle::Running(c) = &mut *control {
                    c.tick(TICK_SECS, now());
                    state.sensor.forward_guard_events(&mut **c);
                }
            }
        });
    }
    // SAFETY: terminating the current system thread.
    let _ = unsafe { PsTerminateSystemThread(STATUS_SUCCESS) };
}

/// The driver's entry point.
///
/// # Safety
/// Called once by the I/O manager with a valid driver object and registry path.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(
    driver: *mut DRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    // All of start-up (configuration, the sensor's tables, the guard's records, the first
    // content's verification) runs on the large stack.
    // SAFETY: our caller's guarantees, passed on unchanged.
    on_large_stack(|| unsafe { start(driver, registry_path) }).unwrap_or_else(|status| status)
}

/// The driver's state, built and leaked (freed in unload). Not inlined: the state is assembled on
/// this function's frame (the sensor alone is several kilobytes), which then is gone before
/// `start` goes on to start the control plane.
#[inline(never)]
fn new_state(
    config: Config,
    keys: TrustedKeys,
    content_directory: String,
    parameters: Handle,
) -> Option<&'static DriverState> {
    let Ok(sensor) = Sensor::new(Capacities::default(), now(), DRIVER_VERSION) else {
        wdk::println!("bulwark: not enough memory for the sensor's tables");
        return None;
    };
    let state = ffi::try_box(DriverState {
        sensor,
        control: PlaneLock::new(
            Lifecycle::Starting(Starting {
                threshold: config.threshold,
                stable_secs: config.stable_secs,
            }),
            now,
        ),
        keys,
        config,
        content_directory,
        parameters: spin::Mutex::new(Some(parameters)),
        registry_cookie: AtomicI64::new(0),
        device: AtomicPtr::new(ptr::null_mut()),
        // SAFETY: KEVENT is plain data; it is initialised by KeInitializeEvent below before use.
        stop: UnsafeCell::new(unsafe { core::mem::zeroed() }),
        worker: AtomicPtr::new(ptr::null_mut()),
        stopping: AtomicBool::new(false),
    });
    Some(Box::leak(state?))
}

/// DriverEntry's work, on the large stack.
///
/// # Safety
/// As [`driver_entry`].
unsafe fn start(driver: *mut DRIVER_OBJECT, registry_path: PCUNICODE_STRING) -> NTSTATUS {
    let parameters = match open_parameters(registry_path) {
        Ok(k) => k,
        Err(status) => return status,
    };
    let mut config = Config::new(read_dword(parameters.0, "Channel").unwrap_or(1));
    if let Some(n) = read_dword(parameters.0, "FailedBootThreshold") {
        config.threshold = u8::try_from(n).unwrap_or(u8::MAX);
    }
    if let Some(s) = read_dword(parameters.0, "StablePeriodSeconds") {
        config.stable_secs = s;
    }
    let config = match config.validate() {
        Ok(c) => c,
        Err(e) => {
            wdk::println!("bulwark: bad Parameters ({e}); using the defaults");
            Config::new(config.channel)
        }
    };
    let content_directory = match read_string(parameters.0, "ContentDirectory") {
        Some(d) => d,
        None => {
            let mut d = String::new();
            if d.try_reserve_exact(DEFAULT_CONTENT_DIRECTORY.len())
                .is_err()
            {
                return STATUS_INSUFFICIENT_RESOURCES;
            }
            d.push_str(DEFAULT_CONTENT_DIRECTORY);
            d
        }
    };
    let keys = match TrustedKeys::new(TRUSTED_KEYS) {
        Ok(keys) => keys,
        Err(e) => {
            // build.rs checked the list's format; a key that is not a valid ed25519 point is
            // caught here.
            wdk::println!("bulwark: {e} in the trusted keys; no content will be admitted");
            TrustedKeys::default()
        }
    };

    let Some(state) = new_state(config, keys, content_directory, parameters) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    // SAFETY: the event is in the leaked (non-paged) state; initialised once, here.
    unsafe { KeInitializeEvent(state.stop.get(), NotificationEvent, 0) };
    STATE.store(ptr::from_ref(state).cast_mut(), Ordering::Release);

    // SAFETY: `driver` is our driver object; we set our dispatch routines and unload routine
    // before any request can arrive (the device does not exist yet).
    // The IRP_MJ_* constants index the MajorFunction array (IRP_MJ_MAXIMUM_FUNCTION + 1 entries).
    #[allow(clippy::indexing_slicing)]
    unsafe {
        (*driver).DriverUnload = Some(driver_unload);
        (*driver).MajorFunction[IRP_MJ_CREATE as usize] = Some(device::dispatch_create_close);
        (*driver).MajorFunction[IRP_MJ_CLOSE as usize] = Some(device::dispatch_create_close);
        (*driver).MajorFunction[IRP_MJ_DEVICE_CONTROL as usize] = Some(device::dispatch_ioctl);
        (*driver).MajorFunction[IRP_MJ_SHUTDOWN as usize] = Some(device::dispatch_shutdown);
    }

    let device = match device::create(driver) {
        Ok(d) => d,
        Err(status) => {
            // SAFETY: nothing else references the state yet.
            unsafe { free_state() };
            return status;
        }
    };
    state.device.store(device, Ordering::Release);
    // SAFETY: our device; IRP_MJ_SHUTDOWN is dispatched to it at system shutdown.
    let _ = unsafe { IoRegisterShutdownNotification(device) };

    // SAFETY: the routines are valid for the driver's lifetime and unregistered in unload.
    let status = unsafe { PsSetCreateProcessNotifyRoutineEx(Some(callbacks::on_process), 0) };
    if status != STATUS_SUCCESS {
        // SAFETY: undoing what was done above, in reverse order.
        unsafe { teardown(device, false, false) };
        return status;
    }
    // SAFETY: as above.
    let status = unsafe { PsSetLoadImageNotifyRoutine(Some(callbacks::on_image)) };
    if status != STATUS_SUCCESS {
        // SAFETY: as above.
        unsafe { teardown(device, true, false) };
        return status;
    }
    let altitude = init_unicode(ALTITUDE);
    let mut cookie = LARGE_INTEGER::default();
    // SAFETY: the callback and driver object are valid for the driver's lifetime.
    let status = unsafe {
        CmRegisterCallbackEx(
            Some(callbacks::on_registry),
            &altitude,
            driver.cast(),
            ptr::null_mut(),
            &mut cookie,
            ptr::null_mut(),
        )
    };
    if status != STATUS_SUCCESS {
        // SAFETY: as above.
        unsafe { teardown(device, true, true) };
        return status;
    }
    // SAFETY: reading the i64 view of the cookie the call wrote.
    state
        .registry_cookie
        .store(unsafe { cookie.QuadPart }, Ordering::Relaxed);

    if state.start_control() == Started::Retry {
        // A boot-start driver before the boot volume is mounted: finish once it is.
        // SAFETY: our driver object; the routine is valid for the driver's lifetime.
        unsafe {
            IoRegisterBootDriverReinitialization(driver, Some(reinitialize), ptr::null_mut())
        };
    }

    let mut thread: HANDLE = ptr::null_mut();
    // SAFETY: creates a system thread running `worker`; the handle is converted to a referenced
    // object below so unload can wait for the thread to end.
    let status = unsafe {
        PsCreateSystemThread(
            &mut thread,
            THREAD_ALL_ACCESS,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            Some(worker),
            ptr::null_mut(),
        )
    };
    if status == STATUS_SUCCESS {
        let mut object: PVOID = ptr::null_mut();
        // SAFETY: `thread` is the handle just returned; we take a reference to the thread object.
        let referenced = unsafe {
            ObReferenceObjectByHandle(
                thread,
                THREAD_ALL_ACCESS,
                ptr::null_mut(),
                KernelMode as i8,
                &mut object,
                ptr::null_mut(),
            )
        };
        drop(Handle(thread));
        if referenced == STATUS_SUCCESS {
            state.worker.store(object, Ordering::Release);
        }
    } else {
        wdk::println!(
            "bulwark: no worker thread ({status:#x}): candidates are blessed only by the service"
        );
    }
    STATUS_SUCCESS
}

/// Undoes a partial start-up.
///
/// # Safety
/// Called from DriverEntry only, with what it has registered so far.
unsafe fn teardown(device: PDEVICE_OBJECT, process_cb: bool, image_cb: bool) {
    // SAFETY: removing exactly the callbacks that were registered; the kernel waits for running
    // callbacks to return.
    unsafe {
        if image_cb {
            let _ = PsRemoveLoadImageNotifyRoutine(Some(callbacks::on_image));
        }
        if process_cb {
            let _ = PsSetCreateProcessNotifyRoutineEx(Some(callbacks::on_process), 1);
        }
        IoUnregisterShutdownNotification(device);
        device::delete(device);
        free_state();
    }
}

/// Frees the state.
///
/// # Safety
/// Nothing may reference the state any more: callbacks unregistered, device deleted, worker ended.
unsafe fn free_state() {
    let p = STATE.swap(ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: `p` came from Box::leak in DriverEntry and is freed once, here.
        let state = unsafe { Box::from_raw(p) };
        state.sensor.content().clear(&mut || sleep_ms(1));
        drop(state);
    }
}

/// Unload: stop the worker, record a clean stop with the guard, unregister every callback (the
/// kernel waits for running ones), delete the device, free the state.
unsafe extern "C" fn driver_unload(_driver: *mut DRIVER_OBJECT) {
    let Some(state) = state() else {
        return;
    };
    state.stopping.store(true, Ordering::Release);
    // SAFETY: the event was initialised in DriverEntry.
    unsafe { KeSetEvent(state.stop.get(), 0, 0) };
    let worker = state.worker.swap(ptr::null_mut(), Ordering::AcqRel);
    if !worker.is_null() {
        // SAFETY: `worker` is the referenced thread object; waiting for it to terminate, then
        // releasing our reference.
        unsafe {
            let _ = KeWaitForSingleObject(worker, Executive, KernelMode as i8, 0, ptr::null_mut());
            ObfDereferenceObject(worker);
        }
    }
    // SAFETY: removing the callbacks DriverEntry registered; each call waits for callbacks in
    // flight to return, so none can touch the state afterwards.
    unsafe {
        let _ = CmUnRegisterCallback(state.registry_cookie());
        let _ = PsRemoveLoadImageNotifyRoutine(Some(callbacks::on_image));
        let _ = PsSetCreateProcessNotifyRoutineEx(Some(callbacks::on_process), 1);
    }
    state.clean_shutdown();
    let device = state.device.swap(ptr::null_mut(), Ordering::AcqRel);
    if !device.is_null() {
        // SAFETY: our device, with no IRP in flight during unload.
        unsafe {
            IoUnregisterShutdownNotification(device);
            device::delete(device);
        }
    }
    // SAFETY: nothing references the state any more.
    unsafe { free_state() };
}
