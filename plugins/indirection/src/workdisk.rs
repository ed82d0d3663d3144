//! The working disk: the utility VM's second disk (`/dev/vdb`), a sparse raw file with
//! one partition holding an ext4 file system with the job, and the input image as a file
//! (unless it is attached as a device). Made with `sfdisk` and `mkfs.ext4 -d`, the input
//! written in with debugfs (holes stay holes), the results read out with debugfs: no
//! loop device, no mount.
//!
//! ext4 rather than the original's ext2: with uninitialised block groups a 30 GiB file
//! system is made in under a second and takes a few MiB until it is used.

use std::path::{Path, PathBuf};

use diskimage::ext4::{random_uuid, Ext4};
use diskimage::layout::Layout;
use diskimage::process::Watch;

use crate::debugfs::{Fs, Kind};
use crate::error::IndirectionError;
use crate::job::{Job, STATUS_PATH};
use crate::params::Input;

/// The file system label of the working disk (what `blkid` shows in the VM).
pub const LABEL: &str = "imagefactory-work";

/// A working disk on the host.
#[derive(Debug)]
pub struct WorkDisk {
    pub path: PathBuf,
    pub layout: Layout,
}

/// The size: the asked-for GiB, or more when the input file needs it (twice the input,
/// for tools that write a result as big as their input, and 1 GiB to work in).
pub fn size_for(gib: u64, input_len: Option<u64>) -> u64 {
    let asked = gib << 30;
    match input_len {
        Some(n) => asked.max(n.saturating_mul(2).saturating_add(1 << 30)),
        None => asked,
    }
}

impl WorkDisk {
    /// Makes the disk at `path`: the job staged from `stage` (a scratch directory), and
    /// the input base image `input_body` copied in when `input` says so.
    pub fn create(
        path: &Path,
        stage: &Path,
        gib: u64,
        job: &Job,
        input: &Input,
        input_body: &Path,
        watch: &dyn Watch,
    ) -> Result<WorkDisk, IndirectionError> {
        job.stage(stage)?;
        let input_len = match input {
            Input::File(dest) => {
                // debugfs `write` needs the file's directory: make it part of the tree.
                if let Some((dir, _)) = dest.rsplit_once('/') {
                    let d = stage.join(dir.trim_start_matches('/'));
                    std::fs::create_dir_all(&d).map_err(|e| diskimage::DiskError::io("cannot create", d.clone(), e))?;
                }
                let md = std::fs::metadata(input_body).map_err(|e| {
                    diskimage::DiskError::io("cannot read the input image", input_body.to_path_buf(), e)
                })?;
                Some(md.len())
            }
            Input::Device => None,
        };
        let layout = Layout::single(size_for(gib, input_len))?;
        layout.create(path, watch)?;
        Ext4 { uuid: random_uuid()?, label: LABEL.into() }.write(path, &layout, stage, watch)?;
        let disk = WorkDisk { path: path.to_path_buf(), layout };
        if let Input::File(dest) = input {
            disk.fs().write(input_body, dest, watch)?;
        }
        Ok(disk)
    }

    /// The file system of partition 1.
    pub fn fs(&self) -> Fs {
        Fs::new(&self.path, self.layout.partition_start)
    }

    /// The step record the job left (empty when it left none).
    pub fn status(&self, watch: &dyn Watch) -> Result<String, IndirectionError> {
        Ok(self.fs().cat(STATUS_PATH, watch)?)
    }

    /// Copies `results_location` out to `out`; returns its size.
    pub fn take_results(&self, location: &str, out: &Path, watch: &dyn Watch) -> Result<u64, IndirectionError> {
        match self.fs().stat(location, watch)? {
            Kind::Missing => Err(IndirectionError::ResultsMissing { path: location.to_string() }),
            Kind::Other => Err(IndirectionError::ResultsNotAFile { path: location.to_string() }),
            Kind::Regular(_) => Ok(self.fs().dump(location, out, watch)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage::process::Quiet;

    #[test]
    fn sizes() {
        assert_eq!(size_for(30, None), 30 << 30);
        assert_eq!(size_for(30, Some(2 << 30)), 30 << 30);
        assert_eq!(size_for(1, Some(2 << 30)), 5 << 30);
    }

    #[test]
    fn a_working_disk_holds_the_job_and_the_input_and_gives_results_back() {
        diskimage::tools::require(diskimage::tools::DISK_TOOLS).unwrap();
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("base.body");
        let f = std::fs::File::create(&input).unwrap();
        f.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"input", 4 << 20).unwrap();
        drop(f);
        let frag =
            crate::job::parse("<template><commands><command name='a'>true</command></commands></template>").unwrap();
        let job = crate::job::build(&frag, "M", &|_: &str| Ok(Vec::new())).unwrap();
        let disk = WorkDisk::create(
            &d.path().join("work.raw"),
            &d.path().join("stage"),
            1,
            &job,
            &Input::File("/in/input_image.raw".into()),
            &input,
            &Quiet,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&disk.path).unwrap().len(), (1 << 30) + (16 << 20));
        assert!(diskimage::size::allocated(&disk.path).unwrap() < 64 << 20, "the working disk should stay sparse");
        let fs = disk.fs();
        assert_eq!(fs.stat("/in/input_image.raw", &Quiet).unwrap(), Kind::Regular(8 << 20));
        assert_eq!(fs.cat("/.imagefactory/job/cmd/0", &Quiet).unwrap(), "true");
        assert_eq!(disk.status(&Quiet).unwrap(), "");
        let err = disk.take_results("/results/images/boot.iso", &d.path().join("out"), &Quiet).unwrap_err();
        assert_eq!(
            err.to_string(),
            "results_location /results/images/boot.iso was not found on the working disk after the utility VM stopped; see file console.log of this image"
        );
        assert!(matches!(
            disk.take_results("/in", &d.path().join("out"), &Quiet),
            Err(IndirectionError::ResultsNotAFile { .. })
        ));
        let out = d.path().join("out");
        assert_eq!(disk.take_results("/in/input_image.raw", &out, &Quiet).unwrap(), 8 << 20);
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
    }
}
