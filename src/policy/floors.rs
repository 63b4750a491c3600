//! Stage 4 of a plan: floors. Pressure from outside an engine (another engine's images, the
//! kubelet's store, any file) never takes it below its floor: walking the order, an engine's
//! tagged images go while its footprint, less the sizes already planned, stays at or above the
//! floor; from the first that would take it below, that engine's remaining (more recently used)
//! images stay. Dangling images and the build cache are not protected: they are nobody's image
//! cache. Removals for age are not pressure: a floor does not keep them.

use std::collections::HashMap;

use super::{FloorState, Holding, Kept, Reason, Step};

/// Splits `steps` (in order) into those that go and the images the floors keep.
pub(super) fn apply(steps: Vec<Step>, holdings: &[Holding<'_>]) -> (Vec<Step>, Vec<Kept>) {
    let mut left: HashMap<&str, (FloorState, u64, bool)> = holdings
        .iter()
        .filter_map(|h| h.floor.map(|f| (h.name, (f, f.footprint_bytes, false))))
        .collect();
    let mut go = Vec::new();
    let mut kept = Vec::new();
    for step in steps {
        if let Step::PruneBuildCache {
            engine, size_bytes, ..
        } = &step
            && let Some((_, remaining, _)) = left.get_mut(engine.as_str())
        {
            // Not protected, but it frees the engine's footprint all the same.
            *remaining = remaining.saturating_sub(*size_bytes);
        }
        let Step::RemoveImage {
            engine,
            id,
            tags,
            size_bytes,
            aged,
            ..
        } = &step
        else {
            go.push(step);
            continue;
        };
        let Some((floor, remaining, reached)) = left.get_mut(engine.as_str()) else {
            go.push(step);
            continue;
        };
        if tags.is_empty() || *aged {
            // Not protected, but it frees the engine's footprint all the same.
            *remaining = remaining.saturating_sub(*size_bytes);
            go.push(step);
            continue;
        }
        if *reached || remaining.saturating_sub(*size_bytes) < floor.floor_bytes {
            *reached = true;
            kept.push(Kept {
                engine: engine.clone(),
                id: id.clone(),
                names: tags.clone(),
                reason: Reason::Floor {
                    footprint_bytes: floor.footprint_bytes,
                    floor_bytes: floor.floor_bytes,
                },
            });
            continue;
        }
        *remaining = remaining.saturating_sub(*size_bytes);
        go.push(step);
    }
    (go, kept)
}
