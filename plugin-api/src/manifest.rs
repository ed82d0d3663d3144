//! What a plugin says about itself: the equivalent of the original's `<Name>.info` file.

use serde::{Deserialize, Serialize};

/// The kind of plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginType {
    /// Builds base images for operating systems.
    Os,
    /// Builds target images for a cloud and pushes them to providers.
    Cloud,
}

/// Who looks after a plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintainer {
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub url: String,
}

/// A plugin's manifest, in the original `.info` shape plus the interface version.
///
/// `targets` follows the original: an OS plugin lists `[os, version, arch]` triples where
/// version and arch may be `null` (any); a cloud plugin lists one-element `[target]` lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: PluginType,
    pub targets: Vec<Vec<Option<String>>>,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub maintainer: Maintainer,
    #[serde(default)]
    pub license: String,
    /// The version of `imagefactory-plugin-api` the plugin was built against.
    pub api_version: String,
}

impl Manifest {
    /// A cloud plugin's manifest for the given target names.
    pub fn cloud(name: &str, version: &str, description: &str, targets: &[&str]) -> Manifest {
        Manifest {
            name: name.to_string(),
            plugin_type: PluginType::Cloud,
            targets: targets.iter().map(|t| vec![Some(t.to_string())]).collect(),
            version: version.to_string(),
            description: description.to_string(),
            maintainer: Maintainer::default(),
            license: String::new(),
            api_version: crate::API_VERSION.to_string(),
        }
    }

    /// An OS plugin's manifest for `(os, version, arch)` triples; `None` means any.
    pub fn os(
        name: &str,
        version: &str,
        description: &str,
        targets: &[(&str, Option<&str>, Option<&str>)],
    ) -> Manifest {
        Manifest {
            name: name.to_string(),
            plugin_type: PluginType::Os,
            targets: targets
                .iter()
                .map(|(os, ver, arch)| vec![Some(os.to_string()), ver.map(str::to_string), arch.map(str::to_string)])
                .collect(),
            version: version.to_string(),
            description: description.to_string(),
            maintainer: Maintainer::default(),
            license: String::new(),
            api_version: crate::API_VERSION.to_string(),
        }
    }

    /// Sets the maintainer.
    pub fn maintainer(mut self, name: &str, email: &str, url: &str) -> Manifest {
        self.maintainer = Maintainer { name: name.into(), email: email.into(), url: url.into() };
        self
    }

    /// Sets the license text.
    pub fn license(mut self, license: &str) -> Manifest {
        self.license = license.to_string();
        self
    }
}
