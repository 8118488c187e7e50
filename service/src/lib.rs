//! Bulwark's endpoint service (issue 14): it fetches what the rollout controller assigns, proves
//! it safe before the kernel sees it, stages it, confirms healthy boots, and reports what the
//! controller needs to halt a bad release.
//!
//! # Layout
//!
//! * [`agent`]: the platform-neutral, deterministic core. [`agent::Agent::step`] does what is
//!   due and returns the seconds until the next step; time comes from an injected
//!   [`agent::Clock`] and jitter from an injected [`agent::Random`], so tests (and a fleet
//!   simulator) drive it step by step.
//! * [`link`]: the [`link::DriverLink`] trait (status with the schema hash and per-type field
//!   counts, stage hot or at next boot, confirm healthy, revert, guard events, detections) and
//!   [`link::InProcess`]: the driver core's `Sensor` and `Control` with the boot-count guard on a
//!   directory store (`DirStore`), reached through the real control protocol
//!   (`bulwark_client::Client` over the core's IOCTL handler).
//! * [`net`]: the [`net::ContentSource`] trait (root, releases and rollout metadata; envelopes by
//!   SHA-256) and the [`net::TelemetrySink`] trait (enroll, heartbeat, telemetry);
//!   [`net::Http`] implements both against bulwark-server (reqwest + rustls, HTTPS only, a
//!   timeout on every request, every body bounded while it is read, redirects only to the same
//!   host and port); [`net::LocalDir`] reads what `bulwark-server export DIR` writes.
//! * [`spool`]: the crash-safe telemetry spool (SQLite, WAL, `synchronous=FULL`; the bodies'
//!   total kept beside them, so a push costs the same however full it is), and a memory spool
//!   with the same promises.
//! * [`storage`]: where the agent keeps what survives a restart, behind the
//!   [`storage::Storage`] trait: the state directory ([`storage::DirStorage`]) or memory
//!   ([`storage::MemoryStorage`], the fleet simulator's).
//! * [`admin`]: the administrator's local controls (`pin`, `unpin`, `pause`, `resume`,
//!   `revert`), kept in `STATE/admin.json` and obeyed before the rollout's decision.
//! * [`config`]: the TOML configuration; `src/main.rs`: `bulwark-service run --config FILE`
//!   (foreground) and `bulwark-service status --config FILE` (JSON from the state directory; the
//!   token is never printed).
//!
//! # What a step does
//!
//! 1. Enroll once; the endpoint id and token are kept in `STATE/state.json` (written to a
//!    temporary file, fsynced, renamed).
//! 2. Forward the guard's events: crash counted, revert and quarantine become telemetry
//!    `guard_events` with the content version as `release_version`.
//! 3. Fetch `root.json` (optional), `releases.json` and `rollout.json` and update the
//!    `bulwark_distribution::TrustState` (signatures, thresholds, version: no rollback, expiry:
//!    no freeze). The newest trusted files are kept in `STATE/trust.json` and restored (verified
//!    again) at start, so an older file is a rollback across restarts too. A refused file is
//!    logged and the held metadata stays.
//! 4. The administrator's controls first: a revert asked for and not yet carried out, then
//!    pause (no new content), then a local pin (as a policy pin below). Otherwise decide with
//!    `bulwark_rollout::decide`, the signed state, thresholds and policies.
//!    * `Run` a version not running: look it up in the signed releases metadata, download the
//!      envelope by its SHA-256, check the hash; check that the driver's schema (hash and
//!      per-type field counts from its status) is the one this verifier was built with; open it
//!      with the loader's own `open` (trusted release keys, channel, anti-downgrade against the
//!      running and last-known-good versions, and the verifier); check the envelope's version and
//!      pack hash against the decision and the releases metadata; run the verifier on the pack
//!      again for its message. Any failure: the pack never reaches the driver, is recorded as
//!      a [`agent::Rejection`] with the loader's or verifier's message (`status` shows it), and
//!      is reported to the server as a `reject` guard event with that message (the controller
//!      halts a release endpoints refuse: its `rejection-ceiling`). Then
//!      stage it (hot, or for the next boot per the configuration).
//!    * `RevertToLastKnownGood` while running the halted version: revert through the link, and
//!      report a `revert` guard event.
//!    * `Pinned` to another version: back to last-known-good if that is the pinned version,
//!      fetch and stage it as above if it is newer; an older version that is not last-known-good
//!      cannot be reached (the guard refuses downgrades) and is logged.
//! 5. After the health window (the staged version still running, and events have gone through
//!    the sensor since it was staged: a sensor that sees nothing is not healthy), confirm
//!    healthy: the guard blesses it, and a heartbeat with `confirmed_healthy` is spooled. Until
//!    events flow the agent polls every [`agent::EVENTS_POLL_SECS`] seconds and logs it once.
//! 6. Forward the driver's detections: counts by content version and rule id (what the
//!    controller's storm tests read), and alerts (at most [`agent::MAX_ALERTS_PER_STEP`] a step)
//!    with the rule's id, title, author and level from the pack the agent staged and the event's
//!    context from the driver.
//! 7. Spool a heartbeat when due: the next one after a uniformly random 0..=interval (full
//!    jitter).
//! 8. Deliver the spool, oldest first, stopping at the first failure.
//!
//! Local work (2, 4's revert, 5, 6, 7) never waits for the network: a failed fetch or delivery is
//! remembered and the step still does the rest; the step then returns an exponential backoff
//! with full jitter (uniform in 0..=min(max, base * 2^(failures - 1))).
//!
//! # The spool and sequence numbers
//!
//! The server wants `seq` strictly increasing per endpoint across heartbeats and telemetry.
//! Every message is numbered by the spool, in the same SQLite transaction that stores it (the
//! counter is a row of the spool's database), and delivered in that order, so a telemetry batch
//! is never overtaken by a later heartbeat. A message is deleted only once the server answered
//! 200, or 409 `replayed` (it had it already: a crash between its answer and the delete). Over
//! its byte bound the spool drops the oldest messages first and counts them (`status` shows
//! `spool_dropped`).
//!
//! # Tests
//!
//! `tests/loopback.rs` runs the real bulwark-server on 127.0.0.1 over TLS with its signed
//! metadata (root, releases signed by the release key, rollout signed by the online key, as
//! `server/tests/fleet.rs` does), the agent over [`net::Http`], and the driver core in process:
//! * a good release is fetched, verified, staged, confirmed after the health window (the guard's
//!   last-known-good becomes it) and reported (the server records the confirmed heartbeat); a
//!   process its rule matches reaches the server as a detection under the rule's id;
//! * a forged envelope (a signature byte changed in transit) is refused on its hash, never staged,
//!   and shown with the reason;
//! * a pack the verifier refuses, signed by the release key and served as if released (put in the
//!   server's store directly: its upload path would refuse it), is refused by the service itself
//!   with the verifier's message and never staged;
//! * a halted rollout with `revert` makes the agent go back to last-known-good (the driver's
//!   revert request: the guard quarantines the candidate), report the revert, and stay there,
//!   across a clean reboot and a crash;
//! * with `hot = false` a release is staged for the next boot: not offered again while it
//!   waits, its health window starts when it runs after the reboot, then it is confirmed;
//! * the server unreachable through the health window, then back: the spooled heartbeats,
//!   including the confirmation, all reach it;
//! * a candidate that crashes the simulated kernel at three boots (`InProcess::crash_and_reboot`)
//!   is quarantined by the guard, which loads last-known-good; the service reports the crashes
//!   and the quarantine, and the guard refuses the version when the agent offers it again;
//! * a pin to the guard's last-known-good, set through the policy API while a newer release is
//!   staged and unconfirmed, takes the endpoint back to it and keeps it there;
//! * a restart keeps the enrollment, the sequence numbers and the newest metadata (the rollout
//!   file from before a pause is refused as a rollback);
//! * malformed metadata is refused and logged and nothing is staged; while the server is
//!   unreachable each failed step waits twice as long, up to the maximum, and the agent recovers
//!   when it is back;
//! * `status` reads the state directory and never shows the token;
//! * a release is not confirmed until events flow through the sensor (logged once, polled, then
//!   confirmed when a process starts);
//! * the administrator's pause (release 2 not taken, heartbeats go on), resume, revert (back to
//!   last-known-good, reported, not taken again), pin to a newer release (kept across a restart),
//!   and a damaged controls file (logged once, the pin read before stays);
//! * refusals (forged envelope, verifier) reach the server with their reason, and the verifier's
//!   refusal halts the rollout there; a good release's detections arrive as alerts with the
//!   rule's title, author and level;
//! * [`net::LocalDir`] reads exactly what `bulwark-server export` writes (the same bytes as the
//!   server serves), refuses a name that is not a SHA-256 and a file over the bound.
//!
//! `tests/hostile.rs` serves hostile answers over real TLS on loopback (the server's own TLS
//! listener with an axum router) to [`net::Http`]: a body over the bound with and without a
//! `Content-Length`, a redirect to another host (refused) and on the same host (followed), a
//! response slower than the timeout, a body cut off in the middle, the wrong `Content-Type`
//! (metadata must be `application/json`, envelopes `application/octet-stream`), malformed JSON,
//! 409 `replayed` (delivered) and another 409 (not), a certificate nobody trusts, and a plain
//! `http://` URL. Then the whole agent against each hostile metadata answer (oversized,
//! redirected away, slow, malformed, wrong type, truncated, 500): each is a clear log line, a
//! backoff that grows, nothing staged and nothing recorded as a rejection.

//! `tests/binary.rs` runs the `bulwark-service` binary with a TOML configuration against a real
//! server: `run` enrolls, is killed with SIGKILL and started again with the same enrollment;
//! `status` prints the state as JSON; a bad command line exits 2.
//!
//! `tests/spool_kill.rs` kills (SIGKILL) a process in the middle of spool writes: every message
//! whose `push` had returned is there, numbered 1, 2, 3, ... without a gap (seen to fail with the
//! transaction not committed).
//!
//! `spool`'s unit test: numbering across a reopen, the byte bound and the counted drop.
//!
//! Each was seen to fail against a deliberate break: no confirmation, no hash check, no
//! loader/verifier check in the service (the driver then refuses it, which the test tells
//! apart), no revert, quarantines not forwarded, rule ids not kept, the pin ignored, failed
//! deliveries treated as delivered, the trusted metadata not persisted, the enrollment not
//! persisted, no byte bound in the spool, redirects followed to any host, no bound while reading
//! a body, the backoff not exponential.
//!
//! # Windows
//!
//! `windows` (src/windows.rs, Windows only): `install` (LocalSystem, automatic start, restart on failure, the
//! event log source), `uninstall`, `start`, `stop`, the dispatcher's entry point (`service`),
//! and `windows::DeviceLink`, the driver link over `\\.\Bulwark`. [`runner`] is the loop both
//! the foreground `run` and the service run (a stop ends it within a second); [`logfile`] the
//! size-rotated log. Cross-built and run under Wine by `scripts/windows-smoke` (install, start,
//! fetch, verify, stage and confirm a release through the Wine-loaded driver against a
//! bulwark-server on the host, status, stop, uninstall); built by the Windows workflow.
//!
//! # Known limits
//!
//! * After a revert or a pin back to last-known-good, the reverted version cannot be staged
//!   again when the pin lapses: the guard quarantined it (the driver's revert request), and its
//!   anti-downgrade floor already includes it.
//! * Guard events read from the driver but not yet spooled when the process dies in between
//!   are lost (the driver's ring is drained on read). The kill -9 tests cover the enrollment and
//!   the spool's writes, not a kill between reading guard events and spooling them; closing it
//!   needs a read that the service acknowledges after its spool commit.
//! * The event log's entries, the state directory's ACL and a real boot are not checked by the
//!   Wine run (Wine is not Windows).
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod config;
pub mod link;
pub mod logfile;
pub mod net;
pub mod runner;
pub mod spool;
pub mod storage;
#[cfg(windows)]
pub mod windows;
