//! The live benchmark's chart (plotters, SVG): per mode, the receiver's throughput and its
//! process CPU per GB, each a bar at the median with a min–max whisker.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

/// One mode's bars: (median, min, max) of throughput and of receiver CPU per GB.
struct Row {
    name: String,
    inline_crypto: bool,
    gbit: [f64; 3],
    cpu: [f64; 3],
}

fn rows(report: &Value) -> Vec<Row> {
    let empty = serde_json::Map::new();
    let triple =
        |m: &Value, k: &str| ["median", "min", "max"].map(|s| m[k][s].as_f64().unwrap_or(f64::NAN));
    report["modes"]
        .as_object()
        .unwrap_or(&empty)
        .iter()
        .map(|(name, m)| Row {
            name: name.clone(),
            inline_crypto: m["crypto"] == "inline",
            gbit: triple(m, "gbit_per_s"),
            cpu: triple(m, "rx_process_cpu_s_per_gb"),
        })
        .collect()
}

/// Draws the two panels into an SVG file at `path`.
///
/// # Errors
/// The file cannot be written.
pub fn draw(path: &Path, report: &Value) -> Result<()> {
    let rows = rows(report);
    let root = SVGBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);
    panel(&left, "Receiver throughput, Gbit/s", &rows, |r| r.gbit)?;
    panel(&right, "Receiving process CPU, s per GB", &rows, |r| r.cpu)?;
    root.present()?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    rows: &[Row],
    pick: fn(&Row) -> [f64; 3],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let n = rows.len().max(1);
    let top = rows
        .iter()
        .flat_map(pick)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(130)
        .y_label_area_size(55)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..top)
        .map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => rows.get(*i).map(|r| r.name.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label)
        .x_label_style(
            ("sans-serif", 13)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .draw()
        .map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    let bars = rows.iter().enumerate().map(|(i, r)| {
        let color = if r.inline_crypto {
            RGBColor(230, 140, 40)
        } else if r.name == "kernel-tcp" {
            RGBColor(90, 90, 90)
        } else {
            RGBColor(50, 110, 190)
        };
        let median = pick(r)[0];
        let height = if median.is_finite() { median } else { 0.0 };
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), height),
            ],
            color.filled(),
        );
        bar.set_margin(0, 0, 6, 6);
        bar
    });
    chart
        .draw_series(bars)
        .map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    let whiskers = rows.iter().enumerate().filter_map(|(i, r)| {
        let [median, min, max] = pick(r);
        (median.is_finite() && min.is_finite() && max.is_finite()).then(|| {
            ErrorBar::new_vertical(
                SegmentValue::CenterOf(i),
                min,
                median,
                max,
                BLACK.filled(),
                8,
            )
        })
    });
    chart
        .draw_series(whiskers)
        .map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_becomes_an_svg_with_every_mode_named() {
        let report = serde_json::json!({
            "modes": {
                "kernel-tcp": {"crypto": "none",
                    "gbit_per_s": {"median": 4.8, "min": 4.7, "max": 4.9},
                    "rx_process_cpu_s_per_gb": {"median": 0.8, "min": 0.7, "max": 0.9}},
                "split+inline": {"crypto": "inline",
                    "gbit_per_s": {"median": 2.0, "min": 1.5, "max": 2.2},
                    "rx_process_cpu_s_per_gb": {"median": null, "min": null, "max": null}}
            }
        });
        let path = std::env::temp_dir().join(format!("xtask-chart-{}.svg", std::process::id()));
        draw(&path, &report).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for name in ["kernel-tcp", "split+inline", "Gbit/s"] {
            assert!(svg.contains(name), "{name} missing from the chart");
        }
    }
}
