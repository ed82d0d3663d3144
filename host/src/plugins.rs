//! Plugin discovery, loading and target resolution.
//!
//! Every `.so` in the plugin directories is loaded through abi_stable, which checks the
//! plugin-api version and the layout of the ABI types before any plugin code runs. A
//! file that fails any step becomes an *error entry* with a one-line reason, listed like
//! the original listed `{"ERROR": ...}` plugins, and the rest keep loading.
//!
//! Loaded libraries are never unloaded (abi_stable leaks them on purpose).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::std_types::RResult;
use imagefactory_plugin_api::abi::PluginModRef;
use imagefactory_plugin_api::manifest::{Manifest, PluginType};

/// One `.so` found in a plugin directory: a loaded plugin or the reason it is not.
#[derive(Clone)]
pub struct PluginEntry {
    /// The plugin's name (from its manifest), or the file stem for error entries.
    pub id: String,
    pub path: PathBuf,
    pub manifest: Option<Manifest>,
    /// Why the plugin is not usable (one line).
    pub error: Option<String>,
}

/// What plugins were found and which target each serves.
#[derive(Default)]
pub struct PluginRegistry {
    entries: Vec<PluginEntry>,
    /// OS targets: `[os (lowercased), version, arch]` -> entry index.
    os_targets: BTreeMap<(String, Option<String>, Option<String>), usize>,
    /// Cloud targets: target name (lowercased) -> entry index.
    cloud_targets: BTreeMap<String, usize>,
}

/// A plugin chosen to serve a request.
#[derive(Debug, Clone)]
pub struct ResolvedPlugin {
    pub name: String,
    pub path: PathBuf,
}

/// Why no plugin serves a request.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no OS plugin supports {os} {version} {arch}; supported: {supported}")]
    UnknownOs { os: String, version: String, arch: String, supported: String },
    #[error("no cloud plugin supports target \"{target}\"; supported targets: {supported}")]
    UnknownTarget { target: String, supported: String },
}

/// Loads one plugin module: the abi_stable checks, then the manifest and the constructor.
/// Returns the module and its manifest, or a one-line reason.
pub fn load_module(path: &Path) -> Result<(PluginModRef, Manifest), String> {
    let header = lib_header_from_path(path).map_err(|e| describe_library_error(&e))?;
    let module = header.init_root_module::<PluginModRef>().map_err(|e| describe_library_error(&e))?;
    let manifest_json = (module.manifest())();
    let manifest: Manifest =
        serde_json::from_str(manifest_json.as_str()).map_err(|e| format!("invalid plugin manifest: {e}"))?;
    let host_major = imagefactory_plugin_api::API_VERSION.split('.').next();
    if manifest.api_version.split('.').next() != host_major {
        return Err(format!(
            "built against plugin-api {}, this host supports {}.x",
            manifest.api_version,
            host_major.unwrap_or("?")
        ));
    }
    if manifest.targets.is_empty() {
        return Err("the manifest lists no targets".to_string());
    }
    if let RResult::RErr(e) = (module.init())() {
        return Err(e.into_string());
    }
    Ok((module, manifest))
}

/// One line for an abi_stable loading error (its own Display can span many lines).
fn describe_library_error(e: &LibraryError) -> String {
    let first_line = |s: String| s.lines().next().unwrap_or("").trim().to_string();
    match e {
        LibraryError::OpenError { err, .. } => {
            format!("cannot load as a shared library: {}", first_line(err.to_string()))
        }
        LibraryError::GetSymbolError { .. } => {
            "not an imagefactory plugin (no plugin root module exported)".to_string()
        }
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => format!(
            "built against an incompatible plugin-api {actual_version} (this host loads {}.x)",
            expected_version.major
        ),
        LibraryError::InvalidAbiHeader(_) => "built with an incompatible abi_stable version".to_string(),
        LibraryError::AbiInstability(_) => {
            "built against an incompatible plugin-api (the ABI types' layout differs)".to_string()
        }
        LibraryError::Many(list) => list.iter().next().map(describe_library_error).unwrap_or_default(),
        other => format!("cannot load plugin: {}", first_line(other.to_string())),
    }
}

fn os_key(os: &str, version: Option<&str>, arch: Option<&str>) -> (String, Option<String>, Option<String>) {
    (os.to_ascii_lowercase(), version.map(str::to_string), arch.map(str::to_string))
}

impl PluginRegistry {
    /// Scans the directories (in order; files within one sorted by name) and loads every
    /// `.so`. A missing directory is logged and skipped.
    pub fn discover(dirs: &[PathBuf]) -> PluginRegistry {
        let mut registry = PluginRegistry::default();
        for dir in dirs {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "so")).collect(),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "plugin directory not readable; no plugins loaded from it");
                    continue;
                }
            };
            files.sort();
            for file in files {
                registry.add(&file);
            }
        }
        registry
    }

    fn add(&mut self, path: &Path) {
        let stem =
            path.file_stem().map(|s| s.to_string_lossy().trim_start_matches("lib").to_string()).unwrap_or_default();
        let started = std::time::Instant::now();
        let entry = match load_module(path) {
            Ok((_module, manifest)) => self.register(path, manifest),
            Err(reason) => PluginEntry { id: stem, path: path.to_path_buf(), manifest: None, error: Some(reason) },
        };
        match &entry.error {
            Some(reason) => tracing::warn!(plugin = %path.display(), %reason, "plugin not loaded"),
            None => {
                tracing::info!(plugin = %entry.id, path = %path.display(), elapsed_us = started.elapsed().as_micros() as u64, "plugin loaded")
            }
        }
        self.entries.push(entry);
    }

    /// Registers a loaded plugin's targets; a target another plugin holds makes this one
    /// an error entry (first come, first served, as the original).
    fn register(&mut self, path: &Path, manifest: Manifest) -> PluginEntry {
        let index = self.entries.len();
        let mut entry =
            PluginEntry { id: manifest.name.clone(), path: path.to_path_buf(), manifest: None, error: None };
        if let Some(other) = self.entries.iter().find(|e| e.error.is_none() && e.id == manifest.name) {
            entry.error =
                Some(format!("a plugin named {} is already loaded from {}", manifest.name, other.path.display()));
            entry.manifest = Some(manifest);
            return entry;
        }
        let mut os_keys = Vec::new();
        let mut cloud_keys = Vec::new();
        for target in &manifest.targets {
            let shown = target.iter().map(|t| t.as_deref().unwrap_or("any")).collect::<Vec<_>>().join(" ");
            let taken = match manifest.plugin_type {
                PluginType::Os => {
                    let Some(Some(os)) = target.first() else {
                        entry.error = Some("an OS target without an OS name".to_string());
                        break;
                    };
                    let key = os_key(
                        os,
                        target.get(1).cloned().flatten().as_deref(),
                        target.get(2).cloned().flatten().as_deref(),
                    );
                    let holder = self.os_targets.get(&key).copied();
                    os_keys.push(key);
                    holder
                }
                PluginType::Cloud => {
                    let Some(Some(name)) = target.first() else {
                        entry.error = Some("a cloud target without a name".to_string());
                        break;
                    };
                    let key = name.to_ascii_lowercase();
                    let holder = self.cloud_targets.get(&key).copied();
                    cloud_keys.push(key);
                    holder
                }
            };
            if let Some(holder) = taken {
                entry.error = Some(format!(
                    "Did not register {} for {shown}. Plugin {} already registered.",
                    manifest.name, self.entries[holder].id
                ));
                break;
            }
        }
        if entry.error.is_none() {
            for k in os_keys {
                self.os_targets.insert(k, index);
            }
            for k in cloud_keys {
                self.cloud_targets.insert(k, index);
            }
        }
        entry.manifest = Some(manifest);
        entry
    }

    /// Every entry, loaded or not, in discovery order.
    pub fn entries(&self) -> &[PluginEntry] {
        &self.entries
    }

    /// The entry with this id (the plugin's name).
    pub fn entry(&self, id: &str) -> Option<&PluginEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The usable plugin with this name (a worker resolving a queued job's plugins).
    pub fn loaded(&self, name: &str) -> Option<ResolvedPlugin> {
        let i = self.entries.iter().position(|e| e.id == name && e.error.is_none() && e.manifest.is_some())?;
        Some(self.resolved(i))
    }

    /// The names of every usable plugin.
    pub fn loaded_names(&self) -> Vec<String> {
        self.entries.iter().filter(|e| e.error.is_none() && e.manifest.is_some()).map(|e| e.id.clone()).collect()
    }

    fn resolved(&self, index: usize) -> ResolvedPlugin {
        let e = &self.entries[index];
        ResolvedPlugin { name: e.id.clone(), path: e.path.clone() }
    }

    /// The OS plugin for `(os, version, arch)`: tries the exact triple, then any arch,
    /// then any version and arch, as the original.
    pub fn os_plugin(&self, os: &str, version: &str, arch: &str) -> Result<ResolvedPlugin, ResolveError> {
        let candidates =
            [os_key(os, Some(version), Some(arch)), os_key(os, Some(version), None), os_key(os, None, None)];
        for key in &candidates {
            if let Some(&i) = self.os_targets.get(key) {
                return Ok(self.resolved(i));
            }
        }
        let supported = self.supported_os();
        Err(ResolveError::UnknownOs {
            os: os.into(),
            version: version.into(),
            arch: arch.into(),
            supported: if supported.is_empty() { "none (no OS plugin is loaded)".into() } else { supported },
        })
    }

    /// The cloud plugin for a target name.
    pub fn cloud_plugin(&self, target: &str) -> Result<ResolvedPlugin, ResolveError> {
        if let Some(&i) = self.cloud_targets.get(&target.to_ascii_lowercase()) {
            return Ok(self.resolved(i));
        }
        let supported = self.supported_targets();
        Err(ResolveError::UnknownTarget {
            target: target.into(),
            supported: if supported.is_empty() { "none (no cloud plugin is loaded)".into() } else { supported },
        })
    }

    fn supported_os(&self) -> String {
        let mut list: Vec<String> = Vec::new();
        for entry in self.entries.iter().filter(|e| e.error.is_none()) {
            let Some(m) = entry.manifest.as_ref().filter(|m| m.plugin_type == PluginType::Os) else { continue };
            for t in &m.targets {
                list.push(t.iter().map(|v| v.as_deref().unwrap_or("any")).collect::<Vec<_>>().join(" "));
            }
        }
        list.join(", ")
    }

    fn supported_targets(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        for entry in self.entries.iter().filter(|e| e.error.is_none()) {
            let Some(m) = entry.manifest.as_ref().filter(|m| m.plugin_type == PluginType::Cloud) else { continue };
            names.extend(m.targets.iter().filter_map(|t| t.first().cloned().flatten()));
        }
        names.join(", ")
    }
}
