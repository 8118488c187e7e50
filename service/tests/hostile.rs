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
            get(|| async { vec![b'x'; MAX_METADATA_BYTES + 1] }),
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
                    if sha.starts_with("cc") {
                        // No Content-Length: only the bound while reading stops it.
                        let chunk = axum::body::Bytes::from(vec![b'x'; 1 << 20]);
                        let chunks = (0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
                        return axum::body::Body::from_stream(futures_util::stream::iter(chunks))
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
        .route("/v1/metadata/same-host", get(|| async { "followed" }))
        .route("/v1/enroll", post(|| async { "{not json" }))
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
