//! The OpenAPI 3.0 document, made from the route table in [`super::routes`].

use serde_json::{json, Map, Value};

use super::routes::Endpoint;

/// Path parameters are named by position in the router (`{a}`, `{b}`); the document
/// names them for what they are.
fn readable_path(path: &str) -> (String, Vec<String>) {
    let mut out = Vec::new();
    let mut params = Vec::new();
    let segs: Vec<&str> = path.split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        if seg.starts_with('{') {
            let name = match i.checked_sub(1).and_then(|j| segs.get(j)) {
                Some(&"base_images") => "base_image_id",
                Some(&"target_images") => "target_image_id",
                Some(&"provider_images") => "provider_image_id",
                Some(&"plugins") => "plugin_id",
                Some(&"targets") => "target_id",
                Some(&"providers") => "provider_id",
                _ => "id",
            };
            params.push(name.to_string());
            out.push(format!("{{{name}}}"));
        } else {
            out.push(seg.to_string());
        }
    }
    (out.join("/"), params)
}

/// The whole document.
pub fn document(endpoints: &[Endpoint]) -> Value {
    let mut paths = Map::new();
    for ep in endpoints {
        let (path, params) = readable_path(&ep.path);
        let mut item = Map::new();
        for d in &ep.docs {
            let responses: Map<String, Value> =
                d.responses.iter().map(|(code, what)| (code.to_string(), json!({ "description": what }))).collect();
            let mut operation = json!({
                "summary": d.summary,
                "parameters": params.iter().map(|p| json!({
                    "name": p, "in": "path", "required": true, "schema": {"type": "string"}
                })).collect::<Vec<_>>(),
                "responses": responses,
            });
            if d.protected {
                operation["security"] = json!([{ "oauth1": [] }]);
            }
            if let Some(key) = d.body {
                operation["requestBody"] = json!({
                    "required": d.method == "post",
                    "content": {
                        "application/json": { "schema": { "type": "object", "properties": { key: { "type": if key == "template" { "string" } else { "object" } } } } },
                        "application/x-www-form-urlencoded": { "schema": { "type": "object" } }
                    }
                });
            }
            item.insert(d.method.to_string(), operation);
        }
        paths.insert(path, Value::Object(item));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "imagefactory REST API",
            "version": "2.0",
            "description": "Compatible with Image Factory's REST API v2. Errors are one line of plain text."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "oauth1": {
                    "type": "http",
                    "scheme": "OAuth",
                    "description": "Two-legged OAuth 1.0a, HMAC-SHA1, consumer keys from the config's clients"
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_path_is_documented_with_named_parameters() {
        let eps = super::super::routes::endpoints();
        let doc = document(&eps);
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), eps.len());
        let item = &paths["/imagefactory/base_images/{base_image_id}/target_images/{target_image_id}/provider_images"];
        assert!(item["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["provider_image"]
            .is_object());
        assert_eq!(item["get"]["parameters"][1]["name"], "target_image_id");
        assert!(paths["/imagefactory"]["get"].get("security").is_none());
        assert!(paths["/imagefactory/plugins"]["get"]["security"].is_array());
        assert!(!paths.keys().any(|p| p.contains("{a}")));
    }
}
