//! The cleaning pass against a real, private dockerd on a small loop-mounted ext4 filesystem:
//! what a user sees is which images and containers survive and what the filesystem reads after.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::cleaner::{Cleaner, plan_steps};
use crate::util::cli::EngineCli;
use crate::util::daemon::Daemon;
use crate::util::dockerd::PrivateDockerd;
use crate::util::rootfs::ImageArchive;
use crate::util::wait_until;

const HOUR: i64 = 3600;
/// Bound of anything a running daemon should do "soon" (start, a tick, a clean stop).
const MINUTE: Duration = Duration::from_secs(60);

/// Unix milliseconds now (last use is kept in milliseconds).
fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    i64::try_from(since.as_millis()).expect("milliseconds fit")
}

/// Watermarks `below` and `below + gap` points under the current usage (rounded down), so the
/// pass starts and must free about `below + gap` points.
fn watermarks_under(used_pct: f64, below: f64, gap: f64) -> (f64, f64) {
    let high = (used_pct - below).floor();
    (high, high - gap)
}

fn contains(ids: &[String], id: &str) -> bool {
    ids.iter().any(|i| i == id)
}

#[test]
fn below_high_nothing_is_removed() {
    let Some(d) = PrivateDockerd::start("below-high", 512, None) else {
        return;
    };
    let a = d.image("app-a:1", 10);
    let x = d.dangling_image(10);
    let c = d.stopped_container("app-a:1");
    let cleaner = Cleaner::new(&d, "threshold_high = 99\nthreshold_low = 98\n");
    let (out, _) = cleaner.run_ok(&["once"]);
    assert!(out.contains("below the high watermark"), "{out}");
    let images = d.image_ids();
    assert!(contains(&images, &a) && contains(&images, &x), "{images:?}");
    assert!(contains(&d.container_ids(), &c));

    // A watched path that does not exist fails the pass, naming it.
    let out = cleaner.run(&["once"]);
    assert!(out.status.success());
    let mut cmd = cleaner.command(&["once"]);
    cmd.env(
        "DOCKER_IMAGE_CLEANER_PATH_TO_CHECK",
        "/nonexistent/docker-root",
    );
    let out = Daemon::plain(cmd).output(MINUTE);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/docker-root"), "{err}");
}

#[test]
fn dangling_images_go_first_and_tagged_images_stay_when_that_is_enough() {
    let Some(d) = PrivateDockerd::start("dangling", 512, None) else {
        return;
    };
    let a = d.image("app-a:1", 20);
    let b = d.image("app-b:1", 20);
    let x = d.dangling_image(120);
    let (used, _) = d.used_pct();
    let (high, low) = watermarks_under(used, 3.0, 5.0);
    let cleaner = Cleaner::new(
        &d,
        &format!("threshold_high = {high}\nthreshold_low = {low}\n"),
    );
    let (out, _) = cleaner.run_ok(&["once"]);
    let images = d.image_ids();
    assert!(!contains(&images, &x), "the dangling image must go: {out}");
    assert!(
        contains(&images, &a) && contains(&images, &b),
        "tagged images must stay: {out}"
    );
    assert!(
        d.used_pct().0 < low,
        "usage {} not below low {low}",
        d.used_pct().0
    );
}

/// Creates and removes a container from `image`: Docker reports create and destroy events.
fn use_image(d: &PrivateDockerd, image: &str) {
    let id = d.created_container(image);
    d.docker(&["rm", &id]);
}

#[test]
fn lru_order_follows_use_events() {
    let Some(d) = PrivateDockerd::start("lru", 512, None) else {
        return;
    };
    let a = d.image("a:1", 30);
    let b = d.image("b:1", 30);
    let c = d.image("c:1", 30);
    let cleaner = Cleaner::new(&d, "");
    // A cleaner has been running: it will replay Docker's events from here on.
    cleaner.seed_last_use(&[]);
    // Last use is kept to the millisecond: each use is a `docker create` + `rm` apart.
    for image in ["a:1", "b:1", "c:1", "a:1"] {
        use_image(&d, image);
    }
    let (used, _) = d.used_pct();
    let (high, low) = watermarks_under(used, 1.0, 2.0);
    let (_, err) = cleaner.run_ok_at(&["once"], high, Some(low));
    let order: Vec<&str> = plan_steps(&err)
        .iter()
        .map(|s| {
            if s.contains("[a:1]") {
                "a"
            } else if s.contains("[b:1]") {
                "b"
            } else if s.contains("[c:1]") {
                "c"
            } else {
                "?"
            }
        })
        .collect();
    assert_eq!(
        order,
        vec!["b", "c", "a"],
        "eviction order in the plan:\n{err}"
    );
    let images = d.image_ids();
    assert!(
        !contains(&images, &b),
        "b was used least recently and must go:\n{err}"
    );
    assert!(
        contains(&images, &a) && contains(&images, &c),
        "one removal was enough:\n{err}"
    );
}

#[test]
fn pass_stops_below_low_instead_of_emptying_the_store() {
    let Some(d) = PrivateDockerd::start("stop-at-low", 512, None) else {
        return;
    };
    let ids: Vec<String> = (0..6)
        .map(|i| d.image(&format!("img-{i}:1"), d.payload_mib(30)))
        .collect();
    let cleaner = Cleaner::new(&d, "");
    // img-0 is the least recently used, img-5 the most.
    let ages: Vec<(&str, i64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), (6 - i as i64) * HOUR))
        .collect();
    cleaner.seed_last_use(&ages);
    let (used, _) = d.used_pct();
    // One image is about 6 points: two removals are needed, not more.
    let (high, low) = watermarks_under(used, 1.0, 7.0);
    let (out, err) = cleaner.run_ok_at(&["once"], high, Some(low));
    let text = format!("{out}{err}");
    let left = d.image_ids();
    let gone: Vec<usize> = (0..6).filter(|i| !contains(&left, &ids[*i])).collect();
    assert_eq!(
        gone,
        vec![0, 1],
        "the two least recently used images, and only they:\n{text}"
    );
    assert!(
        d.used_pct().0 < low,
        "usage {} not below low {low}:\n{text}",
        d.used_pct().0
    );
}

/// The acceptance scenario: a 512 MiB filesystem above an 85 % high watermark is brought
/// below a 60 % low watermark by removing only the least recently used images, while a kept
/// image, an in-use image and a fresh image survive.
#[test]
fn full_disk_is_brought_below_low_while_kept_in_use_and_fresh_images_survive() {
    let Some(d) = PrivateDockerd::start("acceptance", 512, None) else {
        return;
    };
    let mib = d.payload_mib(25);
    let old: Vec<String> = (0..8)
        .map(|i| d.image(&format!("old-{i}:1"), mib))
        .collect();
    let kept = d.image("registry.local/pause:3.9", mib);
    let in_use = d.image("in-use:1", mib);
    let fresh = d.image("fresh:1", mib);
    let running = d.running_container("in-use:1");
    let cleaner = Cleaner::new(
        &d,
        "threshold_high = 85\nthreshold_low = 60\nmin_age_seconds = 3600\nkeep = [\"^registry\\\\.local/pause:\"]\n",
    );
    let mut ages: Vec<(&str, i64)> = old
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), (20 - i as i64) * HOUR))
        .collect();
    ages.push((&kept, 30 * HOUR));
    ages.push((&in_use, 30 * HOUR));
    ages.push((&fresh, 60));
    cleaner.seed_last_use(&ages);
    d.fill_to(87.0);
    assert!(d.used_pct().0 >= 85.0, "setup: {:?}", d.used_pct());

    let (out, err) = cleaner.run_ok(&["once"]);
    let left = d.image_ids();
    for (what, id) in [("kept", &kept), ("in-use", &in_use), ("fresh", &fresh)] {
        assert!(
            contains(&left, id),
            "the {what} image must survive:\n{out}\n{err}"
        );
    }
    assert!(
        contains(&d.container_ids(), &running),
        "the running container must survive"
    );
    let gone: Vec<usize> = (0..8).filter(|i| !contains(&left, &old[*i])).collect();
    assert!(!gone.is_empty(), "something must go:\n{err}");
    assert_eq!(
        gone,
        (0..gone.len()).collect::<Vec<_>>(),
        "only the least recently used, oldest first:\n{err}"
    );
    let (after, _) = d.used_pct();
    assert!(after < 60.0, "usage {after} not below 60:\n{out}\n{err}");
    assert!(out.contains("below the low watermark"), "{out}");
}

#[test]
fn an_image_in_use_is_never_removed_even_when_usage_stays_high() {
    let Some(d) = PrivateDockerd::start("in-use", 512, None) else {
        return;
    };
    let busy = d.image("busy:1", 60);
    let stopped = d.created_container("busy:1");
    let (used, _) = d.used_pct();
    let (high, low) = watermarks_under(used, 1.0, 5.0);
    // The stopped container is younger than container_min_age: it stays, and so does its image.
    let cleaner = Cleaner::new(
        &d,
        &format!(
            "threshold_high = {high}\nthreshold_low = {low}\ncontainer_min_age_seconds = 3600\n"
        ),
    );
    let (out, err) = cleaner.run_ok(&["once"]);
    assert!(contains(&d.image_ids(), &busy), "{err}");
    assert!(contains(&d.container_ids(), &stopped), "{err}");
    assert!(
        err.contains("still above the low watermark"),
        "a warning with the shortfall:\n{err}"
    );
    assert!(out.contains("nothing left to remove"), "{out}");
}

#[test]
fn inode_pressure_triggers_a_clean() {
    let Some(d) = PrivateDockerd::start("inodes", 512, Some(4096)) else {
        return;
    };
    let older = d.image_with_files("many-old:1", 1500);
    let newer = d.image_with_files("many-new:1", 1500);
    let (blocks, inodes) = d.used_pct();
    assert!(
        inodes > blocks + 20.0,
        "setup: blocks {blocks}%, inodes {inodes}%"
    );
    let cleaner = Cleaner::new(&d, "");
    cleaner.seed_last_use(&[(&older, 2 * HOUR), (&newer, HOUR)]);
    let (high, low) = watermarks_under(inodes, 1.0, 10.0);
    assert!(
        blocks < low,
        "blocks alone must not trigger: {blocks}% vs low {low}"
    );
    let (out, err) = cleaner.run_ok_at(&["once"], high, Some(low));
    let text = format!("{out}{err}");
    let left = d.image_ids();
    assert!(!contains(&left, &older), "{text}");
    assert!(contains(&left, &newer), "{text}");
    assert!(
        d.used_pct().1 < low,
        "inodes {} not below {low}:\n{text}",
        d.used_pct().1
    );
}

#[test]
fn prune_strategy_empties_the_store_like_the_original() {
    let Some(d) = PrivateDockerd::start("prune", 512, None) else {
        return;
    };
    let a = d.image("a:1", 10);
    let b = d.image("b:1", 10);
    let r = d.image("running:1", 10);
    let stopped = d.stopped_container("a:1");
    let running = d.running_container("running:1");
    // Recently used, and the pass needs far less than everything: the original prunes all
    // the same.
    let cleaner = Cleaner::new(&d, "strategy = \"prune\"\nmin_age_seconds = 3600\n");
    cleaner.seed_last_use(&[(&a, 60), (&b, 60)]);
    let (used, _) = d.used_pct();
    let (out, err) = cleaner.run_ok_at(&["once"], (used - 1.0).floor(), None);
    let text = format!("{out}{err}");
    // No dangling image was found: like `docker container prune` + `docker image prune -a`.
    assert_eq!(d.image_ids(), vec![r.clone()], "{text}");
    let containers = d.container_ids();
    assert!(
        !contains(&containers, &stopped) && contains(&containers, &running),
        "{text}"
    );
}

#[test]
fn prune_strategy_stops_after_dangling_images_when_they_were_enough() {
    let Some(d) = PrivateDockerd::start("prune-dangling", 512, None) else {
        return;
    };
    let a = d.image("a:1", 10);
    let x = d.dangling_image(60);
    let (used, _) = d.used_pct();
    let cleaner = Cleaner::new(&d, "strategy = \"prune\"\n");
    let (high, low) = watermarks_under(used, 1.0, 2.0);
    let (out, err) = cleaner.run_ok_at(&["once"], high, Some(low));
    let text = format!("{out}{err}");
    let left = d.image_ids();
    assert!(!contains(&left, &x) && contains(&left, &a), "{text}");
}

#[test]
fn dry_run_removes_nothing_and_prints_the_plan_that_runs() {
    let Some(d) = PrivateDockerd::start("dry-run", 512, None) else {
        return;
    };
    let ids: Vec<String> = (0..3).map(|i| d.image(&format!("img-{i}:1"), 20)).collect();
    let x = d.dangling_image(20);
    let stopped = d.stopped_container("img-2:1");
    let cleaner = Cleaner::new(&d, "");
    cleaner.seed_last_use(&[
        (&ids[0], 3 * HOUR),
        (&ids[1], 2 * HOUR),
        (&ids[2], HOUR),
        (&x, HOUR),
    ]);
    let state_before = std::fs::read(cleaner.state_dir().join("last-use.json")).expect("state");
    let (used, _) = d.used_pct();
    let (high, low) = watermarks_under(used, 1.0, 8.0);
    let images_before = d.image_ids();
    let (dry_out, _) = cleaner.run_ok_at(&["once", "--dry-run"], high, Some(low));
    assert_eq!(d.image_ids(), images_before, "a dry run removes nothing");
    assert!(contains(&d.container_ids(), &stopped));
    assert_eq!(
        std::fs::read(cleaner.state_dir().join("last-use.json")).expect("state"),
        state_before,
        "a dry run writes nothing"
    );
    // An image whose container existed counts as used "now", which moves between two runs:
    // the actions and their order must match, not that timestamp.
    let actions = |steps: Vec<String>| -> Vec<String> {
        steps
            .into_iter()
            .map(|s| {
                s.split(", last used")
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let planned = actions(plan_steps(&dry_out));
    assert!(planned.len() >= 3, "{dry_out}");
    assert!(planned[0].starts_with("remove container"), "{dry_out}");

    let (_, real_err) = cleaner.run_ok_at(&["once"], high, Some(low));
    assert_eq!(
        actions(plan_steps(&real_err)),
        planned,
        "the dry run printed:\n{dry_out}\nthe pass logged:\n{real_err}"
    );
    assert!(!contains(&d.image_ids(), &x), "{real_err}");
}

#[test]
fn docker_unreachable_fails_once_and_run_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cleaner = Cleaner::for_host(
        "unix:///nonexistent/dic/docker.sock",
        dir.path(),
        "interval_seconds = 1\n",
    );
    let out = cleaner.run(&["once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/nonexistent/dic/docker.sock"),
        "the error names the endpoint: {err}"
    );

    // Each tick that finds no Docker says so in its status, and the daemon keeps running.
    let mut d = cleaner.spawn(&["run"]);
    d.ready(MINUTE);
    d.wait_status("waiting for Docker", MINUTE);
    d.wait_status("waiting for Docker", MINUTE);
    assert!(
        d.running(),
        "run keeps running while Docker is away:\n{}",
        d.context()
    );
    // A SIGTERM is a clean stop: STOPPING=1, exit 0.
    d.terminate(MINUTE);
}

#[test]
fn event_stream_is_live_and_survives_a_docker_restart() {
    let Some(mut d) = PrivateDockerd::start("events", 512, None) else {
        return;
    };
    let a = d.image("a:1", 1);
    let b = d.image("b:1", 1);
    let cleaner = Cleaner::new(&d, "threshold_high = 100\ninterval_seconds = 3600\n");
    let mut daemon = cleaner.spawn(&["run"]);
    let last_used = |id: &str| -> Option<i64> {
        cleaner
            .state()?
            .pointer(&format!("/engines/default/images/{id}/last_used_ms"))?
            .as_i64()
    };
    // The daemon connects at its first tick; uses before that are replayed from its start.
    let t0 = now_ms();
    use_image(&d, "a:1");
    assert!(
        wait_until(MINUTE, || last_used(&a).is_some_and(|t| t >= t0)),
        "live stream: no use of {a} recorded since {t0}:\n{}",
        daemon.context()
    );

    d.restart();
    let t1 = now_ms();
    use_image(&d, "b:1");
    assert!(
        wait_until(MINUTE, || last_used(&b).is_some_and(|t| t >= t1)),
        "after Docker restarted: no use of {b} recorded since {t1}:\n{}",
        daemon.context()
    );
    assert!(
        daemon.running(),
        "the daemon survives a Docker restart:\n{}",
        daemon.context()
    );
    daemon.terminate(MINUTE);
}

#[test]
fn status_shows_the_eviction_order_and_deletes_nothing() {
    let Some(d) = PrivateDockerd::start("status", 512, None) else {
        return;
    };
    let ids: Vec<String> = (0..3).map(|i| d.image(&format!("img-{i}:1"), 5)).collect();
    let busy = d.image("busy:1", 5);
    let _running = d.running_container("busy:1");
    let cleaner = Cleaner::new(&d, "threshold_high = 99\nthreshold_low = 98\n");
    cleaner.seed_last_use(&[
        (&ids[0], HOUR),
        (&ids[1], 3 * HOUR),
        (&ids[2], 2 * HOUR),
        (&busy, 9 * HOUR),
    ]);
    let before = d.image_ids();
    let (out, err) = cleaner.run_ok(&["status", "--json"]);
    let status: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(status["above_high"], false, "{out}");
    // The schema the README documents.
    assert_eq!(status["engines"][0]["name"], "default", "{out}");
    assert_eq!(
        status["engines"][0]["error"],
        serde_json::Value::Null,
        "{out}"
    );
    assert!(status["engines"][0]["footprint_bytes"].is_u64(), "{out}");
    assert_eq!(status["engines"][0]["images"], 4, "{out}");
    assert!(status["filesystems"][0]["outside_bytes"].is_u64(), "{out}");
    assert!(
        status["usage"]["relative"][0]["blocks_used_pct"].is_f64(),
        "{out}"
    );
    assert!(status["need"]["bytes"].is_u64(), "{out}");
    assert!(status["taken_ms"].as_i64().is_some_and(|t| t > 0), "{out}");
    assert_eq!(
        status["critical_pct"], 99.0,
        "critical follows a high of 99: {out}"
    );
    assert_eq!(
        status["plan"]["steps"][0]["action"], "remove_image",
        "{out}"
    );
    assert!(status["plan"]["steps"][0]["last_used_ms"].is_i64(), "{out}");
    let order: Vec<&str> = status["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        order,
        vec![ids[1].as_str(), ids[2].as_str(), ids[0].as_str()],
        "{out}"
    );
    let kept = status["plan"]["kept"].as_array().expect("kept");
    assert!(
        kept.iter()
            .any(|k| k["id"] == busy.as_str() && k["reason"]["reason"] == "in_use"),
        "{out}"
    );
    assert_eq!(d.image_ids(), before, "status deletes nothing");

    let (text, _) = cleaner.run_ok(&["status"]);
    assert!(text.contains("eviction order"), "{text}");
    assert!(text.contains("below high"), "{text}");
    // Aligned rows, people's ages, and the rule that keeps each image.
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains("image"))
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(
        rows[0].contains("img-1:1") && rows[0].contains("3 h ago"),
        "{text}"
    );
    let column = |row: &str| row.find("img-").expect("a name column");
    assert!(
        rows.iter().all(|r| column(r) == column(rows[0])),
        "the name column is aligned:\n{text}"
    );
    assert!(text.contains("in use by container"), "{text}");
}

#[test]
fn absolute_mode_walks_the_docker_root_and_stops_below_the_low_byte_count() {
    let Some(d) = PrivateDockerd::start("absolute", 2048, None) else {
        return;
    };
    // 6 images of 200 MiB on the disk: about 1.2 GiB (under the data root, or in containerd
    // with the containerd image store), over a 1 GiB high watermark.
    let ids: Vec<String> = (0..6)
        .map(|i| d.image(&format!("big-{i}:1"), d.payload_mib(200)))
        .collect();
    let cleaner = Cleaner::new(
        &d,
        "threshold_type = \"absolute\"\nthreshold_high = \"1GiB\"\nthreshold_low = \"700MiB\"\n",
    );
    let ages: Vec<(&str, i64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), (6 - i as i64) * HOUR))
        .collect();
    cleaner.seed_last_use(&ages);
    let (out, err) = cleaner.run_ok(&["once"]);
    let left = d.image_ids();
    let gone: Vec<usize> = (0..6).filter(|i| !contains(&left, &ids[*i])).collect();
    assert_eq!(
        gone,
        vec![0, 1, 2],
        "the three least recently used images:\n{out}\n{err}"
    );
    assert!(out.contains("below the low watermark"), "{out}");
    // What du says of the trees afterwards, the way the original's absolute mode counted
    // (with the containerd image store, containerd's root too: the real bytes).
    let mut args = vec!["-csxB1".to_string()];
    args.extend(d.storage_dirs().iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let du = crate::util::host::run_ok("du", &args, Duration::from_secs(60));
    let bytes: u64 = String::from_utf8_lossy(&du.stdout)
        .lines()
        .last()
        .and_then(|total| total.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("du prints a byte count");
    assert!(
        bytes < 700 << 20,
        "du -sxB1 says {bytes} bytes:\n{out}\n{err}"
    );
}

/// Unix seconds now.
fn now_secs() -> i64 {
    now_ms().div_euclid(1000)
}

/// Loads an image tagged `tag` of `payload_mib` MiB created `ago` seconds before now, as one
/// built or pulled long ago (`docker load` of an archive: an import is always created now);
/// returns its id.
fn old_image(d: &PrivateDockerd, tag: &str, payload_mib: u64, ago: i64) -> (String, i64) {
    let created = now_secs() - ago;
    let archive = ImageArchive::build(d.dir(), tag, payload_mib, created);
    d.docker(&["load", "--input", archive.path()]);
    let out = d.docker(&["image", "inspect", "--format", "{{.Id}}", tag]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("sha256:"), "{tag}: {id:?}");
    (id, created)
}

/// The tags of the images a plan removes, in its order (`[older:1]` → `older:1`).
fn removal_order(plan: &str) -> Vec<String> {
    plan_steps(plan)
        .iter()
        .filter(|s| s.starts_with("remove image"))
        .filter_map(|s| Some(s.split('[').nth(1)?.split(']').next()?.to_string()))
        .collect()
}

/// A plan's time as it prints it (`last used 2026-12-07T03:00:00Z`).
fn plan_time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .expect("a time in range")
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Issue 18, fault 1 (any engine): the first run on a node, whose first pass finds usage below
/// high, still records every image and the time it began covering the engine. The next pass
/// under pressure then knows the images never used by their build time on that first start: an
/// image built hours earlier is not "used 0s ago, below min_age", and images never used go
/// oldest build first. Before the fix the first run recorded no image, so the next pass took
/// every image as first seen then and kept them all for min_age.
#[test]
fn a_first_run_below_high_records_every_image_by_its_build_time() {
    let Some(d) = PrivateDockerd::start("first-run", 512, None) else {
        return;
    };
    let (older, older_created) = old_image(&d, "older:1", 5, 3 * HOUR);
    let (newer, newer_created) = old_image(&d, "newer:1", 5, 2 * HOUR);
    let fresh = d.image("fresh:1", 5);
    let cleaner = Cleaner::new(
        &d,
        "threshold_high = 99\nthreshold_low = 98\nmin_age_seconds = 3600\ninterval_seconds = 3600\n",
    );
    // The first start: one pass, below high, then a clean stop.
    let mut daemon = cleaner.spawn(&["run"]);
    daemon.wait_status("idle: ", MINUTE);
    daemon.terminate(MINUTE);
    let first_run = daemon.context();

    // The next pass finds usage above its high watermark.
    let (plan, log) = cleaner.run_ok_at(&["once", "--dry-run"], 1.0, Some(0.5));
    assert_eq!(
        removal_order(&plan),
        ["older:1", "newer:1"],
        "images never used go by their build time, oldest first:\n{plan}\n{log}\nthe first run:\n{first_run}"
    );
    for (tag, created) in [("older:1", older_created), ("newer:1", newer_created)] {
        let step = plan_steps(&plan)
            .into_iter()
            .find(|s| s.contains(&format!("[{tag}]")))
            .unwrap_or_default();
        assert!(
            step.ends_with(&format!("last used {}", plan_time(created))),
            "{tag} was last used when it was built: {step}\n{plan}"
        );
    }
    let kept: Vec<&str> = plan
        .lines()
        .filter(|l| l.contains("below min_age"))
        .collect();
    assert_eq!(kept.len(), 1, "only the fresh image is too young:\n{plan}");
    assert!(kept[0].contains("[fresh:1]"), "{plan}");

    // What the first run saved: every image, from when it began covering the engine.
    let state = cleaner.state().expect("the first run saved its state");
    let engine = &state["engines"]["default"];
    let mut recorded: Vec<&str> = engine["images"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    recorded.sort();
    let mut all = vec![older.as_str(), newer.as_str(), fresh.as_str()];
    all.sort();
    assert_eq!(recorded, all, "{state:#}");
    assert!(engine["covering_since_ms"].is_i64(), "{state:#}");
    assert_eq!(
        engine["images"][&older]["first_seen_ms"].as_i64(),
        Some(older_created * 1000),
        "{state:#}"
    );
}

/// Issue 18, fault 4 (any engine): a pass that removes a stopped container does not make its
/// image look used: the image's last use stays when the container stopped (`die`). Image a,
/// whose container stopped before b was last used, still goes before b in the next plan. Before
/// the fix the removal (`destroy`) counted as a use, so a pass's own removals made the images
/// they freed look the freshest.
#[test]
fn removing_a_stopped_container_is_not_a_use_of_its_image() {
    let Some(d) = PrivateDockerd::start("removal-no-use", 512, None) else {
        return;
    };
    let a = d.image("a:1", 5);
    let b = d.image("b:1", 5);
    let cleaner = Cleaner::new(&d, "min_age_seconds = 3600\n");
    // A cleaner has been running: it replays Docker's events from here on.
    cleaner.seed_last_use(&[]);
    let stopped = d.stopped_container("a:1");
    use_image(&d, "b:1");
    // A pass under pressure that removes the stopped container and keeps both images (used
    // less than min_age ago).
    let (used, _) = d.used_pct();
    let (high, low) = watermarks_under(used, 1.0, 2.0);
    let pass_started = now_ms();
    let (_, pass) = cleaner.run_ok_at(&["once"], high, Some(low));
    assert!(!contains(&d.container_ids(), &stopped), "{pass}");
    let images = d.image_ids();
    assert!(contains(&images, &a) && contains(&images, &b), "{pass}");

    // The next plan, with min_age lifted: a goes first.
    let (out, err) = cleaner.run_ok_with(
        &["status", "--json"],
        &[("DOCKER_IMAGE_CLEANER_MIN_AGE_SECONDS", "0")],
    );
    let status: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let steps = status["plan"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let order: Vec<&str> = steps.iter().filter_map(|s| s["id"].as_str()).collect();
    let shown: Vec<String> = steps
        .iter()
        .map(|s| format!("{} last used {}", s["id"], s["last_used_ms"]))
        .collect();
    assert_eq!(
        order,
        [a.as_str(), b.as_str()],
        "a's container stopped before b was used; the plan: {shown:#?}\nthe pass:\n{pass}"
    );
    let a_used = steps[0]["last_used_ms"].as_i64().unwrap_or_default();
    assert!(
        a_used < pass_started,
        "a was last used when its container stopped, before the pass ({pass_started}), not when the pass removed it: {a_used}"
    );
}
