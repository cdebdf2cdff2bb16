//! Captures what a guest logs — through the `logging` interface and on stdout and
//! stderr — into one bounded buffer per invocation.
//!
//! The bound is [`Limits::log_bytes`](crate::limits::Limits::log_bytes), counted over
//! message bytes from all three sources. The write that crosses it is truncated to
//! fit, the guest is trapped on the spot and the buffer remembers why, so the
//! invocation is classified `log_limit_exceeded` without reading any error text.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use super::bindings::Level;

/// Where a log entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// The `corral:agent/logging` interface.
    Agent,
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

/// A log line's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the agent handled.
    Warn,
    /// A failure.
    Error,
}

impl From<Level> for LogLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        }
    }
}

/// One captured log entry. Stdout and stderr arrive as the guest wrote them (Rust's
/// stdout is line-buffered, so usually one line per entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogEntry {
    /// Severity: `info` for stdout, `warn` for stderr.
    pub level: LogLevel,
    /// Where it came from.
    pub source: LogSource,
    /// The text, lossily decoded as UTF-8.
    pub message: String,
}

#[derive(Debug, Default)]
struct Buffer {
    entries: Vec<LogEntry>,
    bytes: u64,
    exceeded: bool,
}

/// The shared, bounded log buffer of one invocation.
#[derive(Debug, Clone)]
pub struct LogSink {
    limit: u64,
    buffer: Arc<Mutex<Buffer>>,
}

/// Returned when an entry would take the buffer past its limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the agent exceeded its log limit of {limit} bytes")]
pub struct LogLimitExceeded {
    /// The limit that was hit.
    pub limit: u64,
}

impl LogSink {
    /// An empty buffer that holds at most `limit` bytes of messages.
    pub fn new(limit: u64) -> Self {
        LogSink {
            limit,
            buffer: Arc::default(),
        }
    }

    /// Appends an entry, or as much of it as fits and then fails.
    pub fn push(
        &self,
        level: LogLevel,
        source: LogSource,
        message: &[u8],
    ) -> Result<(), LogLimitExceeded> {
        let mut buffer = self.buffer.lock().expect("log buffer poisoned");
        if buffer.exceeded {
            return Err(LogLimitExceeded { limit: self.limit });
        }
        let room = self.limit - buffer.bytes;
        let fits = (message.len() as u64) <= room;
        let kept = if fits {
            message
        } else {
            &message[..room as usize]
        };
        buffer.bytes += kept.len() as u64;
        if !kept.is_empty() {
            buffer.entries.push(LogEntry {
                level,
                source,
                message: String::from_utf8_lossy(kept).into_owned(),
            });
        }
        if fits {
            Ok(())
        } else {
            buffer.exceeded = true;
            Err(LogLimitExceeded { limit: self.limit })
        }
    }

    /// Whether the limit was hit.
    pub fn exceeded(&self) -> bool {
        self.buffer.lock().expect("log buffer poisoned").exceeded
    }

    /// Takes the captured entries and their total size in bytes.
    pub fn take(&self) -> (Vec<LogEntry>, u64) {
        let mut buffer = self.buffer.lock().expect("log buffer poisoned");
        (std::mem::take(&mut buffer.entries), buffer.bytes)
    }

    /// A stdout or stderr stream for the guest that writes into this buffer.
    pub fn stream(&self, source: LogSource) -> CapturedStream {
        CapturedStream {
            sink: self.clone(),
            source,
        }
    }
}

/// A guest's stdout or stderr, captured into a [`LogSink`].
#[derive(Debug, Clone)]
pub struct CapturedStream {
    sink: LogSink,
    source: LogSource,
}

impl CapturedStream {
    fn level(&self) -> LogLevel {
        match self.source {
            LogSource::Stderr => LogLevel::Warn,
            _ => LogLevel::Info,
        }
    }
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.sink
            .push(self.level(), self.source, &bytes)
            .map_err(|e| StreamError::Trap(e.into()))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Accept any write; `write` enforces the limit and traps when it is crossed.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for CapturedStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = self
            .sink
            .push(self.level(), self.source, buf)
            .map(|()| buf.len())
            .map_err(std::io::Error::other);
        std::task::Poll::Ready(result)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_that_crosses_the_limit_is_truncated_and_fails() {
        let sink = LogSink::new(10);
        sink.push(LogLevel::Info, LogSource::Agent, b"123456")
            .unwrap();
        assert!(
            sink.push(LogLevel::Info, LogSource::Stdout, b"abcdef")
                .is_err()
        );
        assert!(sink.exceeded());
        let (entries, bytes) = sink.take();
        assert_eq!(bytes, 10);
        assert_eq!(entries[1].message, "abcd");
    }

    #[test]
    fn filling_the_buffer_exactly_is_allowed() {
        let sink = LogSink::new(4);
        sink.push(LogLevel::Info, LogSource::Agent, b"abcd")
            .unwrap();
        assert!(!sink.exceeded());
    }
}
