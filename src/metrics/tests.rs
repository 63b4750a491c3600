//! The families as a scrape shows them, fed with hand-made reports; the endpoint over loopback.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::config::{EngineConfig, Floor, Watermarks};
use crate::cycle::{Tallies, Tally};
use crate::policy::Outcome;
use crate::usage::{FsUsage, Measurement, TreeUsage};

fn config() -> Config {
    let engine = |name: &str| EngineConfig {
        name: name.into(),
        docker_host: None,
        cri_endpoint: None,
        paths: vec![PathBuf::from("/var/lib/docker")],
        floor: Floor::NONE,
    };
    Config {
        engines: vec![engine("host"), engine("dind")],
        watermarks: crate::config::Watermarks::Relative {
            high_pct: 80.0,
            low_pct: 60.0,
        },
        ..Config::default()
    }
}

/// A filesystem of 1000 blocks of 4 KiB and 1000 inodes, `blocks` and `inodes` of them used.
fn fs(path: &str, blocks: u64, inodes: u64) -> FsUsage {
    FsUsage::from_counts(path.into(), 4096, 1000, 1000 - blocks, 1000, 1000 - inodes)
}

fn report(
    outcome: Outcome,
    before: Measurement,
    after: Measurement,
    tallies: &[(&str, Tally)],
) -> Report {
    let engines = Tallies(
        tallies
            .iter()
            .map(|(n, t)| (n.to_string(), *t))
            .collect::<BTreeMap<_, _>>(),
    );
    Report::new(
        outcome,
        before,
        after,
        None,
        engines,
        Duration::from_millis(2500),
    )
}

/// The sample lines of `text` (no comments), for exact comparisons.
fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

fn has(text: &str, line: &str) -> bool {
    samples(text).contains(&line)
}

fn render(e: &Exporter) -> String {
    e.render().expect("our families encode")
}

#[test]
fn a_fresh_exporter_shows_the_configuration_and_zero_counters() {
    let e = Exporter::one_pass(&config());
    let text = render(&e);
    for line in [
        &format!(
            "docker_image_cleaner_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ) as &str,
        "docker_image_cleaner_watermark_ratio{watermark=\"high\"} 0.8",
        "docker_image_cleaner_watermark_ratio{watermark=\"low\"} 0.6",
        "docker_image_cleaner_watermark_ratio{watermark=\"critical\"} 0.95",
        "docker_image_cleaner_passes_total{outcome=\"failed\"} 0",
        "docker_image_cleaner_passes_total{outcome=\"reached_low\"} 0",
        "docker_image_cleaner_removals_total{engine=\"dind\",kind=\"build_cache\",reason=\"age\"} 0",
        "docker_image_cleaner_removals_total{engine=\"host\",kind=\"image\",reason=\"space\"} 0",
        "docker_image_cleaner_removals_skipped_total{engine=\"host\"} 0",
        "docker_image_cleaner_event_stream_reconnects_total{engine=\"dind\"} 0",
        "docker_image_cleaner_freed_bytes_total 0",
        "docker_image_cleaner_pass_duration_seconds_count 0",
        "docker_image_cleaner_last_success_timestamp_seconds 0.0",
        "docker_image_cleaner_node_cordoned 0",
        "docker_image_cleaner_node_cordoned_seconds_total 0.0",
    ] {
        assert!(has(&text, line), "missing {line:?} in:\n{text}");
    }
    // Every family has its help and type.
    assert!(
        text.contains("# TYPE docker_image_cleaner_passes_total counter\n")
            && text.contains("# TYPE docker_image_cleaner_pass_duration_seconds histogram\n")
            && text.contains("# TYPE docker_image_cleaner_node_cordoned gauge\n")
            && text.contains("# HELP docker_image_cleaner_freed_bytes_total Bytes freed"),
        "{text}"
    );
    // Nothing measured yet: no usage series at all.
    assert!(
        !text.contains("docker_image_cleaner_filesystem_used_ratio{"),
        "{text}"
    );
    assert!(
        !text.contains("\ndocker_image_cleaner_tree_used_bytes "),
        "{text}"
    );
}

#[test]
fn a_pass_is_counted_with_its_removals_usage_and_time() {
    let mut e = Exporter::one_pass(&config());
    let before = Measurement::Relative(vec![fs("/var/lib/docker", 900, 500)]);
    let after = Measurement::Relative(vec![fs("/var/lib/docker", 500, 250)]);
    let t = |containers, images, skipped| Tally {
        aged_images: 0,
        cache_records: 0,
        cache_bytes: 0,
        containers,
        images,
        skipped,
    };
    let r = report(
        Outcome::ReachedLow,
        before,
        after,
        &[("host", t(2, 3, 1)), ("dind", t(0, 1, 0))],
    );
    e.pass(&Ok(r), 1_700_000_000_500);
    let text = render(&e);
    for line in [
        "docker_image_cleaner_passes_total{outcome=\"reached_low\"} 1",
        "docker_image_cleaner_passes_total{outcome=\"below_high\"} 0",
        "docker_image_cleaner_removals_total{engine=\"host\",kind=\"container\",reason=\"space\"} 2",
        "docker_image_cleaner_removals_total{engine=\"host\",kind=\"image\",reason=\"space\"} 3",
        "docker_image_cleaner_removals_total{engine=\"dind\",kind=\"image\",reason=\"space\"} 1",
        "docker_image_cleaner_removals_total{engine=\"host\",kind=\"image\",reason=\"age\"} 0",
        "docker_image_cleaner_removals_skipped_total{engine=\"host\"} 1",
        // 400 blocks of 4 KiB and 250 inodes.
        "docker_image_cleaner_freed_bytes_total 1638400",
        "docker_image_cleaner_freed_inodes_total 250",
        "docker_image_cleaner_filesystem_used_ratio{path=\"/var/lib/docker\",kind=\"blocks\"} 0.5",
        "docker_image_cleaner_filesystem_used_ratio{path=\"/var/lib/docker\",kind=\"inodes\"} 0.25",
        "docker_image_cleaner_pass_duration_seconds_count 1",
        "docker_image_cleaner_pass_duration_seconds_sum 2.5",
        "docker_image_cleaner_pass_duration_seconds_bucket{le=\"1\"} 0",
        "docker_image_cleaner_pass_duration_seconds_bucket{le=\"5\"} 1",
        "docker_image_cleaner_pass_duration_seconds_bucket{le=\"+Inf\"} 1",
        "docker_image_cleaner_last_success_timestamp_seconds 1700000000.5",
    ] {
        assert!(has(&text, line), "missing {line:?} in:\n{text}");
    }

    // A failed pass is counted as such and is no success.
    let failed: Result<Report, cycle::Error> =
        Err(cycle::Error::Measure(crate::usage::Error::Access {
            path: "/var/lib/docker".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }));
    e.pass(&failed, 1_700_000_900_000);
    let text = render(&e);
    assert!(
        has(
            &text,
            "docker_image_cleaner_passes_total{outcome=\"failed\"} 1"
        ),
        "{text}"
    );
    assert!(
        has(
            &text,
            "docker_image_cleaner_last_success_timestamp_seconds 1700000000.5"
        ),
        "{text}"
    );
    assert!(
        has(&text, "docker_image_cleaner_pass_duration_seconds_count 1"),
        "{text}"
    );
}

#[test]
fn something_else_writing_meanwhile_frees_nothing_and_a_skipped_pass_is_no_success() {
    let mut e = Exporter::one_pass(&config());
    let before = Measurement::Relative(vec![fs("/var/lib/docker", 800, 100)]);
    let after = Measurement::Relative(vec![fs("/var/lib/docker", 850, 120)]);
    e.pass(&Ok(report(Outcome::Skipped, before, after, &[])), 1_000);
    let text = render(&e);
    assert!(
        has(&text, "docker_image_cleaner_freed_bytes_total 0"),
        "{text}"
    );
    assert!(
        has(&text, "docker_image_cleaner_freed_inodes_total 0"),
        "{text}"
    );
    assert!(
        has(
            &text,
            "docker_image_cleaner_passes_total{outcome=\"skipped\"} 1"
        ),
        "{text}"
    );
    assert!(
        has(
            &text,
            "docker_image_cleaner_last_success_timestamp_seconds 0.0"
        ),
        "{text}"
    );
}

#[test]
fn a_filesystem_no_longer_measured_disappears_and_absolute_mode_shows_the_trees() {
    let mut e = Exporter::one_pass(&config());
    let two = Measurement::Relative(vec![fs("/a", 100, 10), fs("/b", 200, 20)]);
    e.pass(&Ok(report(Outcome::BelowHigh, two.clone(), two, &[])), 1);
    let text = render(&e);
    assert!(
        has(
            &text,
            "docker_image_cleaner_filesystem_used_ratio{path=\"/b\",kind=\"blocks\"} 0.2"
        ),
        "{text}"
    );
    let one = Measurement::Relative(vec![fs("/a", 300, 10)]);
    e.pass(&Ok(report(Outcome::BelowHigh, one.clone(), one, &[])), 2);
    let text = render(&e);
    assert!(
        has(
            &text,
            "docker_image_cleaner_filesystem_used_ratio{path=\"/a\",kind=\"blocks\"} 0.3"
        ),
        "{text}"
    );
    assert!(!text.contains("path=\"/b\""), "{text}");

    let mut absolute = config();
    absolute.watermarks = Watermarks::Absolute {
        high_bytes: 50 << 30,
        low_bytes: 40 << 30,
    };
    e.reload(&absolute);
    let tree = Measurement::Absolute(TreeUsage {
        bytes: 45 << 30,
        inodes: 12345,
        unreadable: 0,
    });
    e.pass(&Ok(report(Outcome::BelowHigh, tree.clone(), tree, &[])), 3);
    let text = render(&e);
    for line in [
        "docker_image_cleaner_tree_used_bytes 48318382080",
        "docker_image_cleaner_tree_used_inodes 12345",
        "docker_image_cleaner_watermark_bytes{watermark=\"high\"} 53687091200",
        "docker_image_cleaner_watermark_bytes{watermark=\"low\"} 42949672960",
        "docker_image_cleaner_watermark_ratio{watermark=\"critical\"} 0.95",
    ] {
        assert!(has(&text, line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("filesystem_used_ratio{"), "{text}");
    assert!(!text.contains("watermark=\"high\"} 0.8"), "{text}");

    // And back: the trees go, the percentages come back.
    e.reload(&config());
    let one = Measurement::Relative(vec![fs("/a", 300, 10)]);
    e.pass(&Ok(report(Outcome::BelowHigh, one.clone(), one, &[])), 4);
    let text = render(&e);
    assert!(!text.contains("tree_used_bytes "), "{text}");
    assert!(!text.contains("watermark_bytes{"), "{text}");
    assert!(
        has(
            &text,
            "docker_image_cleaner_watermark_ratio{watermark=\"high\"} 0.8"
        ),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_cordon_is_read_as_it_is_at_the_scrape() {
    let e = Exporter::one_pass(&config());
    let clock = e.clock();
    let t0 = tokio::time::Instant::now();
    clock.note(Some(t0), t0);
    tokio::time::advance(Duration::from_secs(7)).await;
    let text = render(&e);
    assert!(has(&text, "docker_image_cleaner_node_cordoned 1"), "{text}");
    assert!(
        has(
            &text,
            "docker_image_cleaner_node_cordoned_seconds_total 7.0"
        ),
        "{text}"
    );
    clock.note(None, tokio::time::Instant::now());
    tokio::time::advance(Duration::from_secs(100)).await;
    let text = render(&e);
    assert!(has(&text, "docker_image_cleaner_node_cordoned 0"), "{text}");
    assert!(
        has(
            &text,
            "docker_image_cleaner_node_cordoned_seconds_total 7.0"
        ),
        "{text}"
    );
}

#[test]
fn reconnects_are_counted_per_engine() {
    let e = Exporter::one_pass(&config());
    let host = e.reconnects("host");
    host.inc();
    host.inc();
    let text = render(&e);
    assert!(
        has(
            &text,
            "docker_image_cleaner_event_stream_reconnects_total{engine=\"host\"} 2"
        ),
        "{text}"
    );
    assert!(
        has(
            &text,
            "docker_image_cleaner_event_stream_reconnects_total{engine=\"dind\"} 0"
        ),
        "{text}"
    );
}

#[test]
fn the_textfile_follows_the_passes_and_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.prom");
    let mut c = config();
    c.metrics_textfile = Some(first.clone());
    let mut e = Exporter::one_pass(&c);
    // `once` writes after its pass only.
    assert!(!first.exists());
    let m = Measurement::Relative(vec![fs("/a", 100, 10)]);
    e.pass(&Ok(report(Outcome::BelowHigh, m.clone(), m, &[])), 1);
    let text = std::fs::read_to_string(&first).unwrap();
    assert_eq!(text, render(&e));
    assert!(
        has(
            &text,
            "docker_image_cleaner_passes_total{outcome=\"below_high\"} 1"
        ),
        "{text}"
    );

    let second = dir.path().join("b.prom");
    c.metrics_textfile = Some(second.clone());
    c.critical_pct = 97.0;
    e.reload(&c);
    let text = std::fs::read_to_string(&second).unwrap();
    assert!(
        has(
            &text,
            "docker_image_cleaner_watermark_ratio{watermark=\"critical\"} 0.97"
        ),
        "{text}"
    );
}

#[test]
fn the_daemon_writes_the_textfile_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dic.prom");
    let mut c = config();
    c.metrics_textfile = Some(path.clone());
    let e = Exporter::daemon(&c, &CancellationToken::new()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, render(&e));
    assert!(
        has(
            &text,
            "docker_image_cleaner_passes_total{outcome=\"reached_low\"} 0"
        ),
        "{text}"
    );
}

// The endpoint, over loopback.

/// Sends `request` and reads the answer to its end (the server closes: one request per
/// connection), bounded.
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn endpoint(limits: serve::Limits) -> (Exporter, serve::Server, SocketAddr) {
    let e = Exporter::one_pass(&config());
    let listener = serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve::spawn_with(
        listener,
        addr,
        Arc::clone(&e.registry),
        CancellationToken::new(),
        limits,
    )
    .unwrap();
    (e, server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_answers_get_metrics_only() {
    let (e, _server, addr) = endpoint(serve::Limits::default());
    let ok = blocking(move || exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")).await;
    let (head, body) = ok.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert_eq!(body, render(&e));

    let gone = blocking(move || exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")).await;
    assert!(gone.starts_with("HTTP/1.1 404 Not Found\r\n"), "{gone}");
    let post = blocking(move || {
        exchange(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
    })
    .await;
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{post}"
    );
    assert!(
        post.to_ascii_lowercase().contains("allow: get\r\n"),
        "{post}"
    );
    let garbage = blocking(move || exchange(addr, "\x16\x03\x01 not http\r\n\r\n")).await;
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_cut_off() {
    let (_e, _server, addr) = endpoint(serve::Limits {
        header_read: Duration::from_millis(300),
        ..serve::Limits::default()
    });
    // A client that never sends its request is closed after the header read timeout (well
    // before the 10 s of its own read timeout, which would make read_to_end fail).
    let closed = blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map(|_| buf)
    })
    .await;
    match closed {
        Ok(buf) => assert!(
            buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&buf)
        ),
        Err(e) => panic!("the silent connection was not closed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connections_are_bounded_and_the_server_stops_when_dropped() {
    let (_e, server, addr) = endpoint(serve::Limits {
        connections: 2,
        ..serve::Limits::default()
    });
    // Two silent clients hold both slots: a third one is answered only once a slot frees.
    let third = blocking(move || {
        let a = TcpStream::connect(addr).unwrap();
        let b = TcpStream::connect(addr).unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut first = [0u8; 1];
        let early = c.read(&mut first).is_ok();
        drop((a, b));
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        (early, answer)
    })
    .await;
    assert!(!third.0, "answered while both slots were held");
    assert!(third.1.starts_with("HTTP/1.1 200 OK"), "{}", third.1);

    // Dropped, the server stops listening.
    drop(server);
    assert!(
        blocking(move || wait_refused(addr)).await,
        "still accepting after the server was dropped"
    );
}

/// Whether connecting to `addr` is refused within a few seconds (the task stops when the
/// runtime next gets to it).
fn wait_refused(addr: SocketAddr) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if TcpStream::connect(addr).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[tokio::test]
async fn an_address_in_use_fails_the_start_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config();
    c.metrics_listen = Some(taken.local_addr().unwrap());
    let e = match Exporter::daemon(&c, &CancellationToken::new()) {
        Ok(_) => panic!("bound an address in use"),
        Err(e) => crate::error_chain(&e),
    };
    assert!(
        e.contains(&taken.local_addr().unwrap().to_string()) && e.contains("metrics_listen"),
        "{e}"
    );
}
