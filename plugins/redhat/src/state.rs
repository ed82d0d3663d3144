//! The state of the package sources a Fedora or RHEL-family build reads, for the host's
//! build cache: the install tree's `.treeinfo` and `repodata/repomd.xml`, and the
//! `repomd.xml` of each template repository, each by URL and SHA-256.
//!
//! `repomd.xml` names the digest of every metadata file of its repository, and those
//! name every package's: equal `repomd.xml` files mean the same packages to install.
//! An ISO install is described by its checksum file when the template gives one (the
//! ISO itself is not downloaded to be hashed); without one, or for a tree that has
//! neither file, the state cannot be told and the build is not cached.

use imagefactory_plugin_api::ops::{SourceFile, SourceState};
use imagefactory_plugin_api::tdl::{Install, ParseOptions, Template};
use sha2::{Digest, Sha256};

use crate::error::RedHatError;
use crate::fetch;

fn file(url: String, bytes: &[u8]) -> SourceFile {
    let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    SourceFile { url, digest: format!("sha256:{hex}") }
}

/// The files of `urls` that exist, with their digests.
fn present(urls: Vec<String>) -> Result<Vec<SourceFile>, RedHatError> {
    let mut out = Vec::new();
    for url in urls {
        if let Some(bytes) = fetch::small_optional(&url)? {
            out.push(file(url, &bytes));
        }
    }
    Ok(out)
}

/// The source state of a build of `template_xml`, or None when it cannot be told.
pub fn source_state(template_xml: &str) -> Result<Option<SourceState>, RedHatError> {
    let template =
        Template::parse(template_xml, &ParseOptions::default()).map_err(|e| RedHatError::Template(e.to_string()))?;
    let install = match &template.os.install {
        Install::Url { url } => {
            let url = url.trim();
            let tree = present(vec![fetch::join(url, ".treeinfo"), fetch::join(url, "repodata/repomd.xml")])?;
            if tree.is_empty() {
                return Ok(None);
            }
            tree
        }
        Install::Iso { checksum: Some(c), iso, .. } => {
            let bytes = fetch::small(c.url.trim())?;
            vec![file(format!("{} (checksums of {})", c.url.trim(), iso.trim()), &bytes)]
        }
        Install::Iso { checksum: None, .. } => return Ok(None),
    };
    let repos = template.repositories.iter().map(|r| fetch::join(r.url.trim(), "repodata/repomd.xml")).collect();
    let mut sources = install;
    sources.extend(present(repos)?);
    Ok(Some(SourceState { sources }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(url: &str, repo: Option<&str>) -> String {
        let repos = repo
            .map(|r| format!("<repositories><repository name='extra'><url>{r}</url></repository></repositories>"))
            .unwrap_or_default();
        format!(
            "<template><name>t</name><os><name>Fedora</name><version>40</version><arch>x86_64</arch>\
             <install type='url'><url>{url}</url></install></os>{repos}</template>"
        )
    }

    #[test]
    fn the_tree_and_repository_metadata_make_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(tree.join("repodata")).unwrap();
        std::fs::create_dir_all(repo.join("repodata")).unwrap();
        std::fs::write(tree.join(".treeinfo"), "[general]\n").unwrap();
        std::fs::write(tree.join("repodata/repomd.xml"), "<repomd>1</repomd>").unwrap();
        std::fs::write(repo.join("repodata/repomd.xml"), "<repomd>r</repomd>").unwrap();
        let t = template(&format!("file://{}", tree.display()), Some(&format!("file://{}/", repo.display())));
        let one = source_state(&t).unwrap().expect("a state");
        assert_eq!(one.sources.len(), 3);
        assert!(one.sources[0].url.ends_with("tree/.treeinfo"), "{:?}", one.sources);
        assert!(one.sources.iter().all(|s| s.digest.starts_with("sha256:") && s.digest.len() == 71));
        std::fs::write(repo.join("repodata/repomd.xml"), "<repomd>r2</repomd>").unwrap();
        let two = source_state(&t).unwrap().expect("a state");
        assert_ne!(one, two, "a repository's new metadata did not change the state");
        let bare = template(&format!("file://{}", dir.path().join("nothing").display()), None);
        assert_eq!(source_state(&bare).unwrap(), None, "a tree without metadata has no state to tell");
    }
}
