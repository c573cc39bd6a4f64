//! `coffer index plan`: the binary's recommendations checked against the planner's formulas,
//! recomputed here in integers, independently of coffer-core; and bad input refused with exit
//! status 2 and a message that says what to change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Out, coffer, output};
use serde_json::Value;

/// `coffer index plan args…`.
fn plan(args: &[&str]) -> Out {
    let mut cmd = coffer();
    cmd.args(["index", "plan"]).args(args);
    output(cmd, None)
}

/// `coffer index plan args… --json`, parsed.
#[track_caller]
fn plan_json(args: &[&str]) -> Value {
    let out = plan(&[args, &["--json"]].concat());
    out.success();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The widest width L (8 to 256 bits) that keeps K distinct values per bucket: N ≥ K · 2^L.
fn privacy_max(n: u64, k: u64) -> Option<u64> {
    (8..=256u32)
        .rev()
        .find(|&l| l < 120 && u128::from(n) >= u128::from(k) << l)
        .map(u64::from)
}

/// The narrowest width within F false positives per query: (R − R/N) / 2^L ≤ F, that is
/// R · (N − 1) ≤ F · N · 2^L.
fn budget_min(r: u64, n: u64, f: u64) -> Option<u64> {
    let lhs = u128::from(r) * u128::from(n - 1);
    let fnn = u128::from(f) * u128::from(n);
    (8..=256u32)
        .find(|&l| {
            let rhs = if l < 128 {
                fnn.checked_mul(1u128 << l)
            } else {
                None
            };
            rhs.is_none_or(|rhs| lhs <= rhs)
        })
        .map(u64::from)
}

fn kinds(plan: &Value) -> Vec<&str> {
    plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect()
}

/// Checks the recommendation, the range and the recommended width's figures against the formulas.
#[track_caller]
fn check(plan: &Value, r: u64, n: u64, k: u64, f: u64) {
    assert_eq!(plan["rows"], r);
    assert_eq!(plan["distinct"], n);
    let want = privacy_max(n, k);
    let budget = budget_min(r, n, f);
    assert_eq!(plan["recommended_bits"].as_u64(), want, "{plan:#}");
    assert_eq!(plan["privacy_max_bits"].as_u64(), want);
    assert_eq!(plan["budget_min_bits"].as_u64(), budget);
    match (budget, want) {
        (Some(lo), Some(hi)) if lo <= hi => {
            assert_eq!(plan["range"]["min"], lo);
            assert_eq!(plan["range"]["max"], hi);
        }
        _ => assert!(plan["range"].is_null()),
    }
    let Some(l) = want else {
        assert!(plan["recommended"].is_null());
        return;
    };
    let w = &plan["recommended"];
    let (rf, nf, scale) = (r as f64, n as f64, (-(l as f64)).exp2());
    let near = |key: &str, expected: f64| {
        let got = w[key].as_f64().unwrap();
        assert!(
            (got - expected).abs() <= 1e-9 * expected.abs().max(1.0),
            "{key}: {got} != {expected}"
        );
    };
    near("values_per_bucket", nf * scale);
    near("false_positives_per_query", (rf - rf / nf) * scale);
    near("true_rows_per_query", rf / nf);
    near("alone_fraction", (1.0 - scale).powf(nf - 1.0));
    assert_eq!(w["bytes_per_row"], l.div_ceil(8));
    assert_eq!(w["index_bytes"], r * l.div_ceil(8));
    assert_eq!(w["meets_privacy"], true);
    let listed = plan["widths"].as_array().unwrap();
    assert!(
        listed.iter().any(|x| x["bits"] == l),
        "{l} not in the table"
    );
}

#[test]
fn ssns_get_21_bits() {
    let p = plan_json(&["--rows", "5000000", "--distinct", "5000000"]);
    check(&p, 5_000_000, 5_000_000, 2, 10);
    assert_eq!(p["recommended_bits"], 21);
    assert_eq!(p["range"]["min"], 19);
    assert_eq!(kinds(&p), ["unique_values"]);
    assert!(
        p["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("UNIQUE")
    );
}

#[test]
fn recommendations_follow_the_formulas() {
    // (rows, distinct counts, floor K, budget F): N is the product, capped at the rows.
    let cases: &[(u64, &[u64], u64, u64)] = &[
        (1_000_000, &[1_000_000], 2, 10),
        (1_000_000, &[1_000], 2, 10),
        (5_000_000, &[50_000, 365], 2, 10),
        (5_000_000, &[1_000, 365], 2, 10),
        (10_000_000, &[80_000], 4, 50),
        (123_456_789, &[9_876_543], 3, 7),
        (1 << 40, &[1 << 40], 2, 1),
        (700, &[600], 2, 10),
        (1_000, &[1], 2, 10),
    ];
    for &(r, counts, k, f) in cases {
        let mut args = vec![
            "--rows".to_owned(),
            r.to_string(),
            "--min-values-per-bucket".to_owned(),
            k.to_string(),
            "--max-false-positives".to_owned(),
            f.to_string(),
        ];
        for c in counts {
            args.extend(["--distinct".to_owned(), c.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = plan_json(&args);
        let n = counts
            .iter()
            .try_fold(1u64, |a, &c| a.checked_mul(c))
            .map_or(r, |prod| prod.min(r));
        check(&p, r, n, k, f);
        if counts.len() > 1 {
            assert!(kinds(&p).contains(&"compound_product"), "{p:#}");
        }
    }
}

#[test]
fn over_budget_and_no_private_width_are_warned() {
    // N = 365 000: 17 bits keep the floor, 19 meet the budget.
    let p = plan_json(&[
        "--rows",
        "5000000",
        "--distinct",
        "1000",
        "--distinct",
        "365",
    ]);
    assert_eq!(p["recommended_bits"], 17);
    assert_eq!(p["budget_min_bits"], 19);
    assert_eq!(kinds(&p), ["compound_product", "over_budget"]);

    let p = plan_json(&["--rows", "5000000", "--distinct", "2"]);
    assert!(p["recommended_bits"].is_null());
    assert_eq!(kinds(&p), ["no_private_width"]);
    let text = plan(&["--rows", "5000000", "--distinct", "2"]);
    text.success();
    let text = text.stdout_str();
    assert!(text.contains("Recommended: none"), "{text}");
    assert!(text.contains("warning: only 2 distinct values"), "{text}");
}

#[test]
fn prefix_lengths_are_planned_one_by_one() {
    let p = plan_json(&[
        "--rows",
        "200000",
        "--distinct",
        "150000",
        "--prefix",
        "1..4",
        "--alphabet",
        "26",
    ]);
    let lengths = p["prefix"]["lengths"].as_array().unwrap();
    let mut bytes = 0;
    for (k, len) in (1u32..=4).zip(lengths) {
        let n = 26u64.pow(k).min(150_000);
        assert_eq!(len["length"], k);
        assert_eq!(len["distinct"], n);
        let want = privacy_max(n, 2);
        assert_eq!(len["recommended_bits"].as_u64(), want, "length {k}");
        bytes += want.map_or(0, |l| l.div_ceil(8));
    }
    assert_eq!(lengths.len(), 4);
    assert_eq!(p["prefix"]["bytes_per_row"], bytes);
    assert_eq!(bytes, 1 + 2 + 2);
    assert_eq!(
        kinds(&p),
        [
            "prefix_lengths_leak",
            "prefix_counts_are_bounds",
            "prefix_tokens_combine"
        ]
    );
}

#[test]
fn the_table_marks_the_recommendation() {
    let out = plan(&["--rows", "5000000", "--distinct", "5000000"]);
    out.success();
    let text = out.stdout_str();
    let marked: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("<- recommended"))
        .collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(marked[0].trim_start().starts_with("21 "), "{text}");
    assert!(text.contains("Widths meeting both limits: 19 to 21 bits."));
    assert!(text.contains("Recommended: 21 bits, 3 bytes per row"));
    assert!(text.contains("warning: every value is unique"));
}

#[test]
fn help_teaches_the_numbers() {
    let out = plan(&["--help"]);
    out.success();
    let help = out.stdout_str();
    for needle in [
        "(R - R/N) / 2^L",
        "--min-values-per-bucket",
        "coffer index plan --rows 5000000 --distinct 5000000",
        "--distinct 50000 --distinct 365",
        "docs/INDEX-PLAN.md",
    ] {
        assert!(help.contains(needle), "{needle:?} not in help:\n{help}");
    }
}

#[test]
fn bad_input_exits_2_with_a_reason() {
    let cases: &[(&[&str], &str)] = &[
        (&["--rows", "0", "--distinct", "1"], "invalid row count: 0"),
        (&["--rows", "abc", "--distinct", "1"], "invalid value 'abc'"),
        (&["--rows", "-5", "--distinct", "1"], "--rows"),
        (&["--rows", "10"], "--distinct"),
        (
            &["--rows", "10", "--distinct", "0"],
            "distinct-value count: 0",
        ),
        (&["--rows", "10", "--distinct", "11"], "swapped"),
        (
            &["--rows", "10", "--distinct", "5", "--distinct", "20"],
            "more than the 10 rows",
        ),
        (
            &[
                "--rows",
                "10",
                "--distinct",
                "5",
                "--max-false-positives",
                "0",
            ],
            "false-positive budget",
        ),
        (
            &[
                "--rows",
                "10",
                "--distinct",
                "5",
                "--max-false-positives",
                "nan",
            ],
            "false-positive budget",
        ),
        (
            &[
                "--rows",
                "10",
                "--distinct",
                "5",
                "--min-values-per-bucket",
                "0.5",
            ],
            "values-per-bucket floor",
        ),
        (
            &["--rows", "10", "--distinct", "5", "--prefix", "1..4"],
            "--alphabet",
        ),
        (
            &[
                "--rows",
                "10",
                "--distinct",
                "5",
                "--prefix",
                "x",
                "--alphabet",
                "26",
            ],
            "expected MIN..MAX",
        ),
        (
            &[
                "--rows",
                "10",
                "--distinct",
                "5",
                "--prefix",
                "0..3",
                "--alphabet",
                "26",
            ],
            "prefix lengths",
        ),
        (
            &[
                "--rows",
                "10",
                "--distinct",
                "5",
                "--distinct",
                "2",
                "--prefix",
                "1..2",
                "--alphabet",
                "26",
            ],
            "one column",
        ),
    ];
    for (args, needle) in cases {
        plan(args).fails(2, needle);
        plan(&[args, &["--json"][..]].concat()).fails(2, needle);
    }
}
