//! Benign process creations, the bulk of what a sensor sees: the synthetic events both Sigma
//! benchmarks use (`sigma/benches/sigma.rs` and `sigma/benches/hostile`), included by path.

use std::path::Path;

use serde_json::{json, Value};

/// `n` benign process creations (the same `n` in every run).
pub fn synthetic(n: usize) -> Vec<Value> {
    let images = [
        ("C:\\Windows\\System32\\svchost.exe", "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule", "C:\\Windows\\System32\\services.exe"),
        ("C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", "\"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe\" --type=renderer --lang=en-US --renderer-client-id=7", "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe"),
        ("C:\\Windows\\System32\\conhost.exe", "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1", "C:\\Windows\\System32\\cmd.exe"),
        ("C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE", "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE\" /n \"C:\\Users\\alice\\Documents\\report.docx\"", "C:\\Windows\\explorer.exe"),
        ("C:\\Windows\\System32\\taskhostw.exe", "taskhostw.exe {222A245B-E637-4AE9-A93F-A59CA119A75E}", "C:\\Windows\\System32\\svchost.exe"),
        ("C:\\Program Files\\Git\\cmd\\git.exe", "git status --porcelain", "C:\\Program Files\\Microsoft VS Code\\Code.exe"),
        ("C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "powershell.exe -NoProfile -File C:\\scripts\\inventory.ps1", "C:\\Windows\\System32\\svchost.exe"),
        ("C:\\Windows\\System32\\msiexec.exe", "C:\\Windows\\system32\\msiexec.exe /V", "C:\\Windows\\System32\\services.exe"),
    ];
    (0..n)
        .map(|i| {
            let (img, cmd, parent) = images[i % images.len()];
            json!({
                "EventID": 1,
                "Image": img,
                "CommandLine": format!("{cmd} {i}"),
                "ParentImage": parent,
                "ParentCommandLine": parent,
                "OriginalFileName": Path::new(img).file_name().map(|f| f.to_string_lossy().into_owned()),
                "User": "CONTOSO\\alice",
                "IntegrityLevel": "Medium",
                "CurrentDirectory": "C:\\Users\\alice\\",
                "ProcessId": 4000 + i,
                "ParentProcessId": 1000,
                "Hashes": "SHA256=4A5B6C7D8E9F0A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F6071829",
            })
        })
        .collect()
}
