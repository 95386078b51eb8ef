//! Output that never panics: a closed stdout or stderr (a pipe into `head -c 1`) ends nothing
//! early and the command exits with the status it would have had.

use std::io::Write;

/// Writes `text` to stdout, ignoring a closed pipe.
pub(crate) fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes `text` to stderr, ignoring a closed pipe.
pub(crate) fn stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `println!` to stdout without the panic on a closed pipe.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` without the panic on a closed pipe.
macro_rules! complain {
    ($($arg:tt)*) => {
        $crate::out::stderr(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {complain, say};
