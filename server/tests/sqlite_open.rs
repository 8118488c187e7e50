//! Opening one SQLite file from several processes at once (two instances, or `token create`
//! beside `serve`): every step of the migration is applied exactly once and every opener gets a
//! working store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use bulwark_server::{SqliteStore, Store};

#[test]
fn processes_opening_a_fresh_file_together_all_succeed() {
    let dir = std::env::temp_dir().join(format!("bulwark-sqlite-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("server.db");
    // Eight `bulwark-server token create` processes on the same fresh file, started together.
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_bulwark-server"))
                .arg("--db")
                .arg(&db)
                .args(["token", "create", "--role", "viewer", "--name"])
                .arg(format!("viewer-{i}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "process {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.table_counts().unwrap()["api_tokens"], 8);
    let _ = std::fs::remove_dir_all(&dir);
}
