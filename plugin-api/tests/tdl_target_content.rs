//! `target_content.xml`: parsing, validation and the most-specific-include rule.

use imagefactory_plugin_api::tdl::*;

fn corpus(file: &str) -> String {
    let path = format!("{}/tests/tdl/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn first_package(includes: &TargetContentIncludes, wanted: [&str; 4]) -> Option<String> {
    let [target, os, version, arch] = wanted;
    includes.select(target, os, version, arch).map(|f| f.packages[0].name.clone())
}

#[test]
fn the_most_specific_include_wins() {
    let includes = TargetContentIncludes::parse(&corpus("target-content-valid.xml")).unwrap();
    assert_eq!(includes.includes.len(), 6);
    let cases = [
        (["ec2", "Fedora", "18", "x86_64"], "f18-x86_64-ec2"),
        (["ec2", "Fedora", "18", "i386"], "f18-ec2"),
        (["ec2", "Fedora", "19", "x86_64"], "fedora-ec2"),
        (["ec2", "RHEL-7", "7.9", "x86_64"], "cloud-init"),
        (["gce", "Fedora", "18", "x86_64"], "everywhere"),
        // An include with os but no target never matches on its own.
        (["vsphere", "RHEL-7", "7", "x86_64"], "everywhere"),
    ];
    for (wanted, package) in cases {
        assert_eq!(first_package(&includes, wanted).as_deref(), Some(package), "{wanted:?}");
    }
}

#[test]
fn no_include_applies_without_a_catch_all() {
    let includes = TargetContentIncludes::parse(
        "<template_includes><include target='ec2'><packages><package name='a'/></packages></include></template_includes>",
    )
    .unwrap();
    assert!(includes.select("gce", "Fedora", "18", "x86_64").is_none());
    assert!(includes.select("ec2", "Fedora", "18", "x86_64").is_some());
    let empty = TargetContentIncludes::parse("<template_includes/>").unwrap();
    assert!(empty.select("ec2", "Fedora", "18", "x86_64").is_none());
}

#[test]
fn the_first_of_equally_specific_includes_wins() {
    let includes = TargetContentIncludes::parse(
        "<template_includes>
           <include target='ec2'><packages><package name='first'/></packages></include>
           <include target='ec2'><packages><package name='second'/></packages></include>
         </template_includes>",
    )
    .unwrap();
    assert_eq!(first_package(&includes, ["ec2", "Fedora", "18", "x86_64"]).as_deref(), Some("first"));
}

#[test]
fn selected_content_merges_into_a_template() {
    let includes = TargetContentIncludes::parse(&corpus("target-content-valid.xml")).unwrap();
    let mut template = Template::parse(&corpus("seed-f18utility.tdl"), &ParseOptions::default()).unwrap();
    let content = includes
        .select("ec2", &template.os.name, &template.os.version, &template.os.arch)
        .expect("an include for ec2/Fedora/18/x86_64");
    template.merge(content);
    let names: Vec<&str> = template.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["lorax", "hfsplus-tools", "f18-x86_64-ec2"]);
    assert_eq!(template.files[0].name, "/etc/cloud/cloud.cfg.d/99-site.cfg");
    assert_eq!(template.commands[0].content, "systemctl enable cloud-init");
}

#[test]
fn include_content_follows_template_rules() {
    let err = TargetContentIncludes::parse(&corpus("target-content-invalid.xml")).unwrap_err();
    let lines: Vec<String> = err.diagnostics().iter().map(|d| d.to_string()).collect();
    assert_eq!(
        lines,
        [
            "line 2, column 25: <include>: Unknown attribute 'flavour' on <include>",
            "line 3, column 15: <package>: Package without a name was given",
            "line 5, column 32: <url>: Repositories cannot be localhost, since they must be reachable from the guest operating system",
            "line 7, column 5: <os>: Unknown element <os> in <include>; expected one of: packages, repositories, files, commands, precommands",
        ]
    );
}

#[test]
fn the_document_element_must_be_template_includes() {
    let err = TargetContentIncludes::parse("<template/>").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1, column 1: <template>: Expected a <template_includes> document, saw <template>"
    );
}
