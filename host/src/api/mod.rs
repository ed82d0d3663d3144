//! The REST API v2, compatible with the original's routes, bodies and status codes.
//!
//! Handlers are thin: they read the request, call the [`Engine`] on a blocking thread,
//! and shape the answer. Deliberate departures from the original (each listed in the
//! README): an invalid template is refused at once with 400 and a line-numbered reason;
//! unknown ids give 404 and bad requests 400 where the original degraded to 500;
//! in-flight states and activity show in GET; an image's build log is served.

pub mod oauth;
pub mod server;
pub mod tls;

mod body;
mod events;
mod listing;
mod middleware;
mod objects;
mod openapi;
mod represent;
mod routes;
mod ui;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::engine::{DeleteRequest, Engine, EngineError, ProviderRequest};
use crate::image::ImageKind;
use crate::store::Query;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Engine,
    /// The config requests are served with; a reload (SIGHUP) swaps it whole, so a
    /// request sees either the old or the new one, never a mix.
    config: Arc<arc_swap::ArcSwap<Config>>,
    /// Whether the server speaks TLS (the scheme of hrefs and OAuth base URLs).
    pub tls: bool,
    /// OAuth nonces seen within the timestamp window (replay protection).
    pub nonces: Arc<oauth::NonceCache>,
    /// Serialized listings, valid until the store changes.
    listings: Arc<listing::ListingCache>,
}

impl ApiState {
    /// The state of a daemon over `engine` and `config`, with an empty nonce cache.
    pub fn new(engine: Engine, config: Arc<Config>, tls: bool) -> ApiState {
        ApiState {
            engine,
            config: Arc::new(arc_swap::ArcSwap::new(config)),
            tls,
            nonces: Arc::new(oauth::NonceCache::default()),
            listings: Arc::new(listing::ListingCache::default()),
        }
    }

    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Serves every request from now on with `config` (a reload).
    pub fn replace_config(&self, config: Config) {
        self.config.store(Arc::new(config));
    }
}

/// An error answer: a status and one line of plain text, as the original answered.
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let status = match e {
            EngineError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            EngineError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::error!(status = %self.0, error = %self.1, "request failed");
        }
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.1).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Runs blocking engine work off the async runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}")))
}

/// The whole API under `/imagefactory`, made from the route table.
pub fn router(state: ApiState) -> Router {
    let mut api =
        Router::new().route("/imagefactory/", get(api_info)).route("/imagefactory/plugins/", get(list_plugins));
    for ep in routes::endpoints() {
        api = api.route(&ep.path, ep.handlers);
    }
    let limit = state.config().max_request_bytes;
    api.fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::oauth))
        .layer(axum::middleware::from_fn(middleware::check_accept))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::read_body_in_time))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The OpenAPI document of this API.
pub fn openapi() -> Value {
    openapi::document(&routes::endpoints())
}

async fn openapi_json() -> Json<Value> {
    Json(openapi())
}

/// The collection a request path names: the last collection segment before the id.
fn kind_in_path(uri: &Uri, has_id: bool) -> Option<ImageKind> {
    let segs: Vec<&str> = uri.path().trim_end_matches('/').split('/').collect();
    let mut segs = segs.as_slice();
    if let Some(last) = segs.last() {
        if *last == "raw_image" || *last == "build_log" {
            segs = &segs[..segs.len() - 1];
        }
    }
    let idx = if has_id { segs.len().checked_sub(2)? } else { segs.len().checked_sub(1)? };
    ImageKind::parse(segs.get(idx)?)
}

/// The parent ids a nested path names: (base_image_id, target_image_id).
fn parents_in_path(uri: &Uri) -> (Option<String>, Option<String>) {
    let segs: Vec<&str> = uri.path().split('/').collect();
    let after = |name: &str| segs.iter().position(|s| *s == name).and_then(|i| segs.get(i + 1)).map(|s| s.to_string());
    (after("base_images"), after("target_images"))
}

fn last_param(params: &std::collections::HashMap<String, String>) -> String {
    ["d", "c", "b", "a"].iter().find_map(|k| params.get(*k).cloned()).unwrap_or_default()
}

async fn api_info() -> Json<Value> {
    Json(json!({"name": "imagefactory", "version": crate::VERSION, "api_version": "2.0"}))
}

async fn unknown_route(uri: Uri) -> ApiError {
    let name = uri.path().trim_start_matches("/imagefactory/").split('/').next().unwrap_or("").to_string();
    ApiError::not_found(format!("{name} not found"))
}

async fn not_implemented() -> ApiError {
    ApiError(StatusCode::NOT_IMPLEMENTED, "Method not implemented".into())
}

async fn list_images(State(st): State<ApiState>, headers: HeaderMap, uri: Uri) -> ApiResult {
    let kind = kind_in_path(&uri, false).ok_or_else(|| ApiError::not_found("collection not found"))?;
    let (base, target) = parents_in_path(&uri);
    let mut query = Query::kind(kind);
    match kind {
        ImageKind::TargetImage => query.base_image_id = base,
        ImageKind::ProviderImage => query.target_image_id = target,
        ImageKind::BaseImage => {}
    }
    let href = represent::request_url(&st, &headers, &uri);
    let json_answer = |bytes: axum::body::Bytes| ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    let engine = st.engine.clone();
    let generation = blocking(move || engine.generation()).await??;
    if let Some(bytes) = st.listings.get(&href, generation) {
        return Ok(json_answer(bytes));
    }
    let _building = st.listings.build_guard().await;
    // Another request may have built it while this one waited.
    let engine = st.engine.clone();
    let generation = blocking(move || engine.generation()).await??;
    if let Some(bytes) = st.listings.get(&href, generation) {
        return Ok(json_answer(bytes));
    }
    let engine = st.engine.clone();
    let prefix = href.clone();
    let bytes = blocking(move || {
        let ids = engine.query_ids(&query)?;
        listing::serialize(kind, &ids, &prefix)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot serialize the listing: {e}")))
    })
    .await??;
    let bytes = axum::body::Bytes::from(bytes);
    st.listings.put(href, generation, bytes.clone());
    Ok(json_answer(bytes))
}

async fn get_image(
    State(st): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    Path(p): Path<std::collections::HashMap<String, String>>,
) -> ApiResult {
    let kind = kind_in_path(&uri, true).ok_or_else(|| ApiError::not_found("collection not found"))?;
    let id = last_param(&p);
    let engine = st.engine.clone();
    let (rec, relations) = blocking(move || {
        let rec = engine.get_kind(&id, kind)?;
        let rel = represent::relations(&engine, &rec)?;
        Ok::<_, EngineError>((rec, rel))
    })
    .await??;
    let base = represent::base_url(&st, &headers);
    let href = represent::request_url(&st, &headers, &uri);
    Ok(Json(represent::full(&rec, &href, &base, relations)).into_response())
}

async fn create_image(State(st): State<ApiState>, headers: HeaderMap, uri: Uri, bytes: axum::body::Bytes) -> ApiResult {
    let kind = kind_in_path(&uri, false).ok_or_else(|| ApiError::not_found("collection not found"))?;
    let fields = body::image_fields(&headers, &bytes, kind)?;
    let (path_base, path_target) = parents_in_path(&uri);
    let engine = st.engine.clone();
    let rec = blocking(move || -> Result<_, EngineError> {
        match kind {
            ImageKind::BaseImage => {
                let template = fields
                    .template
                    .ok_or_else(|| EngineError::BadRequest("Missing key/value pair: template".into()))?;
                engine.create_base_image(&template, fields.parameters)
            }
            ImageKind::TargetImage => {
                let base_id = fields.base_image_id.or(path_base);
                engine.create_target_image(
                    fields.target.as_deref().unwrap_or(""),
                    base_id.as_deref(),
                    fields.template.as_deref(),
                    fields.parameters,
                )
            }
            ImageKind::ProviderImage => engine.create_provider_image(ProviderRequest {
                provider: fields.provider.unwrap_or_default(),
                credentials: fields.credentials.unwrap_or_default(),
                target: fields.target.unwrap_or_default(),
                target_image_id: fields.target_image_id.or(path_target),
                template: fields.template,
                parameters: fields.parameters,
            }),
        }
    })
    .await??;
    let href = format!("{}/{}", represent::request_url(&st, &headers, &uri), rec.identifier);
    let mut fields = crate::image::public_fields(&rec);
    fields.insert("href".into(), Value::String(href));
    for (k, v) in [("base_image_id", &rec.base_image_id), ("target_image_id", &rec.target_image_id)] {
        if rec.kind != ImageKind::BaseImage && (k == "base_image_id") == (rec.kind == ImageKind::TargetImage) {
            fields.insert(k.into(), v.clone().map(Value::String).unwrap_or(Value::Null));
        }
    }
    let mut wrapped = Map::new();
    wrapped.insert(kind.singular().into(), Value::Object(fields));
    Ok((StatusCode::ACCEPTED, Json(Value::Object(wrapped))).into_response())
}

async fn delete_image(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(p): Path<std::collections::HashMap<String, String>>,
    bytes: axum::body::Bytes,
) -> ApiResult {
    let id = last_param(&p);
    let fields = body::delete_fields(&headers, &bytes)?;
    let engine = st.engine.clone();
    blocking(move || {
        engine.delete(
            &id,
            DeleteRequest {
                provider: fields.provider,
                credentials: fields.credentials,
                target: fields.target,
                cascade: imagefactory_plugin_api::ops::parameter_as_bool(&fields.parameters, "cascade") == Some(true),
                parameters: fields.parameters,
            },
        )
    })
    .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn raw_image(
    State(st): State<ApiState>,
    Path(p): Path<std::collections::HashMap<String, String>>,
    req: Request,
) -> ApiResult {
    use tower::ServiceExt;
    let id = last_param(&p);
    let engine = st.engine.clone();
    let rec = blocking({
        let id = id.clone();
        move || engine.get(&id)
    })
    .await??;
    if let Some(objects) = st.engine.store().bodies().objects() {
        let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
        let missing = format!("The body of image {id} is not in object storage (its build has not completed)");
        let mut resp =
            objects::serve(objects, &objects.body_key(&rec.identifier), range, "application/octet-stream", missing)
                .await?;
        if let Ok(v) = format!("attachment; filename=\"{id}.body\"").parse() {
            resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        return Ok(resp);
    }
    let path = st.engine.store().body_path(&rec.identifier);
    let resp = tower_http::services::ServeFile::new_with_mime(
        &path,
        &"application/octet-stream".parse().map_err(|_| ApiError::bad_request("mime"))?,
    )
    .oneshot(req)
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the image body: {e}")))?;
    let mut resp = resp.map(Body::new);
    if let Ok(v) = format!("attachment; filename=\"{id}.body\"").parse() {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

async fn build_log(State(st): State<ApiState>, Path(p): Path<std::collections::HashMap<String, String>>) -> ApiResult {
    let id = last_param(&p);
    let engine = st.engine.clone();
    let log = blocking(move || engine.build_log(&id)).await??;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], log).into_response())
}

async fn list_files(State(st): State<ApiState>, Path(p): Path<std::collections::HashMap<String, String>>) -> ApiResult {
    let id = last_param(&p);
    let engine = st.engine.clone();
    let names = blocking(move || {
        let rec = engine.get(&id)?;
        engine.store().kept_files(&rec.identifier).map_err(EngineError::from)
    })
    .await??;
    Ok(Json(json!({ "files": names })).into_response())
}

async fn get_file(
    State(st): State<ApiState>,
    Path(p): Path<std::collections::HashMap<String, String>>,
    req: Request,
) -> ApiResult {
    use tower::ServiceExt;
    let id = last_param(&p);
    let name = p.get("name").cloned().unwrap_or_default();
    let engine = st.engine.clone();
    let rec = blocking(move || engine.get(&id)).await??;
    let mime = match std::path::Path::new(&name).extension().and_then(|e| e.to_str()) {
        Some("png") => "image/png",
        Some("log" | "txt" | "cfg" | "ks" | "xml" | "json") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    let missing = format!("No file {name} kept with this image");
    if let Some(objects) = st.engine.store().bodies().objects() {
        if !crate::store::is_plain_file_name(&name) {
            return Err(ApiError::not_found(missing));
        }
        let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
        return objects::serve(objects, &objects.file_key(&rec.identifier, &name), range, mime, missing).await;
    }
    let path = st.engine.store().kept_file(&rec.identifier, &name).ok_or_else(|| ApiError::not_found(missing))?;
    let resp = tower_http::services::ServeFile::new_with_mime(
        &path,
        &mime.parse().map_err(|_| ApiError::bad_request("mime"))?,
    )
    .oneshot(req)
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the file: {e}")))?;
    Ok(resp.map(Body::new))
}

async fn list_plugins(State(st): State<ApiState>, headers: HeaderMap, uri: Uri) -> ApiResult {
    let href = represent::request_url(&st, &headers, &uri);
    let href = href.trim_end_matches('/').to_string();
    let list: Vec<Value> =
        st.engine.plugins().entries().iter().map(|e| represent::plugin(e, &format!("{href}/{}", e.id))).collect();
    Ok(Json(json!({ "plugins": list })).into_response())
}

async fn get_plugin(State(st): State<ApiState>, headers: HeaderMap, uri: Uri, Path(id): Path<String>) -> ApiResult {
    let entry =
        st.engine.plugins().entry(&id).ok_or_else(|| ApiError::not_found(format!("No plugin found with id: {id}")))?;
    Ok(Json(represent::plugin(entry, &represent::request_url(&st, &headers, &uri))).into_response())
}

async fn jeos_config(State(st): State<ApiState>) -> Json<Value> {
    let map: Map<String, Value> = st
        .config()
        .jeos_config
        .iter()
        .enumerate()
        .map(|(i, p)| (i.to_string(), Value::String(p.to_string_lossy().into_owned())))
        .collect();
    Json(Value::Object(map))
}

async fn jeos_images(State(st): State<ApiState>) -> Json<Value> {
    Json(represent::jeos_images(&st.config().jeos_config))
}

async fn validate_template(State(st): State<ApiState>, headers: HeaderMap, bytes: axum::body::Bytes) -> ApiResult {
    let template = body::template_only(&headers, &bytes)?;
    let opts = imagefactory_plugin_api::tdl::ParseOptions { require_root_pw: st.config().tdl_require_root_pw };
    let answer = match imagefactory_plugin_api::tdl::Template::parse(&template, &opts) {
        Ok(_) => json!({"valid": true, "errors": []}),
        Err(e) => json!({"valid": false, "errors": e.diagnostics().iter().map(|d| json!({
            "line": d.line, "column": d.column, "element": d.element, "message": d.message, "text": d.to_string()
        })).collect::<Vec<_>>()}),
    };
    Ok(Json(answer).into_response())
}

/// A plugin entry as the API shows it (also printed by `imagefactory plugins`).
pub fn plugin_json(entry: &crate::plugins::PluginEntry) -> Value {
    represent::plugin(entry, &format!("/imagefactory/plugins/{}", entry.id))
}
