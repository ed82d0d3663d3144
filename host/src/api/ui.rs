//! `GET /imagefactory/ui/`: a page of builds served by the daemon itself.
//!
//! Plain HTML, CSS and JavaScript compiled into the binary (`ui/`): no build step, no
//! framework, nothing fetched from elsewhere, so it works on a machine without internet.
//! The page talks to the same REST API and event stream as any client. The assets are
//! public (they hold no data); every call the page makes goes through the API's checks,
//! so with OAuth on it signs each request in the browser with a consumer key and secret
//! the user types in (kept in that tab's sessionStorage, never sent): the page opens no
//! way around OAuth.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("ui/index.html");
const UI_CSS: &str = include_str!("ui/ui.css");
const UI_JS: &str = include_str!("ui/ui.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn css() -> Response {
    asset("text/css; charset=utf-8", UI_CSS)
}

pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", UI_JS)
}

/// `/imagefactory/ui` without the slash: the page's relative links need it.
pub async fn redirect() -> Response {
    (axum::http::StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, "/imagefactory/ui/")]).into_response()
}
