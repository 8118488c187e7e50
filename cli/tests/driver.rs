//! `bulwark driver` off Windows: a clear error and the usage exit code, never a panic.

#[cfg(not(windows))]
#[test]
fn driver_commands_explain_that_the_device_is_windows_only() {
    for args in [
        &["driver", "status"][..],
        &["driver", "detections"],
        &["driver", "stage", "x.bwenv"],
        &["driver", "confirm"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulwark"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run bulwark: {e}"));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("only on Windows"), "{args:?}: {err}");
    }
}
