//! Running a guest through libvirt (when the operator sets `libvirt_uri`): a transient
//! domain from generated XML, watched with libvirt's own statistics, destroyed on every
//! way out.
//!
//! Transient, because a domain that exists only while it runs cannot be left behind
//! defined: destroying it (or its power-off) removes it. qemu runs with this process's
//! uid and gid (a static DAC label, no relabelling), so it reads and writes exactly the
//! files the factory can, in the factory's own work directory, and libvirt never changes
//! their ownership.

use std::fmt::Write as _;
use std::path::Path;

use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::enumutil::Enum;
use virt::stream::Stream;

use crate::accel::Accel;
use crate::config::{Boot, DiskBus, GuestConfig, Network};
use crate::runner::{Activity, Runner, Stop};
use crate::GuestError;

/// A domain started by the engine.
pub struct LibvirtRunner {
    conn: Connect,
    domain: Option<Domain>,
    name: String,
    /// libvirt's target names of the disks ("vda", "sda", ...), for block statistics.
    targets: Vec<String>,
    has_network: bool,
    stop: Option<Stop>,
}

// SAFETY: libvirt connections and domain handles are thread-safe (libvirt documents its
// public API as safe to call from several threads); the runner is used by one thread at
// a time anyway, it only moves between threads.
unsafe impl Send for LibvirtRunner {}

impl LibvirtRunner {
    pub fn start(config: &GuestConfig, uri: &str) -> Result<LibvirtRunner, GuestError> {
        // libvirt's default error handler prints every error (an expected "domain not
        // found" included) to the process's output; the engine reports errors itself.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri))
            .map_err(|e| GuestError::Libvirt(format!("cannot connect to {uri}: {}", one_line(&e))))?;
        let (xml, targets) = domain_xml(config)?;
        // Autodestroy: libvirtd destroys the domain when this connection closes, so a
        // worker killed mid-install (no Drop runs) leaves no guest running.
        let domain = conn
            .create_domain_xml(&xml, virt::sys::VIR_DOMAIN_START_AUTODESTROY)
            .map_err(|e| GuestError::Libvirt(format!("cannot start the guest: {}", one_line(&e))))?;
        Ok(LibvirtRunner {
            conn,
            domain: Some(domain),
            name: domain_name(&config.name),
            targets,
            has_network: config.network == Network::User,
            stop: None,
        })
    }
}

impl Runner for LibvirtRunner {
    fn poll_stopped(&mut self) -> Result<Option<Stop>, GuestError> {
        if self.stop.is_some() {
            return Ok(self.stop.clone());
        }
        // A transient domain that powered off is gone; one that qemu could not keep
        // running is shut off with a reason.
        let Ok(d) = self.conn.lookup_domain_by_name(&self.name) else {
            self.stop = Some(Stop { clean: true, detail: "the guest powered off".into() });
            return Ok(self.stop.clone());
        };
        let active = d.is_active().unwrap_or(false);
        if !active {
            self.stop = Some(Stop { clean: true, detail: "the guest powered off".into() });
        } else if let Ok((state, _)) = d.state() {
            if state == Enum::Known(DomainState::Crashed) {
                self.stop = Some(Stop { clean: false, detail: "libvirt reports the guest crashed".into() });
            }
        }
        Ok(self.stop.clone())
    }

    fn activity(&mut self) -> Result<Activity, GuestError> {
        let d = self.domain.as_ref().ok_or_else(|| GuestError::Libvirt("the guest is gone".into()))?;
        let mut a = Activity::default();
        for t in &self.targets {
            let s = d
                .block_stats(t)
                .map_err(|e| GuestError::Libvirt(format!("block statistics of {t}: {}", one_line(&e))))?;
            a.disk_requests += (s.rd_req.max(0) + s.wr_req.max(0)) as u64;
            a.disk_bytes_written += s.wr_bytes.max(0) as u64;
        }
        // libvirt counts traffic of tap devices only; a user-mode network has none, so
        // its traffic is not counted here (disk requests still feed the watchdog).
        if self.has_network {
            a.net_bytes = interface_bytes(d);
        }
        Ok(a)
    }

    fn screenshot(&mut self, png: &Path) -> Result<(), GuestError> {
        let d = self.domain.as_ref().ok_or_else(|| GuestError::Libvirt("the guest is gone".into()))?;
        let stream = Stream::new(&self.conn, 0)
            .map_err(|e| GuestError::Libvirt(format!("cannot open a stream: {}", one_line(&e))))?;
        d.screenshot(&stream, 0, 0)
            .map_err(|e| GuestError::Libvirt(format!("cannot take a screenshot: {}", one_line(&e))))?;
        let mut data = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        // Bounded: a screen is at most a few megabytes.
        while data.len() < 64 << 20 {
            let n = stream
                .recv(&mut buf)
                .map_err(|e| GuestError::Libvirt(format!("cannot read the screenshot: {}", one_line(&e))))?;
            if n <= 0 {
                break;
            }
            data.extend_from_slice(&buf[..n as usize]);
        }
        let _ = stream.finish();
        // libvirt hands out qemu's PNG when qemu can write one, else a PPM.
        if data.starts_with(crate::screenshot::PNG_SIGNATURE) {
            return std::fs::write(png, &data)
                .map_err(|source| GuestError::Io { what: format!("cannot write {}", png.display()), source });
        }
        crate::screenshot::ppm_to_png(&data, png)
    }

    fn kill(&mut self) {
        if let Some(d) = self.domain.take() {
            if d.is_active().unwrap_or(false) {
                let _ = d.destroy();
            }
        }
        if self.stop.is_none() {
            self.stop = Some(Stop { clean: false, detail: "the guest was stopped".into() });
        }
    }

    fn pid(&self) -> Option<u32> {
        None
    }
}

impl Drop for LibvirtRunner {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Received plus sent bytes over the domain's interfaces, when libvirt can count them.
fn interface_bytes(d: &Domain) -> Option<u64> {
    let xml = d.xml_desc(0).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for part in xml.split("<target dev='").skip(1) {
        let dev = part.split('\'').next()?;
        if let Ok(s) = d.interface_stats(dev) {
            total += (s.rx_bytes.max(0) + s.tx_bytes.max(0)) as u64;
            any = true;
        }
    }
    any.then_some(total)
}

/// libvirt's domain names: the guest's name with anything unusual replaced.
fn domain_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// The domain XML and the disks' target names.
pub fn domain_xml(config: &GuestConfig) -> Result<(String, Vec<String>), GuestError> {
    let kind = match config.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    let mut x = String::new();
    let w = &mut x;
    // String writes cannot fail.
    let _ = writeln!(w, "<domain type='{kind}'>");
    let _ = writeln!(w, "  <name>{}</name>", esc(&domain_name(&config.name)));
    let _ = writeln!(w, "  <memory unit='MiB'>{}</memory>", config.memory_mib);
    let _ = writeln!(w, "  <vcpu>{}</vcpu>", config.cpus);
    let _ = writeln!(w, "  <os>\n    <type arch='x86_64' machine='q35'>hvm</type>");
    if let Boot::Kernel { kernel, initrd, append } = &config.boot {
        let _ = writeln!(w, "    <kernel>{}</kernel>", esc(&path(kernel)?));
        if let Some(i) = initrd {
            let _ = writeln!(w, "    <initrd>{}</initrd>", esc(&path(i)?));
        }
        let _ = writeln!(w, "    <cmdline>{}</cmdline>", esc(append));
    }
    let _ = writeln!(w, "  </os>\n  <features><acpi/></features>");
    if config.accel == Accel::Kvm {
        let _ = writeln!(w, "  <cpu mode='host-passthrough'/>");
    }
    // A reboot ends the guest like a power-off does (as qemu's -no-reboot).
    let _ = writeln!(w, "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>");
    let _ = writeln!(w, "  <on_crash>preserve</on_crash>\n  <devices>");
    let mut targets = Vec::new();
    let (mut vd, mut sd) = (0u8, 0u8);
    for (i, d) in config.disks.iter().enumerate() {
        let (target, bus) = match d.bus {
            DiskBus::Virtio => {
                vd += 1;
                (format!("vd{}", (b'a' + vd - 1) as char), "virtio")
            }
            DiskBus::Ide => {
                sd += 1;
                (format!("sd{}", (b'a' + sd - 1) as char), "sata")
            }
        };
        let _ = writeln!(w, "    <disk type='file' device='disk'>");
        let _ = writeln!(w, "      <driver name='qemu' type='{}'/>", esc(&d.format));
        let _ = writeln!(w, "      <source file='{}'/>", esc(&path(&d.path)?));
        let _ = writeln!(w, "      <target dev='{target}' bus='{bus}'/>");
        if d.read_only {
            let _ = writeln!(w, "      <readonly/>");
        }
        if d.snapshot {
            let _ = writeln!(w, "      <transient/>");
        }
        if i == 0 && config.boot == Boot::Disk {
            let _ = writeln!(w, "      <boot order='1'/>");
        }
        let _ = writeln!(w, "    </disk>");
        targets.push(target);
    }
    if let Some(iso) = &config.cdrom {
        sd += 1;
        let target = format!("sd{}", (b'a' + sd - 1) as char);
        let _ = writeln!(w, "    <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>");
        let _ = writeln!(w, "      <source file='{}'/>", esc(&path(iso)?));
        let _ = writeln!(w, "      <target dev='{target}' bus='sata'/>\n      <readonly/>");
        if config.boot == Boot::Cdrom {
            let _ = writeln!(w, "      <boot order='1'/>");
        }
        let _ = writeln!(w, "    </disk>");
        targets.push(target);
    } else if config.boot == Boot::Cdrom {
        return Err(GuestError::Config("the guest boots from its CD-ROM but has none".into()));
    }
    if config.network == Network::User {
        let _ = writeln!(w, "    <interface type='user'><model type='virtio'/></interface>");
    }
    let _ = writeln!(w, "    <serial type='file'>");
    let _ = writeln!(w, "      <source path='{}'/>", esc(&path(&config.serial_log())?));
    let _ = writeln!(w, "      <target port='0'/>\n    </serial>");
    let _ = writeln!(w, "    <video><model type='vga'/></video>\n    <memballoon model='none'/>\n  </devices>");
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let _ = writeln!(w, "  <seclabel type='static' model='dac' relabel='no'><label>+{uid}:+{gid}</label></seclabel>");
    let _ = writeln!(w, "</domain>");
    Ok((x, targets))
}

fn path(p: &Path) -> Result<String, GuestError> {
    p.to_str().map(str::to_string).ok_or_else(|| GuestError::Config(format!("{} is not a UTF-8 path", p.display())))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;").replace('"', "&quot;")
}

/// libvirt's messages can span lines; a status line cannot.
fn one_line(e: &virt::error::Error) -> String {
    e.message().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Disk;

    #[test]
    fn domain_xml_for_a_kernel_boot_with_two_disks_and_a_cdrom() {
        let mut c = GuestConfig::new(
            "inst 1",
            "/r",
            Boot::Kernel { kernel: "/k/vmlinuz".into(), initrd: None, append: "a=1 & b".into() },
        );
        c.disks = vec![Disk::qcow2("/d/a.qcow2"), Disk { bus: DiskBus::Ide, snapshot: true, ..Disk::raw("/d/b") }];
        c.cdrom = Some("/i/x.iso".into());
        c.network = Network::User;
        let (xml, targets) = domain_xml(&c).unwrap();
        assert_eq!(targets, ["vda", "sda", "sdb"]);
        for part in [
            "<domain type='qemu'>",
            "<name>inst_1</name>",
            "<cmdline>a=1 &amp; b</cmdline>",
            "<target dev='vda' bus='virtio'/>",
            "<transient/>",
            "<target dev='sdb' bus='sata'/>",
            "<interface type='user'>",
            "<source path='/r/serial.log'/>",
            "<on_reboot>destroy</on_reboot>",
        ] {
            assert!(xml.contains(part), "{part} missing from {xml}");
        }
        assert!(!xml.contains("<boot order"), "{xml}");
        c.accel = Accel::Kvm;
        c.boot = Boot::Cdrom;
        let (xml, _) = domain_xml(&c).unwrap();
        assert!(xml.contains("<domain type='kvm'>") && xml.contains("host-passthrough"), "{xml}");
        assert!(xml.contains("<readonly/>\n      <boot order='1'/>"), "{xml}");
    }
}
