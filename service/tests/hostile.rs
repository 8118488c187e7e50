//! The server is untrusted: hostile responses over real TLS on loopback are clear errors, never
//! a panic, and never content staged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use bulwark_server::tls::PemPair;
use bulwark_service::link::DriverLink;
use bulwark_service::net::{
    ContentSource, Delivered, Enrollment, Http, Metadata, NetError, TelemetrySink,
    MAX_METADATA_BYTES,
};

struct Hostile {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    pem: PemPair,
}

fn hostile() -> Hostile {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pem = PemPair::self_signed().unwrap();
    let app = Router::new()
        .route(
            "/v1/metadata/root.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    vec![b'x'; MAX_METADATA_BYTES + 1],
                )
            }),
        )
        .route(
            "/v1/metadata/releases.json",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [(
                        header::LOCATION,
                        "https://evil.example:1/v1/metadata/releases.json",
                    )],
                )
            }),
        )
        .route(
            "/v1/metadata/rollout.json",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/v1/envelopes/{sha}",
            get(
                |axum::extract::Path(sha): axum::extract::Path<String>| async move {
                    if sha.starts_with("dd") {
                        // Truncated: the connection ends in the middle of the body.
                        let chunks = vec![
                            Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'x'; 1000])),
                            Err(std::io::Error::other("cut")),
                        ];
                        return (
                            [(header::CONTENT_TYPE, "application/octet-stream")],
                            axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
                        )
                            .into_response();
                    }
                    if sha.starts_with("ee") {
                        // The right bytes under the wrong type: an error page of a proxy.
                        return (
                            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                            "<html>",
                        )
                            .into_response();
                    }
                    if sha.starts_with("cc") {
                        // No Content-Length: only the bound while reading stops it.
                        let chunk = axum::body::Bytes::from(vec![b'x'; 1 << 20]);
                        let chunks = (0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
                        return (
                            [(header::CONTENT_TYPE, "application/octet-stream")],
                            axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
                        )
                            .into_response();
                    }
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, "/v1/metadata/same-host")],
                    )
                        .into_response()
                },
            ),
        )
        .route(
            "/v1/metadata/same-host",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    "followed",
                )
            }),
        )
        .route(
            "/v1/enroll",
            post(|| async { ([(header::CONTENT_TYPE, "application/json")], "{not json") }),
        )
        .route(
            "/v1/heartbeat",
            post(|| async {
                (
                    StatusCode::CONFLICT,
                    r#"{"error":"replayed","message":"seq"}"#,
                )
                    .into_response()
            }),
        )
        .route(
            "/v1/telemetry",
            post(|| async {
                (
                    StatusCode::CONFLICT,
                    r#"{"error":"command_refused","message":"no"}"#,
                )
                    .into_response()
            }),
        );
    let config = pem.server_config().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(bulwark_server::tls::serve(listener, config, app));
    Hostile { rt, addr, pem }
}

fn client(h: &Hostile) -> Http {
    Http::new(
        &format!("https://localhost:{}", h.addr.port()),
        Some(h.pem.cert_pem.as_bytes()),
        Some(("localhost", h.addr)),
        Duration::from_secs(1),
    )
    .unwrap()
}

#[test]
fn oversized_redirected_slow_malformed_and_replayed_responses() {
    let h = hostile();
    let mut c = client(&h);
    // Over the metadata bound.
    assert!(matches!(
        c.metadata(Metadata::Root),
        Err(NetError::TooLarge { .. })
    ));
    // A redirect to another host is refused.
    match c.metadata(Metadata::Releases) {
        Err(NetError::Transport(m)) => assert!(m.contains("redirect"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A redirect on the same host is followed.
    assert_eq!(c.envelope(&"ab".repeat(32)).unwrap(), b"followed");
    // Over the bound without a Content-Length: stopped while reading.
    assert!(matches!(
        c.envelope(&"cc".repeat(32)),
        Err(NetError::TooLarge { .. })
    ));
    // Truncated in the middle of the body.
    match c.envelope(&"dd".repeat(32)) {
        Err(NetError::Transport(m)) => assert!(!m.is_empty()),
        other => panic!("{other:?}"),
    }
    // The wrong content type.
    match c.envelope(&"ee".repeat(32)) {
        Err(e @ NetError::ContentType { .. }) => assert_eq!(
            e.to_string(),
            "response of type \"text/html; charset=utf-8\" where application/octet-stream was expected"
        ),
        other => panic!("{other:?}"),
    }
    // Not a SHA-256: not even asked.
    assert!(matches!(
        c.envelope("../../etc"),
        Err(NetError::Malformed(_))
    ));
    // Slow: the timeout ends it.
    let t = Instant::now();
    assert!(matches!(
        c.metadata(Metadata::Rollout),
        Err(NetError::Transport(_))
    ));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // Malformed JSON.
    let e = Enrollment {
        secret: "s".into(),
        os_build: "1".into(),
        hw_class: "x".into(),
        host_group: "g".into(),
    };
    assert!(matches!(c.enroll(&e), Err(NetError::Malformed(_))));
    // 409 replayed is delivered; another 409 is not.
    assert_eq!(c.heartbeat("t", b"{}").unwrap(), Delivered::Replayed);
    assert!(matches!(
        c.telemetry("t", b"{}"),
        Err(NetError::Status { status: 409, .. })
    ));
    drop(h.rt);
}

#[test]
fn tls_errors_and_plain_http_are_refused() {
    let h = hostile();
    // A certificate nobody trusts.
    let other = PemPair::self_signed().unwrap();
    let mut c = Http::new(
        &format!("https://localhost:{}", h.addr.port()),
        Some(other.cert_pem.as_bytes()),
        Some(("localhost", h.addr)),
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(matches!(
        c.metadata(Metadata::Rollout),
        Err(NetError::Transport(_))
    ));
    // Plain HTTP is never used.
    let mut c = Http::new(
        &format!("http://localhost:{}", h.addr.port()),
        None,
        Some(("localhost", h.addr)),
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(matches!(
        c.metadata(Metadata::Rollout),
        Err(NetError::Transport(_))
    ));
}

/// A server whose every metadata answer is the hostile one `mode` selects.
fn switchable(mode: std::sync::Arc<std::sync::atomic::AtomicU8>) -> Hostile {
    use std::sync::atomic::Ordering;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pem = PemPair::self_signed().unwrap();
    let app = Router::new().route(
        "/v1/metadata/{file}",
        get(move || {
            let mode = mode.load(Ordering::SeqCst);
            async move {
                let json = [(header::CONTENT_TYPE, "application/json")];
                match mode {
                    0 => (json, vec![b' '; MAX_METADATA_BYTES + 1]).into_response(),
                    1 => (
                        StatusCode::FOUND,
                        [(
                            header::LOCATION,
                            "https://evil.example:1/v1/metadata/x.json",
                        )],
                    )
                        .into_response(),
                    2 => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        (json, "{}").into_response()
                    }
                    3 => (json, "{\"signed\": [1, 2").into_response(),
                    4 => ([(header::CONTENT_TYPE, "text/html")], "<html>").into_response(),
                    5 => {
                        let chunks = vec![
                            Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"signed\"")),
                            Err(std::io::Error::other("cut")),
                        ];
                        (
                            json,
                            axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
                        )
                            .into_response()
                    }
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
                }
            }
        }),
    );
    let config = pem.server_config().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(bulwark_server::tls::serve(listener, config, app));
    Hostile { rt, addr, pem }
}

/// A sink that takes everything (the server under test is the content source).
struct Accepting;
impl TelemetrySink for Accepting {
    fn enroll(&mut self, _: &Enrollment) -> Result<bulwark_service::net::Enrolled, NetError> {
        Ok(bulwark_service::net::Enrolled {
            endpoint_id: "00112233445566778899aabbccddeeff".into(),
            token: "bwe_test".into(),
        })
    }
    fn heartbeat(&mut self, _: &str, _: &[u8]) -> Result<Delivered, NetError> {
        Ok(Delivered::Stored)
    }
    fn telemetry(&mut self, _: &str, _: &[u8]) -> Result<Delivered, NetError> {
        Ok(Delivered::Stored)
    }
}

struct FixedClock(std::sync::Arc<std::sync::atomic::AtomicU64>);
impl bulwark_service::agent::Clock for FixedClock {
    fn now(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
struct MaxRandom;
impl bulwark_service::agent::Random for MaxRandom {
    fn below_or_eq(&mut self, max: u64) -> u64 {
        max
    }
}

#[test]
fn the_agent_logs_each_hostile_answer_backs_off_and_stages_nothing() {
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
    use std::sync::Arc;
    let mode = Arc::new(AtomicU8::new(0));
    let h = switchable(mode.clone());
    let dir = std::env::temp_dir().join(format!("bulwark-service-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let k = |b: u8| ed25519_dalek::SigningKey::from_bytes(&[b; 32]);
    let public = |b: u8| k(b).verifying_key().to_bytes();
    let root = bulwark_distribution::sign(
        &bulwark_distribution::Root::new(1, bulwark_rollout::Timestamp(4_000_000_000))
            .with_role(bulwark_distribution::Role::Root, &[public(31)], 1)
            .with_role(bulwark_distribution::Role::Releases, &[public(7)], 1)
            .with_role(bulwark_distribution::Role::Rollout, &[public(41)], 1),
        &[&k(31)],
    )
    .unwrap();
    let keys = [bulwark_loader_boot_guard::envelope::public_key(&[7; 32])];
    let time = Arc::new(AtomicU64::new(1_800_000_000));
    let link = bulwark_service::link::InProcess::boot(
        &dir.join("guard"),
        bulwark_loader_boot_guard::Config {
            channel: 1,
            threshold: 3,
            stable_secs: 600,
        },
        &keys,
        time.load(Ordering::SeqCst),
    )
    .unwrap();
    let mut agent = bulwark_service::agent::Agent::open(
        bulwark_service::agent::AgentConfig {
            channel: "stable".into(),
            channel_number: 1,
            enrollment_secret: "s".into(),
            os_build: "26100".into(),
            hw_class: "x64".into(),
            host_group: "default".into(),
            release_keys: keys.to_vec(),
            root,
            heartbeat_secs: 300,
            health_window_secs: 600,
            backoff_base_secs: 5,
            backoff_max_secs: 600,
            spool_max_bytes: 1 << 20,
            hot: true,
            health_requires_events: true,
            metadata_memo: bulwark_distribution::MetadataMemo::off(),
        },
        &dir.join("agent"),
        link,
        client(&h),
        Accepting,
        FixedClock(time.clone()),
        MaxRandom,
    )
    .unwrap();
    let cases: [(u8, &str); 7] = [
        (0, "response over 1048576 bytes"),
        (1, "redirect"),
        (2, "transport"),
        (3, "releases.json refused"),
        (
            4,
            "response of type \"text/html\" where application/json was expected",
        ),
        (5, "transport"),
        (6, "HTTP 500"),
    ];
    for (m, expected) in cases {
        mode.store(m, Ordering::SeqCst);
        agent.log.clear();
        let mut waits = Vec::new();
        for _ in 0..3 {
            let wait = agent.step();
            waits.push(wait);
            time.fetch_add(wait, Ordering::SeqCst);
        }
        let log = agent.log.join("\n");
        assert!(log.contains(expected), "mode {m}: {log}");
        assert_eq!(agent.link.status().unwrap().content_version, 0, "mode {m}");
        assert!(agent.state().staged.is_none(), "mode {m}");
        assert!(agent.state().rejections.is_empty(), "mode {m}");
        if m != 3 {
            // A failed fetch is retried after a backoff that grows.
            assert!(agent.status().failures >= 3, "mode {m}: {log}");
            assert!(waits[0] < waits[2], "mode {m}: {waits:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
