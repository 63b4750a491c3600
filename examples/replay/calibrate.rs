//! The replay against the real binaries: the benchmark's traces (`bench`) through the models of
//! ours (at the built library's defaults), docuum and the original, side by side with what the
//! real programs did on the same traces (`scripts/bench-trace.sh` writes the CSV), and the
//! model's error per policy on bytes re-pulled.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::node::{Sizes, Stats};
use crate::trace::{MIB, Trace};
use crate::{ours, peers, sim};

/// A policy of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    /// Ours at the defaults.
    Ours,
    /// Ours as it was before this benchmark (`ours main-defaults` in the CSV): fixed watermarks
    /// 82/78, a check at once after an event.
    OursBefore,
    /// Ours with both watermarks fixed, high/low percent (`ours 82/78` in the CSV).
    OursBand(u8, u8),
    /// Ours at the defaults but `delay_seconds = "adaptive"` (`ours adaptive…` in the CSV).
    OursAdaptive,
    /// docuum at this threshold, percent.
    Docuum(u64),
    /// The original tool.
    Original,
}

impl Who {
    /// From a policy's name in the benchmark's CSV (`ours…`, `docuum 80%`, `original …`).
    pub fn from_label(label: &str) -> Option<Who> {
        if label.starts_with("ours main") {
            Some(Who::OursBefore)
        } else if let Some(band) = label.strip_prefix("ours ").and_then(band) {
            Some(band)
        } else if label.starts_with("ours") && label.contains("adaptive") {
            Some(Who::OursAdaptive)
        } else if label.starts_with("ours") {
            Some(Who::Ours)
        } else if let Some(rest) = label.strip_prefix("docuum") {
            rest.trim()
                .trim_end_matches('%')
                .parse()
                .ok()
                .map(Who::Docuum)
        } else if label.starts_with("original") {
            Some(Who::Original)
        } else {
            None
        }
    }

    fn label(self) -> String {
        match self {
            Who::Ours => "ours (defaults)".into(),
            Who::OursBefore => "ours (before)".into(),
            Who::OursBand(h, l) => format!("ours {h}/{l}"),
            Who::OursAdaptive => "ours adaptive".into(),
            Who::Docuum(p) => format!("docuum {p}%"),
            Who::Original => "original (prune)".into(),
        }
    }

    /// The model's run of `trace`; ours at `band` (high, low %) instead of the defaults when
    /// given.
    pub fn replay(self, trace: &Trace, band: Option<(f64, f64)>) -> Stats {
        let node = match self {
            Who::Ours => {
                let d = docker_image_cleaner::config::Config::default();
                let o = match band {
                    None => ours::Ours::defaults(Sizes::Reported, trace.scale),
                    Some(band) => ours::Ours::new(
                        d.strategy,
                        band,
                        d.min_age,
                        true,
                        Sizes::Reported,
                        trace.scale,
                    ),
                };
                let mut o = o;
                sim::run(trace, &mut o)
            }
            Who::OursBefore => sim::run(
                trace,
                &mut ours::Ours::new(
                    docker_image_cleaner::config::Strategy::Lru2,
                    (82.0, 78.0),
                    std::time::Duration::from_secs(120),
                    true,
                    Sizes::Reported,
                    trace.scale,
                )
                .at_once(),
            ),
            Who::OursBand(h, l) => {
                let d = docker_image_cleaner::config::Config::default();
                sim::run(
                    trace,
                    &mut ours::Ours::new(
                        d.strategy,
                        (f64::from(h), f64::from(l)),
                        d.min_age,
                        true,
                        Sizes::Reported,
                        trace.scale,
                    ),
                )
            }
            Who::OursAdaptive => sim::run(
                trace,
                &mut ours::Ours::defaults(Sizes::Reported, trace.scale)
                    .with_delay(docker_image_cleaner::config::Delay::Adaptive),
            ),
            Who::Docuum(p) => sim::run(trace, &mut peers::Docuum::new(p)),
            Who::Original => sim::run(
                trace,
                &mut ours::Ours::new(
                    docker_image_cleaner::config::Strategy::Prune,
                    (80.0, 60.0),
                    std::time::Duration::ZERO,
                    false,
                    Sizes::Reported,
                    trace.scale,
                ),
            ),
        };
        node.stats
    }
}

/// `82/78` (the rest of an `ours …` label may follow): both watermarks fixed.
fn band(rest: &str) -> Option<Who> {
    let word = rest.split_whitespace().next()?;
    let (h, l) = word.split_once('/')?;
    Some(Who::OursBand(h.parse().ok()?, l.parse().ok()?))
}

/// One real run, as the benchmark's CSV has it.
#[derive(Debug, Clone, Default)]
struct Real {
    repulled_mib: f64,
    full: f64,
    served: f64,
    uses: f64,
    n: u64,
}

/// Reads the benchmark's CSV: per (policy, disk MiB, seed), the runs' means.
fn read(path: &Path) -> Result<BTreeMap<(Who, u64, u64), Real>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("{}: no column {name}", path.display()))
    };
    let (policy, seed, disk) = (col("policy")?, col("seed")?, col("disk_mib")?);
    let (repulled, full, served, uses) = (
        col("repulled_mib")?,
        col("full")?,
        col("served")?,
        col("uses")?,
    );
    let mut out: BTreeMap<(Who, u64, u64), Real> = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let num = |i: usize| {
            cells
                .get(i)
                .and_then(|c| c.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let Some(who) = cells.get(policy).and_then(|p| Who::from_label(p)) else {
            continue;
        };
        let key = (who, num(disk) as u64, num(seed) as u64);
        let r = out.entry(key).or_default();
        r.repulled_mib += num(repulled);
        r.full += num(full);
        r.served += num(served);
        r.uses += num(uses);
        r.n += 1;
    }
    for r in out.values_mut() {
        let n = r.n.max(1) as f64;
        r.repulled_mib /= n;
        r.full /= n;
        r.served /= n;
        r.uses /= n;
    }
    Ok(out)
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

/// The table of the models on `traces` (disk MiB, trace), with the real runs of `real` beside
/// them when given, and the error per policy and disk.
pub fn table(
    traces: &[(u64, Trace)],
    real: Option<&Path>,
    band: Option<(f64, f64)>,
) -> Result<String, String> {
    let real = real.map(read).transpose()?.unwrap_or_default();
    let mut whos = vec![Who::Ours, Who::Docuum(80), Who::Original];
    for (w, _, _) in real.keys() {
        if !whos.contains(w) {
            whos.push(*w);
        }
    }
    let mut out = String::new();
    // (who, disk) -> (model MiB, real MiB) summed over the seeds with a real run.
    let mut sums: BTreeMap<(Who, u64), (f64, f64)> = BTreeMap::new();
    let _ = writeln!(
        out,
        "\n== the benchmark's traces: the replay's models beside the real runs (MiB re-pulled, full-disk pulls, uses served)"
    );
    let _ = writeln!(
        out,
        "{:<18} {:>6} {:>4} | {:>9} {:>5} {:>7} | {:>9} {:>5} {:>7} | {:>7}",
        "policy", "disk", "seed", "model", "full", "served", "real", "full", "served", "error"
    );
    for (disk, t) in traces {
        for who in &whos {
            let s = who.replay(t, band);
            let model = mib(s.repulled());
            let r = real.get(&(*who, *disk, t.seed));
            let (real_cells, error) = match r {
                Some(r) => {
                    let e = sums.entry((*who, *disk)).or_default();
                    e.0 += model;
                    e.1 += r.repulled_mib;
                    (
                        format!(
                            "{:>9.0} {:>5.1} {:>3.0}/{:<3.0}",
                            r.repulled_mib, r.full, r.served, r.uses
                        ),
                        pct(model, r.repulled_mib),
                    )
                }
                None => (format!("{:>9} {:>5} {:>7}", "-", "-", "-"), "-".into()),
            };
            let _ = writeln!(
                out,
                "{:<18} {:>6} {:>4} | {:>9.0} {:>5} {:>3}/{:<3} | {} | {:>7}",
                who.label(),
                disk,
                t.seed,
                model,
                s.full,
                s.uses - s.lost,
                s.uses,
                real_cells,
                error
            );
        }
    }
    if !sums.is_empty() {
        let _ = writeln!(
            out,
            "\nthe model's error on bytes re-pulled, per policy and disk (all seeds together):"
        );
        for ((who, disk), (model, r)) in &sums {
            let _ = writeln!(
                out,
                "  {:<18} {:>6} MiB: model {:>6.0} MiB, real {:>6.0} MiB: {}",
                who.label(),
                disk,
                model,
                r,
                pct(*model, *r)
            );
        }
    }
    Ok(out)
}

/// The model's error against the real figure, signed, percent.
fn pct(model: f64, real: f64) -> String {
    if real <= 0.0 {
        if model <= 0.0 {
            "0 %".into()
        } else {
            "n/a".into()
        }
    } else {
        format!("{:+.0} %", 100.0 * (model - real) / real)
    }
}

#[cfg(test)]
mod tests {
    use super::Who;

    #[test]
    fn labels_of_the_csv_name_their_models() {
        assert_eq!(Who::from_label("ours"), Some(Who::Ours));
        assert_eq!(Who::from_label("ours main-defaults"), Some(Who::OursBefore));
        assert_eq!(Who::from_label("ours 82/78"), Some(Who::OursBand(82, 78)));
        assert_eq!(Who::from_label("ours adaptive"), Some(Who::OursAdaptive));
        assert_eq!(Who::from_label("docuum 80%"), Some(Who::Docuum(80)));
        assert_eq!(Who::from_label("original 1.0.0b3"), Some(Who::Original));
        assert_eq!(Who::from_label("kubelet"), None);
    }
}
