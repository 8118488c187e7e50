//! `bulwark-server export DIR`: the static fetch path as files.

use std::path::{Path, PathBuf};

use crate::api::is_sha256_hex;
use crate::metadata;
use crate::store::Store;

/// Writes the signed metadata files the store holds to `DIR/v1/metadata/` (`root.json`,
/// `releases.json`, `rollout.json`) and every envelope to `DIR/v1/envelopes/<sha256>` (each
/// through a temporary file and a rename), the same paths the server serves. Returns the paths
/// written.
pub fn export(store: &dyn Store, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let metadata_dir = dir.join("v1").join("metadata");
    let envelopes = dir.join("v1").join("envelopes");
    for d in [&metadata_dir, &envelopes] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let mut written = Vec::new();
    for name in [metadata::ROOT, metadata::RELEASES, metadata::ROLLOUT] {
        if let Some(doc) = store.document(name).map_err(|e| e.to_string())? {
            written.push(write(&metadata_dir.join(name), doc.body.as_bytes())?);
        }
    }
    for sha in store.envelope_hashes().map_err(|e| e.to_string())? {
        if !is_sha256_hex(&sha) {
            return Err(format!("stored envelope key {sha:?} is not a SHA-256"));
        }
        let bytes = store
            .envelope(&sha)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("envelope {sha} vanished"))?;
        written.push(write(&envelopes.join(&sha), &bytes)?);
    }
    Ok(written)
}

fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf, String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.to_owned())
}
