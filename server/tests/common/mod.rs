//! Fixtures shared by the server's tests: the keys, the signed root and releases metadata, test
//! packs and envelopes.
#![allow(dead_code, clippy::unwrap_used)]

use bulwark_distribution::{sign, Releases, Root};
use bulwark_loader_boot_guard::envelope::public_key;
use bulwark_loader_boot_guard::seal;
use bulwark_server::util::{sha256_hex, unhex};

pub const SECRET: &str = "enrollment-secret-for-tests";
pub const RELEASE_KEY: [u8; 32] = [7; 32];
pub const OTHER_KEY: [u8; 32] = [9; 32];
/// The root metadata's own keys (2 of 3).
pub const ROOT_KEYS: [[u8; 32]; 3] = [[31; 32], [32; 32], [33; 32]];
/// The server's online key: signs only the rollout metadata.
pub const ONLINE_KEY: [u8; 32] = [41; 32];

pub fn signing_key(k: &[u8; 32]) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(k)
}

/// Root v1: the release key signs envelopes and releases metadata, the online key the rollout.
pub fn root_file() -> String {
    let public = |k: &[u8; 32]| signing_key(k).verifying_key().to_bytes();
    let root = Root::new(1, bulwark_rollout::Timestamp(T0 + 365 * 86_400))
        .with_role(
            bulwark_distribution::Role::Root,
            &ROOT_KEYS.each_ref().map(public),
            2,
        )
        .with_role(
            bulwark_distribution::Role::Releases,
            &[public(&RELEASE_KEY)],
            1,
        )
        .with_role(
            bulwark_distribution::Role::Rollout,
            &[public(&ONLINE_KEY)],
            1,
        );
    sign(
        &root,
        &[&signing_key(&ROOT_KEYS[0]), &signing_key(&ROOT_KEYS[2])],
    )
    .unwrap()
}

/// Releases metadata `version` listing `listed` (stable releases by version, with their
/// envelopes), signed by `key`.
pub fn releases_file(key: &[u8; 32], version: u64, listed: &[(u64, &[u8])]) -> String {
    let releases = listed.iter().fold(
        Releases::new(version, bulwark_rollout::Timestamp(T0 + 90 * 86_400)),
        |r, (v, env)| {
            let opened = bulwark_loader_boot_guard::open(
                env,
                &bulwark_loader_boot_guard::TrustedKeys::new(&[public_key(&RELEASE_KEY)]).unwrap(),
                bulwark_loader_boot_guard::Admission::Update {
                    channel: CHANNEL,
                    newest: 0,
                    quarantine: &[],
                },
            )
            .unwrap();
            r.with(&bulwark_rollout::Release {
                channel: "stable".to_owned(),
                version: *v,
                pack_hash: opened.id.hash,
                envelope_sha256: unhex(&sha256_hex(env)).unwrap().try_into().unwrap(),
                notes: String::new(),
            })
        },
    );
    sign(&releases, &[&signing_key(key)]).unwrap()
}
pub const CHANNEL: u32 = 1;

pub fn pack(n: u32) -> Vec<u8> {
    let text = format!(
        "rule\n  id \"rule-{n}\"\n  title \"test rule {n}\"\n  author \"tests\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"marker-{n}\"\n  ret\nend\n"
    );
    bulwark_interpreter::text::asm(&text).expect("assemble test pack")
}

pub fn envelope(key: &[u8; 32], version: u64) -> Vec<u8> {
    seal(
        key,
        CHANNEL,
        version,
        bulwark_interpreter::schema_hash(),
        &pack(1),
    )
    .unwrap()
}

/// The start of the tests' fixed clock.
pub const T0: u64 = 1_800_000_000;
