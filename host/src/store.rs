//! The embedded image store: the original's flat directory of `<uuid>.meta` + `<uuid>.body`.
//!
//! Every write of a `.meta` goes to a temporary file that is fsynced and then renamed over
//! the old one, so a crash leaves either the old or the new metadata, never a torn file.
//! An in-memory index answers queries; it is refreshed from disk when another process
//! (the CLI and the daemon may share a storage directory) changed the directory.
//!
//! Beside each image the store keeps its build log (`<uuid>.log`) and, while a build runs,
//! a lock file (`.<uuid>.lock`) held with `flock` by the building process, so recovery at
//! start can tell an interrupted build from one another process is still running. The lock
//! file exists only while it is held: see [`Store::try_lock`] for how that stays race-free.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::image::{ImageKind, ImageRecord, Status};

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage path {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot create storage directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("image {0} is not in the store")]
    NotFound(String),
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

    fn matches(&self, id: &str, e: &Entry) -> bool {
        self.kind.is_none_or(|k| e.kind == k)
            && self.status.is_none_or(|s| e.status == s)
            && self.identifier.as_deref().is_none_or(|i| id == i)
            && self.base_image_id.as_deref().is_none_or(|b| e.base_image_id.as_deref() == Some(b))
            && self.target_image_id.as_deref().is_none_or(|t| e.target_image_id.as_deref() == Some(t))
    }
}

/// One image in the index: what queries filter and sort on, and the record itself as
/// compact JSON, parsed when it is asked for. The JSON is less than half of what the
/// parsed record holds on the heap (a map of one parameter alone allocates a 600-byte
/// B-tree node), which is most of an idle daemon's memory over a large store; parsing
/// one record again costs microseconds.
struct Entry {
    kind: ImageKind,
    status: Status,
    created: u64,
    base_image_id: Option<Box<str>>,
    target_image_id: Option<Box<str>>,
    /// The record without its template, shared, so a query copies pointers under the
    /// index lock and parses after it.
    json: Arc<str>,
    /// The template, shared by every record made from the same one (most of a store's
    /// images come from a handful of templates, and a template is most of a record).
    template: Option<Arc<str>>,
    /// The `.meta` file's mtime when this was read or written.
    modified: SystemTime,
}

impl Entry {
    /// The entry of `rec`, whose template was taken out of it (into `template`).
    fn new(rec: &ImageRecord, template: Option<Arc<str>>, modified: SystemTime) -> Entry {
        // Serializing a record cannot fail: its maps have string keys.
        let json = serde_json::to_string(rec).unwrap_or_default();
        Entry {
            kind: rec.kind,
            status: rec.status,
            created: rec.created,
            base_image_id: rec.base_image_id.as_deref().map(Box::from),
            target_image_id: rec.target_image_id.as_deref().map(Box::from),
            json: json.into(),
            template,
            modified,
        }
    }

    /// What a caller needs to parse the record after letting go of the index lock.
    fn parts(&self) -> EntryParts {
        (Arc::clone(&self.json), self.template.clone())
    }

    fn parent(&self) -> Option<&str> {
        self.base_image_id.as_deref().or(self.target_image_id.as_deref())
    }
}

/// An entry's JSON and template, to parse a record from.
type EntryParts = (Arc<str>, Option<Arc<str>>);

/// Parses an index entry's JSON: written by [`Entry::new`] from a record, so a failure is
/// a bug, logged and treated as a missing record.
fn parse_entry(id: &str, (json, template): &EntryParts) -> Option<ImageRecord> {
    match serde_json::from_str::<ImageRecord>(json) {
        Ok(mut r) => {
            r.template = template.as_deref().map(str::to_string);
            Some(r)
        }
        Err(e) => {
            tracing::error!(image = %id, error = %e, "an index entry does not parse");
            None
        }
    }
}

struct Index {
    /// Image id -> its entry.
    records: HashMap<String, Entry>,
    /// Parent id (base or target image) -> ids of its children, for nested queries.
    children: HashMap<String, BTreeSet<String>>,
    /// The distinct templates of the records (see [`Entry::template`]).
    templates: std::collections::HashSet<Arc<str>>,
    /// The directory's mtime after our last scan or write; a different value means
    /// another process changed the store.
    dir_mtime: Option<SystemTime>,
    /// Bumped by every change to the index, so a caller can tell whether what it derived
    /// from an earlier query (a serialized listing) still holds.
    generation: u64,
}

/// The file store.
pub struct Store {
    dir: PathBuf,
    index: RwLock<Index>,
}

/// An exclusive lock on one image, held while a process builds it. Dropping it removes
/// the lock file (while still holding the lock), then releases the lock.
pub struct BuildLock {
    file: File,
    path: PathBuf,
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        // Unlink while the flock is held, and only if the path is still our file: a
        // process that opened the old file and then gets its flock sees the path gone or
        // another file, and starts again (see `Store::try_lock`).
        if same_file(&self.file, &self.path) {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(file = %self.path.display(), error = %e, "cannot remove a build lock file");
                }
            }
        }
        // Closing the file releases the flock; unlocking first makes that explicit.
        // SAFETY: the descriptor belongs to `self.file`, which is still open here.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Whether `path` names the very file `file` has open (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// What one attempt at a lock file gave.
enum LockAttempt {
    Locked,
    /// Another holder has the flock.
    Busy,
    /// We got the flock of a file its last holder had already unlinked (or replaced):
    /// it locks nothing any more. Open the path again.
    Stale,
}

/// Takes the flock of `file` (opened from `path`) without waiting, and checks that `path`
/// still names it.
fn lock_opened(file: &File, path: &Path) -> LockAttempt {
    // SAFETY: flock on a descriptor we own; LOCK_NB makes it return at once.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        LockAttempt::Busy
    } else if same_file(file, path) {
        LockAttempt::Locked
    } else {
        LockAttempt::Stale
    }
}

/// How often [`Store::try_lock`] opens the path again after finding a stale file. Each
/// retry means another holder let go in between; a few in a row is already unlikely.
const LOCK_ATTEMPTS: usize = 16;

impl Index {
    fn insert(&mut self, mut rec: ImageRecord, modified: SystemTime) {
        self.remove(&rec.identifier);
        self.generation += 1;
        let template = rec.template.take().map(|t| self.intern(t));
        let entry = Entry::new(&rec, template, modified);
        if let Some(parent) = entry.parent() {
            self.children.entry(parent.to_string()).or_default().insert(rec.identifier.clone());
        }
        self.records.insert(rec.identifier.clone(), entry);
    }

    /// The shared copy of `template`, made if it is new.
    fn intern(&mut self, template: String) -> Arc<str> {
        if let Some(t) = self.templates.get(template.as_str()) {
            return Arc::clone(t);
        }
        let t: Arc<str> = template.into();
        self.templates.insert(Arc::clone(&t));
        t
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.records.remove(id) {
            self.generation += 1;
            if let Some(t) = &old.template {
                // Only the set's own copy and this one left: no other record uses it.
                if Arc::strong_count(t) == 2 {
                    self.templates.remove(&**t);
                }
            }
            if let Some(parent) = old.parent() {
                if let Some(set) = self.children.get_mut(parent) {
                    set.remove(id);
                    if set.is_empty() {
                        self.children.remove(parent);
                    }
                }
            }
        }
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Store {
    /// Opens (creating it if missing) the storage directory and loads its index.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::NotADirectory { path: dir });
        }
        fs::create_dir_all(&dir).map_err(|source| StoreError::CreateDir { path: dir.clone(), source })?;
        let store = Store {
            dir,
            index: RwLock::new(Index {
                records: HashMap::new(),
                children: HashMap::new(),
                templates: std::collections::HashSet::new(),
                dir_mtime: None,
                generation: 0,
            }),
        };
        store.refresh();
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.meta"))
    }

    pub fn body_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.body"))
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// The directory of files kept with an image (console logs, screenshots, generated
    /// kickstarts): `<storage>/<uuid>.files`.
    pub fn files_dir(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.files"))
    }

    /// Moves the plain files of `from` (a plugin operation's files directory) into the
    /// image's kept files, replacing files of the same name. Anything that is not a plain
    /// file with a plain name is left behind. Returns the names kept.
    pub fn keep_files(&self, id: &str, from: &Path) -> Result<Vec<String>, StoreError> {
        let entries = match fs::read_dir(from) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Read { path: from.to_path_buf(), source }),
        };
        let dest = self.files_dir(id);
        let mut kept = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_plain_file_name(&name) || !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            fs::create_dir_all(&dest).map_err(|source| StoreError::Write { path: dest.clone(), source })?;
            let target = dest.join(&name);
            if fs::rename(entry.path(), &target).is_err() {
                // Another file system (tmpdir elsewhere): copy, then drop the original.
                fs::copy(entry.path(), &target).map_err(|source| StoreError::Write { path: target.clone(), source })?;
                let _ = fs::remove_file(entry.path());
            }
            kept.push(name);
        }
        kept.sort();
        Ok(kept)
    }

    /// Writes one kept file of an image (atomically: a temporary file renamed over it).
    pub fn write_file(&self, id: &str, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if !is_plain_id(id) || !is_plain_file_name(name) {
            return Err(StoreError::Write {
                path: self.files_dir(id).join(name),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"),
            });
        }
        let dir = self.files_dir(id);
        fs::create_dir_all(&dir).map_err(|source| StoreError::Write { path: dir.clone(), source })?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let target = dir.join(name);
        fs::write(&tmp, bytes).map_err(|source| StoreError::Write { path: tmp.clone(), source })?;
        fs::rename(&tmp, &target).map_err(|source| StoreError::Write { path: target.clone(), source })
    }

    /// The names of the files kept with an image, sorted.
    pub fn kept_files(&self, id: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.files_dir(id))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| is_plain_file_name(n))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The path of one kept file, when the name is plain and the file exists.
    pub fn kept_file(&self, id: &str, name: &str) -> Option<PathBuf> {
        if !is_plain_id(id) || !is_plain_file_name(name) {
            return None;
        }
        let p = self.files_dir(id).join(name);
        p.is_file().then_some(p)
    }

    fn lock_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!(".{id}.lock"))
    }

    /// Re-reads `.meta` files that changed on disk since the index last saw them.
    fn refresh(&self) {
        let now_mtime = mtime(&self.dir);
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            if index.dir_mtime.is_some() && index.dir_mtime == now_mtime {
                return;
            }
        }
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot scan the storage directory");
                return;
            }
        };
        let mut seen = std::collections::HashSet::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".meta")) else { continue };
            if id.starts_with('.') {
                continue;
            }
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            seen.insert(id.to_string());
            if let (Some(entry), Some(m)) = (index.records.get(id), modified) {
                if entry.modified == m {
                    continue;
                }
            }
            match read_meta(&entry.path()) {
                Ok(rec) => {
                    index.insert(rec, modified.unwrap_or(SystemTime::UNIX_EPOCH));
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "skipping unreadable image metadata")
                }
            }
        }
        let gone: Vec<String> = index.records.keys().filter(|id| !seen.contains(*id)).cloned().collect();
        for id in gone {
            index.remove(&id);
        }
        index.dir_mtime = now_mtime;
    }

    /// Adds a new image: writes its `.meta` and an empty `.body`.
    pub fn add(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let body = self.body_path(&record.identifier);
        File::create(&body).map_err(|source| StoreError::Write { path: body, source })?;
        self.save(record)
    }

    /// Persists a record atomically (temp file, fsync, rename, fsync of the directory).
    pub fn save(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self.meta_path(&record.identifier);
        let tmp = self.dir.join(format!(".{}.meta.tmp", record.identifier));
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| StoreError::Write { path: path.clone(), source: io::Error::other(e) })?;
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        // The write and its fsyncs happen outside the index lock, so readers never wait
        // on the disk. Writers of one image are serialized by the engine.
        write().map_err(|source| StoreError::Write { path: path.clone(), source })?;
        let modified = mtime(&path).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        // Our own rename changed the directory; remember its new mtime so the next query
        // does not rescan for nothing. (A change by another process in the same instant
        // is picked up by `get`, which falls back to disk.)
        let known_before = index.dir_mtime.is_some();
        index.insert(record.clone(), modified);
        if known_before {
            index.dir_mtime = mtime(&self.dir);
        }
        Ok(())
    }

    /// The record with this id, from the index or, failing that, from disk.
    pub fn get(&self, id: &str) -> Option<ImageRecord> {
        if !is_plain_id(id) {
            return None;
        }
        let path = self.meta_path(id);
        let on_disk = mtime(&path)?;
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = index.records.get(id) {
                if entry.modified == on_disk {
                    let parts = entry.parts();
                    drop(index);
                    return parse_entry(id, &parts);
                }
            }
        }
        let rec = read_meta(&path).ok()?;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        index.insert(rec.clone(), on_disk);
        Some(rec)
    }

    /// The index's generation after picking up changes made on disk by other processes:
    /// it differs from an earlier value exactly when a record was added, changed or
    /// removed since. Read it before a query to key what is derived from that query.
    pub fn generation(&self) -> u64 {
        self.refresh();
        self.index.read().unwrap_or_else(|p| p.into_inner()).generation
    }

    /// Every record matching the query, oldest first. A query by parent id uses the
    /// parent index instead of scanning every record.
    pub fn query(&self, query: &Query) -> Vec<Arc<ImageRecord>> {
        self.matching(query).into_iter().filter_map(|(id, parts)| parse_entry(&id, &parts).map(Arc::new)).collect()
    }

    /// The ids of the records matching the query, oldest first, without parsing a record
    /// (what a listing needs).
    pub fn query_ids(&self, query: &Query) -> Vec<String> {
        self.matching(query).into_iter().map(|(id, _)| id).collect()
    }

    /// The matching entries' ids and JSON, oldest first. Under the index lock it only
    /// copies pointers; callers parse after it, so writers do not wait on a large listing.
    fn matching(&self, query: &Query) -> Vec<(String, EntryParts)> {
        self.refresh();
        let mut found: Vec<(u64, String, EntryParts)> = {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            let pick = |(id, e): (&String, &Entry)| query.matches(id, e).then(|| (e.created, id.clone(), e.parts()));
            match query.base_image_id.as_ref().or(query.target_image_id.as_ref()) {
                Some(parent) => index
                    .children
                    .get(parent)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| index.records.get_key_value(id))
                    .filter_map(pick)
                    .collect(),
                None => index.records.iter().filter_map(pick).collect(),
            }
        };
        found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        found.into_iter().map(|(_, id, parts)| (id, parts)).collect()
    }

    /// Removes an image's metadata, body, log and any other files named after it. The
    /// lock file goes with the lock: at once when nobody holds it (a stale one, say), or
    /// when the holder (the delete running this) lets go.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        if !is_plain_id(id) {
            return Err(StoreError::NotFound(id.to_string()));
        }
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = fs::remove_dir_all(self.files_dir(id)) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(StoreError::Remove { path: self.files_dir(id), source: e });
            }
        }
        // Never unlink a lock file under its holder (another process could then lock a new
        // file while the holder still runs): taking and dropping the lock removes it.
        drop(self.try_lock(id));
        // The .meta goes last: once it is gone, everything else of the image is too.
        for path in [self.body_path(id), self.log_path(id), self.meta_path(id)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Remove { path, source }),
            }
        }
        index.remove(id);
        Ok(())
    }

    /// Appends a line to the image's build log.
    pub fn append_log(&self, id: &str, line: &str) {
        let path = self.log_path(id);
        let res = OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| {
            let mut text = line.replace('\n', " ");
            text.push('\n');
            f.write_all(text.as_bytes())
        });
        if let Err(e) = res {
            tracing::warn!(file = %path.display(), error = %e, "cannot append to the build log");
        }
    }

    /// Takes the build lock of an image without waiting; `None` when another holder
    /// (this process or another) has it.
    ///
    /// The lock file is created here and removed when the lock is dropped, so none is
    /// left once a build ends. Removal is race-free: the holder unlinks the file while it
    /// still holds the flock, and a taker that wins the flock checks (fstat against stat)
    /// that the path still names the file it opened; if not, it opened a file that was
    /// unlinked in between, and it opens the path again.
    pub fn try_lock(&self, id: &str) -> Option<BuildLock> {
        let path = self.lock_path(id);
        for _ in 0..LOCK_ATTEMPTS {
            let file = match OpenOptions::new().create(true).truncate(false).write(true).open(&path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot open a build lock file");
                    return None;
                }
            };
            match lock_opened(&file, &path) {
                LockAttempt::Locked => return Some(BuildLock { file, path }),
                LockAttempt::Busy => return None,
                LockAttempt::Stale => continue,
            }
        }
        tracing::warn!(file = %path.display(), "the build lock file kept changing under us; giving up");
        None
    }
}

fn read_meta(path: &Path) -> Result<ImageRecord, StoreError> {
    let bytes = fs::read(path).map_err(|source| StoreError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Read { path: path.to_path_buf(), source: io::Error::other(e) })
}

/// Image ids are UUIDs; anything with a path separator or a dot never names a file here.
fn is_plain_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A kept file's name: letters, digits, `.`, `-`, `_`, not starting with a dot.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_files_move_in_are_listed_and_go_with_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let id = "0b5c1a38-5d2e-4c0e-9a43-7c1f2b9e8d11";
        store.save(&record(ImageKind::BaseImage, id)).unwrap();
        let from = dir.path().join("files");
        fs::create_dir(&from).unwrap();
        fs::write(from.join("console.log"), "boot\n").unwrap();
        fs::write(from.join(".hidden"), "x").unwrap();
        fs::write(from.join("bad name"), "x").unwrap();
        fs::create_dir(from.join("sub")).unwrap();
        assert_eq!(store.keep_files(id, &from).unwrap(), vec!["console.log".to_string()]);
        assert!(!from.join("console.log").exists());
        assert_eq!(store.kept_files(id), vec!["console.log".to_string()]);
        assert!(store.kept_file(id, "console.log").is_some());
        assert!(store.kept_file(id, "../x").is_none());
        assert!(store.kept_file(id, ".hidden").is_none());
        store.remove(id).unwrap();
        assert!(!store.files_dir(id).exists());
    }

    fn record(kind: ImageKind, id: &str) -> ImageRecord {
        ImageRecord::new(kind, id.to_string(), format!("/x/{id}.body"))
    }

    #[test]
    fn the_generation_moves_with_every_change_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let g0 = store.generation();
        assert_eq!(store.generation(), g0, "nothing changed");
        let rec = record(ImageKind::BaseImage, "6a0e1c3e-0000-4000-8000-000000000001");
        store.add(&rec).unwrap();
        let g1 = store.generation();
        assert_ne!(g1, g0, "an add changes it");
        store.query(&Query::default());
        assert_eq!(store.generation(), g1, "a query does not");
        store.save(&rec).unwrap();
        let g2 = store.generation();
        assert_ne!(g2, g1, "a save changes it");
        store.remove(&rec.identifier).unwrap();
        assert_ne!(store.generation(), g2, "a remove changes it");
    }

    #[test]
    fn save_get_query_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut b = record(ImageKind::BaseImage, "b1");
        store.add(&b).unwrap();
        let mut t = record(ImageKind::TargetImage, "t1");
        t.base_image_id = Some("b1".into());
        store.add(&t).unwrap();
        assert!(dir.path().join("b1.body").exists());
        b.status = Status::Complete;
        store.save(&b).unwrap();
        assert_eq!(store.get("b1").unwrap().status, Status::Complete);
        let q = Query { base_image_id: Some("b1".into()), ..Query::default() };
        assert_eq!(store.query(&q).iter().map(|r| r.identifier.as_str()).collect::<Vec<_>>(), vec!["t1"]);
        assert_eq!(store.query(&Query::kind(ImageKind::BaseImage)).len(), 1);
        store.remove("t1").unwrap();
        assert!(store.query(&q).is_empty(), "the parent index forgets removed children");
        store.remove("b1").unwrap();
        assert!(store.get("b1").is_none());
        assert!(!dir.path().join("b1.body").exists());
        assert!(store.get("../etc/passwd").is_none());
    }

    #[test]
    fn a_second_store_sees_changes_made_by_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let b = Store::open(dir.path()).unwrap();
        a.add(&record(ImageKind::BaseImage, "x1")).unwrap();
        assert_eq!(b.get("x1").unwrap().identifier, "x1");
        // Directory mtime granularity can hide two changes in one tick; wait a little.
        std::thread::sleep(std::time::Duration::from_millis(20));
        a.add(&record(ImageKind::BaseImage, "x2")).unwrap();
        assert_eq!(b.query(&Query::kind(ImageKind::BaseImage)).len(), 2);
    }

    #[test]
    fn no_temp_files_are_left_and_torn_meta_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add(&record(ImageKind::BaseImage, "ok1")).unwrap();
        fs::write(dir.path().join("torn.meta"), b"{\"type\": \"BaseIm").unwrap();
        let again = Store::open(dir.path()).unwrap();
        let ids: Vec<_> = again.query(&Query::default()).into_iter().map(|r| r.identifier.clone()).collect();
        assert_eq!(ids, vec!["ok1"]);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn build_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let held = store.try_lock("img").unwrap();
        assert!(store.try_lock("img").is_none());
        drop(held);
        assert!(store.try_lock("img").is_some());
    }

    #[test]
    fn the_lock_file_exists_only_while_the_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lock_file = dir.path().join(".img.lock");
        let held = store.try_lock("img").unwrap();
        assert!(lock_file.exists());
        // A refused attempt leaves the holder's file alone.
        assert!(store.try_lock("img").is_none());
        assert!(lock_file.exists());
        drop(held);
        assert!(!lock_file.exists(), "the lock file outlived its lock");
    }

    #[test]
    fn a_lock_won_on_an_unlinked_file_is_retried_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let path = store.lock_path("img");
        let held = store.try_lock("img").unwrap();
        // Another taker opened the file while it was held...
        let late = OpenOptions::new().write(true).open(&path).unwrap();
        // ...the holder lets go (unlinking it)...
        drop(held);
        // ...and the late taker's flock now succeeds, on a file nobody can find.
        assert!(matches!(lock_opened(&late, &path), LockAttempt::Stale));
        // A taker opening the path afresh gets a real lock, exclusive against the next.
        let fresh = store.try_lock("img").unwrap();
        assert!(store.try_lock("img").is_none());
        // The late taker's file is not the path's file: it must not count as a lock.
        assert!(!same_file(&late, &path));
        drop(late);
        assert!(path.exists(), "dropping a stale handle removed the holder's file");
        drop(fresh);
        assert!(!path.exists());
    }

    #[test]
    fn remove_takes_the_lock_file_only_from_no_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = "0b5c1a38-5d2e-4c0e-9a43-7c1f2b9e8d12";
        let lock_file = store.lock_path(id);
        // A stale lock file (left by an older version or a crash) goes with the image.
        store.add(&record(ImageKind::BaseImage, id)).unwrap();
        fs::write(&lock_file, b"").unwrap();
        store.remove(id).unwrap();
        assert!(!lock_file.exists(), "a stale lock file survived remove");
        // A held one stays until its holder lets go, then nothing of the image is left.
        store.add(&record(ImageKind::BaseImage, id)).unwrap();
        let held = store.try_lock(id).unwrap();
        store.remove(id).unwrap();
        assert!(lock_file.exists(), "remove unlinked a lock under its holder");
        drop(held);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(id))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
