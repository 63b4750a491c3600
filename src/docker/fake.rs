//! [`FakeEngine`]: an in-memory [`Engine`] that records every call and answers like Docker (a
//! used image is refused with 409, a missing one is 404), with answers that can be scripted per
//! image or container and a latency per call (tokio time, so paused-time tests stay instant). For
//! the tests of a pass and for simulations of many nodes; it never touches a real engine.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{Stream, StreamExt, stream};

use super::{
    BuildCache, CacheRecord, Container, ContainerState, Engine, Error, Image, Inventory, Pruned,
    Removal, Storage, UseEvent,
};

/// One call made to the fake, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `inventory(finished_times)`.
    Inventory,
    /// `remove_container(id)`.
    RemoveContainer(String),
    /// `remove_image(id, tags)`.
    RemoveImage(String),
    /// `prune_containers()`.
    PruneContainers,
    /// `prune_images(all)`.
    PruneImages {
        /// `-a`.
        all: bool,
    },
    /// `resolve_image(name)`.
    Resolve(String),
    /// `use_events(since, until)`.
    Events,
    /// `build_cache()`.
    BuildCache,
    /// `prune_build_cache(unused_for, keep_bytes, all)`.
    PruneBuildCache {
        /// Records used within this many seconds stay.
        unused_for_secs: u64,
        /// The size to keep.
        keep_bytes: u64,
        /// Shared records too.
        all: bool,
    },
}

/// A scripted answer for the next removal of one id, instead of Docker's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 409 with this message; nothing removed.
    Conflict(String),
    /// 404; nothing removed (the item stays listed, as if it were removed by someone else and a
    /// new list had not been taken yet).
    Gone,
    /// The image changed since the plan; nothing removed.
    Changed(String),
    /// An error status (e.g. 500); nothing removed.
    Fail(u16),
}

#[derive(Debug, Default)]
struct State {
    inventory: Inventory,
    calls: Vec<Call>,
    script: HashMap<String, VecDeque<Answer>>,
    events: Vec<UseEvent>,
    latency: Duration,
    freed_bytes: u64,
    down: bool,
    /// `None`: no build cache endpoint (Podman).
    build_cache: Option<BuildCache>,
    /// Now, unix seconds, for the prune's age filter.
    now_secs: i64,
    /// What `containerd_bytes` answers.
    containerd_bytes: Option<u64>,
    /// Image id → the build-cache record holding its layers (BuildKit on the classic store):
    /// removing the image frees nothing and leaves the record unshared.
    held: HashMap<String, String>,
}

/// The in-memory engine. Cheap to share by reference; every method takes `&self`.
#[derive(Debug, Default)]
pub struct FakeEngine {
    state: Mutex<State>,
    storage: Storage,
}

impl FakeEngine {
    /// An engine holding `images` and `containers`.
    pub fn new(images: Vec<Image>, containers: Vec<Container>) -> Self {
        FakeEngine {
            state: Mutex::new(State {
                inventory: Inventory { images, containers },
                ..State::default()
            }),
            storage: Storage::default(),
        }
    }

    /// The engine keeps its bytes in `storage` (with the containerd image store,
    /// `containerd_bytes` of them in its namespace).
    pub fn with_storage(mut self, storage: Storage, containerd_bytes: Option<u64>) -> Self {
        self.storage = storage;
        self.lock().containerd_bytes = containerd_bytes;
        self
    }

    /// Sets what `containerd_bytes` answers from now on.
    pub fn set_containerd_bytes(&self, bytes: Option<u64>) {
        self.lock().containerd_bytes = bytes;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; the data is plain.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call takes this long (tokio time).
    pub fn with_latency(self, latency: Duration) -> Self {
        self.lock().latency = latency;
        self
    }

    /// The engine has a build cache endpoint holding `records` (an engine without one answers
    /// `None`, as Podman); `now_secs` is the engine's clock, for the prune's age filter.
    pub fn with_build_cache(self, records: Vec<CacheRecord>, now_secs: i64) -> Self {
        {
            let mut s = self.lock();
            s.build_cache = Some(BuildCache {
                records,
                keep_supported: true,
                shared_are_copies: false,
            });
            s.now_secs = now_secs;
        }
        self
    }

    /// The build cache's records shared with an image hold copies of their own (Docker's
    /// containerd image store): a prune with `all` removes them.
    pub fn with_cache_copies(self) -> Self {
        if let Some(cache) = self.lock().build_cache.as_mut() {
            cache.shared_are_copies = true;
        }
        self
    }

    /// The layers of image `id` are held by the build-cache record `record` (BuildKit on the
    /// classic store): the record is shared with the image, removing the image frees nothing
    /// and leaves the record unshared, which a prune then frees ([`FakeEngine::disk_bytes`]).
    pub fn hold_layers(&self, id: &str, record: &str) {
        let mut s = self.lock();
        if let Some(r) = s
            .build_cache
            .as_mut()
            .and_then(|c| c.records.iter_mut().find(|r| r.id == record))
        {
            r.shared = true;
        }
        s.held.insert(id.to_string(), record.to_string());
    }

    /// Bytes the engine takes on its disk: its images (but those whose layers a build-cache
    /// record holds), and its build cache (the records holding an image's layers once).
    pub fn disk_bytes(&self) -> u64 {
        let s = self.lock();
        let images: u64 = s
            .inventory
            .images
            .iter()
            .filter(|i| !s.held.contains_key(&i.id))
            .map(|i| i.size_bytes)
            .sum();
        let cache = s.build_cache.as_ref().map_or(0, |c| {
            c.records
                .iter()
                .filter(|r| !r.shared || c.shared_are_copies || s.held.values().any(|h| *h == r.id))
                .map(|r| r.size_bytes)
                .sum()
        });
        images + cache
    }

    /// Bytes the build cache holds now (0 without an endpoint).
    pub fn cache_bytes(&self) -> u64 {
        self.lock()
            .build_cache
            .as_ref()
            .map_or(0, BuildCache::total_bytes)
    }

    /// The next removal of `id` (image or container) gets `answer` instead of the usual one.
    pub fn script(&self, id: &str, answer: Answer) {
        self.lock()
            .script
            .entry(id.to_string())
            .or_default()
            .push_back(answer);
    }

    /// While down, listing answers 503 (an engine restarting); removals still work (a request in
    /// flight), so a test can take an engine away between two passes.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Adds an event to what `use_events` yields.
    pub fn push_event(&self, event: UseEvent) {
        self.lock().events.push(event);
    }

    /// Adds an image (a pull during a pass).
    pub fn add_image(&self, image: Image) {
        self.lock().inventory.images.push(image);
    }

    /// Adds a container (a `docker run` during a pass).
    pub fn add_container(&self, container: Container) {
        self.lock().inventory.containers.push(container);
    }

    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// What the engine holds now.
    pub fn inventory_now(&self) -> Inventory {
        self.lock().inventory.clone()
    }

    /// Bytes of the images and build-cache records removed so far (their reported sizes).
    pub fn freed_bytes(&self) -> u64 {
        self.lock().freed_bytes
    }

    /// Records `call`, waits the latency, then takes the state.
    async fn enter(&self, call: Call) -> MutexGuard<'_, State> {
        let latency = {
            let mut s = self.lock();
            s.calls.push(call);
            s.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        self.lock()
    }
}

/// The scripted answer for `id`, as the trait reports it.
fn scripted(state: &mut State, id: &str, op: &str) -> Option<Result<Removal, Error>> {
    let answer = state.script.get_mut(id)?.pop_front()?;
    Some(match answer {
        Answer::Conflict(m) => Ok(Removal::Conflict(m)),
        Answer::Gone => Ok(Removal::Gone),
        Answer::Changed(m) => Ok(Removal::Changed(m)),
        Answer::Fail(status) => Err(Error::Status {
            op: format!("{op} {id}"),
            status,
            message: "scripted failure".into(),
        }),
    })
}

impl Engine for FakeEngine {
    fn storage(&self) -> &Storage {
        &self.storage
    }

    async fn containerd_bytes(&self) -> Result<Option<u64>, Error> {
        Ok(self.lock().containerd_bytes)
    }

    async fn inventory(&self, _finished_times: bool) -> Result<Inventory, Error> {
        let s = self.enter(Call::Inventory).await;
        if s.down {
            return Err(Error::Status {
                op: "list images".into(),
                status: 503,
                message: "the engine is down (fake)".into(),
            });
        }
        Ok(s.inventory.clone())
    }

    async fn remove_container(&self, id: &str) -> Result<Removal, Error> {
        let mut s = self.enter(Call::RemoveContainer(id.to_string())).await;
        if let Some(answer) = scripted(&mut s, id, "remove container") {
            return answer;
        }
        let containers = &mut s.inventory.containers;
        match containers.iter().position(|c| c.id == id) {
            None => Ok(Removal::Gone),
            // Docker removes a created container without force; it refuses a running, paused or
            // restarting one.
            Some(i)
                if matches!(
                    containers[i].state,
                    ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
                ) =>
            {
                Ok(Removal::Conflict(format!(
                    "cannot remove {} container {id}",
                    containers[i].state
                )))
            }
            Some(i) => {
                containers.remove(i);
                Ok(Removal::Removed)
            }
        }
    }

    async fn remove_image(&self, id: &str, _tags: &[String]) -> Result<Removal, Error> {
        let mut s = self.enter(Call::RemoveImage(id.to_string())).await;
        if let Some(answer) = scripted(&mut s, id, "remove image") {
            return answer;
        }
        if let Some(c) = s.inventory.containers.iter().find(|c| c.image_id == id) {
            return Ok(Removal::Conflict(format!(
                "image is being used by container {}",
                c.id
            )));
        }
        if s.inventory
            .images
            .iter()
            .any(|i| i.parent_id.as_deref() == Some(id))
        {
            return Ok(Removal::Conflict("image has dependent child images".into()));
        }
        match s.inventory.images.iter().position(|i| i.id == id) {
            None => Ok(Removal::Gone),
            Some(i) => {
                let image = s.inventory.images.remove(i);
                match s.held.remove(&image.id) {
                    // Its layers stay with the record, which is no longer shared.
                    Some(record) => {
                        if let Some(r) = s
                            .build_cache
                            .as_mut()
                            .and_then(|c| c.records.iter_mut().find(|r| r.id == record))
                        {
                            r.shared = false;
                        }
                    }
                    None => s.freed_bytes = s.freed_bytes.saturating_add(image.size_bytes),
                }
                Ok(Removal::Removed)
            }
        }
    }

    async fn prune_containers(&self) -> Result<Pruned, Error> {
        let mut s = self.enter(Call::PruneContainers).await;
        let (gone, kept): (Vec<Container>, Vec<Container>) = s
            .inventory
            .containers
            .drain(..)
            .partition(Container::is_stopped);
        s.inventory.containers = kept;
        Ok(Pruned {
            deleted: gone.into_iter().map(|c| c.id).collect(),
            reclaimed_bytes: 0,
        })
    }

    async fn prune_images(
        &self,
        all: bool,
        spare: &(dyn Fn(&Image) -> bool + Sync),
    ) -> Result<Pruned, Error> {
        let mut s = self.enter(Call::PruneImages { all }).await;
        let used: Vec<String> = s
            .inventory
            .containers
            .iter()
            .map(|c| c.image_id.clone())
            .collect();
        let (gone, kept): (Vec<Image>, Vec<Image>) = s
            .inventory
            .images
            .drain(..)
            .partition(|i| !used.contains(&i.id) && (all || i.is_dangling()) && !spare(i));
        s.inventory.images = kept;
        let reclaimed_bytes = gone.iter().map(|i| i.size_bytes).sum();
        s.freed_bytes = s.freed_bytes.saturating_add(reclaimed_bytes);
        Ok(Pruned {
            deleted: gone.into_iter().map(|i| i.id).collect(),
            reclaimed_bytes,
        })
    }

    async fn build_cache(&self) -> Result<Option<BuildCache>, Error> {
        let s = self.enter(Call::BuildCache).await;
        Ok(s.build_cache.clone())
    }

    async fn prune_build_cache(
        &self,
        unused_for: Duration,
        keep_bytes: u64,
        all: bool,
    ) -> Result<Option<Pruned>, Error> {
        let mut s = self
            .enter(Call::PruneBuildCache {
                unused_for_secs: unused_for.as_secs(),
                keep_bytes,
                all,
            })
            .await;
        let cutoff = s
            .now_secs
            .saturating_sub(i64::try_from(unused_for.as_secs()).unwrap_or(i64::MAX));
        let Some(cache) = s.build_cache.as_mut() else {
            return Ok(None);
        };
        // As BuildKit: the records it may remove, least recently used first, until the cache
        // is at most `keep_bytes`.
        let mut total = cache.total_bytes();
        let mut order: Vec<usize> = (0..cache.records.len())
            .filter(|&i| {
                let r = &cache.records[i];
                (cache.may_go(r) && (!r.shared || all))
                    && (unused_for.is_zero() || r.last_used.is_none_or(|t| t < cutoff))
            })
            .collect();
        order.sort_by_key(|&i| (cache.records[i].last_used, cache.records[i].id.clone()));
        let mut gone = Vec::new();
        for i in order {
            if keep_bytes > 0 && total <= keep_bytes {
                break;
            }
            total = total.saturating_sub(cache.records[i].size_bytes);
            gone.push(i);
        }
        gone.sort_unstable();
        let mut pruned = Pruned::default();
        for i in gone.into_iter().rev() {
            let r = cache.records.remove(i);
            pruned.reclaimed_bytes = pruned.reclaimed_bytes.saturating_add(r.size_bytes);
            pruned.deleted.push(r.id);
        }
        s.freed_bytes = s.freed_bytes.saturating_add(pruned.reclaimed_bytes);
        Ok(Some(pruned))
    }

    async fn resolve_image(&self, name: &str) -> Result<Option<String>, Error> {
        let s = self.enter(Call::Resolve(name.to_string())).await;
        Ok(s.inventory
            .images
            .iter()
            .find(|i| i.id == name || i.tags.iter().any(|t| t == name))
            .map(|i| i.id.clone()))
    }

    fn use_events(
        &self,
        since_nanos: Option<i64>,
        until_nanos: Option<i64>,
    ) -> impl Stream<Item = Result<UseEvent, Error>> + Send + 'static {
        let mut s = self.lock();
        s.calls.push(Call::Events);
        let events: Vec<Result<UseEvent, Error>> = s
            .events
            .iter()
            .filter(|e| since_nanos.is_none_or(|t| e.time_nanos > t))
            .filter(|e| until_nanos.is_none_or(|t| e.time_nanos <= t))
            .cloned()
            .map(Ok)
            .collect();
        let endless = until_nanos.is_none();
        stream::iter(events).chain(
            stream::once(async move {
                if endless {
                    std::future::pending::<()>().await;
                }
            })
            .filter_map(|()| async { None }),
        )
    }
}
