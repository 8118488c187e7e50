//! The `bulwark-server` binary: `serve`, `token create`, `export`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bulwark_loader_boot_guard::keyfile::{parse_key_file, PUBLIC_KEY_LABEL, SECRET_KEY_LABEL};
use bulwark_server::metadata::Signing;
use bulwark_server::store::ApiToken;
use bulwark_server::tls::PemPair;
use bulwark_server::util::{now, random_token, sha256_hex, unhex};
use bulwark_server::{ChannelConfig, Clock, Config, PostgresStore, Role, SqliteStore, Store};
use clap::{Parser, Subcommand};
use ed25519_dalek::SigningKey;

#[derive(Parser)]
#[command(name = "bulwark-server", about = "Bulwark's release server")]
struct Cli {
    /// The SQLite database file (created and migrated if needed).
    #[arg(long, default_value = "bulwark-server.db", global = true)]
    db: PathBuf,
    /// A PostgreSQL URL (postgres://user:password@host:port/database, no TLS) to use instead
    /// of the SQLite file: every instance behind a load balancer points at the same one.
    #[arg(long, global = true, conflicts_with = "db")]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API over TLS.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Certificate chain (PEM).
        #[arg(long, required_unless_present = "self_signed")]
        tls_cert: Option<PathBuf>,
        /// Private key (PEM).
        #[arg(long, required_unless_present = "self_signed")]
        tls_key: Option<PathBuf>,
        /// Generate a self-signed certificate for localhost (development only); its PEM is
        /// printed to stderr.
        #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
        self_signed: bool,
        /// File holding the enrollment secret (its first line).
        #[arg(long)]
        enrollment_secret_file: PathBuf,
        /// The root metadata (root.json, made offline with `bulwark metadata root`): its release
        /// keys sign envelopes and the releases metadata, its rollout key is `--online-key`.
        #[arg(long, requires = "online_key")]
        root: Option<PathBuf>,
        /// The online key's secret key file (`bulwark keygen`): signs the rollout metadata. It
        /// must be the root's rollout key.
        #[arg(long, requires = "root")]
        online_key: Option<PathBuf>,
        /// Lifetime of each signed rollout file in seconds (re-signed at half of it; endpoints
        /// stop acting on an expired one).
        #[arg(long, default_value_t = bulwark_server::metadata::DEFAULT_ROLLOUT_LIFETIME_SECS)]
        rollout_lifetime: u64,
        /// A trusted release key besides the root's: a KEY.pub file or its 64 hex digits
        /// (repeatable; needed without --root).
        #[arg(long = "trusted-key", required_unless_present = "root")]
        trusted_keys: Vec<String>,
        /// A channel: NAME=NUMBER or NAME=NUMBER:critical (repeatable).
        #[arg(long = "channel", required = true)]
        channels: Vec<String>,
        /// Seconds between controller steps.
        #[arg(long, default_value_t = 300)]
        controller_interval: u64,
    },
    /// Manage release engineers' API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Write the static fetch path (v1/metadata/{root,releases,rollout}.json,
    /// v1/envelopes/<sha256>) to DIR, for any static host or CDN.
    Export {
        /// The output directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once; only its SHA-256 is stored).
    Create {
        /// publisher, operator or viewer.
        #[arg(long)]
        role: String,
        /// Who holds it (recorded in the audit log).
        #[arg(long)]
        name: String,
    },
}

fn parse_channel(s: &str) -> Result<(String, ChannelConfig), String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("--channel {s:?}: expected NAME=NUMBER[:critical]"))?;
    let (number, critical) = match rest.split_once(':') {
        Some((n, "critical")) => (n, true),
        Some(_) => return Err(format!("--channel {s:?}: the only flag is :critical")),
        None => (rest, false),
    };
    let number = number
        .parse()
        .map_err(|_| format!("--channel {s:?}: {number:?} is not a channel number"))?;
    bulwark_rollout::channel::validate_name(name).map_err(|e| format!("--channel {s:?}: {e}"))?;
    Ok((name.to_owned(), ChannelConfig { number, critical }))
}

fn parse_key(s: &str) -> Result<[u8; 32], String> {
    if let Some(k) = unhex(s).and_then(|v| <[u8; 32]>::try_from(v).ok()) {
        return Ok(k);
    }
    let text = std::fs::read_to_string(s).map_err(|e| {
        format!("--trusted-key {s:?}: neither 64 hex digits nor a readable file: {e}")
    })?;
    parse_key_file(&text, PUBLIC_KEY_LABEL).map_err(|e| format!("--trusted-key {s}: {e}"))
}

fn signing(root: &Path, online_key: &Path, lifetime: u64) -> Result<Signing, String> {
    let root_file =
        std::fs::read_to_string(root).map_err(|e| format!("--root {}: {e}", root.display()))?;
    let key_text = std::fs::read_to_string(online_key)
        .map_err(|e| format!("--online-key {}: {e}", online_key.display()))?;
    let secret = parse_key_file(&key_text, SECRET_KEY_LABEL)
        .map_err(|e| format!("--online-key {}: {e}", online_key.display()))?;
    Signing::new(&root_file, SigningKey::from_bytes(&secret), lifetime).map_err(|e| {
        format!(
            "--root {} with --online-key {}: {e}",
            root.display(),
            online_key.display()
        )
    })
}

async fn serve(store: Arc<dyn Store>, command: Command) -> Result<(), String> {
    let Command::Serve {
        listen,
        tls_cert,
        tls_key,
        self_signed,
        enrollment_secret_file,
        root,
        online_key,
        rollout_lifetime,
        trusted_keys,
        channels,
        controller_interval,
    } = command
    else {
        return Err("not serve".to_owned());
    };
    let pem = match (tls_cert, tls_key) {
        (Some(c), Some(k)) if !self_signed => PemPair::read(&c, &k)?,
        _ => {
            let pem = PemPair::self_signed()?;
            eprintln!(
                "self-signed certificate (development only):\n{}",
                pem.cert_pem
            );
            pem
        }
    };
    let secret = std::fs::read_to_string(&enrollment_secret_file)
        .map_err(|e| format!("{}: {e}", enrollment_secret_file.display()))?;
    let secret = secret.lines().next().unwrap_or("").trim().to_owned();
    if secret.len() < 16 {
        return Err("the enrollment secret must be at least 16 characters".to_owned());
    }
    let config = Config {
        enrollment_secret: secret,
        trusted_keys: trusted_keys
            .iter()
            .map(|k| parse_key(k))
            .collect::<Result<_, _>>()?,
        channels: channels
            .iter()
            .map(|c| parse_channel(c))
            .collect::<Result<BTreeMap<_, _>, _>>()?,
        signing: match (&root, &online_key) {
            (Some(r), Some(k)) => Some(signing(r, k, rollout_lifetime)?),
            _ => None,
        },
        clock: Clock::system(),
    };
    let interval = Duration::from_secs(controller_interval.max(1));
    let running = bulwark_server::start(listen, &pem, store, config, Some(interval)).await?;
    eprintln!("bulwark-server: listening on https://{}", running.addr);
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    drop(running);
    Ok(())
}

fn run(cli: Cli) -> Result<(), String> {
    let store: Arc<dyn Store> = match &cli.database {
        Some(url) => Arc::new(PostgresStore::connect(url).map_err(|e| format!("--database: {e}"))?),
        None => {
            Arc::new(SqliteStore::open(&cli.db).map_err(|e| format!("{}: {e}", cli.db.display()))?)
        }
    };
    match cli.command {
        serve_command @ Command::Serve { .. } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(serve(store, serve_command)),
        Command::Token {
            command: TokenCommand::Create { role, name },
        } => {
            let role = Role::parse(&role)
                .ok_or_else(|| format!("--role {role:?}: publisher, operator or viewer"))?;
            let token = random_token("bwr_").map_err(|e| e.to_string())?;
            store
                .insert_api_token(
                    &sha256_hex(token.as_bytes()),
                    &ApiToken { name, role },
                    now(),
                )
                .map_err(|e| e.to_string())?;
            println!("{token}");
            Ok(())
        }
        Command::Export { dir } => {
            for p in bulwark_server::export::export(store.as_ref(), &dir)? {
                eprintln!("wrote {}", p.display());
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulwark-server: {e}");
            ExitCode::from(2)
        }
    }
}
