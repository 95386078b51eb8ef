//! Unix domain socket dials, under the dialer's timeout. They use no ports.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::stream::Stream;
use crate::error::{DialError, DialErrorKind};

/// Connects to the unix socket at `path` within `timeout`. A missing socket file counts as
/// refused: the server is not there.
pub(super) async fn connect(path: &Path, timeout: Duration) -> Result<Stream, DialError> {
    let fail = |kind: DialErrorKind, e: io::Error| {
        let error = io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        DialError::new(kind, None, Vec::new(), 1, error)
    };
    match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
        Ok(Ok(stream)) => Ok(Stream::Unix(stream)),
        Ok(Err(e)) => {
            let kind = match DialErrorKind::classify(&e, false) {
                DialErrorKind::Io if e.kind() == io::ErrorKind::NotFound => DialErrorKind::Refused,
                kind => kind,
            };
            Err(fail(kind, e))
        }
        Err(_) => Err(fail(
            DialErrorKind::Timeout,
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ),
        )),
    }
}
