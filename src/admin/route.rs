//! [`Route`]: the one list of the admin endpoint's routes, read by the handler to route a
//! request and by the `multiloop` command to build one.

use http::Method;

/// The longest pool name the admin endpoint serves, in bytes: a pool name's 128 characters
/// (`PoolBuilder::name`) of up to 4 bytes each.
pub(crate) const MAX_NAME: usize = 512;

/// One of the admin endpoint's routes. `NAME` is a pool's name, percent-encoded in the path.
///
/// ```
/// use multiloop::admin::Route;
/// assert_eq!(Route::Resize.path(Some("cache")), "/pools/cache/resize");
/// assert_eq!(Route::Show.path(Some("a b/c")), "/pools/a%20b%2Fc");
/// assert_eq!(Route::Resize.method(), http::Method::POST);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Route {
    /// `GET /pools`: every pool's name, target and status ([`PoolList`](super::wire::PoolList)).
    List,
    /// `GET /pools/NAME`: one pool's status, stats and bulkheads
    /// ([`PoolDetail`](super::wire::PoolDetail)).
    Show,
    /// `POST /pools/NAME/pause`: every get fails at once (load shedding).
    Pause,
    /// `POST /pools/NAME/resume`: undoes `pause`.
    Resume,
    /// `POST /pools/NAME/resize` with [`Resize`](super::wire::Resize): the cap on open sockets.
    Resize,
    /// `POST /pools/NAME/max-waiters` with [`MaxWaiters`](super::wire::MaxWaiters): the bound
    /// on the wait queue.
    MaxWaiters,
    /// `POST /pools/NAME/limit` with [`Limit`](super::wire::Limit): the default concurrency
    /// limit, or a bulkhead's.
    Limit,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 7] = [
        Route::List,
        Route::Show,
        Route::Pause,
        Route::Resume,
        Route::Resize,
        Route::MaxWaiters,
        Route::Limit,
    ];

    /// The route's method: `GET` for reads, `POST` for changes.
    pub fn method(self) -> Method {
        match self {
            Route::List | Route::Show => Method::GET,
            _ => Method::POST,
        }
    }

    /// The path segment after the pool's name, for a change.
    pub fn action(self) -> Option<&'static str> {
        match self {
            Route::List | Route::Show => None,
            Route::Pause => Some("pause"),
            Route::Resume => Some("resume"),
            Route::Resize => Some("resize"),
            Route::MaxWaiters => Some("max-waiters"),
            Route::Limit => Some("limit"),
        }
    }

    /// The path of this route for pool `name` (ignored by [`Route::List`]), the name
    /// percent-encoded.
    pub fn path(self, name: Option<&str>) -> String {
        let mut path = "/pools".to_owned();
        if self == Route::List {
            return path;
        }
        path.push('/');
        for b in name.unwrap_or_default().bytes() {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                path.push(b as char);
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
        if let Some(action) = self.action() {
            path.push('/');
            path.push_str(action);
        }
        path
    }

    /// The route a path names, with its pool name percent-decoded.
    pub(crate) fn parse(path: &str) -> Result<(Route, String), PathError> {
        let mut segments = Vec::new();
        for raw in path.split('/').filter(|s| !s.is_empty()) {
            if segments.len() == 3 || raw.len() > 3 * MAX_NAME {
                return Err(PathError::NoRoute);
            }
            segments.push(decode(raw)?);
        }
        let mut segments = segments.into_iter();
        match (segments.next(), segments.next(), segments.next()) {
            (Some(p), None, None) if p == "pools" => Ok((Route::List, String::new())),
            (Some(p), Some(name), None) if p == "pools" => Ok((Route::Show, name)),
            (Some(p), Some(name), Some(action)) if p == "pools" => Route::ALL
                .into_iter()
                .find(|r| r.action() == Some(action.as_str()))
                .map(|r| (r, name))
                .ok_or(PathError::NoAction),
            _ => Err(PathError::NoRoute),
        }
    }
}

/// Why a path names no route.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PathError {
    NoRoute,
    NoAction,
    BadHex,
    NotUtf8,
}

fn decode(raw: &str) -> Result<String, PathError> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail
                .get(..2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(PathError::BadHex)?;
            bytes.push(hex);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| PathError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_parses_back_from_its_path_whatever_the_name() {
        for name in ["cache", "a b/c", "ü%é", "\u{1b}]0;x\u{7}", ".."] {
            for route in Route::ALL {
                let (parsed, decoded) = Route::parse(&route.path(Some(name))).unwrap();
                assert_eq!(parsed, route, "{name:?}");
                if route != Route::List {
                    assert_eq!(decoded, name);
                }
            }
        }
        assert_eq!(Route::parse("/pools/x/explode"), Err(PathError::NoAction));
        assert_eq!(Route::parse("/etc/passwd"), Err(PathError::NoRoute));
        assert_eq!(Route::parse("/pools/%ZZ"), Err(PathError::BadHex));
        assert_eq!(Route::parse("/pools/%FF"), Err(PathError::NotUtf8));
    }

    /// Arbitrary names round-trip through a path; arbitrary paths parse or are refused, never
    /// a panic. (Random but bounded: 3,000 names, 3,000 paths.)
    #[test]
    fn arbitrary_names_and_paths() {
        let text = |max: usize| -> String {
            (0..rand::random_range(1..max))
                .map(|_| match rand::random_range(0..4) {
                    0 => char::from(rand::random_range(0u8..128)),
                    1 => ['%', '/', '.', ' '][rand::random_range(0..4)],
                    _ => char::from_u32(rand::random_range(0..0x11_0000)).unwrap_or('x'),
                })
                .collect()
        };
        for _ in 0..3_000 {
            let name = text(60);
            if name.len() > MAX_NAME {
                continue;
            }
            for route in [Route::Show, Route::Limit] {
                assert_eq!(
                    Route::parse(&route.path(Some(&name))),
                    Ok((route, name.clone()))
                );
            }
            let _ = Route::parse(&text(400));
        }
    }
}
