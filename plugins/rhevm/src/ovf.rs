//! The OVF descriptor an export storage domain holds for a template
//! (`master/vms/<template>/<template>.ovf`), in the shape RHEV-M 3.x and oVirt engines
//! write and read (OVF 0.9 with `ovf:` disk attributes the engine defines), and the
//! reading back of the ids a delete and the tests need.

/// The all-zero UUID the engine uses for "none".
pub const NIL: &str = "00000000-0000-0000-0000-000000000000";
const GIB: u64 = 1 << 30;

/// What the descriptor describes.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateOvf {
    pub name: String,
    pub description: String,
    pub template_id: String,
    pub storage_domain: String,
    pub image_group: String,
    pub volume: String,
    /// `COW` (qcow2) or `RAW`.
    pub volume_format: &'static str,
    pub virtual_size: u64,
    pub file_size: u64,
    pub cpus: u32,
    pub memory_mb: u64,
    /// `YYYY/MM/DD HH:MM:SS` (UTC).
    pub created: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// Whole GiB, rounded up (the engine's unit for disk sizes in the OVF).
pub fn gib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(GIB).max(1)
}

/// The descriptor's text.
pub fn descriptor(t: &TemplateOvf) -> String {
    let href = format!("{}/{}", t.image_group, t.volume);
    let (volume_type, format_uri) = if t.volume_format == "COW" {
        ("Sparse", "http://www.vmware.com/specifications/vmdk.html#sparse")
    } else {
        ("Preallocated", "http://www.vmware.com/specifications/vmdk.html#sparse")
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1/" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ovf:version="0.9">
  <References>
    <File ovf:href="{href}" ovf:id="{vol}" ovf:size="{file_size}" ovf:description="{desc}"/>
  </References>
  <Section xsi:type="ovf:NetworkSection_Type">
    <Info>List of networks</Info>
    <Network ovf:name="rhevm"/>
  </Section>
  <Section xsi:type="ovf:DiskSection_Type">
    <Info>List of Virtual Disks</Info>
    <Disk ovf:diskId="{vol}" ovf:size="{size_gib}" ovf:actual_size="{actual_gib}" ovf:vm_snapshot_id="{NIL}" ovf:parentRef="" ovf:fileRef="{href}" ovf:format="{format_uri}" ovf:volume-format="{vf}" ovf:volume-type="{volume_type}" ovf:disk-interface="VirtIO" ovf:disk-type="System" ovf:boot="true" ovf:wipe-after-delete="false"/>
  </Section>
  <Content ovf:id="out" xsi:type="ovf:VirtualSystem_Type">
    <Name>{name}</Name>
    <TemplateId>{tpl}</TemplateId>
    <Description>{desc}</Description>
    <Domain/>
    <CreationDate>{created}</CreationDate>
    <TimeZone/>
    <IsAutoSuspend>false</IsAutoSuspend>
    <VmType>1</VmType>
    <default_display_type>0</default_display_type>
    <default_boot_sequence>1</default_boot_sequence>
    <Section ovf:id="{tpl}" ovf:required="false" xsi:type="ovf:OperatingSystemSection_Type">
      <Info>Guest Operating System</Info>
      <Description>OtherLinux</Description>
    </Section>
    <Section xsi:type="ovf:VirtualHardwareSection_Type">
      <Info>{cpus} CPU, {mem} Memory</Info>
      <System>
        <vssd:VirtualSystemType>RHEVM 3.0.0.0</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>{cpus} virtual CPU</rasd:Caption>
        <rasd:Description>Number of virtual CPU</rasd:Description>
        <rasd:InstanceId>1</rasd:InstanceId>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:num_of_sockets>{cpus}</rasd:num_of_sockets>
        <rasd:cpu_per_socket>1</rasd:cpu_per_socket>
      </Item>
      <Item>
        <rasd:Caption>{mem} MB of memory</rasd:Caption>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:InstanceId>2</rasd:InstanceId>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Caption>Drive 1</rasd:Caption>
        <rasd:InstanceId>{vol}</rasd:InstanceId>
        <rasd:ResourceType>17</rasd:ResourceType>
        <rasd:HostResource>{href}</rasd:HostResource>
        <rasd:Parent>{NIL}</rasd:Parent>
        <rasd:Template>{NIL}</rasd:Template>
        <rasd:ApplicationList/>
        <rasd:StorageId>{sd}</rasd:StorageId>
        <rasd:StoragePoolId>{NIL}</rasd:StoragePoolId>
        <rasd:CreationDate>{created}</rasd:CreationDate>
        <rasd:LastModified>{created}</rasd:LastModified>
      </Item>
      <Item>
        <rasd:Caption>Ethernet 0 rhevm</rasd:Caption>
        <rasd:InstanceId>3</rasd:InstanceId>
        <rasd:ResourceType>10</rasd:ResourceType>
        <rasd:ResourceSubType>3</rasd:ResourceSubType>
        <rasd:Connection>rhevm</rasd:Connection>
        <rasd:Name>eth0</rasd:Name>
        <rasd:speed>1000</rasd:speed>
      </Item>
      <Item>
        <rasd:Caption>Graphics</rasd:Caption>
        <rasd:InstanceId>5</rasd:InstanceId>
        <rasd:ResourceType>20</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
    </Section>
  </Content>
</ovf:Envelope>
"#,
        vol = t.volume,
        file_size = t.file_size,
        desc = esc(&t.description),
        size_gib = gib_ceil(t.virtual_size),
        actual_gib = gib_ceil(t.file_size),
        vf = t.volume_format,
        name = esc(&t.name),
        tpl = t.template_id,
        created = t.created,
        cpus = t.cpus,
        mem = t.memory_mb,
        sd = t.storage_domain,
    )
}

/// What a descriptor read back says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedOvf {
    pub template_id: String,
    pub name: String,
    /// `image-group/volume` of each disk file.
    pub files: Vec<String>,
    /// (`diskId`, `ovf:size` in GiB, `volume-format`) of each disk.
    pub disks: Vec<(String, u64, String)>,
}

/// Reads a descriptor back.
pub fn parse(text: &str) -> Result<ParsedOvf, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("the OVF is not well-formed XML ({e})"))?;
    let attr =
        |n: roxmltree::Node, name: &str| n.attributes().find(|a| a.name() == name).map(|a| a.value().to_string());
    let text_of = |tag: &str| {
        doc.descendants().find(|n| n.has_tag_name(tag)).and_then(|n| n.text()).map(|s| s.trim().to_string())
    };
    let files = doc.descendants().filter(|n| n.has_tag_name("File")).filter_map(|n| attr(n, "href")).collect();
    let disks = doc
        .descendants()
        .filter(|n| n.has_tag_name("Disk"))
        .map(|n| {
            (
                attr(n, "diskId").unwrap_or_default(),
                attr(n, "size").and_then(|s| s.parse().ok()).unwrap_or(0),
                attr(n, "volume-format").unwrap_or_default(),
            )
        })
        .collect();
    Ok(ParsedOvf {
        template_id: text_of("TemplateId").ok_or("the OVF has no TemplateId")?,
        name: text_of("Name").unwrap_or_default(),
        files,
        disks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = TemplateOvf {
            name: "jeos <1>".into(),
            description: "built & pushed".into(),
            template_id: "11111111-1111-1111-1111-111111111111".into(),
            storage_domain: "22222222-2222-2222-2222-222222222222".into(),
            image_group: "33333333-3333-3333-3333-333333333333".into(),
            volume: "44444444-4444-4444-4444-444444444444".into(),
            volume_format: "COW",
            virtual_size: 3 * GIB + 1,
            file_size: 1000,
            cpus: 1,
            memory_mb: 512,
            created: "2024/01/02 03:04:05".into(),
        };
        let p = parse(&descriptor(&t)).unwrap();
        assert_eq!(p.template_id, t.template_id);
        assert_eq!(p.name, "jeos <1>");
        assert_eq!(p.files, vec![format!("{}/{}", t.image_group, t.volume)]);
        assert_eq!(p.disks, vec![(t.volume.clone(), 4, "COW".to_string())]);
    }
}
