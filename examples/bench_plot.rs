//! Draws the benchmark curves of BENCHMARKS.md from the CSV rows written by
//! `examples/event_load.rs` and `examples/api_load.rs` (`--csv PATH --label L`).
//!
//! `bench_plot --csv bench.csv --out docs/bench.png [--font /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]`
//!
//! Three panels, one line per label (e.g. `ours`, `upstream`): fan-out delivery p99 against the
//! number of live listeners (log scales), `POST /node` requests/s against the nodes stored,
//! and the server's peak memory (`VmRSS`) against the nodes stored.

use plotters::prelude::*;

mod bench_support;
use bench_support::arg_str;

/// One CSV row (see `event_load`'s documentation for the columns).
#[derive(Debug, Clone)]
struct Row {
    label: String,
    scenario: String,
    nodes: f64,
    listeners: f64,
    p99_ms: f64,
    per_second: f64,
    rss_mib: f64,
}

fn parse(text: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        if line.trim().is_empty() || f[0] == "label" {
            continue;
        }
        if f.len() < 15 {
            return Err(format!("line {}: {} fields, want 15", n + 1, f.len()));
        }
        let num = |i: usize| -> Result<f64, String> {
            f[i].trim()
                .parse()
                .map_err(|_| format!("line {}: field {} '{}' is not a number", n + 1, i + 1, f[i]))
        };
        rows.push(Row {
            label: f[0].to_owned(),
            scenario: f[1].to_owned(),
            nodes: num(2)?,
            listeners: num(3)?,
            p99_ms: num(9)?,
            per_second: num(11)?,
            rss_mib: num(12)?,
        });
    }
    Ok(rows)
}

/// The line a row belongs to in `scenario`'s panel: its label, and for the fan-out (drawn
/// against listeners) also the size of the store it ran on.
fn line_of(r: &Row, scenario: &str) -> String {
    if scenario == "fanout" {
        let n = r.nodes;
        let size = if n >= 1e6 {
            format!("{:.1}M", n / 1e6)
        } else {
            format!("{:.0}k", n / 1e3)
        };
        format!("{} ({size} nodes)", r.label)
    } else {
        r.label.clone()
    }
}

/// The (x, y) points of line `label` in `scenario`, sorted by x.
fn series(
    rows: &[Row],
    label: &str,
    scenario: &str,
    x: fn(&Row) -> f64,
    y: fn(&Row) -> f64,
) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.scenario == scenario && line_of(r, scenario) == label)
        .map(|r| (x(r), y(r)))
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .collect();
    v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    v
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn panel(
    area: &Area<'_>,
    rows: &[Row],
    title: &str,
    (scenario, x_desc, y_desc): (&str, &str, &str),
    x: fn(&Row) -> f64,
    y: fn(&Row) -> f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut labels: Vec<String> = rows
        .iter()
        .filter(|r| r.scenario == scenario)
        .map(|r| line_of(r, scenario))
        .collect();
    labels.sort();
    labels.dedup();
    let labels = labels.as_slice();
    let all: Vec<(f64, f64)> = labels
        .iter()
        .flat_map(|l| series(rows, l, scenario, x, y))
        .collect();
    if all.is_empty() {
        area.titled(&format!("{title}: no data"), ("sans-serif", 18))?;
        return Ok(());
    }
    let (x_min, x_max) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y_min, y_max) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (x_min * 0.8..x_max * 1.25).log_scale(),
            (y_min * 0.5..y_max * 2.0).log_scale(),
        )?;
    let short = |v: &f64| {
        if *v >= 1e6 {
            format!("{:.0}M", v / 1e6)
        } else if *v >= 1e3 {
            format!("{:.0}k", v / 1e3)
        } else if *v >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(8)
        .x_label_formatter(&short)
        .y_label_formatter(&short)
        .light_line_style(WHITE)
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, label) in labels.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = series(rows, label, scenario, x, y);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (Some(csv), Some(out)) = (arg_str("--csv"), arg_str("--out")) else {
        eprintln!("usage: bench_plot --csv PATH --out PNG [--font TTF]");
        std::process::exit(2);
    };
    let font_path = arg_str("--font")
        .unwrap_or_else(|| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into());
    let font = std::fs::read(&font_path).map_err(|e| format!("{font_path}: {e}"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into()))
        .map_err(|_| format!("{font_path}: not a font plotters can use"))?;
    let text = std::fs::read_to_string(&csv).map_err(|e| format!("{csv}: {e}"))?;
    let rows = parse(&text).map_err(|e| format!("{csv}: {e}"))?;
    let mut labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    labels.sort();
    labels.dedup();

    let (w, h) = (1500u32, 480u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let areas = root.split_evenly((1, 3));
        panel(
            &areas[0],
            &rows,
            "Event delivery p99 (10 events/s)",
            (
                "fanout",
                "live listeners",
                "p99 ms after the create response",
            ),
            |r| r.listeners,
            |r| r.p99_ms,
        )?;
        panel(
            &areas[1],
            &rows,
            "POST /node, 32 clients",
            ("POST /node", "nodes stored", "requests/s"),
            |r| r.nodes,
            |r| r.per_second,
        )?;
        panel(
            &areas[2],
            &rows,
            "Peak memory under POST load (upstream: API process)",
            ("POST /node", "nodes stored", "peak VmRSS MiB"),
            |r| r.nodes,
            |r| r.rss_mib,
        )?;
        root.present()?;
    }
    let file = std::fs::File::create(&out).map_err(|e| format!("{out}: {e}"))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&buf)?;
    println!("{out}: {} rows, labels {}", rows.len(), labels.join(", "));
    Ok(())
}
