//! Where image records, build logs and build locks live: the [`ImageStore`] trait and its
//! two implementations.
//!
//! - [`FileStore`] (`"image_manager": "file"`, the embedded default): the original's flat
//!   directory of `<uuid>.meta` + `<uuid>.body`, with an in-memory index.
//! - [`PgStore`] (`"image_manager": "postgres"`): records, logs and locks in PostgreSQL,
//!   so many daemons on many machines share one state; bodies in a directory every one
//!   of them mounts (`image_manager_args.bodies`).
//!
//! Both keep bodies and kept files the same way, in a [`Bodies`] directory: the engine
//! and the plugins read and write image bodies as files, whichever store holds the
//! records.

mod bodies;
mod files;
pub mod objects;
pub mod postgres;
mod queue;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use bodies::Bodies;
pub use files::FileStore;
pub use postgres::PgStore;
pub use queue::{CancelOutcome, ClaimedJob, JobQueue, LostJob, NewJob, Notices, Woken};

use crate::image::{ImageKind, ImageRecord, Status};

/// Errors of an image store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage path {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot create storage directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("image {0} is not in the store")]
    NotFound(String),
    /// The store's server cannot be reached (or answers with an error): the request may
    /// succeed later. One line, without credentials.
    #[error("the image store is unavailable: {0}")]
    Unavailable(String),
    /// Object storage refused a call for good (a missing object or bucket, refused keys,
    /// a corrupted upload). One line, without credentials.
    #[error("{0}")]
    Objects(String),
    /// The store cannot be used by this version at all (a database schema newer than
    /// this build knows, a bad URL).
    #[error("{0}")]
    Unusable(String),
}

/// An error that may go away by itself: the store's server is down or restarting.
pub trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transient for StoreError {
    fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Calls `f` until it succeeds, once a second while it fails with a [`Transient`] error,
/// for up to `bound`; then (or at once, for any other error) returns the error. The
/// writes that must not be dropped (the end of a build, a job marked done) wait out a
/// database restart this way. `what` names the write in the one warning it logs.
pub fn retry_while_unavailable<T, E: Transient>(
    bound: std::time::Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + bound;
    let mut warned = false;
    loop {
        match f() {
            Err(e) if e.is_transient() && std::time::Instant::now() < deadline => {
                if !warned {
                    tracing::warn!(error = %e, "cannot {what} yet; trying again every second");
                    warned = true;
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            done => return done,
        }
    }
}

/// A query over stored images: every field given must match exactly.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub kind: Option<ImageKind>,
    pub status: Option<Status>,
    pub base_image_id: Option<String>,
    pub target_image_id: Option<String>,
    pub identifier: Option<String>,
}

impl Query {
    pub fn kind(kind: ImageKind) -> Query {
        Query { kind: Some(kind), ..Query::default() }
    }
}

/// An exclusive hold on one image, kept while a process builds (or deletes) it: a flock
/// in the file store, an advisory lock on a connection of its own in PostgreSQL. Either
/// way the hold ends when the holder does, so recovery can tell an interrupted build from
/// one that still runs somewhere. Dropping it lets go.
pub struct BuildLock {
    _held: Box<dyn Send>,
}

impl BuildLock {
    fn new(held: impl Send + 'static) -> BuildLock {
        BuildLock { _held: Box::new(held) }
    }
}

/// What the engine needs of a store. Every method may be called from many threads; the
/// engine serializes writes of one image itself.
pub trait ImageStore: Send + Sync {
    /// The directory of bodies and kept files.
    fn bodies(&self) -> &Bodies;

    /// Adds a new image: an empty body, then its record (so a record never names a body
    /// that is not there).
    fn add(&self, record: &ImageRecord) -> Result<(), StoreError> {
        self.bodies().create_body(&record.identifier)?;
        self.save(record)
    }

    /// Replaces an image's record (atomically: readers see the old or the new one).
    fn save(&self, record: &ImageRecord) -> Result<(), StoreError>;

    /// The record with this id; `Ok(None)` when there is none.
    fn get(&self, id: &str) -> Result<Option<ImageRecord>, StoreError>;

    /// A number that changes exactly when a record is added, changed or removed (by
    /// this process or another). Read it before a query to key what is derived from it.
    fn generation(&self) -> Result<u64, StoreError>;

    /// Every record matching the query, oldest first.
    fn query(&self, query: &Query) -> Result<Vec<Arc<ImageRecord>>, StoreError>;

    /// The ids of the records matching the query, oldest first (what a listing needs).
    fn query_ids(&self, query: &Query) -> Result<Vec<String>, StoreError>;

    /// Removes an image: record, body, log, kept files.
    fn remove(&self, id: &str) -> Result<(), StoreError>;

    /// Appends a line to the image's build log. A failure is logged, never fatal: a
    /// build does not fail because one log line was lost.
    fn append_log(&self, id: &str, line: &str);

    /// The image's build log (empty when it has none).
    fn build_log(&self, id: &str) -> Result<String, StoreError>;

    /// Takes the build lock of an image without waiting; `Ok(None)` when another holder
    /// (in this process or another) has it.
    fn try_lock(&self, id: &str) -> Result<Option<BuildLock>, StoreError>;

    /// The farm's job queue, when the store has one (PostgreSQL): builds then run on
    /// whichever worker takes them. `None` (the file store): builds run in this process.
    fn job_queue(&self) -> Option<JobQueue> {
        None
    }
}

/// Paths and kept files, through the store's [`Bodies`].
impl dyn ImageStore + '_ {
    /// The directory bodies live in (and the build cache beside them).
    pub fn dir(&self) -> &Path {
        self.bodies().dir()
    }

    pub fn body_path(&self, id: &str) -> PathBuf {
        self.bodies().body_path(id)
    }

    pub fn files_dir(&self, id: &str) -> PathBuf {
        self.bodies().files_dir(id)
    }

    pub fn keep_files(&self, id: &str, from: &Path) -> Result<Vec<String>, StoreError> {
        self.bodies().keep_files(id, from)
    }

    pub fn write_file(&self, id: &str, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.bodies().write_file(id, name, bytes)
    }

    pub fn kept_files(&self, id: &str) -> Result<Vec<String>, StoreError> {
        self.bodies().kept_files(id)
    }

    pub fn kept_file(&self, id: &str, name: &str) -> Option<PathBuf> {
        self.bodies().kept_file(id, name)
    }
}

/// Image ids are UUIDs; anything with a path separator or a dot never names a file here.
fn is_plain_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A kept file's name: letters, digits, `.`, `-`, `_`, not starting with a dot.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}
