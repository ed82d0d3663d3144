//! The target build, in order: parameters; the utility image; the job; the utility VM's
//! boot files; its qcow2 overlay; the working disk; the VM run; the step record; the
//! results copied into the target image's body.

use std::cell::RefCell;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use diskimage::process::{self, Options, Watch};
use diskimage::tools::{self, Tool};
use guest::{Boot, Disk, Guest, GuestConfig, GuestError, GuestSettings, Network, CONSOLE_FILE};
use imagefactory_plugin_api::prelude::*;

use crate::error::IndirectionError;
use crate::job::{self, Job};
use crate::kernel;
use crate::params::{Input, Params, DEFAULT_TIMEOUT};
use crate::status;
use crate::workdisk::WorkDisk;

/// The host tools a build runs.
pub const TOOLS: &[Tool] = &[
    Tool::new("sfdisk", "fdisk"),
    Tool::new("mkfs.ext4", "e2fsprogs"),
    Tool::new("debugfs", "e2fsprogs"),
    Tool::new("qemu-img", "qemu-utils"),
    Tool::new("qemu-system-x86_64", "qemu-system-x86"),
    Tool::new("fallocate", "util-linux"),
];

/// Tool output goes to the build log; the build's cancel flag stops tools.
struct HostWatch<'a, 'h>(&'a Host<'h>);

impl Watch for HostWatch<'_, '_> {
    fn line(&self, what: &str, line: &str) {
        self.0.debug(&format!("{what}: {line}"));
    }
    fn cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// Removes the large scratch files (overlay, working disk, boot files) on every way out,
/// even though the host removes the work directory too: they are gigabytes.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// The utility image: which one and where its body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utility {
    pub id: String,
    pub body: PathBuf,
}

/// Resolves `utility_image` against the store images the host looked up; absent means
/// the input base image.
pub fn resolve_utility(params: &Params, req: &TargetHookRequest) -> Result<Utility, IndirectionError> {
    let Some(id) = &params.utility_image else {
        return Ok(Utility { id: req.base_image_id.clone(), body: PathBuf::from(&req.base_body_path) });
    };
    if *id == req.base_image_id {
        return Ok(Utility { id: id.clone(), body: PathBuf::from(&req.base_body_path) });
    }
    let image = req.images.get(id).ok_or_else(|| IndirectionError::UtilityNotFound(id.clone()))?;
    if image.kind != "base_image" || image.status != "COMPLETE" {
        return Err(IndirectionError::UtilityNotUsable {
            id: id.clone(),
            kind: image.kind.replace('_', " "),
            status: image.status.clone(),
        });
    }
    Ok(Utility { id: id.clone(), body: PathBuf::from(&image.body_path) })
}

/// qemu's format name for an image file, from its first bytes (qcow2 or raw).
pub fn sniff_format(path: &Path) -> Result<&'static str, IndirectionError> {
    let mut f =
        std::fs::File::open(path).map_err(|e| diskimage::DiskError::io("cannot open", path.to_path_buf(), e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| diskimage::DiskError::io("cannot read", path.to_path_buf(), e))?;
    Ok(if n == 4 && magic == *b"QFI\xfb" { "qcow2" } else { "raw" })
}

/// Reads `url` content on the build host (`file://`, `http(s)://`), as the original did.
fn fetch(url: &str, watch: &dyn Watch) -> Result<Vec<u8>, IndirectionError> {
    let mut cmd = Command::new("curl");
    cmd.args(["-fsSL", "--max-time", "600", "--"]).arg(url);
    let out = process::run(
        &format!("fetching {url}"),
        cmd,
        Options { capture_stdout: true, timeout: Some(Duration::from_secs(660)), ..Default::default() },
        watch,
    )?;
    Ok(out.stdout)
}

/// A random marker for this run's console lines.
fn marker() -> Result<String, IndirectionError> {
    Ok(format!("IMAGEFACTORY-INDIRECTION-{}", diskimage::ext4::random_uuid()?.replace('-', "")))
}

/// Follows the utility VM's console while it runs and shows the step it is on as the
/// build's activity.
struct Progress<'a, 'h> {
    host: &'a Host<'h>,
    job: &'a Job,
    serial: PathBuf,
    state: RefCell<(u64, String, Vec<status::Event>)>,
}

impl Progress<'_, '_> {
    fn poll(&self) {
        let mut st = self.state.borrow_mut();
        let Ok(mut f) = std::fs::File::open(&self.serial) else { return };
        if f.seek(SeekFrom::Start(st.0)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return;
        }
        st.0 += buf.len() as u64;
        st.1.push_str(&String::from_utf8_lossy(&buf));
        let Some(cut) = st.1.rfind('\n') else { return };
        let lines: String = st.1.drain(..=cut).collect();
        let events = status::from_console(&lines, &self.job.marker);
        for e in &events {
            match e {
                status::Event::MultiUser(_) => self.host.activity("Utility VM: multi-user, running the customizations"),
                status::Event::Begin { kind, index } => {
                    if let Some(s) = self.job.step(kind, *index) {
                        self.host.activity(&format!("Utility VM: {}", s.label));
                    }
                }
                _ => {}
            }
        }
        st.2.extend(events);
    }
}

fn guest_error(e: GuestError, running: Option<String>) -> IndirectionError {
    let during = running.map(|s| format!(" while {s} ran")).unwrap_or_default();
    match e {
        GuestError::Cancelled => IndirectionError::Cancelled,
        GuestError::Hung { seconds, files } => IndirectionError::Vm(format!(
            "the utility VM did not finish within {seconds} s{during} and was stopped; {files}"
        )),
        GuestError::Inactive { seconds, files } => IndirectionError::Vm(format!(
            "the utility VM showed no disk or network activity for {seconds} s{during} and was stopped; {files}"
        )),
        other => IndirectionError::Vm(format!("utility VM: {other}")),
    }
}

/// Runs the whole target build; the results end up in the host's body path.
pub fn run(host: &Host, req: &TargetHookRequest) -> Result<(), IndirectionError> {
    let watch = HostWatch(host);
    let started = Instant::now();
    let params = Params::read(&req.parameters)?;
    let utility = resolve_utility(&params, req)?;
    let fragment = match &params.customizations {
        Some(xml) => job::parse(xml)?,
        None => {
            host.info("No additional repos, packages, files or commands specified for utility tasks");
            Default::default()
        }
    };
    tools::require(TOOLS)?;

    host.activity(&format!("Reading the boot files of utility image {}", utility.id));
    if sniff_format(&utility.body)? != "raw" {
        return Err(IndirectionError::UtilityUnbootable {
            id: utility.id,
            why: "its body is not a raw disk image (build or import it as a raw base image)".into(),
        });
    }
    let plan = kernel::plan(&utility.body, &watch)
        .map_err(|why| IndirectionError::UtilityUnbootable { id: utility.id.clone(), why })?;
    host.info(&format!(
        "utility image {}: root /dev/vda{}, kernel {} with {}",
        utility.id, plan.root.number, plan.kernel, plan.initrd
    ));
    let job = job::build(&fragment, &marker()?, &|url: &str| fetch(url, &watch))?;

    let work = host.work_dir();
    let boot_dir = work.join("utility-boot");
    let vm_dir = work.join("utility-vm");
    let stage = work.join("working-tree");
    let overlay = work.join("utility-overlay.qcow2");
    let working = work.join("working-space.raw");
    let _scratch = Scratch(vec![boot_dir.clone(), vm_dir.clone(), stage.clone(), overlay.clone(), working.clone()]);
    for d in [&boot_dir, &vm_dir, &stage] {
        std::fs::create_dir_all(d).map_err(|e| diskimage::DiskError::io("cannot create", d.to_path_buf(), e))?;
    }
    let (kernel_file, initrd_file) = plan.extract(&utility.body, &boot_dir, &watch)?;

    host.activity("Creating a qcow2 overlay of the utility image");
    let backing = std::fs::canonicalize(&utility.body)
        .map_err(|e| diskimage::DiskError::io("cannot resolve", utility.body.clone(), e))?;
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"]).arg(&backing).arg(&overlay);
    process::run("qemu-img create", cmd, Options::default(), &watch)?;

    let input_body = PathBuf::from(&req.base_body_path);
    host.activity(match &params.input {
        Input::File(_) => "Creating the working disk and copying the input image into it",
        Input::Device => "Creating the working disk",
    });
    let disk = WorkDisk::create(&working, &stage, params.working_gib, &job, &params.input, &input_body, &watch)?;
    let _ = std::fs::remove_dir_all(&stage);
    host.check_cancelled().map_err(|_| IndirectionError::Cancelled)?;

    let mut cfg = GuestConfig::new(
        format!("indirection-{}", req.image_id),
        &vm_dir,
        Boot::Kernel { kernel: kernel_file, initrd: Some(initrd_file), append: plan.cmdline() },
    );
    cfg.disks.push(Disk::qcow2(&overlay));
    cfg.disks.push(Disk::raw(&working));
    if params.input == Input::Device {
        let format = sniff_format(&input_body)?;
        cfg.disks.push(Disk { format: format.into(), read_only: true, ..Disk::raw(&input_body) });
    }
    cfg.network = Network::User;
    cfg.memory_mib = params.memory_mib;
    cfg.cpus = params.cpus;
    let settings =
        GuestSettings::from_settings(&req.settings).map_err(|e| IndirectionError::Parameter(e.to_string()))?;
    settings.apply(&mut cfg);
    cfg.timeout = params.timeout.or(settings.timeout).unwrap_or(DEFAULT_TIMEOUT);
    cfg.inactivity = Some(params.inactivity);

    host.activity(&format!("Booting the utility VM ({}, {} s limit)", cfg.accel, cfg.timeout.as_secs()));
    let files = host.files_dir();
    let progress =
        Progress { host, job: &job, serial: cfg.serial_log(), state: RefCell::new((0, String::new(), Vec::new())) };
    let mut vm = Guest::start(&cfg).map_err(|e| IndirectionError::Vm(format!("cannot start the utility VM: {e}")))?;
    let outcome = vm.wait_for_poweroff(
        &|| {
            progress.poll();
            host.is_cancelled()
        },
        Some(&files),
    );
    drop(vm);
    progress.poll();
    let console_events = progress.state.borrow().2.clone();
    let report = match outcome {
        Ok(r) => r,
        Err(e) => return Err(guest_error(e, status::running(&job, &console_events))),
    };
    // The console is kept as a file of the image on success too: it is the tools' log.
    let _ = std::fs::copy(cfg.serial_log(), files.join(CONSOLE_FILE));
    host.info(&format!(
        "utility VM powered off after {:.1} s, {} bytes written to its disks",
        report.elapsed.as_secs_f64(),
        report.disk_bytes_written
    ));

    host.activity("Reading what the utility VM did");
    let record = disk.status(&watch)?;
    let events = if record.trim().is_empty() { console_events } else { status::parse(&record) };
    status::verdict(&job, &events).map_err(IndirectionError::Step)?;

    let overlay_bytes = diskimage::size::allocated(&overlay)?;
    let utility_bytes = diskimage::size::allocated(&utility.body)?;
    host.info(&format!(
        "overlay saving: the utility image's overlay took {overlay_bytes} bytes after the run; a full copy would have taken {utility_bytes} bytes"
    ));

    host.activity(&format!("Copying {} out of the working disk", params.results_location));
    let body = host.body_path();
    let size = disk.take_results(&params.results_location, &body, &watch)?;
    // debugfs writes every block; give the zeros back (an ISO of a sparse disk is mostly
    // zeros). Only space is at stake, so a failure is a warning.
    let mut dig = Command::new("fallocate");
    dig.arg("--dig-holes").arg(&body);
    if let Err(e) = process::run("fallocate --dig-holes", dig, Options::default(), &watch) {
        host.warn(&format!("the target image stays fully allocated: {e}"));
    }
    host.info(&format!(
        "target image: {} ({size} bytes) from the working disk; build took {:.1} s",
        params.results_location,
        started.elapsed().as_secs_f64()
    ));
    host.percent(100);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(images: serde_json::Value, params: serde_json::Value) -> TargetHookRequest {
        serde_json::from_value(json!({
            "image_id": "t", "base_image_id": "b-1", "base_body_path": "/s/b-1.body", "target": "indirection",
            "template": "", "parameters": params, "images": images
        }))
        .unwrap()
    }

    #[test]
    fn the_utility_image_defaults_to_the_input_and_must_be_a_complete_base() {
        let r = req(json!({}), json!({}));
        let p = Params::read(&r.parameters).unwrap();
        assert_eq!(resolve_utility(&p, &r).unwrap(), Utility { id: "b-1".into(), body: "/s/b-1.body".into() });

        let u = "6d5aad23-7368-4e60-8fe5-b289bb2623d8";
        let r = req(json!({}), json!({ "utility_image": u }));
        let p = Params::read(&r.parameters).unwrap();
        assert_eq!(resolve_utility(&p, &r).unwrap_err().to_string(), format!("utility image {u} not found"));

        let r = req(
            json!({ u: {"kind": "target_image", "status": "COMPLETE", "body_path": "/s/u.body"} }),
            json!({ "utility_image": u }),
        );
        let p = Params::read(&r.parameters).unwrap();
        assert_eq!(
            resolve_utility(&p, &r).unwrap_err().to_string(),
            format!("utility image {u} is a target image in status COMPLETE; it must be a COMPLETE base image")
        );
        let r = req(
            json!({ u: {"kind": "base_image", "status": "COMPLETE", "body_path": "/s/u.body"} }),
            json!({ "utility_image": u }),
        );
        let p = Params::read(&r.parameters).unwrap();
        assert_eq!(resolve_utility(&p, &r).unwrap().body, PathBuf::from("/s/u.body"));
    }

    #[test]
    fn formats_are_sniffed() {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("q");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        let r = d.path().join("r");
        std::fs::write(&r, [0u8; 16]).unwrap();
        assert_eq!(sniff_format(&q).unwrap(), "qcow2");
        assert_eq!(sniff_format(&r).unwrap(), "raw");
    }
}
