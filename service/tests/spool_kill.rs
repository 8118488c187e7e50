//! kill -9 in the middle of spool writes loses nothing that was committed: a child process
//! pushes messages as fast as it can and reports each sequence number once `push` returned;
//! it is killed with SIGKILL, and every reported message is in the spool, numbered without gaps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bulwark_service::spool::{Kind, Spool};

const CHILD: &str = "BULWARK_SPOOL_KILL_CHILD";

#[test]
fn spool_child() {
    // Only does something when started by the test below.
    let Ok(path) = std::env::var(CHILD) else {
        return;
    };
    let mut spool = Spool::open(std::path::Path::new(&path), 1 << 30).unwrap();
    for i in 0.. {
        let seq = spool
            .push(
                Kind::Telemetry,
                &serde_json::json!({"n": i, "pad": "x".repeat(200)}),
            )
            .unwrap();
        println!("committed {seq}");
    }
}

#[test]
fn kill_9_mid_write_loses_nothing_committed() {
    let dir = std::env::temp_dir().join(format!("bulwark-spool-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spool.sqlite");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "spool_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last = 0u64;
    while let Some(Ok(line)) = lines.next() {
        if let Some(n) = line.strip_prefix("committed ") {
            last = n.parse().unwrap();
            if last >= 300 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(last >= 300, "the child stopped early at {last}");
    let mut spool = Spool::open(&path, 1 << 30).unwrap();
    let n = spool.len().unwrap();
    assert!(
        n >= last,
        "{n} messages in the spool, {last} were committed"
    );
    assert!(spool.next_seq().unwrap() > n);
    // Numbered 1, 2, 3, ... with no gap, each body carrying its own number.
    let mut expect = 1;
    while let Some(m) = spool.oldest().unwrap() {
        assert_eq!(m.seq, expect);
        let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body["seq"], serde_json::json!(expect));
        spool.delivered(m.seq).unwrap();
        expect += 1;
    }
    assert_eq!(expect, n + 1);
    let _ = std::fs::remove_dir_all(&dir);
}
