//! The driver's build script (`build.rs` at the workspace root) checks the trusted-key list: a key
//! as `bulwark keygen` writes it to KEY.pub builds; a malformed list fails the build naming its
//! file and line. The script is compiled on its own with rustc (with no WDK feature it needs no
//! crate) and run as Cargo would run it, with the environment Cargo gives it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Compiles build.rs once per test into `dir`.
fn compile(dir: &Path) -> PathBuf {
    let exe = dir.join("build-script");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-name",
            "build_script_build",
            "-o",
        ])
        .arg(&exe)
        .arg(root().join("build.rs"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn run(exe: &Path, dir: &Path, keys: Option<&Path>, target_os: &str) -> Output {
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut cmd = Command::new(exe);
    cmd.env("CARGO_MANIFEST_DIR", root())
        .env("OUT_DIR", &out_dir)
        .env("CARGO_CFG_TARGET_OS", target_os)
        .env_remove("CARGO_FEATURE_WDK_TYPECHECK")
        .env_remove("BULWARK_TRUSTED_KEYS");
    if let Some(k) = keys {
        cmd.env("BULWARK_TRUSTED_KEYS", k);
    }
    cmd.output().unwrap()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "bulwark-trusted-keys-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn build_script_checks_the_trusted_keys() {
    let dir = tempdir("check");
    let exe = compile(&dir);

    // The list in the repository builds (it may be empty: a driver that admits no content).
    let r = run(&exe, &dir, None, "linux");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stdout));

    // KEY.pub exactly as `bulwark keygen` writes it, with a comment line.
    let key = "ab".repeat(32);
    let good = dir.join("good.txt");
    std::fs::write(
        &good,
        format!("# test VM\nbulwark-ed25519-public-key {key}\n"),
    )
    .unwrap();
    let r = run(&exe, &dir, Some(&good), "linux");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stdout));
    let generated = std::fs::read_to_string(dir.join("out/trusted_keys.rs")).unwrap();
    assert_eq!(generated.matches("0xab, ").count(), 32, "{generated}");

    // A bare hex line (what the old comment asked for), a short key, a bad digit: each fails the
    // build with the file and the line.
    for (text, want) in [
        (
            format!("# a\n{key}\n"),
            "line 2: expected \"bulwark-ed25519-public-key",
        ),
        (
            "\n\nbulwark-ed25519-public-key 12zz\n".to_string(),
            "line 3: expected 64 hex digits",
        ),
        (
            format!("bulwark-ed25519-public-key {}\n", "g".repeat(64)),
            "line 1, column 28: 'g' is not a hex digit",
        ),
    ] {
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, &text).unwrap();
        let r = run(&exe, &dir, Some(&bad), "linux");
        let stdout = String::from_utf8_lossy(&r.stdout);
        assert!(!r.status.success(), "{text:?} built");
        assert!(
            stdout.contains(&format!("cargo::error={}: {want}", bad.display())),
            "{text:?}: {stdout}"
        );
    }

    // A missing file names itself.
    let r = run(&exe, &dir, Some(&dir.join("absent.txt")), "linux");
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stdout).contains("cannot read the trusted keys"));

    // A Windows target without wdk-build in this host build says how to cross-build, rather than
    // building an empty shell: the target decides, not the host.
    let r = run(&exe, &dir, Some(&good), "windows");
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("scripts/windows-build"),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
