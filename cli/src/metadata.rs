//! `bulwark metadata root`: the root of the signed distribution metadata, made offline by the
//! root key holders; and the releases metadata that `bulwark release publish --key` signs.
//!
//! The root names every role's keys and threshold: the root keys (which sign the root), the
//! release keys (which sign envelopes and the releases metadata) and the online key
//! (bulwark-server's `--online-key`, which signs only the rollout metadata). Endpoints ship with
//! it; the server is started with it (`--root`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_distribution::{sign, PersistedTrust, Releases, Role, Root, Timestamp, TrustState};
use bulwark_loader_boot_guard::keyfile::{parse_key_file, PUBLIC_KEY_LABEL, SECRET_KEY_LABEL};
use bulwark_rollout::Release;
use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use crate::content::write;
use crate::EXIT_USAGE;

const DAY: u64 = 86_400;

pub fn commands() -> Vec<Command> {
    vec![Command::new("metadata")
        .about("Signed distribution metadata (TUF-style roles) for bulwark-server and endpoints")
        .subcommand_required(true)
        .subcommand(
            Command::new("root")
                .about(
                    "Make and sign the root metadata: the root, release and online (rollout) keys \
                     and their thresholds",
                )
                .arg(
                    Arg::new("root-key")
                        .long("root-key")
                        .required(true)
                        .action(ArgAction::Append)
                        .value_name("KEY")
                        .value_parser(value_parser!(PathBuf))
                        .help("a root secret key file (repeatable; each signs the root)"),
                )
                .arg(
                    Arg::new("root-threshold")
                        .long("root-threshold")
                        .value_name("N")
                        .value_parser(value_parser!(u32))
                        .help("root signatures required (default: every --root-key)"),
                )
                .arg(
                    Arg::new("release-key")
                        .long("release-key")
                        .required(true)
                        .action(ArgAction::Append)
                        .value_name("KEY.pub")
                        .value_parser(value_parser!(PathBuf))
                        .help("a release public key file (repeatable)"),
                )
                .arg(
                    Arg::new("release-threshold")
                        .long("release-threshold")
                        .value_name("N")
                        .default_value("1")
                        .value_parser(value_parser!(u32))
                        .help("release signatures required on the releases metadata"),
                )
                .arg(
                    Arg::new("online-key")
                        .long("online-key")
                        .required(true)
                        .value_name("KEY.pub")
                        .value_parser(value_parser!(PathBuf))
                        .help("the server's online key (public): signs only the rollout metadata"),
                )
                .arg(
                    Arg::new("version")
                        .long("version")
                        .default_value("1")
                        .value_name("N")
                        .value_parser(value_parser!(u64))
                        .help("the root's version (a rotation is the previous version plus 1)"),
                )
                .arg(
                    Arg::new("expires-days")
                        .long("expires-days")
                        .default_value("365")
                        .value_name("DAYS")
                        .value_parser(value_parser!(u64).range(1..=3650))
                        .help("days until it expires"),
                )
                .arg(
                    Arg::new("output")
                        .short('o')
                        .long("output")
                        .required(true)
                        .value_name("root.json")
                        .value_parser(value_parser!(PathBuf)),
                ),
        )]
}

pub fn run(name: &str, m: &ArgMatches) -> Option<ExitCode> {
    if name != "metadata" {
        return None;
    }
    let (_, m) = m.subcommand()?;
    Some(match root(m) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulwark: metadata root: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    })
}

fn paths<'a>(m: &'a ArgMatches, id: &str) -> impl Iterator<Item = &'a PathBuf> {
    m.get_many::<PathBuf>(id).into_iter().flatten()
}

/// Reads a secret key file.
pub fn secret_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key =
        parse_key_file(&text, SECRET_KEY_LABEL).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(SigningKey::from_bytes(&key))
}

fn public_key(path: &Path) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_key_file(&text, PUBLIC_KEY_LABEL).map_err(|e| format!("{}: {e}", path.display()))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn root(m: &ArgMatches) -> Result<(), String> {
    let root_keys: Vec<SigningKey> = paths(m, "root-key")
        .map(|p| secret_key(p))
        .collect::<Result<_, _>>()?;
    let root_public: Vec<[u8; 32]> = root_keys
        .iter()
        .map(|k| k.verifying_key().to_bytes())
        .collect();
    let release: Vec<[u8; 32]> = paths(m, "release-key")
        .map(|p| public_key(p))
        .collect::<Result<_, _>>()?;
    let online = public_key(
        m.get_one::<PathBuf>("online-key")
            .ok_or("no --online-key")?,
    )?;
    let root_threshold = m
        .get_one::<u32>("root-threshold")
        .copied()
        .unwrap_or(u32::try_from(root_keys.len()).unwrap_or(u32::MAX));
    let release_threshold = m.get_one::<u32>("release-threshold").copied().unwrap_or(1);
    let version = m.get_one::<u64>("version").copied().unwrap_or(1);
    let days = m.get_one::<u64>("expires-days").copied().unwrap_or(365);
    let body = Root::new(version, Timestamp(now().saturating_add(days * DAY)))
        .with_role(Role::Root, &root_public, root_threshold)
        .with_role(Role::Releases, &release, release_threshold)
        .with_role(Role::Rollout, &[online], 1);
    body.validate().map_err(|e| e.to_string())?;
    let signers: Vec<&SigningKey> = root_keys.iter().collect();
    let file = sign(&body, &signers).map_err(|e| e.to_string())?;
    // What endpoints and the server will do with it.
    TrustState::bootstrap(&file).map_err(|e| format!("the root does not verify: {e}"))?;
    let out = m.get_one::<PathBuf>("output").ok_or("no --output")?;
    write(out, file.as_bytes()).map_err(|_| format!("cannot write {}", out.display()))?;
    eprintln!(
        "root v{version}: {} root key(s) (threshold {root_threshold}), {} release key(s) \
         (threshold {release_threshold}), 1 online key; expires in {days} days; written to {}",
        root_keys.len(),
        release.len(),
        out.display()
    );
    Ok(())
}

/// The next releases metadata: `current` (verified against `root` by signature, if any) with
/// `envelope`'s release added, one version up, expiring in `days`, signed by `keys`. Refuses an
/// envelope whose version is already listed with other hashes.
pub fn next_releases(
    root: &str,
    current: Option<&str>,
    channel: &str,
    envelope: &[u8],
    keys: &[SigningKey],
    days: u64,
) -> Result<(String, u64), String> {
    let trust = TrustState::restore(&PersistedTrust {
        root: root.to_owned(),
        releases: current.map(str::to_owned),
        rollout: None,
    })
    .map_err(|e| format!("the server's releases.json does not verify against the root: {e}"))?;
    let (header, pack) = bulwark_loader_boot_guard::envelope::parse(envelope)
        .map_err(|e| format!("the envelope: {e}"))?;
    let release = Release {
        channel: channel.to_owned(),
        version: header.version,
        pack_hash: Sha256::digest(pack).into(),
        envelope_sha256: Sha256::digest(envelope).into(),
        notes: String::new(),
    };
    let previous = trust.releases().cloned();
    let version = previous.as_ref().map_or(1, |r| r.version.saturating_add(1));
    let mut next = Releases::new(version, Timestamp(now().saturating_add(days * DAY)));
    if let Some(p) = previous {
        if let Some(listed) = p.get(channel, header.version) {
            if listed.pack_sha256 != release.pack_hash
                || listed.envelope_sha256 != release.envelope_sha256
            {
                return Err(format!(
                    "releases v{} already lists {channel:?} version {} with other hashes",
                    p.version, header.version
                ));
            }
        }
        next.channels = p.channels;
    }
    let next = next.with(&release);
    let signers: Vec<&SigningKey> = keys.iter().collect();
    let file = sign(&next, &signers).map_err(|e| e.to_string())?;
    Ok((file, version))
}
