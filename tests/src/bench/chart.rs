//! The latency-vs-load chart (SVG, via plotters): e2e open-loop p50 and p99 against the
//! offered arrival rate, on a log latency axis (p50 is sub-millisecond while an
//! overloaded p99 is seconds), with the goals (p50 0.5 ms, p99 2 ms) as dashed lines.
//! Plotters is built without a font engine, so text sizes are estimated; the SVG's
//! viewer draws the text.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

use super::e2e::E2eReport;
use super::setup::Env;

/// The p50 and p99 goals, in milliseconds.
const GOALS_MS: [(f64, &str); 2] = [(0.5, "goal p50 0.5 ms"), (2.0, "goal p99 2 ms")];

pub fn latency_vs_load(e2e: &E2eReport, env: &Env, path: &Path) -> anyhow::Result<()> {
    let points: Vec<(f64, f64, f64)> = e2e
        .open
        .iter()
        .filter(|s| s.run.latency.count > 0)
        .map(|s| {
            let r = &s.run;
            (
                r.offered_rate,
                (r.latency.p50_us as f64 / 1000.0).max(0.001),
                (r.latency.p99_us as f64 / 1000.0).max(0.001),
            )
        })
        .collect();
    if points.is_empty() {
        return Err(anyhow!("no open-loop results to chart"));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let x_max = points.iter().map(|p| p.0).fold(0.0, f64::max) * 1.08;
    let y_min = points.iter().map(|p| p.1).fold(f64::MAX, f64::min).min(0.5) / 2.0;
    let y_max = points.iter().map(|p| p.2).fold(0.0, f64::max).max(2.0) * 2.0;

    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
    let caption = format!(
        "llmq e2e latency vs offered load (open loop), {} cores, {} build, {}",
        env.cores, env.profile, env.llmq_commit
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(|e| anyhow!("chart: {e}"))?;
    chart
        .configure_mesh()
        .x_desc("offered load (jobs/s)")
        .y_desc("submit -> outcome latency (ms, log scale)")
        .light_line_style(BLACK.mix(0.03))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| anyhow!("chart: {e}"))?;

    let series = [
        (
            "p50",
            BLUE,
            points.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
        ),
        (
            "p99",
            RED,
            points.iter().map(|p| (p.0, p.2)).collect::<Vec<_>>(),
        ),
    ];
    for (label, color, data) in series {
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("chart: {e}"))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(data.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(|e| anyhow!("chart: {e}"))?;
    }
    for ((goal, label), color) in GOALS_MS.into_iter().zip([BLUE.mix(0.5), RED.mix(0.5)]) {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, goal), (x_max, goal)],
                6,
                4,
                color.stroke_width(1),
            ))
            .map_err(|e| anyhow!("chart: {e}"))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("chart: {e}"))?;
    root.present().map_err(|e| anyhow!("chart: {e}"))?;
    Ok(())
}
