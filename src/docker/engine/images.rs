//! The image list, `GET /images/json`, read as text and parsed leniently. bollard 0.21's
//! `ImageSummary` requires every field the API reference marks required (`ParentId`, `Created`,
//! `Size`, `SharedSize`, `Containers`): an engine that leaves one out, as later API versions do
//! with fields they deprecate, would make the whole list fail and the engine look down. Here a
//! missing field takes its empty value, and only an entry without an `Id` is left out (nothing
//! can be done with it), with a warning.

use std::collections::{HashMap, HashSet};
use std::sync::PoisonError;

use bollard::errors::Error as BollardError;
use serde::Deserialize;

use super::{DockerEngine, canonical_id, tags};
use crate::docker::{Error, Image};

/// Tagged and dangling images, not the intermediate layers of the classic builder.
const IMAGES: &str = "/images/json?all=false";

/// One entry of the image list, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Entry {
    id: String,
    parent_id: Option<String>,
    repo_tags: Option<Vec<String>>,
    created: i64,
    size: i64,
    labels: Option<HashMap<String, String>>,
}

impl DockerEngine {
    /// The engine's images (`docker image ls`, dangling ones included), each with its layers.
    pub(super) async fn list_images(&self) -> Result<Vec<Image>, Error> {
        let body = self.get_list("list images", IMAGES).await?;
        let mut images = parse_images(&body).map_err(|err| Error::Request {
            op: "list images (GET /images/json)".into(),
            source: BollardError::JsonSerdeError { err },
        })?;
        self.fill_layers(&mut images).await?;
        Ok(images)
    }

    /// Fills in each image's layers (`RootFS.Layers` of its inspect), from the cache of ids
    /// seen before (an id's layers never change) or one inspect each; forgets the ids no longer
    /// listed. An image removed since the list keeps none.
    async fn fill_layers(&self, images: &mut [Image]) -> Result<(), Error> {
        let known: HashMap<String, Vec<String>> = {
            let mut cache = self.layers.lock().unwrap_or_else(PoisonError::into_inner);
            let listed: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
            cache.retain(|id, _| listed.contains(id.as_str()));
            images
                .iter()
                .filter_map(|i| Some((i.id.clone(), cache.get(&i.id)?.clone())))
                .collect()
        };
        for image in images.iter_mut() {
            if let Some(layers) = known.get(&image.id) {
                image.layers = layers.clone();
                continue;
            }
            let inspect = match self
                .call(
                    format!("inspect image {}", image.id),
                    self.docker.inspect_image(&image.id),
                )
                .await
            {
                Ok(inspect) => inspect,
                Err(e) if e.status() == Some(404) => continue,
                Err(e) => return Err(e),
            };
            image.layers = inspect.root_fs.and_then(|fs| fs.layers).unwrap_or_default();
            self.layers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(image.id.clone(), image.layers.clone());
        }
        Ok(())
    }
}

/// The images of a `GET /images/json` body.
fn parse_images(body: &str) -> Result<Vec<Image>, serde_json::Error> {
    let entries: Option<Vec<Entry>> = serde_json::from_str(body)?;
    let entries = entries.unwrap_or_default();
    let mut images = Vec::with_capacity(entries.len());
    let mut without_id = 0usize;
    for e in entries {
        if e.id.is_empty() {
            without_id += 1;
            continue;
        }
        images.push(Image {
            id: canonical_id(e.id),
            parent_id: e.parent_id.filter(|p| !p.is_empty()).map(canonical_id),
            tags: tags(e.repo_tags),
            created: e.created,
            size_bytes: u64::try_from(e.size).unwrap_or(0),
            labels: e.labels.unwrap_or_default().into_iter().collect(),
            pinned: None,
            layers: Vec::new(),
        });
    }
    if without_id > 0 {
        log::warn!("the image list has {without_id} entries without an Id: leaving them out");
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_may_be_missing_or_null_but_the_id() {
        // Docker 20.10's shape, with everything.
        let full = r#"[{"Containers":-1,"Created":1700000000,"Id":"sha256:aa","Labels":{"tier":"gold"},
            "ParentId":"sha256:pp","RepoDigests":[],"RepoTags":["a:1","<none>:<none>"],
            "SharedSize":-1,"Size":5,"VirtualSize":5}]"#;
        let images = parse_images(full).unwrap();
        assert_eq!(images.len(), 1);
        let a = &images[0];
        assert_eq!(a.id, "sha256:aa");
        assert_eq!(a.parent_id.as_deref(), Some("sha256:pp"));
        assert_eq!(a.tags, vec!["a:1".to_string()]);
        assert_eq!((a.created, a.size_bytes), (1_700_000_000, 5));
        assert_eq!(a.labels.get("tier").map(String::as_str), Some("gold"));

        // Fields left out or null (what bollard's ImageSummary refuses), an entry without an
        // id, unknown fields, and an empty parent.
        let sparse = r#"[{"Id":"sha256:bb","Manifests":[{"ID":"x"}]},
            {"Id":"sha256:cc","ParentId":"","RepoTags":null,"Labels":null,"Size":-1},
            {"RepoTags":["ghost:1"]}]"#;
        let images = parse_images(sparse).unwrap();
        let ids: Vec<&str> = images.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, vec!["sha256:bb", "sha256:cc"]);
        assert!(
            images
                .iter()
                .all(|i| i.parent_id.is_none() && i.tags.is_empty())
        );
        assert_eq!(images[1].size_bytes, 0, "a negative size is no size");

        // Podman 5: the parent as bare hex while the id has its prefix.
        let hex = "ab".repeat(32);
        let podman5 = format!(r#"[{{"Id":"sha256:{hex}","ParentId":"{hex}"}}]"#);
        let images = parse_images(&podman5).unwrap();
        assert_eq!(images[0].parent_id, Some(format!("sha256:{hex}")));
        assert_eq!(images[0].id, format!("sha256:{hex}"));

        assert!(parse_images("null").unwrap().is_empty());
        assert!(parse_images("[]").unwrap().is_empty());
        assert!(parse_images(r#"{"message":"oops"}"#).is_err());
        assert!(parse_images(r#"[{"Id":"sha256:dd","Created":"yesterday"}]"#).is_err());
    }

    /// Image lists recorded from real engines (`fixtures/`), after the same script as the event
    /// streams: a legacy build's image has a parent on Docker 28 (both stores) and on Podman 5,
    /// and every parent names an image of the list in the list's own spelling.
    #[test]
    fn recorded_lists_of_today_s_engines() {
        for (name, body) in [
            (
                "docker 28",
                include_str!("fixtures/images-docker-28.5-overlay2.json"),
            ),
            (
                "docker 28 containerd",
                include_str!("fixtures/images-docker-28.5-containerd.json"),
            ),
            ("podman 5", include_str!("fixtures/images-podman-5.8.json")),
        ] {
            let images = parse_images(body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(images.len() >= 2, "{name}");
            assert!(images.iter().all(|i| i.id.starts_with("sha256:")), "{name}");
            let legacy = images
                .iter()
                .find(|i| i.tags.iter().any(|t| t.ends_with("t/legacy:1")))
                .unwrap_or_else(|| panic!("{name}: no legacy image"));
            let parent = legacy.parent_id.as_deref().unwrap_or_default();
            assert!(parent.starts_with("sha256:"), "{name}: {parent:?}");
        }
    }
}
