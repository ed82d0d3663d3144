//! Serialized collection listings, kept until the store next changes.
//!
//! A listing of every base image in a store of 10,000 is about 1.75 MB of JSON; building
//! it (query, one `Value` per image, serialization) for every GET made 64 concurrent
//! clients time out. A listing is now serialized once per store generation and URL (the
//! hrefs carry the scheme and host the client used) and shared by every answer until an
//! image is added, changed or removed. The bytes are exactly what was served before.
//!
//! The listing is written straight from the matching ids into one buffer: no record is
//! parsed and no `Value` made per image (which took about 3 KB each while it was built:
//! 33 MB for 10,000 images).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

use crate::image::ImageKind;

/// One list element: `{"<singular>": {"_type", "href", "id"}}`, keys in the order the
/// original's (sorted) JSON had them.
struct Element<'a> {
    kind: ImageKind,
    id: &'a str,
    prefix: &'a str,
}

#[derive(Serialize)]
struct Link<'a> {
    #[serde(rename = "_type")]
    class: &'static str,
    href: String,
    id: &'a str,
}

impl Serialize for Element<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let link = Link { class: self.kind.class(), href: format!("{}/{}", self.prefix, self.id), id: self.id };
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.kind.singular(), &link)?;
        map.end()
    }
}

struct Elements<'a> {
    kind: ImageKind,
    ids: &'a [String],
    prefix: &'a str,
}

impl Serialize for Elements<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.ids.len()))?;
        for id in self.ids {
            seq.serialize_element(&Element { kind: self.kind, id, prefix: self.prefix })?;
        }
        seq.end()
    }
}

/// `{"<collection>": [element, ...]}` for the images `ids`, each element's href under
/// `prefix`.
pub fn serialize(kind: ImageKind, ids: &[String], prefix: &str) -> serde_json::Result<Vec<u8>> {
    // About 175 bytes an image plus the prefix: one allocation for the whole answer.
    let mut out = Vec::with_capacity(64 + ids.len() * (120 + prefix.len()));
    let mut ser = serde_json::Serializer::new(&mut out);
    let mut map = ser.serialize_map(Some(1))?;
    map.serialize_entry(kind.collection(), &Elements { kind, ids, prefix })?;
    SerializeMap::end(map)?;
    Ok(out)
}

/// At most this many URLs are kept; one more empties the cache (so a client cannot grow
/// it by varying the Host header).
const MAX_ENTRIES: usize = 16;

/// Listings by request URL, each with the store generation it was made at.
#[derive(Default)]
pub struct ListingCache {
    entries: Mutex<HashMap<String, (u64, Bytes)>>,
    /// Held while a listing is built, so a burst of clients after a change builds it once
    /// rather than once each (which would also multiply the memory it takes).
    building: tokio::sync::Mutex<()>,
}

impl ListingCache {
    /// The listing of `url` made at `generation`, if it is kept.
    pub fn get(&self, url: &str, generation: u64) -> Option<Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(url).filter(|(g, _)| *g == generation).map(|(_, b)| b.clone())
    }

    /// Keeps the listing of `url` made at `generation`.
    pub fn put(&self, url: String, generation: u64, bytes: Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&url) {
            entries.clear();
        }
        entries.insert(url, (generation, bytes));
    }

    /// Waits for the right to build a listing.
    pub async fn build_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.building.lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageRecord;
    use std::sync::Arc;

    #[test]
    fn the_listing_is_the_json_the_value_based_one_was() {
        let recs: Vec<Arc<ImageRecord>> = ["a1", "b2"]
            .iter()
            .map(|id| Arc::new(ImageRecord::new(ImageKind::TargetImage, id.to_string(), String::new())))
            .collect();
        let prefix = "http://h:1/imagefactory/target_images";
        let items: Vec<serde_json::Value> = recs
            .iter()
            .map(|r| crate::api::represent::link_wrapped(r, &format!("{prefix}/{}", r.identifier)))
            .collect();
        let old = serde_json::to_vec(&serde_json::json!({ "target_images": items })).unwrap();
        let ids: Vec<String> = recs.iter().map(|r| r.identifier.clone()).collect();
        assert_eq!(
            String::from_utf8(serialize(ImageKind::TargetImage, &ids, prefix).unwrap()).unwrap(),
            String::from_utf8(old).unwrap()
        );
        assert_eq!(serialize(ImageKind::BaseImage, &[], prefix).unwrap(), br#"{"base_images":[]}"#);
    }

    #[test]
    fn a_listing_holds_only_for_its_generation_and_the_cache_stays_bounded() {
        let cache = ListingCache::default();
        cache.put("u".into(), 1, Bytes::from_static(b"one"));
        assert_eq!(cache.get("u", 1).as_deref(), Some(&b"one"[..]));
        assert!(cache.get("u", 2).is_none(), "a later generation misses");
        assert!(cache.get("v", 1).is_none(), "another URL misses");
        for n in 0..MAX_ENTRIES * 2 {
            cache.put(format!("url{n}"), 1, Bytes::new());
        }
        assert!(cache.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
