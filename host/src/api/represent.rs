//! How images and plugins look in API answers (the original's JSON shapes).

use std::path::PathBuf;

use axum::http::{header, HeaderMap, Uri};
use serde_json::{json, Map, Value};

use super::ApiState;
use crate::engine::Engine;
use crate::image::{ImageKind, ImageRecord};
use crate::plugins::PluginEntry;
use crate::store::Query;

/// `scheme://host` of this request.
pub fn base_url_from_headers(st: &ApiState, headers: &HeaderMap) -> String {
    let scheme = if st.tls { "https" } else { "http" };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// `scheme://host/imagefactory`.
pub fn base_url(st: &ApiState, headers: &HeaderMap) -> String {
    format!("{}/imagefactory", base_url_from_headers(st, headers))
}

/// The URL of this request, without the query (the original's `href`).
pub fn request_url(st: &ApiState, headers: &HeaderMap, uri: &Uri) -> String {
    format!("{}{}", base_url_from_headers(st, headers), uri.path().trim_end_matches('/'))
}

fn link(kind: ImageKind, id: &str, href: &str) -> Value {
    json!({"_type": kind.class(), "id": id, "href": href})
}

/// `{"base_image": {"_type", "id", "href"}}`, a list element.
pub fn link_wrapped(rec: &ImageRecord, href: &str) -> Value {
    json!({ rec.kind.singular(): link(rec.kind, &rec.identifier, href) })
}

/// The related images shown with an image.
pub struct Relations {
    pub parent: Option<(ImageKind, String)>,
    pub children: Vec<std::sync::Arc<ImageRecord>>,
}

pub fn relations(engine: &Engine, rec: &ImageRecord) -> Result<Relations, crate::engine::EngineError> {
    Ok(match rec.kind {
        ImageKind::BaseImage => Relations {
            parent: None,
            children: engine
                .query(&Query { base_image_id: Some(rec.identifier.clone()), ..Query::kind(ImageKind::TargetImage) })?,
        },
        ImageKind::TargetImage => Relations {
            parent: rec.base_image_id.clone().map(|id| (ImageKind::BaseImage, id)),
            children: engine.query(&Query {
                target_image_id: Some(rec.identifier.clone()),
                ..Query::kind(ImageKind::ProviderImage)
            })?,
        },
        ImageKind::ProviderImage => Relations {
            parent: rec.target_image_id.clone().map(|id| (ImageKind::TargetImage, id)),
            children: Vec::new(),
        },
    })
}

/// `{"<singular>": {...}}` for GET of one image.
pub fn full(rec: &ImageRecord, href: &str, base: &str, rel: Relations) -> Value {
    let mut fields = crate::image::public_fields(rec);
    fields.insert("href".into(), Value::String(href.to_string()));
    match rec.kind {
        ImageKind::BaseImage => {}
        ImageKind::TargetImage => {
            let parent = rel.parent.map(|(k, id)| link(k, &id, &format!("{base}/{}/{id}", k.collection())));
            fields.insert("base_image".into(), parent.unwrap_or(Value::Null));
        }
        ImageKind::ProviderImage => {
            let parent = rel.parent.map(|(k, id)| link(k, &id, &format!("{base}/{}/{id}", k.collection())));
            fields.insert("target_image".into(), parent.unwrap_or(Value::Null));
        }
    }
    if let Some(child_kind) = match rec.kind {
        ImageKind::BaseImage => Some(ImageKind::TargetImage),
        ImageKind::TargetImage => Some(ImageKind::ProviderImage),
        ImageKind::ProviderImage => None,
    } {
        let list: Vec<Value> = rel
            .children
            .iter()
            .map(|c| link_wrapped(c, &format!("{base}/{}/{}", child_kind.collection(), c.identifier)))
            .collect();
        fields.insert(child_kind.collection().into(), json!({ child_kind.collection(): list }));
    }
    let mut out = Map::new();
    out.insert(rec.kind.singular().into(), Value::Object(fields));
    Value::Object(out)
}

/// A plugin in the list: its manifest plus `_type`, `id`, `href`; or an error entry.
pub fn plugin(entry: &PluginEntry, href: &str) -> Value {
    let mut obj = match entry.manifest.as_ref().and_then(|m| serde_json::to_value(m).ok()) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    obj.insert("_type".into(), json!("plugin"));
    obj.insert("id".into(), json!(entry.id));
    obj.insert("href".into(), json!(href));
    obj.insert("path".into(), json!(entry.path.to_string_lossy()));
    if let Some(err) = &entry.error {
        obj.insert("ERROR".into(), json!(err));
    }
    Value::Object(obj)
}

/// The JEOS images listed in the jeos_config files:
/// `target:provider:os:version:arch:img_id[:user[:cmd_prefix]]` lines, `#` comments.
pub fn jeos_images(dirs: &[PathBuf]) -> Value {
    let mut root = json!({});
    let mut files = Vec::new();
    for d in dirs {
        if d.is_dir() {
            if let Ok(rd) = std::fs::read_dir(d) {
                let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                v.sort();
                files.extend(v);
            }
        } else if d.is_file() {
            files.push(d.clone());
        }
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        'line: for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let parts: Vec<&str> = line.split(':').collect();
            if parts.len() < 6 {
                continue;
            }
            let mut node = &mut root;
            for key in &parts[..5] {
                // Indexing a non-object would panic; a clashing line is skipped instead.
                if !(node.is_object() || node.is_null()) {
                    continue 'line;
                }
                node = &mut node[*key];
            }
            if !(node.is_object() || node.is_null()) {
                continue;
            }
            node["img_id"] = json!(parts[5]);
            node["user"] = json!(parts.get(6).copied().unwrap_or(""));
            node["cmd_prefix"] = json!(parts.get(7).copied().unwrap_or(""));
        }
    }
    root
}
