//! What a replay prints and writes: the table per shape, the sweep of watermarks and min ages,
//! the CSV, and the sanity check (Belady's optimum re-pulls no more than any policy).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::node::Stats;
use crate::trace::GIB;

/// One replay: a policy on one trace.
#[derive(Debug, Clone)]
pub struct Run {
    /// Trace shape.
    pub shape: &'static str,
    /// Trace seed.
    pub seed: u64,
    /// "main" (the comparison) or "sweep" (watermarks and min ages).
    pub group: &'static str,
    /// The policy's label.
    pub policy: String,
    /// The policy's settings, for the CSV.
    pub settings: Settings,
    /// Disk size.
    pub capacity: u64,
    /// Unique bytes of the catalog at the start.
    pub catalog: u64,
    /// The counters.
    pub stats: Stats,
    /// Usage per time bucket, percent.
    pub series: Vec<f32>,
}

/// A policy's settings as columns.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Strategy or peer name.
    pub strategy: String,
    /// High watermark, %.
    pub high: f64,
    /// Low watermark, %.
    pub low: f64,
    /// Min age, seconds.
    pub min_age_s: u64,
    /// Reacts at once to a pull above high.
    pub react: bool,
    /// Image sizes the engine reports: "reported" or "exclusive".
    pub sizes: &'static str,
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB as f64
}

#[derive(Default)]
struct Sum {
    n: u64,
    again: u64,
    cold: u64,
    uses: u64,
    hits: u64,
    cleanings: u64,
    cordons: u64,
    busy_ms: i64,
    peak: f64,
    full: u64,
    lost: u64,
    waited: u64,
    wait_ms: i64,
    removed: u64,
    removed_nothing: u64,
}

impl Sum {
    fn add(&mut self, s: &Stats) {
        self.n += 1;
        self.again += s.repulled();
        self.cold += s.cold_bytes;
        self.uses += s.uses;
        self.hits += s.hits;
        self.cleanings += s.cleanings;
        self.cordons += s.cordons;
        self.busy_ms += s.busy_ms;
        self.peak = self.peak.max(s.peak_pct);
        self.full += s.full;
        self.lost += s.lost;
        self.waited += s.waited;
        self.wait_ms += s.wait_ms;
        self.removed += s.removed;
        self.removed_nothing += s.removed_nothing;
    }

    fn mean(&self, x: u64) -> f64 {
        x as f64 / self.n.max(1) as f64
    }
}

/// Sums per (shape, policy) of `group`, policies in first-seen order.
fn sums<'a>(runs: &'a [Run], group: &str) -> BTreeMap<&'a str, Vec<(&'a str, Sum)>> {
    let mut out: BTreeMap<&str, Vec<(&str, Sum)>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.group == group) {
        let rows = out.entry(r.shape).or_default();
        let at = match rows.iter().position(|(p, _)| *p == r.policy) {
            Some(at) => at,
            None => {
                rows.push((r.policy.as_str(), Sum::default()));
                rows.len() - 1
            }
        };
        rows[at].1.add(&r.stats);
    }
    out
}

fn belady_again(runs: &[Run], shape: &str) -> u64 {
    runs.iter()
        .filter(|r| r.shape == shape && r.group == "main" && r.policy.starts_with("belady"))
        .map(|r| r.stats.repulled())
        .sum()
}

fn ratio(again: u64, belady: u64) -> String {
    if belady == 0 {
        if again == 0 { "1.00" } else { "inf" }.to_string()
    } else {
        format!("{:.2}", again as f64 / belady as f64)
    }
}

/// The main table, one block per shape (means per trace over the seeds).
pub fn table(runs: &[Run], order: &[&str], about: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let all = sums(runs, "main");
    for shape in order {
        let Some(rows) = all.get(shape) else { continue };
        let seeds = rows.first().map_or(0, |(_, s)| s.n);
        let (capacity, catalog) = runs
            .iter()
            .find(|r| r.shape == *shape)
            .map_or((0, 0), |r| (r.capacity, r.catalog));
        let _ = writeln!(
            out,
            "\n== {shape}: {}\n   {seeds} seeds; disk {:.0} GiB, catalog {:.0} GiB of unique layers at the start; means per trace",
            about.get(shape).copied().unwrap_or(""),
            gib(capacity),
            gib(catalog)
        );
        let _ = writeln!(
            out,
            "{:<26} {:>10} {:>7} {:>8} {:>6} {:>9} {:>7} {:>9} {:>6} {:>7} {:>6} {:>6} {:>8} {:>6}",
            "policy",
            "re-pulled",
            "xBelady",
            "cold",
            "hit%",
            "cleanings",
            "cordons",
            "cordon s",
            "peak%",
            "full",
            "lost",
            "wait h",
            "removed",
            "rm 0 B"
        );
        let belady = belady_again(runs, shape);
        for (policy, s) in rows {
            let _ = writeln!(
                out,
                "{:<26} {:>6.1} GiB {:>7} {:>4.0} GiB {:>6.1} {:>9.1} {:>7.1} {:>9.0} {:>6.1} {:>7.1} {:>6.1} {:>6.1} {:>8.1} {:>6.1}",
                policy,
                gib(s.again) / s.n.max(1) as f64,
                ratio(s.again, belady),
                gib(s.cold) / s.n.max(1) as f64,
                100.0 * s.hits as f64 / s.uses.max(1) as f64,
                s.mean(s.cleanings),
                s.mean(s.cordons),
                s.busy_ms as f64 / 1000.0 / s.n.max(1) as f64,
                s.peak,
                s.mean(s.full),
                s.mean(s.lost),
                s.wait_ms as f64 / 3_600_000.0 / s.n.max(1) as f64,
                s.mean(s.removed),
                s.mean(s.removed_nothing),
            );
        }
    }
    out.push_str(
        "\nre-pulled: bytes of layers pulled that had been on the node before, plus the pulls of lost\n\
         uses (another node pulls them), plus what failed pulls downloaded before the disk ran out.\n\
         cold: first pulls on this node. xBelady: re-pulled over the\n\
         offline optimum's. cleanings: passes that removed an image. cordons: passes that cordoned\n\
         (ours and the original). cordon s: seconds cordoned (ours, the original) or spent removing\n\
         (the others). full: pull attempts that found the disk full (the pod retries with back-off).\n\
         lost: uses given up after 10 min of those. wait h: hours served pods waited for room.\n\
         removed: images removed. rm 0 B: of those, removals that freed nothing (other images or\n\
         the build cache held every layer).\n",
    );
    out
}

/// The sweep: one row per setting, per shape re-pulled over Belady's, cordons and full pulls.
pub fn sweep(runs: &[Run], order: &[&str]) -> String {
    let all = sums(runs, "sweep");
    if all.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = write!(out, "\n== sweep (means per trace)\n{:<30}", "setting");
    for shape in order {
        let _ = write!(out, " | {:^35}", shape);
    }
    let _ = write!(out, "\n{:<30}", "");
    for _ in order {
        let _ = write!(
            out,
            " | {:>7} {:>8} {:>8} {:>8}",
            "xBelady", "cordons", "cordon h", "full"
        );
    }
    out.push('\n');
    let policies: Vec<&str> = all
        .values()
        .next()
        .map(|rows| rows.iter().map(|(p, _)| *p).collect())
        .unwrap_or_default();
    for policy in policies {
        let _ = write!(out, "{policy:<30}");
        for shape in order {
            let belady = belady_again(runs, shape);
            match all
                .get(shape)
                .and_then(|rows| rows.iter().find(|(p, _)| *p == policy))
            {
                Some((_, s)) => {
                    let _ = write!(
                        out,
                        " | {:>7} {:>8.1} {:>8.1} {:>8.1}",
                        ratio(s.again, belady),
                        s.mean(s.cordons),
                        s.busy_ms as f64 / 3_600_000.0 / s.n.max(1) as f64,
                        s.mean(s.full)
                    );
                }
                None => {
                    let _ = write!(out, " | {:>35}", "");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// Writes every run as one CSV row.
pub fn csv(runs: &[Run], path: &Path) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        f,
        "shape,seed,group,policy,strategy,high_pct,low_pct,min_age_s,react,sizes,capacity_bytes,\
         uses,hits,hit_rate,pulls,cold_bytes,again_bytes,full_pulls,lost_uses,lost_bytes,wasted_bytes,waited_uses,\
         wait_s,checks,cleanings,cordons,busy_s,removed_images,peak_pct,removed_freeing_nothing,\
         cache_pruned_bytes,builds,failed_builds"
    )?;
    for r in runs {
        let s = &r.stats;
        let c = &r.settings;
        writeln!(
            f,
            "{},{},{},\"{}\",{},{},{},{},{},{},{},{},{},{:.4},{},{},{},{},{},{},{},{},{:.1},{},{},{},{:.1},{},{:.2},{},{},{},{}",
            r.shape,
            r.seed,
            r.group,
            r.policy,
            c.strategy,
            c.high,
            c.low,
            c.min_age_s,
            c.react,
            c.sizes,
            r.capacity,
            s.uses,
            s.hits,
            s.hits as f64 / s.uses.max(1) as f64,
            s.pulls,
            s.cold_bytes,
            s.again_bytes,
            s.full,
            s.lost,
            s.lost_bytes,
            s.wasted_bytes,
            s.waited,
            s.wait_ms as f64 / 1000.0,
            s.checks,
            s.cleanings,
            s.cordons,
            s.busy_ms as f64 / 1000.0,
            s.removed,
            s.peak_pct,
            s.removed_nothing,
            s.cache_pruned_bytes,
            s.builds,
            s.failed_builds
        )?;
    }
    f.flush()
}

/// The sanity rules: on every shape and seed, Belady's optimum re-pulls no more than any policy
/// and never overfills the disk; every use is counted once. Returns what failed.
pub fn sanity(runs: &[Run]) -> Vec<String> {
    let mut failures = Vec::new();
    for b in runs.iter().filter(|r| r.policy.starts_with("belady")) {
        for r in runs
            .iter()
            .filter(|r| r.shape == b.shape && r.seed == b.seed && !r.policy.starts_with("belady"))
        {
            let (cost, bound) = (r.stats.repulled(), b.stats.repulled());
            if cost < bound {
                failures.push(format!(
                    "{} seed {}: {} re-pulled {:.2} GiB, less than Belady's {:.2} GiB",
                    r.shape,
                    r.seed,
                    r.policy,
                    gib(cost),
                    gib(bound)
                ));
            }
        }
    }
    for r in runs {
        if r.stats.peak_pct > 100.0 + 1e-9 {
            failures.push(format!(
                "{} seed {}: {} used {:.2} % of the disk",
                r.shape, r.seed, r.policy, r.stats.peak_pct
            ));
        }
        if r.stats.hits > r.stats.uses {
            failures.push(format!(
                "{} seed {}: {} counted more hits than uses",
                r.shape, r.seed, r.policy
            ));
        }
    }
    failures
}
