//! Failure paths over real HTTP: bad requests, failing, panicking and crashing plugins,
//! a daemon killed mid-build, the concurrency limit, and cancelling a build by DELETE.

use std::time::{Duration, Instant};

use imagefactory_blackbox::*;
use serde_json::{json, Value};

#[test]
fn bad_requests_are_refused_with_the_right_code_and_text() {
    let d = Daemon::start_default();

    // An invalid template: 400 at once, with a line number; no image is made.
    let broken = mock_tdl().replace("</os>", "");
    let r = d.post_json("/imagefactory/base_images", &json!({"base_image": {"template": broken}}));
    r.expect(400);
    assert!(r.text().contains("line"), "no line number in: {}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.headers);
    let r = d.post_json("/imagefactory/base_images", &json!({"base_image": {"template": "not xml at all"}}));
    r.expect(400);
    assert!(r.text().contains("line"), "{}", r.text());
    let r = d.post_json("/imagefactory/base_images", &json!({"base_image": {}}));
    r.expect(400);
    assert!(r.text().contains("template"), "{}", r.text());
    assert_eq!(d.get("/imagefactory/base_images").json()["base_images"], json!([]));

    // Unknown ids: 404 with the original's text.
    let ghost = "00000000-0000-4000-8000-000000000000";
    let r = d.get(&format!("/imagefactory/base_images/{ghost}"));
    r.expect(404);
    assert_eq!(r.text(), format!("No BaseImage found with id: {ghost}"));
    let r = d.delete(&format!("/imagefactory/base_images/{ghost}"));
    r.expect(404);
    assert_eq!(r.text(), format!("No image found with id: {ghost}"));
    d.get(&format!("/imagefactory/target_images/{ghost}")).expect(404);
    d.get(&format!("/imagefactory/base_images/{ghost}/raw_image")).expect(404);
    d.get(&format!("/imagefactory/base_images/{ghost}/build_log")).expect(404);
    let r = d.post_json(
        &format!("/imagefactory/base_images/{ghost}/target_images"),
        &json!({"target_image": {"target": "mock"}}),
    );
    r.expect(404);
    assert!(r.text().contains(ghost), "{}", r.text());
    // An unknown collection: 404.
    d.get("/imagefactory/no_such_things").expect(404);

    // A GET of a base image id under the wrong collection: 404.
    let bid = d.create_base(&mock_tdl(), json!({}));
    d.wait_complete(&bid, "base_images");
    let r = d.get(&format!("/imagefactory/target_images/{bid}"));
    r.expect(404);
    assert_eq!(r.text(), format!("No TargetImage found with id: {bid}"));

    // Accept: text/plain -> 406 with the original's text.
    let r = d.request("GET", "/imagefactory/base_images", &[("Accept", "text/plain")], None);
    r.expect(406);
    assert_eq!(r.text(), "Responses in text/plain are currently unsupported.");
    d.request("GET", "/imagefactory/base_images", &[("Accept", "application/json")], None).expect(200);
    d.request("GET", "/imagefactory/base_images", &[("Accept", "*/*")], None).expect(200);

    // Missing provider fields: 400 naming them.
    let r = d.post_json(
        "/imagefactory/provider_images",
        &json!({"provider_image": {"target": "mock", "template": mock_tdl()}}),
    );
    r.expect(400);
    assert!(r.text().starts_with("Missing key/value pair: "), "{}", r.text());
    assert!(r.text().contains("provider") && r.text().contains("credentials"), "{}", r.text());
    let r = d.post_json(
        "/imagefactory/provider_images",
        &json!({"provider_image": {"provider": "p", "credentials": credentials("x"), "template": mock_tdl()}}),
    );
    r.expect(400);
    assert!(r.text().starts_with("Missing key/value pair: ") && r.text().contains("target"), "{}", r.text());

    // An unknown target: 400 naming the supported ones.
    let r = d.post_json(
        "/imagefactory/target_images",
        &json!({"target_image": {"target": "nosuchcloud", "base_image_id": bid}}),
    );
    r.expect(400);
    assert!(
        r.text().contains("nosuchcloud") && r.text().contains("mock") && r.text().contains("MockCloud"),
        "{}",
        r.text()
    );

    // An unknown OS: 400 naming the supported ones.
    let r =
        d.post_json("/imagefactory/base_images", &json!({"base_image": {"template": tdl("NoSuchOS", "7", "x86_64")}}));
    r.expect(400);
    assert!(
        r.text().contains("NoSuchOS") && r.text().contains("MockOS_A") && r.text().contains("MockOS_B"),
        "{}",
        r.text()
    );
    // MockOS_B serves only version 1 on x86_64.
    let r =
        d.post_json("/imagefactory/base_images", &json!({"base_image": {"template": tdl("MockOS_B", "2", "x86_64")}}));
    r.expect(400);
    let ok = d.create_base(&tdl("MockOS_B", "1", "x86_64"), json!({}));
    d.wait_complete(&ok, "base_images");

    // A body that is not JSON: 400.
    let r = d.request("POST", "/imagefactory/base_images", &[("Content-Type", "application/json")], Some(b"{not json"));
    r.expect(400);
    assert!(r.text().contains("JSON"), "{}", r.text());
    // Still only the two good base images.
    assert_eq!(d.get("/imagefactory/base_images").json()["base_images"].as_array().unwrap().len(), 2);
}

fn assert_one_line(s: &str) {
    assert!(!s.is_empty() && !s.contains('\n'), "not one line: {s:?}");
}

#[test]
fn callback_urls_that_are_not_http_are_refused_before_any_image_exists() {
    let d = Daemon::start_default();
    let storage_entries = || std::fs::read_dir(d.storage()).unwrap().count();
    for bad in ["not a url", "file:///etc/passwd", "ftp://x", "http://", "https:///no-host"] {
        let r = d.post_json(
            "/imagefactory/base_images",
            &json!({"base_image": {"template": mock_tdl(), "parameters": {"callbacks": [bad]}}}),
        );
        r.expect(400);
        assert_one_line(&r.text());
        assert!(r.text().starts_with("invalid callback URL ") && r.text().contains(bad), "{bad:?}: {}", r.text());
        // The same check guards target and provider images (a template builds a base first).
        let r = d.post_json(
            "/imagefactory/target_images",
            &json!({"target_image": {"target": "mock", "template": mock_tdl(), "parameters": {"callbacks": bad}}}),
        );
        r.expect(400);
        assert!(r.text().contains(bad), "{}", r.text());
        let r = d.post_json(
            "/imagefactory/provider_images",
            &json!({"provider_image": {"target": "mock", "provider": "p", "credentials": credentials("s3cret"),
                "template": mock_tdl(), "parameters": {"callbacks": ["http://127.0.0.1:9/ok", bad]}}}),
        );
        r.expect(400);
        assert!(r.text().contains(bad), "{}", r.text());
    }
    // A password in a refused URL is redacted in the answer.
    let r = d.post_json(
        "/imagefactory/base_images",
        &json!({"base_image": {"template": mock_tdl(), "parameters": {"callbacks": ["ftp://bob:hunter2@x/"]}}}),
    );
    r.expect(400);
    assert!(!r.text().contains("hunter2") && r.text().contains("bob:REDACTED@x"), "{}", r.text());
    // Nothing was made: no image listed, nothing in the storage directory.
    for collection in ["base_images", "target_images", "provider_images"] {
        assert_eq!(d.get(&format!("/imagefactory/{collection}")).json()[collection], json!([]), "{collection}");
    }
    assert_eq!(storage_entries(), 0, "files were left in the store");
    // A good http callback is still accepted.
    let server = CallbackServer::start();
    let id = d.create_base(&mock_tdl(), json!({"callbacks": [server.url("/cb")]}));
    d.wait_complete(&id, "base_images");
    let got = server.collect_until(BUILD_TIMEOUT, |g| g.iter().any(|r| r.body.contains("COMPLETE")));
    assert!(got.iter().all(|r| r.method == "PUT" && r.path == "/cb"), "{got:#?}");
}

#[test]
fn a_plugin_failing_mid_build_gives_a_one_line_error_naming_the_activity() {
    let d = Daemon::start_default();
    let id = d.create_base(&mock_tdl(), json!({"mock_fail_at": "create_base_image"}));
    let img = d.wait_status(&id, "base_images", &["COMPLETE", "FAILED"], BUILD_TIMEOUT);
    assert_eq!(img["status"], "FAILED", "{img}");
    let err = img["status_detail"]["error"].as_str().expect("an error");
    assert_one_line(err);
    assert!(err.starts_with("Failure encountered while: "), "{err}");
    assert!(err.contains("MockOS create_base_image: step"), "the error does not name the activity: {err}");
    assert!(err.contains("MockOS was told to fail in create_base_image"), "{err}");
    let log = d.build_log("base_images", &id);
    assert!(log.contains("told to fail"), "the build log lacks the error: {log}");

    // A failure in the cloud plugin's stage of a target image.
    let bid = d.create_base(&mock_tdl(), json!({}));
    d.wait_complete(&bid, "base_images");
    let r = d.post_json(
        &format!("/imagefactory/base_images/{bid}/target_images"),
        &json!({"target_image": {"target": "mock", "parameters": {"mock_fail_at": "builder_did_create_target_image"}}}),
    );
    r.expect(202);
    let tid = r.json()["target_image"]["id"].as_str().unwrap().to_string();
    let t = d.wait_status(&tid, "target_images", &["COMPLETE", "FAILED"], BUILD_TIMEOUT);
    assert_eq!(t["status"], "FAILED", "{t}");
    let err = t["status_detail"]["error"].as_str().unwrap();
    assert_one_line(err);
    assert!(err.starts_with("Failure encountered while: MockCloud builder_did_create_target_image: step"), "{err}");
    // A target image whose base fails fails too, naming its base.
    let r = d.post_json(
        "/imagefactory/target_images",
        &json!({"target_image": {"target": "mock", "template": mock_tdl(), "parameters": {"mock_fail_at": "create_base_image"}}}),
    );
    r.expect(202);
    let tid = r.json()["target_image"]["id"].as_str().unwrap().to_string();
    let t = d.wait_status(&tid, "target_images", &["COMPLETE", "FAILED"], BUILD_TIMEOUT);
    assert_eq!(t["status"], "FAILED", "{t}");
    let base_id = t["base_image"]["id"].as_str().unwrap();
    assert!(t["status_detail"]["error"].as_str().unwrap().contains(base_id), "{t}");
}

#[test]
fn files_a_failing_plugin_left_are_kept_with_the_image_and_served() {
    let d = Daemon::start_default();
    let id = d.create_base(&mock_tdl(), json!({"mock_fail_at": "create_base_image", "mock_keep_file": "console.log"}));
    let img = d.wait_status(&id, "base_images", &["COMPLETE", "FAILED"], BUILD_TIMEOUT);
    assert_eq!(img["status"], "FAILED", "{img}");
    let list = d.get(&format!("/imagefactory/base_images/{id}/files"));
    list.expect(200);
    assert_eq!(list.json()["files"], json!(["console.log"]), "{}", list.text());
    let file = d.get(&format!("/imagefactory/base_images/{id}/files/console.log"));
    file.expect(200);
    assert_eq!(file.text(), "create_base_image of MockOS\n");
    assert_eq!(file.header("content-type"), Some("text/plain; charset=utf-8"));
    d.get(&format!("/imagefactory/base_images/{id}/files/other.log")).expect(404);
    d.get(&format!("/imagefactory/base_images/{id}/files/..%2Fx")).expect(404);
    // A complete image whose plugin left no files keeps only its SBOM; deleting an
    // image removes its files.
    let ok = d.create_base(&mock_tdl(), json!({}));
    d.wait_complete(&ok, "base_images");
    assert_eq!(d.get(&format!("/imagefactory/base_images/{ok}/files")).json()["files"], json!(["sbom.spdx.json"]));
    d.delete(&format!("/imagefactory/base_images/{id}")).expect(204);
    wait_for(Duration::from_secs(30), "the image's files to go", || {
        (!d.storage().join(format!("{id}.files")).exists()).then_some(())
    });
}

#[test]
fn panicking_and_crashing_plugins_fail_only_their_own_build() {
    let d = Daemon::start_default();
    let cases = [
        (json!({"mock_panic_at": "create_base_image"}), "plugin panicked"),
        (json!({"mock_crash_at": "create_base_image"}), "crashed (killed by signal 11, SIGSEGV)"),
        (
            json!({"mock_crash_at": "create_base_image", "mock_crash_signal": "segv"}),
            "crashed (killed by signal 11, SIGSEGV)",
        ),
        (
            json!({"mock_crash_at": "create_base_image", "mock_crash_signal": "abort"}),
            "crashed (killed by signal 6, SIGABRT)",
        ),
    ];
    // A slow good build runs alongside the bad ones and must not notice them.
    let steady = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 2}));
    for (params, expected) in cases {
        let id = d.create_base(&mock_tdl(), params.clone());
        let img = d.wait_status(&id, "base_images", &["COMPLETE", "FAILED"], BUILD_TIMEOUT);
        assert_eq!(img["status"], "FAILED", "{params}: {img}");
        let err = img["status_detail"]["error"].as_str().expect("an error");
        assert_one_line(err);
        assert!(err.starts_with("Failure encountered while: "), "{params}: {err}");
        assert!(err.contains(expected), "{params}: expected {expected:?} in {err:?}");
        // The daemon still answers.
        d.get("/imagefactory").expect(200);
    }
    d.wait_complete(&steady, "base_images");
    let after = d.create_base(&mock_tdl(), json!({}));
    d.wait_complete(&after, "base_images");
    assert!(d.log().contains("build failed"), "the daemon log does not record the failures");
}

#[test]
fn a_daemon_killed_mid_build_marks_the_build_interrupted_after_restart() {
    let mut d = Daemon::start_default();
    let id = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 30}));
    d.wait_status(&id, "base_images", &["BUILDING"], Duration::from_secs(15));
    let workers: Vec<u32> = wait_for(Duration::from_secs(10), "the build's worker process", || {
        let w: Vec<u32> = workers_of(d.pid()).into_iter().map(|(p, _)| p).collect();
        (!w.is_empty()).then_some(w)
    });
    d.kill9();
    d.restart();
    let img = d.image("base_images", &id);
    assert_eq!(img["status"], "FAILED", "{img}");
    assert_eq!(img["status_detail"]["error"], "interrupted: the daemon stopped during this build");
    let meta: Value = serde_json::from_slice(&std::fs::read(d.storage().join(format!("{id}.meta"))).unwrap()).unwrap();
    assert_eq!(meta["status"], "FAILED");
    // The killed daemon's worker stops on its own once its stdin closes (a zombie left
    // for a non-reaping init counts as stopped).
    wait_for(Duration::from_secs(10), "the orphaned worker to exit", || {
        workers.iter().all(|p| !process_alive(*p)).then_some(())
    });
    // The restarted daemon builds.
    let again = d.create_base(&mock_tdl(), json!({}));
    d.wait_complete(&again, "base_images");
}

#[test]
fn the_concurrency_limit_queues_builds_as_pending() {
    let d = Daemon::start(DaemonOptions { max_concurrent: 1, ..Default::default() });
    let first = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 5}));
    d.wait_status(&first, "base_images", &["BUILDING"], Duration::from_secs(15));
    let second = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 1}));
    let img =
        d.wait_status(&second, "base_images", &["PENDING", "BUILDING", "COMPLETE", "FAILED"], Duration::from_secs(10));
    assert_eq!(img["status"], "PENDING", "{img}");
    assert!(img["status_detail"]["activity"].as_str().is_some_and(|a| a.contains("slot")), "{img}");
    assert_eq!(d.image("base_images", &first)["status"], "BUILDING", "the first build ended too early for this test");
    // Only one worker runs at a time.
    assert!(workers_of(d.pid()).len() <= 1, "{:?}", workers_of(d.pid()));
    let a = d.wait_status(&first, "base_images", &["COMPLETE", "FAILED"], Duration::from_secs(30));
    assert_eq!(a["status"], "COMPLETE", "{a}");
    let b = d.wait_status(&second, "base_images", &["COMPLETE", "FAILED"], Duration::from_secs(30));
    assert_eq!(b["status"], "COMPLETE", "{b}");
}

#[test]
fn deleting_an_image_in_progress_cancels_the_build_and_its_worker() {
    let d = Daemon::start_default();
    let id = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 60}));
    d.wait_status(&id, "base_images", &["BUILDING"], Duration::from_secs(15));
    let daemon_pid = d.pid();
    wait_for(Duration::from_secs(10), "a worker process of the daemon", || {
        (!workers_of(daemon_pid).is_empty()).then_some(())
    });
    let started = Instant::now();
    d.delete(&format!("/imagefactory/base_images/{id}")).expect(204);
    wait_for(Duration::from_secs(8), "the cancelled image to 404", || {
        (d.get(&format!("/imagefactory/base_images/{id}")).status == 404).then_some(())
    });
    assert!(started.elapsed() < Duration::from_secs(8));
    wait_for(Duration::from_secs(5), "the worker to be gone", || workers_of(daemon_pid).is_empty().then_some(()));
    assert!(!d.storage().join(format!("{id}.meta")).exists());
    // The tmp dir holds no working directory of the cancelled build.
    let leftovers: Vec<_> =
        std::fs::read_dir(d.dir.path().join("tmp")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(leftovers.is_empty(), "working directories left behind: {leftovers:?}");
    // The daemon goes on building.
    let next = d.create_base(&mock_tdl(), json!({}));
    d.wait_complete(&next, "base_images");
}

/// A daemon with these extra config keys.
fn daemon_with(config: Value) -> Daemon {
    let Value::Object(extra_config) = config else { panic!("config keys must be an object") };
    Daemon::start(DaemonOptions { extra_config, ..Default::default() })
}

/// Reads from `stream` until the server closes it, or panics after `timeout`.
fn read_until_closed(stream: &mut std::net::TcpStream, timeout: Duration) -> Vec<u8> {
    use std::io::Read;
    stream.set_read_timeout(Some(timeout)).expect("set a read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection within {timeout:?}: {e}"),
        }
    }
}

#[test]
fn connections_over_max_connections_get_a_one_line_503_and_the_daemon_recovers() {
    let d = daemon_with(json!({"max_connections": 2}));
    let addr = format!("127.0.0.1:{}", d.port);
    let idle: Vec<std::net::TcpStream> =
        (0..2).map(|_| std::net::TcpStream::connect(&addr).expect("connect")).collect();
    // The third connection is answered at once, not queued.
    let started = Instant::now();
    let r = d.get("/imagefactory/base_images");
    r.expect(503);
    assert!(started.elapsed() < Duration::from_secs(5), "the 503 took {:?}", started.elapsed());
    assert_one_line(&r.text());
    assert!(r.text().contains("max_connections"), "{}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.headers);
    assert_eq!(r.header("connection"), Some("close"));
    // And closed: the server ends the connection after the answer.
    let mut raw = std::net::TcpStream::connect(&addr).expect("connect");
    std::io::Write::write_all(&mut raw, b"GET /imagefactory HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let answer = String::from_utf8_lossy(&read_until_closed(&mut raw, Duration::from_secs(10))).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    drop(idle);
    // Once the idle connections are closed, requests are served again.
    wait_for(Duration::from_secs(10), "a request to be served after closing the idle connections", || {
        (d.get("/imagefactory/base_images").status == 200).then_some(())
    });
    assert!(d.log().contains("connection limit reached"), "the daemon did not log the refusals");
}

#[test]
fn a_slow_request_is_cut_off_but_a_slow_download_is_not() {
    use std::io::{Read, Write};
    let d = daemon_with(json!({"request_timeout": 1}));
    let addr = format!("127.0.0.1:{}", d.port);

    // A request head that never ends: the connection is closed after about a second.
    let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
    slow.write_all(b"GET /imagefactory HTTP/1.1\r\nHost: x\r\n").expect("send");
    let started = Instant::now();
    let answer = read_until_closed(&mut slow, Duration::from_secs(10));
    assert!(started.elapsed() >= Duration::from_millis(800), "closed too soon: {:?}", started.elapsed());
    assert!(!String::from_utf8_lossy(&answer).contains("api_version"), "a half-sent head was served");
    // A connection that sends nothing at all is closed too.
    let mut idle = std::net::TcpStream::connect(&addr).expect("connect");
    read_until_closed(&mut idle, Duration::from_secs(10));

    // A body that never arrives in full: 408 with one line.
    let mut trickle = std::net::TcpStream::connect(&addr).expect("connect");
    trickle
        .write_all(b"POST /imagefactory/base_images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"base")
        .expect("send");
    let answer = String::from_utf8_lossy(&read_until_closed(&mut trickle, Duration::from_secs(10))).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    assert_one_line(body);
    assert!(body.contains("1 s"), "{body}");
    assert_eq!(d.get("/imagefactory/base_images").json()["base_images"], json!([]));

    // A download read slowly, for longer than the time-out, arrives whole.
    let id = d.create_base(&mock_tdl(), json!({"mock_disk_mib": 64}));
    d.wait_complete(&id, "base_images");
    let mut dl = std::net::TcpStream::connect(&addr).expect("connect");
    dl.write_all(
        format!("GET /imagefactory/base_images/{id}/raw_image HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("send");
    let mut first = vec![0u8; 1 << 20];
    dl.read_exact(&mut first).expect("the first MiB");
    std::thread::sleep(Duration::from_millis(2500));
    let mut rest = Vec::new();
    dl.set_read_timeout(Some(Duration::from_secs(30))).expect("set a read timeout");
    dl.read_to_end(&mut rest).expect("the rest of the download");
    first.extend_from_slice(&rest);
    let split = first.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&first[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 "), "{head}");
    assert!(head.contains(&format!("content-length: {}", 64u64 << 20)), "{head}");
    assert_eq!(first.len() - split, 64 << 20, "the download was cut short");
}
