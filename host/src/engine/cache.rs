//! The content-addressed image cache: a build whose inputs equal an earlier one's gets
//! that build's bytes instead of building again.
//!
//! **The key** of a base image is the SHA-256 of a canonical JSON document holding
//! everything that decides its bytes: the template as parsed (so whitespace, attribute
//! order and comments do not matter; the root password only as its SHA-256), the OS
//! plugin's name and version, the parameters (all but [`NON_KEY_PARAMETERS`]) and the
//! state of the package sources the build reads, which the plugin reports
//! (`source_state`: for Debian each suite's InRelease). A plugin that cannot report its
//! sources is never cached: the host could not tell when they move on. A target image's
//! key is made the same way from its base's key, the target, both plugins' names and
//! versions, its parameters and the host's target content for it.
//!
//! **An entry** is a directory `<storage>/cache/<key>/`: `body` (a reflink of the built
//! image's body where the file system has them, else a hard link: the blocks are shared,
//! never copied), the image's kept files (`files/`, its SBOM among them) and
//! `entry.json` (the image it came from, its ICICLE, properties, size and last use). A
//! hit links `body` to the new image's body path the same way. Deleting an image
//! removes only its own name for the blocks, so neither the cache nor another image
//! loses a body it still uses.
//!
//! A hard-linked body is the same file as the entry's: the host never writes into a
//! complete image's body (targets, pushes and conversions read it and write their own),
//! which is what makes sharing it safe.
//!
//! **The bound**: `cache_max_bytes` of bodies (allocated bytes); past it the least
//! recently used entries are dropped (their blocks go once no image uses them either).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Parameters that do not change what is built: how the caller hears of it and whether
/// the cache is used.
pub const NON_KEY_PARAMETERS: &[&str] = &["no_cache", "callbacks"];

/// The parameter that forces a build (`--no-cache` on the CLI).
pub const NO_CACHE: &str = "no_cache";

/// What one cache entry holds besides its body and files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryInfo {
    pub key: String,
    /// The image whose build made this entry (`properties.cached_from` of hits).
    pub source_image: String,
    pub icicle: Option<String>,
    pub properties: Map<String, Value>,
    /// The body's SHA-256 (so a hit's SBOM needs no second pass over the disk).
    pub body_sha256: String,
    /// Blocks the body takes on disk.
    pub allocated_bytes: u64,
    /// Seconds since the epoch of the entry's last use (its making or a hit).
    pub last_used: u64,
}

/// Why the cache could not be used; builds go on without it (the cause is logged).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("the template does not parse: {0}")]
    Template(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io { what, path: path.to_path_buf(), source }
}

/// How a body was shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    Reflink,
    HardLink,
}

/// The cache of one store.
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    /// Serializes changes to entries (a hit's use stamp, inserts, eviction).
    lock: Mutex<()>,
}

impl Cache {
    /// The cache under `<storage>/cache`, bounded to `max_bytes` of bodies (0: off).
    pub fn new(storage: &Path, max_bytes: u64) -> Cache {
        Cache { dir: storage.join("cache"), max_bytes, lock: Mutex::new(()) }
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    fn entry_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The entry for `key`, if there is a whole one.
    pub fn lookup(&self, key: &str) -> Option<EntryInfo> {
        if !self.enabled() || !is_key(key) {
            return None;
        }
        let dir = self.entry_dir(key);
        let info: EntryInfo = serde_json::from_slice(&fs::read(dir.join("entry.json")).ok()?).ok()?;
        dir.join("body").is_file().then_some(info)
    }

    /// Gives image body `body` and files directory `files` the entry's bytes, and marks
    /// the entry used.
    pub fn restore(&self, info: &EntryInfo, body: &Path, files: &Path) -> Result<Shared, CacheError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.entry_dir(&info.key);
        // The body last: a failure before it leaves the image's own (empty) body file,
        // never a link to the entry's bytes that a build would then write through.
        copy_files(&dir.join("files"), files)?;
        let shared = share(&dir.join("body"), body)?;
        let mut used = info.clone();
        used.last_used = now();
        if let Err(e) = write_json(&dir.join("entry.json"), &used) {
            tracing::warn!(key = %info.key, error = %e, "cannot mark a cache entry used");
        }
        Ok(shared)
    }

    /// Keeps a finished image's body and files as the entry for `info.key`, then drops
    /// least recently used entries past the bound. An entry that exists is kept.
    pub fn insert(&self, info: &EntryInfo, body: &Path, files: &Path) -> Result<Shared, CacheError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.entry_dir(&info.key);
        fs::create_dir_all(&self.dir).map_err(io_err("cannot create", &self.dir))?;
        // Built aside and renamed into place, so a lookup never sees half an entry.
        let tmp = self.dir.join(format!(".{}.tmp", info.key));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err("cannot create", &tmp))?;
        let result = (|| {
            let shared = share(body, &tmp.join("body"))?;
            copy_files(files, &tmp.join("files"))?;
            write_json(&tmp.join("entry.json"), info)?;
            if dir.exists() {
                return Ok(shared);
            }
            fs::rename(&tmp, &dir).map_err(io_err("cannot rename into", &dir))?;
            Ok(shared)
        })();
        let _ = fs::remove_dir_all(&tmp);
        self.evict_locked();
        result
    }

    /// Every whole entry, least recently used first.
    pub fn entries(&self) -> Vec<EntryInfo> {
        let Ok(read) = fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out: Vec<EntryInfo> = read
            .flatten()
            .filter_map(|e| e.file_name().to_str().filter(|n| is_key(n)).and_then(|k| self.lookup(k)))
            .collect();
        out.sort_by_key(|e| (e.last_used, e.key.clone()));
        out
    }

    fn evict_locked(&self) {
        let entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.allocated_bytes).sum();
        for e in entries {
            if total <= self.max_bytes {
                break;
            }
            let dir = self.entry_dir(&e.key);
            match fs::remove_dir_all(&dir) {
                Ok(()) => {
                    total = total.saturating_sub(e.allocated_bytes);
                    tracing::info!(key = %e.key, bytes = e.allocated_bytes, "dropped a cache entry (cache_max_bytes)");
                }
                Err(err) => tracing::warn!(dir = %dir.display(), error = %err, "cannot drop a cache entry"),
            }
        }
    }
}

/// The cache key of a base image (see the module documentation).
pub fn base_key(
    template: &str,
    plugin: (&str, &str),
    parameters: &Map<String, Value>,
    sources: &imagefactory_plugin_api::ops::SourceState,
) -> Result<String, CacheError> {
    let doc = json!({
        "kind": "base_image",
        "template": normalized_template(template)?,
        "plugin": {"name": plugin.0, "version": plugin.1},
        "parameters": key_parameters(parameters),
        "sources": sources.sources.iter().map(|s| json!({"url": s.url, "digest": s.digest})).collect::<Vec<_>>(),
    });
    Ok(sha256_hex(doc.to_string().as_bytes()))
}

/// The cache key of a target image made from a base whose key is `base_key`.
pub fn target_key(
    base_key: &str,
    target: &str,
    template: &str,
    os: (&str, &str),
    cloud: (&str, &str),
    parameters: &Map<String, Value>,
    host_content: &imagefactory_plugin_api::ops::TargetContent,
) -> Result<String, CacheError> {
    let doc = json!({
        "kind": "target_image",
        "base": base_key,
        "target": target,
        "template": normalized_template(template)?,
        "os_plugin": {"name": os.0, "version": os.1},
        "cloud_plugin": {"name": cloud.0, "version": cloud.1},
        "parameters": key_parameters(parameters),
        "host_content": host_content,
    });
    Ok(sha256_hex(doc.to_string().as_bytes()))
}

/// The template as parsed, as JSON: formatting gone, the root password hashed.
fn normalized_template(xml: &str) -> Result<Value, CacheError> {
    let mut t = imagefactory_plugin_api::tdl::Template::parse(xml, &Default::default())
        .map_err(|e| CacheError::Template(e.to_string()))?;
    t.os.rootpw = t.os.rootpw.map(|pw| format!("sha256:{}", sha256_hex(pw.as_bytes())));
    serde_json::to_value(&t).map_err(|e| CacheError::Template(e.to_string()))
}

/// The parameters that enter a key (serde_json's map is sorted, so order does not matter).
fn key_parameters(parameters: &Map<String, Value>) -> Map<String, Value> {
    parameters
        .iter()
        .filter(|(k, _)| !NON_KEY_PARAMETERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether the parameters ask for a build whatever the cache holds.
pub fn no_cache(parameters: &Map<String, Value>) -> bool {
    imagefactory_plugin_api::ops::parameter_as_bool(parameters, NO_CACHE).unwrap_or(false)
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), CacheError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| CacheError::Io {
        what: "cannot encode",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, bytes).map_err(io_err("cannot write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("cannot rename into", path))
}

/// Makes `to` name the bytes of `from` without copying them: a reflink (FICLONE) where
/// the file system has them, else a hard link. `to` is replaced.
pub fn share(from: &Path, to: &Path) -> Result<Shared, CacheError> {
    match fs::remove_file(to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(CacheError::Io { what: "cannot replace", path: to.to_path_buf(), source: e }),
    }
    if reflink(from, to).is_ok() {
        return Ok(Shared::Reflink);
    }
    let _ = fs::remove_file(to);
    fs::hard_link(from, to).map_err(io_err("cannot link", to))?;
    Ok(Shared::HardLink)
}

/// A copy-on-write clone of `from` at `to` (Btrfs, XFS, ...); an error elsewhere.
fn reflink(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `_IOW(0x94, 9, int)` from linux/fs.h.
    const FICLONE: libc::c_ulong = 0x4004_9409;
    let src = fs::File::open(from)?;
    let dst = fs::OpenOptions::new().write(true).create_new(true).open(to)?;
    // SAFETY: both descriptors are open files we own for the length of the call; FICLONE
    // reads the source descriptor as its int argument and touches no other memory.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies the plain files of `from` (an image's kept files) into `to`.
fn copy_files(from: &Path, to: &Path) -> Result<(), CacheError> {
    let Ok(read) = fs::read_dir(from) else { return Ok(()) };
    fs::create_dir_all(to).map_err(io_err("cannot create", to))?;
    for entry in read.flatten() {
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            let dest = to.join(entry.file_name());
            fs::copy(entry.path(), &dest).map_err(io_err("cannot copy to", &dest))?;
        }
    }
    Ok(())
}

/// Blocks a file takes on disk.
pub fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagefactory_plugin_api::ops::{SourceFile, SourceState};

    const T: &str = "<template><name>t</name><os><name>Debian</name><version>12</version>\
        <arch>x86_64</arch><install type='url'><url>host</url></install><rootpw>pw</rootpw></os></template>";

    fn sources(digest: &str) -> SourceState {
        SourceState {
            sources: vec![SourceFile { url: "http://m/dists/bookworm/InRelease".into(), digest: digest.into() }],
        }
    }

    fn key(template: &str, version: &str, params: Value, digest: &str) -> String {
        let Value::Object(p) = params else { panic!("an object") };
        base_key(template, ("Debian", version), &p, &sources(digest)).unwrap()
    }

    #[test]
    fn the_key_ignores_formatting_and_notices_every_input() {
        let k = key(T, "1.0", json!({}), "sha256:aa");
        let reformatted = "<template>\n  <name>t</name>\n  <os>\n    <name>Debian</name>\n    <version>12</version>\n    \
            <arch>x86_64</arch>\n    <install type=\"url\">\n      <url>host</url>\n    </install>\n    <rootpw>pw</rootpw>\n  </os>\n</template>\n";
        assert_eq!(key(reformatted, "1.0", json!({}), "sha256:aa"), k, "whitespace and quotes changed the key");
        assert_eq!(key(T, "1.0", json!({"no_cache": false, "callbacks": ["http://x/"]}), "sha256:aa"), k);
        assert_ne!(key(&T.replace("<rootpw>pw", "<rootpw>other"), "1.0", json!({}), "sha256:aa"), k);
        assert_ne!(key(T, "1.1", json!({}), "sha256:aa"), k, "a plugin version");
        assert_ne!(key(T, "1.0", json!({"disk_size": 8}), "sha256:aa"), k, "a parameter");
        assert_ne!(key(T, "1.0", json!({}), "sha256:bb"), k, "the source state");
        let with_package = T.replace("</template>", "<packages><package name='vim'/></packages></template>");
        assert_ne!(key(&with_package, "1.0", json!({}), "sha256:aa"), k, "a package");
        assert!(is_key(&k));
    }

    #[test]
    fn the_root_password_is_only_hashed_into_the_key() {
        let v = normalized_template(T).unwrap();
        assert!(!v.to_string().contains("\"pw\""), "{v}");
    }

    #[test]
    fn entries_share_bodies_and_the_bound_drops_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), 10_000);
        let files = dir.path().join("files");
        fs::create_dir_all(&files).unwrap();
        fs::write(files.join("sbom.spdx.json"), b"{}").unwrap();
        let mut keys = Vec::new();
        for n in 0..3u8 {
            let body = dir.path().join(format!("{n}.body"));
            fs::write(&body, vec![n; 8192]).unwrap();
            let key = format!("{:064x}", n);
            let info = EntryInfo {
                key: key.clone(),
                source_image: format!("image-{n}"),
                icicle: None,
                properties: Map::new(),
                body_sha256: String::new(),
                allocated_bytes: allocated_bytes(&body),
                last_used: u64::from(n),
            };
            cache.insert(&info, &body, &files).unwrap();
            keys.push(key);
        }
        // 8 KiB bodies under a 10,000-byte bound: only the newest stays.
        assert!(cache.lookup(&keys[0]).is_none() && cache.lookup(&keys[1]).is_none());
        let last = cache.lookup(&keys[2]).expect("the newest entry");
        let restored = dir.path().join("new.body");
        fs::write(&restored, b"to be replaced").unwrap();
        cache.restore(&last, &restored, &dir.path().join("newfiles")).unwrap();
        assert_eq!(fs::read(&restored).unwrap(), vec![2u8; 8192]);
        assert!(dir.path().join("newfiles/sbom.spdx.json").is_file());
        // Deleting the source image leaves the cache's and the new image's bytes.
        fs::remove_file(dir.path().join("2.body")).unwrap();
        assert_eq!(fs::read(dir.path().join("cache").join(&keys[2]).join("body")).unwrap(), vec![2u8; 8192]);
        assert!(Cache::new(dir.path(), 0).lookup(&keys[2]).is_none(), "a bound of 0 turns the cache off");
    }
}
