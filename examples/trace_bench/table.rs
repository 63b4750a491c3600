//! The benchmark's CSV (one row per run, appended) and its table: per disk size and seed, one
//! line per policy; then per disk size the means over the seeds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, bail};

use crate::run::Outcome;
use crate::trace::Trace;

const MIB: f64 = 1024.0 * 1024.0;

/// The columns, in order.
const HEADER: &str = "engine,policy,seed,disk_mib,uses,served,hits,lost,pulls,cold_mib,again_mib,\
wasted_mib,lost_mib,repulled_mib,full,load_errors,run_errors,waited,wait_s,cordons,cordon_s,\
patches,left_cordoned,peak_pct,mean_pct,images_end,removed,cleaner_alive,run_s,load_before,load_after,\
load_s_mean,above_eviction_pct";

/// One run as a row.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Every column, by name.
    pub cells: BTreeMap<String, String>,
}

impl Row {
    /// The row of a run.
    pub fn new(
        policy: &str,
        engine: &str,
        trace: &Trace,
        o: &Outcome,
        load_before: f64,
        load_after: f64,
    ) -> Row {
        let s = &o.stats;
        let mib = |b: u64| format!("{:.1}", b as f64 / MIB);
        let values = [
            engine.to_string(),
            policy.to_string(),
            trace.seed.to_string(),
            trace.disk_mib.to_string(),
            s.uses.to_string(),
            s.served.to_string(),
            s.hits.to_string(),
            s.lost.to_string(),
            s.pulls.to_string(),
            mib(s.cold_bytes),
            mib(s.again_bytes),
            mib(s.wasted_bytes),
            mib(s.lost_bytes),
            mib(s.repulled()),
            s.full.to_string(),
            s.load_errors.to_string(),
            s.run_errors.to_string(),
            s.waited.to_string(),
            format!("{:.1}", s.wait_ms as f64 / 1000.0),
            o.cordons.to_string(),
            format!("{:.2}", o.cordon_s),
            o.patches.to_string(),
            o.left_cordoned.to_string(),
            format!("{:.2}", o.peak_pct),
            format!("{:.2}", o.mean_pct),
            o.images_end.to_string(),
            s.pulls.saturating_sub(o.images_end).to_string(),
            o.cleaner_alive.to_string(),
            format!("{:.1}", o.run_s),
            format!("{load_before:.2}"),
            format!("{load_after:.2}"),
            format!("{:.2}", s.load_ms as f64 / 1000.0 / s.pulls.max(1) as f64),
            format!("{:.1}", o.above_eviction_pct),
        ];
        Row {
            cells: HEADER.split(',').map(str::to_string).zip(values).collect(),
        }
    }

    fn get(&self, k: &str) -> &str {
        self.cells.get(k).map_or("", String::as_str)
    }

    fn num(&self, k: &str) -> f64 {
        self.get(k).parse().unwrap_or(0.0)
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        format!(
            "{} on {} MiB, seed {}: re-pulled {} MiB (again {}, failed pulls {}, lost {}), {} full-disk pulls, served {} of {}, {} cordons ({} s), usage peak {} % mean {} %, above 85 % {} % of the time{}",
            self.get("policy"),
            self.get("disk_mib"),
            self.get("seed"),
            self.get("repulled_mib"),
            self.get("again_mib"),
            self.get("wasted_mib"),
            self.get("lost_mib"),
            self.get("full"),
            self.get("served"),
            self.get("uses"),
            self.get("cordons"),
            self.get("cordon_s"),
            self.get("peak_pct"),
            self.get("mean_pct"),
            self.get("above_eviction_pct"),
            if self.get("cleaner_alive") == "true" {
                ""
            } else {
                "; THE CLEANER HAD EXITED"
            }
        )
    }
}

/// Appends `row` to `path`, writing the header first when the file is new.
pub fn append(path: &Path, row: &Row) -> anyhow::Result<()> {
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if new {
        writeln!(f, "{HEADER}")?;
    }
    let line: Vec<&str> = HEADER.split(',').map(|k| row.get(k)).collect();
    writeln!(f, "{}", line.join(","))?;
    Ok(())
}

/// Reads every row of `path`.
pub fn read(path: &Path) -> anyhow::Result<Vec<Row>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty CSV")?.split(',').collect();
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != header.len() {
            bail!("{}: a row of {} cells: {line}", path.display(), cells.len());
        }
        rows.push(Row {
            cells: header
                .iter()
                .map(|h| h.to_string())
                .zip(cells.iter().map(|c| c.to_string()))
                .collect(),
        });
    }
    Ok(rows)
}

/// The table: per (engine, disk, seed) a block, one line per policy; then the means per disk.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    let line = |out: &mut String, label: &str, r: &[&Row]| {
        let n = r.len().max(1) as f64;
        let mean = |k: &str| r.iter().map(|x| x.num(k)).sum::<f64>() / n;
        let _ = writeln!(
            out,
            "  {:<22} {:>9.0} {:>7.0} {:>7.0} {:>6.1} {:>8.1}/{:<4.0} {:>5.1} {:>8.1} {:>8.1} {:>6.1} {:>6.1} {:>6.1}",
            label,
            mean("repulled_mib"),
            mean("again_mib"),
            mean("wasted_mib") + mean("lost_mib"),
            mean("full"),
            mean("served"),
            mean("uses"),
            mean("lost"),
            mean("cordons"),
            mean("cordon_s"),
            mean("peak_pct"),
            mean("mean_pct"),
            mean("above_eviction_pct"),
        );
    };
    let head = format!(
        "  {:<22} {:>9} {:>7} {:>7} {:>6} {:>13} {:>5} {:>8} {:>8} {:>6} {:>6} {:>6}\n",
        "policy",
        "re-pulled",
        "again",
        "failed",
        "full",
        "served/uses",
        "lost",
        "cordons",
        "cordon s",
        "peak%",
        "mean%",
        ">85%"
    );
    let mut groups: BTreeMap<(String, i64, i64), Vec<&Row>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((
                r.get("engine").to_string(),
                -(r.num("disk_mib") as i64),
                r.num("seed") as i64,
            ))
            .or_default()
            .push(r);
    }
    for ((engine, disk, seed), rs) in &groups {
        let _ = writeln!(out, "\n== {engine}, disk {} MiB, seed {seed} (MiB)", -disk);
        out.push_str(&head);
        for r in rs {
            line(&mut out, r.get("policy"), &[r]);
        }
    }
    let mut means: BTreeMap<(String, i64), BTreeMap<String, Vec<&Row>>> = BTreeMap::new();
    for r in rows {
        means
            .entry((r.get("engine").to_string(), -(r.num("disk_mib") as i64)))
            .or_default()
            .entry(r.get("policy").to_string())
            .or_default()
            .push(r);
    }
    for ((engine, disk), policies) in &means {
        let seeds = policies.values().map(Vec::len).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "\n== {engine}, disk {} MiB: means of {seeds} runs per policy (MiB)",
            -disk
        );
        out.push_str(&head);
        for (policy, rs) in policies {
            line(&mut out, policy, rs);
        }
    }
    out.push_str(
        "\nre-pulled: layers loaded again after a removal (again), plus what pulls that found the disk\n\
         full would have downloaded and the pulls of lost uses (failed). full: loads that found the\n\
         disk full. lost: uses given up after ten scaled minutes of those. cordon s: seconds the\n\
         node was cordoned (the fake API's record). peak%, mean%: the filesystem's usage, sampled\n\
         every 200 ms. >85%: share of the run above 85 %, the kubelet's default image-filesystem\n\
         eviction threshold (imagefs.available<15%): on a node, time its pods may be evicted.\n",
    );
    out
}
