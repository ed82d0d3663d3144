//! The apt sources written into the image: the mirror it was built from, and the
//! template's repositories (the persisted ones stay in the image, the others are
//! removed once the build no longer needs them).

use std::path::{Path, PathBuf};

use diskimage::chroot::host_path;
use diskimage::DiskError;
use imagefactory_plugin_api::tdl::Repository;

/// `deb <mirror> <suite> main`: the image's own archive.
pub fn main_line(mirror: &str, suite: &str) -> String {
    format!("deb {mirror} {suite} main\n")
}

/// The sources line of a template repository. Its url is either a plain archive URL
/// (the image's suite and `main` are used) or, when it holds spaces, `url suite
/// components...` as in a sources.list line. Unsigned repositories are marked trusted,
/// as Oz turns off gpgcheck for them.
pub fn repository_line(repo: &Repository, suite: &str) -> String {
    let options = if repo.signed { "" } else { "[trusted=yes] " };
    let url = repo.url.trim();
    if url.contains(char::is_whitespace) {
        format!("deb {options}{}\n", url.split_whitespace().collect::<Vec<_>>().join(" "))
    } else {
        format!("deb {options}{url} {suite} main\n")
    }
}

/// The file a repository goes to: `imagefactory-<name>.list`, the name reduced to the
/// characters apt accepts in a sources file name.
pub fn repository_file(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect();
    format!("imagefactory-{clean}.list")
}

/// Writes sources.list (the mirror) and one file per repository into `root`.
pub fn write_all(root: &Path, mirror: &str, suite: &str, repos: &[Repository]) -> Result<(), DiskError> {
    let list = host_path(root, "/etc/apt/sources.list")?;
    std::fs::write(&list, main_line(mirror, suite)).map_err(|e| DiskError::io("cannot write", &list, e))?;
    for r in repos {
        let path = repo_path(root, &r.name)?;
        std::fs::write(&path, repository_line(r, suite)).map_err(|e| DiskError::io("cannot write", &path, e))?;
    }
    Ok(())
}

/// Removes the files of repositories the template did not ask to keep.
pub fn remove_unpersisted(root: &Path, repos: &[Repository]) -> Result<(), DiskError> {
    for r in repos.iter().filter(|r| !r.persisted) {
        let path = repo_path(root, &r.name)?;
        std::fs::remove_file(&path).map_err(|e| DiskError::io("cannot remove", &path, e))?;
    }
    Ok(())
}

fn repo_path(root: &Path, name: &str) -> Result<PathBuf, DiskError> {
    host_path(root, &format!("/etc/apt/sources.list.d/{}", repository_file(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, url: &str, signed: bool, persisted: bool) -> Repository {
        Repository { name: name.into(), url: url.into(), signed, persisted, sslverify: false }
    }

    #[test]
    fn lines() {
        assert_eq!(main_line("http://m.example/debian", "bookworm"), "deb http://m.example/debian bookworm main\n");
        assert_eq!(
            repository_line(&repo("x", "http://r.example/debian", false, true), "bookworm"),
            "deb [trusted=yes] http://r.example/debian bookworm main\n"
        );
        assert_eq!(
            repository_line(&repo("x", " http://r.example/apt  stable  main contrib ", true, true), "bookworm"),
            "deb http://r.example/apt stable main contrib\n"
        );
        assert_eq!(repository_file("my repo/../x"), "imagefactory-my_repo_.._x.list");
    }

    #[test]
    fn persisted_repositories_stay() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/apt/sources.list.d")).unwrap();
        let repos =
            vec![repo("keep", "http://k.example/d", false, true), repo("drop", "http://d.example/d", false, false)];
        write_all(dir.path(), "http://m.example/debian", "trixie", &repos).unwrap();
        let d = dir.path().join("etc/apt/sources.list.d");
        assert!(d.join("imagefactory-keep.list").exists() && d.join("imagefactory-drop.list").exists());
        remove_unpersisted(dir.path(), &repos).unwrap();
        assert!(d.join("imagefactory-keep.list").exists());
        assert!(!d.join("imagefactory-drop.list").exists());
        let main = std::fs::read_to_string(dir.path().join("etc/apt/sources.list")).unwrap();
        assert_eq!(main, "deb http://m.example/debian trixie main\n");
    }
}
