//! Last use from a CRI runtime ([`follow`]): its containers' creates, starts and stops, as
//! Docker's `create`, `start` and `die` events. Three sources, the best first:
//! - the CRI's `GetContainerEvents` (containerd 1.7 and later, CRI-O with evented PLEG);
//! - containerd's own event service for namespace `k8s.io` (containerd 1.6 has no
//!   `GetContainerEvents`);
//! - a poll of the containers, every [`POLL_ALONE`] without an event source (every
//!   [`POLL_BESIDE`] beside one, in case it missed something). The kubelet keeps an exited
//!   container listed until its own GC, so a poll sees a container that lived one poll
//!   interval, and usually much shorter ones.
//!
//! Every stream starts with a poll from `since` (what happened while nobody listened, as far as
//! the containers still listed tell it), so a replay (`until` set) is that poll alone. Each
//! container's create, start and stop is sent once, whichever source saw it first: a start
//! counted twice would weigh twice in the frequency history. Keeps no state beyond the stream.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use containerd_client::tonic::Streaming;
use futures_util::Stream;
use k8s_cri::v1 as cri;
use k8s_cri::v1::{ContainerEventResponse, ContainerEventType};

use super::CriEngine;
use super::list::Status;
use crate::docker::containerd::{TaskEvent, TaskEvents};
use crate::docker::{Error, UseEvent};

/// How often the containers are polled when no event source answers.
pub(crate) const POLL_ALONE: Duration = Duration::from_secs(10);
/// How often they are polled beside an event source.
pub(crate) const POLL_BESIDE: Duration = Duration::from_secs(60);

/// The use events of `engine` from `since_nanos`, ending at `until_nanos` (a replay: one poll)
/// or endless until an event source breaks (then an error ends it, and the caller reconnects).
pub(super) fn follow(
    engine: CriEngine,
    since_nanos: Option<i64>,
    until_nanos: Option<i64>,
) -> impl Stream<Item = Result<UseEvent, Error>> + Send + 'static {
    let follower = Follower {
        engine,
        since: since_nanos.unwrap_or(0),
        until: until_nanos,
        started: false,
        done: false,
        source: None,
        poll: None,
        queue: VecDeque::new(),
        sent: HashSet::new(),
    };
    futures_util::stream::unfold(follower, |mut f| async move {
        let item = f.next().await?;
        Some((item, f))
    })
}

/// Where events come from, beside the poll.
enum Source {
    Cri(Streaming<ContainerEventResponse>),
    Containerd(TaskEvents),
}

/// One container's use, before it becomes a [`UseEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub container_id: String,
    pub action: &'static str,
    pub time_nanos: i64,
    /// The image: an id, or a reference to resolve.
    pub image: String,
}

impl Seen {
    fn event(self) -> UseEvent {
        UseEvent {
            time_nanos: self.time_nanos,
            image: self.image,
            action: self.action.to_string(),
            deleted: false,
        }
    }
}

struct Follower {
    engine: CriEngine,
    since: i64,
    until: Option<i64>,
    started: bool,
    done: bool,
    source: Option<Source>,
    poll: Option<tokio::time::Interval>,
    queue: VecDeque<UseEvent>,
    /// (container, action) already sent or found before `since`, for the containers listed.
    sent: HashSet<(String, &'static str)>,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<UseEvent, Error>> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            if !self.started {
                self.started = true;
                if self.until.is_none() {
                    self.subscribe().await;
                }
                if let Err(e) = self.poll().await {
                    self.done = true;
                    return Some(Err(e));
                }
                if self.until.is_some() {
                    self.done = true;
                }
                continue;
            }
            if let Err(e) = self.wait().await {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    /// Opens the best event source there is, and sets the poll's pace accordingly.
    async fn subscribe(&mut self) {
        let endpoint = self.engine.endpoint.clone();
        let request = cri::GetEventsRequest {};
        let mut client = self.engine.runtime_client();
        match self
            .engine
            .call(
                "follow the runtime's container events",
                client.get_container_events(request),
            )
            .await
        {
            Ok(stream) => self.source = Some(Source::Cri(stream)),
            Err(e) => {
                log::debug!("{}", crate::error_chain(&e));
                if let Some(c) = &self.engine.containerd {
                    match c.task_events(super::K8S_NAMESPACE).await {
                        Ok(events) => {
                            log::info!(
                                "CRI runtime at {endpoint}: no GetContainerEvents ({}), following containerd's events of namespace {}",
                                self.engine.runtime(),
                                super::K8S_NAMESPACE
                            );
                            self.source = Some(Source::Containerd(events));
                        }
                        Err(e) => log::warn!(
                            "CRI runtime at {endpoint}: cannot follow containerd's events: {}",
                            crate::error_chain(&e)
                        ),
                    }
                }
            }
        }
        let every = if self.source.is_some() {
            POLL_BESIDE
        } else {
            log::info!(
                "CRI runtime at {endpoint}: no container events; polling its containers every {} s",
                POLL_ALONE.as_secs()
            );
            POLL_ALONE
        };
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.poll = Some(poll);
    }

    /// Waits for the next event or poll, and queues what it tells.
    async fn wait(&mut self) -> Result<(), Error> {
        let Some(poll) = self.poll.as_mut() else {
            // Not subscribed (a replay): nothing more to wait for.
            self.done = true;
            return Ok(());
        };
        let seen = tokio::select! {
            seen = next_from(&mut self.source, &self.engine), if self.source.is_some() => seen?,
            _ = poll.tick() => {
                self.poll().await?;
                return Ok(());
            }
        };
        if let Some(seen) = seen
            && self.sent.insert((seen.container_id.clone(), seen.action))
        {
            self.queue.push_back(seen.event());
        }
        Ok(())
    }

    /// Lists the containers and queues, oldest first, each create, start and stop not sent yet
    /// that happened after `since` (and not after `until`).
    async fn poll(&mut self) -> Result<(), Error> {
        let containers = self.engine.list_containers().await?;
        let present: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        self.sent.retain(|(id, _)| present.contains(id.as_str()));
        let mut found = Vec::new();
        for c in &containers {
            let state = c.state;
            let started = state == cri::ContainerState::ContainerRunning as i32;
            let exited = state == cri::ContainerState::ContainerExited as i32;
            let wants = |action| !self.sent.contains(&(c.id.clone(), action));
            let image = [c.image_id.as_str(), c.image_ref.as_str()]
                .into_iter()
                .chain(c.image.as_ref().map(|i| i.image.as_str()))
                .find(|i| !i.is_empty())
                .unwrap_or_default()
                .to_string();
            if wants("create") {
                found.push(Seen {
                    container_id: c.id.clone(),
                    action: "create",
                    time_nanos: c.created_at,
                    image: image.clone(),
                });
            }
            if (started || exited) && (wants("start") || (exited && wants("die"))) {
                // Removed since the list: nothing more to learn of it.
                let Some(status) = self.engine.container_status(&c.id).await? else {
                    continue;
                };
                found.extend(poll_times(&c.id, &image, &status));
            }
        }
        for seen in admit(&mut self.sent, found, self.since, self.until) {
            self.queue.push_back(seen.event());
        }
        Ok(())
    }
}

/// Of `found`, what `sent` does not hold yet and falls in the range (`since`, `until`], oldest
/// first; every one of `found` counts as sent from now on (what falls before `since` was
/// applied by an earlier run: a start counted twice would weigh twice).
pub(crate) fn admit(
    sent: &mut HashSet<(String, &'static str)>,
    mut found: Vec<Seen>,
    since: i64,
    until: Option<i64>,
) -> Vec<Seen> {
    found.sort_by_key(|s| s.time_nanos);
    found
        .into_iter()
        .filter(|s| !s.image.is_empty())
        .filter(|s| sent.insert((s.container_id.clone(), s.action)))
        .filter(|s| s.time_nanos > since && until.is_none_or(|u| s.time_nanos <= u))
        .collect()
}

/// The start and stop a container's status tells of.
fn poll_times(id: &str, image: &str, status: &Status) -> Vec<Seen> {
    let image = if status.image.is_empty() {
        image
    } else {
        status.image.as_str()
    };
    [
        ("start", status.times.started),
        (
            "die",
            if status.exited {
                status.times.finished
            } else {
                0
            },
        ),
    ]
    .into_iter()
    .filter(|(_, t)| *t > 0)
    .map(|(action, time_nanos)| Seen {
        container_id: id.to_string(),
        action,
        time_nanos,
        image: image.to_string(),
    })
    .collect()
}

/// The next use from the event source: `None` for an event that tells of none (a sandbox's, a
/// deletion); an error when the source broke or ended.
async fn next_from(source: &mut Option<Source>, engine: &CriEngine) -> Result<Option<Seen>, Error> {
    let broke = |message: String| Error::Cri {
        op: format!("follow the container events at {}", engine.endpoint),
        message,
        not_found: false,
    };
    match source {
        None => Ok(None),
        Some(Source::Cri(stream)) => match stream.message().await {
            Ok(Some(e)) => Ok(cri_event(e)),
            Ok(None) => Err(broke("the runtime ended the stream".into())),
            Err(s) => Err(broke(format!("{:?}: {}", s.code(), s.message()))),
        },
        Some(Source::Containerd(events)) => match events.next().await? {
            None => Err(broke("containerd ended the stream".into())),
            Some(e) => containerd_event(e, engine).await,
        },
    }
}

/// A CRI container event as a use: its container's image from the statuses it carries.
pub(crate) fn cri_event(e: ContainerEventResponse) -> Option<Seen> {
    let action = match e.container_event_type() {
        ContainerEventType::ContainerCreatedEvent => "create",
        ContainerEventType::ContainerStartedEvent => "start",
        ContainerEventType::ContainerStoppedEvent => "die",
        // A removal is not a use (the kubelet's GC, or ours).
        ContainerEventType::ContainerDeletedEvent => return None,
    };
    let status = e
        .containers_statuses
        .into_iter()
        .find(|s| s.id == e.container_id)
        .map(Status::from)?;
    if status.image.is_empty() {
        return None;
    }
    Some(Seen {
        container_id: e.container_id,
        action,
        time_nanos: e.created_at,
        image: status.image,
    })
}

/// containerd's task event as a use: a start's or stop's image asked of the runtime (a pod
/// sandbox's container is no CRI container: its event tells of nothing).
async fn containerd_event(e: TaskEvent, engine: &CriEngine) -> Result<Option<Seen>, Error> {
    let image = match e.image {
        Some(image) => image,
        None => match engine.container_status(&e.container_id).await? {
            Some(status) if !status.image.is_empty() => status.image,
            _ => return Ok(None),
        },
    };
    Ok(Some(Seen {
        container_id: e.container_id,
        action: e.action,
        time_nanos: e.time_nanos,
        image,
    }))
}

#[cfg(test)]
mod tests;
