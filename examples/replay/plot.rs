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

/// Draws `runs` (one trace, several policies) to `path`: per policy, the whole trace (the
/// highest usage of each hour) and the day `window` (from, to, in days) minute by minute.
pub fn usage(runs: &[&Run], window: (f64, f64), title: &str, path: &Path) -> PlotResult {
    let panel_h = 140u32;
    let height = 50 + panel_h * u32::try_from(runs.len()).unwrap_or(1);
    let root = BitMapBackend::new(path, (2000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let minute_days = 1.0 / 1440.0;
    let days = runs.iter().map(|r| r.series.len()).max().unwrap_or(1) as f64 * minute_days;
    let rows = root.split_evenly((runs.len(), 1));
    for (run, row) in runs.iter().zip(rows) {
        let label = format!(
            "{}: re-pulled {:.0} GiB, {} full-disk pulls, {} lost uses, {} cordons/cleanings",
            run.policy,
            run.stats.repulled() as f64 / GIB as f64,
            run.stats.full,
            run.stats.lost,
            run.stats.cordons.max(run.stats.cleanings),
        );
        let row = row
            .titled(&label, ("sans-serif", 15))
            .map_err(|e| e.to_string())?;
        let (left, right) = row.split_horizontally(1150);
        // Buckets with no change keep the last level seen.
        let mut level = 0f64;
        let minutes: Vec<(f64, f64)> = run
            .series
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if !v.is_nan() {
                    level = f64::from(*v);
                }
                (minute_days * i as f64, level)
            })
            .collect();
        let hours: Vec<(f64, f64)> = minutes
            .chunks(60)
            .map(|c| (c[0].0, c.iter().map(|p| p.1).fold(0.0, f64::max)))
            .collect();
        let close: Vec<(f64, f64)> = minutes
            .iter()
            .copied()
            .filter(|(t, _)| *t >= window.0 && *t <= window.1)
            .collect();
        panel(&left, (0.0, days), hours, run)?;
        panel(&right, window, close, run)?;
    }
    root.present().map_err(|e| e.to_string())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x: (f64, f64),
    points: Vec<(f64, f64)>,
    run: &Run,
) -> PlotResult {
    let mut chart = ChartBuilder::on(area)
        .margin_left(10)
        .margin_right(20)
        .x_label_area_size(20)
        .y_label_area_size(40)
        .build_cartesian_2d(x.0..x.1.max(x.0 + 1e-6), 0f64..100f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(14)
        .y_labels(5)
        .label_style(("sans-serif", 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    let (high, low) = (run.settings.high, run.settings.low);
    for (y, color) in [
        (high, RED.mix(0.6)),
        (low, GREEN.mix(0.6)),
        (100.0, BLACK.mix(0.3)),
    ] {
        if y > 0.0 {
            chart
                .draw_series(LineSeries::new(vec![(x.0, y), (x.1, y)], color))
                .map_err(|e| e.to_string())?;
        }
    }
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(1)))
        .map_err(|e| e.to_string())?;
    Ok(())
}
