//! Bulwark's release server: endpoints enroll, report heartbeats and telemetry; release engineers
//! publish signed envelopes and drive rollouts; a controller loop steps every rollout from the
//! telemetry; and the fetch path (`rollout.json`, envelopes by hash) is static so that any CDN
//! can serve it (`bulwark-server export DIR`).
//!
//! # Modules
//!
//! * [`store`]: the [`Store`] trait (every method one transaction) and its rows;
//!   [`sqlite`]: [`SqliteStore`], one SQLite file in WAL mode, migrated on open (`PRAGMA
//!   user_version`); [`postgres`]: [`PostgresStore`], the same schema in PostgreSQL for several
//!   instances behind a load balancer (`--database postgres://...`).
//! * [`api`]: the axum router and handlers; [`tls`]: rustls (ring) over tokio, PEM files or a
//!   self-signed certificate generated with `rcgen` (`--self-signed`, development and tests).
//! * [`controller`]: telemetry into `bulwark_rollout::HealthObservations`, then
//!   `bulwark_rollout::controller::step`; the loop runs every `--controller-interval` seconds.
//! * [`export`]: writes the static fetch path to a directory.
//! * [`openapi`]: the API's OpenAPI 3.1 description (`server/openapi.yaml`: every operation, its
//!   token and roles, every status with its error codes), served at `GET /v1/openapi.yaml`.
//!
//! # API (JSON, under `/v1`)
//!
//! Every error is a 4xx or 5xx with `{"error": code, "message": text}` (and `details` for
//! envelope refusals), and a refused request stores nothing. Unknown paths are 404
//! `not_found`; a method a path does not take, 405 `method_not_allowed` with `Allow`; a path
//! segment that is not UTF-8, 400 `bad_request`; a sequence number, version or count above what
//! the stores hold (2^63 - 1; 2^32 - 1 for a detection count), 400 `bad_request`. Bodies have explicit limits (16 KiB for small JSON requests, 1 MiB for
//! telemetry, the loader's `MAX_ENVELOPE_BYTES` for uploads): over them, 413 `body_too_large`.
//! Malformed JSON or unknown fields: 400 `malformed_json`.
//!
//! ## Endpoints (sensors)
//!
//! * `POST /v1/enroll` `{"secret", "os_build", "hw_class", "host_group"}` →
//!   `{"endpoint_id", "token"}`. The secret is compared in constant time (SHA-256 of both, then
//!   `subtle`); wrong: 401 `bad_enrollment_secret`. The token (`bwe_` + 64 hex) is shown once;
//!   only its SHA-256 is stored.
//! * `POST /v1/heartbeat` (`Authorization: Bearer <endpoint token>`)
//!   `{"seq", "channel", "content_version", "confirmed_healthy"?, "shutdown"?}`.
//! * `POST /v1/telemetry` (same token) `{"seq", "channel", "guard_events": [{"release_version",
//!   "kind": "crash"|"revert"|"quarantine"|"reject", "reason"?}], "detections":
//!   [{"release_version", "rule", "count"}], "alerts": [{"release_version", "rule", "title",
//!   "author", "level", "action", "blocked", "time_ms", "event_type", "process_id",
//!   "parent_process_id", "image", "command_line", "user", "parent_image", "hashes",
//!   "truncated"}]}`, at most 1000 of each (else 413 `batch_too_large`), stored in one
//!   transaction. A `reject` (the endpoint refused the release before its driver saw it) carries
//!   the endpoint's verifier or loader message (at most 2048 bytes) and no other kind has one;
//!   the controller counts rejections against the `rejection-ceiling`. Alert context fields are
//!   at most 4096 bytes each; the newest 1,000,000 alerts are kept.
//!
//! `seq` is strictly increasing per endpoint across heartbeats and telemetry: a replayed or
//! reordered message is 409 `replayed`. Missing token: 401 `missing_token`; unknown: 401
//! `bad_token`; unknown channel: 404 `not_found`.
//!
//! ## Release engineers
//!
//! Bearer tokens (`bwr_` + 64 hex) made with `bulwark-server token create --role ROLE --name
//! NAME`, which prints the token once. Roles are distinct: `publisher` uploads, `operator`
//! drives rollouts, and any role (`viewer` included) reads. Wrong role: 403 `wrong_role`.
//!
//! * `POST /v1/releases?channel=NAME&notes=TEXT` (publisher), body: the envelope's bytes. It is
//!   opened with the loader's own `bulwark_loader_boot_guard::open` against the configured
//!   trusted keys, the channel's number and the newest version already published on it
//!   (anti-downgrade), so signature, channel, version, schema and the interpreter's verifier are
//!   all checked; a refusal is 422 `envelope_rejected` with the loader's message and
//!   `details.loader_code`. The envelope is stored content-addressed by SHA-256 and the release
//!   (channel, version, pack and envelope SHA-256, rule ids, notes) in the same transaction.
//! * `GET /v1/releases[?channel=NAME]` (any role): newest first.
//! * `POST /v1/rollouts/{channel}/start|pause|resume|halt|revert` (operator): `start` takes
//!   `{"version", "plan"?}` (the default plan otherwise), `pause` and `halt` `{"reason"}`. Each
//!   calls the matching `bulwark_rollout::controller` command; its refusal is 409
//!   `command_refused` with the command's message. The new state, the wave thresholds computed
//!   from the current census, and the command's events (the audit log, with the token's name)
//!   are written in one transaction, guarded against a concurrent change. Returns
//!   `{"state", "thresholds", "events"}`.
//! * `GET /v1/rollouts/{channel}` (any role): the same, with the whole audit log.
//! * `GET /v1/alerts?channel=NAME&after=ID&limit=N` (any role): alerts with an id above `after`,
//!   oldest first (1 to 1000, default 100), and `next`, the `after` of the next read.
//! * `GET /v1/rejections?channel=NAME&version=N&limit=N` (any role): the endpoints' refusals of a
//!   release (or of any), newest first, with their reasons.
//!
//! ## The static fetch path (no authentication)
//!
//! * `GET /v1/metadata/rollout.json`: `{"state": RolloutState, "thresholds": {channel:
//!   WaveThresholds}}` (`Cache-Control: no-cache`). **Unsigned for now**: this path will hold
//!   the signed rollout metadata of `bulwark-distribution` once that is wired in.
//! * `GET /v1/envelopes/{sha256}`: the envelope, immutable (`Cache-Control: public,
//!   max-age=31536000, immutable`, `ETag`).
//!
//! `bulwark-server export DIR` writes exactly `DIR/v1/metadata/rollout.json` and
//! `DIR/v1/envelopes/<sha256>`.
//!
//! # The controller
//!
//! [`controller::tick`] reads each progressing or paused rollout, builds its observations from
//! the heartbeat, guard-event and detection tables (see [`controller::observe`] for who counts
//! in which cohort), calls `step`, and persists any changed state with its events (halts
//! included) as the actor `controller`.
//!
//! # Tests
//!
//! `tests/api.rs` runs the server on 127.0.0.1:0 over real TLS (a self-signed certificate the
//! reqwest/rustls client trusts, and no other root) with a fixed [`Clock`]:
//! * enrollment (only the token's hash stored), heartbeat, a telemetry batch (detection counts
//!   adding up), publishing a real signed envelope (assembled pack, sealed like the loader's
//!   tests), listing, start/pause/resume and the audit log, `rollout.json`, the envelope by hash
//!   with its cache headers, and `export` writing exactly the fetch path;
//! * the controller: 20 endpoints, a 25% first wave; one quarantine in the canaries changes
//!   nothing, the second halts the rollout with `revert`, recorded as the `controller`'s event;
//! * rejections and alerts: a canary's refusal is read back with its reason and halts the
//!   rollout (`rejection-ceiling`); alerts are read back page by page with their context;
//! * refusals, each with its status, code, message and the whole database (every row of every
//!   table) unchanged: wrong or truncated enrollment secret, malformed JSON, unknown field,
//!   oversized bodies (enrollment, 9 MiB upload), oversized batch, unknown event kind, missing,
//!   unknown and wrong-kind tokens, replayed heartbeat and telemetry, unknown channel, viewer or
//!   operator publishing, publisher starting a rollout, untrusted signer, tampered and truncated
//!   envelopes (with the loader's code), downgrade, invalid plan, unknown release, command or
//!   path.
//!
//! Each was seen to fail against a deliberate break: the secret not checked, the replay check
//! off by one, telemetry without the sequence check, roles not checked, the loader not told the
//! newest version, quarantines not aggregated, the batch bound doubled, no-cache on envelopes.
//!
//! `tests/openapi.rs` keeps `openapi.yaml` honest: every `.route()` of `src/` is described and
//! every described operation routed; against the binary, each operation answers only the
//! statuses it documents, 401 without a token exactly when it documents one, and 403 to exactly
//! the roles it does not list; and the refusals `scripts/api-fuzz` (schemathesis from the
//! description, with a check that every 4xx stores nothing) found, each with the database
//! unchanged. It caught the policy endpoints validating their input before the token.
#![forbid(unsafe_code)]

pub mod api;
pub mod controller;
pub mod dashboard;
pub mod export;
pub mod metadata;
pub mod openapi;
pub mod postgres;
pub mod sqlite;
pub mod store;
pub mod tls;
pub mod util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use api::{AppState, ChannelConfig, Clock, Config};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use store::{Role, Store};

/// A server started by [`start`]: its address and its tasks (aborted on drop).
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds `listen`, then serves the API over TLS with `pem` and, if `controller_interval` is
/// given, runs the controller loop.
pub async fn start(
    listen: SocketAddr,
    pem: &tls::PemPair,
    store: Arc<dyn Store>,
    config: Config,
    controller_interval: Option<Duration>,
) -> Result<Running, String> {
    let signing = config.signing.clone();
    let clock = config.clock.clone();
    let state = AppState::new(store.clone(), config)?;
    let tls_config = pem.server_config()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut tasks = vec![tokio::spawn(tls::serve(
        listener,
        tls_config,
        api::router(state),
    ))];
    if let Some(interval) = controller_interval {
        tasks.push(tokio::spawn(run_controller(
            store, signing, clock, interval,
        )));
    }
    Ok(Running { addr, tasks })
}

/// What one pass of the controller loop did: the events of the channels whose rollout changed,
/// and, when signing, the version of a newly signed rollout file (`None`: nothing to re-sign).
pub struct ControllerPass {
    /// [`controller::tick`]'s result.
    pub changed: Result<Vec<(String, Vec<bulwark_rollout::ControllerEvent>)>, api::ApiError>,
    /// [`metadata::Signing::refresh_rollout`]'s result, when the server signs metadata.
    pub signed: Option<Result<Option<u64>, metadata::MetadataError>>,
}

/// The controller loop's body at `now`: [`controller::tick`], then, when signing, a fresh signed
/// rollout file if the state changed or the current one is past half its lifetime. Blocking (it
/// reads and writes the store). The server's loop runs it every interval; the fleet simulator's
/// HTTP transport runs it at each of its controller ticks.
pub fn controller_pass(
    store: &dyn Store,
    signing: Option<&metadata::Signing>,
    now: u64,
) -> ControllerPass {
    let changed = controller::tick(store, now);
    let signed = signing.map(|s| s.refresh_rollout(store, now));
    ControllerPass { changed, signed }
}

/// Every `interval`: [`controller_pass`] (errors are printed and retried at the next tick).
async fn run_controller(
    store: Arc<dyn Store>,
    signing: Option<metadata::Signing>,
    clock: Clock,
    interval: Duration,
) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let store = store.clone();
        let signing = signing.clone();
        let now = clock.now();
        let result = tokio::task::spawn_blocking(move || {
            controller_pass(store.as_ref(), signing.as_ref(), now)
        })
        .await;
        match result {
            Ok(ControllerPass { changed, signed }) => {
                match changed {
                    Ok(changed) => {
                        for (channel, events) in changed {
                            for e in events {
                                eprintln!("controller: {channel}: {e:?}");
                            }
                        }
                    }
                    Err(e) => eprintln!("controller: {e:?}"),
                }
                match signed {
                    Some(Ok(Some(v))) => eprintln!("controller: signed rollout.json v{v}"),
                    Some(Err(e)) => eprintln!("controller: signing rollout.json: {e}"),
                    _ => {}
                }
            }
            Err(e) => eprintln!("controller: task failed: {e}"),
        }
    }
}
