//! Boot a disk image the way a user's hypervisor would, and wait for a marker on its
//! serial console: the proof that an image the project made really boots.
//!
//! This runs `qemu-system-x86_64` itself (TCG, q35, virtio disk, `snapshot=on` so the
//! image is never written) instead of going through the guest engine under test: the
//! check stays independent of the code that built the image. Every format qemu reads
//! works (`raw`, `qcow2`, `vmdk` including streamOptimized); `qemu-img info` names it.
//!
//! ```no_run
//! let boot = testkit::boot::Boot::disk("target.qcow2").until("IMAGEFACTORY-BOOT-MARKER");
//! assert!(boot.console.contains("cloud-info: CLOUD_TYPE=\"openstack-kvm\""));
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::ChildGuard;

/// The default bound from qemu's start to the marker. A Debian image under TCG takes
/// 15-60 s here depending on the host's load; two guests at once on two cores can take
/// twice that.
pub const DEFAULT_BOUND: Duration = Duration::from_secs(300);

/// One boot of one disk image.
pub struct Boot {
    image: PathBuf,
    format: Option<String>,
    memory_mib: u32,
    bound: Duration,
}

/// What a boot that reached its marker showed.
#[derive(Debug)]
pub struct Booted {
    /// From qemu's start to the marker.
    pub elapsed: Duration,
    /// The whole serial console up to (and a little after) the marker.
    pub console: String,
    /// The format qemu was told (from `qemu-img info`, or as given).
    pub format: String,
}

impl Boot {
    /// A boot of `image` from its first disk, format detected by `qemu-img info`.
    pub fn disk(image: impl Into<PathBuf>) -> Boot {
        Boot { image: image.into(), format: None, memory_mib: 1024, bound: DEFAULT_BOUND }
    }

    /// Names the format instead of detecting it.
    pub fn format(mut self, format: &str) -> Boot {
        self.format = Some(format.to_string());
        self
    }

    /// Sets the bound from qemu's start to the marker.
    pub fn within(mut self, bound: Duration) -> Boot {
        self.bound = bound;
        self
    }

    /// Boots until `marker` shows on the serial console, then stops qemu. Panics (the
    /// test fails) when qemu is missing, exits first, or the bound passes; the message
    /// holds the console's last lines.
    pub fn until(self, marker: &str) -> Booted {
        crate::require_tool("qemu-system-x86_64", "--version", "qemu-system-x86");
        let format = self.format.clone().unwrap_or_else(|| detect_format(&self.image));
        let dir = tempfile::Builder::new().prefix("if-boot-").tempdir().expect("a temporary directory");
        let serial = dir.path().join("serial.log");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35,accel=tcg", "-m", &self.memory_mib.to_string(), "-smp", "1"])
            .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-drive")
            .arg(format!(
                "file={},format={format},if=none,id=disk0,snapshot=on",
                self.image.display().to_string().replace(',', ",,")
            ))
            .args(["-device", "virtio-blk-pci,drive=disk0,bootindex=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut qemu = ChildGuard::spawn(cmd, "qemu-system-x86_64");
        loop {
            let console = std::fs::read(&serial).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            if shows(&console, marker) {
                let elapsed = started.elapsed();
                // What the unit printed right after the marker line reaches the log too.
                std::thread::sleep(Duration::from_millis(300));
                let console =
                    std::fs::read(&serial).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or(console);
                drop(qemu);
                return Booted { elapsed, console, format };
            }
            if let Some(status) = qemu.try_wait() {
                // It may have printed the marker just before powering off.
                let console =
                    std::fs::read(&serial).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or(console);
                if shows(&console, marker) {
                    return Booted { elapsed: started.elapsed(), console, format };
                }
                let stderr = qemu.stderr_text();
                panic!(
                    "qemu exited ({status}) before {} showed {marker:?}: {stderr}\nconsole tail:\n{}",
                    self.image.display(),
                    tail(&console, 40)
                );
            }
            if started.elapsed() > self.bound {
                drop(qemu);
                panic!(
                    "{} ({format}) did not show {marker:?} within {:?} under TCG\nconsole tail:\n{}",
                    self.image.display(),
                    self.bound,
                    tail(&console, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Booted {
    /// What the guest's programs printed: the console without the kernel's messages,
    /// which the kernel writes to the same serial port whenever it likes, even in the
    /// middle of a program's line (`cloud-info: X[   26.96] kvm: ...`).
    pub fn program_output(&self) -> String {
        without_kernel_messages(&self.console)
    }
}

/// Whether `console` shows `marker`, also when a kernel message split it.
fn shows(console: &str, marker: &str) -> bool {
    console.contains(marker) || without_kernel_messages(console).contains(marker)
}

/// `text` without its kernel messages: each `[ seconds.micros] ...` up to and including
/// its line's end is cut, so the text a program wrote around it joins up again.
pub fn without_kernel_messages(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('[') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match kernel_stamp_len(rest) {
            Some(_) => rest = rest.find('\n').map_or("", |end| &rest[end + 1..]),
            None => {
                out.push('[');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The length of a kernel time stamp (`[    26.969688]`) at the start of `s`, if any.
fn kernel_stamp_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 1;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let digits = |mut i: usize| {
        let from = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > from).then_some(i)
    };
    let i = digits(i)?;
    if b.get(i) != Some(&b'.') {
        return None;
    }
    let i = digits(i + 1)?;
    (b.get(i) == Some(&b']')).then_some(i + 1)
}

/// The format `qemu-img info` reads in `image`.
pub fn detect_format(image: &Path) -> String {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(image)
        .output()
        .expect("qemu-img (Debian package qemu-utils; run scripts/setup.sh)");
    assert!(out.status.success(), "qemu-img info {}: {}", image.display(), String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img info JSON");
    info["format"].as_str().expect("a format in qemu-img info").to_string()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::without_kernel_messages;

    #[test]
    fn kernel_messages_are_cut_from_program_lines() {
        let console = "[  OK  ] Started x.\r\ncloud-info: CLOUD_TYPE=\"vsphere\"[   26.969688] kvm: Nested\r\n\
                       [   26.970009] SVM: off\r\n\r\nIMAGEFACTORY-BOOT-MARKER\r\n[0.5] a short stamp\n";
        assert_eq!(
            without_kernel_messages(console),
            "[  OK  ] Started x.\r\ncloud-info: CLOUD_TYPE=\"vsphere\"\r\nIMAGEFACTORY-BOOT-MARKER\r\n"
        );
        assert_eq!(without_kernel_messages("CLOUD_TY[ 1.2] x\nPE=1\n[a] [1.] [.5]"), "CLOUD_TYPE=1\n[a] [1.] [.5]");
    }
}
