//! The on-disk artifact cache: compiled components keyed by content hash and engine.
//!
//! A file is `<sha256 of the component>-<engine compatibility key>.cwasm`, holding a
//! header (magic, the component's hash, the artifact's sha256) and the artifact.
//! Reading re-checks all three before handing the bytes to wasmtime, which checks
//! the engine settings once more. A file that fails any check — truncated, edited,
//! from another engine or another component — is deleted and the component is
//! recompiled. Files are written to a temporary name and renamed into place, so a
//! crash never leaves half a file. The directory must be private to the host: an
//! artifact is native code, and this cache is the only place artifacts come from.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"CORRAL\x01\x00";
const HEADER_LEN: usize = MAGIC.len() + 32 + 32;

/// Compiled artifacts on disk.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    engine_key: String,
}

/// Why a cache file was not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheMiss {
    /// No file for this component and engine.
    #[error("not cached")]
    Absent,
    /// A file exists but failed a check; it has been removed.
    #[error("discarded a bad cache file: {0}")]
    Discarded(String),
}

impl DiskCache {
    /// A cache in `dir` (created, private to this user) for artifacts of `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<DiskCache> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    /// The file for the component with this content hash.
    pub fn path(&self, component_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{component_hash}-{}.cwasm", self.engine_key))
    }

    /// Loads the cached component, or says why not (removing a bad file).
    pub fn load(&self, engine: &Engine, component_hash: &str) -> Result<Component, CacheMiss> {
        let path = self.path(component_hash);
        let file = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CacheMiss::Absent),
            Err(e) => return Err(self.discard(&path, format!("unreadable: {e}"))),
        };
        let artifact = match verify(&file, component_hash) {
            Ok(artifact) => artifact,
            Err(why) => return Err(self.discard(&path, why)),
        };
        match deserialize(engine, artifact) {
            Ok(component) => Ok(component),
            Err(e) => Err(self.discard(&path, format!("rejected by wasmtime: {e}"))),
        }
    }

    /// Stores an artifact for the component with this content hash.
    pub fn store(&self, component_hash: &str, artifact: &[u8]) -> std::io::Result<()> {
        let path = self.path(component_hash);
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(MAGIC)?;
        tmp.write_all(&decode_hash(component_hash))?;
        tmp.write_all(&Sha256::digest(artifact))?;
        tmp.write_all(artifact)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Deletes the artifacts no one needs — of components `needed` does not name, or of
    /// another engine — once older than `min_age` (so an upload being stored is safe),
    /// then the least recently written until the rest fit in `max_bytes`. Returns how
    /// many files were deleted and the bytes left.
    pub fn collect(
        &self,
        needed: &std::collections::HashSet<String>,
        max_bytes: u64,
        min_age: std::time::Duration,
    ) -> (usize, u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (0, 0);
        };
        let suffix = format!("-{}.cwasm", self.engine_key);
        let mut kept = Vec::new();
        let mut deleted = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || !name.ends_with(".cwasm") {
                continue;
            }
            let modified = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            let old = modified.elapsed().is_ok_and(|age| age >= min_age);
            let wanted = name
                .strip_suffix(&suffix)
                .is_some_and(|hash| needed.contains(hash));
            if !wanted && old {
                if std::fs::remove_file(entry.path()).is_ok() {
                    deleted += 1;
                }
            } else {
                kept.push((modified, meta.len(), entry.path()));
            }
        }
        // Over the bound: the least recently written go first (they reload by compiling).
        kept.sort_by_key(|(modified, _, _)| *modified);
        let mut total: u64 = kept.iter().map(|(_, len, _)| len).sum();
        for (_, len, path) in kept {
            if total <= max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                deleted += 1;
                total -= len;
            }
        }
        (deleted, total)
    }

    fn discard(&self, path: &Path, why: String) -> CacheMiss {
        tracing::warn!(path = %path.display(), %why, "discarding a bad artifact; recompiling");
        let _ = std::fs::remove_file(path);
        CacheMiss::Discarded(why)
    }
}

fn decode_hash(hex_hash: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out).expect("component hashes are 64 hex digits");
    out
}

/// Checks the header and returns the artifact bytes.
fn verify<'a>(file: &'a [u8], component_hash: &str) -> Result<&'a [u8], String> {
    if file.len() < HEADER_LEN || &file[..MAGIC.len()] != MAGIC {
        return Err("not a Corral artifact file".into());
    }
    let (header, artifact) = file.split_at(HEADER_LEN);
    if header[8..40] != decode_hash(component_hash) {
        return Err("the file belongs to another component".into());
    }
    if header[40..72] != Sha256::digest(artifact)[..] {
        return Err("the artifact's checksum does not match (truncated or modified)".into());
    }
    Ok(artifact)
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be wasmtime's own output.
    // These bytes come only from this cache, written by this host from its own compile
    // worker's output, and `verify` has just checked them against the checksum stored
    // with them; wasmtime itself checks the engine settings they were compiled for.
    unsafe { Component::deserialize(engine, artifact) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_flipped_artifact_byte_fails_the_checksum() {
        let mut file = Vec::new();
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&decode_hash(HASH));
        file.extend_from_slice(&Sha256::digest(b"artifact"));
        file.extend_from_slice(b"artifact");
        assert_eq!(verify(&file, HASH).unwrap(), b"artifact");
        *file.last_mut().unwrap() ^= 1;
        assert!(verify(&file, HASH).unwrap_err().contains("checksum"));
    }

    #[test]
    fn a_file_for_another_component_is_refused() {
        let mut file = Vec::new();
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&[0u8; 32]);
        file.extend_from_slice(&Sha256::digest(b""));
        assert!(
            verify(&file, HASH)
                .unwrap_err()
                .contains("another component")
        );
    }
}
