//! The one error type of this crate. Every message is one line a build status can show
//! as it is; the detail (a tool's last output lines) travels in the variants' fields so
//! a caller can log it separately.

use std::path::PathBuf;

/// Why building a disk image (or running one of its tools) failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A host tool is missing. Tools are never optional: `scripts/setup.sh` installs them.
    #[error("{tool} is not installed (Debian package {package}; run scripts/setup.sh)")]
    MissingTool { tool: String, package: String },

    /// A tool could not be started at all.
    #[error("cannot run {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A tool ran and failed. `tail` keeps its last output lines for the log.
    #[error("{what} failed with {status}")]
    Failed { what: String, status: String, tail: Vec<String> },

    /// A tool ran longer than it was allowed to and was killed.
    #[error("{what} did not finish within {seconds} s and was killed")]
    TimedOut { what: String, seconds: u64 },

    /// The build was cancelled while a tool ran; the tool was killed.
    #[error("cancelled")]
    Cancelled,

    /// Reading or writing a file of the image failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The requested disk cannot hold what has to go on it.
    #[error("the disk of {requested} bytes is too small: it needs at least {needed} bytes")]
    TooSmall { requested: u64, needed: u64 },

    /// A tool's output or a file did not look as expected.
    #[error("{0}")]
    Unexpected(String),
}

impl DiskError {
    /// An [`DiskError::Io`] with a short description of what was being done.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> DiskError {
        DiskError::Io { what, path: path.into(), source }
    }

    /// The last output lines of a failed tool, if any (for the build log).
    pub fn tail(&self) -> &[String] {
        match self {
            DiskError::Failed { tail, .. } => tail,
            _ => &[],
        }
    }
}
