//! `coffer index plan`: choose a blind-index width. The arithmetic and the advice are
//! coffer-core's planner (`coffer_core::planner`); this module parses the options and renders the
//! plan as a table or as JSON.

use std::fmt::Write as _;

use anyhow::Result;
use clap::{Args, Subcommand};
use coffer_core::planner::{
    self, DEFAULT_MAX_FALSE_POSITIVES, DEFAULT_MIN_VALUES_PER_BUCKET, Plan, PlanInput, PrefixPlan,
    PrefixSpec, Width,
};
use serde_json::{Value, json};

use crate::input;

/// Help shown after `coffer index plan --help`.
pub const PLAN_AFTER_HELP: &str =
    "A blind index stores HMAC-SHA-256 of the value cut to L bits, so values fall into 2^L buckets.
A search computes its value's bucket and fetches every row in it; rows of other values that share
the bucket (false positives) are decrypted and dropped. Wide indexes give each value a bucket of
its own: whoever reads the table sees which rows hold equal values and, knowing how values are
distributed, which value each is (frequency analysis). Narrow ones cost false positives.

For R rows (--rows) and N distinct values (--distinct), at width L, with uniform HMAC outputs:
  buckets               2^L
  values/bucket         N / 2^L            distinct values sharing a bucket, on average
  alone                 (1 - 2^-L)^(N-1)   share of values alone in their bucket: identified
  true rows/query       R / N              rows a search is after
  false pos./query      (R - R/N) / 2^L    rows of other values it fetches too
  index size            R * ceil(L/8) bytes

Each width is checked against two limits: a privacy floor of K values per bucket
(--min-values-per-bucket, default 2) and a budget of F false positives per query
(--max-false-positives, default 10). The recommended width is the widest that keeps the floor:
there, each query fetches between K and 2K times its true rows in false positives. No width keeps
the floor when N < K * 256 (booleans, small code lists): the planner says so instead.

Compound index: one --distinct per column; N is their product, capped at R. That assumes
independent columns; count correlated ones (SELECT count(DISTINCT (a, b))) and pass one count.
Prefix index: --prefix MIN..MAX --alphabet A plans one index per prefix length k, each with
its own key, for min(N, A^k) distinct prefixes.

Plan for the size the table will reach: a width cannot change without recomputing every row.
The formulas and the leakage are explained in docs/INDEX-PLAN.md.

Exit status: 0 success; 2 usage or input error (no rows, no or zero distinct values, more
distinct values than rows, a budget or floor out of range).

Examples:
  coffer index plan --rows 5000000 --distinct 5000000                 # SSNs: one per patient
  coffer index plan --rows 5000000 --distinct 50000 --distinct 365    # last name + birthday
  coffer index plan --rows 5000000 --distinct 2                       # a boolean: no safe width
  coffer index plan --rows 200000 --distinct 150000 --prefix 1..4 --alphabet 26
  coffer index plan --rows 1000000 --distinct 80000 --max-false-positives 50 --json";

/// The `coffer index` subcommands.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Choose a blind-index width: values hidden per bucket against false positives per query
    #[command(after_help = PLAN_AFTER_HELP)]
    Plan(PlanArgs),
}

/// `coffer index plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Rows the table will hold (plan for the size it will reach)
    #[arg(long, value_name = "R")]
    pub rows: u64,
    /// Distinct values of the column; repeat once per column for a compound index
    #[arg(long, value_name = "N", required = true)]
    pub distinct: Vec<u64>,
    /// Rows of other values a query may fetch and drop, on average
    #[arg(long, value_name = "F", default_value_t = DEFAULT_MAX_FALSE_POSITIVES)]
    pub max_false_positives: f64,
    /// Distinct values each bucket must hold on average (the privacy floor)
    #[arg(long, value_name = "K", default_value_t = DEFAULT_MIN_VALUES_PER_BUCKET)]
    pub min_values_per_bucket: f64,
    /// Also plan a prefix index over these prefix lengths, e.g. 2..6
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_lengths, requires = "alphabet")]
    pub prefix: Option<Lengths>,
    /// Characters one prefix position can take: 26 for case-folded letters, 10 for digits
    #[arg(long, value_name = "A", requires = "prefix")]
    pub alphabet: Option<u64>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Prefix lengths from `--prefix MIN..MAX` (or a single length `N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lengths {
    min: u16,
    max: u16,
}

fn parse_lengths(s: &str) -> Result<Lengths, String> {
    let number = |t: &str| {
        t.trim()
            .parse::<u16>()
            .map_err(|_| format!("'{s}': expected MIN..MAX, e.g. 2..6"))
    };
    match s.split_once("..") {
        Some((min, max)) => Ok(Lengths {
            min: number(min)?,
            max: number(max.strip_prefix('=').unwrap_or(max))?,
        }),
        None => {
            let n = number(s)?;
            Ok(Lengths { min: n, max: n })
        }
    }
}

/// Runs one `coffer index` subcommand.
pub fn run(cmd: &IndexCommand) -> Result<()> {
    match cmd {
        IndexCommand::Plan(args) => plan(args),
    }
}

/// `coffer index plan`.
fn plan(args: &PlanArgs) -> Result<()> {
    let mut request = PlanInput::new(args.rows, args.distinct.clone())
        .with_max_false_positives(args.max_false_positives)
        .with_min_values_per_bucket(args.min_values_per_bucket);
    if let (Some(lengths), Some(alphabet)) = (args.prefix, args.alphabet) {
        request = request.with_prefix(PrefixSpec {
            min_len: lengths.min,
            max_len: lengths.max,
            alphabet,
        });
    }
    let plan = planner::plan(&request)?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&to_json(&plan, request.prefix.as_ref()))?;
        s.push('\n');
        s
    } else {
        render(&plan, request.prefix.as_ref())
    };
    input::write_stdout(text.as_bytes())
}

/// The plan as JSON: every figure of the text table, unrounded.
fn to_json(plan: &Plan, prefix: Option<&PrefixSpec>) -> Value {
    let rec = &plan.recommendation;
    json!({
        "rows": plan.rows,
        "distinct": plan.distinct,
        "distinct_per_column": plan.distinct_per_column,
        "max_false_positives": plan.max_false_positives,
        "min_values_per_bucket": plan.min_values_per_bucket,
        "privacy_max_bits": rec.privacy_max_bits,
        "budget_min_bits": rec.budget_min_bits,
        "range": rec.range().map(|r| json!({"min": r.start(), "max": r.end()})),
        "recommended_bits": plan.recommended_bits(),
        "recommended": plan.recommended().as_ref().map(width_json),
        "widths": plan.widths.iter().map(width_json).collect::<Vec<_>>(),
        "prefix": prefix.map(|p| json!({
            "min_len": p.min_len,
            "max_len": p.max_len,
            "alphabet": p.alphabet,
            "bytes_per_row": plan.prefix_bytes_per_row(),
            "lengths": plan.prefixes.iter().map(prefix_json).collect::<Vec<_>>(),
        })),
        "warnings": plan
            .warnings
            .iter()
            .map(|w| json!({"kind": w.kind(), "message": w.to_string()}))
            .collect::<Vec<_>>(),
    })
}

fn width_json(w: &Width) -> Value {
    json!({
        "bits": w.bits,
        "bytes_per_row": w.bytes_per_row,
        "buckets": w.buckets,
        "values_per_bucket": w.values_per_bucket,
        "alone_fraction": w.alone_fraction,
        "true_rows_per_query": w.true_rows_per_query,
        "false_positives_per_query": w.false_positives_per_query,
        "index_bytes": w.index_bytes,
        "meets_privacy": w.meets_privacy,
        "meets_budget": w.meets_budget,
    })
}

fn prefix_json(p: &PrefixPlan) -> Value {
    json!({
        "length": p.length,
        "distinct": p.distinct,
        "privacy_max_bits": p.recommendation.privacy_max_bits,
        "budget_min_bits": p.recommendation.budget_min_bits,
        "recommended_bits": p.recommendation.bits(),
        "recommended": p.recommended.as_ref().map(width_json),
    })
}

/// The plan as a table, a recommendation and warnings.
fn render(plan: &Plan, prefix: Option<&PrefixSpec>) -> String {
    let mut out = String::new();
    let columns = if plan.distinct_per_column.len() > 1 {
        let counts: Vec<String> = plan
            .distinct_per_column
            .iter()
            .map(u64::to_string)
            .collect();
        format!(" (compound: {})", counts.join(" x "))
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "Blind index for {} rows and {} distinct values{columns}: ~{} per value.",
        plan.rows,
        plan.distinct,
        row_count(plan.rows as f64 / plan.distinct as f64)
    );
    let _ = writeln!(
        out,
        "Limits: >= {} distinct values per bucket (privacy), <= {} false positives per query \
         (cost).\n",
        short(plan.min_values_per_bucket),
        short(plan.max_false_positives)
    );

    let recommended = plan.recommended_bits();
    let rows: Vec<Vec<String>> = plan
        .widths
        .iter()
        .map(|w| {
            let mut status = status(w).to_owned();
            if Some(w.bits) == recommended {
                status.push_str("  <- recommended");
            }
            vec![
                w.bits.to_string(),
                w.bytes_per_row.to_string(),
                buckets(w.bits),
                num(w.values_per_bucket),
                percent(w.alone_fraction),
                num(w.false_positives_per_query),
                bytes(w.index_bytes),
                status,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "bits",
            "bytes",
            "buckets",
            "values/bucket",
            "alone",
            "false pos./query",
            "index size",
            "",
        ],
        &rows,
    ));
    out.push('\n');

    match plan.recommendation.range() {
        Some(r) if r.start() == r.end() => {
            let _ = writeln!(out, "Width meeting both limits: {} bits.", r.start());
        }
        Some(r) => {
            let _ = writeln!(
                out,
                "Widths meeting both limits: {} to {} bits.",
                r.start(),
                r.end()
            );
        }
        None => out.push_str("No width meets both limits.\n"),
    }
    match plan.recommended() {
        Some(w) => {
            let _ = writeln!(
                out,
                "Recommended: {} bits, {} bytes per row, {} in all.\n\
                 \x20 per query:  ~{} of its value, ~{} of others (false positives, dropped \
                 after decryption)\n\
                 \x20 per bucket: ~{} distinct values on average; {} of values alone in theirs",
                w.bits,
                w.bytes_per_row,
                bytes(w.index_bytes),
                row_count(w.true_rows_per_query),
                short(w.false_positives_per_query),
                short(w.values_per_bucket),
                percent(w.alone_fraction)
            );
        }
        None => out.push_str("Recommended: none; see the warnings.\n"),
    }

    if let Some(p) = prefix {
        let _ = writeln!(
            out,
            "\nPrefix index, lengths {} to {}, alphabet {}: one index per length, each with its \
             own key.\n",
            p.min_len, p.max_len, p.alphabet
        );
        let rows: Vec<Vec<String>> = plan
            .prefixes
            .iter()
            .map(|pp| {
                let dash = || "-".to_owned();
                let w = pp.recommended;
                vec![
                    pp.length.to_string(),
                    pp.distinct.to_string(),
                    w.map_or_else(dash, |w| w.bits.to_string()),
                    w.map_or_else(dash, |w| num(w.values_per_bucket)),
                    w.map_or_else(dash, |w| percent(w.alone_fraction)),
                    w.map_or_else(dash, |w| num(w.true_rows_per_query)),
                    w.map_or_else(dash, |w| num(w.false_positives_per_query)),
                    w.map_or_else(|| "no private width".to_owned(), |w| status(&w).to_owned()),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "length",
                "prefixes",
                "bits",
                "values/bucket",
                "alone",
                "true rows/query",
                "false pos./query",
                "",
            ],
            &rows,
        ));
        let _ = writeln!(
            out,
            "\nPrefix tokens: {} bytes per row over the lengths with a recommended width.",
            plan.prefix_bytes_per_row()
        );
    }

    for w in &plan.warnings {
        out.push('\n');
        out.push_str(&wrap("warning: ", &w.to_string()));
    }
    out
}

/// Whether a width meets the limits, in words.
fn status(w: &Width) -> &'static str {
    match (w.meets_privacy, w.meets_budget) {
        (true, true) => "ok",
        (true, false) => "over budget",
        (false, true) => "below floor",
        (false, false) => "below floor, over budget",
    }
}

/// Right-aligned columns (the last left-aligned) under a header, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = table_line(header.iter().copied(), &widths);
    for row in rows {
        out.push_str(&table_line(row.iter().map(String::as_str), &widths));
    }
    out
}

fn table_line<'a>(cells: impl Iterator<Item = &'a str>, widths: &[usize]) -> String {
    let last = widths.len().saturating_sub(1);
    let mut s = String::new();
    for (i, (cell, &w)) in cells.zip(widths).enumerate() {
        if i > 0 {
            s.push_str("  ");
        }
        if i == last {
            s.push_str(cell);
        } else {
            let _ = write!(s, "{cell:>w$}");
        }
    }
    let mut s = s.trim_end().to_owned();
    s.push('\n');
    s
}

/// `text` wrapped to 100 columns, the first line after `lead`, the others indented to match.
fn wrap(lead: &str, text: &str) -> String {
    const WIDTH: usize = 100;
    let indent = " ".repeat(lead.chars().count());
    let mut out = String::new();
    let mut line = lead.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line.clone_from(&indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// A count or average for the table: whole above 1000, two decimals above 1, then three,
/// then scientific.
fn num(x: f64) -> String {
    if x == 0.0 {
        "0".to_owned()
    } else if x >= 1000.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else if x >= 0.001 {
        format!("{x:.3}")
    } else {
        format!("{x:.1e}")
    }
}

/// A number for a sentence: about three significant digits, no trailing zeros.
fn short(x: f64) -> String {
    let s = if x == 0.0 {
        return "0".to_owned();
    } else if x >= 100.0 {
        return format!("{x:.0}");
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 0.01 {
        format!("{x:.2}")
    } else {
        return format!("{x:.1e}");
    };
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// "~1 row", "~2.5 rows".
fn row_count(x: f64) -> String {
    let n = short(x);
    if n == "1" {
        format!("{n} row")
    } else {
        format!("{n} rows")
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// `2^bits` in full up to 2^40, as a power above.
fn buckets(bits: u16) -> String {
    if bits <= 40 {
        (1u64 << bits).to_string()
    } else {
        format!("2^{bits}")
    }
}

/// A byte count in binary units.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn prefix_lengths_parse() {
        assert_eq!(parse_lengths("2..6").unwrap(), Lengths { min: 2, max: 6 });
        assert_eq!(parse_lengths("2..=6").unwrap(), Lengths { min: 2, max: 6 });
        assert_eq!(parse_lengths("3").unwrap(), Lengths { min: 3, max: 3 });
        for bad in ["", "..", "a..b", "2..", "-1..3", "2-6"] {
            assert!(parse_lengths(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn figures_render_compactly() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(19531.25), "19531");
        assert_eq!(num(2.384), "2.38");
        assert_eq!(num(0.0123), "0.012");
        assert_eq!(num(0.000_012), "1.2e-5");
        assert_eq!(short(1.0), "1");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(10.0), "10");
        assert_eq!(short(0.000_012), "1.2e-5");
        assert_eq!(short(305.18), "305");
        assert_eq!(row_count(1.0), "1 row");
        assert_eq!(row_count(100.0), "100 rows");
        assert_eq!(bytes(1000), "1000 B");
        assert_eq!(bytes(15_000_000), "14.3 MiB");
        assert_eq!(buckets(8), "256");
        assert_eq!(buckets(64), "2^64");
        assert_eq!(percent(0.0921), "9.2%");
    }

    #[test]
    fn long_lines_wrap_under_their_lead() {
        let text = "word ".repeat(40);
        let wrapped = wrap("warning: ", &text);
        let lines: Vec<&str> = wrapped.lines().collect();
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| l.chars().count() <= 100));
        assert!(lines[0].starts_with("warning: word"));
        assert!(lines[1].starts_with("         word"));
    }
}
