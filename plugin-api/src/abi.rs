//! The types that cross the library boundary.

// `#[sabi_trait]` expands to impls inside a generated const, which newer rustc flags.
#![allow(non_local_definitions)]
//!
//! Only these are laid out for the C ABI; abi_stable checks their layout when a plugin
//! is loaded. Requests and results are JSON strings (see [`crate::ops`]): adding a field
//! or an operation then changes no layout, which is what lets 1.x plugins and hosts mix.

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::{RRef, VersionStrings},
    std_types::{RResult, RStr, RString},
    StableAbi,
};

/// What the host lends a plugin for the length of one operation.
///
/// Implemented by the host; a plugin reaches it through [`crate::sdk::Host`].
#[sabi_trait]
pub trait HostServices {
    /// Sets the one-line description of the current sub-task (`status_detail.activity`).
    fn report_activity(&self, activity: RStr<'_>);

    /// Sets `percent_complete` (0 to 100) of the image being built.
    fn report_percent(&self, percent: u8);

    /// Appends a line to the image's own build log. `level` is a [`crate::sdk::LogLevel`].
    fn log(&self, level: u8, line: RStr<'_>);

    /// Whether the build was cancelled; long operations should poll this and stop.
    fn is_cancelled(&self) -> bool;

    /// The path the image's body (the disk) must be written to.
    fn body_path(&self) -> RString;

    /// A private working directory for this operation, removed by the host afterwards.
    #[sabi(last_prefix_field)]
    fn work_dir(&self) -> RString;
}

/// A borrowed host-services object, valid for one call.
pub type HostServicesRef<'a> = HostServices_TO<'a, RRef<'a, ()>>;

/// The root module every plugin exports (through [`crate::export_plugin!`]).
///
/// Fields are never removed or reordered; new ones are appended after the last prefix
/// field, so a host can load plugins built against a newer 1.x of this crate.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The plugin's [`crate::manifest::Manifest`] as JSON.
    pub manifest: extern "C" fn() -> RString,

    /// Constructs the plugin object. Called once per process before any operation;
    /// an error (a one-line message) means the plugin cannot be used.
    pub init: extern "C" fn() -> RResult<(), RString>,

    /// Runs one operation: `request` is an [`crate::ops::Operation`] as JSON; the result
    /// is the operation's outcome as JSON, or a [`crate::sdk::PluginError`] as JSON.
    #[sabi(last_prefix_field)]
    pub call: extern "C" fn(request: RStr<'_>, host: HostServicesRef<'_>) -> RResult<RString, RString>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "imagefactory_plugin";
    const NAME: &'static str = "imagefactory_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The symbol name abi_stable looks up in a plugin; [`crate::export_plugin!`] defines it.
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

#[cfg(test)]
mod tests {
    #[test]
    fn root_module_symbol_matches_abi_stable() {
        assert_eq!(super::ROOT_MODULE_SYMBOL, abi_stable::library::ROOT_MODULE_LOADER_NAME);
    }
}
