//! The Debian plugin's errors. Each message is the one line a user sees in the image's
//! status; the host prefixes it with the activity that failed.

use diskimage::DiskError;

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("unsupported Debian version '{0}': supported are 11 (bullseye), 12 (bookworm), 13 (trixie)")]
    UnsupportedVersion(String),

    #[error("unsupported architecture '{0}' for Debian: supported is x86_64")]
    UnsupportedArch(String),

    #[error("this plugin builds Debian only, not '{0}'")]
    NotDebian(String),

    #[error("ISO installs are not supported for Debian: give <install type='url'> with a mirror, or no install url to use the host's apt mirror")]
    IsoInstall,

    #[error("no Debian mirror: the template has no install url and the host's apt sources name none")]
    NoMirror,

    #[error("cannot read the template: {0}")]
    Template(String),

    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },

    #[error("the build_key parameter must be 64 hex digits (32 bytes): got {0}")]
    BadBuildKey(String),

    #[error("{url} has no Date: field to take the build's SOURCE_DATE_EPOCH from")]
    NoReleaseDate { url: String },

    #[error(transparent)]
    Disk(#[from] DiskError),
}

impl DebianError {
    /// The last output lines of a failed tool, for the build log.
    pub fn tail(&self) -> &[String] {
        match self {
            DebianError::Disk(d) => d.tail(),
            _ => &[],
        }
    }
}
