//! `GET /imagefactory/events` over real HTTP: Server-Sent Events of every image change,
//! in order, followed per image, resumed with Last-Event-ID, and the same for 500
//! subscribers at once while builds run.

use std::io::{BufReader, Read};
use std::time::{Duration, Instant};

use imagefactory_blackbox::*;
use serde_json::json;

fn completes(id: &str) -> impl Fn(&Sse) -> bool + '_ {
    move |e| e.data["id"] == id && e.data["status"] == "COMPLETE"
}

#[test]
fn every_change_of_a_build_reaches_a_subscriber_in_order() {
    let d = Daemon::start_default();
    let mut all = Subscriber::connect(&d, "", None);
    let id = d.create_base(&mock_tdl(), json!({}));
    let events = all.until(completes(&id));

    let seqs: Vec<u64> = events.iter().map(|e| e.id.expect("every event has an id")).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "event ids are not consecutive: {seqs:?}");
    assert_eq!(events[0].event, "created", "{events:?}");
    assert_eq!(events[0].data["status"], "NEW");
    assert_eq!(events[0].data["type"], "base_image");
    let statuses: Vec<&str> = events.iter().filter_map(|e| e.data["status"].as_str()).collect();
    let order = ["NEW", "PENDING", "BUILDING", "COMPLETE"];
    let ranks: Vec<usize> =
        statuses.iter().map(|s| order.iter().position(|o| o == s).expect("a known status")).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "statuses went backwards: {statuses:?}");
    assert!(statuses.contains(&"BUILDING"), "{statuses:?}");
    let last = events.last().expect("events");
    assert_eq!(last.data["percent_complete"], 100, "{:?}", last.data);
    assert!(last.data["changed"].as_array().is_some_and(|c| c.iter().any(|f| f == "status")), "{:?}", last.data);

    // Following the base: its target's events come, with the base among their parents;
    // another base's do not.
    let mut follow = Subscriber::connect(&d, &format!("?id={id}"), None);
    let other = d.create_base(&mock_tdl(), json!({}));
    let r =
        d.post_json("/imagefactory/target_images", &json!({"target_image": {"base_image_id": id, "target": "mock"}}));
    r.expect(202);
    let target = r.json()["target_image"]["id"].as_str().expect("a target id").to_string();
    let events = follow.until(completes(&target));
    assert!(events.iter().all(|e| e.data["id"] == target), "a stream following {id} got others: {events:?}");
    assert!(events[0].data["parents"].as_array().is_some_and(|p| p.iter().any(|x| x == id.as_str())));
    d.wait_complete(&other, "base_images");

    // A delete ends with a deleted event.
    let r = d.delete(&format!("/imagefactory/target_images/{target}"));
    r.expect(204);
    let events = follow.until(|e| e.event == "deleted");
    assert_eq!(events.last().expect("events").data["id"], target);
}

#[test]
fn a_resumed_stream_gets_what_it_missed() {
    let d = Daemon::start_default();
    let mut first = Subscriber::connect(&d, "", None);
    let id = d.create_base(&mock_tdl(), json!({}));
    let created = first.next_event();
    assert_eq!(created.event, "created");
    let seen = created.id.expect("an id");
    drop(first);
    d.wait_complete(&id, "base_images");

    let mut resumed = Subscriber::connect(&d, "", Some(seen));
    let events = resumed.until(completes(&id));
    assert_eq!(events[0].id, Some(seen + 1), "the resumed stream did not start right after {seen}: {events:?}");
    let seqs: Vec<u64> = events.iter().filter_map(|e| e.id).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "a gap in the resumed stream: {seqs:?}");

    // The same with the query parameter, and bad resume points are refused.
    let mut by_query = Subscriber::connect(&d, &format!("?last_event_id={seen}"), None);
    assert_eq!(by_query.next_event().id, Some(seen + 1));
    let r = d.request_raw("GET", "/imagefactory/events", &[("Last-Event-ID", "yesterday")], None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.text().lines().count(), 1, "{}", r.text());
    let r = d.get("/imagefactory/events?id=not-a-uuid");
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn five_hundred_subscribers_get_every_change_of_four_builds_in_order() {
    let d = Daemon::start(DaemonOptions { max_concurrent: 4, ..DaemonOptions::default() });
    let subscribers: Vec<Subscriber> = (0..500).map(|_| Subscriber::connect(&d, "", None)).collect();
    let started = Instant::now();
    let ids: Vec<String> = (0..4).map(|_| d.create_base(&mock_tdl(), json!({}))).collect();
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut s| {
            let ids = ids.clone();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let mut done = std::collections::HashSet::new();
                    s.until(|e| {
                        if e.data["status"] == "COMPLETE" && ids.iter().any(|i| e.data["id"] == i.as_str()) {
                            done.insert(e.data["id"].to_string());
                        }
                        done.len() == ids.len()
                    })
                    .into_iter()
                    .map(|e| (e.id.unwrap_or(0), e.data.to_string()))
                    .collect::<Vec<_>>()
                })
                .expect("a reader thread")
        })
        .collect();
    let streams: Vec<Vec<(u64, String)>> =
        readers.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect();
    let first = &streams[0];
    assert!(first.len() >= 4 * 3, "too few events for 4 builds: {}", first.len());
    assert!(first.windows(2).all(|w| w[1].0 == w[0].0 + 1), "a gap or reordering in the stream");
    for (i, s) in streams.iter().enumerate() {
        assert_eq!(s, first, "subscriber {i} saw another stream than subscriber 0");
    }
    println!(
        "FIGURES: 500 subscribers each got the same {} events of 4 builds in {:.2} s",
        first.len(),
        started.elapsed().as_secs_f64()
    );
}

/// `imagefactory watch ID --url ...` against the daemon: (exit code, stdout).
fn watch(d: &Daemon, id: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(imagefactory_bin())
        .args(["watch", id, "--url", &d.origin()])
        .output()
        .expect("run imagefactory watch");
    // stdout, then stderr (where an error goes).
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_cli_watches_a_build_to_its_end_over_the_stream() {
    let d = Daemon::start_default();
    let id = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 2, "mock_progress_steps": 4}));
    let (code, out) = watch(&d, &id);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(" BUILDING ") && out.lines().last().is_some_and(|l| l.contains(" COMPLETE 100%")), "{out}");
    assert!(out.lines().count() >= 3, "watch printed no changes while the build ran:\n{out}");

    // Already over: one line, at once.
    let (code, out) = watch(&d, &id);
    assert_eq!((code, out.lines().count()), (Some(0), 1), "{out}");

    // A failure: its one-line error, and exit 1.
    let failing = d.create_base(&mock_tdl(), json!({"mock_fail_at": "create_base_image", "mock_sleep_seconds": 1}));
    let (code, out) = watch(&d, &failing);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("error: Failure encountered while:") && out.contains("told to fail"), "{out}");

    // An unknown image is one line and exit 1.
    let (code, out) = watch(&d, "00000000-0000-4000-8000-000000000000");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("No image found with id"), "{out}");
}

/// VmRSS of a process, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a VmRSS line")
}

/// A subscriber that sends its request and then reads nothing, over a socket with a
/// small receive buffer, so the daemon's writes to it soon block.
fn stalled_subscriber(d: &Daemon) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    use std::io::Write;
    let addr: std::net::SocketAddr = d.origin().trim_start_matches("http://").parse().expect("the daemon's address");
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect to the daemon");
    let mut stream: std::net::TcpStream = socket.into();
    write!(
        stream,
        "GET /imagefactory/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    stream
}

#[test]
fn a_stalled_subscriber_is_cut_off_and_the_daemon_does_not_hold_events_for_it() {
    // A small history, and far more events than the kernel's socket buffers hold
    // (tcp_wmem allows the daemon's side up to 4 MB; an event is about 450 bytes), so the
    // stalled client ends up far past what the daemon would hold for it.
    const HISTORY: usize = 64;
    const BUILDS: usize = 250;
    let mut extra = serde_json::Map::new();
    extra.insert("event_history".into(), json!(HISTORY));
    let d = Daemon::start(DaemonOptions { max_concurrent: 4, extra_config: extra, ..DaemonOptions::default() });
    let stalled = stalled_subscriber(&d);
    let before = rss_kb(d.pid());

    let params = json!({"mock_progress_steps": 100});
    let ids: Vec<String> = (0..BUILDS).map(|_| d.create_base(&mock_tdl(), params.clone())).collect();
    for id in &ids {
        d.wait_complete(id, "base_images");
    }
    let after = rss_kb(d.pid());
    // The last event's number: resuming from 0 tells what was missed, then sends the
    // HISTORY events still held, the last of which is the last there was.
    let mut resumed = Subscriber::connect(&d, "", Some(0));
    assert_eq!(resumed.next_event().event, "missed", "a resume from 0 after {BUILDS} builds must have missed events");
    let held: Vec<u64> = (0..HISTORY).map(|_| resumed.next_event().id.expect("an event id")).collect();
    let last_seq = *held.last().expect("held events");
    assert!(last_seq > 20_000, "too few events to test with: {last_seq}");

    // Only now does the stalled client read: what was in flight, then the end of the
    // stream (it was disconnected), never every event. Were it not cut off, keep-alive
    // comments would keep the stream open and the deadline would fail the test.
    stalled.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
    let mut reader = BufReader::new(stalled);
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut chunk = [0u8; 64 * 1024];
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading the stalled stream: {e}"),
        }
        assert!(Instant::now() < deadline, "the stalled stream was never closed: the daemon kept it going");
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("HTTP/1.1 200"), "the stream was refused: {}", text.lines().next().unwrap_or(""));
    let got: Vec<u64> =
        text.lines().filter_map(|l| l.strip_prefix("id:")).filter_map(|v| v.trim().parse().ok()).collect();
    assert!(!got.is_empty(), "the stalled client got no event at all before it stalled");
    let last_got = *got.last().expect("events");
    assert!(last_got < last_seq, "the stalled client got all {last_seq} events: it was buffered for, not cut off");
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "what the stalled client got has gaps");

    let grew_mb = after.saturating_sub(before) as f64 / 1024.0;
    println!(
        "FIGURES: {last_seq} events of {BUILDS} builds; the stalled client got {} ({:.1} MB) before it was cut off; \
         daemon VmRSS {:.1} MB before, {:.1} MB after (+{grew_mb:.1} MB)",
        got.len(),
        text.len() as f64 / 1048576.0,
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    assert!(grew_mb < 32.0, "the daemon grew by {grew_mb:.1} MB with a stalled subscriber");
}
