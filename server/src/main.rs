//! The `bulwark-server` binary: `serve`, `token create`, `export`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bulwark_server::store::ApiToken;
use bulwark_server::tls::PemPair;
use bulwark_server::util::{now, random_token, sha256_hex, unhex};
use bulwark_server::{ChannelConfig, Clock, Config, PostgresStore, Role, SqliteStore, Store};
use clap::{Parser, Subcommand};

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
        /// A trusted release key: 64 hex digits of an ed25519 public key (repeatable).
        #[arg(long = "trusted-key", required = true)]
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
    /// Write the static fetch path (v1/metadata/rollout.json, v1/envelopes/<sha256>) to DIR.
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
    unhex(s)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| format!("--trusted-key {s:?}: expected 64 hex digits"))
}

async fn serve(store: Arc<dyn Store>, command: Command) -> Result<(), String> {
    let Command::Serve {
        listen,
        tls_cert,
        tls_key,
        self_signed,
        enrollment_secret_file,
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
