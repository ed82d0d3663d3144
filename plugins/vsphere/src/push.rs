//! Push and delete: the disk uploaded to a datastore, a VM registered with it.
//!
//! Push: log in; find the datacenter, the datastore, the compute resource (its resource
//! pool) and the network by name; stream the VMDK (or the disk inside an OVA) to
//! `[datastore] factory-image-<id>/factory-image-<id>.vmdk` with an HTTP PUT on
//! `/folder`, retried when it fails; `CreateVM_Task` with that disk (LSI Logic, 1 CPU,
//! 512 MB, `otherLinux64Guest`, an E1000 card, as the original); wait for it; optionally
//! `MarkAsTemplate`; log out. A failure after the upload removes what was made.
//!
//! Delete: find the VM by name, `Destroy_Task`, then delete its datastore folder.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::ova;
use crate::provider::{Credentials, Provider};
use crate::report::Report;
use crate::soap::{esc, MoRef, VimError};
use crate::vim::Vim;

/// What to create on the provider.
#[derive(Debug, Clone)]
pub struct PushSpec {
    pub vm_name: String,
    pub memory_mb: u64,
    pub cpus: u32,
    pub guest_id: String,
    pub template: bool,
    pub task_timeout: Duration,
    pub upload_attempts: u32,
    pub first_retry_delay: Duration,
}

impl PushSpec {
    pub fn new(vm_name: &str) -> PushSpec {
        PushSpec {
            vm_name: vm_name.to_string(),
            memory_mb: 512,
            cpus: 1,
            guest_id: "otherLinux64Guest".into(),
            template: false,
            task_timeout: Duration::from_secs(600),
            upload_attempts: 4,
            first_retry_delay: Duration::from_millis(500),
        }
    }
}

/// What a push made.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub vm: MoRef,
    /// `[datastore] folder/file.vmdk`.
    pub disk_path: String,
    pub bytes: u64,
    pub elapsed: Duration,
    pub attempts: u32,
}

/// The part of the target body to upload: the whole VMDK, or the disk inside an OVA.
#[derive(Debug, Clone)]
pub struct DiskSource {
    pub offset: u64,
    pub size: u64,
    /// The disk's virtual size (for the VM's disk capacity).
    pub capacity: u64,
}

/// Finds the VMDK in the target body and its virtual size.
pub fn disk_source(body: &Path) -> Result<DiskSource, String> {
    if ova::is_tar(body) {
        let entries = ova::entries(body).map_err(|e| format!("the OVA cannot be read: {e}"))?;
        if !entries.first().is_some_and(|e| e.name.ends_with(".ovf")) {
            return Err("the OVA does not start with its OVF descriptor".into());
        }
        let disk = entries.iter().find(|e| e.name.ends_with(".vmdk")).ok_or("the OVA holds no .vmdk disk")?;
        let mut ovf = vec![0u8; entries[0].size.min(1 << 20) as usize];
        let mut f = File::open(body).map_err(|e| e.to_string())?;
        f.seek(SeekFrom::Start(entries[0].offset)).and_then(|_| f.read_exact(&mut ovf)).map_err(|e| e.to_string())?;
        let capacity =
            ovf_capacity(&String::from_utf8_lossy(&ovf)).ok_or("the OVF descriptor gives no disk capacity")?;
        return Ok(DiskSource { offset: disk.offset, size: disk.size, capacity });
    }
    let info = diskformat::info(body).map_err(|e| e.to_string())?;
    if info.format != "vmdk" {
        return Err(format!("the target image is {}, not a VMDK: build it with the vsphere target", info.format));
    }
    let size = std::fs::metadata(body).map_err(|e| e.to_string())?.len();
    Ok(DiskSource { offset: 0, size, capacity: info.virtual_size })
}

/// The `ovf:capacity` of the first disk of an OVF descriptor (in bytes).
pub fn ovf_capacity(ovf: &str) -> Option<u64> {
    let doc = roxmltree::Document::parse(ovf).ok()?;
    let disk = doc.descendants().find(|n| n.has_tag_name("Disk"))?;
    let cap = disk.attributes().find(|a| a.name() == "capacity")?.value().parse::<u64>().ok()?;
    let unit = disk.attributes().find(|a| a.name() == "capacityAllocationUnits").map(|a| a.value()).unwrap_or("byte");
    let mult = match unit.replace(' ', "").as_str() {
        "byte" => 1,
        "byte*2^10" => 1 << 10,
        "byte*2^20" => 1 << 20,
        "byte*2^30" => 1 << 30,
        _ => return None,
    };
    cap.checked_mul(mult)
}

/// The objects a push needs, found by name.
pub struct Placement {
    pub datacenter: MoRef,
    pub datacenter_name: String,
    pub vm_folder: MoRef,
    pub pool: MoRef,
    pub datastore: MoRef,
    pub network: Option<MoRef>,
}

fn not_found(what: &str, name: &str, known: &[(MoRef, String)]) -> VimError {
    let names: Vec<&str> = known.iter().map(|(_, n)| n.as_str()).collect();
    VimError::NotFound(format!(
        "vSphere has no {what} named '{name}' (there are: {})",
        if names.is_empty() { "none".to_string() } else { names.join(", ") }
    ))
}

/// Finds the datacenter (by name, or the only one).
pub fn find_datacenter(vim: &Vim, name: Option<&str>) -> Result<(MoRef, String), VimError> {
    let dcs = vim.find_all(&vim.sc.root_folder, &["Datacenter"])?;
    match name {
        Some(n) => dcs.iter().find(|(_, d)| d == n).cloned().ok_or_else(|| not_found("datacenter", n, &dcs)),
        None if dcs.len() == 1 => Ok(dcs[0].clone()),
        None => Err(VimError::NotFound(format!(
            "vSphere has {} datacenters; name one with \"datacenter\" in the provider definition",
            dcs.len()
        ))),
    }
}

/// Finds everything a push needs.
pub fn place(vim: &Vim, p: &Provider) -> Result<Placement, VimError> {
    let (dc, dc_name) = find_datacenter(vim, p.datacenter.as_deref())?;
    let vm_folder = vim.moref_property(&dc, "vmFolder")?;
    let stores = vim.find_all(&dc, &["Datastore"])?;
    let datastore = stores
        .iter()
        .find(|(_, n)| *n == p.datastore)
        .map(|(m, _)| m.clone())
        .ok_or_else(|| not_found("datastore", &p.datastore, &stores))?;
    let computes = vim.find_all(&dc, &["ComputeResource", "ClusterComputeResource"])?;
    let compute = match &p.compute_resource {
        Some(name) => computes
            .iter()
            .find(|(_, n)| n == name)
            .map(|(m, _)| m.clone())
            .ok_or_else(|| not_found("compute resource", name, &computes))?,
        None if computes.len() == 1 => computes[0].0.clone(),
        None => {
            return Err(VimError::NotFound(format!(
                "datacenter {dc_name} has {} compute resources; name one with \"compute_resource\"",
                computes.len()
            )))
        }
    };
    let pool = vim.moref_property(&compute, "resourcePool")?;
    let network = match &p.network_name {
        Some(name) => {
            let nets = vim.find_all(&dc, &["Network"])?;
            let net = nets.iter().find(|(_, n)| n == name).ok_or_else(|| not_found("network", name, &nets))?;
            if net.0.kind != "Network" {
                return Err(VimError::NotFound(format!(
                    "network '{name}' is a {} (a distributed port group); only standard networks are supported",
                    net.0.kind
                )));
            }
            Some(net.0.clone())
        }
        None => None,
    };
    Ok(Placement { datacenter: dc, datacenter_name: dc_name, vm_folder, pool, datastore, network })
}

/// Reads the disk part of the body, counting bytes and stopping on cancel.
struct UploadReader<'a> {
    inner: io::Take<BufReader<File>>,
    sent: u64,
    on_bytes: &'a mut dyn FnMut(u64),
    cancelled: &'a dyn Fn() -> bool,
}

impl Read for UploadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if (self.cancelled)() {
            return Err(io::Error::other("cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        (self.on_bytes)(self.sent);
        Ok(n)
    }
}

/// Percent-encodes a datastore path for a URL path (keeps `/`).
fn encode_path(p: &str) -> String {
    p.split('/')
        .map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20"))
        .collect::<Vec<_>>()
        .join("/")
}

/// Uploads `len` bytes of `body` from `offset` to `<folder path>` on the datastore,
/// retrying the whole transfer when it fails (a datastore PUT cannot be resumed).
#[allow(clippy::too_many_arguments)]
pub fn upload(
    vim: &Vim,
    r: &dyn Report,
    body: &Path,
    src: &DiskSource,
    datacenter: &str,
    datastore: &str,
    path: &str,
    attempts: u32,
    first_delay: Duration,
) -> Result<(u64, Duration, u32), VimError> {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("dcPath", datacenter)
        .append_pair("dsName", datastore)
        .finish();
    let url = format!("{}/folder/{}?{query}", vim.soap.base(), encode_path(path));
    let started = Instant::now();
    let read_err = |source| VimError::Read { path: body.display().to_string(), source };
    let mut attempt = 1;
    let mut last_pct = u8::MAX;
    loop {
        let mut f = File::open(body).map_err(read_err)?;
        f.seek(SeekFrom::Start(src.offset)).map_err(read_err)?;
        let mut on_bytes = |sent: u64| {
            let pct = (5 + sent.saturating_mul(85) / src.size.max(1)).min(90) as u8;
            if pct != last_pct {
                last_pct = pct;
                r.percent(pct);
            }
        };
        let cancelled = || r.cancelled();
        let mut reader = UploadReader {
            inner: BufReader::with_capacity(1 << 20, f).take(src.size),
            sent: 0,
            on_bytes: &mut on_bytes,
            cancelled: &cancelled,
        };
        let mut req = vim
            .soap
            .agent()
            .put(&url)
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &src.size.to_string());
        if let Some(c) = vim.soap.cookie() {
            req = req.set("Cookie", c.expose());
        }
        let result = req.send(&mut reader);
        let sent = reader.sent;
        let detail = match result {
            Ok(resp) if sent == src.size => {
                let _ = resp.into_string();
                return Ok((sent, started.elapsed(), attempt));
            }
            Ok(_) => format!("the server answered after {sent} of {} bytes", src.size),
            Err(ureq::Error::Status(code, resp)) => {
                let mut text = String::new();
                let _ = resp.into_reader().take(4096).read_to_string(&mut text);
                let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
                format!("HTTP {code} {text}")
            }
            Err(ureq::Error::Transport(t)) => cloudkit::http::transport_detail(&t),
        };
        if r.cancelled() {
            return Err(VimError::Cancelled);
        }
        if attempt >= attempts {
            return Err(VimError::Upload { path: body.display().to_string(), attempts: attempt, detail });
        }
        let delay = first_delay * 2u32.pow(attempt - 1);
        r.warn(&format!(
            "upload try {attempt} of {attempts} failed after {sent} of {} bytes ({detail}); retrying in {:.1} s",
            src.size,
            delay.as_secs_f64()
        ));
        let end = Instant::now() + delay;
        while Instant::now() < end {
            if r.cancelled() {
                return Err(VimError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        attempt += 1;
    }
}

/// The `CreateVM_Task` config spec (elements in the WSDL's order: vCenter is strict).
fn config_spec(
    spec: &PushSpec,
    datastore: &str,
    disk_path: &str,
    capacity_kb: u64,
    network: Option<(&str, &MoRef)>,
) -> String {
    let mut devices = String::from(
        "<deviceChange><operation>add</operation><device xsi:type=\"VirtualLsiLogicController\"><key>-100</key>\
         <busNumber>0</busNumber><sharedBus>noSharing</sharedBus></device></deviceChange>",
    );
    devices.push_str(&format!(
        "<deviceChange><operation>add</operation><device xsi:type=\"VirtualDisk\"><key>-101</key>\
         <backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>{}</fileName><diskMode>persistent</diskMode>\
         <thinProvisioned>true</thinProvisioned></backing><controllerKey>-100</controllerKey><unitNumber>0</unitNumber>\
         <capacityInKB>{capacity_kb}</capacityInKB></device></deviceChange>",
        esc(disk_path)
    ));
    if let Some((name, net)) = network {
        devices.push_str(&format!(
            "<deviceChange><operation>add</operation><device xsi:type=\"VirtualE1000\"><key>-102</key>\
             <backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>{}</deviceName>{}</backing>\
             <connectable><startConnected>true</startConnected><allowGuestControl>true</allowGuestControl>\
             <connected>false</connected></connectable><addressType>generated</addressType></device></deviceChange>",
            esc(name),
            net.xml("network")
        ));
    }
    format!(
        "<config><name>{}</name><guestId>{}</guestId><annotation>Created by imagefactory</annotation>\
         <files><vmPathName>[{}]</vmPathName></files><numCPUs>{}</numCPUs><memoryMB>{}</memoryMB>{devices}</config>",
        esc(&spec.vm_name),
        esc(&spec.guest_id),
        esc(datastore),
        spec.cpus,
        spec.memory_mb
    )
}

/// Connects and logs in.
pub fn login(r: &dyn Report, p: &Provider, c: &Credentials) -> Result<Vim, VimError> {
    if p.trust.is_unchecked() {
        r.warn(&format!("the certificate of {} is not checked (tls_verify false)", p.base));
    }
    let vim = Vim::connect(&p.base, &p.trust)?;
    r.activity(&format!("Logging in to {} at {} as {}", vim.sc.full_name, p.base, c.username));
    vim.login(&c.username, c.password.expose())?;
    Ok(vim)
}

/// Pushes the target body at `body`: upload, register, optionally mark as template.
pub fn push(r: &dyn Report, p: &Provider, c: &Credentials, body: &Path, spec: &PushSpec) -> Result<Pushed, VimError> {
    let src = disk_source(body)
        .map_err(|d| VimError::Read { path: body.display().to_string(), source: io::Error::other(d) })?;
    let vim = login(r, p, c)?;
    let result = push_logged_in(&vim, r, p, body, &src, spec);
    if let Err(e) = vim.logout() {
        r.warn(&format!("logging out of vSphere failed: {e}"));
    }
    result
}

fn push_logged_in(
    vim: &Vim,
    r: &dyn Report,
    p: &Provider,
    body: &Path,
    src: &DiskSource,
    spec: &PushSpec,
) -> Result<Pushed, VimError> {
    r.activity("Finding the datacenter, datastore, compute resource and network");
    let place = place(vim, p)?;
    if vim.find_by_name(&place.datacenter, &["VirtualMachine"], &spec.vm_name)?.is_some() {
        return Err(VimError::NotFound(format!(
            "a VM named {} already exists in {}",
            spec.vm_name, place.datacenter_name
        )));
    }
    let folder = spec.vm_name.clone();
    let rel = format!("{folder}/{folder}.vmdk");
    let disk_path = format!("[{}] {rel}", p.datastore);
    r.activity(&format!("Uploading {:.1} MiB to {disk_path}", src.size as f64 / 1048576.0));
    let cleanup_files = |why: &str| {
        let dir = format!("[{}] {folder}", p.datastore);
        match vim.delete_datastore_file(&dir, &place.datacenter, spec.task_timeout) {
            Ok(_) => r.info(&format!("removed {dir} after {why}")),
            Err(e) => r.warn(&format!("could not remove {dir} after {why}: {e}")),
        }
    };
    let (bytes, elapsed, attempts) = match upload(
        vim,
        r,
        body,
        src,
        &place.datacenter_name,
        &p.datastore,
        &rel,
        spec.upload_attempts,
        spec.first_retry_delay,
    ) {
        Ok(v) => v,
        Err(e) => {
            if !matches!(e, VimError::Unreachable { .. }) {
                cleanup_files("a failed upload");
            }
            return Err(e);
        }
    };
    let secs = elapsed.as_secs_f64().max(1e-6);
    let rss = cloudkit::report::peak_rss_note();
    r.info(&format!(
        "uploaded {:.1} MiB to {disk_path} in {secs:.2} s ({:.1} MiB/s, {attempts} tr{}){rss}",
        bytes as f64 / 1048576.0,
        bytes as f64 / 1048576.0 / secs,
        if attempts == 1 { "y" } else { "ies" }
    ));
    r.percent(90);
    r.activity(&format!("Creating VM {} in {}", spec.vm_name, place.datacenter_name));
    let capacity_kb = src.capacity.div_ceil(1024);
    let network = p.network_name.as_deref().zip(place.network.as_ref());
    let inner = format!(
        "{}{}{}",
        place.vm_folder.xml("_this"),
        config_spec(spec, &p.datastore, &disk_path, capacity_kb, network),
        place.pool.xml("pool")
    );
    let vm = match vim.run_task("CreateVM_Task", &inner, spec.task_timeout, &|| r.cancelled()) {
        Ok(Some(result)) => result.moref().ok_or_else(|| VimError::BadAnswer {
            method: "CreateVM_Task".into(),
            detail: "the task gave no VM".into(),
        }),
        Ok(None) => Err(VimError::BadAnswer { method: "CreateVM_Task".into(), detail: "the task gave no VM".into() }),
        Err(e) => Err(e),
    };
    let vm = match vm {
        Ok(vm) => vm,
        Err(e) => {
            cleanup_files("a failed VM creation");
            return Err(e);
        }
    };
    r.info(&format!("created VM {} ({})", spec.vm_name, vm.value));
    if spec.template {
        r.activity(&format!("Marking VM {} as a template", spec.vm_name));
        if let Err(e) = vim.soap.call("MarkAsTemplate", &vm.xml("_this")) {
            destroy(vim, r, &vm, &spec.vm_name, spec.task_timeout);
            cleanup_files("a failed MarkAsTemplate");
            return Err(e);
        }
    }
    r.percent(100);
    Ok(Pushed { vm, disk_path, bytes, elapsed, attempts })
}

fn destroy(vim: &Vim, r: &dyn Report, vm: &MoRef, name: &str, timeout: Duration) {
    match vim.run_task("Destroy_Task", &vm.xml("_this"), timeout, &|| false) {
        Ok(_) => r.info(&format!("destroyed the unfinished VM {name}")),
        Err(e) => r.warn(&format!("could not destroy the unfinished VM {name}: {e}")),
    }
}

/// Deletes the VM (or template) `vm_name` and its datastore folder. `Ok(false)` when
/// neither was there any more.
pub fn delete(
    r: &dyn Report,
    p: &Provider,
    c: &Credentials,
    vm_name: &str,
    timeout: Duration,
) -> Result<bool, VimError> {
    let vim = login(r, p, c)?;
    let result = (|| {
        let (dc, dc_name) = find_datacenter(&vim, p.datacenter.as_deref())?;
        let mut found = false;
        match vim.find_by_name(&dc, &["VirtualMachine"], vm_name)? {
            Some(vm) => {
                r.activity(&format!("Destroying VM {vm_name} in {dc_name}"));
                vim.run_task("Destroy_Task", &vm.xml("_this"), timeout, &|| r.cancelled())?;
                r.info(&format!("destroyed VM {vm_name} ({})", vm.value));
                found = true;
            }
            None => r.warn(&format!("no VM named {vm_name} in {dc_name}")),
        }
        let dir = format!("[{}] {vm_name}", p.datastore);
        if vim.delete_datastore_file(&dir, &dc, timeout)? {
            r.info(&format!("deleted {dir}"));
            found = true;
        }
        Ok(found)
    })();
    if let Err(e) = vim.logout() {
        r.warn(&format!("logging out of vSphere failed: {e}"));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_from_ovf() {
        let ovf = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
<DiskSection><Disk ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="d"/></DiskSection></Envelope>"#;
        assert_eq!(ovf_capacity(ovf), Some(2 << 30));
        assert_eq!(encode_path("factory-image-x/a b.vmdk"), "factory-image-x/a%20b.vmdk");
    }

    #[test]
    fn the_config_spec_is_well_formed() {
        let spec = PushSpec::new("factory-image-1");
        let net = MoRef::new("Network", "network-7");
        let xml = config_spec(&spec, "ds & 1", "[ds & 1] f/f.vmdk", 1024, Some(("VM Network", &net)));
        let wrapped = format!("<x xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">{xml}</x>");
        let doc = roxmltree::Document::parse(&wrapped).expect("well-formed");
        assert_eq!(doc.descendants().filter(|n| n.has_tag_name("deviceChange")).count(), 3);
    }
}
