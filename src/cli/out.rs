//! Writing to stdout and stderr without panicking. `println!` panics when
//! stdout is a closed pipe (`fleetmig status | head -1`) or a full disk; here
//! the first failure is kept, later writes are skipped, and `main` decides:
//! a closed pipe ends quietly (the work and the state store are already
//! done), any other failure is an error naming stdout (exit 3). Writes to
//! stderr that fail are dropped: there is nowhere left to say so.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

static FAILURE: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes `args` and a newline to stdout, unless an earlier write failed.
pub fn line(args: fmt::Arguments<'_>) {
    write(args, true);
}

/// Writes `args` to stdout, unless an earlier write failed.
pub fn text(args: fmt::Arguments<'_>) {
    write(args, false);
}

fn write(args: fmt::Arguments<'_>, newline: bool) {
    let mut failure = FAILURE.lock().unwrap_or_else(|p| p.into_inner());
    if failure.is_some() {
        return;
    }
    let mut out = io::stdout().lock();
    let r = out.write_fmt(args).and_then(|_| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = r {
        *failure = Some(e);
    }
}

/// Writes a line to stderr; a failure is dropped.
pub fn err_line(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

/// Flushes stdout and returns the first failure of this process's writes.
pub fn failure() -> Option<io::Error> {
    let mut failure = FAILURE.lock().unwrap_or_else(|p| p.into_inner());
    if failure.is_none()
        && let Err(e) = io::stdout().lock().flush()
    {
        *failure = Some(e);
    }
    failure.take()
}

/// `println!` that never panics (see the module).
macro_rules! outln {
    () => {
        $crate::cli::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

/// `print!` that never panics.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::text(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::out::err_line(format_args!($($arg)*))
    };
}
