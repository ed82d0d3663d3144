//! The operations a host asks of a plugin, and what each returns.
//!
//! These travel as JSON through [`crate::abi::PluginMod::call`]. New optional fields carry
//! `#[serde(default)]`, so an older plugin reads a newer host's request and the other way
//! round. The semantics are those of the original Image Factory's plugin methods.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Free-form plugin parameters, as given by the user (`parameters` in the API).
pub type Parameters = Map<String, Value>;

/// One request from the host to a plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// OS plugins: install the template's OS into the body path.
    CreateBaseImage(BaseImageRequest),
    /// OS plugins: second-stage customization of a copy of a base image for a target.
    CreateTargetImage(TargetImageRequest),
    /// Cloud plugins: whether the OS plugin's target stage should run at all.
    BuilderShouldCreateTargetImage(TargetHookRequest),
    /// Cloud plugins: before the OS plugin's target stage; returns content to apply.
    BuilderWillCreateTargetImage(TargetHookRequest),
    /// Cloud plugins: after the OS plugin's target stage (format conversion).
    BuilderDidCreateTargetImage(TargetHookRequest),
    /// Cloud plugins: upload a target image to a provider.
    PushImageToProvider(PushRequest),
    /// Cloud plugins: build an image on the provider from the template (snapshot build).
    SnapshotImageOnProvider(SnapshotRequest),
    /// Cloud plugins: remove an image from the provider.
    DeleteFromProvider(DeleteRequest),
    /// OS plugins: the state of the package sources a base image build of this template
    /// would read (for the host's cache key). Plugins built before this operation
    /// answer it with an error, which the host takes as "not cacheable".
    SourceState(SourceStateRequest),
}

impl Operation {
    /// The operation's name as used in messages and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::CreateBaseImage(_) => "create_base_image",
            Operation::CreateTargetImage(_) => "create_target_image",
            Operation::BuilderShouldCreateTargetImage(_) => "builder_should_create_target_image",
            Operation::BuilderWillCreateTargetImage(_) => "builder_will_create_target_image",
            Operation::BuilderDidCreateTargetImage(_) => "builder_did_create_target_image",
            Operation::PushImageToProvider(_) => "push_image_to_provider",
            Operation::SnapshotImageOnProvider(_) => "snapshot_image_on_provider",
            Operation::DeleteFromProvider(_) => "delete_from_provider",
            Operation::SourceState(_) => "source_state",
        }
    }
}

/// Build a base image: install the OS the template describes into the body path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseImageRequest {
    pub image_id: String,
    /// The TDL template, as XML text (already validated by the host).
    pub template: String,
    #[serde(default)]
    pub parameters: Parameters,
    /// Host settings for plugins: `timeout` (seconds an install may take), `tmpdir`, and
    /// every plugin-specific key of the host's config (`accelerator`, `libvirt_uri`, ...).
    #[serde(default)]
    pub settings: Parameters,
}

/// What a finished base image build reports back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BaseImageOutcome {
    /// The ICICLE XML (installed package list), when the plugin produced one.
    #[serde(default)]
    pub icicle: Option<String>,
    /// Extra properties stored on the image.
    #[serde(default)]
    pub properties: Parameters,
}

/// Which package sources a base image build of `template` would read, and their state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceStateRequest {
    /// The TDL template, as XML text (already validated by the host).
    pub template: String,
    #[serde(default)]
    pub parameters: Parameters,
    #[serde(default)]
    pub settings: Parameters,
}

/// The state of the package sources a build reads: for each index file that decides
/// which packages (and versions) the build installs, its URL and a digest of its bytes,
/// e.g. a Debian suite's InRelease, an RPM tree's repomd.xml and .treeinfo. Two builds of
/// one template whose source states are equal install the same packages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    pub sources: Vec<SourceFile>,
}

/// One index file of a package source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub url: String,
    /// `sha256:<hex>` of the file's bytes.
    pub digest: String,
}

/// Files and commands a cloud plugin wants applied to its target image
/// (the original's `add_cloud_plugin_content`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetContent {
    #[serde(default)]
    pub files: Vec<ContentFile>,
    #[serde(default)]
    pub commands: Vec<ContentCommand>,
    /// Packages to install (from the host's target_content.xml or the cloud plugin).
    #[serde(default)]
    pub packages: Vec<String>,
}

impl TargetContent {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.commands.is_empty() && self.packages.is_empty()
    }
}

/// How a content file's or command's text is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentEncoding {
    #[default]
    Raw,
    Base64,
}

/// A file to write into the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentFile {
    pub name: String,
    #[serde(rename = "type", default)]
    pub encoding: ContentEncoding,
    pub file: String,
}

/// A command to run inside the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentCommand {
    pub name: String,
    #[serde(rename = "type", default)]
    pub encoding: ContentEncoding,
    pub command: String,
}

/// OS plugins: make the target image's body from the base image, applying `content`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetImageRequest {
    pub image_id: String,
    pub base_image_id: String,
    /// The base image's body, to be read (never modified).
    pub base_body_path: String,
    pub target: String,
    pub template: String,
    #[serde(default)]
    pub parameters: Parameters,
    /// Host settings for plugins: `timeout` (seconds an install may take), `tmpdir`, and
    /// every plugin-specific key of the host's config (`accelerator`, `libvirt_uri`, ...).
    #[serde(default)]
    pub settings: Parameters,
    #[serde(default)]
    pub content: TargetContent,
}

/// What a target stage reports back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetImageOutcome {
    #[serde(default)]
    pub icicle: Option<String>,
    #[serde(default)]
    pub properties: Parameters,
}

/// Cloud plugins: the builder_should/will/did_create_target_image hooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetHookRequest {
    pub image_id: String,
    pub base_image_id: String,
    pub base_body_path: String,
    pub target: String,
    pub template: String,
    #[serde(default)]
    pub parameters: Parameters,
    /// Host settings for plugins: `timeout` (seconds an install may take), `tmpdir`, and
    /// every plugin-specific key of the host's config (`accelerator`, `libvirt_uri`, ...).
    #[serde(default)]
    pub settings: Parameters,
    /// Content the host will have the OS plugin apply for this target (from its
    /// target_content.xml). A cloud plugin with nothing of its own to add can answer
    /// `builder_should_create_target_image` with false when this is empty, and convert
    /// straight from `base_body_path` to the target body: the base is then never copied.
    #[serde(default)]
    pub content: TargetContent,
    /// Images of the store that `parameters` name: every parameter whose value is the id of
    /// an image in the store (IndirectionCloud's `utility_image`, say) is resolved here by
    /// the host, keyed by that id. A named id absent from this map is not in the store.
    #[serde(default)]
    pub images: std::collections::BTreeMap<String, ImageRef>,
}

/// An image of the host's store, as a plugin may read it (never write it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRef {
    /// `base_image`, `target_image`, `provider_image`.
    pub kind: String,
    /// The original's status names: `NEW`, `BUILDING`, `COMPLETE`, `FAILED`, ...
    pub status: String,
    /// The image's body file.
    pub body_path: String,
    /// The template the image was built from (XML), when it has one.
    #[serde(default)]
    pub template: Option<String>,
}

/// Push an existing target image to a provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushRequest {
    pub image_id: String,
    pub target_image_id: String,
    pub target_body_path: String,
    /// The provider definition: a name, or a JSON or XML document.
    pub provider: String,
    /// The provider_credentials XML. Never log or store it.
    pub credentials: String,
    pub target: String,
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub parameters: Parameters,
    /// Host settings for plugins: `timeout` (seconds an install may take), `tmpdir`, and
    /// every plugin-specific key of the host's config (`accelerator`, `libvirt_uri`, ...).
    #[serde(default)]
    pub settings: Parameters,
}

/// Build an image directly on the provider from the template (a snapshot build).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub image_id: String,
    pub provider: String,
    /// Never log or store it.
    pub credentials: String,
    pub target: String,
    pub template: String,
    #[serde(default)]
    pub parameters: Parameters,
    /// Host settings for plugins: `timeout` (seconds an install may take), `tmpdir`, and
    /// every plugin-specific key of the host's config (`accelerator`, `libvirt_uri`, ...).
    #[serde(default)]
    pub settings: Parameters,
}

/// What a push or snapshot reports back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProviderOutcome {
    pub identifier_on_provider: String,
    #[serde(default)]
    pub provider_account_identifier: Option<String>,
    #[serde(default)]
    pub properties: Parameters,
}

impl ProviderOutcome {
    pub fn new(identifier_on_provider: impl Into<String>) -> ProviderOutcome {
        ProviderOutcome { identifier_on_provider: identifier_on_provider.into(), ..Default::default() }
    }
}

/// Remove an image from a provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub image_id: String,
    #[serde(default)]
    pub identifier_on_provider: Option<String>,
    pub provider: String,
    /// Never log or store it.
    pub credentials: String,
    pub target: String,
    #[serde(default)]
    pub parameters: Parameters,
    /// Host settings for plugins: `timeout` (seconds an install may take), `tmpdir`, and
    /// every plugin-specific key of the host's config (`accelerator`, `libvirt_uri`, ...).
    #[serde(default)]
    pub settings: Parameters,
}

impl DeleteRequest {
    /// The image's id on the provider, trimmed; `None` when absent or blank (a push that
    /// failed before the provider named the image).
    pub fn provider_id(&self) -> Option<&str> {
        self.identifier_on_provider.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
}

/// Whether the target stage should run (`builder_should_create_target_image`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ShouldCreate {
    pub create: bool,
}

/// A boolean parameter ([`parameter_as_bool`]), `default` when absent; anything that is
/// not a boolean is a one-line error naming the key.
pub fn parameter_flag(parameters: &Parameters, key: &str, default: bool) -> Result<bool, String> {
    match (parameters.get(key), parameter_as_bool(parameters, key)) {
        (None, _) => Ok(default),
        (Some(_), Some(b)) => Ok(b),
        (Some(v), None) => Err(format!("{key} must be true or false, not {v}")),
    }
}

/// A whole-number parameter from 1 to `max` (a JSON number or a string of digits),
/// `default` when absent; anything else is a one-line error naming the key.
pub fn parameter_number(parameters: &Parameters, key: &str, default: u64, max: u64) -> Result<u64, String> {
    match parameters.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("{key} must be a whole number from 1 to {max}, not {v}")),
    }
}

/// Reads a boolean parameter the way the original did: JSON booleans and numbers, or the
/// strings yes/true/1 and no/false/0 in any case. Anything else is `None`.
pub fn parameter_as_bool(parameters: &Parameters, key: &str) -> Option<bool> {
    match parameters.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|v| v != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "yes" | "true" | "1" => Some(true),
            "no" | "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}
