//! The directory of image bodies and kept files, shared by every store: `<uuid>.body` and
//! `<uuid>.files/` (console logs, screenshots, generated kickstarts, the SBOM).
//!
//! With bodies in object storage ([`Bodies::with_objects`]) the directory is this
//! machine's own copy: a build works on local files, [`Bodies::publish`] sends them to
//! the object store when it ends, and [`Bodies::fetch`] brings a parent's down before a
//! build that reads it. A marker `.<uuid>.fetched` says a local copy is whole.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::objects::ObjectStore;
use super::{is_plain_file_name, is_plain_id, StoreError};

/// A directory of bodies (created if missing), and the object store that holds them for
/// every machine, if there is one.
pub struct Bodies {
    dir: PathBuf,
    objects: Option<ObjectStore>,
    /// One fetch at a time: two targets of one base must not download it twice into
    /// the same file.
    fetching: Mutex<()>,
}

impl Bodies {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Bodies, StoreError> {
        let dir = dir.into();
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::NotADirectory { path: dir });
        }
        fs::create_dir_all(&dir).map_err(|source| StoreError::CreateDir { path: dir.clone(), source })?;
        Ok(Bodies { dir, objects: None, fetching: Mutex::new(()) })
    }

    /// Bodies kept in `objects`, with this machine's copies in `dir`.
    pub fn with_objects(dir: impl Into<PathBuf>, objects: ObjectStore) -> Result<Bodies, StoreError> {
        Ok(Bodies { objects: Some(objects), ..Bodies::open(dir)? })
    }

    /// The directory of this machine's bodies (with object storage: its copies).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The object store, when bodies live in one.
    pub fn objects(&self) -> Option<&ObjectStore> {
        self.objects.as_ref()
    }

    /// Where bodies are, for logs.
    pub fn location(&self) -> String {
        match &self.objects {
            Some(o) => format!("{} (local copies in {})", o.url(), self.dir.display()),
            None => self.dir.display().to_string(),
        }
    }

    /// What a record's `data` says: the body's path, or its object's URL.
    pub fn data_of(&self, id: &str) -> String {
        match &self.objects {
            Some(o) => o.url_of(&o.body_key(id)),
            None => self.body_path(id).to_string_lossy().into_owned(),
        }
    }

    fn fetched_marker(&self, id: &str) -> PathBuf {
        self.dir.join(format!(".{id}.fetched"))
    }

    /// Makes sure a build of `id` has a local body to write (the API daemon that made
    /// the record may be another machine).
    pub fn prepare(&self, id: &str) -> Result<(), StoreError> {
        if self.body_path(id).exists() {
            return Ok(());
        }
        self.create_body(id)
    }

    /// Sends an image's kept files, and its body when `with_body` (a build that
    /// completed), to the object store; nothing without one. The local copy is then
    /// marked whole, so a later build here need not fetch it.
    pub fn publish(&self, id: &str, with_body: bool) -> Result<(), StoreError> {
        let Some(objects) = &self.objects else { return Ok(()) };
        for name in self.local_kept_files(id) {
            objects.upload(&objects.file_key(id, &name), &self.files_dir(id).join(&name))?;
        }
        if with_body {
            objects.upload(&objects.body_key(id), &self.body_path(id))?;
            File::create(self.fetched_marker(id))
                .map_err(|source| StoreError::Write { path: self.fetched_marker(id), source })?;
        }
        Ok(())
    }

    /// Brings an image's body and kept files from the object store to this machine,
    /// unless its copy is already whole; nothing without an object store. The body is
    /// written sparsely, to a temporary name renamed when complete.
    pub fn fetch(&self, id: &str) -> Result<(), StoreError> {
        let Some(objects) = &self.objects else { return Ok(()) };
        if !is_plain_id(id) {
            return Err(StoreError::NotFound(id.to_string()));
        }
        let _one = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        if self.fetched_marker(id).exists() {
            return Ok(());
        }
        let files = self.files_dir(id);
        for name in objects.kept_files(id)?.into_iter().filter(|n| is_plain_file_name(n)) {
            fs::create_dir_all(&files).map_err(|source| StoreError::Write { path: files.clone(), source })?;
            objects.download(&objects.file_key(id, &name), &files.join(&name))?;
        }
        let part = self.dir.join(format!(".{id}.body.part"));
        let key = objects.body_key(id);
        if objects.download(&key, &part)?.is_none() {
            let _ = fs::remove_file(&part);
            return Err(StoreError::Objects(format!(
                "image {id} has no body in object storage ({} is missing)",
                objects.url_of(&key)
            )));
        }
        let body = self.body_path(id);
        fs::rename(&part, &body).map_err(|source| StoreError::Write { path: body, source })?;
        File::create(self.fetched_marker(id))
            .map_err(|source| StoreError::Write { path: self.fetched_marker(id), source })?;
        Ok(())
    }

    pub fn body_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.body"))
    }

    /// The directory of files kept with an image: `<dir>/<uuid>.files`.
    pub fn files_dir(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.files"))
    }

    /// Creates the (empty) body of a new image.
    pub fn create_body(&self, id: &str) -> Result<(), StoreError> {
        let body = self.body_path(id);
        File::create(&body).map(drop).map_err(|source| StoreError::Write { path: body, source })
    }

    /// Removes an image's kept files and body (from the object store too); what is
    /// already gone is fine. Other machines' copies stay until their storage is cleaned.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        if !is_plain_id(id) {
            return Err(StoreError::NotFound(id.to_string()));
        }
        if let Some(objects) = &self.objects {
            objects.remove_image(id)?;
        }
        remove_file_if_there(&self.fetched_marker(id))?;
        if let Err(e) = fs::remove_dir_all(self.files_dir(id)) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(StoreError::Remove { path: self.files_dir(id), source: e });
            }
        }
        remove_file_if_there(&self.body_path(id))
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

    /// The names of the files kept with an image, sorted: the object store's, when
    /// there is one.
    pub fn kept_files(&self, id: &str) -> Result<Vec<String>, StoreError> {
        match &self.objects {
            Some(o) => o.kept_files(id),
            None => Ok(self.local_kept_files(id)),
        }
    }

    /// The names of the files kept with an image on this machine, sorted.
    fn local_kept_files(&self, id: &str) -> Vec<String> {
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

    /// The path of one kept file on this machine, when the name is plain and the file
    /// exists.
    pub fn kept_file(&self, id: &str, name: &str) -> Option<PathBuf> {
        if !is_plain_id(id) || !is_plain_file_name(name) {
            return None;
        }
        let p = self.files_dir(id).join(name);
        p.is_file().then_some(p)
    }
}

/// Removes a file; one that is not there is not an error.
pub(super) fn remove_file_if_there(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Remove { path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_files_move_in_are_listed_and_go_with_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open(dir.path().join("s")).unwrap();
        let id = "0b5c1a38-5d2e-4c0e-9a43-7c1f2b9e8d11";
        bodies.create_body(id).unwrap();
        let from = dir.path().join("files");
        fs::create_dir(&from).unwrap();
        fs::write(from.join("console.log"), "boot\n").unwrap();
        fs::write(from.join(".hidden"), "x").unwrap();
        fs::write(from.join("bad name"), "x").unwrap();
        fs::create_dir(from.join("sub")).unwrap();
        assert_eq!(bodies.keep_files(id, &from).unwrap(), vec!["console.log".to_string()]);
        assert!(!from.join("console.log").exists());
        assert_eq!(bodies.kept_files(id).unwrap(), vec!["console.log".to_string()]);
        assert!(bodies.kept_file(id, "console.log").is_some());
        assert!(bodies.kept_file(id, "../x").is_none());
        assert!(bodies.kept_file(id, ".hidden").is_none());
        bodies.remove(id).unwrap();
        assert!(!bodies.files_dir(id).exists());
        assert!(!bodies.body_path(id).exists());
    }
}
