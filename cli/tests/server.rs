//! `bulwark release` and `bulwark rollout` against a real bulwark-server on 127.0.0.1:0 over TLS
//! (a self-signed certificate, trusted through `--ca-cert`): publishing an envelope that `bulwark
//! keygen`/`asm`/`sign` made, listing, a rollout started, paused, resumed, halted and reverted,
//! and the refusals (wrong role, tampered envelope, wrong state, unknown release) with the
//! server's status and message and exit code 1; untrusted certificates, closed ports, missing
//! tokens and plain http with exit code 2.
//!
//! Built without the `server-client` feature, only the last test runs: the commands say that the
//! build has no server client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg_attr(not(feature = "server-client"), allow(dead_code))]
mod common;

#[cfg(feature = "server-client")]
mod with_client {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use bulwark_server::store::ApiToken;
    use bulwark_server::tls::PemPair;
    use bulwark_server::util::{random_token, sha256_hex, unhex};
    use bulwark_server::{ChannelConfig, Clock, Config, Role, Running, SqliteStore, Store};
    use serde_json::Value;

    use super::common::{bulwark, tmp};

    const CHANNEL_NUMBER: u32 = 3;

    /// A server on loopback and the files the CLI needs to talk to it.
    struct Harness {
        // Dropped before the runtime (fields drop in declaration order): the tasks are aborted.
        server: Running,
        _runtime: tokio::runtime::Runtime,
        store: Arc<dyn Store>,
        dir: PathBuf,
        ca: PathBuf,
        key: PathBuf,
        pack: PathBuf,
    }

    fn run_ok(args: &[&str]) -> String {
        let (code, out, err) = bulwark(args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    impl Harness {
        fn new(name: &str) -> Self {
            Self::with_signing(name, false)
        }

        /// With `signed`, the server signs distribution metadata: a root made by `bulwark
        /// metadata root` (two root keys, the test's release key, an online key) in
        /// `DIR/root.json`.
        fn with_signing(name: &str, signed: bool) -> Self {
            let dir = tmp(&format!("server-{name}"), "files");
            std::fs::create_dir_all(&dir).unwrap();
            // The release key, made and used by the CLI itself; the server trusts its public half.
            let key = dir.join("release.key");
            run_ok(&["keygen", "-o", s(&key)]);
            let public = std::fs::read_to_string(dir.join("release.key.pub")).unwrap();
            let hex = public.split_whitespace().nth(1).unwrap();
            let public: [u8; 32] = unhex(hex).unwrap().try_into().unwrap();
            let pack = dir.join("shells.pack");
            let src = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/content/suspicious-shells.bwasm");
            run_ok(&["asm", s(&src), "-o", s(&pack)]);

            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let store: Arc<dyn Store> =
                Arc::new(SqliteStore::open(&dir.join("server.db")).unwrap());
            let signing = signed.then(|| {
                for k in ["root1", "root2", "online"] {
                    run_ok(&["keygen", "-o", s(&dir.join(format!("{k}.key")))]);
                }
                let root = dir.join("root.json");
                run_ok(&[
                    "metadata",
                    "root",
                    "--root-key",
                    s(&dir.join("root1.key")),
                    "--root-key",
                    s(&dir.join("root2.key")),
                    "--release-key",
                    s(&dir.join("release.key.pub")),
                    "--online-key",
                    s(&dir.join("online.key.pub")),
                    "-o",
                    s(&root),
                ]);
                let online = std::fs::read_to_string(dir.join("online.key")).unwrap();
                let secret = bulwark_loader_boot_guard::keyfile::parse_key_file(
                    &online,
                    bulwark_loader_boot_guard::keyfile::SECRET_KEY_LABEL,
                )
                .unwrap();
                bulwark_server::metadata::Signing::new(
                    &std::fs::read_to_string(&root).unwrap(),
                    ed25519_dalek::SigningKey::from_bytes(&secret),
                    3600,
                )
                .unwrap()
            });
            let config = Config {
                enrollment_secret: "enrollment-secret-for-cli-tests".to_owned(),
                trusted_keys: vec![public],
                channels: BTreeMap::from([(
                    "stable".to_owned(),
                    ChannelConfig {
                        number: CHANNEL_NUMBER,
                        critical: false,
                    },
                )]),
                clock: Clock::system(),
                signing,
            };
            let pem = PemPair::self_signed().unwrap();
            let ca = dir.join("server-ca.pem");
            std::fs::write(&ca, &pem.cert_pem).unwrap();
            let server = runtime
                .block_on(bulwark_server::start(
                    "127.0.0.1:0".parse().unwrap(),
                    &pem,
                    store.clone(),
                    config,
                    None,
                ))
                .unwrap();
            Self {
                server,
                _runtime: runtime,
                store,
                dir,
                ca,
                key,
                pack,
            }
        }

        fn url(&self) -> String {
            format!("https://127.0.0.1:{}", self.server.addr.port())
        }

        /// A token of `role` in a file; returns the file.
        fn token_file(&self, role: Role, name: &str) -> PathBuf {
            let token = random_token("bwr_").unwrap();
            self.store
                .insert_api_token(
                    &sha256_hex(token.as_bytes()),
                    &ApiToken {
                        name: name.to_owned(),
                        role,
                    },
                    1,
                )
                .unwrap();
            let path = self.dir.join(format!("{name}.token"));
            std::fs::write(&path, format!("{token}\n")).unwrap();
            path
        }

        /// An envelope of the test pack for `channel` and `version`, signed by the CLI.
        fn envelope(&self, channel: u32, version: u64) -> PathBuf {
            let out = self.dir.join(format!("c{channel}-v{version}.bwenv"));
            run_ok(&[
                "sign",
                "--key",
                s(&self.key),
                "--channel",
                &channel.to_string(),
                "--version",
                &version.to_string(),
                s(&self.pack),
                "-o",
                s(&out),
            ]);
            out
        }

        /// Runs `bulwark ARGS --server URL --ca-cert PEM --token-file TOKEN`.
        fn cli(&self, token: &Path, args: &[&str]) -> (Option<i32>, String, String) {
            let url = self.url();
            let mut all: Vec<&str> = args.to_vec();
            all.extend([
                "--server",
                &url,
                "--ca-cert",
                s(&self.ca),
                "--token-file",
                s(token),
            ]);
            bulwark(&all)
        }
    }

    /// The value after `key` on the line of the human output that starts with it.
    fn field<'a>(out: &'a str, key: &str) -> &'a str {
        out.lines()
            .find_map(|l| {
                l.strip_prefix(key)
                    .filter(|rest| rest.starts_with("  "))
                    .map(str::trim)
            })
            .unwrap_or_else(|| panic!("no {key:?} in:\n{out}"))
    }

    #[test]
    fn signed_releases_and_policies() {
        let h = Harness::with_signing("signed", true);
        let publisher = h.token_file(Role::Publisher, "pat");
        let operator = h.token_file(Role::Operator, "olga");
        let viewer = h.token_file(Role::Viewer, "vic");
        let root = h.dir.join("root.json");

        // Published without signing the releases metadata: endpoints would refuse a rollout of
        // it, so the server does.
        let env1 = h.envelope(CHANNEL_NUMBER, 1);
        run_ok_publish(&h, &publisher, &env1);
        let (code, _, err) = h.cli(
            &operator,
            &["rollout", "start", "--channel", "stable", "--version", "1"],
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("not_in_releases_metadata"), "{err}");

        // Version 2 with --key and --root: the CLI signs releases v1 listing it and uploads it.
        let env2 = h.envelope(CHANNEL_NUMBER, 2);
        let (code, out, err) = h.cli(
            &publisher,
            &[
                "release",
                "publish",
                s(&env2),
                "--channel",
                "stable",
                "--key",
                s(&h.key),
                "--root",
                s(&root),
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        assert!(
            out.contains("signed and uploaded releases metadata v1"),
            "{out}"
        );
        // A key the root does not list: the server refuses the metadata (the envelope itself,
        // signed by the release key, is accepted first).
        let stranger = h.dir.join("stranger.key");
        run_ok(&["keygen", "-o", s(&stranger)]);
        let env3 = h.envelope(CHANNEL_NUMBER, 3);
        let (code, _, err) = h.cli(
            &publisher,
            &[
                "release",
                "publish",
                s(&env3),
                "--channel",
                "stable",
                "--key",
                s(&stranger),
                "--root",
                s(&root),
            ],
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("metadata_refused"), "{err}");
        assert!(
            err.contains("0 valid signatures by the releases keys"),
            "{err}"
        );

        let (code, _, err) = h.cli(
            &operator,
            &["rollout", "start", "--channel", "stable", "--version", "2"],
        );
        assert_eq!(code, Some(0), "{err}");

        // Policies: a pin to the listed version; refusals; a delay.
        let (code, out, err) = h.cli(
            &operator,
            &["policy", "set", "servers", "stable", "pin:2:+24"],
        );
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("pin to version 2 until"), "{out}");
        assert!(out.contains("active pins: 1"), "{out}");
        // A pin to a version the release keys never listed (1 was published, never signed).
        let (code, _, err) = h.cli(&operator, &["policy", "set", "labs", "stable", "pin:1:+24"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("pins \"stable\" to version 1"), "{err}");
        let (code, _, err) = h.cli(&operator, &["policy", "set", "labs", "stable", "delay:99"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("more than 72"), "{err}");
        let (code, _, err) = h.cli(&operator, &["policy", "set", "labs", "stable", "hold"]);
        assert_eq!(code, Some(2), "{err}");
        let (code, _, err) = h.cli(&viewer, &["policy", "set", "labs", "stable", "early"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("wrong_role"), "{err}");
        let (code, _, err) = h.cli(&operator, &["policy", "set", "labs", "stable", "delay:12"]);
        assert_eq!(code, Some(0), "{err}");
        let (code, out, err) = h.cli(&viewer, &["policy", "list", "--json"]);
        assert_eq!(code, Some(0), "{err}");
        let list: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(list["entries"].as_array().unwrap().len(), 2, "{list}");
        assert_eq!(list["entries"][0]["host_group"], "labs");
        assert_eq!(list["entries"][0]["policy"]["Delay"]["hours"], 12);

        // The served rollout metadata carries the policies, signed: an endpoint holding the
        // root verifies it.
        let get = |name: &str| {
            h.store
                .document(name)
                .unwrap()
                .unwrap_or_else(|| panic!("no {name}"))
                .body
        };
        let now = bulwark_rollout::Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
        let mut trust =
            bulwark_distribution::TrustState::bootstrap(&std::fs::read_to_string(&root).unwrap())
                .unwrap();
        trust.update_releases(&get("releases.json"), now).unwrap();
        trust.update_rollout(&get("rollout.json"), now).unwrap();
        let signed = trust.current(now).unwrap().unwrap();
        assert_eq!(signed.state.channel("stable").unwrap().release.version, 2);
        assert!(matches!(
            signed.policies.resolve("servers", "stable"),
            bulwark_rollout::Policy::Pin { version: 2, .. }
        ));

        // unset removes an entry.
        let (code, out, err) = h.cli(&operator, &["policy", "unset", "servers", "stable"]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("active pins: 0"), "{out}");
    }

    #[test]
    fn publish_list_and_drive_a_rollout() {
        let h = Harness::new("flow");
        let publisher = h.token_file(Role::Publisher, "pat");
        let operator = h.token_file(Role::Operator, "olga");
        let viewer = h.token_file(Role::Viewer, "vic");

        let env1 = h.envelope(CHANNEL_NUMBER, 1);
        let (code, out, err) = h.cli(
            &publisher,
            &[
                "release",
                "publish",
                s(&env1),
                "--channel",
                "stable",
                "--notes",
                "first",
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(field(&out, "channel"), "stable");
        assert_eq!(field(&out, "version"), "1");
        let env_hash = sha256_hex(&std::fs::read(&env1).unwrap());
        assert_eq!(field(&out, "envelope sha256"), env_hash);
        assert_eq!(field(&out, "notes"), "first");
        assert!(field(&out, "published").ends_with("by pat"), "{out}");
        // The pack's hash is the loader's content id (not the envelope's): 64 hex digits, another.
        let pack_hash = field(&out, "pack sha256");
        assert_eq!(pack_hash.len(), 64);
        assert_ne!(pack_hash, env_hash);

        // --json prints the server's row.
        let env2 = h.envelope(CHANNEL_NUMBER, 2);
        let (code, out, err) = h.cli(
            &publisher,
            &[
                "release",
                "publish",
                s(&env2),
                "--channel",
                "stable",
                "--json",
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        let row: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(row["version"], 2);
        assert_eq!(row["channel"], "stable");
        assert_eq!(
            row["envelope_sha256"],
            sha256_hex(&std::fs::read(&env2).unwrap())
        );
        assert!(!row["rules"].as_array().unwrap().is_empty());

        // Any role lists, newest first.
        let (code, out, err) = h.cli(&viewer, &["release", "list"]);
        assert_eq!(code, Some(0), "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("CHANNEL  VERSION  PUBLISHED"), "{out}");
        assert!(lines[1].starts_with("stable   2        "), "{out}");
        assert!(lines[2].starts_with("stable   1        "), "{out}");
        assert!(
            lines[2].contains(&env_hash) && lines[2].ends_with("first"),
            "{out}"
        );
        let (code, out, _) = h.cli(&viewer, &["release", "list", "--json"]);
        assert_eq!(code, Some(0));
        let list: Value = serde_json::from_str(&out).unwrap();
        let versions: Vec<u64> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_u64().unwrap())
            .collect();
        assert_eq!(versions, [2, 1]);

        // The rollout, command by command.
        let rollout = |args: &[&str]| {
            let mut all = vec!["rollout"];
            all.extend(args);
            all.extend(["--channel", "stable"]);
            let (code, out, err) = h.cli(&operator, &all);
            assert_eq!(code, Some(0), "{args:?}: {err}");
            out
        };
        let out = rollout(&["start", "--version", "2"]);
        assert_eq!(field(&out, "channel"), "stable");
        assert_eq!(field(&out, "release"), "2");
        assert_eq!(field(&out, "status"), "progressing");
        assert!(field(&out, "waves open").starts_with("1 of "), "{out}");
        assert!(out.contains("events:\n  Started "), "{out}");

        let out = rollout(&["pause", "--reason", "waiting for the canary report"]);
        assert_eq!(
            field(&out, "status"),
            "paused: waiting for the canary report"
        );
        let out = rollout(&["resume"]);
        assert_eq!(field(&out, "status"), "progressing");
        let out = rollout(&["halt", "--reason", "false positives on build agents"]);
        assert_eq!(
            field(&out, "status"),
            "halted by an operator: false positives on build agents"
        );
        let out = rollout(&["revert"]);
        assert_eq!(
            field(&out, "status"),
            "halted by an operator: false positives on build agents (revert: endpoints go back \
             to their last-known-good)"
        );
        assert!(out.contains("  RevertOrdered "), "{out}");

        // The viewer reads the state and the audit log, with who did what.
        let (code, out, err) = h.cli(&viewer, &["rollout", "status", "--channel", "stable"]);
        assert_eq!(code, Some(0), "{err}");
        let events: Vec<&str> = out
            .lines()
            .skip_while(|l| *l != "events:")
            .skip(1)
            .collect();
        let kinds: Vec<&str> = events
            .iter()
            .map(|l| {
                let rest = l
                    .split_once("  olga (operator)  ")
                    .unwrap_or_else(|| panic!("no actor in {l:?}"))
                    .1;
                rest.split(' ').next().unwrap()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Started",
                "WaveOpened",
                "Paused",
                "Resumed",
                "Halted",
                "RevertOrdered"
            ],
            "{out}"
        );
        let (code, out, _) = h.cli(
            &viewer,
            &["rollout", "status", "--channel", "stable", "--json"],
        );
        assert_eq!(code, Some(0));
        let view: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(view["state"]["revert"], true);
        assert_eq!(view["state"]["release"]["version"], 2);
        assert!(view["state"]["status"]["Halted"].is_object(), "{view}");
        assert_eq!(view["thresholds"]["channel"], "stable");
    }

    #[test]
    fn refusals_show_the_servers_status_and_message_and_exit_1() {
        let h = Harness::new("refusals");
        let publisher = h.token_file(Role::Publisher, "pat");
        let operator = h.token_file(Role::Operator, "olga");
        let viewer = h.token_file(Role::Viewer, "vic");
        let env1 = h.envelope(CHANNEL_NUMBER, 1);

        // A viewer cannot publish.
        let (code, out, err) = h.cli(
            &viewer,
            &["release", "publish", s(&env1), "--channel", "stable"],
        );
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(out, "");
        assert!(
            err.contains(
                "server refused (HTTP 403 Forbidden, wrong_role): token \"vic\" has role viewer; \
                 this needs publisher"
            ),
            "{err}"
        );

        // A tampered envelope: one bit of the last byte flipped.
        let mut bytes = std::fs::read(&env1).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let tampered = h.dir.join("tampered.bwenv");
        std::fs::write(&tampered, &bytes).unwrap();
        let (code, _, err) = h.cli(
            &publisher,
            &["release", "publish", s(&tampered), "--channel", "stable"],
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("server refused (HTTP 422 Unprocessable Entity, envelope_rejected): "),
            "{err}"
        );
        assert!(err.contains("(details: {\"loader_code\":"), "{err}");
        // --json also prints the refusal's body on stdout, for scripts.
        let (code, out, _) = h.cli(
            &publisher,
            &[
                "release",
                "publish",
                s(&tampered),
                "--channel",
                "stable",
                "--json",
            ],
        );
        assert_eq!(code, Some(1));
        let body: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(body["error"], "envelope_rejected");
        assert!(body["details"]["loader_code"].is_number(), "{body}");

        // An envelope for another channel number, and a channel the server does not have.
        let other = h.envelope(CHANNEL_NUMBER + 1, 1);
        let (code, _, err) = h.cli(
            &publisher,
            &["release", "publish", s(&other), "--channel", "stable"],
        );
        assert_eq!(code, Some(1));
        assert!(
            err.contains("HTTP 422 Unprocessable Entity, envelope_rejected"),
            "{err}"
        );
        let (code, _, err) = h.cli(
            &publisher,
            &["release", "publish", s(&env1), "--channel", "beta"],
        );
        assert_eq!(code, Some(1));
        assert!(
            err.contains("(HTTP 404 Not Found, not_found): unknown channel \"beta\""),
            "{err}"
        );
        // Nothing refused was stored.
        let (code, out, _) = h.cli(&viewer, &["release", "list"]);
        assert_eq!((code, out.as_str()), (Some(0), "no releases\n"));

        // The rollout refusals.
        let (code, _, err) = h.cli(
            &operator,
            &["rollout", "pause", "--channel", "stable", "--reason", "x"],
        );
        assert_eq!(code, Some(1));
        assert!(
            err.contains("(HTTP 404 Not Found, not_found): channel \"stable\" has no rollout"),
            "{err}"
        );
        let (code, _, err) = h.cli(
            &operator,
            &["rollout", "start", "--channel", "stable", "--version", "7"],
        );
        assert_eq!(code, Some(1));
        assert!(err.contains("no release 7 on channel \"stable\""), "{err}");
        run_ok_publish(&h, &publisher, &env1);
        let (code, _, err) = h.cli(
            &publisher,
            &["rollout", "start", "--channel", "stable", "--version", "1"],
        );
        assert_eq!(code, Some(1));
        assert!(
            err.contains("HTTP 403 Forbidden, wrong_role): token \"pat\" has role publisher"),
            "{err}"
        );
        let (code, _, err) = h.cli(
            &operator,
            &["rollout", "start", "--channel", "stable", "--version", "1"],
        );
        assert_eq!(code, Some(0), "{err}");
        let (code, _, err) = h.cli(&operator, &["rollout", "resume", "--channel", "stable"]);
        assert_eq!(code, Some(1));
        assert!(
            err.contains("(HTTP 409 Conflict, command_refused): "),
            "{err}"
        );
        // An unknown token.
        let bogus = h.dir.join("bogus.token");
        std::fs::write(&bogus, "bwr_0000\n").unwrap();
        let (code, _, err) = h.cli(&bogus, &["release", "list"]);
        assert_eq!(code, Some(1));
        assert!(
            err.contains("(HTTP 401 Unauthorized, bad_token): unknown API token"),
            "{err}"
        );
    }

    fn run_ok_publish(h: &Harness, token: &Path, env: &Path) {
        let (code, _, err) = h.cli(
            token,
            &["release", "publish", s(env), "--channel", "stable"],
        );
        assert_eq!(code, Some(0), "{err}");
    }

    #[test]
    fn unreachable_untrusted_and_misused_servers_exit_2_naming_the_failure() {
        let h = Harness::new("trust");
        let viewer = h.token_file(Role::Viewer, "vic");
        let url = h.url();

        // The self-signed certificate is not trusted without --ca-cert.
        let (code, _, err) = bulwark(&[
            "release",
            "list",
            "--server",
            &url,
            "--token-file",
            s(&viewer),
        ]);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains(&format!("cannot reach {url}/v1/releases: TLS failed: ")),
            "{err}"
        );
        assert!(err.contains("--ca-cert"), "{err}");

        // A closed port.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let closed_url = format!("https://127.0.0.1:{closed}");
        let (code, _, err) = bulwark(&[
            "rollout",
            "status",
            "--channel",
            "stable",
            "--server",
            &closed_url,
            "--token-file",
            s(&viewer),
        ]);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains(&format!(
                "cannot reach {closed_url}/v1/rollouts/stable: connection failed: "
            )),
            "{err}"
        );

        // No token; a token from the environment works.
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bulwark"));
        cmd.args(["release", "list", "--server", &url, "--ca-cert", s(&h.ca)])
            .env_remove("BULWARK_TOKEN");
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr)
            .contains("no API token: give --token-file F or set BULWARK_TOKEN"));
        let token = std::fs::read_to_string(&viewer).unwrap();
        let out = cmd.env("BULWARK_TOKEN", token.trim()).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "no releases\n");

        // Plain http, and a --ca-cert that is not a certificate.
        let (code, _, err) = bulwark(&[
            "release",
            "list",
            "--server",
            &url.replace("https", "http"),
            "--token-file",
            s(&viewer),
        ]);
        assert_eq!(code, Some(2));
        assert!(err.contains("must be an https:// URL"), "{err}");
        let (code, _, err) = bulwark(&[
            "release",
            "list",
            "--server",
            &url,
            "--token-file",
            s(&viewer),
            "--ca-cert",
            s(&viewer),
        ]);
        assert_eq!(code, Some(2));
        assert!(err.contains("no PEM certificate in it"), "{err}");
    }
}

#[cfg(not(feature = "server-client"))]
#[test]
fn without_the_feature_the_commands_say_there_is_no_server_client() {
    for args in [
        &["release", "list", "--server", "https://127.0.0.1:1"][..],
        &[
            "rollout",
            "halt",
            "--channel",
            "stable",
            "--reason",
            "x",
            "--server",
            "https://127.0.0.1:1",
        ],
    ] {
        let (code, _, err) = common::bulwark(args);
        assert_eq!(code, Some(2), "{args:?}");
        assert!(err.contains("has no server client"), "{args:?}: {err}");
    }
}
