//! The results file of `scripts/bench.sh`: tab-separated, the first line a
//! header naming the columns, one row per (dataplane, flow count).
//!
//! Columns are found by name, so their order is free and extra columns are
//! ignored. Every column of [`COLUMNS`] must be present. `flows` must be a
//! whole number; the measured columns may be `-` (not measured). Blank lines
//! and lines starting with `#` are skipped.

use std::fmt;

/// The columns the plot needs, as named in the header.
pub const COLUMNS: [&str; 8] =
    ["dataplane", "flows", "offered_pps", "forwarded_pps", "loss_pct", "lat_p50_us", "lat_p99_us", "cycles_per_pkt"];

/// One measured point: a dataplane at one flow count. `None` where the file
/// has `-`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub dataplane: String,
    pub flows: u64,
    pub offered_pps: Option<f64>,
    pub forwarded_pps: Option<f64>,
    pub loss_pct: Option<f64>,
    pub lat_p50_us: Option<f64>,
    pub lat_p99_us: Option<f64>,
    pub cycles_per_pkt: Option<f64>,
}

/// What is wrong, and where: `line` is 1-based in the file, `column` 1-based
/// among the tab-separated fields (0 when the error is about the whole line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column == 0 {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for ParseError {}

fn err(line: usize, column: usize, message: impl Into<String>) -> ParseError {
    ParseError { line, column, message: message.into() }
}

/// Parses the whole file. An empty file, or one with a header only, gives no
/// rows (the caller decides whether that is an error).
pub fn parse(text: &str) -> Result<Vec<Row>, ParseError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    let Some((header_no, header)) = lines.by_ref().find(|(_, l)| !skip(l)) else {
        return Err(err(1, 0, format!("empty file: expected a header line naming {}", COLUMNS.join(", "))));
    };
    let names: Vec<&str> = header.split('\t').map(str::trim).collect();
    let mut index = [0usize; COLUMNS.len()];
    for (slot, want) in index.iter_mut().zip(COLUMNS) {
        *slot = names
            .iter()
            .position(|n| *n == want)
            .ok_or_else(|| err(header_no, 0, format!("header has no column `{want}` (found: {})", names.join(", "))))?;
    }

    let mut rows = Vec::new();
    for (no, line) in lines {
        if skip(line) {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        if fields.len() != names.len() {
            return Err(err(
                no,
                0,
                format!("{} tab-separated fields, but the header has {}", fields.len(), names.len()),
            ));
        }
        let col = |c: usize| index[c] + 1;

        let dataplane = fields[index[0]];
        if dataplane.is_empty() || dataplane == "-" {
            return Err(err(no, col(0), "column `dataplane`: empty name"));
        }
        let flows_text = fields[index[1]];
        let flows = flows_text.parse::<u64>().map_err(|_| {
            err(no, col(1), format!("column `flows`: expected a whole number of flows, found `{flows_text}`"))
        })?;
        let measured = |c: usize| -> Result<Option<f64>, ParseError> {
            let text = fields[index[c]];
            if text == "-" {
                return Ok(None);
            }
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
                _ => Err(err(
                    no,
                    col(c),
                    format!("column `{}`: expected a number >= 0 or `-`, found `{text}`", COLUMNS[c]),
                )),
            }
        };
        rows.push(Row {
            dataplane: dataplane.to_string(),
            flows,
            offered_pps: measured(2)?,
            forwarded_pps: measured(3)?,
            loss_pct: measured(4)?,
            lat_p50_us: measured(5)?,
            lat_p99_us: measured(6)?,
            cycles_per_pkt: measured(7)?,
        });
    }
    Ok(rows)
}

fn skip(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "dataplane\tflows\toffered_pps\tforwarded_pps\tloss_pct\tlat_p50_us\tlat_p99_us\tcycles_per_pkt\n";

    #[test]
    fn good_input() {
        let text = format!(
            "{HEADER}svcgate\t1\t14880000\t14100000\t5.24\t12.5\t40\t88.2\n\
             testpmd\t1000000\t14880000\t14880000\t0\t8\t21.5\t41\n"
        );
        let rows = parse(&text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            Row {
                dataplane: "svcgate".into(),
                flows: 1,
                offered_pps: Some(14_880_000.0),
                forwarded_pps: Some(14_100_000.0),
                loss_pct: Some(5.24),
                lat_p50_us: Some(12.5),
                lat_p99_us: Some(40.0),
                cycles_per_pkt: Some(88.2),
            }
        );
        assert_eq!(rows[1].dataplane, "testpmd");
        assert_eq!(rows[1].flows, 1_000_000);
        assert_eq!(rows[1].cycles_per_pkt, Some(41.0));
    }

    #[test]
    fn dash_is_not_measured() {
        let text = format!("{HEADER}kernel-route\t65536\t14880000\t2.1e6\t85.9\t-\t-\t-\n");
        let rows = parse(&text).unwrap();
        assert_eq!(rows[0].forwarded_pps, Some(2_100_000.0));
        assert_eq!(rows[0].lat_p50_us, None);
        assert_eq!(rows[0].lat_p99_us, None);
        assert_eq!(rows[0].cycles_per_pkt, None);
    }

    #[test]
    fn columns_found_by_name_blank_and_comment_lines_skipped() {
        let text = "# run 3\n\ncycles_per_pkt\tflows\tdataplane\tnote\tforwarded_pps\toffered_pps\tloss_pct\tlat_p50_us\tlat_p99_us\r\n\
                    90\t1000\tsvcgate\twarm\t1e6\t2e6\t50\t-\t-\r\n\n";
        let rows = parse(text).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].dataplane, "svcgate");
        assert_eq!(rows[0].flows, 1000);
        assert_eq!(rows[0].cycles_per_pkt, Some(90.0));
        assert_eq!(rows[0].offered_pps, Some(2e6));
    }

    #[test]
    fn bad_number_names_line_and_column() {
        let text = format!(
            "{HEADER}svcgate\t1\t14880000\t14100000\t0\t12\t40\t88\nnft-dnat\t1000\t14880000\t1.2.3\t0\t-\t-\t-\n"
        );
        let e = parse(&text).unwrap_err();
        assert_eq!((e.line, e.column), (3, 4));
        let msg = e.to_string();
        assert!(msg.starts_with("line 3, column 4:"), "{msg}");
        assert!(msg.contains("forwarded_pps") && msg.contains("`1.2.3`"), "{msg}");
    }

    #[test]
    fn bad_flows_negative_and_nan_rejected() {
        let e = parse(&format!("{HEADER}svcgate\t-\t1\t1\t0\t-\t-\t-\n")).unwrap_err();
        assert_eq!((e.line, e.column), (2, 2));
        let e = parse(&format!("{HEADER}svcgate\t1\t1\t-3\t0\t-\t-\t-\n")).unwrap_err();
        assert_eq!((e.line, e.column), (2, 4));
        let e = parse(&format!("{HEADER}svcgate\t1\t1\t1\t0\t-\t-\tNaN\n")).unwrap_err();
        assert_eq!((e.line, e.column), (2, 8));
    }

    #[test]
    fn wrong_field_count_and_missing_column() {
        let e = parse(&format!("{HEADER}svcgate\t1\t1\n")).unwrap_err();
        assert_eq!((e.line, e.column), (2, 0));
        assert!(e.to_string().contains("3 tab-separated fields, but the header has 8"), "{e}");
        let e = parse("dataplane\tflows\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("no column `offered_pps`"), "{e}");
        assert!(parse("").is_err());
        assert_eq!(parse(HEADER).unwrap(), vec![]);
    }
}
