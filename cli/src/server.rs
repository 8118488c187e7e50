//! `bulwark release ...` and `bulwark rollout ...`: the release engineers' commands against
//! bulwark-server's `/v1` API over HTTPS.
//!
//! * `release publish ENVELOPE --channel NAME` (`POST /v1/releases`, a publisher token); with
//!   `--key KEY --root root.json` it then signs the next releases metadata listing it (the
//!   server's current `releases.json`, verified against the root, plus this release) and uploads
//!   it (`PUT /v1/metadata/releases.json`): without that no rollout of it can start;
//! * `release list [--channel NAME]` (`GET /v1/releases`, any token);
//! * `rollout start|pause|resume|halt|revert --channel NAME` (`POST /v1/rollouts/NAME/CMD`, an
//!   operator token; `start` takes `--version`, `pause` and `halt` take `--reason`);
//! * `rollout status --channel NAME` (`GET /v1/rollouts/NAME`, any token);
//! * `policy list` (`GET /v1/policies`, any token), `policy set HOST_GROUP CHANNEL POLICY`,
//!   `policy default POLICY` and `policy unset HOST_GROUP CHANNEL` (`PUT`/`DELETE
//!   /v1/policies/...`, an operator token). POLICY is `ga`, `early`, `pause`, `delay:HOURS` or
//!   `pin:VERSION:UNTIL` (UNTIL in seconds since the epoch, or `+HOURS`).
//!
//! Every command takes `--server URL` (https only), the token from `--token-file F` (its first
//! line) or else the `BULWARK_TOKEN` environment variable, `--ca-cert PEM` (an extra trusted root,
//! e.g. the development server's self-signed certificate; the webpki roots are always trusted)
//! and `--json` (print the server's JSON instead of the human summary).
//!
//! Exit codes, as for the rest of the CLI: 0 success; 1 the server refused the request (its
//! 4xx/5xx status and JSON message are printed as they are; with `--json` the body also goes to
//! stdout); 2 usage or I/O errors, which include a server that cannot be reached (connection,
//! TLS, timeout: the URL and the failure are named).
//!
//! The HTTP client is behind the `server-client` feature (on by default). A build without it keeps
//! the commands, so that `--help` is the same, but they only say that the build has no server
//! client (exit 2).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};

use crate::EXIT_USAGE;

/// The exit code when the server refused a request.
#[cfg(feature = "server-client")]
pub const EXIT_REFUSED: u8 = 1;

const ROLLOUT_COMMANDS: [(&str, &str); 6] = [
    (
        "start",
        "Start rolling out a published release (--version) on the channel",
    ),
    (
        "status",
        "Show the channel's rollout and its whole audit log",
    ),
    (
        "pause",
        "Pause the channel's rollout (--reason): no wave opens",
    ),
    ("resume", "Resume a paused rollout"),
    ("halt", "Halt the channel's rollout for good (--reason)"),
    (
        "revert",
        "Halt with revert: endpoints running the release go back to their last-known-good",
    ),
];

fn common(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("server")
            .long("server")
            .required(true)
            .value_name("URL")
            .help("the server's base URL, e.g. https://releases.example:8443"),
    )
    .arg(
        Arg::new("token-file")
            .long("token-file")
            .value_name("F")
            .value_parser(value_parser!(PathBuf))
            .help("file whose first line is the API token (else $BULWARK_TOKEN)"),
    )
    .arg(
        Arg::new("ca-cert")
            .long("ca-cert")
            .value_name("PEM")
            .value_parser(value_parser!(PathBuf))
            .help("also trust this PEM root certificate (e.g. a self-signed development server)"),
    )
    .arg(
        Arg::new("json")
            .long("json")
            .action(ArgAction::SetTrue)
            .help("print the server's JSON"),
    )
}

fn channel_arg(required: bool) -> Arg {
    Arg::new("channel")
        .long("channel")
        .required(required)
        .value_name("NAME")
        .help("the channel's name")
}

pub fn commands() -> Vec<Command> {
    let rollout = ROLLOUT_COMMANDS.iter().map(|(name, about)| {
        let mut c = common(Command::new(*name).about(*about)).arg(channel_arg(true));
        if *name == "start" {
            c = c.arg(
                Arg::new("version")
                    .long("version")
                    .required(true)
                    .value_name("N")
                    .value_parser(value_parser!(u64))
                    .help("the release's content version"),
            );
        }
        if matches!(*name, "pause" | "halt") {
            c = c.arg(
                Arg::new("reason")
                    .long("reason")
                    .required(true)
                    .value_name("TEXT")
                    .help("why (recorded in the audit log)"),
            );
        }
        c
    });
    vec![
        Command::new("release")
            .about("Publish signed envelopes to bulwark-server and list its releases")
            .subcommand_required(true)
            .subcommand(
                common(Command::new("publish").about(
                    "Upload a signed envelope; the server opens it as the loader would, or refuses it",
                ))
                .arg(
                    Arg::new("envelope")
                        .required(true)
                        .value_parser(value_parser!(PathBuf))
                        .help("the signed envelope (from `bulwark sign`)"),
                )
                .arg(channel_arg(true))
                .arg(
                    Arg::new("notes")
                        .long("notes")
                        .value_name("TEXT")
                        .help("free text stored with the release"),
                )
                .arg(
                    Arg::new("key")
                        .long("key")
                        .action(ArgAction::Append)
                        .requires("root")
                        .value_name("KEY")
                        .value_parser(value_parser!(PathBuf))
                        .help(
                            "a release secret key: sign and upload the next releases metadata \
                             listing this release (repeatable, up to the threshold)",
                        ),
                )
                .arg(
                    Arg::new("root")
                        .long("root")
                        .requires("key")
                        .value_name("root.json")
                        .value_parser(value_parser!(PathBuf))
                        .help("the trusted root metadata (from `bulwark metadata root`)"),
                )
                .arg(
                    Arg::new("expires-days")
                        .long("expires-days")
                        .default_value("90")
                        .value_name("DAYS")
                        .value_parser(value_parser!(u64).range(1..=3650))
                        .help("days until the signed releases metadata expires"),
                ),
            )
            .subcommand(
                common(Command::new("list").about("List the published releases, newest first"))
                    .arg(channel_arg(false)),
            ),
        Command::new("rollout")
            .about("Drive a channel's rollout on bulwark-server")
            .subcommand_required(true)
            .subcommands(rollout),
        Command::new("policy")
            .about("Endpoint policies per host group and channel on bulwark-server")
            .subcommand_required(true)
            .subcommand(common(
                Command::new("list").about("List the policies and the pins in force"),
            ))
            .subcommand(
                common(Command::new("set").about("Set a host group's policy on a channel"))
                    .arg(Arg::new("host-group").required(true).value_name("HOST_GROUP"))
                    .arg(Arg::new("channel").required(true).value_name("CHANNEL"))
                    .arg(policy_arg()),
            )
            .subcommand(
                common(Command::new("default").about(
                    "Set the policy of every host group and channel without an entry",
                ))
                .arg(policy_arg()),
            )
            .subcommand(
                common(Command::new("unset").about("Remove a host group's policy on a channel"))
                    .arg(Arg::new("host-group").required(true).value_name("HOST_GROUP"))
                    .arg(Arg::new("channel").required(true).value_name("CHANNEL")),
            ),
    ]
}

fn policy_arg() -> Arg {
    Arg::new("policy").required(true).value_name("POLICY").help(
        "ga, early, pause, delay:HOURS (0 to 72) or pin:VERSION:UNTIL (epoch seconds or +HOURS)",
    )
}

/// Parses a POLICY argument into the API's JSON (`now` for `pin:V:+HOURS`).
#[cfg_attr(not(feature = "server-client"), allow(dead_code))]
fn parse_policy(text: &str, now: u64) -> Result<serde_json::Value, String> {
    use serde_json::json;
    let bad = |why: &str| format!("policy {text:?}: {why}");
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        ["ga"] => Ok(json!("Ga")),
        ["early"] => Ok(json!("Early")),
        ["pause"] => Ok(json!("Pause")),
        ["delay", hours] => {
            let hours: u32 = hours
                .parse()
                .map_err(|_| bad("delay:HOURS needs a whole number of hours"))?;
            Ok(json!({ "Delay": { "hours": hours } }))
        }
        ["pin", version, until] => {
            let version: u64 = version
                .parse()
                .map_err(|_| bad("pin:VERSION:UNTIL needs a content version"))?;
            let until = match until.strip_prefix('+') {
                Some(hours) => hours
                    .parse::<u64>()
                    .ok()
                    .and_then(|h| h.checked_mul(3600))
                    .and_then(|s| s.checked_add(now))
                    .ok_or_else(|| bad("+HOURS needs a whole number of hours"))?,
                None => until
                    .parse()
                    .map_err(|_| bad("UNTIL is seconds since the epoch or +HOURS"))?,
            };
            Ok(json!({ "Pin": { "version": version, "expires_at": until } }))
        }
        _ => Err(bad(
            "expected ga, early, pause, delay:HOURS or pin:VERSION:UNTIL",
        )),
    }
}

pub fn run(name: &str, m: &ArgMatches) -> Option<ExitCode> {
    if !matches!(name, "release" | "rollout" | "policy") {
        return None;
    }
    let (sub, m) = m.subcommand()?;
    Some(run_command(name, sub, m))
}

#[cfg(not(feature = "server-client"))]
fn run_command(name: &str, sub: &str, _m: &ArgMatches) -> ExitCode {
    eprintln!(
        "bulwark: {name} {sub}: this build of bulwark has no server client (it was built without \
         the `server-client` feature); use a build with it"
    );
    ExitCode::from(EXIT_USAGE)
}

#[cfg(feature = "server-client")]
fn run_command(name: &str, sub: &str, m: &ArgMatches) -> ExitCode {
    match client::run(name, sub, m) {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            eprintln!("bulwark: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Refused(e)) => {
            eprintln!("bulwark: {e}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

/// Why a command failed.
#[cfg(feature = "server-client")]
enum Failure {
    /// Usage, I/O, connection: exit 2.
    Usage(String),
    /// The server refused: exit 1.
    Refused(String),
}

#[cfg(feature = "server-client")]
mod client {
    use std::error::Error as _;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::time::Duration;

    use clap::ArgMatches;
    use reqwest::blocking::{Client, RequestBuilder};
    use reqwest::{Method, Url};
    use serde_json::{json, Value};

    use super::Failure;

    const TOKEN_ENV: &str = "BULWARK_TOKEN";

    pub(super) fn run(name: &str, sub: &str, m: &ArgMatches) -> Result<ExitCode, Failure> {
        let server = Server::from_args(m)?;
        // `policy default` and `policy list` have no channel argument.
        let channel = m.try_get_one::<String>("channel").ok().flatten().cloned();
        let json_out = m.get_flag("json");
        let body = match (name, sub) {
            ("release", "publish") => {
                let path = m
                    .get_one::<PathBuf>("envelope")
                    .cloned()
                    .unwrap_or_default();
                let bytes = std::fs::read(&path)
                    .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
                let mut url = server.url(&["releases"])?;
                url.query_pairs_mut()
                    .append_pair("channel", channel.as_deref().unwrap_or_default());
                if let Some(notes) = m.get_one::<String>("notes") {
                    url.query_pairs_mut().append_pair("notes", notes);
                }
                let req = server
                    .request(Method::POST, url.clone())
                    .header("content-type", "application/octet-stream")
                    .body(bytes.clone());
                let mut body = server.send(req, &url, json_out)?;
                if let Some(root) = m.get_one::<PathBuf>("root") {
                    let signed = sign_releases(&server, m, root, &bytes, channel.as_deref())?;
                    if let Some(obj) = body.as_object_mut() {
                        obj.insert("releases_metadata".to_owned(), signed);
                    }
                }
                body
            }
            ("policy", "list") => {
                let url = server.url(&["policies"])?;
                server.send(server.request(Method::GET, url.clone()), &url, json_out)?
            }
            ("policy", "set" | "default" | "unset") => {
                let arg = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
                let url = match sub {
                    "default" => server.url(&["policies", "default"])?,
                    _ => server.url(&["policies", &arg("host-group"), &arg("channel")])?,
                };
                let req = if sub == "unset" {
                    server.request(Method::DELETE, url.clone())
                } else {
                    let policy = super::parse_policy(&arg("policy"), crate::metadata::now())
                        .map_err(Failure::Usage)?;
                    server.request(Method::PUT, url.clone()).json(&policy)
                };
                server.send(req, &url, json_out)?
            }
            ("release", "list") => {
                let mut url = server.url(&["releases"])?;
                if let Some(c) = &channel {
                    url.query_pairs_mut().append_pair("channel", c);
                }
                server.send(server.request(Method::GET, url.clone()), &url, json_out)?
            }
            ("rollout", "status") => {
                let url = server.url(&["rollouts", channel.as_deref().unwrap_or_default()])?;
                server.send(server.request(Method::GET, url.clone()), &url, json_out)?
            }
            ("rollout", cmd) => {
                let url = server.url(&["rollouts", channel.as_deref().unwrap_or_default(), cmd])?;
                let body = match cmd {
                    "start" => json!({ "version": m.get_one::<u64>("version") }),
                    "pause" | "halt" => json!({ "reason": m.get_one::<String>("reason") }),
                    _ => json!({}),
                };
                let req = server.request(Method::POST, url.clone()).json(&body);
                server.send(req, &url, json_out)?
            }
            _ => return Err(Failure::Usage(format!("unknown command {name} {sub}"))),
        };
        if json_out {
            println!("{body:#}");
        } else {
            match (name, sub) {
                ("release", "publish") => {
                    print!("{}", super::human::release(&body));
                    if let Some(v) = body.pointer("/releases_metadata/releases_version") {
                        println!("signed and uploaded releases metadata v{v}");
                    }
                }
                ("release", "list") => print!("{}", super::human::releases(&body)),
                ("policy", _) => print!("{}", super::human::policies(&body)),
                _ => print!("{}", super::human::rollout(&body)),
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Signs the next releases metadata (the server's current one, verified against `root`,
    /// plus this envelope's release) with `--key` and uploads it.
    fn sign_releases(
        server: &Server,
        m: &ArgMatches,
        root: &Path,
        envelope: &[u8],
        channel: Option<&str>,
    ) -> Result<Value, Failure> {
        let root_text = std::fs::read_to_string(root)
            .map_err(|e| Failure::Usage(format!("--root {}: {e}", root.display())))?;
        let keys = m
            .get_many::<PathBuf>("key")
            .into_iter()
            .flatten()
            .map(|p| crate::metadata::secret_key(p).map_err(Failure::Usage))
            .collect::<Result<Vec<_>, _>>()?;
        let url = server.url(&["metadata", "releases.json"])?;
        let resp = server
            .request(Method::GET, url.clone())
            .send()
            .map_err(|e| Failure::Usage(unreachable(&url, &e)))?;
        let current = match resp.status() {
            s if s.is_success() => Some(resp.text().map_err(|e| {
                Failure::Usage(format!("{url}: reading the response failed: {}", chain(&e)))
            })?),
            reqwest::StatusCode::NOT_FOUND => None,
            s => {
                return Err(Failure::Refused(format!(
                    "server refused (HTTP {s}) the releases metadata: {}",
                    excerpt(&resp.text().unwrap_or_default())
                )))
            }
        };
        let days = m.get_one::<u64>("expires-days").copied().unwrap_or(90);
        let (file, version) = crate::metadata::next_releases(
            &root_text,
            current.as_deref(),
            channel.unwrap_or_default(),
            envelope,
            &keys,
            days,
        )
        .map_err(Failure::Usage)?;
        let req = server
            .request(Method::PUT, url.clone())
            .header("content-type", "application/json")
            .body(file);
        let body = server.send(req, &url, false)?;
        debug_assert_eq!(body["releases_version"], json!(version));
        Ok(body)
    }

    struct Server {
        base: Url,
        token: String,
        client: Client,
    }

    fn read_token(m: &ArgMatches) -> Result<String, Failure> {
        let (token, from) = match m.get_one::<PathBuf>("token-file") {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Failure::Usage(format!(
                        "cannot read the token file {}: {e}",
                        path.display()
                    ))
                })?;
                let first = text.lines().next().unwrap_or("").trim().to_owned();
                (first, path.display().to_string())
            }
            None => match std::env::var(TOKEN_ENV) {
                Ok(t) => (t.trim().to_owned(), format!("${TOKEN_ENV}")),
                Err(_) => {
                    return Err(Failure::Usage(format!(
                        "no API token: give --token-file F or set {TOKEN_ENV}"
                    )))
                }
            },
        };
        if token.is_empty() {
            return Err(Failure::Usage(format!("the API token in {from} is empty")));
        }
        // A header value must be visible ASCII; say so here rather than as an opaque builder error.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Failure::Usage(format!(
                "the API token in {from} has characters a token cannot have"
            )));
        }
        Ok(token)
    }

    fn read_ca(path: &Path) -> Result<reqwest::Certificate, Failure> {
        let pem = std::fs::read(path).map_err(|e| {
            Failure::Usage(format!("cannot read --ca-cert {}: {e}", path.display()))
        })?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(Failure::Usage(format!(
                "--ca-cert {}: no PEM certificate in it",
                path.display()
            )));
        }
        reqwest::Certificate::from_pem(&pem)
            .map_err(|e| Failure::Usage(format!("--ca-cert {}: {}", path.display(), chain(&e))))
    }

    impl Server {
        fn from_args(m: &ArgMatches) -> Result<Self, Failure> {
            let raw = m.get_one::<String>("server").cloned().unwrap_or_default();
            let base = Url::parse(&raw)
                .map_err(|e| Failure::Usage(format!("--server {raw:?}: not a URL: {e}")))?;
            if base.scheme() != "https" {
                return Err(Failure::Usage(format!(
                    "--server {raw:?}: must be an https:// URL (the server only speaks TLS, and \
                     the token must not travel in clear)"
                )));
            }
            if base.cannot_be_a_base() || base.host().is_none() {
                return Err(Failure::Usage(format!("--server {raw:?}: no host")));
            }
            let token = read_token(m)?;
            let mut builder = Client::builder()
                .connect_timeout(Duration::from_secs(15))
                .timeout(Duration::from_secs(120))
                .user_agent(concat!("bulwark-cli/", env!("CARGO_PKG_VERSION")));
            if let Some(path) = m.get_one::<PathBuf>("ca-cert") {
                builder = builder.add_root_certificate(read_ca(path)?);
            }
            let client = builder.build().map_err(|e| {
                Failure::Usage(format!("cannot set up the HTTPS client: {}", chain(&e)))
            })?;
            Ok(Self {
                base,
                token,
                client,
            })
        }

        /// The URL of `/v1/<segments>` under the base URL (each segment percent-encoded).
        fn url(&self, segments: &[&str]) -> Result<Url, Failure> {
            let mut url = self.base.clone();
            url.set_query(None);
            url.set_fragment(None);
            {
                let mut path = url.path_segments_mut().map_err(|()| {
                    Failure::Usage(format!("--server {}: not a base URL", self.base))
                })?;
                path.pop_if_empty().push("v1");
                path.extend(segments);
            }
            Ok(url)
        }

        fn request(&self, method: Method, url: Url) -> RequestBuilder {
            self.client.request(method, url).bearer_auth(&self.token)
        }

        /// Sends the request; the JSON body of a 2xx, or the failure.
        fn send(&self, req: RequestBuilder, url: &Url, json_out: bool) -> Result<Value, Failure> {
            let resp = req
                .send()
                .map_err(|e| Failure::Usage(unreachable(url, &e)))?;
            let status = resp.status();
            let text = resp.text().map_err(|e| {
                Failure::Usage(format!("{url}: reading the response failed: {}", chain(&e)))
            })?;
            let parsed: Option<Value> = serde_json::from_str(&text).ok();
            if status.is_success() {
                return parsed.ok_or_else(|| {
                    Failure::Usage(format!(
                        "{url}: HTTP {status}, but the body is not JSON: {}",
                        excerpt(&text)
                    ))
                });
            }
            let message = match &parsed {
                Some(v) if v.get("message").is_some() => {
                    let code = v.get("error").and_then(Value::as_str).unwrap_or("error");
                    let msg = v.get("message").and_then(Value::as_str).unwrap_or_default();
                    let mut s = format!("server refused (HTTP {status}, {code}): {msg}");
                    if let Some(d) = v.get("details") {
                        s.push_str(&format!(" (details: {d})"));
                    }
                    s
                }
                _ => format!("server refused (HTTP {status}): {}", excerpt(&text)),
            };
            if json_out {
                if let Some(v) = &parsed {
                    println!("{v:#}");
                }
            }
            Err(Failure::Refused(message))
        }
    }

    fn excerpt(text: &str) -> String {
        let t = text.trim();
        match t.char_indices().nth(300) {
            Some((i, _)) => format!("{}…", &t[..i]),
            None if t.is_empty() => "(empty body)".to_owned(),
            None => t.to_owned(),
        }
    }

    /// An error and its sources, joined by ": ".
    fn chain(e: &(dyn std::error::Error + 'static)) -> String {
        let mut s = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            let t = c.to_string();
            if !s.contains(&t) {
                s.push_str(": ");
                s.push_str(&t);
            }
            cur = c.source();
        }
        s
    }

    /// Names what failed when the server could not be reached.
    fn unreachable(url: &Url, e: &reqwest::Error) -> String {
        // reqwest's own message repeats the URL, named here already: its sources say what failed.
        let detail = match e.source() {
            Some(inner) => chain(inner),
            None => chain(e),
        };
        let lower = detail.to_lowercase();
        let what = if e.is_timeout() {
            "timed out"
        } else if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake")
            || lower.contains("unknownissuer")
        {
            "TLS failed"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        let mut s = format!("cannot reach {url}: {what}: {detail}");
        if what == "TLS failed" && lower.contains("certificate") {
            s.push_str(
                " (is the server's certificate from a trusted root? for a self-signed development \
                 server pass its certificate with --ca-cert PEM)",
            );
        }
        s
    }
}

/// The human summaries of the server's JSON.
#[cfg_attr(not(feature = "server-client"), allow(dead_code))]
mod human {
    use std::fmt::Write as _;

    use serde_json::Value;

    fn s(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".to_owned(),
            v => v.to_string(),
        }
    }

    /// Aligned `key  value` lines.
    fn table(rows: &[(&str, String)]) -> String {
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<w$}  {v}");
        }
        out
    }

    /// `YYYY-MM-DD HH:MM:SSZ` of seconds since the Unix epoch.
    pub fn time(secs: &Value) -> String {
        let Some(t) = secs.as_u64() else {
            return s(secs);
        };
        let days = (t / 86_400) as i64;
        let rem = t % 86_400;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    pub fn release(v: &Value) -> String {
        let rules = v["rules"].as_array().map_or(0, Vec::len);
        table(&[
            ("channel", s(&v["channel"])),
            ("version", s(&v["version"])),
            ("pack sha256", s(&v["pack_sha256"])),
            ("envelope sha256", s(&v["envelope_sha256"])),
            ("rules", rules.to_string()),
            ("notes", s(&v["notes"])),
            (
                "published",
                format!("{} by {}", time(&v["published_at"]), s(&v["published_by"])),
            ),
        ])
    }

    pub fn releases(v: &Value) -> String {
        let Some(list) = v.as_array() else {
            return format!("{v:#}\n");
        };
        if list.is_empty() {
            return "no releases\n".to_owned();
        }
        let header = [
            "CHANNEL",
            "VERSION",
            "PUBLISHED",
            "BY",
            "RULES",
            "ENVELOPE SHA256",
            "NOTES",
        ];
        let rows: Vec<[String; 7]> = list
            .iter()
            .map(|r| {
                [
                    s(&r["channel"]),
                    s(&r["version"]),
                    time(&r["published_at"]),
                    s(&r["published_by"]),
                    r["rules"].as_array().map_or(0, Vec::len).to_string(),
                    s(&r["envelope_sha256"]),
                    s(&r["notes"]),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(c);
                } else {
                    let _ = write!(l, "{c:<w$}  ");
                }
            }
            let _ = writeln!(out, "{}", l.trim_end());
        };
        line(&header.map(str::to_owned));
        for r in &rows {
            line(r);
        }
        out
    }

    /// The status line of a `ChannelRollout`.
    fn status(state: &Value) -> String {
        let st = &state["status"];
        let mut text = match st {
            Value::String(name) => name.to_lowercase(),
            Value::Object(o) => match o.iter().next() {
                Some((k, body)) if k == "Paused" => format!("paused: {}", s(&body["reason"])),
                Some((k, body)) if k == "Halted" => {
                    let cause = &body["halt"]["cause"];
                    if let Some(op) = cause.get("Operator") {
                        format!("halted by an operator: {}", s(&op["reason"]))
                    } else if let Some(auto) = cause.get("Automatic") {
                        let n = auto["failed"].as_array().map_or(0, Vec::len);
                        format!("halted automatically: {n} failed health test(s)")
                    } else {
                        format!("halted: {cause}")
                    }
                }
                Some((k, _)) => k.to_lowercase(),
                None => st.to_string(),
            },
            v => s(v),
        };
        if state["revert"].as_bool() == Some(true) {
            text.push_str(" (revert: endpoints go back to their last-known-good)");
        }
        text
    }

    fn event(e: &Value) -> String {
        // `GET` returns {"at", "actor", "event"}; commands return the bare events.
        let (prefix, ev) = match (e.get("actor"), e.get("event")) {
            (Some(actor), Some(ev)) => (format!("{}  {}  ", time(&e["at"]), s(actor)), ev),
            _ => (String::new(), e),
        };
        let body = match ev {
            Value::Object(o) if o.len() == 1 => {
                let (k, v) = o
                    .iter()
                    .next()
                    .map(|(k, v)| (k.clone(), v))
                    .unwrap_or_default();
                format!("{k} {v}")
            }
            v => v.to_string(),
        };
        format!("{prefix}{body}")
    }

    pub fn rollout(v: &Value) -> String {
        let st = &v["state"];
        let waves = st["plan"]["waves"].as_array().map_or(0, Vec::len);
        let mut out = table(&[
            ("channel", s(&st["channel"]["name"])),
            ("release", s(&st["release"]["version"])),
            ("baseline", s(&st["baseline_version"])),
            ("status", status(st)),
            ("waves open", format!("{} of {waves}", s(&st["open_waves"]))),
            ("revision", s(&st["revision"])),
            ("envelope sha256", s(&st["release"]["envelope_sha256"])),
        ]);
        if let Some(events) = v["events"].as_array().filter(|e| !e.is_empty()) {
            out.push_str("events:\n");
            for e in events {
                let _ = writeln!(out, "  {}", event(e));
            }
        }
        out
    }

    /// A policy as operators type it.
    pub fn policy(p: &Value) -> String {
        match p {
            Value::String(name) => name.to_lowercase(),
            Value::Object(o) => {
                if let Some(d) = o.get("Delay") {
                    format!("delay {} h", s(&d["hours"]))
                } else if let Some(pin) = o.get("Pin") {
                    format!(
                        "pin to version {} until {}",
                        s(&pin["version"]),
                        time(&pin["expires_at"])
                    )
                } else {
                    p.to_string()
                }
            }
            _ => s(p),
        }
    }

    pub fn policies(v: &Value) -> String {
        let mut out = table(&[("default", policy(&v["default"]))]);
        let entries = v["entries"].as_array().map_or(&[][..], Vec::as_slice);
        if entries.is_empty() {
            out.push_str("no host group has a policy of its own\n");
        } else {
            let _ = writeln!(out, "{:<24} {:<16} POLICY", "HOST GROUP", "CHANNEL");
            for e in entries {
                let _ = writeln!(
                    out,
                    "{:<24} {:<16} {}",
                    s(&e["host_group"]),
                    s(&e["channel"]),
                    policy(&e["policy"])
                );
            }
        }
        let pins = v["active_pins"].as_array().map_or(&[][..], Vec::as_slice);
        let _ = writeln!(out, "active pins: {}", pins.len());
        for p in pins {
            let _ = writeln!(
                out,
                "  {} on {}: version {} until {}",
                p["host_group"].as_str().unwrap_or("every host group"),
                p["channel"].as_str().unwrap_or("every channel"),
                s(&p["version"]),
                time(&p["expires_at"])
            );
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use serde_json::json;

        #[test]
        fn policies_read_as_typed() {
            assert_eq!(super::policy(&json!("Ga")), "ga");
            assert_eq!(
                super::policy(&json!({"Delay": {"hours": 12}})),
                "delay 12 h"
            );
            assert_eq!(
                super::policy(&json!({"Pin": {"version": 3, "expires_at": 0}})),
                "pin to version 3 until 1970-01-01 00:00:00Z"
            );
        }

        #[test]
        fn policy_arguments_parse() {
            use super::super::parse_policy;
            assert_eq!(parse_policy("ga", 0), Ok(json!("Ga")));
            assert_eq!(
                parse_policy("delay:24", 0),
                Ok(json!({"Delay": {"hours": 24}}))
            );
            assert_eq!(
                parse_policy("pin:7:+2", 100),
                Ok(json!({"Pin": {"version": 7, "expires_at": 7300}}))
            );
            assert_eq!(
                parse_policy("pin:7:5000", 100),
                Ok(json!({"Pin": {"version": 7, "expires_at": 5000}}))
            );
            for bad in [
                "", "delay", "delay:x", "pin:7", "pin:x:+1", "pin:7:+x", "hold",
            ] {
                let e = parse_policy(bad, 0).unwrap_err();
                assert!(e.contains(&format!("{bad:?}")), "{e}");
            }
        }

        #[test]
        fn times_are_utc_dates() {
            assert_eq!(super::time(&json!(0)), "1970-01-01 00:00:00Z");
            assert_eq!(super::time(&json!(951_782_400)), "2000-02-29 00:00:00Z");
            assert_eq!(super::time(&json!(1_767_225_599)), "2025-12-31 23:59:59Z");
        }
    }
}
