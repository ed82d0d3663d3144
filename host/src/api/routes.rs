//! The route table: every path the API serves, its handlers, and what it documents.
//!
//! The router and the OpenAPI document are both made from this one table, so the
//! document cannot drift from what is served.

use axum::routing::{get, post, MethodRouter};

use super::*;
use crate::image::ImageKind;

/// One operation of one path, as the OpenAPI document describes it.
pub struct OpDoc {
    pub method: &'static str,
    pub summary: String,
    /// Status codes and what they mean.
    pub responses: Vec<(u16, &'static str)>,
    /// The JSON wrapper key of the request body, when there is one.
    pub body: Option<&'static str>,
    /// Whether OAuth protects it (when OAuth is on).
    pub protected: bool,
}

/// A path with its handlers and docs.
pub struct Endpoint {
    pub path: String,
    pub handlers: MethodRouter<ApiState>,
    pub docs: Vec<OpDoc>,
}

fn op(method: &'static str, summary: impl Into<String>, responses: &[(u16, &'static str)]) -> OpDoc {
    OpDoc { method, summary: summary.into(), responses: responses.to_vec(), body: None, protected: true }
}

fn public(mut d: OpDoc) -> OpDoc {
    d.protected = false;
    d
}

fn with_body(mut d: OpDoc, key: &'static str) -> OpDoc {
    d.body = Some(key);
    d
}

fn endpoint(path: impl Into<String>, handlers: MethodRouter<ApiState>, docs: Vec<OpDoc>) -> Endpoint {
    Endpoint { path: path.into(), handlers, docs }
}

const OK: (u16, &str) = (200, "OK");
const NOT_FOUND: (u16, &str) = (404, "No such image or plugin");
const BAD: (u16, &str) = (400, "Bad request: one line saying what is wrong");
const UNAUTH: (u16, &str) = (401, "OAuth signature missing or wrong");
const NOT_ACCEPTABLE: (u16, &str) = (406, "The Accept header allows no JSON");
const NOT_IMPL: (u16, &str) = (501, "Not implemented (as in the original)");

/// Which collections nest under which prefixes (as the original routed them).
fn nested_allowed(prefix: &str, kind: ImageKind) -> bool {
    match prefix {
        "/imagefactory" => true,
        p if p.ends_with("target_images/{b}") => kind == ImageKind::ProviderImage,
        p if p.starts_with("/imagefactory/base_images") => kind == ImageKind::TargetImage,
        _ => kind == ImageKind::ProviderImage,
    }
}

/// Every endpoint of the API.
pub fn endpoints() -> Vec<Endpoint> {
    let mut e = vec![
        endpoint("/imagefactory", get(api_info), vec![public(op("get", "API name and version", &[OK]))]),
        endpoint("/imagefactory/openapi.json", get(openapi_json), vec![public(op("get", "This document", &[OK]))]),
        endpoint(
            "/imagefactory/plugins",
            get(list_plugins),
            vec![op("get", "List plugins, loaded or not", &[OK, UNAUTH])],
        ),
        endpoint(
            "/imagefactory/plugins/{a}",
            get(get_plugin),
            vec![op("get", "One plugin's manifest", &[OK, NOT_FOUND, UNAUTH])],
        ),
        endpoint("/imagefactory/jeos", get(jeos_config), vec![public(op("get", "JEOS configuration files", &[OK]))]),
        endpoint(
            "/imagefactory/jeos/images",
            get(jeos_images),
            vec![public(op("get", "JEOS images by target, provider, OS, version, arch", &[OK]))],
        ),
        endpoint(
            "/imagefactory/jeos/images/{a}",
            get(not_implemented),
            vec![public(op("get", "Not implemented", &[NOT_IMPL]))],
        ),
        endpoint("/imagefactory/ui", get(ui::redirect), vec![public(op("get", "Redirects to the page", &[(308, "To /imagefactory/ui/")]))]),
        endpoint("/imagefactory/ui/", get(ui::index), vec![public(op("get", "The page of builds (HTML)", &[OK]))]),
        endpoint("/imagefactory/ui/ui.js", get(ui::js), vec![public(op("get", "The page's script", &[OK]))]),
        endpoint("/imagefactory/ui/ui.css", get(ui::css), vec![public(op("get", "The page's style sheet", &[OK]))]),
        endpoint(
            "/imagefactory/events",
            get(events::events),
            vec![op(
                "get",
                "Server-Sent Events of every image change (?id= follows one image and its children; Last-Event-ID resumes)",
                &[OK, BAD, UNAUTH],
            )],
        ),
        endpoint(
            "/imagefactory/validate",
            post(validate_template),
            vec![with_body(op("post", "Check a template without building", &[OK, BAD, UNAUTH]), "template")],
        ),
    ];
    for path in [
        "/imagefactory/targets",
        "/imagefactory/targets/{a}",
        "/imagefactory/targets/{a}/providers",
        "/imagefactory/targets/{a}/providers/{b}",
    ] {
        e.push(endpoint(path, get(not_implemented), vec![public(op("get", "Not implemented", &[NOT_IMPL]))]));
    }
    // Collections, nested collections, images, raw bodies and build logs. Path
    // parameters are named by position (a, b, c) so nested routes never conflict.
    let prefixes = [
        ("/imagefactory", 0usize),
        ("/imagefactory/base_images/{a}", 1),
        ("/imagefactory/target_images/{a}", 1),
        ("/imagefactory/base_images/{a}/target_images/{b}", 2),
    ];
    const NAMES: [&str; 3] = ["{a}", "{b}", "{c}"];
    for (prefix, depth) in prefixes {
        for kind in ImageKind::ALL {
            if !nested_allowed(prefix, kind) {
                continue;
            }
            let coll = format!("{prefix}/{}", kind.collection());
            let item = format!("{coll}/{}", NAMES[depth]);
            let what = kind.singular().replace('_', " ");
            e.push(endpoint(
                &coll,
                get(list_images).post(create_image),
                vec![
                    op("get", format!("List {what}s"), &[OK, UNAUTH, NOT_ACCEPTABLE]),
                    with_body(
                        op(
                            "post",
                            format!("Build a {what}"),
                            &[(202, "Accepted: the new image, status NEW"), BAD, NOT_FOUND, UNAUTH],
                        ),
                        kind.singular(),
                    ),
                ],
            ));
            e.push(endpoint(
                &item,
                get(get_image).delete(delete_image),
                vec![
                    op("get", format!("One {what}, with its status and related images"), &[OK, NOT_FOUND, UNAUTH]),
                    with_body(
                        op(
                            "delete",
                            format!("Delete a {what} (cancels a build in progress)"),
                            &[(204, "Deleting"), BAD, NOT_FOUND, UNAUTH],
                        ),
                        kind.singular(),
                    ),
                ],
            ));
            e.push(endpoint(
                format!("{item}/raw_image"),
                get(raw_image),
                vec![op(
                    "get",
                    format!("Download the {what}'s body (Range supported)"),
                    &[OK, (206, "Partial content"), NOT_FOUND, UNAUTH],
                )],
            ));
            e.push(endpoint(
                format!("{item}/build_log"),
                get(build_log),
                vec![op("get", format!("The {what}'s build log (text)"), &[OK, NOT_FOUND, UNAUTH])],
            ));
            e.push(endpoint(
                format!("{item}/files"),
                get(list_files),
                vec![op(
                    "get",
                    format!("Names of the files kept with the {what} (console logs, screenshots, kickstarts)"),
                    &[OK, NOT_FOUND, UNAUTH],
                )],
            ));
            e.push(endpoint(
                format!("{item}/files/{{name}}"),
                get(get_file),
                vec![op("get", format!("One file kept with the {what}"), &[OK, NOT_FOUND, UNAUTH])],
            ));
        }
    }
    e
}
