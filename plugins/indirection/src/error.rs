//! The plugin's errors. Each message is the one line a user sees in the image's
//! status (`status_detail.error`); the detail (a tool's last output lines) is logged.

use diskimage::DiskError;

#[derive(Debug, thiserror::Error)]
pub enum IndirectionError {
    /// A parameter has a value the plugin cannot use.
    #[error("{0}")]
    Parameter(String),

    /// `utility_image` names no image of the store.
    #[error("utility image {0} not found")]
    UtilityNotFound(String),

    /// `utility_image` names an image that is not a finished base image.
    #[error("utility image {id} is a {kind} in status {status}; it must be a COMPLETE base image")]
    UtilityNotUsable { id: String, kind: String, status: String },

    /// The utility image cannot be booted the way this plugin boots it.
    #[error("utility image {id}: {why}")]
    UtilityUnbootable { id: String, why: String },

    /// `utility_customizations` is not a partial TDL document.
    #[error("utility_customizations is not a valid partial TDL: {0}")]
    Customizations(String),

    /// A step run in the utility VM failed.
    #[error("{0}")]
    Step(String),

    /// The utility VM did not get through its run.
    #[error("{0}")]
    Vm(String),

    /// `results_location` is absent from the working disk once the VM stopped.
    #[error("results_location {path} was not found on the working disk after the utility VM stopped; see file console.log of this image")]
    ResultsMissing { path: String },

    /// `results_location` is there but is not a regular file.
    #[error("results_location {path} on the working disk is not a regular file")]
    ResultsNotAFile { path: String },

    #[error("cancelled")]
    Cancelled,

    #[error(transparent)]
    Disk(#[from] DiskError),
}

impl IndirectionError {
    /// The last output lines of a failed tool, for the build log.
    pub fn tail(&self) -> &[String] {
        match self {
            IndirectionError::Disk(d) => d.tail(),
            _ => &[],
        }
    }
}
