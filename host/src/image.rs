//! The image model: the three kinds of image, their statuses and their stored metadata.
//!
//! The field names are the original Image Factory's, so a `.meta` file reads the same:
//! `{"type": "BaseImage", "identifier": ..., "status": "COMPLETE", ...}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The three kinds of image a build produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImageKind {
    /// A generic OS install, made by an OS plugin from a template.
    BaseImage,
    /// A base image made ready for one cloud, by a cloud plugin (and the OS plugin).
    TargetImage,
    /// A target image pushed to (or snapshotted on) a provider.
    ProviderImage,
}

impl ImageKind {
    pub const ALL: [ImageKind; 3] = [ImageKind::BaseImage, ImageKind::TargetImage, ImageKind::ProviderImage];

    /// The class name used in `.meta` files and `_type` fields: `BaseImage`.
    pub fn class(self) -> &'static str {
        match self {
            ImageKind::BaseImage => "BaseImage",
            ImageKind::TargetImage => "TargetImage",
            ImageKind::ProviderImage => "ProviderImage",
        }
    }

    /// The singular key used in API bodies: `base_image`.
    pub fn singular(self) -> &'static str {
        match self {
            ImageKind::BaseImage => "base_image",
            ImageKind::TargetImage => "target_image",
            ImageKind::ProviderImage => "provider_image",
        }
    }

    /// The collection name used in API paths: `base_images`.
    pub fn collection(self) -> &'static str {
        match self {
            ImageKind::BaseImage => "base_images",
            ImageKind::TargetImage => "target_images",
            ImageKind::ProviderImage => "provider_images",
        }
    }

    /// Reads a class name, a singular or a collection name.
    pub fn parse(s: &str) -> Option<ImageKind> {
        ImageKind::ALL.into_iter().find(|k| k.class() == s || k.singular() == s || k.collection() == s)
    }
}

/// Where an image is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    New,
    Pending,
    Building,
    Complete,
    Failed,
    Deleting,
    Deleted,
    #[serde(rename = "DELETEFAILED")]
    DeleteFailed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "NEW",
            Status::Pending => "PENDING",
            Status::Building => "BUILDING",
            Status::Complete => "COMPLETE",
            Status::Failed => "FAILED",
            Status::Deleting => "DELETING",
            Status::Deleted => "DELETED",
            Status::DeleteFailed => "DELETEFAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        serde_json::from_value(Value::String(s.to_ascii_uppercase())).ok()
    }

    /// A build is under way: a process must be working on the image.
    pub fn is_in_flight(self) -> bool {
        matches!(self, Status::New | Status::Pending | Status::Building | Status::Deleting)
    }

    /// The build has ended, one way or the other.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Complete | Status::Failed | Status::Deleted | Status::DeleteFailed)
    }
}

/// `status_detail`: what the build is doing now, and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetail {
    /// One line: the sub-task under way (or the last one, when the build ended).
    pub activity: String,
    /// One line a UI can show: `Failure encountered while: <activity>: <cause>`.
    pub error: Option<String>,
}

/// The stored metadata of one image: the content of `<uuid>.meta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    #[serde(rename = "type")]
    pub kind: ImageKind,
    pub identifier: String,
    /// The body's path: `<storage>/<uuid>.body`.
    pub data: String,
    pub template: Option<String>,
    pub icicle: Option<String>,
    pub status_detail: StatusDetail,
    pub status: Status,
    pub percent_complete: u8,
    pub parameters: Map<String, Value>,
    pub properties: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier_on_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_account_identifier: Option<String>,
    /// Seconds since the epoch when the record was created (not in the original).
    #[serde(default)]
    pub created: u64,
}

impl ImageRecord {
    /// A fresh record in state NEW, as the original initialised one.
    pub fn new(kind: ImageKind, identifier: String, data: String) -> ImageRecord {
        ImageRecord {
            kind,
            identifier,
            data,
            template: None,
            icicle: None,
            status_detail: StatusDetail {
                activity: "Initializing image prior to Cloud/OS customization".to_string(),
                error: None,
            },
            status: Status::New,
            percent_complete: 0,
            parameters: Map::new(),
            properties: Map::new(),
            base_image_id: None,
            target_image_id: None,
            target: None,
            provider: None,
            identifier_on_provider: None,
            provider_account_identifier: None,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// The fields an API answer or a status callback shows of an image: `_type`, `id` and
/// the metadata, without the storage path and the parent ids (the API shows those as
/// links), as the original did.
pub fn public_fields(rec: &ImageRecord) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("_type".into(), Value::String(rec.kind.class().into()));
    out.insert("id".into(), Value::String(rec.identifier.clone()));
    if let Ok(Value::Object(all)) = serde_json::to_value(rec) {
        for (k, v) in all {
            if !matches!(k.as_str(), "type" | "identifier" | "data" | "base_image_id" | "target_image_id") {
                out.insert(k, v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_json_uses_the_original_names() {
        let mut r = ImageRecord::new(ImageKind::TargetImage, "id-1".into(), "/s/id-1.body".into());
        r.base_image_id = Some("b".into());
        r.status = Status::DeleteFailed;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["type"], "TargetImage");
        assert_eq!(v["status"], "DELETEFAILED");
        assert_eq!(v["base_image_id"], "b");
        assert!(v.get("identifier_on_provider").is_none());
        let back: ImageRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn kinds_parse_from_every_spelling() {
        assert_eq!(ImageKind::parse("base_images"), Some(ImageKind::BaseImage));
        assert_eq!(ImageKind::parse("TargetImage"), Some(ImageKind::TargetImage));
        assert_eq!(ImageKind::parse("provider_image"), Some(ImageKind::ProviderImage));
        assert_eq!(ImageKind::parse("plugins"), None);
        assert_eq!(Status::parse("complete"), Some(Status::Complete));
        assert_eq!(Status::parse("deletefailed"), Some(Status::DeleteFailed));
        assert_eq!(Status::parse("bogus"), None);
    }
}
