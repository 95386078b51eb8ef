//! [`ConfigError`] and the bounds every builder checks its options against.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

/// An invalid configuration, naming the builder option at fault.
///
/// ```
/// let err = multiloop::Dialer::builder().max_attempts(0).build().unwrap_err();
/// assert_eq!(err.option(), "max_attempts");
/// assert!(err.to_string().contains("max_attempts"));
/// ```
#[derive(Debug)]
pub struct ConfigError {
    option: &'static str,
    message: String,
    source: Option<io::Error>,
}

impl ConfigError {
    /// The longest duration any option takes, in [`PoolConfig`](crate::PoolConfig),
    /// [`DialerConfig`](crate::DialerConfig) and the runtime switches: 24 hours. Longer
    /// timeouts hide overload rather than bound it, and lifetimes past a day are what `None` is
    /// for.
    ///
    /// It lives here, beside the error every option past it returns, because one bound serves
    /// every options struct: a copy on each would be two names for one number.
    pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

    pub(crate) fn new(option: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            option,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: io::Error) -> Self {
        self.source = Some(source);
        self
    }

    /// The I/O error behind it, if any (shown in `Display`, so not `source()`).
    pub(crate) fn io_source(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }

    /// The builder option at fault, as named in the builder (for example `"sources"`,
    /// `"connect_timeout"` or `"local_port_range"`).
    pub fn option(&self) -> &'static str {
        self.option
    }

    /// What is wrong and what to change, without the option name.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.option, self.message)?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

/// The underlying I/O error, if any, is part of `Display`, so `source()` is `None`: a chain
/// printer shows it once.
impl StdError for ConfigError {}

/// Checks a duration option: greater than zero unless `zero_ok`, at most
/// [`ConfigError::MAX_DURATION`].
pub(crate) fn check_duration(
    option: &'static str,
    d: Duration,
    zero_ok: bool,
) -> Result<(), ConfigError> {
    if d.is_zero() && !zero_ok {
        return Err(ConfigError::new(
            option,
            "must be greater than zero (and at most 24 h)",
        ));
    }
    if d > ConfigError::MAX_DURATION {
        return Err(ConfigError::new(
            option,
            format!("{d:?} is above the bound of 24 h"),
        ));
    }
    Ok(())
}

/// Checks a count option against its bounds, inclusive.
pub(crate) fn check_count(
    option: &'static str,
    n: usize,
    min: usize,
    max: usize,
    why_min: &str,
) -> Result<(), ConfigError> {
    if n < min {
        return Err(ConfigError::new(
            option,
            format!("{n} is too small: it must be at least {min}{why_min}"),
        ));
    }
    if n > max {
        return Err(ConfigError::new(
            option,
            format!("{n} is above the bound of {max}"),
        ));
    }
    Ok(())
}
