//! `GET /imagefactory/events` over real HTTP: Server-Sent Events of every image change,
//! in order, followed per image, resumed with Last-Event-ID, and the same for 500
//! subscribers at once while builds run.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use imagefactory_blackbox::*;
use serde_json::{json, Value};

/// One Server-Sent Event as received.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// A subscriber reading the stream line by line.
struct Subscriber {
    lines: BufReader<Box<dyn Read + Send + Sync>>,
}

impl Subscriber {
    fn connect(d: &Daemon, query: &str, last_event_id: Option<u64>) -> Subscriber {
        let agent = ureq::AgentBuilder::new().timeout_read(Duration::from_secs(60)).build();
        let mut req = agent.get(&format!("{}/imagefactory/events{query}", d.origin()));
        if let Some(id) = last_event_id {
            req = req.set("Last-Event-ID", &id.to_string());
        }
        let resp = req.call().unwrap_or_else(|e| panic!("GET /imagefactory/events: {e}"));
        assert_eq!(resp.status(), 200);
        assert!(resp.content_type().starts_with("text/event-stream"), "{}", resp.content_type());
        Subscriber { lines: BufReader::new(resp.into_reader()) }
    }

    /// The next event (keep-alive comments skipped).
    fn next(&mut self) -> Sse {
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        loop {
            let mut line = String::new();
            let n = self.lines.read_line(&mut line).expect("read the event stream");
            assert!(n > 0, "the event stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() || !event.is_empty() {
                    let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data {data:?}: {e}"));
                    return Sse { id, event, data };
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }

    /// Events until `done` says the last one read ends the wait.
    fn until(&mut self, mut done: impl FnMut(&Sse) -> bool) -> Vec<Sse> {
        let mut got = Vec::new();
        loop {
            let e = self.next();
            let stop = done(&e);
            got.push(e);
            if stop {
                return got;
            }
        }
    }
}

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
    let created = first.next();
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
    assert_eq!(by_query.next().id, Some(seen + 1));
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
