//! The REST API v2 over real HTTP against a daemon the test starts: every route, the
//! base -> target -> provider chain with the test plugins, callbacks, OAuth and TLS.

use std::process::Command;
use std::time::Duration;

use imagefactory_blackbox::*;
use serde_json::{json, Value};

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-') && s.matches('-').count() == 4
}

#[test]
fn root_answers_name_and_api_version() {
    let d = Daemon::start_default();
    for path in ["/imagefactory", "/imagefactory/"] {
        let r = d.get(path);
        r.expect(200);
        let v = r.json();
        assert_eq!(v["name"], "imagefactory");
        assert_eq!(v["api_version"], "2.0");
        assert!(v["version"].as_str().is_some_and(|s| !s.is_empty()), "version missing: {v}");
    }
}

#[test]
fn base_image_lifecycle_raw_image_range_build_log_and_delete() {
    let d = Daemon::start_default();
    let rootpw = format!("pw-{}", unique("r"));
    let template = mock_tdl().replace("changeme", &rootpw);
    let r = d.post_json("/imagefactory/base_images", &json!({"base_image": {"template": template}}));
    r.expect(202);
    let created = r.json();
    let b = &created["base_image"];
    assert_eq!(b["_type"], "BaseImage");
    let id = b["id"].as_str().expect("id").to_string();
    assert!(is_uuid(&id), "id is not a uuid: {id}");
    assert_eq!(b["href"], format!("{}/imagefactory/base_images/{id}", d.origin()));
    assert_eq!(b["status"], "NEW");
    // The root password is a credential: stored and returned redacted.
    assert_eq!(b["template"], template.replace(&rootpw, "REDACTED").as_str());
    for key in ["percent_complete", "status_detail", "parameters", "properties", "icicle"] {
        assert!(b.get(key).is_some(), "POST answer lacks {key}: {b}");
    }
    assert!(b.get("data").is_none() && b.get("identifier").is_none(), "storage fields leaked: {b}");

    let img = d.wait_complete(&id, "base_images");
    assert_eq!(img["_type"], "BaseImage");
    assert_eq!(img["id"], id.as_str());
    assert_eq!(img["href"], format!("{}/imagefactory/base_images/{id}", d.origin()));
    assert_eq!(img["percent_complete"], 100);
    assert_eq!(img["status_detail"]["activity"], "Base Image build complete");
    assert!(img["status_detail"]["error"].is_null(), "{img}");
    assert!(img["icicle"].as_str().is_some_and(|s| s.contains("<icicle>")), "MockOS icicle missing: {img}");
    // The plugin was handed the password as given; no answer, record or log holds it.
    let log = d.build_log("base_images", &id);
    assert!(log.contains(&format!("given a root password of {} characters", rootpw.len())), "{log}");
    assert!(!log.contains(&rootpw) && !img.to_string().contains(&rootpw), "the root password leaked");
    let meta = std::fs::read_to_string(d.storage().join(format!("{id}.meta"))).expect("the .meta file");
    assert!(!meta.contains(&rootpw), "the root password is in the stored record");
    // A base image shows its target images under the nested wrapper, empty for now.
    assert_eq!(img["target_images"], json!({"target_images": []}));

    // The body, whole and in part.
    let expected = format!("MockOS base_image file for id ({id})");
    let raw = d.get(&format!("/imagefactory/base_images/{id}/raw_image"));
    raw.expect(200);
    assert_eq!(raw.text(), expected);
    assert_eq!(raw.header("content-disposition"), Some(format!("attachment; filename=\"{id}.body\"").as_str()));
    let part = d.request("GET", &format!("/imagefactory/base_images/{id}/raw_image"), &[("Range", "bytes=0-5")], None);
    part.expect(206);
    assert_eq!(part.body, expected.as_bytes()[..6].to_vec());
    assert!(part.header("content-range").is_some_and(|v| v.starts_with("bytes 0-5/")), "{:?}", part.headers);

    // The build log: plain text naming what ran.
    let log = d.get(&format!("/imagefactory/base_images/{id}/build_log"));
    log.expect(200);
    assert!(log.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", log.headers);
    assert!(!log.text().trim().is_empty(), "the build log is empty");
    assert!(log.text().contains("MockOS"), "build log does not mention the plugin: {}", log.text());

    // The collection lists it as {_type, id, href} only.
    let list = d.get("/imagefactory/base_images");
    list.expect(200);
    let list = list.json();
    let items = list["base_images"].as_array().expect("base_images list");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(
        items[0],
        json!({"base_image": {"_type": "BaseImage", "id": id, "href": format!("{}/imagefactory/base_images/{id}", d.origin())}})
    );

    // The .meta file is the original's layout.
    let meta: Value =
        serde_json::from_slice(&std::fs::read(d.storage().join(format!("{id}.meta"))).expect("meta file")).unwrap();
    assert_eq!(meta["type"], "BaseImage");
    assert_eq!(meta["identifier"], id.as_str());
    assert_eq!(meta["status"], "COMPLETE");
    assert!(d.storage().join(format!("{id}.body")).is_file());

    // DELETE: 204, then gone.
    d.delete(&format!("/imagefactory/base_images/{id}")).expect(204);
    wait_for(Duration::from_secs(10), "the deleted image to 404", || {
        (d.get(&format!("/imagefactory/base_images/{id}")).status == 404).then_some(())
    });
    let gone = d.get(&format!("/imagefactory/base_images/{id}"));
    assert!(gone.text().contains(&id), "404 text should name the id: {}", gone.text());
    d.get(&format!("/imagefactory/base_images/{id}/raw_image")).expect(404);
    assert!(!d.storage().join(format!("{id}.meta")).exists(), "the .meta file is still there");
    assert!(!d.storage().join(format!("{id}.body")).exists(), "the .body file is still there");
    assert_eq!(d.get("/imagefactory/base_images").json()["base_images"], json!([]));
}

/// The names in the storage directory that mention `id`.
fn stored_names_of(d: &Daemon, id: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d.storage())
        .expect("read the storage directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(id))
        .collect();
    names.sort();
    names
}

#[test]
fn no_lock_file_outlives_a_build_and_nothing_of_a_deleted_image_is_left() {
    let d = Daemon::start_default();
    let ok = d.create_base(&mock_tdl(), json!({"mock_keep_file": "kept.txt"}));
    let failed = d.create_base(&mock_tdl(), json!({"mock_fail_at": "create_base_image"}));
    d.wait_complete(&ok, "base_images");
    d.wait_status(&failed, "base_images", &["FAILED"], BUILD_TIMEOUT);
    let target =
        d.post_json("/imagefactory/target_images", &json!({"target_image": {"target": "mock", "base_image_id": ok}}));
    target.expect(202);
    let tid = target.json()["target_image"]["id"].as_str().expect("an id").to_string();
    d.wait_complete(&tid, "target_images");
    for id in [&ok, &failed, &tid] {
        let lock = format!(".{id}.lock");
        // The lock goes a moment after the final status is written: wait, bounded.
        wait_for(Duration::from_secs(10), &format!("{lock} to go"), || {
            (!d.storage().join(&lock).exists()).then_some(())
        });
        assert!(!stored_names_of(&d, id).contains(&lock), "{:?}", stored_names_of(&d, id));
    }
    assert!(stored_names_of(&d, &ok).contains(&format!("{ok}.meta")), "{:?}", stored_names_of(&d, &ok));
    // DELETE (cascading to the target image, and of the failed one): nothing of them is left.
    d.delete_json(&format!("/imagefactory/base_images/{ok}"), &json!({"parameters": {"cascade": true}})).expect(204);
    d.delete(&format!("/imagefactory/base_images/{failed}")).expect(204);
    for id in [&ok, &failed, &tid] {
        wait_for(Duration::from_secs(10), &format!("every file of {id} to go"), || {
            stored_names_of(&d, id).is_empty().then_some(())
        });
    }
    // A build deleted while it runs leaves nothing either (its lock, then the delete's).
    let slow = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 30}));
    d.wait_status(&slow, "base_images", &["BUILDING"], BUILD_TIMEOUT);
    assert!(d.storage().join(format!(".{slow}.lock")).exists(), "a running build holds no lock file");
    d.delete(&format!("/imagefactory/base_images/{slow}")).expect(204);
    wait_for(Duration::from_secs(20), &format!("every file of {slow} to go"), || {
        stored_names_of(&d, &slow).is_empty().then_some(())
    });
    assert_eq!(std::fs::read_dir(d.storage()).unwrap().count(), 0, "the store is not empty");
}

#[test]
fn target_and_provider_chain_with_nested_routes_and_no_credential_leaks() {
    let d = Daemon::start_default();
    let origin = d.origin();

    // A target image from a template: the base image is built first.
    let r = d
        .post_json("/imagefactory/target_images", &json!({"target_image": {"template": mock_tdl(), "target": "mock"}}));
    r.expect(202);
    let t1 = r.json()["target_image"].clone();
    assert_eq!(t1["_type"], "TargetImage");
    assert_eq!(t1["status"], "NEW");
    assert_eq!(t1["target"], "mock");
    let t1_id = t1["id"].as_str().unwrap().to_string();
    let auto_base = t1["base_image_id"].as_str().expect("202 answer names base_image_id").to_string();
    let t1 = d.wait_complete(&t1_id, "target_images");
    assert_eq!(t1["percent_complete"], 100);
    assert_eq!(t1["status_detail"]["activity"], "Target Image build complete");
    assert_eq!(
        t1["base_image"],
        json!({"_type": "BaseImage", "id": auto_base, "href": format!("{origin}/imagefactory/base_images/{auto_base}")})
    );
    assert_eq!(t1["provider_images"], json!({"provider_images": []}));
    assert_eq!(d.image("base_images", &auto_base)["status"], "COMPLETE");
    let body = d.get(&format!("/imagefactory/target_images/{t1_id}/raw_image"));
    body.expect(200);
    assert!(body.text().starts_with(&format!("MockOS target_image file for id ({t1_id})")), "{}", body.text());

    // A target image from an existing base, through the nested collection.
    let bid = d.create_base(&mock_tdl(), json!({}));
    d.wait_complete(&bid, "base_images");
    let r = d.post_json(
        &format!("/imagefactory/base_images/{bid}/target_images"),
        &json!({"target_image": {"target": "mock"}}),
    );
    r.expect(202);
    let t2_id = r.json()["target_image"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["target_image"]["base_image_id"], bid.as_str());
    let t2 = d.wait_complete(&t2_id, "target_images");
    assert_eq!(t2["base_image"]["id"], bid.as_str());

    // The base shows its target image in the nested wrapper; the nested list too.
    let base = d.image("base_images", &bid);
    assert_eq!(
        base["target_images"],
        json!({"target_images": [{"target_image": {"_type": "TargetImage", "id": t2_id, "href": format!("{origin}/imagefactory/target_images/{t2_id}")}}]})
    );
    let nested = d.get(&format!("/imagefactory/base_images/{bid}/target_images"));
    nested.expect(200);
    let nested = nested.json();
    let nested_ids: Vec<&str> =
        nested["target_images"].as_array().unwrap().iter().map(|i| i["target_image"]["id"].as_str().unwrap()).collect();
    assert_eq!(nested_ids, vec![t2_id.as_str()], "{nested}");
    // The nested GET of an item answers the same image.
    let via_nested = d.get(&format!("/imagefactory/base_images/{bid}/target_images/{t2_id}"));
    via_nested.expect(200);
    assert_eq!(via_nested.json()["target_image"]["id"], t2_id.as_str());
    // The top-level list has both target images.
    let all = d.get("/imagefactory/target_images").json();
    assert_eq!(all["target_images"].as_array().unwrap().len(), 2, "{all}");

    // A provider image pushing t2, through the nested collection; the credentials hold a secret.
    let secret = unique("s3cr3t-credential");
    let r = d.post_json(
        &format!("/imagefactory/target_images/{t2_id}/provider_images"),
        &json!({"provider_image": {"provider": "mock-provider", "credentials": credentials(&secret), "target": "mock"}}),
    );
    r.expect(202);
    let p = r.json()["provider_image"].clone();
    assert_eq!(p["_type"], "ProviderImage");
    assert_eq!(p["target_image_id"], t2_id.as_str());
    assert!(!r.text().contains(&secret), "the 202 answer shows the credentials");
    let pid = p["id"].as_str().unwrap().to_string();
    let p = d.wait_complete(&pid, "provider_images");
    assert!(p["identifier_on_provider"].as_str().is_some_and(|s| !s.is_empty()), "{p}");
    assert_eq!(p["provider_account_identifier"], "mock_user");
    assert_eq!(p["provider"], "mock-provider");
    assert_eq!(
        p["target_image"],
        json!({"_type": "TargetImage", "id": t2_id, "href": format!("{origin}/imagefactory/target_images/{t2_id}")})
    );
    let t2 = d.image("target_images", &t2_id);
    assert_eq!(t2["provider_images"]["provider_images"][0]["provider_image"]["id"], pid.as_str(), "{t2}");
    let nested = d.get(&format!("/imagefactory/target_images/{t2_id}/provider_images")).json();
    assert_eq!(nested["provider_images"][0]["provider_image"]["id"], pid.as_str(), "{nested}");
    let deep = d.get(&format!("/imagefactory/base_images/{bid}/target_images/{t2_id}/provider_images/{pid}"));
    deep.expect(200);
    assert_eq!(deep.json()["provider_image"]["id"], pid.as_str());

    // The secret appears nowhere: not in GET, not in any .meta, not in the build log or daemon log.
    let get = d.get(&format!("/imagefactory/provider_images/{pid}"));
    assert!(!get.text().contains(&secret), "GET shows the credentials: {}", get.text());
    assert!(get.json()["provider_image"].get("credentials").is_none());
    for e in std::fs::read_dir(d.storage()).unwrap().flatten() {
        let content = std::fs::read(e.path()).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&content).contains(&secret), "{} holds the credentials", e.path().display());
    }
    let log = d.build_log("provider_images", &pid);
    assert!(!log.trim().is_empty());
    assert!(!log.contains(&secret), "the build log holds the credentials");
    assert!(!d.log().contains(&secret), "the daemon log holds the credentials");

    let deep_list = d.get(&format!("/imagefactory/base_images/{bid}/target_images/{t2_id}/provider_images"));
    deep_list.expect(200);
    assert_eq!(deep_list.json()["provider_images"][0]["provider_image"]["id"], pid.as_str());

    // A provider image in cascade from a template, at the top-level collection.
    let r = d.post_json(
        "/imagefactory/provider_images",
        &json!({"provider_image": {"provider": "@mock-provider", "credentials": credentials(&secret), "target": "MockCloud", "template": mock_tdl()}}),
    );
    r.expect(202);
    let p2_id = r.json()["provider_image"]["id"].as_str().unwrap().to_string();
    let p2 = d.wait_complete(&p2_id, "provider_images");
    let t3_id = p2["target_image"]["id"].as_str().expect("cascade made a target image").to_string();
    assert!(t3_id != t2_id && t3_id != t1_id);
    assert_eq!(d.image("target_images", &t3_id)["status"], "COMPLETE");

    // Deleting a pushed provider image needs provider, credentials and target.
    let r = d.delete(&format!("/imagefactory/provider_images/{pid}"));
    r.expect(400);
    assert!(r.text().starts_with("Missing required values"), "{}", r.text());
    assert_eq!(d.image("provider_images", &pid)["status"], "COMPLETE");
    d.delete_json(
        &format!("/imagefactory/provider_images/{pid}"),
        &json!({"provider_image": {"provider": "mock-provider", "credentials": credentials(&secret), "target": "mock"}}),
    )
    .expect(204);
    wait_for(Duration::from_secs(10), "the provider image to be deleted", || {
        (d.get(&format!("/imagefactory/provider_images/{pid}")).status == 404).then_some(())
    });
    assert!(!d.log().contains(&secret), "the daemon log holds the credentials after delete");
}

#[test]
fn snapshot_provider_image_from_a_template() {
    let d = Daemon::start_default();
    let r = d.post_json(
        "/imagefactory/provider_images",
        &json!({"provider_image": {
            "provider": "mock-provider", "credentials": credentials("snap"), "target": "mock",
            "template": mock_tdl(), "parameters": {"snapshot": true}
        }}),
    );
    r.expect(202);
    let id = r.json()["provider_image"]["id"].as_str().unwrap().to_string();
    let p = d.wait_complete(&id, "provider_images");
    assert!(p["identifier_on_provider"].as_str().is_some_and(|s| !s.is_empty()), "{p}");
    assert_eq!(p["provider_account_identifier"], "mock_user");
    // A snapshot has no target image and built no base image.
    assert!(p["target_image"].is_null(), "{p}");
    assert_eq!(d.get("/imagefactory/target_images").json()["target_images"], json!([]));
    assert_eq!(d.get("/imagefactory/base_images").json()["base_images"], json!([]));
    assert!(d.build_log("provider_images", &id).contains("snapshot"), "{}", d.build_log("provider_images", &id));
}

#[test]
fn plugins_jeos_targets_and_validate_routes() {
    let d = Daemon::start_default();
    let origin = d.origin();
    for path in ["/imagefactory/plugins", "/imagefactory/plugins/"] {
        let r = d.get(path);
        r.expect(200);
        let v = r.json();
        let list = v["plugins"].as_array().expect("plugins list");
        assert_eq!(list.len(), 2, "{v}");
        let os = list.iter().find(|p| p["id"] == "MockOS").expect("MockOS listed");
        let cloud = list.iter().find(|p| p["id"] == "MockCloud").expect("MockCloud listed");
        for p in [os, cloud] {
            assert_eq!(p["_type"], "plugin");
            assert_eq!(p["href"], format!("{origin}/imagefactory/plugins/{}", p["id"].as_str().unwrap()));
            assert!(p.get("ERROR").is_none(), "{p}");
            for key in ["version", "description", "maintainer", "license", "api_version"] {
                assert!(p.get(key).is_some_and(|v| !v.is_null()), "{key} missing in {p}");
            }
            assert!(p["api_version"].as_str().is_some_and(|v| v.starts_with("1.")), "{p}");
        }
        assert_eq!(os["type"], "os");
        assert_eq!(cloud["type"], "cloud");
        let os_targets = os["targets"].to_string();
        assert!(os_targets.contains("MockOS_A") && os_targets.contains("MockOS_B"), "{os_targets}");
        let cloud_targets = cloud["targets"].to_string();
        assert!(cloud_targets.contains("\"mock\"") && cloud_targets.contains("MockCloud"), "{cloud_targets}");
    }
    let one = d.get("/imagefactory/plugins/MockOS");
    one.expect(200);
    let one = one.json();
    assert_eq!(one["id"], "MockOS");
    assert_eq!(one["type"], "os");
    assert!(one.get("plugins").is_none(), "a single plugin is not wrapped: {one}");
    let missing = d.get("/imagefactory/plugins/NoSuchPlugin");
    missing.expect(404);
    assert!(missing.text().contains("NoSuchPlugin"));

    let jeos = d.get("/imagefactory/jeos");
    jeos.expect(200);
    assert!(jeos.json().is_object());
    let jeos_images = d.get("/imagefactory/jeos/images");
    jeos_images.expect(200);
    assert!(jeos_images.json().is_object());
    d.get("/imagefactory/jeos/images/some-id").expect(501);

    for path in [
        "/imagefactory/targets",
        "/imagefactory/targets/ec2",
        "/imagefactory/targets/ec2/providers",
        "/imagefactory/targets/ec2/providers/x",
    ] {
        d.get(path).expect(501);
    }

    // validate: a good template is valid; a bad one lists errors with line numbers.
    let r = d.post_json("/imagefactory/validate", &json!({"template": mock_tdl()}));
    r.expect(200);
    assert_eq!(r.json(), json!({"valid": true, "errors": []}));
    let bad = mock_tdl().replace("<arch>x86_64</arch>", "<arch>sparc</arch>");
    let r = d.post_json("/imagefactory/validate", &json!({"template": bad}));
    r.expect(200);
    let v = r.json();
    assert_eq!(v["valid"], false);
    let errors = v["errors"].as_array().expect("errors");
    assert!(!errors.is_empty(), "{v}");
    assert!(errors.iter().all(|e| e["line"].as_u64().is_some_and(|l| l > 0)), "{v}");
    assert_eq!(errors[0]["line"], 6, "the arch element is on line 6: {v}");
}

#[test]
fn status_callbacks_receive_puts_for_every_status_change() {
    let d = Daemon::start_default();
    let server = CallbackServer::start();
    // Basic credentials in the URL become an Authorization header and are never stored.
    let with_auth = format!("http://bob:hunter2-cb@127.0.0.1:{}/cb", server.port);
    let id = d.create_base(&mock_tdl(), json!({"callbacks": [with_auth], "mock_sleep_seconds": 0.3}));
    d.wait_complete(&id, "base_images");
    let got = server.collect_until(Duration::from_secs(15), |got| got.iter().any(|r| r.body.contains("\"COMPLETE\"")));
    let statuses: Vec<String> = got
        .iter()
        .map(|r| {
            assert_eq!(r.method, "PUT");
            assert_eq!(r.path, "/cb");
            assert!(r.headers.get("content-type").is_some_and(|c| c.starts_with("application/json")), "{r:?}");
            assert_eq!(r.headers.get("authorization").map(String::as_str), Some("Basic Ym9iOmh1bnRlcjItY2I="), "{r:?}");
            assert!(!r.body.contains("hunter2-cb"), "the callback body shows the URL password: {}", r.body);
            let v: Value =
                serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("callback body not JSON: {e}: {}", r.body));
            let b = &v["base_image"];
            assert_eq!(b["_type"], "BaseImage", "{v}");
            assert_eq!(b["id"], id.as_str(), "{v}");
            b["status"].as_str().expect("status").to_string()
        })
        .collect();
    assert!(statuses.iter().any(|s| s == "BUILDING"), "no BUILDING callback: {statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("COMPLETE"), "{statuses:?}");
    let building = statuses.iter().position(|s| s == "BUILDING").unwrap();
    let complete = statuses.iter().position(|s| s == "COMPLETE").unwrap();
    assert!(building < complete, "callbacks out of order: {statuses:?}");
    let img = d.image("base_images", &id);
    assert_eq!(img["parameters"]["callbacks"], json!([format!("http://bob:REDACTED@127.0.0.1:{}/cb", server.port)]));
    assert!(!d.log().contains("hunter2-cb"), "the daemon log holds the callback password");
    for e in std::fs::read_dir(d.storage()).unwrap().flatten() {
        let c = std::fs::read(e.path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&c).contains("hunter2-cb"),
            "{} holds the callback password",
            e.path().display()
        );
    }
}

#[test]
fn oauth_protects_routes_and_accepts_signed_requests() {
    let d = Daemon::start(DaemonOptions { oauth: true, ..Default::default() });
    // The root, jeos and targets stay open.
    d.request_raw("GET", "/imagefactory", &[], None).expect(200);
    d.request_raw("GET", "/imagefactory/jeos", &[], None).expect(200);
    d.request_raw("GET", "/imagefactory/targets", &[], None).expect(501);
    // No Authorization: 401 with WWW-Authenticate: OAuth.
    for path in ["/imagefactory/plugins", "/imagefactory/base_images"] {
        let r = d.request_raw("GET", path, &[], None);
        r.expect(401);
        assert_eq!(r.header("www-authenticate"), Some("OAuth"), "{:?}", r.headers);
        assert_eq!(r.text(), "Unauthorized: missing authorization");
    }
    let post = json!({"base_image": {"template": mock_tdl()}}).to_string();
    let r = d.request_raw(
        "POST",
        "/imagefactory/base_images",
        &[("Content-Type", "application/json")],
        Some(post.as_bytes()),
    );
    r.expect(401);
    assert_eq!(d.request_raw("GET", "/imagefactory/base_images", &[], None).status, 401);
    // A wrong secret: 401.
    let wrong = d.oauth_header("GET", "/imagefactory/plugins", "not-the-secret");
    let r = d.request_raw("GET", "/imagefactory/plugins", &[("Authorization", &wrong)], None);
    r.expect(401);
    assert_eq!(r.header("www-authenticate"), Some("OAuth"));
    // A signature for another path: 401.
    let other = d.oauth_header("GET", "/imagefactory/base_images", OAUTH_SECRET);
    d.request_raw("GET", "/imagefactory/plugins", &[("Authorization", &other)], None).expect(401);
    // Signed with mock-key / mock-secret: 200, and a signed build goes through.
    let good = d.oauth_header("GET", "/imagefactory/plugins", OAUTH_SECRET);
    let r = d.request_raw("GET", "/imagefactory/plugins", &[("Authorization", &good)], None);
    r.expect(200);
    assert!(r.json()["plugins"].as_array().is_some_and(|l| l.len() == 2));
    // The query string takes part in the signature.
    let q = "/imagefactory/base_images?x=1&y=two";
    let signed = d.oauth_header("GET", q, OAUTH_SECRET);
    d.request_raw("GET", q, &[("Authorization", &signed)], None).expect(200);
    let unsigned_query = d.oauth_header("GET", "/imagefactory/base_images", OAUTH_SECRET);
    d.request_raw("GET", q, &[("Authorization", &unsigned_query)], None).expect(401);
    let id = d.create_base(&mock_tdl(), json!({}));
    d.wait_complete(&id, "base_images");
    // No image was made by the refused POST.
    assert_eq!(d.get("/imagefactory/base_images").json()["base_images"].as_array().unwrap().len(), 1);
}

#[test]
fn oauth_refuses_a_replayed_request_and_a_stale_timestamp() {
    let d = Daemon::start(DaemonOptions { oauth: true, ..Default::default() });
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let path = "/imagefactory/plugins";
    let header = d.oauth_header_at("GET", path, OAUTH_SECRET, &unique("replay"), now);
    d.request_raw("GET", path, &[("Authorization", &header)], None).expect(200);
    // The identical request again: refused, one line.
    let r = d.request_raw("GET", path, &[("Authorization", &header)], None);
    r.expect(401);
    assert_eq!(r.text(), "Unauthorized: authorization failed");
    assert_eq!(r.header("www-authenticate"), Some("OAuth"));
    assert!(d.log().contains("replayed request"), "the log does not say why");
    // A replayed POST makes no second image.
    let post = json!({"base_image": {"template": mock_tdl()}}).to_string();
    let header = d.oauth_header_at("POST", "/imagefactory/base_images", OAUTH_SECRET, &unique("replay"), now);
    let send = || {
        d.request_raw(
            "POST",
            "/imagefactory/base_images",
            &[("Content-Type", "application/json"), ("Authorization", &header)],
            Some(post.as_bytes()),
        )
    };
    send().expect(202);
    send().expect(401);
    assert_eq!(d.get("/imagefactory/base_images").json()["base_images"].as_array().unwrap().len(), 1);
    // Correctly signed, but an hour old or an hour ahead: refused.
    for ts in [now - 3600, now + 3600] {
        let header = d.oauth_header_at("GET", path, OAUTH_SECRET, &unique("old"), ts);
        let r = d.request_raw("GET", path, &[("Authorization", &header)], None);
        r.expect(401);
        assert_eq!(r.text(), "Unauthorized: authorization failed");
    }
    // A fresh nonce still works.
    d.request_raw("GET", path, &[("Authorization", &d.oauth_header("GET", path, OAUTH_SECRET))], None).expect(200);
}

#[test]
fn tls_with_the_default_self_signed_certificate() {
    let curl = require_tool("curl");
    let d = Daemon::start(DaemonOptions { tls: true, ..Default::default() });
    assert!(d.origin().starts_with("https://127.0.0.1:"));
    let out = run_cmd(
        {
            let mut c = Command::new(&curl);
            c.args(["-sk", "-w", "\n%{http_code}", &format!("{}/imagefactory", d.origin())]);
            c
        },
        Duration::from_secs(20),
    );
    assert_eq!(out.code, 0, "curl failed: {out:?}");
    let (body, code) = out.stdout.rsplit_once('\n').expect("status line");
    assert_eq!(code, "200", "{out:?}");
    let v: Value = serde_json::from_str(body).expect("JSON root");
    assert_eq!(v["api_version"], "2.0");
    // Plain HTTP to the TLS port does not get an API answer.
    let plain = run_cmd(
        {
            let mut c = Command::new(&curl);
            c.args(["-s", "-m", "5", "-w", "\n%{http_code}", &format!("http://127.0.0.1:{}/imagefactory", d.port)]);
            c
        },
        Duration::from_secs(20),
    );
    assert!(!plain.stdout.contains("api_version"), "plain HTTP was served on the TLS port: {plain:?}");
    // Without -k the self-signed certificate is refused (it is a real TLS handshake).
    let strict = run_cmd(
        {
            let mut c = Command::new(&curl);
            c.args(["-s", "-m", "5", &format!("{}/imagefactory", d.origin())]);
            c
        },
        Duration::from_secs(20),
    );
    assert_ne!(strict.code, 0, "curl accepted a self-signed certificate without -k: {strict:?}");
}

#[test]
fn tls_offers_only_versions_1_2_and_1_3() {
    let openssl = require_tool("openssl");
    let d = Daemon::start(DaemonOptions { tls: true, ..Default::default() });
    let connect = format!("127.0.0.1:{}", d.port);
    let handshake = |version: &str| {
        let mut c = Command::new(&openssl);
        // SECLEVEL=0 lets this client offer TLS 1.0/1.1 at all (OpenSSL 3 does not by
        // default).
        c.args(["s_client", "-connect", &connect, version, "-cipher", "DEFAULT@SECLEVEL=0"]);
        run_cmd(c, Duration::from_secs(20))
    };
    for version in ["-tls1_2", "-tls1_3"] {
        let out = handshake(version);
        assert_eq!(out.code, 0, "{version} was refused: {out:?}");
        assert!(out.stdout.contains("BEGIN CERTIFICATE"), "{version}: no certificate: {out:?}");
    }
    for version in ["-tls1_1", "-tls1"] {
        let out = handshake(version);
        assert_ne!(out.code, 0, "{version} was accepted: {out:?}");
        assert!(!out.stdout.contains("BEGIN CERTIFICATE"), "{version} got a certificate: {out:?}");
        // The server answered with a TLS alert (rustls sends handshake_failure), so the
        // client did offer the old version and the server refused it.
        assert!(out.stderr.contains("alert"), "{version}: not refused by the server: {out:?}");
    }
}

#[test]
fn form_encoded_bodies_are_accepted_as_the_original_did() {
    let d = Daemon::start_default();
    let params = json!({"mock_progress_steps": 3}).to_string();
    let body = format!("template={}&parameters={}", form_encode(&mock_tdl()), form_encode(&params));
    let r = d.request(
        "POST",
        "/imagefactory/base_images",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(body.as_bytes()),
    );
    r.expect(202);
    let id = r.json()["base_image"]["id"].as_str().unwrap().to_string();
    let img = d.wait_complete(&id, "base_images");
    assert_eq!(img["template"], mock_tdl().replace("changeme", "REDACTED").as_str());
    assert_eq!(img["parameters"]["mock_progress_steps"], 3);
    assert!(d.build_log("base_images", &id).contains("step 3 of 3"));
    // An XML body is refused clearly, not with a 500.
    let r =
        d.request("POST", "/imagefactory/base_images", &[("Content-Type", "application/xml")], Some(b"<base_image/>"));
    assert!(r.status == 400 || r.status == 415, "{} {}", r.status, r.text());
}

fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
