//! The target image: what the parameters ask for, the in-image changes, the conversion.
//!
//! Parameters:
//! - `vsphere_vmdk_format`: `streaming` (default; a streamOptimized VMDK, lsilogic
//!   adapter, what vSphere imports) or `standard` (qemu-img's default monolithicSparse
//!   VMDK), as the original.
//! - `vsphere_ova`: true for an OVA package (an OVF descriptor and the streamOptimized
//!   disk in a tar, the descriptor first) instead of a bare VMDK. With it: `ovf_name`
//!   (default: the template's name), `ovf_cpu_count` (1), `ovf_memory_mb` (512),
//!   `vsphere_os_type` (`otherLinux64Guest`), `vsphere_network_name` (`VM Network`), as
//!   the original's OVA plugin named them.
//! - `cloud_modifications` (default true): the common cloud changes (see cloudkit).
//!
//! The original's RHEL-5 fix (the mptbase/mptspi SCSI modules added to a new initrd, made
//! the default boot entry) is added as a content command when the template's OS is RHEL-5
//! or CentOS-5.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use imagefactory_plugin_api::ops::{
    parameter_flag, parameter_number, ContentCommand, ContentEncoding, ContentFile, Parameters, TargetContent,
};
use imagefactory_plugin_api::sdk::PluginError;
use imagefactory_plugin_api::tdl::{ParseOptions, Template};
use serde_json::Value;

use crate::ova;
use crate::report::Report;

/// The VMDK flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmdkFormat {
    Streaming,
    Standard,
}

/// What the target body is.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub vmdk: VmdkFormat,
    /// `Some` for an OVA package.
    pub ova: Option<OvaParams>,
}

/// The OVA descriptor's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct OvaParams {
    pub name: Option<String>,
    pub cpus: u32,
    pub memory_mb: u64,
    pub os_type: String,
    pub network: String,
}

fn string_param(p: &Parameters, key: &str) -> Result<Option<String>, PluginError> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(v) => Err(PluginError::new(format!("{key} must be a non-empty string, not {v}"))),
    }
}

/// Reads the target parameters (see the module documentation).
pub fn spec(parameters: &Parameters) -> Result<TargetSpec, PluginError> {
    let vmdk = match string_param(parameters, "vsphere_vmdk_format")?.as_deref().map(str::to_ascii_lowercase) {
        None => VmdkFormat::Streaming,
        Some(s) if s == "streaming" => VmdkFormat::Streaming,
        Some(s) if s == "standard" => VmdkFormat::Standard,
        Some(other) => {
            return Err(PluginError::new(format!("vsphere_vmdk_format must be streaming or standard, not {other}")))
        }
    };
    let ova = if parameter_flag(parameters, "vsphere_ova", false).map_err(PluginError::new)? {
        if vmdk == VmdkFormat::Standard {
            return Err(PluginError::new(
                "vsphere_ova needs the streaming VMDK format (OVF packages carry streamOptimized disks)",
            ));
        }
        Some(OvaParams {
            name: string_param(parameters, "ovf_name")?,
            cpus: parameter_number(parameters, "ovf_cpu_count", 1, 128).map_err(PluginError::new)? as u32,
            memory_mb: parameter_number(parameters, "ovf_memory_mb", 512, 4 << 20).map_err(PluginError::new)?,
            os_type: string_param(parameters, "vsphere_os_type")?.unwrap_or_else(|| "otherLinux64Guest".into()),
            network: string_param(parameters, "vsphere_network_name")?.unwrap_or_else(|| "VM Network".into()),
        })
    } else {
        None
    };
    Ok(TargetSpec { vmdk, ova })
}

/// The original's RHEL-5 script: SCSI modules for vSphere's LSI Logic adapter in a new
/// initrd, made the default boot entry.
pub const RHEL5_MODULE_SCRIPT: &str = r#"echo "alias scsi_hostadapter2 mptbase" >> /etc/modprobe.conf
echo "alias scsi_hostadapter3 mptspi" >> /etc/modprobe.conf
KERNEL=`grubby --default-kernel`
KERNELVERSION=`grubby --default-kernel | cut -f 2- -d "-"`
NEWINITRD="`grubby --info=$KERNEL | grep initrd | cut -f 2 -d "="`-vsphere"
mkinitrd $NEWINITRD $KERNELVERSION
grubby --add-kernel=$KERNEL --copy-default --make-default --initrd=$NEWINITRD --title="Red Hat Enterprise Linux Server ($KERNELVERSION) Image Factory vSphere module update"
rm /root/vsphere-module.sh
"#;

/// Where the script is written in the image.
pub const RHEL5_SCRIPT_PATH: &str = "/root/vsphere-module.sh";

/// Whether the template's OS needs the RHEL-5 initrd fix.
pub fn needs_rhel5_fix(template: &str) -> bool {
    match Template::parse(template, &ParseOptions::default()) {
        Ok(t) => {
            let name = t.os.name.to_ascii_lowercase();
            let major = t.os.version.split('.').next().unwrap_or("").trim().to_string();
            matches!(name.as_str(), "rhel-5" | "centos-5")
                || (matches!(name.as_str(), "rhel" | "centos") && major == "5")
        }
        Err(_) => false,
    }
}

/// The content this plugin wants applied: the common cloud changes, plus the RHEL-5 fix.
pub fn content(parameters: &Parameters, template: &str) -> Result<TargetContent, PluginError> {
    let mut c = cloudkit::content::cloud_content("vsphere", parameters).map_err(PluginError::new)?;
    if needs_rhel5_fix(template) {
        c.files.push(ContentFile {
            name: RHEL5_SCRIPT_PATH.into(),
            encoding: ContentEncoding::Raw,
            file: RHEL5_MODULE_SCRIPT.into(),
        });
        c.commands.push(ContentCommand {
            name: "execute-module-script".into(),
            encoding: ContentEncoding::Raw,
            command: format!("/bin/sh {RHEL5_SCRIPT_PATH}"),
        });
    }
    Ok(c)
}

pub(crate) fn disk_error(e: diskformat::DiskFormatError) -> PluginError {
    match e {
        diskformat::DiskFormatError::Cancelled => PluginError::cancelled(),
        other => PluginError::new(other.to_string()),
    }
}

/// A temporary file beside `path`, removed on drop unless kept.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn beside(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{suffix}-{}", std::process::id()))
}

fn convert_options(vmdk: VmdkFormat) -> diskformat::ConvertOptions {
    match vmdk {
        VmdkFormat::Streaming => diskformat::ConvertOptions {
            subformat: Some("streamOptimized".into()),
            adapter_type: Some("lsilogic".into()),
            compat6: true,
            ..Default::default()
        },
        VmdkFormat::Standard => diskformat::ConvertOptions::default(),
    }
}

/// Converts `src` (any format qemu-img reads; raw from the OS plugins) into the target
/// body at `dst` (may be the same file) and checks the result. `template_name` names the
/// OVA's virtual machine when `ovf_name` is not given.
pub fn make_body(
    r: &dyn Report,
    src: &Path,
    dst: &Path,
    spec: &TargetSpec,
    template_name: &str,
) -> Result<(), PluginError> {
    let source = diskformat::info(src).map_err(disk_error)?;
    if let Some(b) = &source.backing_file {
        return Err(PluginError::new(format!(
            "{} has the backing file {b}; cannot make a target image of it",
            src.display()
        )));
    }
    let what = match spec.vmdk {
        VmdkFormat::Streaming => "a streamOptimized VMDK",
        VmdkFormat::Standard => "a VMDK",
    };
    let vmdk_dst = if spec.ova.is_some() { beside(dst, "disk.vmdk") } else { dst.to_path_buf() };
    let _vmdk_temp = spec.ova.as_ref().map(|_| Temp(vmdk_dst.clone()));
    r.activity(&format!("Converting the {} image to {what} for vSphere", source.format));
    let scale = if spec.ova.is_some() { 0.9 } else { 1.0 };
    diskformat::convert(
        src,
        &source.format,
        &vmdk_dst,
        "vmdk",
        &convert_options(spec.vmdk),
        &mut |p| r.percent((p * scale) as u8),
        &|| r.cancelled(),
    )
    .map_err(disk_error)?;
    r.activity("Checking the VMDK");
    let got = diskformat::verify(&vmdk_dst, "vmdk", Some(source.virtual_size)).map_err(disk_error)?;
    let want_sub = match spec.vmdk {
        VmdkFormat::Streaming => "streamOptimized",
        VmdkFormat::Standard => "monolithicSparse",
    };
    if got.subformat.as_deref() != Some(want_sub) {
        return Err(PluginError::new(format!(
            "the converted disk is a {} VMDK, expected {want_sub}",
            got.subformat.as_deref().unwrap_or("unknown")
        )));
    }
    r.info(&format!(
        "VMDK ({want_sub}) for vSphere: virtual size {} bytes, {} bytes on disk",
        got.virtual_size, got.actual_size
    ));
    if let Some(o) = &spec.ova {
        package(r, &vmdk_dst, dst, o, got.virtual_size, template_name)?;
    }
    Ok(())
}

/// Packs the VMDK at `vmdk` into the OVA at `dst`, then reads the package back.
fn package(
    r: &dyn Report,
    vmdk: &Path,
    dst: &Path,
    o: &OvaParams,
    capacity: u64,
    template_name: &str,
) -> Result<(), PluginError> {
    r.activity("Packing the OVA (OVF descriptor and disk)");
    let file_size = std::fs::metadata(vmdk)?.len();
    let name = o.name.clone().unwrap_or_else(|| template_name.to_string());
    let spec = ova::OvfSpec {
        name: name.clone(),
        cpus: o.cpus,
        memory_mb: o.memory_mb,
        os_type: o.os_type.clone(),
        capacity,
        file_size,
        network: o.network.clone(),
    };
    let ovf = ova::descriptor(&spec);
    let ovf_name = format!("{}.ovf", safe_file_name(&name));
    let tmp = beside(dst, "ova");
    let guard = Temp(tmp.clone());
    {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let mut on_bytes = |done: u64| r.percent((90 + done.saturating_mul(10) / file_size.max(1)).min(99) as u8);
        ova::write_package(&mut out, &ovf_name, &ovf, vmdk, &mut on_bytes, &|| r.cancelled()).map_err(|e| {
            if r.cancelled() {
                PluginError::cancelled()
            } else {
                PluginError::with_source("writing the OVA failed", &e)
            }
        })?;
        out.into_inner().map_err(|e| PluginError::with_source("writing the OVA failed", e.error()))?.sync_all()?;
    }
    std::fs::rename(&tmp, dst)?;
    std::mem::forget(guard);
    r.activity("Checking the OVA");
    let entries = ova::entries(dst).map_err(|e| PluginError::with_source("the OVA cannot be read back", &e))?;
    let ok = entries.len() == 2
        && entries[0].name == ovf_name
        && entries[0].size == ovf.len() as u64
        && entries[1].name == ova::DISK_NAME
        && entries[1].size == file_size;
    if !ok {
        return Err(PluginError::new("the OVA read back does not hold the descriptor then the disk"));
    }
    r.info(&format!("OVA for vSphere: {ovf_name} and {} ({file_size} bytes), virtual machine {name}", ova::DISK_NAME));
    Ok(())
}

/// A name usable as a file name inside the package.
fn safe_file_name(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    let s = s.trim_start_matches('.').chars().take(90).collect::<String>();
    if s.is_empty() {
        "vm".into()
    } else {
        s
    }
}

/// The template's name, or `fallback`.
pub fn template_name(template: &str, fallback: &str) -> String {
    match Template::parse(template, &ParseOptions::default()) {
        Ok(t) if !t.name.trim().is_empty() => t.name.trim().to_string(),
        _ => fallback.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Parameters {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn parameters() {
        assert_eq!(spec(&Parameters::new()).unwrap(), TargetSpec { vmdk: VmdkFormat::Streaming, ova: None });
        assert_eq!(
            spec(&params(serde_json::json!({"vsphere_vmdk_format": "standard"}))).unwrap().vmdk,
            VmdkFormat::Standard
        );
        let o = spec(&params(serde_json::json!({"vsphere_ova": "yes", "ovf_cpu_count": "2"}))).unwrap().ova.unwrap();
        assert_eq!((o.cpus, o.memory_mb), (2, 512));
        for bad in [
            serde_json::json!({"vsphere_vmdk_format": "flat"}),
            serde_json::json!({"vsphere_ova": "perhaps"}),
            serde_json::json!({"vsphere_ova": true, "vsphere_vmdk_format": "standard"}),
            serde_json::json!({"vsphere_ova": true, "ovf_memory_mb": 0}),
        ] {
            let e = spec(&params(bad.clone())).unwrap_err();
            assert!(!e.message.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn rhel5_gets_the_initrd_fix() {
        let tdl = |os: &str, v: &str| {
            format!(
                "<template><name>t</name><os><name>{os}</name><version>{v}</version><arch>x86_64</arch>\
                 <install type='url'><url>http://example.invalid/</url></install><rootpw>x</rootpw></os></template>"
            )
        };
        let c = content(&Parameters::new(), &tdl("RHEL-5", "U11")).unwrap();
        assert!(c.files.iter().any(|f| f.name == RHEL5_SCRIPT_PATH && f.file.contains("mptspi")));
        assert!(c.commands.iter().any(|c| c.command == "/bin/sh /root/vsphere-module.sh"));
        assert!(c.files.iter().any(|f| f.name == cloudkit::content::CLOUD_INFO_PATH));
        let c = content(&Parameters::new(), &tdl("RHEL-6", "4")).unwrap();
        assert!(!c.files.iter().any(|f| f.name == RHEL5_SCRIPT_PATH));
        assert!(needs_rhel5_fix(&tdl("CentOS-5", "11")));
        let off = params(serde_json::json!({"cloud_modifications": false}));
        assert!(content(&off, &tdl("Fedora", "38")).unwrap().is_empty());
    }
}
