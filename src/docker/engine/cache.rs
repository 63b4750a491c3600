//! The build cache of an engine: its records from `GET /system/df`
//! ([`DockerEngine::read_build_cache`]) and `POST /build/prune`
//! ([`DockerEngine::prune_cache`]). Podman has neither endpoint. Decides nothing about
//! what to prune: the plan gives the age and the size to keep.
//!
//! The build cache takes two workarounds of bollard 0.21, both through its request modifier on a
//! clone of the client, so that every request still goes through bollard's transport:
//! - `GET /system/df`: bollard models only the API 1.52+ answer (`BuildCacheUsage`), and drops
//!   the `BuildCache` list that Docker 20.10 to 28 send (crates.md G3); the body is read raw
//!   through `ping`, the one call that returns it as text, with the path rewritten.
//! - `POST /build/prune`: bollard knows only the API 1.48+ name of the size to keep,
//!   `reserved-space`; for an older engine (Docker 27 and earlier) the parameter is renamed to
//!   `keep-storage` (API 1.39 to 1.47). Docker reads the name by the request's API version, and
//!   bollard 0.21 sends unversioned paths, which an engine answers at its newest version: the
//!   negotiated version is that one (or bollard's newest, 1.53, above it).

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::PruneBuildOptionsBuilder;
use serde::Deserialize;

use super::{DockerEngine, rewrite_uri, rfc3339_secs};
use crate::docker::{BuildCache, CacheRecord, Error, Pruned};

/// The build cache's records, whatever the engine's API version: `/system/df` computes only
/// them from API 1.42 on (older engines ignore `type` and compute everything), and lists them
/// from 1.52 on only when verbose.
const DF_BUILD_CACHE: &str = "/system/df?type=build-cache&verbose=1";

impl DockerEngine {
    /// [`crate::docker::Engine::build_cache`]: see the trait.
    pub(super) async fn read_build_cache(&self) -> Result<Option<BuildCache>, Error> {
        if self.podman {
            return Ok(None);
        }
        let body = match self.system_df().await {
            Ok(body) => body,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        parse_build_cache(
            &body,
            self.api_version() >= (1, 39),
            self.storage.is_containerd(),
        )
        .map(Some)
        .map_err(|err| Error::Request {
            op: "read the build cache (GET /system/df)".into(),
            source: BollardError::JsonSerdeError { err },
        })
    }

    /// [`crate::docker::Engine::prune_build_cache`]: see the trait.
    pub(super) async fn prune_cache(
        &self,
        unused_for: Duration,
        keep_bytes: u64,
        all: bool,
    ) -> Result<Option<Pruned>, Error> {
        if self.podman {
            return Ok(None);
        }
        let until = HashMap::from([(
            "until".to_string(),
            vec![format!("{}s", unused_for.as_secs())],
        )]);
        let mut options = PruneBuildOptionsBuilder::default().all(all);
        if !unused_for.is_zero() {
            options = options.filters(&until);
        }
        let version = self.api_version();
        let mut docker = self.docker.clone();
        if keep_bytes > 0 && version >= (1, 39) {
            options = options.reserved_space(i64::try_from(keep_bytes).unwrap_or(i64::MAX));
            if version < (1, 48) {
                docker = docker.with_request_modifier(|req| {
                    rewrite_uri(req, |uri| {
                        uri.contains("reserved-space=")
                            .then(|| uri.replace("reserved-space=", "keep-storage="))
                    })
                });
            }
        } else if keep_bytes > 0 {
            log::debug!(
                "API {}.{} has no keep-storage: the build-cache prune removes every record it may",
                version.0,
                version.1
            );
        }
        let op = format!(
            "prune the build cache (unused for {} s, keeping {keep_bytes} bytes{})",
            unused_for.as_secs(),
            if all { ", shared records too" } else { "" }
        );
        match self
            .call(op, docker.prune_build(Some(options.build())))
            .await
        {
            Ok(r) => Ok(Some(Pruned {
                deleted: r.caches_deleted.unwrap_or_default(),
                reclaimed_bytes: r
                    .space_reclaimed
                    .and_then(|b| u64::try_from(b).ok())
                    .unwrap_or(0),
            })),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The body of `GET` [`DF_BUILD_CACHE`] as text.
    async fn system_df(&self) -> Result<String, Error> {
        self.get_text("read the build cache (GET /system/df)", DF_BUILD_CACHE)
            .await
    }
}

/// A build-cache record as `/system/df` lists it (both shapes: the `BuildCache` list before API
/// 1.52, `BuildCacheUsage.Items` from 1.52 on).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct DfRecord {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Type")]
    kind: String,
    in_use: bool,
    shared: bool,
    size: i64,
    created_at: Option<String>,
    last_used_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DfUsage {
    #[serde(rename = "Items")]
    items: Option<Vec<DfRecord>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DfAnswer {
    #[serde(rename = "BuildCache")]
    build_cache: Option<Vec<DfRecord>>,
    #[serde(rename = "BuildCacheUsage")]
    build_cache_usage: Option<DfUsage>,
}

/// The build cache in a `/system/df` answer.
fn parse_build_cache(
    body: &str,
    keep_supported: bool,
    shared_are_copies: bool,
) -> Result<BuildCache, serde_json::Error> {
    let answer: DfAnswer = serde_json::from_str(body)?;
    let records = answer
        .build_cache
        .or(answer.build_cache_usage.and_then(|u| u.items))
        .unwrap_or_default()
        .into_iter()
        .map(|r| CacheRecord {
            last_used: r
                .last_used_at
                .as_deref()
                .and_then(rfc3339_secs)
                .or(r.created_at.as_deref().and_then(rfc3339_secs)),
            id: r.id,
            kind: r.kind,
            in_use: r.in_use,
            shared: r.shared,
            size_bytes: u64::try_from(r.size).unwrap_or(0),
        })
        .collect();
    Ok(BuildCache {
        records,
        keep_supported,
        shared_are_copies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_cache_is_read_from_either_answer_shape() {
        // Docker 20.10 to 28: a `BuildCache` list beside the rest.
        let old = r#"{"LayersSize": 1, "Images": [], "BuildCache": [
            {"ID": "a", "Parent": "", "Type": "source.local", "InUse": false, "Shared": false,
             "Size": 134, "CreatedAt": "2026-12-01T23:38:08Z", "LastUsedAt": "2026-12-01T23:38:09Z"},
            {"ID": "b", "Type": "regular", "InUse": false, "Shared": true, "Size": 3000000,
             "CreatedAt": "2026-12-01T23:38:07Z", "LastUsedAt": null}
        ], "BuilderSize": 3000134}"#;
        let cache = parse_build_cache(old, true, false).unwrap();
        assert_eq!(cache.records.len(), 2);
        assert_eq!(cache.records[0].last_used, Some(1_796_168_289));
        assert_eq!(
            cache.records[1].last_used,
            Some(1_796_168_287),
            "never used since: created"
        );
        assert_eq!(cache.total_bytes(), 134, "shared records are the image's");
        assert_eq!(cache.reclaimable_bytes(), 134);
        // The containerd image store: the shared record holds a copy of its own.
        let copies = parse_build_cache(old, true, true).unwrap();
        assert_eq!(copies.total_bytes(), 3_000_134);
        assert_eq!(copies.reclaimable_bytes(), 3_000_134);

        // API 1.52+: `BuildCacheUsage` with its items (verbose).
        let new = r#"{"BuildCacheUsage": {"ActiveCount": 1, "TotalCount": 2, "Reclaimable": 5,
            "TotalSize": 12, "Items": [
            {"ID": "c", "Type": "exec.cachemount", "InUse": true, "Shared": false, "Size": 7},
            {"ID": "d", "Type": "regular", "InUse": false, "Shared": false, "Size": 5}
        ]}}"#;
        let cache = parse_build_cache(new, true, false).unwrap();
        assert_eq!(cache.total_bytes(), 12);
        assert_eq!(cache.reclaimable_bytes(), 5, "a record in use stays");

        // No build cache at all (BuildKit never ran, or `null`).
        let none = parse_build_cache(r#"{"BuildCache": null}"#, false, false).unwrap();
        assert!(none.records.is_empty());
        assert!(parse_build_cache("OK", true, false).is_err());
    }
}
