//! The content source and the telemetry sink: bulwark-server over HTTPS ([`Http`]), or a local
//! directory as `bulwark-server export DIR` writes it ([`LocalDir`]). The server is untrusted:
//! every response is bounded in size and time, redirects to another host are refused, and
//! nothing it says is acted on before the agent has verified it.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest metadata file accepted.
pub const MAX_METADATA_BYTES: usize = 1 << 20;
/// The largest envelope accepted (the loader's own bound).
pub const MAX_ENVELOPE_BYTES: usize = bulwark_loader_boot_guard::envelope::MAX_ENVELOPE_BYTES;
/// The largest reply to enroll, heartbeat or telemetry.
pub const MAX_REPLY_BYTES: usize = 64 << 10;

/// Why a fetch or a report failed. Every one is retried later.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Connection, TLS, timeout or redirect.
    #[error("transport: {0}")]
    Transport(String),
    /// A status the agent did not expect.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The response was over its bound.
    #[error("response over {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// The response did not parse.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The response's `Content-Type` is not what the request asked for.
    #[error("response of type {got:?} where {expected} was expected")]
    ContentType {
        /// The media type expected.
        expected: &'static str,
        /// What the response said (empty: no `Content-Type`).
        got: String,
    },
    /// A local file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The three metadata files of the fetch path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    /// `root.json`.
    Root,
    /// `releases.json`.
    Releases,
    /// `rollout.json`.
    Rollout,
}

impl Metadata {
    fn file(self) -> &'static str {
        match self {
            Metadata::Root => "root.json",
            Metadata::Releases => "releases.json",
            Metadata::Rollout => "rollout.json",
        }
    }
}

/// Where signed metadata and envelopes come from.
pub trait ContentSource {
    /// A metadata file's text.
    fn metadata(&mut self, which: Metadata) -> Result<String, NetError>;
    /// The metadata file, or `None` when the source knows its version is not newer than
    /// `held` (the version the endpoint trusts): a conditional fetch. A source that cannot tell
    /// returns the file, which the endpoint then compares with what it holds.
    fn metadata_newer(
        &mut self,
        which: Metadata,
        held: Option<u64>,
    ) -> Result<Option<String>, NetError> {
        let _ = held;
        self.metadata(which).map(Some)
    }
    /// An envelope by its SHA-256 (lowercase hex).
    fn envelope(&mut self, sha256_hex: &str) -> Result<Vec<u8>, NetError>;
}

/// What the agent reports at enrollment.
#[derive(Debug, Clone, Serialize)]
pub struct Enrollment {
    /// The shared enrollment secret.
    pub secret: String,
    /// Windows build.
    pub os_build: String,
    /// Hardware class.
    pub hw_class: String,
    /// Host group (policies resolve by it).
    pub host_group: String,
}

/// The server's answer to an enrollment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Enrolled {
    /// The endpoint id (hex).
    pub endpoint_id: String,
    /// Its bearer token.
    pub token: String,
}

/// The outcome of a sequenced report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Stored.
    Stored,
    /// The server already has this sequence number (409 `replayed`): delivered before.
    Replayed,
}

/// Where telemetry goes.
pub trait TelemetrySink {
    /// Enrolls this endpoint.
    fn enroll(&mut self, enrollment: &Enrollment) -> Result<Enrolled, NetError>;
    /// Sends a heartbeat (a JSON body with its `seq`).
    fn heartbeat(&mut self, token: &str, body: &[u8]) -> Result<Delivered, NetError>;
    /// Sends a telemetry batch (a JSON body with its `seq`).
    fn telemetry(&mut self, token: &str, body: &[u8]) -> Result<Delivered, NetError>;
}

/// bulwark-server over HTTPS (reqwest, rustls).
pub struct Http {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Http {
    /// A client of `base` (`https://host:port`). `ca_pem` replaces the built-in roots (a
    /// development server's self-signed certificate); `resolve` pins a host name to an address.
    pub fn new(
        base: &str,
        ca_pem: Option<&[u8]>,
        resolve: Option<(&str, std::net::SocketAddr)>,
        timeout: Duration,
    ) -> Result<Self, NetError> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(true)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same = attempt.previous().first().map(|u| (u.host_str(), u.port()))
                    == Some((attempt.url().host_str(), attempt.url().port()));
                if same && attempt.previous().len() < 3 {
                    attempt.follow()
                } else {
                    attempt.error("redirect to another host refused")
                }
            }));
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| NetError::Transport(with_causes(&e)))?;
            b = b.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        if let Some((host, addr)) = resolve {
            b = b.resolve(host, addr);
        }
        let client = b
            .build()
            .map_err(|e| NetError::Transport(with_causes(&e)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NetError::Io)?;
        Ok(Http {
            base: base.trim_end_matches('/').to_owned(),
            client,
            runtime,
        })
    }

    /// Sends `req` and reads the response, at most `limit` bytes; a 200 must have the media
    /// type `expected` (parameters such as `charset` aside) when one is given.
    fn send(
        &self,
        req: reqwest::RequestBuilder,
        limit: usize,
        expected: Option<&'static str>,
    ) -> Result<(u16, Vec<u8>), NetError> {
        self.runtime.block_on(async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| NetError::Transport(with_causes(&e)))?;
            let status = resp.status().as_u16();
            if let Some(expected) = expected.filter(|_| status == 200) {
                let got = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default();
                let media = got.split(';').next().unwrap_or("").trim();
                if !media.eq_ignore_ascii_case(expected) {
                    return Err(NetError::ContentType { expected, got });
                }
            }
            if resp.content_length().is_some_and(|n| n > limit as u64) {
                return Err(NetError::TooLarge { limit });
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| NetError::Transport(with_causes(&e)))?
            {
                if body.len().saturating_add(chunk.len()) > limit {
                    return Err(NetError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        })
    }

    fn get(&self, path: &str, limit: usize, expected: &'static str) -> Result<Vec<u8>, NetError> {
        let (status, body) = self.send(
            self.client.get(format!("{}{path}", self.base)),
            limit,
            Some(expected),
        )?;
        if status != 200 {
            return Err(status_error(status, &body));
        }
        Ok(body)
    }

    fn post_sequenced(&self, path: &str, token: &str, body: &[u8]) -> Result<Delivered, NetError> {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_vec());
        let (status, reply) = self.send(req, MAX_REPLY_BYTES, None)?;
        match status {
            200 => Ok(Delivered::Stored),
            409 if error_code(&reply).as_deref() == Some("replayed") => Ok(Delivered::Replayed),
            _ => Err(status_error(status, &reply)),
        }
    }
}

/// An error with its causes, outermost first (`error sending request: client error (Connect):
/// tcp connect error: Connection refused`): reqwest's own message names only the outermost.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.as_str().map(str::to_owned)
}

fn status_error(status: u16, body: &[u8]) -> NetError {
    let text = String::from_utf8_lossy(body.get(..body.len().min(300)).unwrap_or(&[]));
    NetError::Status {
        status,
        body: text.into_owned(),
    }
}

impl ContentSource for Http {
    fn metadata(&mut self, which: Metadata) -> Result<String, NetError> {
        let body = self.get(
            &format!("/v1/metadata/{}", which.file()),
            MAX_METADATA_BYTES,
            "application/json",
        )?;
        String::from_utf8(body).map_err(|e| NetError::Malformed(e.to_string()))
    }

    fn envelope(&mut self, sha256_hex: &str) -> Result<Vec<u8>, NetError> {
        if sha256_hex.len() != 64 || !sha256_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NetError::Malformed("not a SHA-256".into()));
        }
        self.get(
            &format!("/v1/envelopes/{sha256_hex}"),
            MAX_ENVELOPE_BYTES,
            "application/octet-stream",
        )
    }
}

impl TelemetrySink for Http {
    fn enroll(&mut self, enrollment: &Enrollment) -> Result<Enrolled, NetError> {
        let body =
            serde_json::to_vec(enrollment).map_err(|e| NetError::Malformed(e.to_string()))?;
        let req = self
            .client
            .post(format!("{}/v1/enroll", self.base))
            .header("content-type", "application/json")
            .body(body);
        let (status, reply) = self.send(req, MAX_REPLY_BYTES, Some("application/json"))?;
        if status != 200 {
            return Err(status_error(status, &reply));
        }
        serde_json::from_slice(&reply).map_err(|e| NetError::Malformed(e.to_string()))
    }

    fn heartbeat(&mut self, token: &str, body: &[u8]) -> Result<Delivered, NetError> {
        self.post_sequenced("/v1/heartbeat", token, body)
    }

    fn telemetry(&mut self, token: &str, body: &[u8]) -> Result<Delivered, NetError> {
        self.post_sequenced("/v1/telemetry", token, body)
    }
}

/// The static fetch path in a directory (`bulwark-server export DIR`, or a CDN's mirror).
pub struct LocalDir(pub PathBuf);

fn read_bounded(path: &std::path::Path, limit: usize) -> Result<Vec<u8>, NetError> {
    let f = std::fs::File::open(path)?;
    let mut body = Vec::new();
    f.take(limit as u64 + 1).read_to_end(&mut body)?;
    if body.len() > limit {
        return Err(NetError::TooLarge { limit });
    }
    Ok(body)
}

impl ContentSource for LocalDir {
    fn metadata(&mut self, which: Metadata) -> Result<String, NetError> {
        let body = read_bounded(
            &self.0.join("v1/metadata").join(which.file()),
            MAX_METADATA_BYTES,
        )?;
        String::from_utf8(body).map_err(|e| NetError::Malformed(e.to_string()))
    }

    fn envelope(&mut self, sha256_hex: &str) -> Result<Vec<u8>, NetError> {
        if sha256_hex.len() != 64 || !sha256_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NetError::Malformed("not a SHA-256".into()));
        }
        read_bounded(
            &self.0.join("v1/envelopes").join(sha256_hex),
            MAX_ENVELOPE_BYTES,
        )
    }
}
