//! The build cache over a real daemon with MockOS, whose "mirror" is a directory: its
//! `Release` file is the source state the plugin reports (see the mock plugin's docs).

use std::path::Path;
use std::time::{Duration, Instant};

use imagefactory_blackbox::*;
use serde_json::{json, Value};

/// A MockOS template reading its packages from `mirror`, compact or spread out.
fn template(mirror: &Path, spread: bool, packages: &[&str]) -> String {
    let url = format!("file://{}/", mirror.display());
    let pkgs: String = packages.iter().map(|p| format!("<package name='{p}'/>")).collect();
    if spread {
        format!(
            "<template>\n  <name>cached</name>\n  <os>\n    <name>MockOS_A</name>\n    <version>1</version>\n    \
             <arch>x86_64</arch>\n    <install type=\"url\">\n      <url>{url}</url>\n    </install>\n  </os>\n  \
             <packages>\n    {pkgs}\n  </packages>\n</template>\n"
        )
    } else {
        format!(
            "<template><name>cached</name><os><name>MockOS_A</name><version>1</version><arch>x86_64</arch>\
             <install type='url'><url>{url}</url></install></os><packages>{pkgs}</packages></template>"
        )
    }
}

fn body(d: &Daemon, id: &str) -> Vec<u8> {
    std::fs::read(d.storage().join(format!("{id}.body"))).expect("the image body")
}

/// Builds a base image; returns it (COMPLETE) and how long it took.
fn build(d: &Daemon, template: &str, parameters: Value) -> (Value, Duration) {
    let started = Instant::now();
    let id = d.create_base(template, parameters);
    let img = d.wait_complete(&id, "base_images");
    (img, started.elapsed())
}

fn cached_from(img: &Value) -> Option<&str> {
    img["properties"]["cached_from"].as_str()
}

#[test]
fn an_equal_build_is_served_from_the_cache_and_any_changed_input_misses_it() {
    let mut d = Daemon::start_default();
    let mirror = tempfile::tempdir().expect("a mirror dir");
    std::fs::write(mirror.path().join("Release"), "Suite: mock\nDate: Sat, 05 Dec 2026 10:00:00 UTC\n").unwrap();
    let t = template(mirror.path(), false, &["vim", "curl"]);

    let (first, _) = build(&d, &t, json!({}));
    let first_id = first["id"].as_str().unwrap().to_string();
    assert_eq!(cached_from(&first), None, "the first build cannot come from the cache");
    let key = first["properties"]["cache_key"].as_str().expect("a cache key").to_string();

    // The same template, spread over lines with other quotes: a hit, within 2 s.
    let (hit, took) = build(&d, &template(mirror.path(), true, &["vim", "curl"]), json!({"callbacks": []}));
    let hit_id = hit["id"].as_str().unwrap().to_string();
    assert_eq!(cached_from(&hit), Some(first_id.as_str()), "{hit}");
    assert_eq!(hit["properties"]["cache_key"], key.as_str());
    assert!(took < Duration::from_secs(2), "a cache hit took {took:?}");
    assert_eq!(body(&d, &hit_id), body(&d, &first_id), "the hit does not have the cached body");
    assert_eq!(hit["icicle"], first["icicle"]);
    let sbom = d.storage().join(format!("{hit_id}.files/sbom.spdx.json"));
    testkit::spdx::assert_valid(&sbom);
    let doc: Value = serde_json::from_slice(&std::fs::read(&sbom).unwrap()).unwrap();
    assert!(doc["name"].as_str().is_some_and(|n| n.contains(&hit_id)), "the hit's SBOM names another image");
    assert!(d.build_log("base_images", &hit_id).contains("build cache: hit"), "no hit in the build log");

    // Each changed input misses: the package list, no_cache, the Release file.
    let (other, _) = build(&d, &template(mirror.path(), false, &["vim"]), json!({}));
    assert_eq!(cached_from(&other), None, "a changed package list hit the cache");
    let (forced, _) = build(&d, &t, json!({"no_cache": true}));
    assert_eq!(cached_from(&forced), None, "no_cache was served from the cache");
    assert!(d.build_log("base_images", forced["id"].as_str().unwrap()).contains("no_cache"));
    std::fs::write(mirror.path().join("Release"), "Suite: mock\nDate: Sun, 06 Dec 2026 10:00:00 UTC\n").unwrap();
    let (moved, _) = build(&d, &t, json!({}));
    assert_eq!(cached_from(&moved), None, "a changed Release file hit the cache");
    assert_ne!(moved["properties"]["cache_key"], key.as_str());

    // Deleting the image that was built keeps the body of the one that shares it, and
    // the cache still serves it.
    let path = format!("/imagefactory/base_images/{first_id}");
    d.delete(&path).expect(204);
    wait_for(BUILD_TIMEOUT, "the delete", || (d.get(&path).status == 404).then_some(()));
    assert!(!d.storage().join(format!("{first_id}.body")).exists(), "the deleted image's body is still there");
    std::fs::write(mirror.path().join("Release"), "Suite: mock\nDate: Sat, 05 Dec 2026 10:00:00 UTC\n").unwrap();
    assert_eq!(&body(&d, &hit_id)[..17], b"MockOS base_image");
    let (again, _) = build(&d, &t, json!({}));
    assert_eq!(cached_from(&again), Some(first_id.as_str()), "the cache lost the entry of a deleted image");
    assert_eq!(body(&d, again["id"].as_str().unwrap()), body(&d, &hit_id));

    // A new plugin version misses.
    d.restart_with_env("IMAGEFACTORY_MOCK_OS_VERSION", "1.1");
    let (newer, _) = build(&d, &t, json!({}));
    assert_eq!(cached_from(&newer), None, "a new plugin version hit the cache");
}

#[test]
fn targets_of_equal_bases_come_from_the_cache_and_a_plugin_without_source_state_is_never_cached() {
    let d = Daemon::start_default();
    let mirror = tempfile::tempdir().expect("a mirror dir");
    std::fs::write(mirror.path().join("Release"), "Suite: mock\n").unwrap();
    let t = template(mirror.path(), false, &[]);
    let (base, _) = build(&d, &t, json!({}));
    let (twin, _) = build(&d, &t, json!({}));
    let base_id = base["id"].as_str().unwrap();
    let twin_id = twin["id"].as_str().unwrap();
    let target = |base: &str, params: Value| {
        let r = d.post_json(
            "/imagefactory/target_images",
            &json!({"target_image": {"target": "mock", "base_image_id": base, "parameters": params}}),
        );
        r.expect(202);
        let id = r.json()["target_image"]["id"].as_str().expect("an id").to_string();
        d.wait_complete(&id, "target_images")
    };
    let first = target(base_id, json!({}));
    assert_eq!(cached_from(&first), None);
    let first_id = first["id"].as_str().unwrap();
    let hit = target(twin_id, json!({}));
    assert_eq!(cached_from(&hit), Some(first_id), "a target of an equal base was built again: {hit}");
    let hit_id = hit["id"].as_str().unwrap();
    assert_eq!(body(&d, hit_id), body(&d, first_id));
    let doc: Value = serde_json::from_slice(
        &std::fs::read(d.storage().join(format!("{hit_id}.files/sbom.spdx.json"))).expect("the hit's SBOM"),
    )
    .unwrap();
    let refs = doc["externalDocumentRefs"].to_string();
    assert!(refs.contains(twin_id), "the hit's SBOM does not point at its own base: {refs}");
    let other = target(twin_id, json!({"mock_note": "changed"}));
    assert_eq!(cached_from(&other), None, "a target with other parameters hit the cache");

    // An http "mirror" has no state MockOS can tell: never cached.
    let (a, _) = build(&d, &mock_tdl(), json!({}));
    let (b, _) = build(&d, &mock_tdl(), json!({}));
    assert!(a["properties"].get("cache_key").is_none() && cached_from(&b).is_none(), "{b}");
    assert!(d.build_log("base_images", b["id"].as_str().unwrap()).contains("does not report its package sources"));
}
