//! Removing an image through the CRI without removing what must stay
//! ([`CriEngine::remove_guarded`]). The runtimes remove an image in use, or pinned, when asked
//! (containerd 1.6 and 2.1 both do: the kubelet checks before it asks), so this asks the
//! runtime again just before the removal: the image is still the one planned (no tag added
//! since), not pinned, not the sandbox image, and no container or pod sandbox of any state uses
//! it. Then `RemoveImage` by id, which removes every reference at once: all or nothing.
//!
//! The window the CRI leaves open is one round trip on the local socket, between the container
//! list and the removal. A container created inside it from this image fails to start and the
//! kubelet pulls the image again (the node is cordoned while a pass removes, so no new pod
//! lands; the kubelet's own image GC has the same window, kubernetes #123631).

use std::collections::HashSet;

use k8s_cri::v1 as cri;

use super::CriEngine;
use super::list::Listing;
use crate::docker::{Engine as _, Error, Image, Pruned, Removal};

impl CriEngine {
    /// [`crate::docker::Engine::remove_image`]: see the module docs.
    pub(super) async fn remove_guarded(
        &self,
        id: &str,
        planned: &[String],
    ) -> Result<Removal, Error> {
        let Some(image) = self.image_status(id).await? else {
            return Ok(Removal::Gone);
        };
        let current = if image.repo_tags.is_empty() {
            &image.repo_digests
        } else {
            &image.repo_tags
        };
        if let Some(extra) = current.iter().find(|t| !planned.contains(t)) {
            return Ok(Removal::Changed(format!(
                "tagged {extra} since the plan was made"
            )));
        }
        if let Some(why) = self.held(&image).await? {
            return Ok(Removal::Conflict(why));
        }
        let request = cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: id.to_string(),
                ..Default::default()
            }),
        };
        match self
            .call(
                format!("remove image {id}"),
                self.image_client().remove_image(request),
            )
            .await
        {
            Ok(_) => Ok(Removal::Removed),
            Err(Error::Cri {
                not_found: true, ..
            }) => Ok(Removal::Gone),
            Err(e) => Err(e),
        }
    }

    /// Why `image` must stay now, if it must: pinned, the sandbox image, or used by a container
    /// or a pod sandbox, whatever its state.
    async fn held(&self, image: &cri::Image) -> Result<Option<String>, Error> {
        let containers = self.list_containers().await?;
        let sandboxes = self.list_sandboxes().await?;
        // A sandbox made since the last list: ask which image it runs.
        self.fill_sandbox_images(&sandboxes).await?;
        let pinned_names = self.pinned_names().await;
        let inventory = {
            let cache = self.cache();
            Listing {
                images: std::slice::from_ref(image),
                containers: &containers,
                sandboxes: &sandboxes,
                details: &Default::default(),
                sandbox_images: &cache.sandboxes,
                times: &Default::default(),
                sandbox_image: self.sandbox_image.as_deref(),
                pinned_names: &pinned_names,
            }
            .inventory()
        };
        if let Some(why) = inventory.images.first().and_then(|i| i.pinned.as_ref()) {
            return Ok(Some(format!("{why}: never removed")));
        }
        Ok(inventory
            .containers
            .iter()
            .find(|c| c.image_id == image.id)
            .map(|c| format!("in use by {} (the kubelet's, whatever its state)", c.name)))
    }

    /// `docker image prune` (`all`: `-a`) through the CRI: every image no container or sandbox
    /// uses and nothing pins (with `all = false`, only those without any reference), each
    /// removed as a planned removal is; the images for which `spare` holds stay.
    pub(super) async fn prune_one_by_one(
        &self,
        all: bool,
        spare: &(dyn Fn(&Image) -> bool + Sync),
    ) -> Result<Pruned, Error> {
        let inventory = self.inventory(false).await?;
        let used: HashSet<&str> = inventory
            .containers
            .iter()
            .map(|c| c.image_id.as_str())
            .collect();
        let mut pruned = Pruned::default();
        for image in &inventory.images {
            if used.contains(image.id.as_str())
                || image.pinned.is_some()
                || spare(image)
                || (!all && !image.is_dangling())
            {
                continue;
            }
            if self.remove_guarded(&image.id, &image.tags).await? == Removal::Removed {
                pruned.deleted.push(image.id.clone());
                pruned.reclaimed_bytes = pruned.reclaimed_bytes.saturating_add(image.size_bytes);
            }
        }
        Ok(pruned)
    }
}
