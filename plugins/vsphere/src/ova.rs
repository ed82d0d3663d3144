//! OVA packages: an OVF descriptor and a streamOptimized VMDK in a tar, the descriptor
//! first (what vSphere's "Deploy OVF Template" and `ovftool` expect).
//!
//! The tar is written here (POSIX ustar headers; sizes of 8 GiB and more in the GNU
//! base-256 form), streaming the disk from its file through a fixed buffer, and read back
//! by [`entries`] to check a finished package and to find the disk inside it for a push.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::soap::esc;

/// The disk's file name inside the package.
pub const DISK_NAME: &str = "disk1.vmdk";
const BLOCK: u64 = 512;

/// What the descriptor says about the virtual machine.
#[derive(Debug, Clone, PartialEq)]
pub struct OvfSpec {
    pub name: String,
    pub cpus: u32,
    pub memory_mb: u64,
    /// vSphere's guest id, `otherLinux64Guest` by default.
    pub os_type: String,
    /// The disk's virtual size in bytes.
    pub capacity: u64,
    /// The VMDK file's size in bytes.
    pub file_size: u64,
    pub network: String,
}

/// The OVF 1.0 descriptor for `spec` (rasd elements in the schema's alphabetical order).
pub fn descriptor(spec: &OvfSpec) -> String {
    let n = esc(&spec.name);
    let net = esc(&spec.network);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{DISK_NAME}" ovf:id="file1" ovf:size="{file_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="{net}">
      <Description>The {net} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{n}">
    <Info>A virtual machine built by imagefactory</Info>
    <Name>{n}</Name>
    <OperatingSystemSection ovf:id="101" vmw:osType="{os}">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{n}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-07</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{mem}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>{net}</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        file_size = spec.file_size,
        capacity = spec.capacity,
        os = esc(&spec.os_type),
        cpus = spec.cpus,
        mem = spec.memory_mb,
    )
}

/// A ustar header for a regular file.
fn header(name: &str, size: u64) -> io::Result<[u8; 512]> {
    if name.len() > 100 || name.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("tar member name {name:?} is too long")));
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    if size < 0o77777777777 {
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        // GNU base-256: the high bit of the first byte set, the size big-endian after it.
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    let mtime = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    h[136..148].copy_from_slice(format!("{:011o}\0", mtime & 0o77777777777).as_bytes());
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

fn pad(out: &mut impl Write, size: u64) -> io::Result<()> {
    let rest = (BLOCK - size % BLOCK) % BLOCK;
    out.write_all(&vec![0u8; rest as usize])
}

/// Writes the package to `out`: `<name>.ovf`, then the disk read from `disk`, then the
/// end-of-archive blocks. `on_bytes` gets the disk bytes written so far; `cancelled` is
/// asked between buffers.
pub fn write_package(
    out: &mut impl Write,
    ovf_name: &str,
    ovf: &str,
    disk: &Path,
    on_bytes: &mut dyn FnMut(u64),
    cancelled: &dyn Fn() -> bool,
) -> io::Result<()> {
    out.write_all(&header(ovf_name, ovf.len() as u64)?)?;
    out.write_all(ovf.as_bytes())?;
    pad(out, ovf.len() as u64)?;
    let size = std::fs::metadata(disk)?.len();
    out.write_all(&header(DISK_NAME, size)?)?;
    let mut src = BufReader::with_capacity(1 << 20, File::open(disk)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        if cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        done += n as u64;
        on_bytes(done);
    }
    if done != size {
        return Err(io::Error::other(format!("{} changed size while it was packed", disk.display())));
    }
    pad(out, size)?;
    out.write_all(&[0u8; 1024])?;
    out.flush()
}

/// One member of a tar: name, where its data starts, its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let text = std::str::from_utf8(field).ok()?;
    let t = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if t.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(t, 8).ok()
}

/// The regular members of the tar at `path`, in order (at most 64: an OVA has a few).
pub fn entries(path: &Path) -> io::Result<Vec<Entry>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos + BLOCK <= len && out.len() < 64 {
        let mut h = [0u8; 512];
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut h)?;
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let stored: u32 = parse_size(&h[148..156]).ok_or_else(|| bad("a tar header has no checksum".into()))? as u32;
        let mut sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        sum = sum - h[148..156].iter().map(|b| u32::from(*b)).sum::<u32>() + 8 * u32::from(b' ');
        if sum != stored {
            return Err(bad(format!("the tar header at byte {pos} has a bad checksum")));
        }
        let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let size = parse_size(&h[124..136]).ok_or_else(|| bad(format!("the tar member {name} has a bad size")))?;
        let offset = pos + BLOCK;
        if offset + size > len {
            return Err(bad(format!("the tar member {name} runs past the end of the file")));
        }
        if matches!(h[156], b'0' | 0) {
            out.push(Entry { name, offset, size });
        }
        pos = offset + size.div_ceil(BLOCK) * BLOCK;
    }
    Ok(out)
}

/// Whether the file at `path` starts like a tar (a ustar magic in its first header).
pub fn is_tar(path: &Path) -> bool {
    let mut h = [0u8; 512];
    File::open(path).and_then(|mut f| f.read_exact(&mut h)).is_ok() && &h[257..262] == b"ustar"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_round_trip_and_tar_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.vmdk");
        std::fs::write(&disk, vec![7u8; 1500]).unwrap();
        let spec = OvfSpec {
            name: "vm <1>".into(),
            cpus: 2,
            memory_mb: 1024,
            os_type: "otherLinux64Guest".into(),
            capacity: 1 << 30,
            file_size: 1500,
            network: "VM Network".into(),
        };
        let ovf = descriptor(&spec);
        roxmltree::Document::parse(&ovf).expect("the descriptor is well-formed");
        let ova = dir.path().join("x.ova");
        let mut f = File::create(&ova).unwrap();
        write_package(&mut f, "vm.ovf", &ovf, &disk, &mut |_| {}, &|| false).unwrap();
        drop(f);
        assert!(is_tar(&ova));
        let e = entries(&ova).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].name.as_str(), e[0].offset, e[0].size), ("vm.ovf", 512, ovf.len() as u64));
        assert_eq!((e[1].name.as_str(), e[1].size), (DISK_NAME, 1500));
        // GNU tar reads it too.
        let out = std::process::Command::new("tar").arg("tvf").arg(&ova).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("vm.ovf") && listing.contains(DISK_NAME), "{listing}");
    }

    #[test]
    fn big_sizes_use_base_256() {
        let h = header("big", 20 << 30).unwrap();
        assert_eq!(h[124], 0x80);
        assert_eq!(parse_size(&h[124..136]), Some(20 << 30));
        assert_eq!(parse_size(&header("small", 1234).unwrap()[124..136]), Some(1234));
    }
}
