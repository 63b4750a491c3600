//! Counting the bytes where they are (issue 19), on every Docker of the matrix: BuildKit images
//! whose layers the build cache holds, the containerd image store's bytes (in containerd's
//! root, not Docker's), and a containerd shared with the kubelet's namespace. Each test says
//! on stderr what the pass planned and what it freed.

use std::time::Duration;

use serde_json::Value;

use crate::util::bed::DockerKind;
use crate::util::cleaner::Cleaner;
use crate::util::cli::EngineCli;
use crate::util::dockerd::PrivateDockerd;
use crate::util::host;
use crate::util::require::{Service, not_applicable};

const HOUR: i64 = 3600;
const MIB: u64 = 1 << 20;

/// `du -csxB1` of `dirs`: their real bytes.
fn du(dirs: &[std::path::PathBuf]) -> u64 {
    let mut args = vec!["-csxB1".to_string()];
    args.extend(dirs.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = host::run_ok("du", &args, Duration::from_secs(120));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|total| total.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("du prints a total")
}

/// `status --json` of `cleaner`.
fn status(cleaner: &Cleaner) -> Value {
    let (out, err) = cleaner.run_ok(&["status", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}\n{out}\n{err}"))
}

/// "freed N MiB" of a pass's summary, in bytes (0 when absent).
fn freed(summary: &str) -> u64 {
    summary
        .split("freed ")
        .nth(1)
        .and_then(|rest| {
            let mut words = rest.split_whitespace();
            let n: f64 = words.next()?.parse().ok()?;
            let unit = match words.next()?.trim_end_matches(',') {
                "B" => 1.0,
                "KiB" => 1024.0,
                "MiB" => 1024.0 * 1024.0,
                "GiB" => 1024.0 * 1024.0 * 1024.0,
                _ => return None,
            };
            Some((n * unit) as u64)
        })
        .unwrap_or(0)
}

/// Three BuildKit images whose layers only the build cache shares (the build's own cache
/// records pruned, as `docker builder prune -f` does), and a shortfall of about half an image.
/// With the classic store a removed image frees nothing while its cache record holds its
/// layers: the pass must take stock again and prune the record rather than go on removing
/// images (the issue measured all three removed, 36 KiB freed). With the containerd image
/// store the records hold copies of their own: pruning them frees the bytes before any image.
#[test]
fn buildkit_images_free_their_bytes_through_the_build_cache() {
    let Some(d) = PrivateDockerd::start("bk-cache", 512, None) else {
        return;
    };
    let ids: Vec<String> = (0..3)
        .map(|i| d.buildkit_image(&format!("bk-{i}:1"), 1, d.payload_mib(40)))
        .collect();
    let containerd = d.kind() == DockerKind::BedContainerd;
    if !containerd {
        // Only the records shared with the images are left: the layers' one copy.
        d.docker(&["builder", "prune", "--force"]);
    }
    // With the containerd store they are left for the pass: BuildKit there reports the step
    // records sometimes shared with the image, sometimes not (both seen on Docker 28.5), and a
    // prune without `all` may take them or not; either way they are copies of their own.
    let shared = d
        .build_cache()
        .iter()
        .filter(|(_, _, shared)| *shared)
        .count();
    assert!(
        containerd || shared >= 3,
        "a shared record per image: {:?}",
        d.build_cache()
    );
    let cleaner = Cleaner::new(&d, "build_cache_min_age_seconds = 0\n");
    let ages: Vec<(&str, i64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), (3 - i as i64) * HOUR))
        .collect();
    cleaner.seed_last_use(&ages);
    let (used, _) = d.used_pct();
    // About half an image (40 MiB of 486) to free.
    let (high, low) = ((used - 0.5).floor(), used - 4.0);
    let (out, err) = cleaner.run_ok_at(&["once"], high, Some(low));
    let left = d.image_ids();
    let removed: Vec<usize> = (0..3).filter(|i| !left.contains(&ids[*i])).collect();
    let (after, _) = d.used_pct();
    let stat = d.fs_stat();
    let need = (used - low) / 100.0 * (stat.blocks * stat.block_bytes) as f64;
    eprintln!(
        "{:?}: planned {:.1} MiB (to below low), freed {:.1} MiB, images removed {removed:?}",
        d.kind(),
        need / MIB as f64,
        freed(&out) as f64 / MIB as f64
    );
    assert!(after < low, "below low: {after} vs {low}\n{out}\n{err}");
    match d.kind() {
        DockerKind::BedContainerd => assert_eq!(
            removed,
            Vec::<usize>::new(),
            "the cache's copies go first; no image:\n{err}"
        ),
        DockerKind::Host | DockerKind::Bed => {
            assert_eq!(removed, vec![0], "one image, then its record:\n{err}");
            assert!(err.contains("taking stock again"), "{err}");
        }
    }
    assert!(
        err.contains("prune build cache") && err.contains("reclaimed"),
        "the cache freed the bytes:\n{err}"
    );
}

/// The engine's bytes are counted where they are: absolute mode and the footprint equal `du`
/// of the directories that really hold them (with the containerd image store, containerd's
/// root, which the configured path does not hold), and `status` names each place.
#[test]
fn absolute_mode_and_the_footprint_count_the_real_bytes() {
    let Some(d) = PrivateDockerd::start("real-bytes", 512, None) else {
        return;
    };
    for i in 0..3 {
        d.image(&format!("r-{i}:1"), d.payload_mib(30));
    }
    let cleaner = Cleaner::new(
        &d,
        "threshold_type = \"absolute\"\nthreshold_high = \"2GiB\"\nthreshold_low = \"1GiB\"\n",
    );
    let s = status(&cleaner);
    let real = du(&d.storage_dirs());
    let measured = s["usage"]["absolute"]["bytes"]
        .as_u64()
        .expect("absolute usage");
    let footprint = s["engines"][0]["footprint_bytes"]
        .as_u64()
        .expect("a footprint");
    eprintln!(
        "{:?}: du {} MiB, absolute mode {} MiB, footprint {} MiB",
        d.kind(),
        real / MIB,
        measured / MIB,
        footprint / MIB
    );
    for (what, bytes) in [("absolute mode", measured), ("the footprint", footprint)] {
        let off = (bytes as f64 - real as f64).abs() / real as f64;
        assert!(off < 0.05, "{what}: {bytes} against du {real}\n{s:#}");
    }
    // Three images of 30 MiB on the disk, whatever the store.
    assert!(measured > 90 * MIB, "{measured}");
    let places: Vec<&str> = s["engines"][0]["places"]
        .as_array()
        .expect("places")
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    match d.containerd_root() {
        Some(root) => {
            let root = root.display().to_string();
            assert!(
                places.iter().filter(|p| p.starts_with(&root)).count() == 2,
                "containerd's content store and snapshots: {places:?}"
            );
        }
        None => assert_eq!(places.len(), 1, "{places:?}"),
    }
}

/// A containerd shared with the kubelet: images in its `k8s.io` namespace are neither counted
/// as Docker's (absolute mode, the footprint) nor touched by a pass that removes every image
/// of Docker's.
#[test]
fn the_kubelets_namespace_is_neither_counted_nor_touched() {
    let Some(d) = PrivateDockerd::start("k8s-ns", 512, None) else {
        return;
    };
    if d.containerd_root().is_none() {
        not_applicable(
            Service::Dockerd,
            "the classic store keeps its images under its own root; no containerd to share",
        );
        return;
    }
    // An image of the kubelet's: saved from Docker, removed there, imported into k8s.io.
    d.image("kube-only:1", d.payload_mib(60));
    let archive = d.dir().join("kube-only.tar");
    let archive = archive.display().to_string();
    d.docker(&["save", "-o", &archive, "kube-only:1"]);
    d.docker(&["rmi", "kube-only:1"]);
    d.ctr(&["-n", "k8s.io", "images", "import", &archive]);
    std::fs::remove_file(&archive).expect("remove the archive");
    let kube_images = |d: &PrivateDockerd| {
        String::from_utf8_lossy(&d.ctr(&["-n", "k8s.io", "images", "ls", "-q"]).stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(kube_images(&d), ["docker.io/library/kube-only:1"]);
    let ours = d.image("ours:1", d.payload_mib(30));
    let cleaner = Cleaner::new(
        &d,
        "threshold_type = \"absolute\"\nthreshold_high = \"2GiB\"\nthreshold_low = \"1GiB\"\n",
    );
    let s = status(&cleaner);
    let measured = s["usage"]["absolute"]["bytes"]
        .as_u64()
        .expect("absolute usage");
    let real = du(&d.storage_dirs());
    eprintln!(
        "shared containerd: du {} MiB (both namespaces), counted {} MiB (moby)",
        real / MIB,
        measured / MIB
    );
    // The kubelet's 60 MiB are on the disk but not Docker's.
    assert!(
        measured + 50 * MIB < real,
        "counted {measured} of {real}: the k8s.io image must not count"
    );
    assert!(measured > 25 * MIB, "Docker's own image counts: {measured}");
    // A pass that must remove everything Docker has: ours goes, the kubelet's stays.
    let (out, err) = cleaner.run_ok_with(
        &["once"],
        &[
            ("DOCKER_IMAGE_CLEANER_THRESHOLD_TYPE", "relative"),
            ("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "1"),
            ("DOCKER_IMAGE_CLEANER_THRESHOLD_LOW", "0.5"),
        ],
    );
    assert!(!d.image_ids().contains(&ours), "{out}\n{err}");
    assert_eq!(kube_images(&d), ["docker.io/library/kube-only:1"], "{err}");
}
