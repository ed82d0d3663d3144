//! The imagefactory host: the daemon `imagefactoryd` and the command `imagefactory`.
//!
//! Modules, each with one job:
//! - [`config`]: the configuration file.
//! - [`image`]: the image model (kinds, statuses, stored metadata).
//! - [`store`]: the embedded file store of `.meta` and `.body` files.
//! - [`plugins`]: plugin discovery, loading and target resolution.
//! - [`worker`]: running one plugin operation in a process of its own.
//! - [`engine`]: the life of images: creating, scheduling, building, cancelling, deleting.
//! - [`api`]: the REST API v2 over the engine.
//! - [`cli`]: the `imagefactory` command over the engine.
//! - [`watch`]: `imagefactory watch`, a client of a running daemon's event stream.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod image;
pub mod plugins;
pub mod setup;
pub mod store;
pub mod template;
pub mod watch;
pub mod worker;

/// The version reported by the API root and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
