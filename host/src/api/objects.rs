//! Bodies and kept files served from object storage (`"bodies": "s3://..."`), with
//! Range: the daemon reads the object's size, answers the Range itself (one range; 206,
//! 416, or 200 for none or several) and streams the bytes from a ranged GetObject.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use super::{ApiError, ApiResult};
use crate::engine::EngineError;
use crate::store::objects::ObjectStore;

/// What a Range header asks of an object of some size.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wanted {
    /// No Range, one that is not of bytes, malformed, or several ranges: all of it.
    Whole,
    /// Bytes `first..=last`.
    Part(u64, u64),
    /// A range that starts past the end.
    Unsatisfiable,
}

/// Reads a `Range` header against an object of `size` bytes.
pub(super) fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else { return Wanted::Whole };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Wanted::Whole };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) if n == 0 || size == 0 => Wanted::Unsatisfiable,
        (true, _, Some(n)) => Wanted::Part(size.saturating_sub(n), size - 1),
        (false, Some(a), _) if a >= size => Wanted::Unsatisfiable,
        (false, Some(a), None) if last.trim().is_empty() => Wanted::Part(a, size - 1),
        (false, Some(a), Some(b)) if a <= b => Wanted::Part(a, b.min(size - 1)),
        _ => Wanted::Whole,
    }
}

/// Answers a GET of the object `key` (404 with `missing` when there is none).
pub(super) async fn serve(
    objects: &ObjectStore,
    key: &str,
    range: Option<&str>,
    mime: &'static str,
    missing: String,
) -> ApiResult {
    let size = objects.stat(key).await.map_err(EngineError::from)?.ok_or_else(|| ApiError::not_found(missing))?;
    let wanted = wanted(range, size);
    let mut resp = Response::builder().header(header::CONTENT_TYPE, mime).header(header::ACCEPT_RANGES, "bytes");
    let (status, part) = match wanted {
        Wanted::Unsatisfiable => {
            return resp
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
        }
        Wanted::Whole => (StatusCode::OK, None),
        Wanted::Part(first, last) => {
            resp = resp.header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{size}"));
            (StatusCode::PARTIAL_CONTENT, Some((first, last)))
        }
    };
    let length = part.map(|(a, b)| b - a + 1).unwrap_or(size);
    let body = if length == 0 {
        Body::empty()
    } else {
        let chunks = objects.read(key, part).await.map_err(EngineError::from)?;
        Body::from_stream(futures_util::stream::unfold(chunks, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    };
    resp.status(status)
        .header(header::CONTENT_LENGTH, HeaderValue::from(length))
        .body(body)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_bytes() {
        assert_eq!(wanted(None, 10), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-3"), 10), Wanted::Part(0, 3));
        assert_eq!(wanted(Some("bytes=4-"), 10), Wanted::Part(4, 9));
        assert_eq!(wanted(Some("bytes=-3"), 10), Wanted::Part(7, 9));
        assert_eq!(wanted(Some("bytes=-30"), 10), Wanted::Part(0, 9));
        assert_eq!(wanted(Some("bytes=5-100"), 10), Wanted::Part(5, 9));
        assert_eq!(wanted(Some("bytes=10-"), 10), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 10), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
        // Not one range of bytes: the whole object, as RFC 9110 lets a server answer.
        assert_eq!(wanted(Some("bytes=0-1,4-5"), 10), Wanted::Whole);
        assert_eq!(wanted(Some("items=0-1"), 10), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=5-2"), 10), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=x-"), 10), Wanted::Whole);
    }
}
