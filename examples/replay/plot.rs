//! The PNG of usage over time: one panel per policy, stacked, on one seed of one shape.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Run;
use crate::trace::GIB;

/// Errors of the plot (plotters' errors are generic; their text is enough here).
pub type PlotResult = Result<(), String>;

/// Registers the font every label uses; `path` is a TrueType file.
pub fn use_font(path: &Path) -> PlotResult {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the font {} ({e}); install fonts-dejavu-core or pass --font",
            path.display()
        )
    })?;
    // plotters keeps the font for the whole process: leaking the one file is what it asks for.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{} is not a TrueType font", path.display()))
}

/// Draws `runs` (one trace, several policies) to `path`; a bucket of a series is `bucket_days`.
pub fn usage(runs: &[&Run], bucket_days: f64, title: &str, path: &Path) -> PlotResult {
    let days = runs.iter().map(|r| r.series.len()).max().unwrap_or(1) as f64 * bucket_days;
    let panel_h = 150u32;
    let height = 60 + panel_h * u32::try_from(runs.len()).unwrap_or(1);
    let root = BitMapBackend::new(path, (1400, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let panels = root.split_evenly((runs.len(), 1));
    for (run, area) in runs.iter().zip(panels) {
        let label = format!(
            "{} (x: days, y: % of the disk used): re-pulled {:.1} GiB, {} full-disk pulls, {} lost uses, {} cordons/cleanings",
            run.policy,
            run.stats.repulled() as f64 / GIB as f64,
            run.stats.full,
            run.stats.lost,
            run.stats.cordons.max(run.stats.cleanings),
        );
        let mut chart = ChartBuilder::on(&area)
            .caption(label, ("sans-serif", 16))
            .margin_left(10)
            .margin_right(20)
            .x_label_area_size(22)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..days, 0f64..100f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_labels(15)
            .y_labels(5)
            .y_desc("% used")
            .label_style(("sans-serif", 12))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        // Buckets with no event keep the last level seen.
        let mut level = 0f64;
        let points: Vec<(f64, f64)> = run
            .series
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if !v.is_nan() {
                    level = f64::from(*v);
                }
                (bucket_days * i as f64, level)
            })
            .collect();
        let (high, low) = (run.settings.high, run.settings.low);
        for (y, color) in [(high, RED.mix(0.5)), (low, GREEN.mix(0.5))] {
            if y > 0.0 {
                chart
                    .draw_series(LineSeries::new(vec![(0.0, y), (days, y)], color))
                    .map_err(|e| e.to_string())?;
            }
        }
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 100.0), (days, 100.0)],
                BLACK.mix(0.3),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(points, BLUE.stroke_width(1)))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
