//! The engine's event stream: every change of an image a client can see (created, its
//! status, activity, percent, error, deleted) as one numbered event, for
//! `GET /imagefactory/events` and anything else that would otherwise poll.
//!
//! Events are numbered in the order the engine made the changes (they are published
//! under the engine's write lock), so a subscriber sees each image's changes in order.
//! The hub keeps the last `event_history` events (config; [`HISTORY`] by default), so a
//! client that reconnects with the last number it saw gets what it missed; older ones
//! are gone and it is told so. Live delivery goes through one bounded broadcast ring
//! shared by every subscriber: a subscriber that falls more than that many events behind
//! is cut off (and may resume from the history) instead of making the daemon hold more
//! for it. The hub's memory is therefore bounded by the history, whatever the number or
//! speed of the subscribers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::image::ImageRecord;

/// How many events the hub keeps for resuming, and how far a live subscriber may lag,
/// unless the config says otherwise (`event_history`).
pub const HISTORY: usize = 4096;

/// What happened to the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Changed,
    Deleted,
}

impl EventKind {
    /// The SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Changed => "changed",
            EventKind::Deleted => "deleted",
        }
    }
}

/// One change, as sent.
#[derive(Debug)]
pub struct Event {
    /// 1, 2, 3, ... since the daemon started.
    pub seq: u64,
    pub kind: EventKind,
    /// The image this is about.
    pub image_id: String,
    /// Its ancestors (a target's base; a provider image's target and base).
    pub parents: Vec<String>,
    /// The JSON text of the event's data.
    pub data: String,
}

impl Event {
    /// Whether a subscriber following `id` (an image and its children) wants this.
    pub fn concerns(&self, id: &str) -> bool {
        self.image_id == id || self.parents.iter().any(|p| p == id)
    }
}

/// What a new subscriber gets: the held events after the one it last saw, then the
/// live ones from `live`, with nothing lost or repeated between the two.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The subscriber asked to resume from an event the hub no longer holds.
    pub missed: bool,
}

struct History {
    /// How many events are held.
    capacity: usize,
    last_seq: u64,
    events: VecDeque<Arc<Event>>,
}

/// The publisher and its history.
pub struct EventHub {
    history: Mutex<History>,
    live: broadcast::Sender<Arc<Event>>,
}

impl Default for EventHub {
    fn default() -> EventHub {
        EventHub::with_history(HISTORY)
    }
}

/// The fields of a record an event shows.
fn data(seq: u64, kind: EventKind, rec: &ImageRecord, parents: &[String], changed: &[&str]) -> String {
    json!({
        "seq": seq,
        "event": kind.as_str(),
        "id": rec.identifier,
        "type": rec.kind.singular(),
        "parents": parents,
        "base_image_id": rec.base_image_id,
        "target_image_id": rec.target_image_id,
        "status": rec.status.as_str(),
        "activity": rec.status_detail.activity,
        "error": rec.status_detail.error,
        "percent_complete": rec.percent_complete,
        "changed": changed,
    })
    .to_string()
}

/// Which of the fields events show differ between two states of a record.
pub fn changed_fields(before: &ImageRecord, after: &ImageRecord) -> Vec<&'static str> {
    let mut c = Vec::new();
    if before.status != after.status {
        c.push("status");
    }
    if before.status_detail.activity != after.status_detail.activity {
        c.push("activity");
    }
    if before.percent_complete != after.percent_complete {
        c.push("percent_complete");
    }
    if before.status_detail.error != after.status_detail.error {
        c.push("error");
    }
    c
}

impl EventHub {
    /// A hub that holds the last `capacity` events (at least 1).
    pub fn with_history(capacity: usize) -> EventHub {
        let capacity = capacity.max(1);
        EventHub {
            history: Mutex::new(History { capacity, last_seq: 0, events: VecDeque::with_capacity(capacity) }),
            live: broadcast::channel(capacity).0,
        }
    }

    /// Publishes one change. Callers hold the engine's write lock, which orders events
    /// as the changes were made.
    pub fn publish(&self, kind: EventKind, rec: &ImageRecord, parents: Vec<String>, changed: &[&str]) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.last_seq += 1;
        let seq = h.last_seq;
        let event = Arc::new(Event {
            seq,
            kind,
            image_id: rec.identifier.clone(),
            data: data(seq, kind, rec, &parents, changed),
            parents,
        });
        if h.events.len() == h.capacity {
            h.events.pop_front();
        }
        h.events.push_back(event.clone());
        // No subscriber is not an error.
        let _ = self.live.send(event);
    }

    /// Subscribes, with the held events after `after` (none when `after` is `None`).
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        // Subscribing under the lock: every event is either in the backlog or live.
        let live = self.live.subscribe();
        let (backlog, missed) = match after {
            None => (Vec::new(), false),
            Some(after) => {
                let oldest_held = h.events.front().map(|e| e.seq).unwrap_or(h.last_seq + 1);
                let backlog = h.events.iter().filter(|e| e.seq > after).cloned().collect();
                (backlog, after + 1 < oldest_held && after < h.last_seq)
            }
        };
        Subscription { backlog, live, missed }
    }

    /// The number of the last event published.
    pub fn last_seq(&self) -> u64 {
        self.history.lock().unwrap_or_else(|p| p.into_inner()).last_seq
    }
}

/// The JSON of an event's data, parsed (for tests and the CLI).
pub fn parse(data: &str) -> Option<Value> {
    serde_json::from_str(data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageKind, Status};

    fn rec(id: &str) -> ImageRecord {
        ImageRecord::new(ImageKind::BaseImage, id.into(), format!("/s/{id}.body"))
    }

    #[test]
    fn resuming_gets_what_was_missed_and_nothing_twice() {
        let hub = EventHub::default();
        let mut r = rec("a");
        hub.publish(EventKind::Created, &r, vec![], &[]);
        let mut first = hub.subscribe(None);
        r.status = Status::Building;
        hub.publish(EventKind::Changed, &r, vec![], &["status"]);
        assert_eq!(first.live.try_recv().unwrap().seq, 2);
        r.status = Status::Complete;
        hub.publish(EventKind::Changed, &r, vec![], &["status"]);
        // Resume after 1: 2 and 3 from the history, then live from 4 on.
        let mut resumed = hub.subscribe(Some(1));
        assert_eq!(resumed.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert!(!resumed.missed);
        hub.publish(EventKind::Deleted, &r, vec![], &[]);
        assert_eq!(resumed.live.try_recv().unwrap().seq, 4);
        assert!(resumed.live.try_recv().is_err());
        let d = parse(&resumed.backlog[1].data).unwrap();
        assert_eq!(d["status"], "COMPLETE");
        assert_eq!(d["seq"], 3);
    }

    #[test]
    fn history_is_bounded_and_a_lost_resume_is_told() {
        let hub = EventHub::default();
        let r = rec("a");
        for _ in 0..HISTORY + 10 {
            hub.publish(EventKind::Changed, &r, vec![], &[]);
        }
        let s = hub.subscribe(Some(3));
        assert!(s.missed);
        assert_eq!(s.backlog.len(), HISTORY);
        assert_eq!(s.backlog[0].seq, 11);
        let up_to_date = hub.subscribe(Some(hub.last_seq()));
        assert!(up_to_date.backlog.is_empty() && !up_to_date.missed);
    }

    #[test]
    fn a_follower_of_a_base_gets_its_children() {
        let hub = EventHub::default();
        hub.publish(EventKind::Created, &rec("t"), vec!["b".into()], &[]);
        let s = hub.subscribe(Some(0));
        assert!(s.backlog[0].concerns("b") && s.backlog[0].concerns("t") && !s.backlog[0].concerns("x"));
    }
}
