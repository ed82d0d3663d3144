//! Reading request bodies the way the original did: JSON wrapped in the singular type
//! (`{"base_image": {...}}`), or form fields directly. Anything else is a clear 400/415.

use axum::http::{header, HeaderMap, StatusCode};
use serde_json::{Map, Value};

use super::ApiError;
use crate::image::ImageKind;

/// The fields of an image creation request.
#[derive(Debug, Default)]
pub struct ImageFields {
    pub template: Option<String>,
    pub parameters: Map<String, Value>,
    pub target: Option<String>,
    pub base_image_id: Option<String>,
    pub target_image_id: Option<String>,
    pub provider: Option<String>,
    pub credentials: Option<String>,
}

/// The fields of a delete request (all optional).
#[derive(Debug, Default)]
pub struct DeleteFields {
    pub provider: Option<String>,
    pub credentials: Option<String>,
    pub target: Option<String>,
    pub parameters: Map<String, Value>,
}

/// Reads the body into a JSON object, from JSON or form encoding.
fn object(headers: &HeaderMap, bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    if ctype.starts_with("application/x-www-form-urlencoded") {
        let mut map = Map::new();
        for (k, v) in form_urlencoded::parse(bytes) {
            map.insert(k.into_owned(), Value::String(v.into_owned()));
        }
        return Ok(map);
    }
    if ctype.contains("xml") {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "XML request bodies are not supported; send JSON".into(),
        ));
    }
    if !(ctype.is_empty() || ctype.starts_with("application/json") || ctype.ends_with("+json")) {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("request bodies in {ctype} are not supported; send application/json"),
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("the request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
    }
}

/// The object under the singular key, or the whole object when it is not wrapped.
fn unwrap_singular(mut obj: Map<String, Value>, kind: ImageKind) -> Result<Map<String, Value>, ApiError> {
    match obj.remove(kind.singular()) {
        Some(Value::Object(inner)) => Ok(inner),
        Some(_) => Err(ApiError::bad_request(format!("\"{}\" must be a JSON object", kind.singular()))),
        None => Ok(obj),
    }
}

fn string_field(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // A provider definition may be sent as a JSON object: keep it as JSON text.
        Some(v @ Value::Object(_)) if key == "provider" => Ok(Some(v.to_string())),
        Some(_) => Err(ApiError::bad_request(format!("\"{key}\" must be a string"))),
    }
}

fn parameters_field(obj: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    match obj.get("parameters") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        // Form bodies carry parameters as JSON text.
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(ApiError::bad_request("\"parameters\" must be a JSON object")),
        },
        Some(_) => Err(ApiError::bad_request("\"parameters\" must be a JSON object")),
    }
}

pub fn image_fields(headers: &HeaderMap, bytes: &[u8], kind: ImageKind) -> Result<ImageFields, ApiError> {
    let obj = unwrap_singular(object(headers, bytes)?, kind)?;
    Ok(ImageFields {
        template: string_field(&obj, "template")?,
        parameters: parameters_field(&obj)?,
        target: string_field(&obj, "target")?,
        base_image_id: string_field(&obj, "base_image_id")?,
        target_image_id: string_field(&obj, "target_image_id")?,
        provider: string_field(&obj, "provider")?,
        credentials: string_field(&obj, "credentials")?,
    })
}

pub fn delete_fields(headers: &HeaderMap, bytes: &[u8]) -> Result<DeleteFields, ApiError> {
    let mut obj = object(headers, bytes)?;
    // Any singular wrapper is accepted (the original documented provider_image).
    for kind in ImageKind::ALL {
        if let Some(Value::Object(inner)) = obj.remove(kind.singular()) {
            obj = inner;
            break;
        }
    }
    Ok(DeleteFields {
        provider: string_field(&obj, "provider")?,
        credentials: string_field(&obj, "credentials")?,
        target: string_field(&obj, "target")?,
        parameters: parameters_field(&obj)?,
    })
}

/// A template sent alone: `{"template": "..."}` (JSON or form).
pub fn template_only(headers: &HeaderMap, bytes: &[u8]) -> Result<String, ApiError> {
    let obj = object(headers, bytes)?;
    string_field(&obj, "template")?.ok_or_else(|| ApiError::bad_request("Missing key/value pair: template"))
}
