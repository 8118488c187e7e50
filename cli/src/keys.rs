//! Signing commands: `keygen` and `sign`.
//!
//! Key files are one line of text: `bulwark-ed25519-secret-key <64 hex digits>` (the secret key,
//! written only readable by its owner) and `bulwark-ed25519-public-key <64 hex digits>` (`KEY.pub`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_loader_boot_guard::envelope::{public_key, seal};
use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};

use crate::content::{read, write};
use crate::EXIT_USAGE;

use bulwark_loader_boot_guard::keyfile::{
    parse_key_file, PUBLIC_KEY_LABEL as PUBLIC_LABEL, SECRET_KEY_LABEL as SECRET_LABEL,
};

pub fn commands() -> Vec<Command> {
    vec![
        Command::new("keygen")
            .about("Make an ed25519 signing key: writes KEY (secret) and KEY.pub (public)")
            .arg(
                Arg::new("output")
                    .short('o')
                    .long("output")
                    .required(true)
                    .value_parser(value_parser!(PathBuf))
                    .help("secret key file to write"),
            )
            .arg(
                Arg::new("force")
                    .long("force")
                    .action(ArgAction::SetTrue)
                    .help("overwrite existing key files"),
            ),
        Command::new("sign")
            .about(
                "Verify a pack and wrap it in a signed envelope for a channel and content version",
            )
            .arg(
                Arg::new("key")
                    .long("key")
                    .required(true)
                    .value_parser(value_parser!(PathBuf))
                    .help("secret key file (from keygen)"),
            )
            .arg(
                Arg::new("channel")
                    .long("channel")
                    .required(true)
                    .value_parser(value_parser!(u32))
                    .help("update channel"),
            )
            .arg(
                Arg::new("version")
                    .long("version")
                    .required(true)
                    .value_parser(value_parser!(u64))
                    .help("content version (must increase with every release on the channel)"),
            )
            .arg(
                Arg::new("input")
                    .required(true)
                    .value_parser(value_parser!(PathBuf))
                    .help("pack file"),
            )
            .arg(
                Arg::new("output")
                    .short('o')
                    .long("output")
                    .required(true)
                    .value_parser(value_parser!(PathBuf))
                    .help("envelope file to write"),
            ),
    ]
}

pub fn run(name: &str, m: &ArgMatches) -> Option<ExitCode> {
    let path = |id: &str| m.get_one::<PathBuf>(id).cloned().unwrap_or_default();
    Some(match name {
        "keygen" => keygen(&path("output"), m.get_flag("force")),
        "sign" => sign(
            &path("key"),
            m.get_one::<u32>("channel").copied().unwrap_or(0),
            m.get_one::<u64>("version").copied().unwrap_or(0),
            &path("input"),
            &path("output"),
        ),
        _ => return None,
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_key(path: &Path, label: &'static str) -> Result<[u8; 32], ExitCode> {
    let bytes = read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    parse_key_file(&text, label).map_err(|e| {
        eprintln!("bulwark: {}: {e}", path.display());
        ExitCode::from(EXIT_USAGE)
    })
}

/// Reads a public key file (`KEY.pub`).
pub fn read_public(path: &Path) -> Result<[u8; 32], ExitCode> {
    read_key(path, PUBLIC_LABEL)
}

/// The text of a public key file.
pub fn public_text(key: &[u8; 32]) -> String {
    format!("{PUBLIC_LABEL} {}\n", hex(key))
}

fn pub_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn keygen(output: &Path, force: bool) -> ExitCode {
    let public = pub_path(output);
    if !force {
        for p in [output, public.as_path()] {
            if p.exists() {
                eprintln!("bulwark: {} exists (use --force to overwrite)", p.display());
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let mut secret = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut secret) {
        eprintln!("bulwark: no randomness from the operating system: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Err(code) = write(
        output,
        format!("{SECRET_LABEL} {}\n", hex(&secret)).as_bytes(),
    ) {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(output, std::fs::Permissions::from_mode(0o600)) {
            eprintln!("bulwark: cannot restrict {}: {e}", output.display());
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let pk = public_key(&secret);
    if let Err(code) = write(&public, public_text(&pk).as_bytes()) {
        return code;
    }
    eprintln!(
        "wrote {} (secret) and {} (public key {})",
        output.display(),
        public.display(),
        hex(&pk)
    );
    ExitCode::SUCCESS
}

fn sign(key: &Path, channel: u32, version: u64, input: &Path, output: &Path) -> ExitCode {
    if version == 0 {
        eprintln!("bulwark: --version must be at least 1 (every update must be newer than the last, and the first is newer than 0)");
        return ExitCode::from(EXIT_USAGE);
    }
    let secret = match read_key(key, SECRET_LABEL) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let pack = match read(input) {
        Ok(b) => b,
        Err(code) => return code,
    };
    // Only content the sensor's verifier accepts is ever signed.
    let verified = match bulwark_interpreter::verify(&pack) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{}: rejected: {e}", input.display());
            return ExitCode::from(1);
        }
    };
    let envelope = match seal(
        &secret,
        channel,
        version,
        bulwark_interpreter::schema_hash(),
        &pack,
    ) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{}: {e}", input.display());
            return ExitCode::from(1);
        }
    };
    if let Err(code) = write(output, &envelope) {
        return code;
    }
    eprintln!(
        "wrote {} ({} bytes): channel {channel}, version {version}, {} rules, pack sha256 {}, signed by {}",
        output.display(),
        envelope.len(),
        verified.rule_count(),
        hex(&verified.content_hash()),
        hex(&public_key(&secret))
    );
    ExitCode::SUCCESS
}
