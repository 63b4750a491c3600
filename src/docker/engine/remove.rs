//! Removing an image all or nothing as a user sees it ([`DockerEngine::remove_all_or_nothing`]):
//! untag the extra tags one by one while each still names the image, remove it by id, and put
//! the tags back when the removal is refused; and the image prunes of strategy `prune`, one
//! image at a time through that same removal (sparing what the caller says: a build's newest
//! step). Decides nothing about what to remove: the plan does.

use bollard::query_parameters::{RemoveImageOptionsBuilder, TagImageOptionsBuilder};

use super::{DockerEngine, removal};
use crate::docker::{Engine, Error, Image, Pruned, Removal};

impl DockerEngine {
    /// `DELETE /images/{name}` without force and without its parents (`noprune`): how it ended
    /// and, when it did, the ids of the images Docker deleted with it (none for an untag that
    /// left the image other references; the image otherwise).
    ///
    /// Docker would otherwise delete, with a classic build's image, every untagged parent left
    /// without children: among them a step that a build in progress has just taken from the
    /// build cache and is about to use as the parent of its next step ("unknown parent image
    /// ID"). Left in place, those parents are dangling images of their own, which the next
    /// plan sees and judges (a build's recent steps stay, see `policy`).
    async fn delete_image(&self, name: &str, op: String) -> Result<(Removal, Vec<String>), Error> {
        let options = RemoveImageOptionsBuilder::default()
            .force(false)
            .noprune(true)
            .build();
        match self
            .call(op, self.docker.remove_image(name, Some(options), None))
            .await
        {
            Ok(items) => Ok((
                Removal::Removed,
                items.into_iter().filter_map(|i| i.deleted).collect(),
            )),
            Err(e) => removal(Err(e)).map(|r| (r, Vec::new())),
        }
    }

    /// Puts back the tags of `untagged` on image `id`, each only if it names nothing now (a tag
    /// pulled for another image meanwhile stays where it is). Failures are logged: the image then
    /// lost that tag, which the log says loudly.
    async fn restore_tags(&self, id: &str, untagged: &[&String]) {
        for tag in untagged {
            match self.inspect_image(tag).await {
                Ok(None) => {}
                Ok(Some((other, _))) => {
                    log::warn!(
                        "not putting back tag {tag} on {id}: it names {other} now (moved meanwhile)"
                    );
                    continue;
                }
                Err(e) => {
                    log::error!(
                        "cannot check tag {tag} to put it back on {id}: {}; the image lost it",
                        crate::error_chain(&e)
                    );
                    continue;
                }
            }
            let (repo, name) = split_tag(tag);
            let options = TagImageOptionsBuilder::default()
                .repo(repo)
                .tag(name)
                .build();
            match self
                .call(
                    format!("tag {id} as {tag}"),
                    self.docker.tag_image(id, Some(options)),
                )
                .await
            {
                Ok(()) => log::info!("put tag {tag} back on {id}"),
                Err(e) => log::error!(
                    "cannot put tag {tag} back on {id}: {}; the image lost it",
                    crate::error_chain(&e)
                ),
            }
        }
    }

    /// [`Engine::remove_image`]: see the trait for what a caller may rely on.
    pub(super) async fn remove_all_or_nothing(
        &self,
        id: &str,
        planned: &[String],
    ) -> Result<Removal, Error> {
        // What the image is now: a tag added since the plan (a `docker tag` during the pass)
        // means somebody wants it.
        let current = match self.inspect_image(id).await? {
            None => return Ok(Removal::Gone),
            Some((_, current)) => current,
        };
        if let Some(extra) = current.iter().find(|t| !planned.contains(t)) {
            return Ok(Removal::Changed(format!(
                "tagged {extra} since the plan was made"
            )));
        }
        // Docker removes by id only an image with at most one tag, and checks every conflict
        // (containers, children) before it touches that tag: all or nothing. With several tags
        // the others go first, each only while it still names this image, and come back when
        // the final removal is refused.
        //
        // The one window the API leaves open: between the inspect that finds `tag` naming this
        // image and the DELETE of `tag` (Docker has no "untag only if it names this id"). It is
        // one round trip on the socket, from the daemon answering the inspect to it receiving
        // the DELETE: well under a millisecond on a local socket, at most the request timeout
        // when the cleaner stalls in between. A pull that moves `tag` to another image inside
        // it has that image untagged instead: removed when `tag` was its only reference and no
        // container uses it (Docker's answer then names it, and the log says so); otherwise
        // nothing tells the two untags apart, and a refused final removal would put `tag` back
        // on this image. The same width applies to `restore_tags`, between finding a tag free
        // and tagging it: a pull of that tag inside it is moved back onto this image.
        let mut untagged: Vec<&String> = Vec::new();
        let extra_tags = current.len().saturating_sub(1);
        for tag in current.iter().take(extra_tags) {
            let changed = match self.inspect_image(tag).await {
                Ok(Some((now, _))) if now == id => None,
                Ok(Some((now, _))) => Some(format!("tag {tag} names {now} now")),
                Ok(None) => Some(format!("tag {tag} is gone")),
                Err(e) => {
                    self.restore_tags(id, &untagged).await;
                    return Err(e);
                }
            };
            if let Some(why) = changed {
                self.restore_tags(id, &untagged).await;
                return Ok(Removal::Changed(why));
            }
            match self.delete_image(tag, format!("untag {tag}")).await {
                // Its other tags were moved or removed since the plan: `tag` was its last
                // reference, and Docker removed the image with it (nothing used it).
                Ok((Removal::Removed, deleted)) if deleted.iter().any(|d| d == id) => {
                    log::info!(
                        "untagging {tag} removed {id}: its other tags were moved or removed since the plan"
                    );
                    return Ok(Removal::Removed);
                }
                // The window above: `tag` was moved meanwhile, and the image it named went.
                // That tag is not ours to put back on this image.
                Ok((Removal::Removed, deleted)) if !deleted.is_empty() => log::error!(
                    "untag {tag} removed image {} instead of untagging {id}: the tag was moved to it between the check and the untag",
                    deleted.join(", ")
                ),
                Ok((Removal::Removed, _)) => untagged.push(tag),
                // Gone between the check and the untag: nothing of ours to put back.
                Ok((Removal::Gone, _)) => {}
                Ok((refused, _)) => {
                    self.restore_tags(id, &untagged).await;
                    return Ok(refused);
                }
                Err(e) => {
                    self.restore_tags(id, &untagged).await;
                    return Err(e);
                }
            }
        }
        match self.delete_image(id, format!("remove image {id}")).await {
            Ok((Removal::Removed, _)) => Ok(Removal::Removed),
            // Removed by somebody else meanwhile: there is nothing to put tags back on.
            Ok((Removal::Gone, _)) => Ok(Removal::Gone),
            Ok((refused, _)) => {
                self.restore_tags(id, &untagged).await;
                Ok(refused)
            }
            Err(e) => {
                // Unknown outcome (a timeout): put back what is missing if the image is there.
                if let Ok(Some(_)) = self.inspect_image(id).await {
                    self.restore_tags(id, &untagged).await;
                }
                Err(e)
            }
        }
    }

    /// `docker image prune` (dangling only) or `docker image prune -a`, one image at a time:
    /// every image (dangling, unless `all`) that no container uses, whatever its state, and for
    /// which `spare` does not hold, removed as any planned removal. Docker's own prune would
    /// take the newest step of a build in progress; Podman's refuses `dangling=false` (500).
    pub(super) async fn prune_one_by_one(
        &self,
        all: bool,
        spare: &(dyn Fn(&Image) -> bool + Sync),
    ) -> Result<Pruned, Error> {
        let mut pruned = Pruned::default();
        // A removal leaves its parents (see `delete_image`): they are dangling then, and go in
        // the next round, as Docker's prune takes them; until a round removes nothing.
        for _ in 0..MAX_PRUNE_ROUNDS {
            let inventory = self.inventory(false).await?;
            let mut removed = false;
            for image in &inventory.images {
                if !(all || image.is_dangling())
                    || spare(image)
                    || inventory.containers.iter().any(|c| c.image_id == image.id)
                {
                    continue;
                }
                if self.remove_all_or_nothing(&image.id, &image.tags).await? == Removal::Removed {
                    removed = true;
                    pruned.deleted.push(image.id.clone());
                    pruned.reclaimed_bytes =
                        pruned.reclaimed_bytes.saturating_add(image.size_bytes);
                }
            }
            if !removed {
                break;
            }
        }
        Ok(pruned)
    }
}

/// The most rounds of a prune: a classic build's chain of steps is one round a step.
const MAX_PRUNE_ROUNDS: usize = 200;

/// `registry:5000/app:1` → (`registry:5000/app`, `1`); a reference without a tag is `latest`.
fn split_tag(reference: &str) -> (&str, &str) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            &reference[name_start + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tag_handles_registries_with_ports() {
        assert_eq!(split_tag("app:1"), ("app", "1"));
        assert_eq!(
            split_tag("registry:5000/team/app:v2"),
            ("registry:5000/team/app", "v2")
        );
        assert_eq!(
            split_tag("registry:5000/app"),
            ("registry:5000/app", "latest")
        );
    }
}
