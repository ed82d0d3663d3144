//! The errors of a Fedora or RHEL build. Each message is the one line a user sees in the
//! image's `status_detail.error`; details go to the build log.

#[derive(Debug, thiserror::Error)]
pub enum RedHatError {
    #[error("the {plugin} plugin does not build '{os}': it builds {supported}")]
    WrongOs { os: String, plugin: &'static str, supported: String },

    #[error("unsupported {distro} version '{version}': supported are {supported}")]
    UnsupportedVersion { distro: &'static str, version: String, supported: String },

    #[error("unsupported architecture '{0}': supported is x86_64")]
    UnsupportedArch(String),

    #[error("cannot read the template: {0}")]
    Template(String),

    #[error("invalid parameter {name}: {reason}")]
    Parameter { name: &'static str, reason: String },

    #[error("invalid setting {name} in the imagefactory configuration: {reason}")]
    Setting { name: &'static str, reason: String },

    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },

    #[error("the install tree at {url} has no kernel and initrd: {reason}")]
    NoBootFiles { url: String, reason: String },

    #[error("checksum mismatch for {iso}: {kind} is {actual}, the checksum file says {expected}")]
    ChecksumMismatch { iso: String, kind: &'static str, actual: String, expected: String },

    #[error("the checksum file {url} has no entry for {iso}")]
    ChecksumMissing { url: String, iso: String },

    #[error("cannot remaster the ISO: {0}")]
    Remaster(String),

    #[error("{0} is not installed (Debian package {1}; run scripts/setup.sh)")]
    MissingTool(&'static str, &'static str),

    #[error("the install timed out after {seconds} s{files}")]
    Timeout { seconds: u64, files: String },

    #[error("no disk or network activity for {seconds} s, the install was stopped{files}")]
    Inactive { seconds: u64, files: String },

    #[error("the installer crashed: the guest stopped before the install finished{files}")]
    InstallerCrashed { files: String },

    #[error("template {kind} '{name}' failed with exit status {status} in the installer's %post")]
    CommandFailed { kind: &'static str, name: String, status: String },

    #[error("the ICICLE extra command printed {lines} lines for {packages} packages")]
    IcicleMismatch { lines: usize, packages: usize },

    #[error("cannot run the installer guest: {0}")]
    Guest(String),

    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cancelled")]
    Cancelled,
}

impl RedHatError {
    pub fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> RedHatError {
        RedHatError::Io { what, path: path.display().to_string(), source }
    }
}
