//! The event stream of a farm: every daemon on one PostgreSQL database streams every
//! image change, whichever daemon or worker made it.
//!
//! The `images` table's trigger sends a notice (`insert:<id>`, `update:<id>`,
//! `delete:<id>`) on channel `imagefactory_images` when a change commits. Each daemon
//! follows the channel on a connection of its own, reads the record named, compares it
//! with the last state it saw and publishes the difference to its [`EventHub`]
//! (`super::events::EventHub`): created, changed (which fields), deleted. With the
//! postgres store this is the only publisher, so a daemon's own changes and everyone
//! else's reach its subscribers the same way and in the database's order.
//!
//! Only images still in flight are remembered (a finished one is forgotten; its next
//! change is published with every field marked changed), so memory follows the builds
//! under way, not the store's size. Notices sent while the connection is down are lost:
//! subscribers then see the next change of each image, with its whole state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::events::{changed_fields, EventKind};
use super::{Engine, EngineError, Inner};
use crate::image::{ImageRecord, Status};
use crate::store::Woken;

/// The fields a change is said to touch when the state before it is unknown.
const ALL_FIELDS: &[&str] = &["status", "activity", "percent_complete", "error"];

impl Engine {
    /// Starts following the store's change notices, when the store sends them (the
    /// postgres store); the file store's daemon publishes its own changes directly.
    pub fn start_shared_events(&self) -> Result<(), EngineError> {
        let Some(settings) = &self.inner.queue else { return Ok(()) };
        let mut notices = settings.queue.image_notices();
        // Connected (and listening) before this returns: no change made after the
        // daemon says it is up can be missed.
        notices.next(Duration::from_millis(1));
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name("store-events".into())
            .spawn(move || {
                let mut seen = Seen::default();
                loop {
                    if let Woken::Notices(payloads) = notices.next(Duration::from_secs(5)) {
                        for (op, id) in coalesce(&payloads) {
                            seen.apply(&inner, op, id);
                        }
                        inner.notify();
                    }
                }
            })
            .map_err(|e| EngineError::Internal(format!("cannot start the store events thread: {e}")))?;
        Ok(())
    }
}

/// The notices of one wake-up, one per image (the first operation, so an insert stays
/// an insert), in the order their images first appeared. The record is read once.
fn coalesce(payloads: &[String]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for p in payloads {
        let Some((op, id)) = p.split_once(':') else { continue };
        match out.iter_mut().find(|(_, i)| *i == id) {
            // A delete wins: the image is gone whatever came before.
            Some(entry) if op == "delete" => entry.0 = op,
            Some(_) => {}
            None => out.push((op, id)),
        }
    }
    out
}

/// The last state published of each image in flight.
#[derive(Default)]
struct Seen {
    records: HashMap<String, Arc<ImageRecord>>,
}

impl Seen {
    fn apply(&mut self, inner: &Inner, op: &str, id: &str) {
        let current = match inner.store.get(id) {
            Ok(rec) => rec,
            Err(e) => {
                tracing::debug!(image = %id, error = %e, "cannot read a changed image for the event stream");
                return;
            }
        };
        let before = self.records.remove(id);
        let Some(rec) = current else {
            // Gone (deleted, or removed before this notice was read).
            if let Some(last) = before {
                inner.events.publish(EventKind::Deleted, &last, inner.parents_of(&last), &[]);
            }
            return;
        };
        match (&before, op) {
            (None, "insert") => inner.events.publish(EventKind::Created, &rec, inner.parents_of(&rec), &[]),
            (Some(prev), _) => {
                let changed = changed_fields(prev, &rec);
                if !changed.is_empty() {
                    inner.events.publish(EventKind::Changed, &rec, inner.parents_of(&rec), &changed);
                }
            }
            (None, _) => inner.events.publish(EventKind::Changed, &rec, inner.parents_of(&rec), ALL_FIELDS),
        }
        // A finished image is forgotten; one being deleted (DELETING, then DELETED just
        // before its record goes) is kept for its deleted event.
        if !rec.status.is_final() || rec.status == Status::Deleted {
            self.records.insert(id.to_string(), Arc::new(rec));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_of_one_wake_up_are_read_once_per_image() {
        let p: Vec<String> =
            ["insert:a", "update:a", "update:b", "delete:b", "update:c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(coalesce(&p), vec![("insert", "a"), ("delete", "b"), ("update", "c")]);
        assert!(coalesce(&["nonsense".to_string()]).is_empty());
    }
}
