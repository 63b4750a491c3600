//! Measuring where the engines' bytes are: [`meter_for`] watches the configured paths and every
//! place the connected engines named (containerd's roots for Docker's containerd image store),
//! never walking what containerd counts itself; [`Counting`] adds, in absolute mode, the bytes
//! each engine keeps in containerd (its namespace's content and snapshots, which no walk can
//! tell from the kubelet's namespace on a shared containerd).

use std::path::PathBuf;

use crate::config::{Config, EngineConfig};
use crate::docker::{Engine, Storage};
use crate::error_chain;
use crate::usage::{self, FsUsage, Measurement, Meter, PathMeter};

/// The meter of `config`'s paths and of the places of `storages` (the connected engines'):
/// their filesystems are watched (relative mode), and containerd's roots are never walked
/// (absolute mode and footprints: containerd counts them per namespace).
pub fn meter_for<'s>(
    config: &Config,
    storages: impl IntoIterator<Item = &'s Storage>,
) -> PathMeter {
    let mut also = Vec::new();
    let mut skip = Vec::new();
    for storage in storages {
        also.extend(storage.places().into_iter().map(|p| p.path));
        skip.extend(storage.not_walked());
    }
    PathMeter::new(config).with_places(also, skip)
}

/// What an operator must hear about where engine `config` keeps its bytes, each a loud
/// warning at start: its root outside the paths configured for it (they do not hold its
/// bytes), the places of the containerd image store the configured paths do not hold (they are
/// measured too, and named), and a containerd that could not be asked where its bytes are.
pub fn storage_warnings(config: &EngineConfig, storage: &Storage) -> Vec<String> {
    let mut out = Vec::new();
    let paths = config
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(root) = &storage.root
        && !Storage::covered_by(root, &config.paths)
    {
        out.push(format!(
            "engine {}: its root is {} (DockerRootDir), which its paths ({paths}) do not hold: the paths measured are not where it keeps its bytes; set them to {} (path_to_check, or paths in its [[engine]] table)",
            config.name,
            root.display(),
            root.display()
        ));
    }
    // Docker's containerd image store, or the kubelet's containerd behind a CRI engine.
    let whose = match &storage.cri {
        Some(cri) => format!(
            "its runtime ({}) keeps its images in containerd",
            cri.runtime
        ),
        None => "it keeps its images in containerd (the containerd image store)".to_string(),
    };
    if let Some(c) = &storage.containerd {
        // Those its paths hold are counted the same way, per namespace: nothing to say.
        let extra: Vec<String> = storage
            .places()
            .into_iter()
            .filter(|p| !p.walked && !Storage::covered_by(&p.path, &config.paths))
            .map(|p| p.path.display().to_string())
            .collect();
        match &c.error {
            Some(why) => out.push(format!(
                "engine {}: {whose}, namespace {}, but containerd at {} cannot say where: {why}; the image bytes are not measured unless its paths hold containerd's root (where other namespaces are counted too)",
                config.name,
                c.namespace,
                c.address.display()
            )),
            None if !extra.is_empty() => out.push(format!(
                "engine {}: {whose}, namespace {}, not under {paths}: also measuring {} (their bytes counted by containerd for namespace {} only)",
                config.name,
                c.namespace,
                extra.join(" and "),
                c.namespace
            )),
            None => {}
        }
    }
    // A CRI runtime's own filesystems (CRI-O's store), walked: its footprint needs its paths.
    if storage.cri.is_some() {
        for place in storage.places().into_iter().filter(|p| p.walked) {
            if !Storage::covered_by(&place.path, &config.paths) {
                out.push(format!(
                    "engine {}: {} is at {}, which its paths ({paths}) do not hold: its filesystem is watched, but its footprint (floors, absolute mode) counts only its paths; add it to them",
                    config.name,
                    place.holds,
                    place.path.display()
                ));
            }
        }
    }
    out
}

/// A meter that, in absolute mode, adds to what `inner` walked the bytes each of `engines`
/// keeps in containerd. Relative measurements, filesystems and footprints are `inner`'s.
pub struct Counting<'a, M, E> {
    inner: &'a M,
    engines: Vec<&'a E>,
}

impl<'a, M: Meter, E: Engine> Counting<'a, M, E> {
    /// `inner`, counting the containerd bytes of those of `engines` on the containerd store.
    pub fn new(inner: &'a M, engines: impl IntoIterator<Item = &'a E>) -> Self {
        Counting {
            inner,
            engines: engines
                .into_iter()
                .filter(|e| e.storage().is_containerd())
                .collect(),
        }
    }
}

impl<M: Meter, E: Engine> Meter for Counting<'_, M, E> {
    async fn measure(&self) -> Result<Measurement, usage::Error> {
        let mut m = self.inner.measure().await?;
        if let Measurement::Absolute(tree) = &mut m {
            for engine in &self.engines {
                match engine.containerd_bytes().await {
                    Ok(Some(bytes)) => tree.bytes = tree.bytes.saturating_add(bytes),
                    Ok(None) => {}
                    // Counting less than there is could keep a full disk from being cleaned.
                    Err(e) => {
                        return Err(usage::Error::Counted {
                            what: "the bytes an engine keeps in containerd".into(),
                            message: error_chain(&e),
                        });
                    }
                }
            }
        }
        Ok(m)
    }

    async fn filesystems(&self) -> Result<Vec<FsUsage>, usage::Error> {
        self.inner.filesystems().await
    }

    async fn footprint(&self, paths: &[PathBuf], skip: &[PathBuf]) -> Result<u64, usage::Error> {
        self.inner.footprint(paths, skip).await
    }

    fn device(&self, path: &std::path::Path) -> Option<u64> {
        self.inner.device(path)
    }
}
