//! Request checks that run before the handlers: the body's deadline, the Accept header
//! and OAuth.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{oauth, ApiState};

/// Reads the whole request body within `request_timeout` (the head had its own, in the
/// server), so a client trickling a body cannot hold a connection for ever: 408 with one
/// line when it is late, 413 when it is larger than `max_request_bytes`. Only the request
/// is timed; the handler and the response (a long download) are not.
pub async fn read_body_in_time(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let config = st.config();
    let secs = config.request_timeout;
    let read = axum::body::to_bytes(body, config.max_request_bytes);
    match tokio::time::timeout(std::time::Duration::from_secs(secs), read).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(_)) => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
        Err(_) => {
            tracing::info!(path = %parts.uri.path(), "request body not received within {secs} s");
            (StatusCode::REQUEST_TIMEOUT, format!("Request timeout: the request body did not arrive within {secs} s"))
                .into_response()
        }
    }
}

/// Refuses an Accept header that allows no media type this API answers with (406),
/// with the original's message.
pub async fn check_accept(req: Request, next: Next) -> Response {
    if let Some(accept) = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        let path = req.uri().path();
        let a = accept.to_ascii_lowercase();
        let ok = a.contains("*/*")
            || a.contains("application/json")
            || a.contains("application/*")
            || (path.ends_with("/raw_image") && a.contains("application/octet-stream"))
            || (path.ends_with("/build_log") && (a.contains("text/plain") || a.contains("text/*")))
            // What EventSource sends.
            || (path.ends_with("/events") && (a.contains("text/event-stream") || a.contains("text/*")))
            // The page and its assets, for a client that asks for exactly what they are.
            || path.starts_with("/imagefactory/ui");
        if !ok {
            return (StatusCode::NOT_ACCEPTABLE, format!("Responses in {accept} are currently unsupported."))
                .into_response();
        }
    }
    next.run(req).await
}

/// Routes the original left open to anyone: the API root, jeos and targets.
fn is_public(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    p == "/imagefactory"
        || p == "/imagefactory/openapi.json"
        || p.starts_with("/imagefactory/jeos")
        || p.starts_with("/imagefactory/targets")
        // The page's static assets: they hold no data; every call the page makes is checked.
        || p == "/imagefactory/ui"
        || p.starts_with("/imagefactory/ui/")
}

/// Two-legged OAuth 1.0a on every protected route, unless `no_oauth`. A replayed request
/// (same consumer key, nonce and timestamp) or one with a timestamp outside the window is
/// refused like a bad signature: 401, one line, the reason in the log.
pub async fn oauth(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let config = st.config();
    if config.no_oauth || is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    // Form parameters take part in the signature, so the body is read here (bounded).
    let bytes = match axum::body::to_bytes(body, config.max_request_bytes).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    let url = format!("{}{}", super::represent::base_url_from_headers(&st, &parts.headers), parts.uri.path());
    let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let request = oauth::OAuthRequest {
        method: parts.method.as_str(),
        url: &url,
        query: parts.uri.query(),
        authorization,
        form_body: is_form.then_some(&bytes[..]),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    match oauth::verify(&request, &config.clients, now, &st.nonces) {
        Ok(_consumer) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Err(e) => {
            tracing::info!(path = %parts.uri.path(), reason = %e.log_reason(), "OAuth check failed");
            let text = match e {
                oauth::OAuthError::Missing => "Unauthorized: missing authorization",
                _ => "Unauthorized: authorization failed",
            };
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "OAuth")], text).into_response()
        }
    }
}
