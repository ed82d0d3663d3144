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
//! file exists only while it is held: see [`FileStore::try_lock`] for how that stays race-free.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use super::bodies::remove_file_if_there;
use super::{is_plain_id, Bodies, BuildLock, ImageStore, Query, StoreError};
use crate::image::{ImageKind, ImageRecord, Status};

/// Whether an index entry matches every field the query gives.
fn matches(query: &Query, id: &str, e: &Entry) -> bool {
    query.kind.is_none_or(|k| e.kind == k)
        && query.status.is_none_or(|s| e.status == s)
        && query.identifier.as_deref().is_none_or(|i| id == i)
        && query.base_image_id.as_deref().is_none_or(|b| e.base_image_id.as_deref() == Some(b))
        && query.target_image_id.as_deref().is_none_or(|t| e.target_image_id.as_deref() == Some(t))
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
    /// `buffer` is scratch space for the JSON, reused by a caller that makes many entries
    /// (start-up), so that only the entry's own copy stays allocated: growing a fresh
    /// string for each would leave freed holes between the entries.
    fn new(rec: &ImageRecord, template: Option<Arc<str>>, modified: SystemTime, buffer: &mut Vec<u8>) -> Entry {
        buffer.clear();
        // Serializing a record cannot fail (its maps have string keys), and serde_json
        // writes UTF-8.
        let json: Arc<str> = match serde_json::to_writer(&mut *buffer, rec) {
            Ok(()) => std::str::from_utf8(buffer).map(Arc::from).unwrap_or_else(|_| Arc::from("")),
            Err(_) => Arc::from(""),
        };
        Entry {
            kind: rec.kind,
            status: rec.status,
            created: rec.created,
            base_image_id: rec.base_image_id.as_deref().map(Box::from),
            target_image_id: rec.target_image_id.as_deref().map(Box::from),
            json,
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
pub struct FileStore {
    bodies: Bodies,
    index: RwLock<Index>,
}

/// The flock behind a file store's [`BuildLock`]. Dropping it removes the lock file
/// (while still holding the lock), then releases the lock.
struct Flock {
    file: File,
    path: PathBuf,
}

impl Drop for Flock {
    fn drop(&mut self) {
        // Unlink while the flock is held, and only if the path is still our file: a
        // process that opened the old file and then gets its flock sees the path gone or
        // another file, and starts again (see `FileStore::try_lock`).
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

/// How often [`FileStore::try_lock`] opens the path again after finding a stale file. Each
/// retry means another holder let go in between; a few in a row is already unlikely.
const LOCK_ATTEMPTS: usize = 16;

impl Index {
    fn insert(&mut self, rec: ImageRecord, modified: SystemTime) {
        self.insert_loaded(Loaded::new(rec, modified, &mut Templates::default(), &mut Vec::new()));
    }

    fn insert_loaded(&mut self, loaded: Loaded) {
        let Loaded { id, template, mut entry } = loaded;
        self.remove(&id);
        self.generation += 1;
        entry.template = template.map(|t| self.intern(t));
        if let Some(parent) = entry.parent() {
            self.children.entry(parent.to_string()).or_default().insert(id.clone());
        }
        self.records.insert(id, entry);
    }

    /// The shared copy of `template`: the index's own when it has an equal one.
    fn intern(&mut self, template: Arc<str>) -> Arc<str> {
        if let Some(t) = self.templates.get(&*template) {
            return Arc::clone(t);
        }
        self.templates.insert(Arc::clone(&template));
        template
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

/// A record made ready for the index away from its lock: its entry (JSON without the
/// template) and the template still to be shared ([`Index::intern`]).
struct Loaded {
    id: String,
    template: Option<Arc<str>>,
    entry: Entry,
}

/// Templates already seen by one loader, so a template read again is freed at once (and
/// its memory reused by the next file) instead of piling up until the index shares it.
#[derive(Default)]
struct Templates(std::collections::HashSet<Arc<str>>);

impl Templates {
    fn share(&mut self, template: String) -> Arc<str> {
        if let Some(t) = self.0.get(template.as_str()) {
            return Arc::clone(t);
        }
        let t: Arc<str> = template.into();
        self.0.insert(Arc::clone(&t));
        t
    }
}

impl Loaded {
    fn new(mut rec: ImageRecord, modified: SystemTime, templates: &mut Templates, buffer: &mut Vec<u8>) -> Loaded {
        let template = rec.template.take().map(|t| templates.share(t));
        let entry = Entry::new(&rec, None, modified, buffer);
        Loaded { id: rec.identifier, template, entry }
    }
}

/// Below this many files one thread reads them all (threads cost more than they save).
const PARALLEL_LOAD_MIN: usize = 256;

/// Reads and parses `.meta` files on every core (a daemon's start-up over a large store
/// is mostly this), with reused buffers per thread; results in the order given (an error
/// names its file).
fn load_all(files: Vec<(PathBuf, SystemTime)>) -> Vec<Result<Loaded, StoreError>> {
    let load = |chunk: &[(PathBuf, SystemTime)]| {
        let (mut file, mut json) = (Vec::new(), Vec::new());
        let mut templates = Templates::default();
        chunk
            .iter()
            .map(|(path, modified)| {
                read_meta_with(path, &mut file).map(|rec| Loaded::new(rec, *modified, &mut templates, &mut json))
            })
            .collect::<Vec<_>>()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if files.len() < PARALLEL_LOAD_MIN || threads < 2 {
        return load(&files);
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files.chunks(chunk).map(|c| scope.spawn(move || load(c))).collect();
        // A loader thread cannot panic on a file's content (every error is a value); a
        // panic would be a bug, and takes its files' records with it, logged.
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    tracing::error!("a metadata loader thread panicked");
                    Vec::new()
                })
            })
            .collect()
    })
}

fn mtime(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl FileStore {
    /// Opens (creating it if missing) the storage directory and loads its index.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let store = FileStore {
            bodies: Bodies::open(dir)?,
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

    fn dir(&self) -> &Path {
        self.bodies.dir()
    }

    pub fn meta_path(&self, id: &str) -> PathBuf {
        self.dir().join(format!("{id}.meta"))
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir().join(format!("{id}.log"))
    }

    fn lock_path(&self, id: &str) -> PathBuf {
        self.dir().join(format!(".{id}.lock"))
    }

    /// Re-reads `.meta` files that changed on disk since the index last saw them.
    fn refresh(&self) {
        let now_mtime = mtime(self.dir());
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            if index.dir_mtime.is_some() && index.dir_mtime == now_mtime {
                return;
            }
        }
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let entries = match fs::read_dir(self.dir()) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %self.dir().display(), error = %e, "cannot scan the storage directory");
                return;
            }
        };
        let mut seen = std::collections::HashSet::new();
        let mut stale: Vec<(PathBuf, SystemTime)> = Vec::new();
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
            stale.push((entry.path(), modified.unwrap_or(SystemTime::UNIX_EPOCH)));
        }
        index.records.reserve(stale.len());
        for loaded in load_all(stale) {
            match loaded {
                Ok(loaded) => index.insert_loaded(loaded),
                Err(e) => tracing::warn!(error = %e, "skipping unreadable image metadata"),
            }
        }
        let gone: Vec<String> = index.records.keys().filter(|id| !seen.contains(*id)).cloned().collect();
        for id in gone {
            index.remove(&id);
        }
        index.dir_mtime = now_mtime;
    }

    /// The matching entries' ids and JSON, oldest first. Under the index lock it only
    /// copies pointers; callers parse after it, so writers do not wait on a large listing.
    fn matching(&self, query: &Query) -> Vec<(String, EntryParts)> {
        self.refresh();
        let mut found: Vec<(u64, String, EntryParts)> = {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            let pick = |(id, e): (&String, &Entry)| matches(query, id, e).then(|| (e.created, id.clone(), e.parts()));
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

    /// The flock of an image's lock file; see [`ImageStore::try_lock`].
    ///
    /// The lock file is created here and removed when the lock is dropped, so none is
    /// left once a build ends. Removal is race-free: the holder unlinks the file while it
    /// still holds the flock, and a taker that wins the flock checks (fstat against stat)
    /// that the path still names the file it opened; if not, it opened a file that was
    /// unlinked in between, and it opens the path again.
    fn flock(&self, id: &str) -> Option<Flock> {
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
                LockAttempt::Locked => return Some(Flock { file, path }),
                LockAttempt::Busy => return None,
                LockAttempt::Stale => continue,
            }
        }
        tracing::warn!(file = %path.display(), "the build lock file kept changing under us; giving up");
        None
    }
}

impl ImageStore for FileStore {
    fn bodies(&self) -> &Bodies {
        &self.bodies
    }

    /// Persists a record atomically (temp file, fsync, rename, fsync of the directory).
    fn save(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self.meta_path(&record.identifier);
        let tmp = self.dir().join(format!(".{}.meta.tmp", record.identifier));
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| StoreError::Write { path: path.clone(), source: io::Error::other(e) })?;
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(self.dir())?.sync_all()
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
            index.dir_mtime = mtime(self.dir());
        }
        Ok(())
    }

    /// The record from the index or, when the `.meta` changed since, from disk.
    fn get(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        if !is_plain_id(id) {
            return Ok(None);
        }
        let path = self.meta_path(id);
        let Some(on_disk) = mtime(&path) else { return Ok(None) };
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = index.records.get(id) {
                if entry.modified == on_disk {
                    let parts = entry.parts();
                    drop(index);
                    return Ok(parse_entry(id, &parts));
                }
            }
        }
        // Torn or vanished since the mtime was read: as good as absent.
        let Ok(rec) = read_meta(&path) else { return Ok(None) };
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        index.insert(rec.clone(), on_disk);
        Ok(Some(rec))
    }

    /// The index's generation after picking up changes made on disk by other processes.
    fn generation(&self) -> Result<u64, StoreError> {
        self.refresh();
        Ok(self.index.read().unwrap_or_else(|p| p.into_inner()).generation)
    }

    /// A query by parent id uses the parent index instead of scanning every record.
    fn query(&self, query: &Query) -> Result<Vec<Arc<ImageRecord>>, StoreError> {
        Ok(self.matching(query).into_iter().filter_map(|(id, parts)| parse_entry(&id, &parts).map(Arc::new)).collect())
    }

    /// Without parsing a record.
    fn query_ids(&self, query: &Query) -> Result<Vec<String>, StoreError> {
        Ok(self.matching(query).into_iter().map(|(id, _)| id).collect())
    }

    /// Removes an image's metadata, body, log and kept files. The lock file goes with the
    /// lock: at once when nobody holds it (a stale one, say), or when the holder (the
    /// delete running this) lets go.
    fn remove(&self, id: &str) -> Result<(), StoreError> {
        if !is_plain_id(id) {
            return Err(StoreError::NotFound(id.to_string()));
        }
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        // Never unlink a lock file under its holder (another process could then lock a new
        // file while the holder still runs): taking and dropping the lock removes it.
        drop(self.flock(id));
        self.bodies.remove(id)?;
        // The .meta goes last: once it is gone, everything else of the image is too.
        remove_file_if_there(&self.log_path(id))?;
        remove_file_if_there(&self.meta_path(id))?;
        index.remove(id);
        Ok(())
    }

    fn append_log(&self, id: &str, line: &str) {
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

    fn build_log(&self, id: &str) -> Result<String, StoreError> {
        if !is_plain_id(id) {
            return Ok(String::new());
        }
        let path = self.log_path(id);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    /// A flock of `.<uuid>.lock`, which exists only while it is held (see
    /// [`FileStore::flock`]).
    fn try_lock(&self, id: &str) -> Result<Option<BuildLock>, StoreError> {
        Ok(self.flock(id).map(BuildLock::new))
    }
}

fn read_meta(path: &Path) -> Result<ImageRecord, StoreError> {
    read_meta_with(path, &mut Vec::new())
}

/// [`read_meta`] reading into `buffer` (cleared first).
fn read_meta_with(path: &Path, buffer: &mut Vec<u8>) -> Result<ImageRecord, StoreError> {
    use std::io::Read;
    buffer.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buffer))
        .map_err(|source| StoreError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_slice(buffer)
        .map_err(|e| StoreError::Read { path: path.to_path_buf(), source: io::Error::other(e) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Status;

    fn record(kind: ImageKind, id: &str) -> ImageRecord {
        ImageRecord::new(kind, id.to_string(), format!("/x/{id}.body"))
    }

    #[test]
    fn the_generation_moves_with_every_change_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let g0 = store.generation().unwrap();
        assert_eq!(store.generation().unwrap(), g0, "nothing changed");
        let rec = record(ImageKind::BaseImage, "6a0e1c3e-0000-4000-8000-000000000001");
        store.add(&rec).unwrap();
        let g1 = store.generation().unwrap();
        assert_ne!(g1, g0, "an add changes it");
        store.query(&Query::default()).unwrap();
        assert_eq!(store.generation().unwrap(), g1, "a query does not");
        store.save(&rec).unwrap();
        let g2 = store.generation().unwrap();
        assert_ne!(g2, g1, "a save changes it");
        store.remove(&rec.identifier).unwrap();
        assert_ne!(store.generation().unwrap(), g2, "a remove changes it");
    }

    #[test]
    fn save_get_query_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let mut b = record(ImageKind::BaseImage, "b1");
        store.add(&b).unwrap();
        let mut t = record(ImageKind::TargetImage, "t1");
        t.base_image_id = Some("b1".into());
        store.add(&t).unwrap();
        assert!(dir.path().join("b1.body").exists());
        b.status = Status::Complete;
        store.save(&b).unwrap();
        assert_eq!(store.get("b1").unwrap().unwrap().status, Status::Complete);
        let q = Query { base_image_id: Some("b1".into()), ..Query::default() };
        assert_eq!(store.query(&q).unwrap().iter().map(|r| r.identifier.as_str()).collect::<Vec<_>>(), vec!["t1"]);
        assert_eq!(store.query(&Query::kind(ImageKind::BaseImage)).unwrap().len(), 1);
        store.remove("t1").unwrap();
        assert!(store.query(&q).unwrap().is_empty(), "the parent index forgets removed children");
        store.remove("b1").unwrap();
        assert!(store.get("b1").unwrap().is_none());
        assert!(!dir.path().join("b1.body").exists());
        assert!(store.get("../etc/passwd").unwrap().is_none());
    }

    #[test]
    fn a_second_store_sees_changes_made_by_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::open(dir.path()).unwrap();
        let b = FileStore::open(dir.path()).unwrap();
        a.add(&record(ImageKind::BaseImage, "x1")).unwrap();
        assert_eq!(b.get("x1").unwrap().unwrap().identifier, "x1");
        // Directory mtime granularity can hide two changes in one tick; wait a little.
        std::thread::sleep(std::time::Duration::from_millis(20));
        a.add(&record(ImageKind::BaseImage, "x2")).unwrap();
        assert_eq!(b.query(&Query::kind(ImageKind::BaseImage)).unwrap().len(), 2);
    }

    #[test]
    fn no_temp_files_are_left_and_torn_meta_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.add(&record(ImageKind::BaseImage, "ok1")).unwrap();
        fs::write(dir.path().join("torn.meta"), b"{\"type\": \"BaseIm").unwrap();
        let again = FileStore::open(dir.path()).unwrap();
        let ids: Vec<_> = again.query(&Query::default()).unwrap().into_iter().map(|r| r.identifier.clone()).collect();
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
        let store = FileStore::open(dir.path()).unwrap();
        let held = store.try_lock("img").unwrap().unwrap();
        assert!(store.try_lock("img").unwrap().is_none());
        drop(held);
        assert!(store.try_lock("img").unwrap().is_some());
    }

    #[test]
    fn the_lock_file_exists_only_while_the_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let lock_file = dir.path().join(".img.lock");
        let held = store.try_lock("img").unwrap().unwrap();
        assert!(lock_file.exists());
        // A refused attempt leaves the holder's file alone.
        assert!(store.try_lock("img").unwrap().is_none());
        assert!(lock_file.exists());
        drop(held);
        assert!(!lock_file.exists(), "the lock file outlived its lock");
    }

    #[test]
    fn a_lock_won_on_an_unlinked_file_is_retried_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let path = store.lock_path("img");
        let held = store.try_lock("img").unwrap().unwrap();
        // Another taker opened the file while it was held...
        let late = OpenOptions::new().write(true).open(&path).unwrap();
        // ...the holder lets go (unlinking it)...
        drop(held);
        // ...and the late taker's flock now succeeds, on a file nobody can find.
        assert!(matches!(lock_opened(&late, &path), LockAttempt::Stale));
        // A taker opening the path afresh gets a real lock, exclusive against the next.
        let fresh = store.try_lock("img").unwrap().unwrap();
        assert!(store.try_lock("img").unwrap().is_none());
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
        let store = FileStore::open(dir.path()).unwrap();
        let id = "0b5c1a38-5d2e-4c0e-9a43-7c1f2b9e8d12";
        let lock_file = store.lock_path(id);
        // A stale lock file (left by an older version or a crash) goes with the image.
        store.add(&record(ImageKind::BaseImage, id)).unwrap();
        fs::write(&lock_file, b"").unwrap();
        store.remove(id).unwrap();
        assert!(!lock_file.exists(), "a stale lock file survived remove");
        // A held one stays until its holder lets go, then nothing of the image is left.
        store.add(&record(ImageKind::BaseImage, id)).unwrap();
        let held = store.try_lock(id).unwrap().unwrap();
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
