//! An NFS export storage domain, as a directory: where RHEV-M (and oVirt) look for
//! templates to import.
//!
//! ```text
//! <nfs-dir>/<domain uuid>/dom_md/metadata            CLASS=Backup, SDUUID=..., _SHA_CKSUM
//! <nfs-dir>/<domain uuid>/images/<image group>/<volume>       the disk
//! <nfs-dir>/<domain uuid>/images/<image group>/<volume>.meta  VDSM volume metadata
//! <nfs-dir>/<domain uuid>/master/vms/<template>/<template>.ovf
//! ```
//!
//! An existing domain in the directory is used (the one named by `storage_domain`, or
//! the only one); an empty directory gets a new one, initialised as an engine's "New
//! Domain → Export" would. The disk is copied in constant memory (1 MiB at a time, holes
//! kept as holes, a failed write retried), to a hidden name renamed into place, then read
//! back with qemu-img. Files take the owner of the domain directory (vdsm:kvm, 36:36, on a
//! real export domain) when the plugin runs as root.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};

use crate::ovf;
use crate::provider::is_uuid;
use crate::report::Report;

const CHUNK: usize = 1 << 20;
/// Tries for one chunk's write (an NFS hiccup, EINTR) before the copy fails.
const WRITE_TRIES: u32 = 3;

/// What went wrong with the export domain. One line.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Layout(String),
    #[error("cancelled")]
    Cancelled,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DomainError + 'a {
    move |source| DomainError::Io { what, path: path.display().to_string(), source }
}

/// A fresh random UUID (the kernel's generator).
pub fn new_uuid() -> Result<String, DomainError> {
    let p = Path::new("/proc/sys/kernel/random/uuid");
    Ok(fs::read_to_string(p).map_err(io_err("cannot read", p))?.trim().to_string())
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `YYYY/MM/DD HH:MM:SS` (UTC) for `secs` since the epoch.
pub fn ovf_date(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// VDSM's metadata checksum: sha1 over the sorted `KEY=VALUE` lines, concatenated.
pub fn metadata_checksum(lines: &[String]) -> String {
    let mut sorted: Vec<&String> = lines.iter().collect();
    sorted.sort();
    let mut h = Sha1::new();
    for l in sorted {
        h.update(l.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One export domain on disk.
#[derive(Debug, Clone)]
pub struct Domain {
    pub root: PathBuf,
    pub uuid: String,
    owner: Option<(u32, u32)>,
}

impl Domain {
    /// Finds the export domain under `nfs_dir`; in an empty directory, creates one when
    /// `create` gives its remote path (`host:/path`), else fails.
    pub fn open(nfs_dir: &Path, wanted: Option<&str>, create: Option<&str>) -> Result<(Domain, bool), DomainError> {
        let entries = fs::read_dir(nfs_dir).map_err(io_err("cannot list the export directory", nfs_dir))?;
        let mut domains = Vec::new();
        let mut other = 0usize;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_uuid(&name) && e.path().join("dom_md/metadata").is_file() {
                domains.push(name);
            } else if !name.starts_with('.') && name != "__DIRECT_IO_TEST__" {
                other += 1;
            }
        }
        domains.sort();
        let pick = match wanted {
            Some(w) => domains
                .iter()
                .find(|d| d.as_str() == w)
                .cloned()
                .ok_or_else(|| DomainError::Layout(format!("{} holds no storage domain {w}", nfs_dir.display())))?,
            None if domains.len() == 1 => domains[0].clone(),
            None if domains.len() > 1 => {
                return Err(DomainError::Layout(format!(
                    "{} holds {} storage domains; name one with storage_domain",
                    nfs_dir.display(),
                    domains.len()
                )))
            }
            None if other > 0 || create.is_none() => {
                return Err(DomainError::Layout(format!(
                    "{} holds no export storage domain (no <uuid>/dom_md/metadata) but other files; \
                     give an export domain's mount point or an empty directory",
                    nfs_dir.display()
                )))
            }
            None => return Ok((Domain::create(nfs_dir, create.unwrap_or(""))?, true)),
        };
        let root = nfs_dir.join(&pick);
        let md = fs::read_to_string(root.join("dom_md/metadata")).map_err(io_err("cannot read", &root))?;
        if !md.lines().any(|l| l.trim() == "CLASS=Backup") {
            return Err(DomainError::Layout(format!(
                "storage domain {pick} in {} is not an export domain (its metadata has no CLASS=Backup)",
                nfs_dir.display()
            )));
        }
        let owner = fs::metadata(&root).ok().map(|m| (m.uid(), m.gid()));
        Ok((Domain { root, uuid: pick, owner }, false))
    }

    fn create(nfs_dir: &Path, remote: &str) -> Result<Domain, DomainError> {
        let uuid = new_uuid()?;
        let root = nfs_dir.join(&uuid);
        for d in ["dom_md", "images", "master/vms", "master/tasks"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err("cannot create", &p))?;
        }
        let mut lines: Vec<String> = [
            ("CLASS", "Backup"),
            ("DESCRIPTION", "imagefactory export domain"),
            ("IOOPTIMEOUTSEC", "10"),
            ("LEASERETRIES", "3"),
            ("LEASETIMESEC", "60"),
            ("LOCKPOLICY", ""),
            ("LOCKRENEWALINTERVALSEC", "5"),
            ("MASTER_VERSION", "0"),
            ("POOL_UUID", ""),
            ("REMOTE_PATH", remote),
            ("ROLE", "Regular"),
            ("SDUUID", uuid.as_str()),
            ("TYPE", "NFS"),
            ("VERSION", "0"),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
        let sum = metadata_checksum(&lines);
        lines.push(format!("_SHA_CKSUM={sum}"));
        let md = root.join("dom_md/metadata");
        fs::write(&md, lines.join("\n") + "\n").map_err(io_err("cannot write", &md))?;
        for f in ["ids", "inbox", "leases", "outbox"] {
            let p = root.join("dom_md").join(f);
            File::create(&p).map_err(io_err("cannot create", &p))?;
        }
        Ok(Domain { root, uuid, owner: None })
    }

    /// Gives `path` the domain directory's owner (when running as root and it differs).
    fn chown(&self, path: &Path) {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if let (true, Some((uid, gid))) = (root, self.owner) {
            let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
        }
    }

    pub fn image_dir(&self, image_group: &str) -> PathBuf {
        self.root.join("images").join(image_group)
    }

    pub fn template_dir(&self, template: &str) -> PathBuf {
        self.root.join("master/vms").join(template)
    }
}

/// What [`copy_sparse`] did.
#[derive(Debug, Clone, Copy)]
pub struct CopyStats {
    pub bytes: u64,
    pub written: u64,
    pub retries: u32,
    pub secs: f64,
}

/// Copies `src` to `dst` 1 MiB at a time: all-zero chunks become holes, a failed write is
/// retried, `cancelled` is asked between chunks.
pub fn copy_sparse(r: &dyn Report, src: &Path, dst: &Path) -> Result<CopyStats, DomainError> {
    let started = Instant::now();
    let input = File::open(src).map_err(io_err("cannot read", src))?;
    let len = input.metadata().map_err(io_err("cannot read", src))?.len();
    let out =
        OpenOptions::new().write(true).create(true).truncate(true).open(dst).map_err(io_err("cannot create", dst))?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    let mut written = 0u64;
    let mut retries = 0u32;
    let mut last = u8::MAX;
    while pos < len {
        if r.cancelled() {
            return Err(DomainError::Cancelled);
        }
        let n = (len - pos).min(CHUNK as u64) as usize;
        input.read_exact_at(&mut buf[..n], pos).map_err(io_err("cannot read", src))?;
        if buf[..n].iter().any(|b| *b != 0) {
            let mut tries = 1;
            loop {
                match out.write_all_at(&buf[..n], pos) {
                    Ok(()) => break,
                    Err(e) if tries < WRITE_TRIES => {
                        r.warn(&format!(
                            "writing {} at byte {pos} failed ({e}); try {} of {WRITE_TRIES}",
                            dst.display(),
                            tries + 1
                        ));
                        tries += 1;
                        retries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                    Err(e) => return Err(io_err("cannot write", dst)(e)),
                }
            }
            written += n as u64;
        }
        pos += n as u64;
        let pct = (10 + pos.saturating_mul(80) / len.max(1)).min(90) as u8;
        if pct != last {
            last = pct;
            r.percent(pct);
        }
    }
    out.set_len(len).map_err(io_err("cannot write", dst))?;
    out.sync_all().map_err(io_err("cannot sync", dst))?;
    Ok(CopyStats { bytes: len, written, retries, secs: started.elapsed().as_secs_f64() })
}

/// A template written into the domain.
#[derive(Debug, Clone)]
pub struct Placed {
    pub template_id: String,
    pub image_group: String,
    pub volume: String,
    pub volume_path: PathBuf,
    pub ovf_path: PathBuf,
    pub copy: CopyStats,
}

/// What the template is made of.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    pub name: String,
    pub description: String,
    pub cpus: u32,
    pub memory_mb: u64,
}

/// Writes the body as a template into the domain: the volume (+ `.meta`), then the OVF
/// last, so an engine never sees an OVF whose disk is incomplete. A failure removes what
/// was written.
pub fn place(r: &dyn Report, d: &Domain, body: &Path, spec: &TemplateSpec) -> Result<Placed, DomainError> {
    let info = diskformat::info(body).map_err(|e| DomainError::Layout(e.to_string()))?;
    let volume_format = match info.format.as_str() {
        "qcow2" => "COW",
        "raw" => "RAW",
        other => return Err(DomainError::Layout(format!("the target image is {other}; RHEV-M takes qcow2 or raw"))),
    };
    let template_id = new_uuid()?;
    let image_group = new_uuid()?;
    let volume = new_uuid()?;
    let img_dir = d.image_dir(&image_group);
    let tpl_dir = d.template_dir(&template_id);
    let result = (|| {
        fs::create_dir_all(&img_dir).map_err(io_err("cannot create", &img_dir))?;
        d.chown(&img_dir);
        let volume_path = img_dir.join(&volume);
        let partial = img_dir.join(format!(".{volume}.partial"));
        r.activity(&format!("Copying the disk into export domain {} as image {image_group}", d.uuid));
        let copy = copy_sparse(r, body, &partial)?;
        fs::rename(&partial, &volume_path).map_err(io_err("cannot rename into place", &volume_path))?;
        d.chown(&volume_path);
        r.activity("Checking the copied volume");
        let got = diskformat::verify(&volume_path, &info.format, Some(info.virtual_size))
            .map_err(|e| DomainError::Layout(format!("the copied volume does not read back: {e}")))?;
        let created = now();
        let meta = [
            format!("DOMAIN={}", d.uuid),
            format!("CTIME={created}"),
            format!("FORMAT={volume_format}"),
            "DISKTYPE=2".to_string(),
            "LEGALITY=LEGAL".to_string(),
            format!("SIZE={}", got.virtual_size.div_ceil(512)),
            "VOLTYPE=LEAF".to_string(),
            format!("DESCRIPTION={}", spec.description.replace('\n', " ")),
            format!("IMAGE={image_group}"),
            format!("PUUID={}", ovf::NIL),
            format!("MTIME={created}"),
            "POOL_UUID=".to_string(),
            format!("TYPE={}", if volume_format == "COW" { "SPARSE" } else { "PREALLOCATED" }),
            "GEN=0".to_string(),
            "EOF".to_string(),
        ];
        let meta_path = img_dir.join(format!("{volume}.meta"));
        fs::write(&meta_path, meta.join("\n") + "\n").map_err(io_err("cannot write", &meta_path))?;
        d.chown(&meta_path);
        let text = ovf::descriptor(&ovf::TemplateOvf {
            name: spec.name.clone(),
            description: spec.description.clone(),
            template_id: template_id.clone(),
            storage_domain: d.uuid.clone(),
            image_group: image_group.clone(),
            volume: volume.clone(),
            volume_format,
            virtual_size: got.virtual_size,
            file_size: copy.bytes,
            cpus: spec.cpus,
            memory_mb: spec.memory_mb,
            created: ovf_date(created),
        });
        fs::create_dir_all(&tpl_dir).map_err(io_err("cannot create", &tpl_dir))?;
        d.chown(&tpl_dir);
        let ovf_path = tpl_dir.join(format!("{template_id}.ovf"));
        let tmp = tpl_dir.join(format!(".{template_id}.ovf.partial"));
        fs::write(&tmp, text).map_err(io_err("cannot write", &tmp))?;
        fs::rename(&tmp, &ovf_path).map_err(io_err("cannot rename into place", &ovf_path))?;
        d.chown(&ovf_path);
        Ok(Placed {
            template_id: template_id.clone(),
            image_group: image_group.clone(),
            volume: volume.clone(),
            volume_path,
            ovf_path,
            copy,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tpl_dir);
        let _ = fs::remove_dir_all(&img_dir);
    }
    result
}

/// Removes template `template_id` and the image groups its OVF names. `Ok(false)` when
/// the template is not in the domain.
pub fn remove(d: &Domain, template_id: &str) -> Result<bool, DomainError> {
    if !is_uuid(template_id) {
        return Err(DomainError::Layout(format!("'{template_id}' is not a RHEV-M template id")));
    }
    let tpl_dir = d.template_dir(template_id);
    let ovf_path = tpl_dir.join(format!("{template_id}.ovf"));
    let text = match fs::read_to_string(&ovf_path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("cannot read", &ovf_path)(e)),
    };
    let parsed = ovf::parse(&text).map_err(DomainError::Layout)?;
    for href in &parsed.files {
        let group = href.split('/').next().unwrap_or("");
        if is_uuid(group) {
            let dir = d.image_dir(group);
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(io_err("cannot remove", &dir))?;
            }
        }
    }
    fs::remove_dir_all(&tpl_dir).map_err(io_err("cannot remove", &tpl_dir))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_checksums() {
        assert_eq!(ovf_date(0), "1970/01/01 00:00:00");
        assert_eq!(ovf_date(1_709_251_199), "2024/02/29 23:59:59");
        let a = metadata_checksum(&["B=2".into(), "A=1".into()]);
        assert_eq!(a, metadata_checksum(&["A=1".into(), "B=2".into()]));
        assert_eq!(a.len(), 40);
    }

    #[test]
    fn an_empty_directory_gets_a_domain_and_a_full_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (d, created) = Domain::open(dir.path(), None, Some("nfs:/export")).unwrap();
        assert!(created);
        let md = fs::read_to_string(d.root.join("dom_md/metadata")).unwrap();
        assert!(md.contains("CLASS=Backup") && md.contains(&format!("SDUUID={}", d.uuid)));
        let (again, created) = Domain::open(dir.path(), None, None).unwrap();
        assert!(!created);
        assert_eq!(again.uuid, d.uuid);
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("stray.txt"), "x").unwrap();
        assert!(Domain::open(other.path(), None, Some(""))
            .unwrap_err()
            .to_string()
            .contains("no export storage domain"));
    }
}
