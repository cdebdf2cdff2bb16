//! Key-value state that outlives an invocation, through `corral:agent/kv`.
//!
//! Each agent has its own keys (per tenant, under `corral serve`); no other agent sees
//! them. Every call fails with [`KvError::Denied`] unless the agent's policy grants
//! `kv`, and the grant bounds what may be stored: the size of one value, the number of
//! keys, and the bytes of all keys and values together. A [`set`] past a bound fails
//! with [`KvError::LimitExceeded`] and stores nothing.
//!
//! Keys are 1 to 512 bytes of UTF-8 and list in byte order, so a prefix such as
//! `"note/"` makes a namespace. Values are bytes; [`get_json`] and [`set_json`] store
//! any serde type as JSON. An entry set with a TTL ([`set_with_ttl`]) disappears once
//! it expires.
//!
//! A [`KvError`] converts into [`Error`](crate::Error), so `?` works in actions; the
//! codes are `kv_denied`, `kv_limit_exceeded`, `kv_invalid_key`, `kv_unavailable`
//! (retryable) and `kv_invalid_json`.
//!
//! # Examples
//!
//! ```no_run
//! use corral_sdk::{Error, kv};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Default)]
//! struct Counter { hits: u64 }
//!
//! fn hit(page: String) -> Result<u64, Error> {
//!     let key = format!("hits/{page}");
//!     let mut counter: Counter = kv::get_json(&key)?.unwrap_or_default();
//!     counter.hits += 1;
//!     kv::set_json(&key, &counter)?;
//!     Ok(counter.hits)
//! }
//!
//! fn pages(_: ()) -> Result<Vec<String>, Error> {
//!     let keys = kv::list("hits/").collect::<Result<Vec<_>, _>>()?;
//!     Ok(keys.into_iter().map(|k| k["hits/".len()..].to_string()).collect())
//! }
//!
//! fn remember(token: String) -> Result<(), Error> {
//!     // Gone in an hour.
//!     kv::set_with_ttl("session", token, std::time::Duration::from_secs(3600))?;
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::corral::agent::kv as wit;

/// How many keys [`list`] asks the host for at a time.
const PAGE: u32 = 100;

/// Why a key-value call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The agent was not granted key-value state.
    Denied(String),
    /// The call would pass a limit of the grant (value size, key count, total bytes,
    /// or the longest TTL); nothing was stored.
    LimitExceeded(String),
    /// The key is empty or longer than 512 bytes.
    InvalidKey(String),
    /// The host's store failed; retrying later may help.
    Unavailable(String),
    /// A value could not be turned into JSON or back (in the agent; the host was not
    /// involved).
    InvalidJson(String),
}

impl KvError {
    /// A stable snake_case code: `kv_denied`, `kv_limit_exceeded`, `kv_invalid_key`,
    /// `kv_unavailable` or `kv_invalid_json`.
    pub fn code(&self) -> &'static str {
        match self {
            KvError::Denied(_) => "kv_denied",
            KvError::LimitExceeded(_) => "kv_limit_exceeded",
            KvError::InvalidKey(_) => "kv_invalid_key",
            KvError::Unavailable(_) => "kv_unavailable",
            KvError::InvalidJson(_) => "kv_invalid_json",
        }
    }

    /// The explanation.
    pub fn message(&self) -> &str {
        match self {
            KvError::Denied(m)
            | KvError::LimitExceeded(m)
            | KvError::InvalidKey(m)
            | KvError::Unavailable(m)
            | KvError::InvalidJson(m) => m,
        }
    }

    /// Whether a retry may help (only for `Unavailable`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, KvError::Unavailable(_))
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for KvError {}

impl From<wit::KvError> for KvError {
    fn from(e: wit::KvError) -> Self {
        match e {
            wit::KvError::Denied(m) => KvError::Denied(m),
            wit::KvError::LimitExceeded(m) => KvError::LimitExceeded(m),
            wit::KvError::InvalidKey(m) => KvError::InvalidKey(m),
            wit::KvError::Unavailable(m) => KvError::Unavailable(m),
        }
    }
}

impl From<KvError> for crate::Error {
    /// The error's [code](KvError::code) and message; retryable when the store was
    /// unavailable.
    fn from(e: KvError) -> Self {
        let error = crate::Error::new(e.code(), e.message());
        if e.is_retryable() {
            error.retryable()
        } else {
            error
        }
    }
}

/// The value under `key`, or `None` if there is none (or it expired).
///
/// # Examples
///
/// ```no_run
/// if let Some(bytes) = corral_sdk::kv::get("greeting")? {
///     corral_sdk::info!("{} bytes", bytes.len());
/// }
/// # Ok::<(), corral_sdk::kv::KvError>(())
/// ```
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    Ok(wit::get(key)?)
}

/// The value under `key` as JSON of type `T`, or `None` if there is none.
///
/// # Examples
///
/// ```no_run
/// let tags: Vec<String> = corral_sdk::kv::get_json("tags")?.unwrap_or_default();
/// # Ok::<(), corral_sdk::kv::KvError>(())
/// ```
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, KvError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| KvError::InvalidJson(format!("the value of {key:?}: {e}"))),
    }
}

/// Stores `value` under `key`, replacing what was there, with no expiry.
///
/// # Examples
///
/// ```no_run
/// corral_sdk::kv::set("greeting", "hello")?;
/// # Ok::<(), corral_sdk::kv::KvError>(())
/// ```
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), KvError> {
    Ok(wit::set(key, value.as_ref(), None)?)
}

/// Stores `value` under `key`, expiring `ttl` from now (to the millisecond; at least
/// 1 ms).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// corral_sdk::kv::set_with_ttl("otp", "492817", Duration::from_secs(300))?;
/// # Ok::<(), corral_sdk::kv::KvError>(())
/// ```
pub fn set_with_ttl(key: &str, value: impl AsRef<[u8]>, ttl: Duration) -> Result<(), KvError> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    Ok(wit::set(key, value.as_ref(), Some(ms))?)
}

/// Stores `value` as JSON under `key`, with no expiry.
///
/// # Examples
///
/// ```no_run
/// corral_sdk::kv::set_json("tags", &vec!["a", "b"])?;
/// # Ok::<(), corral_sdk::kv::KvError>(())
/// ```
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), KvError> {
    set(key, to_json(key, value)?)
}

/// Stores `value` as JSON under `key`, expiring `ttl` from now.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// corral_sdk::kv::set_json_with_ttl("cache/price", &42.5, Duration::from_secs(60))?;
/// # Ok::<(), corral_sdk::kv::KvError>(())
/// ```
pub fn set_json_with_ttl<T: Serialize + ?Sized>(
    key: &str,
    value: &T,
    ttl: Duration,
) -> Result<(), KvError> {
    set_with_ttl(key, to_json(key, value)?, ttl)
}

fn to_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, KvError> {
    serde_json::to_vec(value)
        .map_err(|e| KvError::InvalidJson(format!("the value for {key:?}: {e}")))
}

/// Removes `key`; returns whether it existed.
///
/// # Examples
///
/// ```no_run
/// let existed = corral_sdk::kv::delete("greeting")?;
/// # Ok::<(), corral_sdk::kv::KvError>(())
/// ```
pub fn delete(key: &str) -> Result<bool, KvError> {
    Ok(wit::delete(key)?)
}

/// The keys that start with `prefix` (every key for `""`), in byte order, fetched from
/// the host a page at a time as the iterator is advanced. After an error the iterator
/// ends.
///
/// # Examples
///
/// ```no_run
/// for key in corral_sdk::kv::list("note/") {
///     corral_sdk::info!("{}", key?);
/// }
/// let all: Vec<String> = corral_sdk::kv::list("").collect::<Result<_, _>>()?;
/// # Ok::<(), corral_sdk::kv::KvError>(())
/// ```
pub fn list(prefix: &str) -> Keys {
    Keys {
        prefix: prefix.to_string(),
        cursor: None,
        page: Vec::new().into_iter(),
        done: false,
    }
}

/// The iterator of [`list`].
#[derive(Debug)]
pub struct Keys {
    prefix: String,
    cursor: Option<String>,
    page: std::vec::IntoIter<String>,
    done: bool,
}

impl Iterator for Keys {
    type Item = Result<String, KvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(key) = self.page.next() {
            self.cursor = Some(key.clone());
            return Some(Ok(key));
        }
        if self.done {
            return None;
        }
        match wit::list_keys(&self.prefix, self.cursor.as_deref(), PAGE) {
            Err(e) => {
                self.done = true;
                Some(Err(e.into()))
            }
            Ok(keys) => {
                // A short page is the last one.
                self.done = (keys.len() as u32) < PAGE;
                self.page = keys.into_iter();
                let key = self.page.next()?;
                self.cursor = Some(key.clone());
                Some(Ok(key))
            }
        }
    }
}
