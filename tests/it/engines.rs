//! Several engines on one disk, against real daemons: private dockerds whose data roots share one
//! loop-mounted filesystem, and a private Podman API service. What a user sees: which images of
//! which engine survive a pass, in which order they went, what the pass said.

use std::path::Path;

use crate::kube_fake::FakeKube;
use crate::util::cleaner::{Cleaner, plan_steps};
use crate::util::cli::EngineCli;
use crate::util::dockerd::PrivateDockerd;
use crate::util::loopfs::SharedFs;
use crate::util::podman::PrivatePodman;
use crate::util::require::Service;

/// `docker create` + `rm`: one use of `image`, as the event stream records it.
fn use_image(d: &PrivateDockerd, image: &str) {
    let id = d.created_container(image);
    d.docker(&["rm", &id]);
}

/// One `once` below every watermark, so the cleaner records where each engine's event stream
/// stands: the uses that follow are then replayed in order.
fn start_following(cleaner: &Cleaner) {
    cleaner.run_ok_at(&["once"], 100.0, Some(99.0));
}

/// The tags of the images of the plan's removals, in order (`[a1:1] on a` → `a1:1`).
fn removal_order(stderr: &str) -> Vec<String> {
    plan_steps(stderr)
        .iter()
        .filter(|s| s.starts_with("remove image"))
        .filter_map(|s| Some(s.split('[').nth(1)?.split(']').next()?.to_string()))
        .collect()
}

fn engine<'a>(
    name: &'a str,
    host: String,
    root: &'a Path,
    floor: &'a str,
) -> (&'a str, String, &'a Path, &'a str) {
    (name, host, root, floor)
}

#[test]
fn one_order_across_two_dockerds_on_one_disk() {
    let Some(fs) = SharedFs::new(Service::Dockerd, "two-lru", 512, None) else {
        return;
    };
    let a = PrivateDockerd::start_on(&fs, "a").expect("dockerd a");
    let b = PrivateDockerd::start_on(&fs, "b").expect("dockerd b");
    for tag in ["a1:1", "a2:1"] {
        a.image(tag, a.payload_mib(30));
    }
    for tag in ["b1:1", "b2:1"] {
        b.image(tag, b.payload_mib(30));
    }
    let cleaner = Cleaner::with_engines(
        &[
            engine("a", a.host(), a.data_root(), "0"),
            engine("b", b.host(), b.data_root(), "0"),
        ],
        "",
    );
    start_following(&cleaner);
    // Used interleaved: a1, b1, a2, b2.
    use_image(&a, "a1:1");
    use_image(&b, "b1:1");
    use_image(&a, "a2:1");
    use_image(&b, "b2:1");
    let (used, _) = fs.used_pct();
    // Three images' worth (about 6 % each) to free: b2, used last, stays.
    let (high, low) = ((used - 1.0).floor(), (used - 15.0).floor());
    let (out, err) = cleaner.run_ok_at(&["once"], high, Some(low));
    assert_eq!(
        removal_order(&err),
        vec!["a1:1", "b1:1", "a2:1", "b2:1"],
        "one least-recently-used order across both daemons:\n{err}"
    );
    assert_eq!(a.tags(), Vec::<String>::new(), "{err}");
    assert_eq!(b.tags(), vec!["b2:1".to_string()], "{err}");
    assert!(
        out.contains("a 0 containers, 2 images; b 0 containers, 1 image"),
        "the report counts per engine: {out}"
    );
}

/// Eight images of 30 MiB used in order, 600 MiB of files outside Docker on a 1 GiB disk, high
/// 85, low 60: the scenario. With a 15 % floor the newest images down to the floor stay
/// and the pass says why; without one every image goes and the pass still ends above low.
#[test]
fn a_floor_holds_against_files_outside_the_engines() {
    let fake = FakeKube::start();
    fake.add_node("node-1", serde_json::json!({}));
    let mut results = Vec::new();
    for floor in ["15", "0"] {
        let Some(fs) = SharedFs::new(Service::Dockerd, "floor", 1024, None) else {
            return;
        };
        let d = PrivateDockerd::start_on(&fs, "docker").expect("dockerd");
        let tags: Vec<String> = (1..=8).map(|i| format!("img{i}:1")).collect();
        for t in &tags {
            d.image(t, d.payload_mib(30));
        }
        let cleaner = Cleaner::with_engines(
            &[engine("docker", d.host(), d.data_root(), floor)],
            // Critical out of the way: the containerd image store's own files add a point or two,
            // and this scenario is about floors.
            &format!(
                "node_name = \"node-1\"\nkubeconfig = {:?}\nthreshold_critical = 100\n",
                fake.kubeconfig().display().to_string()
            ),
        );
        start_following(&cleaner);
        for t in &tags {
            use_image(&d, t);
        }
        fs.foreign_file("outside", 600);
        let (before, _) = fs.used_pct();
        assert!(before >= 85.0, "the scenario starts above high: {before}");
        let (out, err) = cleaner.run_ok_at(&["once"], 85.0, Some(60.0));
        let (after, _) = fs.used_pct();
        results.push((floor, d.tags(), before, after, out, err));
    }
    let (_, kept, _, after, out, err) = &results[0];
    // The floor is 15 % of the filesystem (about 150 MiB): the oldest go until the footprint
    // would cross it; the five most recently used stay.
    let newest: Vec<String> = (4..=8).map(|i| format!("img{i}:1")).collect();
    let mut kept_sorted = kept.clone();
    kept_sorted.sort();
    assert_eq!(kept_sorted, newest, "{err}");
    assert!(after >= &60.0, "still above low: {after}");
    assert!(
        out.contains("everything above the engines' floors is gone"),
        "{out}\n{err}"
    );
    assert!(err.contains("outside the engines"), "{err}");
    let events = fake.events();
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "DiskPressureElsewhere" && e["type"] == "Warning"),
        "a Warning Event names the pressure from outside: {events:#?}"
    );
    // Without a floor: today's behaviour, every image goes.
    let (_, kept, _, after, _, err) = &results[1];
    assert!(kept.is_empty(), "{kept:?}\n{err}");
    assert!(after >= &60.0, "{after}");
    eprintln!(
        "1 GiB scenario: floor 15 %: kept {:?}, {:.1} % → {:.1} %; no floor: kept {:?}, {:.1} % → {:.1} %",
        results[0].1, results[0].2, results[0].3, results[1].1, results[1].2, results[1].3
    );
}

#[test]
fn the_critical_watermark_overrides_the_floor() {
    let Some(fs) = SharedFs::new(Service::Dockerd, "critical", 512, None) else {
        return;
    };
    let d = PrivateDockerd::start_on(&fs, "docker").expect("dockerd");
    let tags: Vec<String> = (1..=4).map(|i| format!("c{i}:1")).collect();
    for t in &tags {
        d.image(t, 30);
    }
    let cleaner = Cleaner::with_engines(
        &[engine("docker", d.host(), d.data_root(), "\"1GiB\"")],
        "threshold_critical = 90\n",
    );
    fs.fill_to(95.0);
    let (_, err) = cleaner.run_ok_at(&["once"], 85.0, Some(40.0));
    assert!(
        err.contains("at or above the critical watermark (90%): floors are ignored"),
        "{err}"
    );
    assert!(
        d.tags().is_empty(),
        "the floor gave way: {:?}\n{err}",
        d.tags()
    );
}

#[test]
fn podman_images_go_in_the_order_of_its_events_and_an_image_in_use_stays() {
    let Some(p) = PrivatePodman::start("podman-lru", 512) else {
        return;
    };
    let p1 = p.image("p1:1", 30);
    let p2 = p.image("p2:1", 30);
    let p3 = p.image("p3:1", 30);
    let cleaner = Cleaner::with_engines(&[engine("pink", p.host(), p.data_root(), "0")], "");
    start_following(&cleaner);
    // p2 runs; p3 is used, then p1: p3 is the least recently used image not in use.
    p.running_container("p2:1");
    for image in ["p3:1", "p1:1"] {
        let id = p.created_container(image);
        p.podman(&["rm", &id]);
    }
    let (used, _) = p.used_pct();
    let (_, err) = cleaner.run_ok_at(&["once"], (used - 1.0).floor(), Some((used - 3.0).floor()));
    let order = removal_order(&err);
    assert!(
        order.first().is_some_and(|t| t.ends_with("p3:1")),
        "p3 first, by Podman's events: {order:?}\n{err}"
    );
    let ids = p.image_ids();
    assert!(!ids.contains(&p3), "p3 removed:\n{err}");
    assert!(ids.contains(&p2), "p2 is in use and stays:\n{err}");
    assert!(ids.contains(&p1), "p1 was used last and stays:\n{err}");
    assert!(err.contains("in use by container"), "{err}");
}

#[test]
fn an_engine_that_is_down_is_reported_and_the_other_is_cleaned() {
    let Some(fs) = SharedFs::new(Service::Dockerd, "down", 512, None) else {
        return;
    };
    let a = PrivateDockerd::start_on(&fs, "a").expect("dockerd a");
    let mut b = PrivateDockerd::start_on(&fs, "b").expect("dockerd b");
    a.image("a1:1", 30);
    b.image("b1:1", 30);
    let cleaner = Cleaner::with_engines(
        &[
            engine("a", a.host(), a.data_root(), "0"),
            engine("b", b.host(), b.data_root(), "0"),
        ],
        "",
    );
    b.stop();
    let (used, _) = fs.used_pct();
    let (_, err) = cleaner.run_ok_at(&["once"], (used - 1.0).floor(), Some((used - 3.0).floor()));
    assert!(a.tags().is_empty(), "a was cleaned:\n{err}");
    assert!(err.contains("engine b:"), "b is reported:\n{err}");
    b.restart();
    assert_eq!(b.tags(), vec!["b1:1".to_string()], "b untouched");
}

/// A Dockerfile `FROM base` with one `RUN` step that writes `mib` MiB of random bytes (so the
/// image it makes is a child of `base` with a layer of its own).
fn child_dockerfile(base: &str, mib: u64) -> String {
    format!(
        "FROM {base}\nRUN [\"/busybox\", \"sh\", \"-c\", \"/busybox head -c {} /dev/urandom > /generated\"]\n",
        mib << 20
    )
}

/// Issue 18, fault 2: on Podman, the parent of an image a container runs stays. Podman (4.3 and
/// 5.8) lists a built image's `ParentId` as bare hex while `Id` has `sha256:`; before the fix
/// the parent matched no image, so it was a candidate like any other and the pass took its tag
/// away (Podman untags an image whose layers a child still needs).
#[test]
fn podman_keeps_the_parent_of_an_image_in_use() {
    let Some(p) = PrivatePodman::start("podman-parent", 512) else {
        return;
    };
    let base = p.image("t/base:1", 30);
    let child = p.build_through_service("t/child:1", &child_dockerfile("localhost/t/base:1", 1));
    let spare = p.image("t/spare:1", 30);
    p.running_container(&child);
    let cleaner = Cleaner::with_engines(&[engine("pink", p.host(), p.data_root(), "0")], "");
    start_following(&cleaner);
    // Everything that may go must go.
    let (used, _) = p.used_pct();
    let (_, err) = cleaner.run_ok_at(&["once"], (used - 1.0).floor(), Some(0.0));
    assert!(
        p.tags().contains(&"localhost/t/base:1".to_string()),
        "the parent of the running image keeps its tag: {:?}\n{err}",
        p.tags()
    );
    let ids = p.image_ids();
    assert!(
        ids.contains(&base) && ids.contains(&child),
        "{ids:?}\n{err}"
    );
    assert!(
        !ids.contains(&spare),
        "the pass did remove what it may:\n{err}"
    );
    let child_short = &child.trim_start_matches("sha256:")[..12];
    assert!(
        err.contains(&format!(
            "[localhost/t/base:1] on pink: parent of {child_short}, which stays"
        )),
        "the plan says why the parent stays:\n{err}"
    );
}

/// Issue 18, fault 3: on Podman, a build is a use of the image it makes, at the build's time.
/// Podman (4.3 and 5.8) logs `build` with an empty `Actor.ID` and the image's id in
/// `Attributes.name`, and no `tag` follows, not even for a new tag. An image built long ago and
/// built again (a cache hit: the same image) after five others were used must go after them;
/// before the fix the build was ignored, it went first, and the pass removed the image the node
/// had just built.
#[test]
fn podman_counts_a_build_as_a_use_of_the_image_built() {
    let Some(p) = PrivatePodman::start("podman-build", 512) else {
        return;
    };
    p.image("t/base:1", 1);
    let dockerfile = child_dockerfile("localhost/t/base:1", 20);
    let app = p.build_through_service("t/app:1", &dockerfile);
    let cleaner = Cleaner::with_engines(&[engine("pink", p.host(), p.data_root(), "0")], "");
    // The first start: every image by its build time.
    start_following(&cleaner);
    // Five images, each used (a tagged `podman import` logs a `tag`) after that build.
    let olds: Vec<String> = (1..=5).map(|i| format!("t/old-{i}:1")).collect();
    for tag in &olds {
        p.image(tag, 20);
    }
    // Built again: the cache makes the same image, a use of it now.
    assert_eq!(p.build_through_service("t/app:1", &dockerfile), app);
    // One image's worth to free.
    let (used, _) = p.used_pct();
    let (_, err) = cleaner.run_ok_at(&["once"], (used - 1.0).floor(), Some((used - 3.0).floor()));
    let order = removal_order(&err);
    let first_five: Vec<String> = olds.iter().map(|t| format!("localhost/{t}")).collect();
    assert_eq!(
        order.get(..5),
        Some(first_five.as_slice()),
        "the five images used before the build go first: {order:?}\n{err}"
    );
    assert!(
        p.image_ids().contains(&app),
        "the image just built stays:\n{err}"
    );
    assert!(
        !p.tags().contains(&first_five[0]),
        "the least recently used image went:\n{err}"
    );
}
