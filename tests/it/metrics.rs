//! The metrics as an operator's Prometheus sees them: the daemon cleans a private dockerd, and
//! its figures are scraped through Debian's `prometheus-node-exporter` (textfile collector) and
//! from `metrics_listen`, each over loopback with a plain HTTP/1.0 GET, and checked with
//! `promtool check metrics`, which must report nothing.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use docker_image_cleaner::metrics::Exporter;
use docker_image_cleaner::node::Cordoner;
use serde_json::json;

use crate::kube_fake::{FakeKube, quick_timing};
use crate::util::cleaner::Cleaner;
use crate::util::cli::EngineCli;
use crate::util::dockerd::PrivateDockerd;
use crate::util::host;
use crate::util::require::{Service, require};
use crate::util::wait_until;

/// Bound of anything the daemon or the exporter should do "soon".
const MINUTE: Duration = Duration::from_secs(60);

/// A loopback port nobody listens on now (the kernel's pick; free again once dropped).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

/// An answer: status code, head, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// `METHOD path` over a fresh connection as HTTP/1.0 (no chunked answer, closed at the end),
/// read to the end (bounded).
fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// `GET /metrics` on `addr`, which must answer 200.
fn scrape(addr: SocketAddr) -> String {
    let a = request(addr, "GET", "/metrics").unwrap_or_else(|e| panic!("scraping {addr}: {e}"));
    assert_eq!(a.status, 200, "{}\n{}", a.head, a.body);
    a.body
}

/// What `promtool check metrics` says of `text` (written to `dir`): `Ok` when it reports
/// nothing and exits 0.
fn promtool(dir: &Path, text: &str) -> Result<(), String> {
    let file = dir.join("scraped.txt");
    fs::write(&file, text).expect("write the scrape");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "promtool check metrics < \"$1\"", "sh"])
        .arg(&file);
    let out = host::run(cmd, MINUTE);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics ({}): {said}", out.status))
    }
}

/// A sample line split: the name, the labels sorted (exporters may reorder them), the value.
type Sample = (String, Vec<(String, String)>, String);

/// A sample line split (see [`Sample`]); `None` for anything else.
fn sample(line: &str) -> Option<Sample> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series.to_string(), Vec::new(), value.to_string()));
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        // The value runs to the next quote that is not escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end?;
        labels.push((
            key.trim_start_matches(',').to_string(),
            after[..end].to_string(),
        ));
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels.sort();
    Some((name.to_string(), labels, value.to_string()))
}

/// The value of the sample `series` (`name{labels}` in any label order, or a bare name).
fn value(text: &str, series: &str) -> Option<f64> {
    let (name, labels, _) = sample(&format!("{series} 0"))?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(sample)
        .find(|(n, l, _)| *n == name && *l == labels)
        .and_then(|(_, _, v)| v.parse().ok())
}

/// The value of `series`, which must be there.
fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Unix seconds now.
fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// What the pass did, seen from Docker: (containers removed, images removed).
struct Gone {
    containers: usize,
    images: usize,
}

/// A dockerd and a cleaner of it, with its watermarks.
struct Setup {
    d: PrivateDockerd,
    cleaner: Cleaner,
    high: f64,
    low: f64,
}

/// A dockerd with a stopped container, three images and a dangling one, and a cleaner whose
/// watermarks make its pass remove some of them (`extra`: the metrics settings).
fn cleaning_setup(name: &str, extra: &str) -> Option<Setup> {
    let d = PrivateDockerd::start(name, 512, None)?;
    d.image("app-a:1", 30);
    d.image("app-b:1", 30);
    d.image("app-c:1", 30);
    d.dangling_image(30);
    d.stopped_container("app-a:1");
    let (used, _) = d.used_pct();
    let high = (used - 2.0).floor();
    let low = high - 8.0;
    let cleaner = Cleaner::new(
        &d,
        &format!("threshold_high = {high}\nthreshold_low = {low}\n{extra}"),
    );
    Some(Setup {
        d,
        cleaner,
        high,
        low,
    })
}

/// Runs the daemon until its first pass is over (`STATUS=idle…`); returns it still running,
/// what the pass removed, and the Unix time before it started.
fn first_pass(s: &Setup) -> (crate::util::daemon::Daemon, Gone, f64) {
    let (d, cleaner) = (&s.d, &s.cleaner);
    let (images, containers) = (d.image_ids().len(), d.container_ids().len());
    let started = now_secs();
    let mut daemon = cleaner.spawn(&["run"]);
    daemon.ready(MINUTE);
    daemon.wait_status("idle", Duration::from_secs(300));
    let gone = Gone {
        containers: containers - d.container_ids().len(),
        images: images - d.image_ids().len(),
    };
    assert!(
        gone.images > 0 && gone.containers == 1,
        "the pass was meant to remove things:\n{}",
        daemon.context()
    );
    (daemon, gone, started)
}

/// The figures of the one pass, as any scrape of our families must show them.
fn assert_pass_figures(text: &str, s: &Setup, gone: &Gone, started: f64) {
    let d = &s.d;
    let path = d.data_root().display().to_string();
    let removals = |kind: &str, reason: &str| {
        must(
            text,
            &format!(
                "docker_image_cleaner_removals_total{{engine=\"default\",kind=\"{kind}\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert_eq!(
        removals("container", "space"),
        gone.containers as f64,
        "{text}"
    );
    assert_eq!(removals("image", "space"), gone.images as f64, "{text}");
    assert_eq!(removals("build_cache", "space"), 0.0, "{text}");
    assert_eq!(removals("image", "age"), 0.0, "{text}");
    assert_eq!(
        must(
            text,
            "docker_image_cleaner_passes_total{outcome=\"reached_low\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        must(
            text,
            "docker_image_cleaner_passes_total{outcome=\"failed\"}"
        ),
        0.0
    );
    assert_eq!(
        must(text, "docker_image_cleaner_pass_duration_seconds_count"),
        1.0
    );
    let freed = must(text, "docker_image_cleaner_freed_bytes_total");
    assert!(freed > 0.0, "freed {freed}: {text}");
    // What the filesystem reads now, nothing having written since the pass.
    let (blocks_pct, inodes_pct) = d.used_pct();
    let ratio = |kind: &str| {
        must(
            text,
            &format!(
                "docker_image_cleaner_filesystem_used_ratio{{path=\"{path}\",kind=\"{kind}\"}}"
            ),
        )
    };
    assert!(
        (ratio("blocks") - blocks_pct / 100.0).abs() < 0.01,
        "blocks {} vs {blocks_pct}%: {text}",
        ratio("blocks")
    );
    assert!(
        (ratio("inodes") - inodes_pct / 100.0).abs() < 0.01,
        "inodes {} vs {inodes_pct}%",
        ratio("inodes")
    );
    let watermark = |w: &str| {
        must(
            text,
            &format!("docker_image_cleaner_watermark_ratio{{watermark=\"{w}\"}}"),
        )
    };
    assert!(
        (watermark("high") - s.high / 100.0).abs() < 1e-9
            && (watermark("low") - s.low / 100.0).abs() < 1e-9,
        "{text}"
    );
    let success = must(text, "docker_image_cleaner_last_success_timestamp_seconds");
    assert!(
        success >= started.floor() && success <= now_secs(),
        "last success {success}, started {started}"
    );
    assert_eq!(must(text, "docker_image_cleaner_node_cordoned"), 0.0);
    assert_eq!(
        must(text, "docker_image_cleaner_node_cordoned_seconds_total"),
        0.0
    );
    assert_eq!(
        must(
            text,
            "docker_image_cleaner_event_stream_reconnects_total{engine=\"default\"}"
        ),
        0.0
    );
    assert!(
        text.contains(&format!(
            "docker_image_cleaner_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

/// Debian's node_exporter with only its textfile collector, on a loopback port; killed when
/// dropped.
struct NodeExporter {
    child: Child,
    addr: SocketAddr,
}

impl NodeExporter {
    fn start(textfile_dir: &Path) -> NodeExporter {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let child = Command::new("prometheus-node-exporter")
            .arg(format!(
                "--collector.textfile.directory={}",
                textfile_dir.display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            // The other collectors read /proc, /sys and systemd, which test machines vary in.
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning prometheus-node-exporter");
        let mut exporter = NodeExporter { child, addr };
        let up = wait_until(MINUTE, || {
            request(addr, "GET", "/metrics").is_ok_and(|a| a.status == 200)
                || matches!(exporter.child.try_wait(), Ok(Some(_)))
        });
        assert!(
            up && matches!(exporter.child.try_wait(), Ok(None)),
            "prometheus-node-exporter did not come up on {addr}"
        );
        exporter
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_node_exporter_shows_the_textfile_of_each_pass() {
    if !require(Service::NodeExporter) || !require(Service::Promtool) {
        return;
    }
    let textfiles = tempfile::tempdir().expect("temp dir");
    let textfile = textfiles.path().join("docker-image-cleaner.prom");
    // Another collector's file in the same directory is left alone.
    let other = textfiles.path().join("other.prom");
    fs::write(&other, "# TYPE other_up gauge\nother_up 1\n").expect("write other.prom");
    let Some(s) = cleaning_setup(
        "metrics-text",
        &format!("metrics_textfile = {:?}\n", textfile.display().to_string()),
    ) else {
        return;
    };
    let (mut daemon, gone, started) = first_pass(&s);
    let written = fs::read_to_string(&textfile).expect("the textfile is written");
    assert_pass_figures(&written, &s, &gone, started);
    let check = tempfile::tempdir().expect("temp dir");
    promtool(check.path(), &written).unwrap_or_else(|e| panic!("the textfile: {e}"));

    let exporter = NodeExporter::start(textfiles.path());
    let scraped = scrape(exporter.addr);
    assert_eq!(
        must(&scraped, "node_textfile_scrape_error"),
        0.0,
        "the textfile collector refused a file:\n{scraped}"
    );
    assert_pass_figures(&scraped, &s, &gone, started);
    assert_eq!(must(&scraped, "other_up"), 1.0);
    promtool(check.path(), &scraped).unwrap_or_else(|e| panic!("the node_exporter scrape: {e}"));
    // Only the two files: no temporary file is left behind.
    let mut names: Vec<String> = fs::read_dir(textfiles.path())
        .expect("read the textfile directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["docker-image-cleaner.prom", "other.prom"]);
    daemon.terminate(MINUTE);

    // `once --dry-run` may run beside the daemon: it leaves the textfile alone; `once` writes
    // its one pass (below the high watermark now).
    fs::remove_file(&textfile).expect("remove the textfile");
    s.cleaner.run_ok(&["once", "--dry-run"]);
    assert!(!textfile.exists(), "a dry run wrote the textfile");
    s.cleaner.run_ok(&["once"]);
    let written = fs::read_to_string(&textfile).expect("once writes the textfile");
    assert_eq!(
        must(
            &written,
            "docker_image_cleaner_passes_total{outcome=\"below_high\"}"
        ),
        1.0,
        "{written}"
    );
    promtool(check.path(), &written).unwrap_or_else(|e| panic!("the textfile of once: {e}"));
}

#[test]
fn metrics_listen_serves_the_pass_and_nothing_else() {
    if !require(Service::Promtool) {
        return;
    }
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let Some(mut s) = cleaning_setup("metrics-listen", &format!("metrics_listen = \"{addr}\"\n"))
    else {
        return;
    };
    let (mut daemon, gone, started) = first_pass(&s);
    let a = request(addr, "GET", "/metrics").expect("scrape");
    assert_eq!(a.status, 200, "{}", a.head);
    assert!(
        a.head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        a.head
    );
    assert_pass_figures(&a.body, &s, &gone, started);
    let check = tempfile::tempdir().expect("temp dir");
    promtool(check.path(), &a.body).unwrap_or_else(|e| panic!("the endpoint: {e}"));

    assert_eq!(request(addr, "GET", "/").expect("GET /").status, 404);
    assert_eq!(
        request(addr, "GET", "/metrics/x")
            .expect("GET /metrics/x")
            .status,
        404
    );
    let post = request(addr, "POST", "/metrics").expect("POST");
    assert_eq!(post.status, 405, "{}", post.head);
    assert!(
        post.head.to_ascii_lowercase().contains("allow: get"),
        "{}",
        post.head
    );

    // Docker restarts: the event stream is opened again, and counted (scraped while it happens).
    s.d.restart();
    let reconnects = "docker_image_cleaner_event_stream_reconnects_total{engine=\"default\"}";
    assert!(
        wait_until(MINUTE, || value(&scrape(addr), reconnects) >= Some(1.0)),
        "no reconnect counted:\n{}\n{}",
        scrape(addr),
        daemon.context()
    );

    // A second daemon on the same address fails at start, exit 1, naming the address, before
    // it tells systemd it is ready.
    let second = Cleaner::new(&s.d, &format!("metrics_listen = \"{addr}\"\n"));
    let mut refused = second.spawn(&["run"]);
    let status = refused.wait_exit(MINUTE);
    assert_eq!(status.code(), Some(1), "{}", refused.context());
    let log = refused.log();
    assert!(
        log.contains(&format!("cannot listen for metrics on {addr}")) && log.contains("in use"),
        "{log}"
    );
    assert!(refused.statuses().is_empty(), "{}", refused.context());

    // The endpoint stops with the daemon.
    daemon.terminate(MINUTE);
    assert!(
        request(addr, "GET", "/metrics").is_err(),
        "still answering after the stop"
    );
}

#[tokio::test]
async fn the_cordon_shows_while_it_is_held_and_its_time_adds_up() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let config = fake.config("n1");
    let exporter = Exporter::one_pass(&config);
    let scrape = || exporter.render().expect("encode");
    let mut c = Cordoner::new(&config)
        .with_timing(quick_timing())
        .with_clock(exporter.clock());
    c.recover().await.expect("recover");
    assert_eq!(must(&scrape(), "docker_image_cleaner_node_cordoned"), 0.0);

    c.begin_pass().await;
    assert!(c.holds_cordon());
    let held = scrape();
    assert_eq!(
        must(&held, "docker_image_cleaner_node_cordoned"),
        1.0,
        "{held}"
    );
    c.end_pass(None).await;
    assert!(!c.holds_cordon());
    let after = scrape();
    assert_eq!(must(&after, "docker_image_cleaner_node_cordoned"), 0.0);
    let first = must(&after, "docker_image_cleaner_node_cordoned_seconds_total");
    assert!(first > 0.0, "{after}");

    // A guard rebuilt on reload keeps counting on the same clock.
    let mut c = Cordoner::new(&config)
        .with_timing(quick_timing())
        .with_clock(c.clock());
    c.begin_pass().await;
    c.end_pass(None).await;
    let second = must(
        &scrape(),
        "docker_image_cleaner_node_cordoned_seconds_total",
    );
    assert!(second > first, "{second} after {first}");
}
