//! Taking stock, the one way `once`, the daemon's passes and `status` do it: bring last use up
//! to date from each engine's events, list what each engine holds, measure the footprints where
//! floors need them, read the build caches where they may be reclaimed or shown (once per
//! engine: the disk-usage endpoint can be slow), reconcile, and plan one order across every
//! engine.

use futures_util::StreamExt;

use crate::config::{Config, EngineConfig, Strategy};
use crate::docker::{self, BuildCache, Engine, Inventory, UseEvent};
use crate::error_chain;
use crate::lastuse::LastUse;
use crate::policy::{self, FloorState, Holding, Plan, Step, next::EngineView};
use crate::usage::{FsUsage, Measurement, Meter};

/// One engine taking part in a pass (or in `status`).
pub struct Member<'a, E: Engine> {
    /// Its configuration.
    pub config: &'a EngineConfig,
    /// The engine.
    pub engine: &'a E,
    /// Its last-use table.
    pub last_use: &'a mut LastUse,
}

/// What one engine holds, as found.
#[derive(Debug, Clone)]
pub struct EngineStock {
    /// Its name.
    pub name: String,
    /// What it holds; `None` when it could not be listed (then it takes no part in the pass).
    pub inventory: Option<Inventory>,
    /// Why it could not be listed.
    pub error: Option<String>,
    /// The filesystems its data lives on (indexes into the filesystems measured).
    pub filesystems: Vec<usize>,
    /// Its data, `du -sx`, when measured.
    pub footprint_bytes: Option<u64>,
    /// Its floor in bytes (0: none).
    pub floor_bytes: u64,
    /// Its build cache, when read (`None`: not read, or the engine has no build cache
    /// endpoint).
    pub build_cache: Option<BuildCache>,
    /// How long its last-use table has covered it, ms (removals for age wait for
    /// `max_unused_age`).
    pub covered_ms: i64,
}

impl EngineStock {
    /// The floor the plan applies to this engine, if any.
    fn floor(&self, critical: bool) -> Option<FloorState> {
        match self.footprint_bytes {
            Some(footprint_bytes) if !critical && self.floor_bytes > 0 => Some(FloorState {
                footprint_bytes,
                floor_bytes: self.floor_bytes,
            }),
            _ => None,
        }
    }
}

/// What every engine holds now, and the plan for them.
#[derive(Debug, Clone)]
pub struct Stock {
    /// Each engine, in the configured order.
    pub engines: Vec<EngineStock>,
    /// What a pass would remove, in order, and what stays.
    pub plan: Plan,
    /// At or above the critical watermark: floors ignored, min age lowered.
    pub critical: bool,
}

impl Stock {
    /// The engines as the plan's course sees them.
    pub fn views(&self) -> Vec<EngineView> {
        self.engines
            .iter()
            .filter(|e| e.inventory.is_some())
            .map(|e| EngineView {
                name: e.name.clone(),
                filesystems: e.filesystems.clone(),
                floor: e.floor(self.critical),
            })
            .collect()
    }

    /// Every image and container id found, each with its engine's name.
    pub fn ids(&self) -> std::collections::HashSet<(String, String)> {
        self.engines
            .iter()
            .flat_map(|e| {
                e.inventory.iter().flat_map(move |inv| {
                    inv.images
                        .iter()
                        .map(|i| i.id.clone())
                        .chain(inv.containers.iter().map(|c| c.id.clone()))
                        .map(move |id| (e.name.clone(), id))
                })
            })
            .collect()
    }

    /// Leaves out of the plan every removal of what is not in `there` (what an earlier stock
    /// found), but the untagged images built before `began_ms` (what a removal left behind):
    /// taking stock again in the middle of a pass must not remove what appeared meanwhile.
    /// Returns how many steps were left out.
    pub fn keep_to(
        &mut self,
        there: &std::collections::HashSet<(String, String)>,
        began_ms: i64,
    ) -> usize {
        let leftover = |engine: &str, id: &str| {
            self.engines
                .iter()
                .filter(|e| e.name == engine)
                .filter_map(|e| e.inventory.as_ref())
                .flat_map(|inv| &inv.images)
                .any(|i| i.id == id && i.is_dangling() && i.created.saturating_mul(1000) < began_ms)
        };
        let before = self.plan.steps.len();
        let keep: Vec<bool> = self
            .plan
            .steps
            .iter()
            .map(|step| match step {
                Step::RemoveImage { engine, id, .. } => {
                    there.contains(&(engine.clone(), id.clone())) || leftover(engine, id)
                }
                Step::RemoveContainer { engine, id, .. } => {
                    there.contains(&(engine.clone(), id.clone()))
                }
                _ => true,
            })
            .collect();
        let mut keep = keep.into_iter();
        self.plan.steps.retain(|_| keep.next().unwrap_or(true));
        before - self.plan.steps.len()
    }

    /// Bytes in use on filesystem `fs` that belong to none of the engines measured on it.
    pub fn outside_bytes(&self, fs: &FsUsage, index: usize) -> u64 {
        let engines: u64 = self
            .engines
            .iter()
            .filter(|e| e.filesystems.contains(&index))
            .filter_map(|e| e.footprint_bytes)
            .sum();
        fs.used_bytes().saturating_sub(engines)
    }
}

/// What the stock is taken for, which decides what is measured and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A pass at or above the high watermark: footprints only where floors need them, the build
    /// caches read (strategy `lru`), the plan frees space.
    Space,
    /// A pass below the high watermark with `max_unused_age` set: nothing walked or read beyond
    /// the inventories, the plan holds the removals for age only.
    Age,
    /// `status`: every footprint and build cache, the plan as under pressure.
    Status,
    /// A pass taking stock again after removals that freed much less than planned: as
    /// [`Purpose::Space`], and an image found now without a tag is what a removal left behind
    /// (a chain of parents), as old as its build, not new.
    Restock,
}

/// The indexes in `filesystems` of the filesystems holding `paths`.
fn filesystems_of(
    meter: &impl Meter,
    paths: &[std::path::PathBuf],
    filesystems: &[FsUsage],
) -> Vec<usize> {
    let mut out = Vec::new();
    for path in paths {
        let Some(dev) = meter.device(path) else {
            continue;
        };
        if let Some(i) = filesystems.iter().position(|f| f.dev == dev)
            && !out.contains(&i)
        {
            out.push(i);
        }
    }
    out
}

/// Lists what every member holds, reconciles its last use, measures footprints where floors
/// need them, reads the build caches where `purpose` needs them, and plans against the
/// shortfall of `usage` at `now_ms` (or, for [`Purpose::Age`], the removals for age). An engine
/// that cannot be listed is reported and left out; when none can be, the first error is
/// returned. A build cache that cannot be read is a warning: the pass goes on without it.
#[allow(clippy::too_many_arguments)]
pub async fn take_stock<E: Engine>(
    members: &mut [Member<'_, E>],
    meter: &impl Meter,
    config: &Config,
    usage: &Measurement,
    filesystems: &[FsUsage],
    now_ms: i64,
    purpose: Purpose,
) -> Result<Stock, docker::Error> {
    let critical = policy::critical(filesystems, config);
    let any_floor = members.iter().any(|m| !m.config.floor.is_none());
    let walk = match purpose {
        Purpose::Status => true,
        Purpose::Space | Purpose::Restock => any_floor && !critical,
        Purpose::Age => false,
    };
    // Strategy prune is the original's: it never touches the build cache.
    let read_cache = config.strategy != Strategy::Prune && purpose != Purpose::Age;
    let mut engines = Vec::with_capacity(members.len());
    let mut first_error = None;
    for m in members.iter_mut() {
        let storage = m.engine.storage();
        let places: Vec<std::path::PathBuf> = m
            .config
            .paths
            .iter()
            .cloned()
            .chain(storage.places().into_iter().map(|p| p.path))
            .collect();
        let fs = filesystems_of(meter, &places, filesystems);
        let total = fs.first().map_or(0, |&i| filesystems[i].total_bytes);
        // Below high no container is removed: their finish times (a request each) are not
        // needed.
        let finished_times = !config.container_min_age.is_zero() && purpose != Purpose::Age;
        let (inventory, error) = match m.engine.inventory(finished_times).await {
            Ok(inventory) => {
                m.last_use
                    .reconcile(&inventory, now_ms, purpose == Purpose::Restock);
                (Some(inventory), None)
            }
            Err(e) => {
                log::warn!(
                    "engine {}: cannot list its images and containers, leaving it out of this pass: {}",
                    m.config.name,
                    error_chain(&e)
                );
                let text = error_chain(&e);
                first_error.get_or_insert(e);
                (None, Some(text))
            }
        };
        let footprint_bytes = if walk {
            match footprint(m, meter).await {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    log::warn!(
                        "engine {}: cannot measure its footprint, its floor does not apply: {e}",
                        m.config.name,
                    );
                    None
                }
            }
        } else {
            None
        };
        let build_cache = if read_cache && inventory.is_some() {
            match m.engine.build_cache().await {
                Ok(Some(cache)) => {
                    let level = match purpose {
                        Purpose::Space | Purpose::Restock => log::Level::Info,
                        _ => log::Level::Debug,
                    };
                    log::log!(
                        level,
                        "engine {}: build cache {} in {} records, {} reclaimable",
                        m.config.name,
                        crate::usage::size(cache.total_bytes()),
                        cache.records.len(),
                        crate::usage::size(cache.reclaimable_bytes())
                    );
                    Some(cache)
                }
                Ok(None) => {
                    log::debug!(
                        "engine {}: no build cache endpoint (Podman): its build cache is skipped",
                        m.config.name
                    );
                    None
                }
                Err(e) => {
                    log::warn!(
                        "engine {}: cannot read its build cache, leaving it alone this pass: {}",
                        m.config.name,
                        error_chain(&e)
                    );
                    None
                }
            }
        } else {
            None
        };
        if !config.max_unused_age.is_zero() && purpose != Purpose::Status {
            let covered = m.last_use.covered_ms(now_ms);
            let needed = i64::try_from(config.max_unused_age.as_millis()).unwrap_or(i64::MAX);
            if covered < needed {
                log::debug!(
                    "engine {}: its last use has been followed for {} s of the {} s max_unused_age needs: no removal for age yet",
                    m.config.name,
                    covered.div_euclid(1000),
                    needed.div_euclid(1000)
                );
            }
        }
        engines.push(EngineStock {
            name: m.config.name.clone(),
            inventory,
            error,
            filesystems: fs,
            footprint_bytes,
            floor_bytes: m.config.floor.bytes(total),
            build_cache,
            covered_ms: m.last_use.covered_ms(now_ms),
        });
    }
    if engines.iter().all(|e| e.inventory.is_none())
        && let Some(e) = first_error
    {
        return Err(e);
    }
    let holdings: Vec<Holding<'_>> = engines
        .iter()
        .zip(members.iter())
        .filter_map(|(stock, m)| {
            Some(Holding {
                name: &stock.name,
                inventory: stock.inventory.as_ref()?,
                last_use: m.last_use,
                floor: stock.floor(critical),
                build_cache: stock.build_cache.as_ref(),
            })
        })
        .collect();
    let need = policy::need(usage, &config.watermarks);
    let plan = match purpose {
        Purpose::Age => policy::plan_aged(&holdings, config, now_ms),
        Purpose::Space | Purpose::Status | Purpose::Restock => {
            policy::plan(&holdings, config, need, now_ms, critical)
        }
    };
    Ok(Stock {
        engines,
        plan,
        critical,
    })
}

/// What `m`'s engine holds: its configured paths walked (`du -sx`), except containerd's roots,
/// plus, with the containerd image store, what containerd counts in the engine's namespace.
async fn footprint<E: Engine>(m: &Member<'_, E>, meter: &impl Meter) -> Result<u64, String> {
    let skip = m.engine.storage().not_walked();
    let walked = meter
        .footprint(&m.config.paths, &skip)
        .await
        .map_err(|e| error_chain(&e))?;
    let counted = m
        .engine
        .containerd_bytes()
        .await
        .map_err(|e| error_chain(&e))?;
    Ok(walked.saturating_add(counted.unwrap_or(0)))
}

/// Below the high watermark, where no stock is taken: lists each member and reconciles its last
/// use, so that whatever a pass decides, the table knows every image from its first sighting on
/// (an image never used since install sorts by it, never as "now") and covers the engine from
/// the first pass. Cheap: two listings an engine, no finish times, nothing measured. An engine
/// that cannot be listed is left for the next pass (a pass under pressure reports it).
pub async fn refresh<E: Engine>(members: &mut [Member<'_, E>], now_ms: i64) {
    for m in members.iter_mut() {
        match m.engine.inventory(false).await {
            Ok(inventory) => m.last_use.reconcile(&inventory, now_ms, false),
            Err(e) => log::debug!(
                "engine {}: cannot list its images and containers: {}",
                m.config.name,
                error_chain(&e)
            ),
        }
    }
}

/// Applies one event to `last_use`, resolving the image it names when the event names it by
/// reference (`app:1`); an image that no longer exists is ignored.
pub async fn apply_event<E: Engine>(engine: &E, last_use: &mut LastUse, event: &UseEvent) {
    let resolved = if event.deleted {
        None
    } else if let Some(id) = event.image_id() {
        Some(id.to_string())
    } else {
        match engine.resolve_image(&event.image).await {
            Ok(id) => id,
            Err(e) => {
                log::debug!(
                    "cannot resolve image {} of a {} event: {}",
                    event.image,
                    event.action,
                    error_chain(&e)
                );
                None
            }
        }
    };
    last_use.apply(event, resolved.as_deref());
}

/// Replays the engine's buffered events from the table's cursor up to `until_nanos` (what
/// happened since the last run), then moves the cursor there. On a first start there is nothing
/// to replay: the cursor starts at `until_nanos`. Returns how many events were applied.
pub async fn replay<E: Engine>(
    engine: &E,
    last_use: &mut LastUse,
    until_nanos: i64,
) -> Result<usize, docker::Error> {
    let mut applied = 0;
    // Docker refuses a `since` after `until` (a clock step back, or a cursor saved by a run a
    // moment ago): then there is nothing to replay.
    if let Some(since) = last_use.cursor_nanos().filter(|since| *since < until_nanos) {
        let events: Vec<_> = engine
            .use_events(Some(since), Some(until_nanos))
            .collect()
            .await;
        for event in events {
            apply_event(engine, last_use, &event?).await;
            applied += 1;
        }
    }
    last_use.advance_cursor(until_nanos);
    Ok(applied)
}
