//! What a plugin author writes against: the plugin traits, the host handle, the error
//! type, and the glue that [`crate::export_plugin!`] expands to.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::OnceLock;

use abi_stable::std_types::{RResult, RStr, RString};
use serde::{Deserialize, Serialize};

use crate::abi::HostServicesRef;
use crate::manifest::Manifest;
use crate::ops::*;

/// A failed plugin operation.
///
/// `message` is one line a UI can show ("EC2 connection failed due to bad user
/// credentials"); the host prefixes it with the current activity. `chain` holds the
/// underlying causes, outermost first, for the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginError {
    pub message: String,
    #[serde(default)]
    pub chain: Vec<String>,
}

impl PluginError {
    /// An error with a one-line message (newlines are folded into spaces).
    pub fn new(message: impl Into<String>) -> PluginError {
        PluginError { message: one_line(&message.into()), chain: Vec::new() }
    }

    /// An error with a one-line message caused by `source`, whose whole chain is kept.
    pub fn with_source(message: impl Into<String>, source: &(dyn std::error::Error + 'static)) -> PluginError {
        let mut chain = Vec::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(e) = next {
            chain.push(e.to_string());
            next = e.source();
        }
        PluginError { message: one_line(&message.into()), chain }
    }

    /// The operation is not implemented by this plugin.
    pub fn unsupported(operation: &str, plugin: &str) -> PluginError {
        PluginError::new(format!("{plugin} does not support {operation}"))
    }

    /// The build was cancelled while the plugin worked.
    pub fn cancelled() -> PluginError {
        PluginError::new("cancelled")
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for cause in &self.chain {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PluginError {}

impl From<std::io::Error> for PluginError {
    fn from(e: std::io::Error) -> PluginError {
        PluginError::new(e.to_string())
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Severity of a build-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LogLevel {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl LogLevel {
    pub fn from_u8(v: u8) -> LogLevel {
        match v {
            1 => LogLevel::Error,
            2 => LogLevel::Warn,
            3 => LogLevel::Info,
            _ => LogLevel::Debug,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
        }
    }
}

/// The host, as a plugin sees it during one operation.
pub struct Host<'a> {
    services: HostServicesRef<'a>,
}

impl<'a> Host<'a> {
    #[doc(hidden)]
    pub fn __new(services: HostServicesRef<'a>) -> Host<'a> {
        Host { services }
    }

    /// Sets the one-line description of what the plugin is doing now.
    pub fn activity(&self, activity: &str) {
        self.services.report_activity(RStr::from(activity));
    }

    /// Sets the image's percent complete (clamped to 100).
    pub fn percent(&self, percent: u8) {
        self.services.report_percent(percent.min(100));
    }

    /// Appends a line to the image's build log.
    pub fn log(&self, level: LogLevel, line: &str) {
        self.services.log(level as u8, RStr::from(line));
    }

    pub fn info(&self, line: &str) {
        self.log(LogLevel::Info, line);
    }

    pub fn warn(&self, line: &str) {
        self.log(LogLevel::Warn, line);
    }

    pub fn debug(&self, line: &str) {
        self.log(LogLevel::Debug, line);
    }

    /// Whether the build was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.services.is_cancelled()
    }

    /// `Err(PluginError::cancelled())` when the build was cancelled: use with `?`.
    pub fn check_cancelled(&self) -> Result<(), PluginError> {
        if self.is_cancelled() {
            Err(PluginError::cancelled())
        } else {
            Ok(())
        }
    }

    /// Where the image's body must be written.
    pub fn body_path(&self) -> PathBuf {
        PathBuf::from(self.services.body_path().as_str())
    }

    /// A private working directory for this operation.
    pub fn work_dir(&self) -> PathBuf {
        PathBuf::from(self.services.work_dir().as_str())
    }

    /// A directory whose files the host keeps as files of the image once the operation
    /// ends, on success and on failure alike: a guest's serial console log, a screenshot
    /// of a failed install. The host serves them at
    /// `GET /imagefactory/<collection>/<id>/files/<name>`; a one-line error can name them.
    ///
    /// It is `<work dir>/files`, created here; names must be plain file names (no `/`).
    pub fn files_dir(&self) -> PathBuf {
        let dir = self.work_dir().join(FILES_DIR_NAME);
        // A failure here shows up when the plugin writes into it, with the path named.
        let _ = std::fs::create_dir_all(&dir);
        dir
    }
}

/// The name of the directory under an operation's work dir whose files the host keeps
/// (see [`Host::files_dir`]).
pub const FILES_DIR_NAME: &str = "files";

/// An OS plugin: installs operating systems into base images.
///
/// Methods block; the host runs them in a worker process of their own, so a plugin may
/// take as long as the install takes, and a crash fails only its own build.
pub trait OsPlugin: Send + Sync + 'static {
    /// Installs the OS of `req.template` into [`Host::body_path`].
    fn create_base_image(&self, host: &Host, req: BaseImageRequest) -> Result<BaseImageOutcome, PluginError>;

    /// Makes the target image's body from the base image and applies `req.content`.
    ///
    /// The default copies the base body unchanged when there is no content to apply.
    fn create_target_image(&self, host: &Host, req: TargetImageRequest) -> Result<TargetImageOutcome, PluginError> {
        if !req.content.is_empty() {
            return Err(PluginError::new(format!("this OS plugin cannot apply target content for {}", req.target)));
        }
        host.activity("Copying base image");
        std::fs::copy(&req.base_body_path, host.body_path())
            .map_err(|e| PluginError::with_source("copying the base image failed", &e))?;
        Ok(TargetImageOutcome::default())
    }

    /// The state of the package sources a build of `req.template` would read, or None
    /// when the plugin cannot tell (the default): the host then never serves such a
    /// build from its cache, since it cannot know whether the sources moved on.
    fn source_state(&self, _host: &Host, _req: SourceStateRequest) -> Result<Option<SourceState>, PluginError> {
        Ok(None)
    }
}

/// A cloud plugin: turns base images into target images and pushes them to providers.
///
/// Every method has a default matching the original's behaviour when a plugin lacked it.
pub trait CloudPlugin: Send + Sync + 'static {
    /// `false` skips the OS plugin's target stage and `builder_did_create_target_image`
    /// (for plugins that do all their work in `builder_will_create_target_image`).
    fn builder_should_create_target_image(&self, _host: &Host, _req: TargetHookRequest) -> Result<bool, PluginError> {
        Ok(true)
    }

    /// Runs before the OS plugin's target stage; returns content the OS plugin applies.
    fn builder_will_create_target_image(
        &self,
        _host: &Host,
        _req: TargetHookRequest,
    ) -> Result<TargetContent, PluginError> {
        Ok(TargetContent::default())
    }

    /// Runs after the OS plugin's target stage; usually converts the body's format.
    fn builder_did_create_target_image(&self, _host: &Host, _req: TargetHookRequest) -> Result<(), PluginError> {
        Ok(())
    }

    /// Uploads a target image to a provider.
    fn push_image_to_provider(&self, _host: &Host, _req: PushRequest) -> Result<ProviderOutcome, PluginError> {
        Err(PluginError::new("this cloud does not support pushing images"))
    }

    /// Builds an image on the provider from the template.
    fn snapshot_image_on_provider(&self, _host: &Host, _req: SnapshotRequest) -> Result<ProviderOutcome, PluginError> {
        Err(PluginError::new("this cloud does not support snapshot builds"))
    }

    /// Removes an image from the provider.
    fn delete_from_provider(&self, _host: &Host, _req: DeleteRequest) -> Result<(), PluginError> {
        Err(PluginError::new("this cloud does not support deleting images from the provider"))
    }
}

/// A constructed plugin object, either kind.
#[doc(hidden)]
pub enum PluginObject {
    Os(Box<dyn OsPlugin>),
    Cloud(Box<dyn CloudPlugin>),
}

/// Where [`crate::export_plugin!`] keeps the plugin object: built once per process.
#[doc(hidden)]
pub type PluginCell = OnceLock<Result<PluginObject, String>>;

#[doc(hidden)]
pub fn __os<T: OsPlugin>(ctor: impl FnOnce() -> Result<T, PluginError>) -> Result<PluginObject, PluginError> {
    ctor().map(|p| PluginObject::Os(Box::new(p)))
}

#[doc(hidden)]
pub fn __cloud<T: CloudPlugin>(ctor: impl FnOnce() -> Result<T, PluginError>) -> Result<PluginObject, PluginError> {
    ctor().map(|p| PluginObject::Cloud(Box::new(p)))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

fn error_json(e: &PluginError) -> RString {
    serde_json::to_string(e).unwrap_or_else(|_| e.message.clone()).into()
}

/// Entry point behind `PluginMod::manifest`. A panic yields an empty string, which the
/// host reports as an invalid manifest.
#[doc(hidden)]
pub fn __manifest_entry(manifest: fn() -> Manifest) -> RString {
    match catch_unwind(manifest) {
        Ok(m) => serde_json::to_string(&m).unwrap_or_default().into(),
        Err(_) => RString::new(),
    }
}

fn plugin_object(cell: &PluginCell, ctor: fn() -> Result<PluginObject, PluginError>) -> &Result<PluginObject, String> {
    cell.get_or_init(|| match catch_unwind(ctor) {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(e)) => Err(format!("plugin constructor failed: {}", e.message)),
        Err(p) => Err(format!("plugin constructor panicked: {}", panic_message(p.as_ref()))),
    })
}

/// Entry point behind `PluginMod::init`.
#[doc(hidden)]
pub fn __init_entry(cell: &PluginCell, ctor: fn() -> Result<PluginObject, PluginError>) -> RResult<(), RString> {
    match plugin_object(cell, ctor) {
        Ok(_) => RResult::ROk(()),
        Err(e) => RResult::RErr(e.clone().into()),
    }
}

/// Entry point behind `PluginMod::call`: decodes the request, runs the operation with
/// panics caught, and encodes the outcome.
#[doc(hidden)]
pub fn __call_entry(
    cell: &PluginCell,
    ctor: fn() -> Result<PluginObject, PluginError>,
    request: RStr<'_>,
    services: HostServicesRef<'_>,
) -> RResult<RString, RString> {
    let obj = match plugin_object(cell, ctor) {
        Ok(obj) => obj,
        Err(e) => return RResult::RErr(error_json(&PluginError::new(e.clone()))),
    };
    let host = Host::__new(services);
    let outcome = catch_unwind(AssertUnwindSafe(|| dispatch(obj, request.as_str(), &host)));
    match outcome {
        Ok(Ok(json)) => RResult::ROk(json.into()),
        Ok(Err(e)) => RResult::RErr(error_json(&e)),
        Err(p) => {
            RResult::RErr(error_json(&PluginError::new(format!("plugin panicked: {}", panic_message(p.as_ref())))))
        }
    }
}

fn to_json<T: Serialize>(value: T) -> Result<String, PluginError> {
    serde_json::to_string(&value).map_err(|e| PluginError::new(format!("cannot encode the plugin's result: {e}")))
}

fn dispatch(obj: &PluginObject, request: &str, host: &Host) -> Result<String, PluginError> {
    let op: Operation = serde_json::from_str(request)
        .map_err(|e| PluginError::new(format!("the plugin cannot read the host's request: {e}")))?;
    match (obj, op) {
        (PluginObject::Os(p), Operation::CreateBaseImage(r)) => to_json(p.create_base_image(host, r)?),
        (PluginObject::Os(p), Operation::CreateTargetImage(r)) => to_json(p.create_target_image(host, r)?),
        (PluginObject::Os(p), Operation::SourceState(r)) => to_json(p.source_state(host, r)?),
        (PluginObject::Cloud(p), Operation::BuilderShouldCreateTargetImage(r)) => {
            to_json(ShouldCreate { create: p.builder_should_create_target_image(host, r)? })
        }
        (PluginObject::Cloud(p), Operation::BuilderWillCreateTargetImage(r)) => {
            to_json(p.builder_will_create_target_image(host, r)?)
        }
        (PluginObject::Cloud(p), Operation::BuilderDidCreateTargetImage(r)) => {
            p.builder_did_create_target_image(host, r)?;
            to_json(())
        }
        (PluginObject::Cloud(p), Operation::PushImageToProvider(r)) => to_json(p.push_image_to_provider(host, r)?),
        (PluginObject::Cloud(p), Operation::SnapshotImageOnProvider(r)) => {
            to_json(p.snapshot_image_on_provider(host, r)?)
        }
        (PluginObject::Cloud(p), Operation::DeleteFromProvider(r)) => {
            p.delete_from_provider(host, r)?;
            to_json(())
        }
        (PluginObject::Os(_), op) => Err(PluginError::new(format!("an OS plugin cannot run {}", op.name()))),
        (PluginObject::Cloud(_), op) => Err(PluginError::new(format!("a cloud plugin cannot run {}", op.name()))),
    }
}

/// Exports a plugin: its manifest function and the constructor of its OS or cloud object.
///
/// ```ignore
/// imagefactory_plugin_api::export_plugin! { manifest: my_manifest, os: MyOs::new }
/// imagefactory_plugin_api::export_plugin! { manifest: my_manifest, cloud: || Ok(MyCloud) }
/// ```
///
/// The constructor returns `Result<T, PluginError>` and runs once per process. Every
/// entry point catches panics, so a panicking plugin fails its operation instead of
/// aborting the host.
#[macro_export]
macro_rules! export_plugin {
    (manifest: $manifest:expr, os: $ctor:expr $(,)?) => {
        $crate::export_plugin!(@export $manifest, || $crate::sdk::__os($ctor));
    };
    (manifest: $manifest:expr, cloud: $ctor:expr $(,)?) => {
        $crate::export_plugin!(@export $manifest, || $crate::sdk::__cloud($ctor));
    };
    (@export $manifest:expr, $make:expr) => {
        static __IMAGEFACTORY_PLUGIN_CELL: $crate::sdk::PluginCell = $crate::sdk::PluginCell::new();

        fn __imagefactory_make() -> ::std::result::Result<$crate::sdk::PluginObject, $crate::sdk::PluginError> {
            ($make)()
        }

        extern "C" fn __imagefactory_manifest() -> $crate::__private::abi_stable::std_types::RString {
            $crate::sdk::__manifest_entry($manifest)
        }

        extern "C" fn __imagefactory_init() -> $crate::__private::abi_stable::std_types::RResult<
            (),
            $crate::__private::abi_stable::std_types::RString,
        > {
            $crate::sdk::__init_entry(&__IMAGEFACTORY_PLUGIN_CELL, __imagefactory_make)
        }

        extern "C" fn __imagefactory_call(
            request: $crate::__private::abi_stable::std_types::RStr<'_>,
            host: $crate::abi::HostServicesRef<'_>,
        ) -> $crate::__private::abi_stable::std_types::RResult<
            $crate::__private::abi_stable::std_types::RString,
            $crate::__private::abi_stable::std_types::RString,
        > {
            $crate::sdk::__call_entry(&__IMAGEFACTORY_PLUGIN_CELL, __imagefactory_make, request, host)
        }

        fn __imagefactory_root_module() -> $crate::abi::PluginModRef {
            use $crate::__private::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::abi::PluginMod {
                manifest: __imagefactory_manifest,
                init: __imagefactory_init,
                call: __imagefactory_call,
            }
            .leak_into_prefix()
        }

        /// The header abi_stable looks for (what `#[export_root_module]` would generate,
        /// written out so plugin crates need no direct abi_stable dependency).
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::abi_stable::library::LibHeader = {
            extern "C" fn _sabi_erased_module() -> $crate::__private::abi_stable::library::RootModuleResult {
                $crate::__private::abi_stable::library::__call_root_module_loader(__imagefactory_root_module)
            }
            type __SabiModule = <$crate::abi::PluginModRef as $crate::__private::abi_stable::library::IntoRootModuleResult>::Module;
            // SAFETY: `_sabi_erased_module` returns the root module of type `__SabiModule`,
            // which is what `from_constructor` requires; this is the exact expansion of
            // abi_stable's `#[export_root_module]`.
            unsafe {
                $crate::__private::abi_stable::library::LibHeader::from_constructor::<__SabiModule>(
                    _sabi_erased_module,
                    $crate::__private::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}
