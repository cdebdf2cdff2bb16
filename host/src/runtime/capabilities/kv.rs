//! `corral:agent/kv`: per-agent, tenant-scoped key-value state.
//!
//! Denied by default. Each call goes through [`KvState`], in this order:
//!
//! 1. Without a [`KvGrant`] (or with no [`KvStore`] to serve it), refused with
//!    `denied`, counted in [`KvUsage::denied`] and listed as a [`Denial`] (capability
//!    `kv`, the operation as target: keys are the agent's data and may carry some).
//! 2. The key must be 1 to [`MAX_KEY_BYTES`] bytes (`invalid-key` otherwise); on `set`,
//!    the value at most the grant's `max_value_bytes` and the TTL 1 ms to
//!    [`MAX_TTL_MS`] (`limit-exceeded` otherwise). These are checked before the store
//!    is touched, so an oversized value costs the host one copy and nothing more.
//! 3. The store runs the call. On `set` it checks `max_keys` and `max_total_bytes`
//!    (keys plus values, of entries that have not expired) atomically with the write,
//!    so concurrent invocations cannot pass them together; a `set` that would is
//!    `limit-exceeded` and stores nothing. A store failure is `unavailable`.
//!
//! `list-keys` returns at most [`MAX_LIST_LIMIT`] keys per call whatever the guest asks
//! for, so one call's answer is bounded too (keys × [`MAX_KEY_BYTES`]).
//!
//! Expired entries are invisible to every call and are removed lazily: a `get` that
//! finds one deletes it, and a `set` first purges the agent's expired entries before it
//! counts against the limits. Time comes from the store's [`Clock`], so tests can step
//! past a TTL instead of waiting for it.
//!
//! Stores: [`crate::db::kv::DbKvStore`] under `corral serve`, [`MemoryKvStore`] (optionally
//! kept in a JSON file) under `corral run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Providers;
use crate::policy::{Grants, KvGrant};
use crate::quota::clock::{Clock, SystemClock};
use crate::runtime::bindings::corral::agent::kv::{self, KvError};
use crate::runtime::egress::MAX_LISTED_DENIALS;
use crate::runtime::outcome::{Denial, DenialReason};
use crate::runtime::state::HostState;

/// The longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 512;
/// The most keys one `list-keys` call returns; larger limits are lowered to it.
pub const MAX_LIST_LIMIT: u32 = 1_000;
/// The longest TTL: 10 years, in milliseconds.
pub const MAX_TTL_MS: u64 = 10 * 366 * 24 * 3600 * 1000;

/// Why a store could not carry out a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvStoreError {
    /// The `set` would pass a limit of the grant; nothing was stored.
    #[error("{0}")]
    LimitExceeded(String),
    /// The store failed; retrying later may help.
    #[error("{0}")]
    Unavailable(String),
}

/// Where one agent's key-value state is kept. Every method is scoped to that agent
/// (and its tenant) by the store itself; keys are already validated.
#[async_trait]
pub trait KvStore: Send + Sync {
    /// The value under `key`, unless there is none or it has expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvStoreError>;

    /// Stores `value` under `key`, expiring at `expires_at` (never when `None`), unless
    /// that would pass `limits.max_keys` or `limits.max_total_bytes`.
    async fn set(
        &self,
        key: &str,
        value: &[u8],
        expires_at: Option<DateTime<Utc>>,
        limits: &KvGrant,
    ) -> Result<(), KvStoreError>;

    /// Removes `key`; whether it existed (and had not expired).
    async fn delete(&self, key: &str) -> Result<bool, KvStoreError>;

    /// Up to `limit` unexpired keys starting with `prefix`, in byte order, after `after`.
    async fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, KvStoreError>;

    /// Now, by the store's clock (for TTLs).
    fn now(&self) -> DateTime<Utc>;
}

/// What one invocation's key-value calls used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KvUsage {
    /// `get` calls the store answered.
    pub reads: u64,
    /// `set` calls that stored their value.
    pub writes: u64,
    /// `delete` calls the store answered (whether or not the key existed).
    pub deletes: u64,
    /// `list-keys` calls the store answered.
    pub lists: u64,
    /// Value bytes returned by `get`.
    pub bytes_read: u64,
    /// Value bytes stored by `set`.
    pub bytes_written: u64,
    /// Calls refused because kv is not granted; each is listed in the execution's
    /// denials (up to a bound).
    pub denied: u64,
    /// Calls refused for an invalid key or a limit of the grant (`invalid-key`,
    /// `limit-exceeded`).
    pub refused: u64,
}

/// Per-invocation key-value state: the grant, the store, and what was used.
pub struct KvState {
    grant: Option<KvGrant>,
    store: Option<Arc<dyn KvStore>>,
    usage: KvUsage,
    denials: Vec<Denial>,
}

impl KvState {
    /// State for one invocation: open only when `grants` hold a kv grant and
    /// `providers` a store.
    pub fn new(grants: &Grants, providers: &Providers) -> KvState {
        KvState {
            grant: grants.kv,
            store: providers.kv.clone(),
            usage: KvUsage::default(),
            denials: Vec::new(),
        }
    }

    /// What the calls used.
    pub fn usage(&self) -> KvUsage {
        self.usage
    }

    /// The calls refused for want of a grant, in order (the first
    /// [`MAX_LISTED_DENIALS`]).
    pub fn denials(&self) -> &[Denial] {
        &self.denials
    }

    /// Step 1 of the module docs: the grant and the store, or the refusal.
    fn admit(&mut self, operation: &str) -> Result<(KvGrant, Arc<dyn KvStore>), KvError> {
        let detail = match (&self.grant, &self.store) {
            (Some(grant), Some(store)) => return Ok((*grant, store.clone())),
            (None, _) => "this agent has no kv grant",
            (Some(_), None) => "this host keeps no key-value state for this invocation",
        };
        tracing::debug!(operation, detail, "kv call denied");
        self.usage.denied += 1;
        if self.denials.len() < MAX_LISTED_DENIALS {
            self.denials.push(Denial {
                capability: "kv".into(),
                target: operation.into(),
                reason: DenialReason::NotGranted,
                detail: detail.into(),
            });
        }
        Err(KvError::Denied(format!(
            "key-value state is not granted: {detail}"
        )))
    }

    fn refuse(&mut self, error: KvError) -> KvError {
        self.usage.refused += 1;
        error
    }

    fn check_key(&mut self, key: &str) -> Result<(), KvError> {
        check_key(key).map_err(|m| self.refuse(KvError::InvalidKey(m)))
    }

    fn failed(&mut self, error: KvStoreError) -> KvError {
        match error {
            KvStoreError::LimitExceeded(m) => self.refuse(KvError::LimitExceeded(m)),
            KvStoreError::Unavailable(m) => KvError::Unavailable(m),
        }
    }

    /// `get`, checked and counted.
    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let (_, store) = self.admit("get")?;
        self.check_key(key)?;
        let value = store.get(key).await.map_err(|e| self.failed(e))?;
        self.usage.reads += 1;
        self.usage.bytes_read += value.as_ref().map_or(0, |v| v.len() as u64);
        Ok(value)
    }

    /// `set`, checked and counted.
    pub async fn set(
        &mut self,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        let (grant, store) = self.admit("set")?;
        self.check_key(key)?;
        if value.len() as u64 > grant.max_value_bytes {
            return Err(self.refuse(KvError::LimitExceeded(format!(
                "the value is {} bytes; the grant allows at most {} (max_value_bytes)",
                value.len(),
                grant.max_value_bytes
            ))));
        }
        let expires_at = match ttl_ms {
            None => None,
            Some(ms) if (1..=MAX_TTL_MS).contains(&ms) => {
                Some(store.now() + chrono::Duration::milliseconds(ms as i64))
            }
            Some(ms) => {
                return Err(self.refuse(KvError::LimitExceeded(format!(
                    "ttl-ms is {ms}; it must be 1 to {MAX_TTL_MS} (10 years)"
                ))));
            }
        };
        store
            .set(key, value, expires_at, &grant)
            .await
            .map_err(|e| self.failed(e))?;
        self.usage.writes += 1;
        self.usage.bytes_written += value.len() as u64;
        Ok(())
    }

    /// `delete`, checked and counted.
    pub async fn delete(&mut self, key: &str) -> Result<bool, KvError> {
        let (_, store) = self.admit("delete")?;
        self.check_key(key)?;
        let existed = store.delete(key).await.map_err(|e| self.failed(e))?;
        self.usage.deletes += 1;
        Ok(existed)
    }

    /// `list-keys`, checked and counted. The prefix may be empty (every key); a cursor
    /// is a key, so it is checked like one.
    pub async fn list_keys(
        &mut self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, KvError> {
        let (_, store) = self.admit("list-keys")?;
        if prefix.len() > MAX_KEY_BYTES {
            return Err(self.refuse(KvError::InvalidKey(format!(
                "the prefix is {} bytes; keys are at most {MAX_KEY_BYTES}",
                prefix.len()
            ))));
        }
        if let Some(cursor) = cursor {
            self.check_key(cursor)?;
        }
        let keys = store
            .list_keys(prefix, cursor, limit.min(MAX_LIST_LIMIT))
            .await
            .map_err(|e| self.failed(e))?;
        self.usage.lists += 1;
        Ok(keys)
    }
}

/// Whether `key` is a usable key: 1 to [`MAX_KEY_BYTES`] bytes. The explanation if not.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the key is {} bytes; keys are at most {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    Ok(())
}

/// The smallest string above every string that starts with `prefix`, in byte order
/// (which for UTF-8 is code point order); `None` when there is none (an empty prefix).
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value, skipping the surrogate gap.
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        Ok(self.caps.kv.get(&key).await)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), KvError>> {
        Ok(self.caps.kv.set(&key, &value, ttl_ms).await)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, KvError>> {
        Ok(self.caps.kv.delete(&key).await)
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<String>, KvError>> {
        Ok(self
            .caps
            .kv
            .list_keys(&prefix, cursor.as_deref(), limit)
            .await)
    }
}

/// One stored entry of a [`MemoryKvStore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEntry {
    /// The value, base64 in the file.
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
    /// When it expires; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

impl MemoryEntry {
    fn live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// The JSON file of `corral run --kv-file`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KvFile {
    /// The file format's version: 1.
    version: u32,
    entries: BTreeMap<String, MemoryEntry>,
}

/// Key-value state of one agent in memory, for `corral run`: optionally loaded from
/// and saved to a JSON file, so state outlives the process.
pub struct MemoryKvStore {
    entries: Mutex<BTreeMap<String, MemoryEntry>>,
    clock: Arc<dyn Clock>,
    file: Option<PathBuf>,
}

impl MemoryKvStore {
    /// An empty store on the system clock.
    pub fn new() -> MemoryKvStore {
        MemoryKvStore::with_clock(Arc::new(SystemClock))
    }

    /// An empty store on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> MemoryKvStore {
        MemoryKvStore {
            entries: Mutex::default(),
            clock,
            file: None,
        }
    }

    /// A store kept in the JSON file at `path`: its entries if it exists, empty if not.
    /// [`save`](Self::save) writes it back.
    pub fn open(path: &Path) -> std::io::Result<MemoryKvStore> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => {
                let file: KvFile = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not a kv file: {e}", path.display()),
                    )
                })?;
                if file.version != 1 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} is a kv file of version {}; this corral reads version 1",
                            path.display(),
                            file.version
                        ),
                    ));
                }
                file.entries
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(MemoryKvStore {
            entries: Mutex::new(entries),
            clock: Arc::new(SystemClock),
            file: Some(path.to_path_buf()),
        })
    }

    /// Writes the unexpired entries to the store's file, if it has one: to a temporary
    /// file beside it, then renamed over it, so a crash leaves the old file or the new.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let now = self.clock.now();
        let entries = self
            .entries
            .lock()
            .expect("kv lock")
            .iter()
            .filter(|(_, e)| e.live(now))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let file = KvFile {
            version: 1,
            entries,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut temp, &json)?;
        temp.as_file().sync_all()?;
        temp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// A copy of the unexpired entries.
    pub fn entries(&self) -> BTreeMap<String, MemoryEntry> {
        let now = self.clock.now();
        self.entries
            .lock()
            .expect("kv lock")
            .iter()
            .filter(|(_, e)| e.live(now))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }
}

impl Default for MemoryKvStore {
    fn default() -> Self {
        MemoryKvStore::new()
    }
}

#[async_trait]
impl KvStore for MemoryKvStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvStoreError> {
        let now = self.clock.now();
        let mut entries = self.entries.lock().expect("kv lock");
        match entries.get(key) {
            Some(entry) if entry.live(now) => Ok(Some(entry.value.clone())),
            Some(_) => {
                entries.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        expires_at: Option<DateTime<Utc>>,
        limits: &KvGrant,
    ) -> Result<(), KvStoreError> {
        let now = self.clock.now();
        let mut entries = self.entries.lock().expect("kv lock");
        entries.retain(|_, e| e.live(now));
        let (keys, bytes) = entries
            .iter()
            .filter(|(k, _)| k.as_str() != key)
            .fold((0u64, 0u64), |(n, b), (k, e)| {
                (n + 1, b + (k.len() + e.value.len()) as u64)
            });
        check_totals(keys, bytes, (key.len() + value.len()) as u64, limits)?;
        entries.insert(
            key.to_string(),
            MemoryEntry {
                value: value.to_vec(),
                expires_at,
                updated_at: now,
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, KvStoreError> {
        let now = self.clock.now();
        let removed = self.entries.lock().expect("kv lock").remove(key);
        Ok(removed.is_some_and(|e| e.live(now)))
    }

    async fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, KvStoreError> {
        use std::ops::Bound;
        let now = self.clock.now();
        let entries = self.entries.lock().expect("kv lock");
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        Ok(entries
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| e.live(now))
            .take(limit as usize)
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// The `max_keys` and `max_total_bytes` checks of a `set` adding `size` bytes (key plus
/// value) to an agent that holds `keys` other keys of `bytes` bytes.
pub fn check_totals(
    keys: u64,
    bytes: u64,
    size: u64,
    limits: &KvGrant,
) -> Result<(), KvStoreError> {
    if keys + 1 > limits.max_keys {
        return Err(KvStoreError::LimitExceeded(format!(
            "the agent already holds {keys} keys; the grant allows at most {} (max_keys)",
            limits.max_keys
        )));
    }
    if bytes + size > limits.max_total_bytes {
        return Err(KvStoreError::LimitExceeded(format!(
            "the agent's keys and values would take {} bytes; the grant allows at most {} (max_total_bytes)",
            bytes + size,
            limits.max_total_bytes
        )));
    }
    Ok(())
}

mod base64_bytes {
    use super::BASE64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::clock::ManualClock;

    fn grant(max_value_bytes: u64, max_keys: u64, max_total_bytes: u64) -> Grants {
        Grants {
            kv: Some(KvGrant {
                max_value_bytes,
                max_keys,
                max_total_bytes,
            }),
            ..Grants::default()
        }
    }

    fn state(grants: &Grants, store: Arc<MemoryKvStore>) -> KvState {
        let providers = Providers {
            kv: Some(store),
            ..Providers::default()
        };
        KvState::new(grants, &providers)
    }

    #[test]
    fn prefix_end_is_the_next_string_past_the_prefix() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }

    #[tokio::test]
    async fn without_a_grant_every_call_is_denied_and_listed() {
        let mut kv = state(&Grants::default(), Arc::new(MemoryKvStore::new()));
        assert!(matches!(kv.get("a").await, Err(KvError::Denied(_))));
        assert!(matches!(
            kv.set("a", b"1", None).await,
            Err(KvError::Denied(_))
        ));
        assert!(matches!(kv.delete("a").await, Err(KvError::Denied(_))));
        assert!(matches!(
            kv.list_keys("", None, 10).await,
            Err(KvError::Denied(_))
        ));
        assert_eq!(kv.usage().denied, 4);
        let targets: Vec<_> = kv.denials().iter().map(|d| d.target.as_str()).collect();
        assert_eq!(targets, ["get", "set", "delete", "list-keys"]);
        assert!(kv.denials().iter().all(|d| d.capability == "kv"));
    }

    #[tokio::test]
    async fn a_grant_without_a_store_is_still_denied() {
        let grants = grant(10, 10, 100);
        let mut kv = KvState::new(&grants, &Providers::default());
        assert!(matches!(kv.get("a").await, Err(KvError::Denied(_))));
    }

    #[tokio::test]
    async fn limits_refuse_and_store_nothing() {
        let store = Arc::new(MemoryKvStore::new());
        let mut kv = state(&grant(4, 2, 10), store.clone());
        assert!(matches!(
            kv.set("k", b"12345", None).await,
            Err(KvError::LimitExceeded(m)) if m.contains("max_value_bytes")
        ));
        kv.set("a", b"1234", None).await.unwrap(); // 5 bytes
        kv.set("b", b"1234", None).await.unwrap(); // 10 bytes
        assert!(matches!(
            kv.set("c", b"1", None).await,
            Err(KvError::LimitExceeded(m)) if m.contains("max_keys")
        ));
        // Replacing a key does not count it twice.
        kv.set("b", b"123", None).await.unwrap(); // 9 bytes
        assert!(matches!(
            kv.set("a", b"12345", None).await,
            Err(KvError::LimitExceeded(m)) if m.contains("max_value_bytes")
        ));
        kv.delete("b").await.unwrap();
        assert!(matches!(
            kv.set("bb", b"1234", None).await,
            Err(KvError::LimitExceeded(m)) if m.contains("max_total_bytes")
        ));
        let keys: Vec<_> = store.entries().into_keys().collect();
        assert_eq!(keys, ["a"]);
        assert_eq!(kv.usage().refused, 4);
        assert_eq!(kv.usage().writes, 3);
    }

    #[tokio::test]
    async fn keys_are_checked_and_ttls_expire_by_the_clock() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let store = Arc::new(MemoryKvStore::with_clock(clock.clone()));
        let mut kv = state(&grant(100, 100, 1000), store.clone());
        assert!(matches!(kv.get("").await, Err(KvError::InvalidKey(_))));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            kv.set(&long, b"", None).await,
            Err(KvError::InvalidKey(_))
        ));
        kv.set(&"k".repeat(MAX_KEY_BYTES), b"", None).await.unwrap();
        assert!(matches!(
            kv.set("t", b"v", Some(0)).await,
            Err(KvError::LimitExceeded(_))
        ));
        kv.set("t", b"v", Some(1000)).await.unwrap();
        assert_eq!(kv.get("t").await.unwrap(), Some(b"v".to_vec()));
        clock.advance(chrono::Duration::milliseconds(1000));
        assert_eq!(kv.get("t").await.unwrap(), None);
        assert_eq!(
            kv.list_keys("t", None, 10).await.unwrap(),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn listing_pages_through_a_prefix_in_byte_order() {
        let store = Arc::new(MemoryKvStore::new());
        let mut kv = state(&grant(100, 100, 1000), store);
        for key in ["b/2", "a", "b/1", "b/10", "c", "b\u{e9}"] {
            kv.set(key, b"", None).await.unwrap();
        }
        assert_eq!(kv.list_keys("b/", None, 2).await.unwrap(), ["b/1", "b/10"]);
        assert_eq!(kv.list_keys("b/", Some("b/10"), 2).await.unwrap(), ["b/2"]);
        assert_eq!(
            kv.list_keys("", None, 100).await.unwrap(),
            ["a", "b/1", "b/10", "b/2", "b\u{e9}", "c"]
        );
        assert_eq!(kv.list_keys("", Some("b/2"), 1).await.unwrap(), ["b\u{e9}"]);
    }

    #[tokio::test]
    async fn a_kv_file_round_trips_and_drops_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = MemoryKvStore::open(&path).unwrap();
        let limits = KvGrant::default();
        store.set("x", &[0, 255], None, &limits).await.unwrap();
        let past = Utc::now() - chrono::Duration::seconds(1);
        store.set("gone", b"1", Some(past), &limits).await.unwrap();
        store.save().unwrap();
        let again = MemoryKvStore::open(&path).unwrap();
        assert_eq!(again.get("x").await.unwrap(), Some(vec![0, 255]));
        assert_eq!(again.entries().len(), 1);

        std::fs::write(&path, "{\"version\": 2, \"entries\": {}}").unwrap();
        let err = MemoryKvStore::open(&path).err().unwrap();
        assert!(err.to_string().contains("version 2"), "{err}");
    }
}
