//! The directory of image bodies and kept files, shared by every store: `<uuid>.body` and
//! `<uuid>.files/` (console logs, screenshots, generated kickstarts, the SBOM).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::{is_plain_file_name, is_plain_id, StoreError};

/// A directory of bodies (created if missing).
pub struct Bodies {
    dir: PathBuf,
}

impl Bodies {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Bodies, StoreError> {
        let dir = dir.into();
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::NotADirectory { path: dir });
        }
        fs::create_dir_all(&dir).map_err(|source| StoreError::CreateDir { path: dir.clone(), source })?;
        Ok(Bodies { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where bodies are, for logs.
    pub fn location(&self) -> String {
        self.dir.display().to_string()
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

    /// Removes an image's kept files and body; what is already gone is fine.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        if !is_plain_id(id) {
            return Err(StoreError::NotFound(id.to_string()));
        }
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
        assert_eq!(bodies.kept_files(id), vec!["console.log".to_string()]);
        assert!(bodies.kept_file(id, "console.log").is_some());
        assert!(bodies.kept_file(id, "../x").is_none());
        assert!(bodies.kept_file(id, ".hidden").is_none());
        bodies.remove(id).unwrap();
        assert!(!bodies.files_dir(id).exists());
        assert!(!bodies.body_path(id).exists());
    }
}
