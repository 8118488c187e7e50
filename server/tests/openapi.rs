//! `server/openapi.yaml` against the server, without Python (`scripts/api-fuzz` runs schemathesis
//! from the same file):
//! * every route the router declares (read from the `.route("PATH", get(..).post(..))` calls of
//!   `src/*.rs`) is described, with each of its methods, and every described operation matches a
//!   route;
//! * against the real binary (`bulwark-server serve --self-signed` on 127.0.0.1 with a fresh
//!   SQLite file), every described operation is routed (never the fallback's "no such endpoint",
//!   never 405), answers only statuses it documents with the error body it documents, refuses a
//!   request without a token with 401 `missing_token` exactly when it documents a security
//!   requirement (public ones never ask for one), and refuses each engineer role it does not list
//!   with 403 `wrong_role` (and no listed one);
//! * `GET /v1/openapi.yaml` serves the file;
//! * what schemathesis found, each refused with its status, code and message and the database
//!   (every row of every table) unchanged: numbers the stores cannot hold (a 500 before), path
//!   segments that are not UTF-8 (axum's plain text before), policy changes validated before the
//!   token was checked, a PUT of a read-only metadata file without a token (401 before 405), a
//!   method a path does not take (an empty 405 before).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const SPEC: &str = include_str!("../openapi.yaml");
const SECRET: &str = "enrollment-secret-for-openapi-test";
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];
const ROLES: [&str; 3] = ["publisher", "operator", "viewer"];

fn spec() -> Value {
    serde_norway::from_str(SPEC).expect("openapi.yaml parses")
}

/// The described operations: (path, method) -> operation.
fn operations(spec: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.insert((path.clone(), method.clone()), op.clone());
            }
        }
    }
    out
}

/// Skips a Rust string literal starting at `i` (the opening quote); returns the index after it
/// and its contents.
fn string_literal(src: &[u8], mut i: usize) -> (usize, String) {
    let start = i + 1;
    i += 1;
    while i < src.len() && src[i] != b'"' {
        if src[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    (
        i + 1,
        String::from_utf8_lossy(&src[start..i.min(src.len())]).into_owned(),
    )
}

/// The routes declared in `src/*.rs`: each `.route("PATH", ...)` outside comments and the
/// methods its method router names (`get(`, `.post(`, ...; not `axum::routing::get` paths).
fn declared_routes() -> BTreeSet<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut routes = BTreeSet::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let src = text.as_bytes();
        let mut from = 0;
        while let Some(at) = text[from..].find(".route(") {
            let mut i = from + at + ".route(".len();
            from = i;
            let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
            if text[line_start..i].contains("//") {
                continue; // a comment
            }
            while src[i].is_ascii_whitespace() {
                i += 1;
            }
            assert_eq!(
                src[i],
                b'"',
                "{}: .route( not followed by a string literal: write the path literally so \
                 this test can read it",
                file.display()
            );
            let (after, path) = string_literal(src, i);
            // The method router: up to the parenthesis closing `.route(`.
            let mut depth = 1;
            let mut j = after;
            let mut methods = Vec::new();
            while depth > 0 {
                match src[j] {
                    b'"' => {
                        j = string_literal(src, j).0;
                        continue;
                    }
                    b'(' => depth += 1,
                    b')' => depth -= 1,
                    c if c.is_ascii_alphabetic() => {
                        let start = j;
                        while src[j].is_ascii_alphanumeric() || src[j] == b'_' {
                            j += 1;
                        }
                        let word = &text[start..j];
                        let qualified = start >= 2 && &src[start - 2..start] == b"::";
                        if depth == 1 && !qualified && src[j] == b'(' && METHODS.contains(&word) {
                            methods.push(word.to_owned());
                        }
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
            assert!(
                !methods.is_empty(),
                "{}: route {path:?} names no method",
                file.display()
            );
            for m in methods {
                routes.insert((path.clone(), m));
            }
        }
    }
    routes
}

/// Whether the described path `path` is served by the route template `route` (`{x}` in the
/// route matches any one segment; a parameter of the description matches only a parameter).
fn served_by(path: &str, route: &str) -> bool {
    let p: Vec<&str> = path.split('/').collect();
    let r: Vec<&str> = route.split('/').collect();
    p.len() == r.len()
        && p.iter()
            .zip(&r)
            .all(|(p, r)| p == r || (r.starts_with('{') && r.ends_with('}')))
}

#[test]
fn every_route_is_described_and_every_operation_routed() {
    let spec = spec();
    let described: BTreeSet<(String, String)> = operations(&spec).into_keys().collect();
    let routes = declared_routes();
    assert!(
        routes.len() >= 10,
        "too few routes read from the source: {routes:?}"
    );
    let undescribed: Vec<_> = routes
        .iter()
        .filter(|(route, m)| {
            !described
                .iter()
                .any(|(p, dm)| dm == m && served_by(p, route))
        })
        .collect();
    assert!(
        undescribed.is_empty(),
        "routes missing from server/openapi.yaml: {undescribed:?}"
    );
    let unrouted: Vec<_> = described
        .iter()
        .filter(|(p, m)| {
            !routes
                .iter()
                .any(|(route, rm)| rm == m && served_by(p, route))
        })
        .collect();
    assert!(
        unrouted.is_empty(),
        "operations of server/openapi.yaml no route serves: {unrouted:?}"
    );
}

#[test]
fn the_description_is_consistent() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.1.0");
    let schemes = spec["components"]["securitySchemes"].as_object().unwrap();
    for ((path, method), op) in operations(&spec) {
        let name = format!("{method} {path}");
        assert!(op["operationId"].is_string(), "{name}: no operationId");
        let security = op["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no security (use [] for public operations)"));
        let roles: Vec<String> = op["x-roles"]
            .as_array()
            .map(|r| r.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        match security.as_slice() {
            [] => assert!(roles.is_empty(), "{name}: public with x-roles"),
            [requirement] => {
                let (scheme, scopes) = requirement.as_object().unwrap().iter().next().unwrap();
                assert!(
                    schemes.contains_key(scheme),
                    "{name}: unknown scheme {scheme}"
                );
                let scopes: Vec<String> = scopes
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                match scheme.as_str() {
                    "endpointToken" => assert_eq!(roles, ["endpoint"], "{name}"),
                    _ => {
                        assert_eq!(scopes, roles, "{name}: security roles and x-roles differ");
                        assert!(
                            !roles.is_empty() && roles.iter().all(|r| ROLES.contains(&r.as_str())),
                            "{name}: roles {roles:?}"
                        );
                    }
                }
            }
            _ => panic!("{name}: one security requirement at most"),
        }
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{name}: no success response"
        );
        if !security.is_empty() {
            assert!(responses.contains_key("401"), "{name}: no 401");
        }
        if !roles.is_empty() && roles != ["endpoint"] && roles.len() < ROLES.len() {
            assert!(responses.contains_key("403"), "{name}: no 403");
        }
    }
}

/// `bulwark-server` serving on 127.0.0.1 with a fresh SQLite file (killed on drop).
struct Server {
    child: Child,
    base: String,
    dir: PathBuf,
    tokens: BTreeMap<&'static str, String>,
}

impl Server {
    /// Every row of every table of the server's SQLite file.
    fn snapshot(&self) -> String {
        let db = rusqlite::Connection::open_with_flags(
            self.dir.join("server.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut tables: Vec<String> = db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        tables.sort();
        let mut out = String::new();
        for table in tables {
            let mut stmt = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
            let n = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            r.get::<_, rusqlite::types::Value>(i)
                                .map(|v| format!("{v:?}"))
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(|v| v.join("|"))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows.sort();
            out.push_str(&format!("{table}: {rows:?}\n"));
        }
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn server(name: &str) -> Server {
    let exe = env!("CARGO_BIN_EXE_bulwark-server");
    let dir = std::env::temp_dir().join(format!(
        "bulwark-openapi-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("server.db");
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let mut tokens = BTreeMap::new();
    for role in ROLES {
        let out = Command::new(exe)
            .arg("--db")
            .arg(&db)
            .args(["token", "create", "--role", role, "--name", role])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        tokens.insert(
            role,
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        );
    }
    let key = bulwark_server::util::hex(&bulwark_loader_boot_guard::envelope::public_key(&[7; 32]));
    let mut child = Command::new(exe)
        .arg("--db")
        .arg(&db)
        .args(["serve", "--listen", "127.0.0.1:0", "--self-signed"])
        .arg("--enrollment-secret-file")
        .arg(&secret)
        .args(["--trusted-key", &key, "--channel", "stable=1"])
        .args(["--controller-interval", "3600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("bulwark-server exited before listening: {seen:#?}");
        };
        if let Some(addr) = line.split("listening on https://").nth(1) {
            break addr.trim().to_owned();
        }
        seen.push(line);
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server {
        child,
        base: format!("https://{addr}"),
        dir,
        tokens,
    }
}

/// The path with each `{param}` replaced by its example (or a plain value).
fn concrete(path: &str, op: &Value, item: &Value) -> String {
    let params: Vec<&Value> = op["parameters"]
        .as_array()
        .into_iter()
        .chain(item["parameters"].as_array())
        .flatten()
        .collect();
    path.split('/')
        .map(|seg| {
            let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                return seg.to_owned();
            };
            let inline = params.iter().find(|p| p["name"] == name);
            let example = inline
                .and_then(|p| p["example"].as_str().or(p["schema"]["enum"][0].as_str()))
                .map(str::to_owned);
            example.unwrap_or_else(|| match name {
                "channel" => "stable".to_owned(),
                "sha256" => "0".repeat(64),
                _ => "x".to_owned(),
            })
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(
    client: &reqwest::Client,
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String, Value) {
    let (status, _, text, json) = send(client, server, method, path, token, None).await;
    (status, text, json)
}

/// Sends a request; returns the status, the `Allow` header, the body and the body as JSON
/// (`null` if it is not).
async fn send(
    client: &reqwest::Client,
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String, String, Value) {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = client.request(method, format!("{}{path}", server.base));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let allow = response
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, allow, text, json)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        // The server's certificate is self-signed and this is loopback.
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn enroll(client: &reqwest::Client, server: &Server) -> String {
    let enrolled: Value = client
        .post(format!("{}/v1/enroll", server.base))
        .json(&serde_json::json!({"secret": SECRET, "os_build": "22631", "hw_class": "x64", "host_group": "lab"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    enrolled["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_as_described() {
    let spec = spec();
    let server = server("described");
    let client = client();

    // The file is served as it is.
    let response = client
        .get(format!("{}/v1/openapi.yaml", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/yaml");
    assert_eq!(response.text().await.unwrap(), SPEC);

    let endpoint_token = enroll(&client, &server).await;

    let mut failures = Vec::new();
    for ((path, method), op) in operations(&spec) {
        let name = format!("{} {path}", method.to_uppercase());
        let url = concrete(&path, &op, &spec["paths"][&path]);
        let documented: BTreeSet<u16> = op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        let roles: Vec<&str> = op["x-roles"]
            .as_array()
            .map(|r| r.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        let public = op["security"].as_array().unwrap().is_empty();

        let mut attempts: Vec<(String, Option<&str>)> = vec![("no token".to_owned(), None)];
        if roles == ["endpoint"] {
            attempts.push(("an endpoint token".to_owned(), Some(&endpoint_token)));
            attempts.push(("a viewer token".to_owned(), Some(&server.tokens["viewer"])));
        } else if !public {
            for role in ROLES {
                attempts.push((format!("a {role} token"), Some(&server.tokens[role])));
            }
            attempts.push(("an endpoint token".to_owned(), Some(&endpoint_token)));
        }
        for (who, token) in attempts {
            let (status, text, body) = call(&client, &server, &method, &url, token).await;
            let what = format!("{name} ({url}) with {who}: {status} {text}");
            if status == 405 || (status == 404 && body["message"] == "no such endpoint") {
                failures.push(format!("{what}: not routed"));
                continue;
            }
            if !documented.contains(&status) {
                failures.push(format!("{what}: status not documented ({documented:?})"));
            }
            if status >= 400 && !(body["error"].is_string() && body["message"].is_string()) {
                failures.push(format!("{what}: not the error body"));
            }
            let code = body["error"].as_str().unwrap_or("");
            let expected = match (token, public) {
                (_, true) => None,
                (None, false) => Some((401, "missing_token")),
                (Some(t), false) if roles == ["endpoint"] && t != endpoint_token => {
                    Some((401, "bad_token"))
                }
                (Some(t), false) if roles != ["endpoint"] && t == endpoint_token => {
                    Some((401, "bad_token"))
                }
                (Some(_), false) if roles == ["endpoint"] => None,
                (Some(t), false) => {
                    let role = ROLES.iter().find(|r| server.tokens[**r] == t).unwrap();
                    (!roles.contains(role)).then_some((403, "wrong_role"))
                }
            };
            match expected {
                Some((s, c)) if (status, code) != (s, c) => {
                    failures.push(format!("{what}: expected {s} {c}"));
                }
                None if status == 401 || status == 403 => {
                    failures.push(format!("{what}: refused a token it documents"));
                }
                _ => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Method, path, token, body; then the status, error code and a part of the message expected.
type Refusal<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<Value>,
    u16,
    &'a str,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_fuzzer_found_is_refused_and_stores_nothing() {
    let server = server("fuzzed");
    let client = client();
    let endpoint = enroll(&client, &server).await;
    let operator = server.tokens["operator"].clone();
    let publisher = server.tokens["publisher"].clone();
    let (status, _, text, _) = send(
        &client,
        &server,
        "post",
        "/v1/heartbeat",
        Some(&endpoint),
        Some(serde_json::json!({"seq": 1, "channel": "stable", "content_version": 0})),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let before = server.snapshot();
    let big = 1u64 << 63;
    let cases: Vec<Refusal> = vec![
        // A 500 "does not fit in an INTEGER" before.
        (
            "post",
            "/v1/rollouts/stable/start",
            Some(&operator),
            Some(serde_json::json!({"version": u64::MAX - 1})),
            400,
            "bad_request",
            "version must be at most 9223372036854775807",
        ),
        (
            "post",
            "/v1/heartbeat",
            Some(&endpoint),
            Some(serde_json::json!({"seq": big, "channel": "stable", "content_version": 0})),
            400,
            "bad_request",
            "seq must be at most",
        ),
        (
            "post",
            "/v1/heartbeat",
            Some(&endpoint),
            Some(serde_json::json!({"seq": 2, "channel": "stable", "content_version": big})),
            400,
            "bad_request",
            "content_version must be at most",
        ),
        (
            "post",
            "/v1/telemetry",
            Some(&endpoint),
            Some(
                serde_json::json!({"seq": 2, "channel": "stable", "guard_events": [{"release_version": big, "kind": "crash"}]}),
            ),
            400,
            "bad_request",
            "release_version must be at most",
        ),
        (
            "post",
            "/v1/telemetry",
            Some(&endpoint),
            Some(
                serde_json::json!({"seq": 2, "channel": "stable", "detections": [{"release_version": 1, "rule": "r", "count": 1u64 << 32}]}),
            ),
            400,
            "bad_request",
            "count must be at most 4294967295",
        ),
        // axum's plain-text rejection before.
        (
            "get",
            "/v1/rollouts/%FF",
            Some(&operator),
            None,
            400,
            "bad_request",
            "Invalid UTF-8",
        ),
        (
            "post",
            "/v1/rollouts/%FF/start",
            Some(&operator),
            None,
            400,
            "bad_request",
            "Invalid UTF-8",
        ),
        (
            "get",
            "/v1/envelopes/%FF",
            None,
            None,
            400,
            "bad_request",
            "Invalid UTF-8",
        ),
        (
            "put",
            "/v1/policies/%FF/stable",
            Some(&operator),
            Some(serde_json::json!("Ga")),
            400,
            "bad_request",
            "Invalid UTF-8",
        ),
        // Validated before the token was checked (400 or 404 to anyone) before.
        (
            "put",
            "/v1/policies/default",
            None,
            None,
            401,
            "missing_token",
            "missing bearer token",
        ),
        (
            "put",
            "/v1/policies/lab/unknown",
            None,
            Some(serde_json::json!("Ga")),
            401,
            "missing_token",
            "missing bearer token",
        ),
        (
            "delete",
            "/v1/policies/lab/stable",
            Some(&publisher),
            None,
            403,
            "wrong_role",
            "this needs operator",
        ),
        // 401 before; now 405 with Allow.
        (
            "put",
            "/v1/metadata/root.json",
            None,
            None,
            405,
            "read_only",
            "only releases.json",
        ),
        // An empty 405 before.
        (
            "delete",
            "/v1/enroll",
            None,
            None,
            405,
            "method_not_allowed",
            "the Allow header lists",
        ),
    ];
    for (method, path, token, body, status, code, message) in cases {
        let (got, allow, text, json) = send(&client, &server, method, path, token, body).await;
        let what = format!("{method} {path}: {got} {text}");
        assert_eq!(got, status, "{what}");
        assert_eq!(json["error"], code, "{what}");
        assert!(
            json["message"].as_str().unwrap().contains(message),
            "{what}"
        );
        if status == 405 {
            assert!(
                !allow.is_empty() && !allow.contains(&method.to_uppercase()),
                "{what}: Allow {allow:?}"
            );
        }
        assert_eq!(server.snapshot(), before, "{what}: the database changed");
    }
}
