//! Windows: the service control manager (`install`, `uninstall`, `start`, `stop`, and the
//! service's entry point under the dispatcher), the event log, and the driver link over the real
//! control device (`\\.\Bulwark`, DeviceIoControl through `bulwark_client::DeviceTransport`).
//!
//! Type-checked and built on Linux with the win-cross chroot (`scripts/windows-build`) and run
//! under Wine by `scripts/windows-smoke`; Wine hosts the service control manager but is not
//! Windows: the authoritative check is a Windows machine.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bulwark_client::{Client, DeviceTransport};
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use crate::config::ServiceConfig;
use crate::link::{
    detection, schema_field_counts, Answer, Detection, DriverLink, DriverStatus, LinkError,
    StageMode,
};
use crate::runner::{self, Logger, Stop};

/// The service's name (and its event log source).
pub const SERVICE_NAME: &str = "BulwarkService";
const DISPLAY_NAME: &str = "Bulwark endpoint service";
const DESCRIPTION: &str = "Fetches signed detection content, proves it safe, stages it with the \
     Bulwark driver, confirms healthy boots and reports telemetry.";

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// A service control manager call's error, with the Windows error under it (windows-service's
/// own text is only "IO error in winapi call") and what to do for the ones an administrator meets.
fn scm_err(what: &str, e: windows_service::Error) -> String {
    let windows_service::Error::Winapi(os) = &e else {
        return err(what, e);
    };
    let hint = match os.raw_os_error() {
        Some(5) => " (ERROR_ACCESS_DENIED: run it from an elevated prompt)",
        Some(1060) => " (ERROR_SERVICE_DOES_NOT_EXIST: `bulwark-service install` registers it)",
        Some(1072) => {
            " (ERROR_SERVICE_MARKED_FOR_DELETE: close the Services console and any handle to it, \
             or restart, then install again)"
        }
        Some(1073) => {
            " (ERROR_SERVICE_EXISTS: the service is already installed; \
             `bulwark-service uninstall` removes it)"
        }
        _ => "",
    };
    format!("{what}: {os}{hint}")
}

/// Registers the service (LocalSystem, automatic start, restarted by the service control manager
/// after a failure) to run `exe service --config CONFIG`, and the event log source.
pub fn install(exe: &Path, config: &Path) -> Result<(), String> {
    let config =
        std::fs::canonicalize(config).map_err(|e| err(&config.display().to_string(), e))?;
    ServiceConfig::load(&config).map_err(|e| e.to_string())?;
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(|e| scm_err("the service control manager", e))?;
    let info = ServiceInfo {
        name: OsString::from(SERVICE_NAME),
        display_name: OsString::from(DISPLAY_NAME),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.to_owned(),
        launch_arguments: vec![
            OsString::from("service"),
            OsString::from("--config"),
            config.into_os_string(),
        ],
        dependencies: vec![],
        account_name: None, // LocalSystem
        account_password: None,
    };
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::START | ServiceAccess::QUERY_STATUS,
        )
        .map_err(|e| scm_err("creating the service", e))?;
    service
        .set_description(DESCRIPTION)
        .map_err(|e| scm_err("setting its description", e))?;
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart(5), restart(30), restart(300)]),
        })
        .map_err(|e| scm_err("setting its recovery actions", e))?;
    eventlog::register(SERVICE_NAME).map_err(|e| err("registering the event log source", e))?;
    Ok(())
}

/// Stops (if running) and removes the service, and its event log source.
pub fn uninstall() -> Result<(), String> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| scm_err("the service control manager", e))?;
    let service = manager
        .open_service(
            SERVICE_NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        )
        .map_err(|e| scm_err("opening the service", e))?;
    if service
        .query_status()
        .map_err(|e| scm_err("its status", e))?
        .current_state
        != ServiceState::Stopped
    {
        let _ = service.stop();
    }
    service
        .delete()
        .map_err(|e| scm_err("deleting the service", e))?;
    let _ = eventlog::deregister(SERVICE_NAME);
    Ok(())
}

/// Starts the installed service.
pub fn start() -> Result<(), String> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| scm_err("the service control manager", e))?;
    let service = manager
        .open_service(SERVICE_NAME, ServiceAccess::START)
        .map_err(|e| scm_err("opening the service", e))?;
    service
        .start::<&OsStr>(&[])
        .map_err(|e| scm_err("starting the service", e))
}

/// Stops the running service.
pub fn stop() -> Result<(), String> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| scm_err("the service control manager", e))?;
    let service = manager
        .open_service(SERVICE_NAME, ServiceAccess::STOP)
        .map_err(|e| scm_err("opening the service", e))?;
    service
        .stop()
        .map(|_| ())
        .map_err(|e| scm_err("stopping the service", e))
}

static CONFIG: OnceLock<PathBuf> = OnceLock::new();

/// The service's entry point (`bulwark-service service --config FILE`, what `install` registers):
/// hands the process to the service control dispatcher, which calls back into [`service_main`].
pub fn dispatch(config: &Path) -> Result<(), String> {
    let _ = CONFIG.set(config.to_owned());
    service_dispatcher::start(SERVICE_NAME, ffi_service_main)
        .map_err(|e| scm_err("the service control dispatcher", e))
}

define_windows_service!(ffi_service_main, service_main);

fn service_main(_arguments: Vec<OsString>) {
    let _ = eventlog::init(SERVICE_NAME, log::Level::Info);
    if let Err(e) = run_service() {
        log::error!("{e}");
    }
}

fn status(state: ServiceState, exit: u32) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: ServiceExitCode::Win32(exit),
        checkpoint: 0,
        wait_hint: Duration::from_secs(10),
        process_id: None,
    }
}

fn run_service() -> Result<(), String> {
    let stop = Arc::new(Stop::new());
    let handler_stop = stop.clone();
    let handle = service_control_handler::register(SERVICE_NAME, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            handler_stop.request();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })
    .map_err(|e| scm_err("registering the control handler", e))?;
    let _ = handle.set_service_status(status(ServiceState::Running, 0));
    let result = CONFIG
        .get()
        .ok_or_else(|| "no configuration file".to_owned())
        .and_then(|path| {
            let config = ServiceConfig::load(path).map_err(|e| e.to_string())?;
            let mut event_log = |line: &str| log::info!("{line}");
            let mut logger = Logger::open(&config, &mut event_log)?;
            let link = DeviceLink::open().map_err(|e| e.to_string())?;
            runner::run(path, &config, link, &stop, &mut logger)
        });
    let code = u32::from(result.is_err());
    let _ = handle.set_service_status(status(ServiceState::Stopped, code));
    result
}

/// The driver through its control device.
pub struct DeviceLink {
    client: Client<DeviceTransport>,
}

impl DeviceLink {
    /// Opens `\\.\Bulwark` (SYSTEM and Administrators only).
    pub fn open() -> Result<DeviceLink, LinkError> {
        Ok(DeviceLink {
            client: Client::new(DeviceTransport::open()?),
        })
    }
}

fn answer(a: bulwark_client::Answer) -> Answer {
    Answer {
        accepted: a.accepted,
        code: a.code,
        message: a.message,
    }
}

impl DriverLink for DeviceLink {
    fn status(&mut self) -> Result<DriverStatus, LinkError> {
        let s = self.client.status()?;
        Ok(DriverStatus {
            schema_hash: s.schema_hash,
            // The status reply carries the schema's hash; the field counts are those of the
            // schema with that hash (checked against the service's own before any use).
            field_counts: schema_field_counts(),
            content_version: s.content.version,
            source: s.content.source,
            last_known_good: (s.guard.lkg_version != 0).then_some(s.guard.lkg_version),
            candidate: s
                .guard
                .candidate_staged
                .then_some(s.guard.candidate_version),
            events_evaluated: s
                .counters
                .events
                .iter()
                .fold(0u64, |a, b| a.saturating_add(*b)),
        })
    }

    fn stage(&mut self, envelope: &[u8], mode: StageMode) -> Result<Answer, LinkError> {
        Ok(answer(match mode {
            StageMode::Hot => self.client.stage(envelope)?,
            StageMode::NextBoot => self.client.stage_next_boot(envelope)?,
        }))
    }

    fn confirm_healthy(&mut self) -> Result<Answer, LinkError> {
        Ok(answer(self.client.confirm_healthy()?))
    }

    fn revert(&mut self) -> Result<Answer, LinkError> {
        Ok(answer(self.client.revert()?))
    }

    fn guard_events(&mut self) -> Result<Vec<bulwark_protocol::GuardEventRecord>, LinkError> {
        Ok(self.client.read_guard_events(u32::MAX)?.records)
    }

    fn detections(&mut self) -> Result<Vec<Detection>, LinkError> {
        Ok(self
            .client
            .read_detections(u32::MAX)?
            .records
            .iter()
            .map(detection)
            .collect())
    }
}
