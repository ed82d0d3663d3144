//! The example templates in conf/examples (fedora*.tdl, rhel*.tdl) parse, name a release
//! the plugins build, and give a kickstart with the parts every install needs.

use imagefactory_plugin_api::tdl::{ParseOptions, Template};
use redhat::distro::{Family, Release};
use redhat::kickstart::{self, Content, Input, Markers, Source};

#[test]
fn every_example_gives_a_complete_kickstart() {
    let dir = testkit::workspace_dir().join("conf/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let family = if name.starts_with("fedora") {
            Family::Fedora
        } else if name.starts_with("rhel") {
            Family::Rhel
        } else {
            continue;
        };
        assert!(name.ends_with(".tdl"), "{name}");
        let t = Template::parse(&std::fs::read_to_string(&path).unwrap(), &ParseOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let release = Release::parse(family, &t.os.name, &t.os.version).unwrap_or_else(|e| panic!("{name}: {e}"));
        let files = t.files.iter().map(|f| Content { name: f.name.clone(), data: f.data().unwrap() }).collect();
        let commands = t.commands.iter().map(|c| Content { name: c.name.clone(), data: c.data().unwrap() }).collect();
        let ks = kickstart::generate(&Input {
            template: &t,
            release,
            source: Source::Url("http://10.0.2.2:8000/".into()),
            root_hash: Some("$6$s$h".into()),
            markers: Markers::new("x"),
            files,
            commands,
            precommands: vec![],
            icicle: true,
        });
        for want in ["\ntext\n", "\nrootpw --iscrypted $6$s$h\n", "\npoweroff\n", "\n%packages\n", "\n%post\n"] {
            assert!(ks.contains(want), "{name}: {want:?} missing in\n{ks}");
        }
        assert!(!ks.contains("change-me"), "{name}: the plain password is in the kickstart");
        seen += 1;
    }
    assert!(seen >= 4, "only {seen} Fedora/RHEL examples in {}", dir.display());
}
