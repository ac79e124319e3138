//! Draws the two panels: forwarded Mpps (with the offered rate over each bar)
//! and cycles per packet, both as bars clustered by flow count.

use std::collections::BTreeSet;
use std::error::Error;
use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::tsv::Row;

/// The PNG's size in pixels.
pub const SIZE: (u32, u32) = (1200, 800);
/// Where Debian's fonts-dejavu-core puts the font (scripts/setup.sh installs it).
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The family every text style here asks for (plotters' default for labels).
const FAMILY: &str = "sans-serif";

/// One colour per dataplane, in order of first appearance in the file; the
/// same dataplane has the same colour in both panels.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Reads a TrueType/OpenType font and registers it for all text. plotters'
/// ab_glyph renderer keeps `&'static` font data, so the bytes are leaked: once
/// per process, a few hundred KiB.
pub fn load_font(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read font {}: {e}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| format!("{} is not a TrueType/OpenType font", path.display()))
}

/// Labels for the plot's header.
#[derive(Debug, Clone, Default)]
pub struct Titles {
    pub title: String,
    pub subtitle: String,
}

/// The rows arranged for drawing: flow counts ascending, dataplanes in order
/// of first appearance, and at most one row for each pair (the last wins).
#[derive(Debug)]
struct Grid<'a> {
    flows: Vec<u64>,
    dataplanes: Vec<&'a str>,
    /// `cells[d][f]`: dataplane `d` at flow count `flows[f]`.
    cells: Vec<Vec<Option<&'a Row>>>,
}

impl<'a> Grid<'a> {
    fn new(rows: &'a [Row]) -> Self {
        let flows: Vec<u64> = rows.iter().map(|r| r.flows).collect::<BTreeSet<_>>().into_iter().collect();
        let mut dataplanes: Vec<&str> = Vec::new();
        for r in rows {
            if !dataplanes.contains(&r.dataplane.as_str()) {
                dataplanes.push(&r.dataplane);
            }
        }
        let mut cells = vec![vec![None; flows.len()]; dataplanes.len()];
        for r in rows {
            let d = dataplanes.iter().position(|d| *d == r.dataplane).unwrap_or_default();
            let f = flows.binary_search(&r.flows).unwrap_or_default();
            cells[d][f] = Some(r);
        }
        Grid { flows, dataplanes, cells }
    }
}

/// `1`, `1k`, `65536`, `1M`: exact multiples of a thousand or a million are
/// shortened, anything else is written out.
pub fn flows_label(n: u64) -> String {
    match n {
        0 => "0".into(),
        n if n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// One bar of a panel: cluster `f`, slot `d` of `slots`, height `value`, and
/// optionally a dashed mark at `mark` across it.
struct Bar {
    f: usize,
    slot: usize,
    value: f64,
    mark: Option<f64>,
}

/// Which value a panel shows, and how.
struct Panel<'a> {
    caption: &'a str,
    y_desc: &'a str,
    value: fn(&Row) -> Option<f64>,
    /// The dashed mark over each bar (the offered rate), in the same unit.
    mark: Option<fn(&Row) -> Option<f64>>,
    mark_label: &'a str,
    decimals: usize,
    empty_note: &'a str,
}

/// Renders `rows` to a PNG at `out`. The font must have been registered with
/// [`load_font`] first.
pub fn render(rows: &[Row], titles: &Titles, out: &Path) -> Result<(), Box<dyn Error>> {
    let grid = Grid::new(rows);
    let root = BitMapBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(84);
    header.draw(&Text::new(
        titles.title.as_str(),
        (SIZE.0 as i32 / 2, 14),
        (FAMILY, 30).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    if !titles.subtitle.is_empty() {
        header.draw(&Text::new(
            titles.subtitle.as_str(),
            (SIZE.0 as i32 / 2, 54),
            (FAMILY, 18).into_font().color(&RGBColor(90, 90, 90)).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    let panels = body.split_evenly((1, 2));

    let mpps = Panel {
        caption: "Forwarded rate",
        y_desc: "forwarded Mpps",
        value: |r| r.forwarded_pps.map(|v| v / 1e6),
        mark: Some(|r| r.offered_pps.map(|v| v / 1e6)),
        mark_label: "offered (generator)",
        decimals: 1,
        empty_note: "no forwarded rate measured",
    };
    draw_panel(&panels[0], &grid, &(0..grid.dataplanes.len()).collect::<Vec<_>>(), &mpps)?;

    let cycles = Panel {
        caption: "CPU cost",
        y_desc: "cycles per packet",
        value: |r| r.cycles_per_pkt,
        mark: None,
        mark_label: "",
        decimals: 0,
        empty_note: "no dataplane reported cycles per packet",
    };
    // Only the dataplanes that report cycles (svcgate, testpmd) get a slot.
    let reporting: Vec<usize> = (0..grid.dataplanes.len())
        .filter(|&d| grid.cells[d].iter().flatten().any(|r| r.cycles_per_pkt.is_some()))
        .collect();
    draw_panel(&panels[1], &grid, &reporting, &cycles)?;

    root.present()?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    grid: &Grid<'_>,
    shown: &[usize],
    panel: &Panel<'_>,
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let mut bars: Vec<(usize, Bar)> = Vec::new();
    for (slot, &d) in shown.iter().enumerate() {
        for (f, cell) in grid.cells[d].iter().enumerate() {
            let Some(row) = cell else { continue };
            let Some(value) = (panel.value)(row) else { continue };
            bars.push((d, Bar { f, slot, value, mark: panel.mark.and_then(|m| m(row)) }));
        }
    }
    let top = bars.iter().map(|(_, b)| b.value.max(b.mark.unwrap_or(0.0))).fold(0.0, f64::max);
    // Headroom for the value labels and the legend in the upper right.
    let y_max = if top > 0.0 { top * (1.2 + 0.07 * (shown.len() + 1) as f64) } else { 1.0 };
    let n = grid.flows.len().max(1);
    let x_range = Categories(n);

    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, (FAMILY, 22))
        .margin_left(12)
        .margin_right(24)
        .margin_top(4)
        .margin_bottom(12)
        .x_label_area_size(56)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range, 0.0..y_max)?;
    let flows = grid.flows.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("concurrent flows")
        .y_desc(panel.y_desc)
        .x_label_formatter(&|x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                flows.get(i as usize).map(|&n| flows_label(n)).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y: &f64| trim_number(*y))
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 16))
        .max_light_lines(1)
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;

    if shown.is_empty() || bars.is_empty() {
        chart.draw_series(std::iter::once(Text::new(
            panel.empty_note.to_string(),
            ((n as f64 - 1.0) / 2.0, y_max / 2.0),
            (FAMILY, 16).into_font().color(&RGBColor(90, 90, 90)).pos(Pos::new(HPos::Center, VPos::Center)),
        )))?;
    }

    // Each cluster takes 86% of its category; the marks over the bars touch,
    // so equal offered rates read as one dashed line across the cluster.
    let slots = shown.len().max(1) as f64;
    let width = 0.86 / slots;
    let span = |b: &Bar| {
        let x0 = b.f as f64 - 0.43 + b.slot as f64 * width;
        (x0, x0 + width)
    };
    let bar_px = {
        let a = chart.backend_coord(&(0.0, 0.0));
        let b = chart.backend_coord(&(width, 0.0));
        (b.0 - a.0).abs()
    };

    for (slot, &d) in shown.iter().enumerate() {
        let colour = COLOURS[d % COLOURS.len()];
        let mine = bars.iter().filter(|(dd, b)| *dd == d && b.slot == slot).map(|(_, b)| b);
        chart
            .draw_series(mine.map(|b| {
                let (x0, x1) = span(b);
                Rectangle::new([(x0 + width * 0.03, 0.0), (x1 - width * 0.03, b.value)], colour.filled())
            }))?
            .label(grid.dataplanes[d])
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
    }

    if panel.mark.is_some() {
        let style = ShapeStyle { color: BLACK.to_rgba(), filled: false, stroke_width: 2 };
        let marks: Vec<(f64, f64, f64)> =
            bars.iter().filter_map(|(_, b)| b.mark.map(|m| (span(b).0, span(b).1, m))).collect();
        chart
            .draw_series(
                marks
                    .into_iter()
                    .flat_map(move |(x0, x1, y)| DashedLineSeries::new(vec![(x0, y), (x1, y)], 5, 3, style)),
            )?
            .label(panel.mark_label)
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (5, 0)], style)
                    + PathElement::new(vec![(9, 0), (14, 0)], style)
            });
    }

    // Values over the bars, where a bar is wide enough for them: just over
    // the bar, or over its mark when that is close above (or below) it.
    if bar_px >= 24 {
        let font = (FAMILY, 12).into_font().color(&RGBColor(50, 50, 50)).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(bars.iter().map(|(_, b)| {
            let (x0, x1) = span(b);
            let y = match b.mark {
                Some(m) if (m - b.value).abs() < 0.05 * y_max => m.max(b.value),
                _ => b.value,
            };
            let text = format!("{:.*}", panel.decimals, b.value);
            EmptyElement::at(((x0 + x1) / 2.0, y)) + Text::new(text, (0, -6), font.clone())
        }))?;
    }

    if !shown.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(8)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
    }
    Ok(())
}

/// An x axis of `n` evenly spaced categories: category `i` is centred on
/// `i as f64`, the axis runs from -0.5 to n - 0.5, and the ticks (and so the
/// labels) sit on the centres only.
#[derive(Debug, Clone, Copy)]
struct Categories(usize);

impl Ranged for Categories {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let Range { start, end } = self.range();
        let t = (value - start) / (end - start);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            (0..self.0).map(|i| i as f64).collect()
        }
    }

    fn range(&self) -> Range<f64> {
        -0.5..self.0 as f64 - 0.5
    }
}

/// Axis numbers without trailing zeros: `2`, `2.5`, `0.25`.
fn trim_number(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsv;

    #[test]
    fn flow_labels() {
        assert_eq!(flows_label(1), "1");
        assert_eq!(flows_label(1000), "1k");
        assert_eq!(flows_label(65536), "65536");
        assert_eq!(flows_label(1_000_000), "1M");
        assert_eq!(trim_number(2.0), "2");
        assert_eq!(trim_number(2.5), "2.5");
    }

    #[test]
    fn grid_orders_and_dedups() {
        let text = "dataplane\tflows\toffered_pps\tforwarded_pps\tloss_pct\tlat_p50_us\tlat_p99_us\tcycles_per_pkt\n\
                    testpmd\t1000\t1\t1\t0\t-\t-\t-\n\
                    svcgate\t1\t1\t1\t0\t-\t-\t-\n\
                    testpmd\t1\t1\t2\t0\t-\t-\t-\n\
                    testpmd\t1\t1\t3\t0\t-\t-\t-\n";
        let rows = tsv::parse(text).unwrap();
        let g = Grid::new(&rows);
        assert_eq!(g.flows, vec![1, 1000]);
        assert_eq!(g.dataplanes, vec!["testpmd", "svcgate"]);
        assert_eq!(g.cells[0][0].unwrap().forwarded_pps, Some(3.0));
        assert!(g.cells[1][1].is_none());
    }

    /// Renders a small sample and checks the PNG's signature and size. Needs
    /// the DejaVu font (fonts-dejavu-core): without it the test says so and
    /// passes, unless CI=true, where every test must run.
    #[test]
    fn renders_png_of_expected_size() {
        let font = Path::new(DEFAULT_FONT);
        if !font.exists() {
            let why = format!("{DEFAULT_FONT} is missing (install fonts-dejavu-core, see scripts/setup.sh)");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("renders_png_of_expected_size: {why}, and CI=true forbids skipping");
            }
            eprintln!("renders_png_of_expected_size: SKIPPED: {why}");
            return;
        }
        load_font(font).unwrap();
        let rows = tsv::parse(SAMPLE).unwrap();
        let out = std::env::temp_dir().join(format!("svcgate-bench-plot-test-{}.png", std::process::id()));
        let titles = Titles { title: "test".into(), subtitle: "sample".into() };
        let result = render(&rows, &titles, &out);
        let bytes = std::fs::read(&out);
        let _ = std::fs::remove_file(&out);
        result.unwrap();
        let bytes = bytes.unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // The first chunk is IHDR: length, type, then width and height.
        assert_eq!(&bytes[12..16], b"IHDR");
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((width, height), SIZE);
    }

    const SAMPLE: &str = "\
dataplane\tflows\toffered_pps\tforwarded_pps\tloss_pct\tlat_p50_us\tlat_p99_us\tcycles_per_pkt
svcgate\t1\t14880000\t9800000\t34.1\t14\t60\t210
svcgate\t1000000\t14880000\t6100000\t59.0\t20\t95\t340
testpmd\t1\t14880000\t14880000\t0\t6\t18\t62
testpmd\t1000000\t14880000\t14880000\t0\t6\t19\t64
nft-dnat\t1\t14880000\t1900000\t87.2\t-\t-\t-
nft-dnat\t1000000\t14880000\t-\t-\t-\t-\t-
";
}
