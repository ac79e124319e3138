//! svcgate-bench-plot: turns the side-by-side benchmark's results (the TSV
//! that scripts/bench.sh writes) into a PNG with two panels: forwarded Mpps
//! per flow count with the offered rate marked over each bar, and cycles per
//! packet for the dataplanes that report it.
//!
//! ```text
//! svcgate-bench-plot results.tsv out.png [--title TEXT] [--subtitle TEXT] [--font PATH]
//! ```
//!
//! Exit status: 0 written; 2 bad arguments or a results file that cannot be
//! read or parsed (the message names the line and column); 1 the font or
//! the PNG failed.

mod render;
mod tsv;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: svcgate-bench-plot RESULTS.tsv OUT.png [--title TEXT] [--subtitle TEXT] [--font PATH]

  RESULTS.tsv  tab-separated, header line first, with the columns
               dataplane flows offered_pps forwarded_pps loss_pct lat_p50_us lat_p99_us cycles_per_pkt
               (`-` where not measured)
  OUT.png      written as a 1200x800 PNG
  --title      the plot's title (default: svcgate side-by-side benchmark)
  --subtitle   a second line under the title, e.g. the machine (default: the results file's name)
  --font       a TrueType font for all text
               (default: /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf, Debian's fonts-dejavu-core)";

#[derive(Debug, PartialEq)]
struct Args {
    input: PathBuf,
    output: PathBuf,
    title: Option<String>,
    subtitle: Option<String>,
    font: Option<PathBuf>,
}

/// `Ok(None)` for `--help`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut positional = Vec::new();
    let (mut title, mut subtitle, mut font) = (None, None, None);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--title" => &mut title,
            "--subtitle" => &mut subtitle,
            "--font" => &mut font,
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("unknown option {f}")),
            _ => {
                positional.push(arg);
                continue;
            }
        };
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        *slot = Some(value);
    }
    let [input, output]: [String; 2] = positional
        .try_into()
        .map_err(|p: Vec<String>| format!("expected RESULTS.tsv and OUT.png, got {} arguments", p.len()))?;
    Ok(Some(Args { input: input.into(), output: output.into(), title, subtitle, font: font.map(PathBuf::from) }))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("svcgate-bench-plot: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let input = args.input.display();

    let text = match std::fs::read_to_string(&args.input) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("svcgate-bench-plot: cannot read {input}: {e}");
            return ExitCode::from(2);
        }
    };
    let rows = match tsv::parse(&text) {
        Ok(rows) if rows.is_empty() => {
            eprintln!("svcgate-bench-plot: {input}: no result rows after the header");
            return ExitCode::from(2);
        }
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("svcgate-bench-plot: {input}: {e}");
            return ExitCode::from(2);
        }
    };

    let hint = if args.font.is_none() { " (install fonts-dejavu-core, or pass --font PATH to a .ttf)" } else { "" };
    let font = args.font.unwrap_or_else(|| PathBuf::from(render::DEFAULT_FONT));
    if let Err(e) = render::load_font(&font) {
        eprintln!("svcgate-bench-plot: {e}{hint}");
        return ExitCode::FAILURE;
    }
    let titles = render::Titles {
        title: args.title.unwrap_or_else(|| "svcgate side-by-side benchmark".into()),
        subtitle: args
            .subtitle
            .unwrap_or_else(|| args.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
    };
    if let Err(e) = render::render(&rows, &titles, &args.output) {
        eprintln!("svcgate-bench-plot: cannot draw {}: {e}", args.output.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Option<Args>, String> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        let a = args(&["r.tsv", "--title", "T", "o.png", "--subtitle=box 1", "--font", "/f.ttf"]).unwrap().unwrap();
        assert_eq!(
            a,
            Args {
                input: "r.tsv".into(),
                output: "o.png".into(),
                title: Some("T".into()),
                subtitle: Some("box 1".into()),
                font: Some("/f.ttf".into()),
            }
        );
        assert_eq!(args(&["--help"]).unwrap(), None);
        assert!(args(&["r.tsv"]).unwrap_err().contains("got 1 arguments"));
        assert!(args(&["r.tsv", "o.png", "--title"]).unwrap_err().contains("--title needs a value"));
        assert!(args(&["r.tsv", "o.png", "--bogus"]).unwrap_err().contains("unknown option --bogus"));
    }
}
