//! The plugin interface of imagefactory, and the SDK plugin authors build against.
//!
//! An imagefactory plugin is a `cdylib` that teaches the host one operating system
//! (an *OS plugin*: it turns a template into a base image) or one cloud (a *cloud
//! plugin*: it turns a base image into a target image and pushes that to a provider).
//! The host finds plugins by scanning directories for `.so` files and loads them with
//! [`abi_stable`], which checks before any plugin code runs that the plugin was built
//! against a compatible version of this crate.
//!
//! This crate has four parts:
//! - [`abi`]: the few `#[repr(C)]` types that actually cross the library boundary: the
//!   root module every plugin exports and the [`abi::HostServices`] object the host lends
//!   to a plugin for one call. Everything else travels as JSON inside them, so the binary
//!   layout stays small and can stay frozen for the whole 1.x series.
//! - [`manifest`] and [`ops`]: the data that travels as JSON: what a plugin is, and the
//!   requests and outcomes of each operation.
//! - [`sdk`]: what a plugin author writes against: the [`sdk::OsPlugin`] and
//!   [`sdk::CloudPlugin`] traits, the [`sdk::Host`] handle, [`sdk::PluginError`], and the
//!   [`export_plugin!`] macro that turns a trait implementation into a loadable plugin,
//!   catching panics at every entry point.
//! - [`tdl`]: the template (TDL) library, so the host and every plugin read templates
//!   with the same code and report the same errors.
//!
//! # A minimal plugin
//!
//! ```ignore
//! use imagefactory_plugin_api::prelude::*;
//!
//! struct Hello;
//!
//! impl CloudPlugin for Hello {
//!     fn push_image_to_provider(&self, host: &Host, req: PushRequest)
//!         -> Result<ProviderOutcome, PluginError> {
//!         host.activity("Pretending to upload");
//!         host.percent(100);
//!         Ok(ProviderOutcome::new(format!("hello-{}", req.image_id)))
//!     }
//! }
//!
//! fn manifest() -> Manifest {
//!     Manifest::cloud("Hello", "1.0", "A plugin that pushes nowhere", &["hello"])
//! }
//!
//! imagefactory_plugin_api::export_plugin! {
//!     manifest: manifest,
//!     cloud: || Ok(Hello),
//! }
//! ```
//!
//! The plugin's `Cargo.toml` needs `crate-type = ["cdylib"]` and this crate as its only
//! imagefactory dependency. See the README beside this crate for the compatibility promise.

pub mod abi;
pub mod manifest;
pub mod ops;
pub mod sbom;
pub mod sdk;
pub mod tdl;
pub mod xml;

/// The version of the plugin interface this crate defines. A plugin records the version
/// it was built against in its manifest; the loader compares it with the host's.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything a plugin author usually needs, in one `use`.
pub mod prelude {
    pub use crate::manifest::{Maintainer, Manifest, PluginType};
    pub use crate::ops::*;
    pub use crate::sdk::{CloudPlugin, Host, LogLevel, OsPlugin, PluginError};
}

/// Re-exports used by [`export_plugin!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable;
    pub use serde_json;
}
