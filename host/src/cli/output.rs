//! Writing the command line's output without panicking.
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`corral run … | head
//! -c1`), and `eprintln!` likewise on stderr. Every command writes through these macros
//! instead:
//!
//! - [`outln!`] writes a line to stdout and returns the [`std::io::Result`]; a command
//!   stops at the first error and hands it to [`status`], which turns a broken pipe
//!   into a quiet exit with [`BROKEN_PIPE`].
//! - [`errln!`] writes a line to stderr and ignores a failure: stderr is where a
//!   failure would be reported, so once it is gone there is nowhere left to say
//!   anything, and the exit status still tells how the command went.

use std::io::{ErrorKind, Write};
use std::process::ExitCode;

/// The exit status when the reader of stdout went away: 141 (128 + SIGPIPE), what a
/// shell shows for `cat` or `grep` killed by SIGPIPE in `… | head`. (Rust ignores
/// SIGPIPE, and restoring its default action would take `unsafe`.) It is none of the
/// documented statuses, so a script with `set -o pipefail` can tell the output was cut.
pub const BROKEN_PIPE: u8 = 141;

/// Like `println!`, but returns the write's [`std::io::Result`] instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// Like `eprintln!`, but a failed write is ignored instead of panicking.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub(crate) use {errln, outln};

/// The exit status of a command that wrote its output with [`outln!`]: its own status,
/// or [`BROKEN_PIPE`], silently, if the reader went away.
pub fn status(result: std::io::Result<ExitCode>) -> ExitCode {
    // Whatever is still buffered is written now, so its failure is handled here too
    // rather than ignored at exit.
    let flushed = result.and_then(|code| std::io::stdout().lock().flush().map(|()| code));
    match flushed {
        Ok(code) => code,
        Err(e) if e.kind() == ErrorKind::BrokenPipe => ExitCode::from(BROKEN_PIPE),
        Err(e) => {
            // Any other failure (a full disk, say) is the command's own, like the other
            // errors the commands exit 2 for.
            errln!("error: writing the output: {e}");
            ExitCode::from(2)
        }
    }
}
