//! The dialer layer: which source address to bind ([`SourceSet`], [`Strategy`]), socket options
//! (`sockopt`, the crate's only `unsafe`), the platform probe, the quarantine of exhausted
//! sources, and [`Dialer`], through which every dial of the crate goes, TCP or unix. It imports
//! nothing from the layers above it.

mod attempt;
mod builder;
mod config;
mod dialer;
mod probe;
mod quarantine;
#[cfg(feature = "hyper")]
pub mod service;
mod sockopt;
mod source;
mod stream;
mod target;
#[cfg(unix)]
mod unix;

pub use builder::DialerBuilder;
pub use config::DialerConfig;
pub use dialer::Dialer;
pub use probe::Fallback;
pub use source::{SourceSet, Strategy};
pub use stream::Stream;
pub use target::{IntoTarget, Target};
