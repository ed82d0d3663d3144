//! `GET /imagefactory/events`: the engine's events as Server-Sent Events.
//!
//! Each event is `id: <seq>`, `event: created|changed|deleted` and one `data:` line of
//! JSON (the image's id, type, parents, status, activity, percent and error, and which
//! of them changed). `?id=<uuid>` follows one image and its children. A client that
//! reconnects with `Last-Event-ID` (or `?last_event_id=`) first gets the events it
//! missed that the daemon still holds; when some are no longer held, a `missed` event
//! says so first. A client that cannot keep up is disconnected rather than buffered for.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, ApiState};
use crate::engine::events::{Event as EngineEvent, Subscription};

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Follow this image and its children only.
    pub id: Option<String>,
    /// Resume after this event (for clients that cannot set `Last-Event-ID`).
    pub last_event_id: Option<String>,
}

fn resume_point(headers: &HeaderMap, query: &EventsQuery) -> Result<Option<u64>, ApiError> {
    let raw = headers.get("last-event-id").and_then(|v| v.to_str().ok()).or(query.last_event_id.as_deref());
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("Last-Event-ID must be an event number, not {v:?}"))),
    }
}

fn sse_event(e: &EngineEvent) -> Event {
    Event::default().id(e.seq.to_string()).event(e.kind.as_str()).data(e.data.clone())
}

/// Where a stream is: the backlog still to send, then the live receiver.
struct Cursor {
    missed: bool,
    backlog: std::vec::IntoIter<Arc<EngineEvent>>,
    sub: Subscription,
    follow: Option<String>,
}

fn events_stream(mut sub: Subscription, follow: Option<String>) -> impl Stream<Item = Result<Event, Infallible>> {
    let backlog = std::mem::take(&mut sub.backlog).into_iter();
    let cursor = Cursor { missed: sub.missed, backlog, sub, follow };
    stream::unfold(cursor, |mut c| async move {
        if c.missed {
            c.missed = false;
            let e = Event::default().event("missed").data("{\"reason\":\"older events are no longer held\"}");
            return Some((Ok(e), c));
        }
        loop {
            let next = match c.backlog.next() {
                Some(e) => e,
                None => match c.sub.live.recv().await {
                    Ok(e) => e,
                    // Fell too far behind, or the engine is gone: end the stream. The
                    // client may resume from the last id it saw.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return None,
                },
            };
            if c.follow.as_deref().is_none_or(|id| next.concerns(id)) {
                return Some((Ok(sse_event(&next)), c));
            }
        }
    })
}

pub async fn events(State(st): State<ApiState>, headers: HeaderMap, Query(query): Query<EventsQuery>) -> Response {
    let after = match resume_point(&headers, &query) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let follow = query.id.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(id) = &follow {
        if uuid::Uuid::parse_str(id).is_err() {
            return ApiError::bad_request(format!("id must be an image id (a UUID), not {id:?}")).into_response();
        }
    }
    let sub = st.engine.subscribe(after);
    Sse::new(events_stream(sub, follow)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}
