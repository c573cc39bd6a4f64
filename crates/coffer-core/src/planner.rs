//! Blind-index width planning: how many bits an index should keep (`coffer index plan`).
//!
//! A blind index of `L` bits (docs/FORMAT.md §5) sends each value to one of `2^L` buckets. A
//! search fetches every row of its value's bucket; rows of other values in it are false positives,
//! dropped after decryption. Narrow indexes hide each value among others but cost false positives;
//! wide ones are an exact equality oracle. For a table of `R` rows and `N` distinct values, and a
//! width `L`, this module computes (uniform HMAC outputs, derivations in docs/INDEX-PLAN.md):
//!
//! | quantity | formula |
//! |---|---|
//! | buckets | `2^L` |
//! | distinct values per bucket | `N / 2^L` |
//! | share of values alone in their bucket | `(1 − 2^−L)^(N−1)` |
//! | matching rows per search | `R / N` |
//! | false-positive rows per search | `(R − R/N) · 2^−L` |
//! | index bytes | `R · ⌈L/8⌉` |
//!
//! It recommends the widest index that keeps at least `K` distinct values per bucket (the privacy
//! floor) and says whether it keeps false positives within a budget `F`.
//!
//! ```
//! use coffer_core::planner::{PlanInput, plan};
//!
//! // One million rows, each value unique (e.g. SSNs).
//! let p = plan(&PlanInput::new(1_000_000, [1_000_000]))?;
//! assert_eq!(p.recommended_bits(), Some(18));
//! assert_eq!(p.recommendation.range(), Some(17..=18));
//! # Ok::<(), coffer_core::Error>(())
//! ```

use std::ops::RangeInclusive;

use crate::blind_index::{MAX_BITS, MIN_BITS};
use crate::error::{Error, Result};

mod warning;

pub use warning::Warning;

/// Default false-positive budget: rows of other values a search may fetch, on average.
///
/// A false positive costs one more row read and one AES-GCM open (≈ 0.2 µs) before it is dropped;
/// ten of them keep a point lookup a small index scan. At the default privacy floor a column of
/// unique values (the case blind indexes serve best) needs 2–4, so the default leaves room.
pub const DEFAULT_MAX_FALSE_POSITIVES: f64 = 10.0;

/// Default privacy floor: distinct values per bucket, on average.
///
/// Two means an index value never stands for one value on average; see [`Width::alone_fraction`]
/// for the values that still end up alone.
pub const DEFAULT_MIN_VALUES_PER_BUCKET: f64 = 2.0;

/// The most rows (and so distinct values) a plan takes: 2^53, where `f64` counts stay exact.
pub const MAX_ROWS: u64 = 1 << 53;

/// The longest prefix length a prefix plan takes.
pub const MAX_PREFIX_LEN: u16 = 64;

/// What to plan for: the table and the limits.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PlanInput {
    /// Rows the table will hold.
    pub rows: u64,
    /// Distinct values of the indexed column, or one count per column of a compound index.
    pub distinct: Vec<u64>,
    /// False-positive budget: rows of other values a search may fetch, on average.
    pub max_false_positives: f64,
    /// Privacy floor: distinct values per bucket, on average.
    pub min_values_per_bucket: f64,
    /// A prefix index to plan as well.
    pub prefix: Option<PrefixSpec>,
}

impl PlanInput {
    /// A plan for `rows` rows and the distinct-value counts of the indexed columns, with the
    /// default limits.
    pub fn new(rows: u64, distinct: impl Into<Vec<u64>>) -> Self {
        PlanInput {
            rows,
            distinct: distinct.into(),
            max_false_positives: DEFAULT_MAX_FALSE_POSITIVES,
            min_values_per_bucket: DEFAULT_MIN_VALUES_PER_BUCKET,
            prefix: None,
        }
    }

    /// Sets the false-positive budget (rows per search; finite, above 0).
    pub fn with_max_false_positives(mut self, rows: f64) -> Self {
        self.max_false_positives = rows;
        self
    }

    /// Sets the privacy floor (distinct values per bucket; finite, at least 1).
    pub fn with_min_values_per_bucket(mut self, values: f64) -> Self {
        self.min_values_per_bucket = values;
        self
    }

    /// Plans a prefix index as well.
    pub fn with_prefix(mut self, prefix: PrefixSpec) -> Self {
        self.prefix = Some(prefix);
        self
    }
}

/// A prefix index: one token per prefix length, each length with its own key (docs/FORMAT.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixSpec {
    /// The shortest prefix indexed (at least 1).
    pub min_len: u16,
    /// The longest prefix indexed (at most [`MAX_PREFIX_LEN`]).
    pub max_len: u16,
    /// Characters one position can take (26 for case-folded Latin letters; at least 2).
    pub alphabet: u64,
}

/// One index width, measured.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Width {
    /// The width `L`, in bits.
    pub bits: u16,
    /// Stored bytes per row: `⌈L/8⌉`.
    pub bytes_per_row: u16,
    /// Buckets: `2^L`.
    pub buckets: f64,
    /// Distinct values per bucket on average: `N / 2^L`.
    pub values_per_bucket: f64,
    /// Share of distinct values with a bucket to themselves, `(1 − 2^−L)^(N−1)`: their index
    /// value identifies them as surely as deterministic encryption would.
    pub alone_fraction: f64,
    /// Rows a search is after, on average: `R / N`.
    pub true_rows_per_query: f64,
    /// Rows of other values a search fetches too, on average: `(R − R/N) · 2^−L`.
    pub false_positives_per_query: f64,
    /// The whole index: `R · ⌈L/8⌉` bytes (without the database's own overhead).
    pub index_bytes: u64,
    /// `values_per_bucket` is at least the privacy floor.
    pub meets_privacy: bool,
    /// `false_positives_per_query` is within the budget.
    pub meets_budget: bool,
}

/// The widths the two limits allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recommendation {
    /// The widest index that keeps the privacy floor; `None` when not even 8 bits does.
    pub privacy_max_bits: Option<u16>,
    /// The narrowest index within the false-positive budget; `None` when not even 256 bits is.
    pub budget_min_bits: Option<u16>,
}

impl Recommendation {
    /// The widths that meet both limits, if any.
    pub fn range(&self) -> Option<RangeInclusive<u16>> {
        match (self.budget_min_bits, self.privacy_max_bits) {
            (Some(lo), Some(hi)) if lo <= hi => Some(lo..=hi),
            _ => None,
        }
    }

    /// The recommended width: the widest that keeps the privacy floor (fewest false positives
    /// without giving up privacy), whether or not it meets the budget ([`Warning::OverBudget`]
    /// says when it does not). `None` when no width keeps the floor.
    pub fn bits(&self) -> Option<u16> {
        self.privacy_max_bits
    }
}

/// The plan for one prefix length of a prefix index.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct PrefixPlan {
    /// The prefix length `k`.
    pub length: u16,
    /// Distinct prefixes of that length, at most: `min(N, alphabet^k)`.
    pub distinct: u64,
    /// The widths the limits allow for this length.
    pub recommendation: Recommendation,
    /// The recommended width, measured.
    pub recommended: Option<Width>,
}

/// The plan: every width worth showing, the recommendation and the warnings.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Plan {
    /// Rows planned for.
    pub rows: u64,
    /// Distinct values planned for: the count given, or for a compound index the product of the
    /// counts, capped at the rows.
    pub distinct: u64,
    /// The counts given, one per column.
    pub distinct_per_column: Vec<u64>,
    /// The false-positive budget.
    pub max_false_positives: f64,
    /// The privacy floor.
    pub min_values_per_bucket: f64,
    /// The widths the limits allow.
    pub recommendation: Recommendation,
    /// Measured widths, ascending: every width from 8 bits to a little past the point where each
    /// value gets a bucket of its own, and 32 bits (the usual default) if beyond that.
    pub widths: Vec<Width>,
    /// One plan per prefix length, when a prefix index was asked for.
    pub prefixes: Vec<PrefixPlan>,
    /// What the numbers alone do not say.
    pub warnings: Vec<Warning>,
}

impl Plan {
    /// The recommended width ([`Recommendation::bits`]).
    pub fn recommended_bits(&self) -> Option<u16> {
        self.recommendation.bits()
    }

    /// The recommended width, measured.
    pub fn recommended(&self) -> Option<Width> {
        self.recommended_bits().map(|b| self.measure(b))
    }

    /// Measures any width from 8 to 256 bits against this plan's table and limits.
    pub fn width(&self, bits: u16) -> Result<Width> {
        check_bits(bits)?;
        Ok(self.measure(bits))
    }

    /// Stored bytes per row of the prefix index: the sum over the lengths that have a
    /// recommended width.
    pub fn prefix_bytes_per_row(&self) -> u64 {
        self.prefixes
            .iter()
            .filter_map(|p| p.recommended)
            .map(|w| u64::from(w.bytes_per_row))
            .sum()
    }

    fn measure(&self, bits: u16) -> Width {
        measure(&self.limits(), self.distinct, bits)
    }

    fn limits(&self) -> Limits {
        Limits {
            rows: self.rows,
            min_values_per_bucket: self.min_values_per_bucket,
            max_false_positives: self.max_false_positives,
        }
    }
}

/// Plans a blind index: checks the input, measures the widths and recommends one.
///
/// Errors ([`Error::Invalid`]) for no rows or more than [`MAX_ROWS`]; no distinct-value count, a
/// count of 0 or a count above the rows (a column cannot hold more distinct values than rows;
/// only the product of a compound index's counts may, and it is capped); a budget that is not
/// finite and above 0; a floor that is not finite and at least 1; a prefix plan for a compound
/// index, or with lengths outside 1–[`MAX_PREFIX_LEN`] or an alphabet below 2.
pub fn plan(input: &PlanInput) -> Result<Plan> {
    let limits = Limits::check(input)?;
    let rows = limits.rows;
    let (distinct, product) = distinct_values(rows, &input.distinct)?;
    if let Some(p) = &input.prefix {
        check_prefix(p, input.distinct.len())?;
    }

    let recommendation = recommend(&limits, distinct);
    let mut warnings = Vec::new();
    if input.distinct.len() > 1 {
        warnings.push(Warning::CompoundProduct { product, rows });
    }
    match recommendation.bits() {
        None => warnings.push(Warning::NoPrivateWidth {
            distinct,
            needed: limits.min_values_per_bucket * 2f64.powi(i32::from(MIN_BITS)),
        }),
        Some(bits) => {
            let at = measure(&limits, distinct, bits);
            if !at.meets_budget {
                warnings.push(Warning::OverBudget {
                    bits,
                    true_rows: at.true_rows_per_query,
                    false_positives: at.false_positives_per_query,
                    budget: limits.max_false_positives,
                    min_values_per_bucket: limits.min_values_per_bucket,
                    within_budget: recommendation
                        .budget_min_bits
                        .map(|b| (b, measure(&limits, distinct, b).values_per_bucket)),
                });
            }
        }
    }
    if distinct == rows && rows > 1 {
        warnings.push(Warning::UniqueValues {
            min_values_per_bucket: limits.min_values_per_bucket,
            false_positives: recommendation
                .bits()
                .map(|b| measure(&limits, distinct, b).false_positives_per_query),
        });
    }

    let prefixes = match &input.prefix {
        Some(p) => plan_prefixes(&limits, distinct, p),
        None => Vec::new(),
    };
    if let Some(p) = &input.prefix {
        let lengths: Vec<u16> = prefixes
            .iter()
            .filter(|pp| pp.recommended.is_none())
            .map(|pp| pp.length)
            .collect();
        if !lengths.is_empty() {
            let first_private = prefixes
                .iter()
                .find(|pp| pp.recommended.is_some())
                .map(|pp| pp.length);
            warnings.push(Warning::PrefixLengthsLeak {
                lengths,
                first_private,
            });
        }
        warnings.push(Warning::PrefixCountsAreBounds);
        if p.max_len > p.min_len {
            warnings.push(Warning::PrefixTokensCombine);
        }
    }

    let widths = table_bits(distinct, &recommendation)
        .into_iter()
        .map(|b| measure(&limits, distinct, b))
        .collect();
    Ok(Plan {
        rows,
        distinct,
        distinct_per_column: input.distinct.clone(),
        max_false_positives: limits.max_false_positives,
        min_values_per_bucket: limits.min_values_per_bucket,
        recommendation,
        widths,
        prefixes,
        warnings,
    })
}

/// The checked rows and limits.
struct Limits {
    rows: u64,
    min_values_per_bucket: f64,
    max_false_positives: f64,
}

impl Limits {
    fn check(input: &PlanInput) -> Result<Limits> {
        if input.rows == 0 {
            return Err(Error::invalid(
                "row count",
                "0; plan for the number of rows the table will hold",
            ));
        }
        if input.rows > MAX_ROWS {
            return Err(Error::invalid(
                "row count",
                format!("{}; at most 2^53 ({MAX_ROWS}) rows", input.rows),
            ));
        }
        let f = input.max_false_positives;
        if !(f.is_finite() && f > 0.0) {
            return Err(Error::invalid(
                "false-positive budget",
                format!(
                    "{f}; give the rows of other values a search may fetch on average, above 0 \
                     (every blind index has some)"
                ),
            ));
        }
        let k = input.min_values_per_bucket;
        if !(k.is_finite() && k >= 1.0) {
            return Err(Error::invalid(
                "values-per-bucket floor",
                format!("{k}; give the distinct values each bucket should hold, at least 1"),
            ));
        }
        Ok(Limits {
            rows: input.rows,
            min_values_per_bucket: k,
            max_false_positives: f,
        })
    }
}

/// `N` (the product of the counts, capped at the rows) and the uncapped product.
fn distinct_values(rows: u64, counts: &[u64]) -> Result<(u64, Option<u64>)> {
    if counts.is_empty() {
        return Err(Error::invalid(
            "distinct-value count",
            "none given; give the distinct values of the column, or one count per column of a \
             compound index",
        ));
    }
    for &n in counts {
        if n == 0 {
            return Err(Error::invalid(
                "distinct-value count",
                "0; a column with rows holds at least one value",
            ));
        }
        if n > rows {
            return Err(Error::invalid(
                "distinct-value count",
                format!(
                    "{n} is more than the {rows} rows; a column cannot hold more distinct values \
                     than rows (are the row and distinct counts swapped?)"
                ),
            ));
        }
    }
    let product = counts.iter().try_fold(1u64, |acc, &n| acc.checked_mul(n));
    Ok((product.map_or(rows, |p| p.min(rows)), product))
}

fn check_prefix(p: &PrefixSpec, columns: usize) -> Result<()> {
    if columns > 1 {
        return Err(Error::invalid(
            "prefix plan",
            "a prefix index indexes one column; give one distinct-value count",
        ));
    }
    if p.min_len == 0 || p.min_len > p.max_len || p.max_len > MAX_PREFIX_LEN {
        return Err(Error::invalid(
            "prefix lengths",
            format!(
                "{}..{}; give MIN..MAX with 1 ≤ MIN ≤ MAX ≤ {MAX_PREFIX_LEN}",
                p.min_len, p.max_len
            ),
        ));
    }
    if p.alphabet < 2 {
        return Err(Error::invalid(
            "prefix alphabet",
            format!(
                "{}; give the characters one position can take (26 for case-folded letters, 10 \
                 for digits), at least 2",
                p.alphabet
            ),
        ));
    }
    Ok(())
}

fn check_bits(bits: u16) -> Result<()> {
    if (MIN_BITS..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(Error::invalid(
            "blind-index width",
            format!("{bits} bits; choose {MIN_BITS}–{MAX_BITS}"),
        ))
    }
}

/// Measures width `bits` for `distinct` values. Counts are at most 2^53, so they convert to
/// `f64` exactly, and scaling by a power of two is exact.
fn measure(limits: &Limits, distinct: u64, bits: u16) -> Width {
    let rows = limits.rows as f64;
    let n = distinct as f64;
    let exp = i32::from(bits);
    let scale = 2f64.powi(-exp);
    let values_per_bucket = n * scale;
    let true_rows = rows / n;
    let false_positives = (rows - true_rows) * scale;
    // P(none of the other N−1 values shares the bucket); ln_1p keeps 2^−L from vanishing.
    let alone_fraction = ((n - 1.0) * (-scale).ln_1p()).exp();
    let bytes_per_row = bits.div_ceil(8);
    Width {
        bits,
        bytes_per_row,
        buckets: 2f64.powi(exp),
        values_per_bucket,
        alone_fraction,
        true_rows_per_query: true_rows,
        false_positives_per_query: false_positives,
        // At most 2^53 rows × 32 bytes: no overflow; saturating all the same.
        index_bytes: limits.rows.saturating_mul(u64::from(bytes_per_row)),
        meets_privacy: values_per_bucket >= limits.min_values_per_bucket,
        meets_budget: false_positives <= limits.max_false_positives,
    }
}

fn recommend(limits: &Limits, distinct: u64) -> Recommendation {
    Recommendation {
        privacy_max_bits: (MIN_BITS..=MAX_BITS)
            .rev()
            .find(|&b| measure(limits, distinct, b).meets_privacy),
        budget_min_bits: (MIN_BITS..=MAX_BITS).find(|&b| measure(limits, distinct, b).meets_budget),
    }
}

fn plan_prefixes(limits: &Limits, distinct: u64, p: &PrefixSpec) -> Vec<PrefixPlan> {
    (p.min_len..=p.max_len)
        .map(|length| {
            let possible = p
                .alphabet
                .checked_pow(u32::from(length))
                .unwrap_or(u64::MAX);
            let n = distinct.min(possible);
            let recommendation = recommend(limits, n);
            PrefixPlan {
                length,
                distinct: n,
                recommendation,
                recommended: recommendation.bits().map(|b| measure(limits, n, b)),
            }
        })
        .collect()
}

/// The widths worth a row in the table: 8 bits up to two past `⌈log2 N⌉` (where values start to
/// get buckets of their own) and past the budget's minimum, at least to 16; then 32 if beyond.
fn table_bits(distinct: u64, rec: &Recommendation) -> Vec<u16> {
    let log2_ceil = 64 - distinct.saturating_sub(1).leading_zeros();
    // At most 64 + 2, so the conversion cannot fail; MAX_BITS bounds it all the same.
    let near_unique = u16::try_from(log2_ceil + 2).unwrap_or(MAX_BITS);
    let budget = rec
        .budget_min_bits
        .map_or(MIN_BITS, |b| b.saturating_add(1));
    let hi = near_unique.max(budget).clamp(16, MAX_BITS);
    let mut bits: Vec<u16> = (MIN_BITS..=hi).collect();
    if hi < 32 {
        bits.push(32);
    }
    bits
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn kinds(p: &Plan) -> Vec<&'static str> {
        p.warnings.iter().map(Warning::kind).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn a_million_unique_values() {
        // 2 · 2^18 = 524 288 ≤ 10^6 < 2 · 2^19: 18 bits keep ≥ 2 values per bucket.
        // (10^6 − 1) / 2^17 = 7.63 ≤ 10 < (10^6 − 1) / 2^16 = 15.3: 17 bits meet the budget.
        let p = plan(&PlanInput::new(1_000_000, [1_000_000])).unwrap();
        assert_eq!(p.distinct, 1_000_000);
        assert_eq!(p.recommendation.privacy_max_bits, Some(18));
        assert_eq!(p.recommendation.budget_min_bits, Some(17));
        assert_eq!(p.recommendation.range(), Some(17..=18));
        let w = p.recommended().unwrap();
        assert_eq!(w.bits, 18);
        assert_eq!(w.bytes_per_row, 3);
        assert_eq!(w.buckets, 262_144.0);
        assert_eq!(w.values_per_bucket, 1_000_000.0 / 262_144.0);
        assert!(close(w.false_positives_per_query, 999_999.0 / 262_144.0));
        assert_eq!(w.true_rows_per_query, 1.0);
        assert_eq!(w.index_bytes, 3_000_000);
        // (1 − 2^−18)^999 999 ≈ e^−3.8147 ≈ 0.02204.
        assert!((w.alone_fraction - 0.022_044).abs() < 1e-6, "{w:?}");
        assert!(w.meets_privacy && w.meets_budget);
        assert!(!p.width(19).unwrap().meets_privacy);
        assert!(!p.width(16).unwrap().meets_budget);
        assert_eq!(kinds(&p), ["unique_values"]);
    }

    #[test]
    fn five_million_ssns() {
        // 2 · 2^21 = 4 194 304 ≤ 5 · 10^6 < 2 · 2^22; (5·10^6 − 1)/2^19 = 9.54 ≤ 10 < 19.1.
        let p = plan(&PlanInput::new(5_000_000, [5_000_000])).unwrap();
        assert_eq!(p.recommended_bits(), Some(21));
        assert_eq!(p.recommendation.range(), Some(19..=21));
        let fp = p.recommended().unwrap().false_positives_per_query;
        assert!(close(fp, 4_999_999.0 / 2_097_152.0));
        // The floor's price: between K·(N−1)/N and 2K·(N−1)/N false positives for a unique row.
        assert!((2.0..4.0).contains(&fp));
        let text = p.warnings[0].to_string();
        assert!(text.contains("UNIQUE") && text.contains("~2.38"), "{text}");
    }

    #[test]
    fn booleans_have_no_private_width() {
        let p = plan(&PlanInput::new(1_000_000, [2])).unwrap();
        assert_eq!(p.recommended_bits(), None);
        assert_eq!(p.recommendation.range(), None);
        // (10^6 − 5·10^5) / 2^16 = 7.6 ≤ 10 < 15.3.
        assert_eq!(p.recommendation.budget_min_bits, Some(16));
        assert_eq!(
            p.warnings,
            [Warning::NoPrivateWidth {
                distinct: 2,
                needed: 512.0
            }]
        );
        assert!(p.warnings[0].to_string().contains("needs 512"));
    }

    #[test]
    fn the_floor_at_8_bits_is_k_times_256() {
        let at = |n| {
            plan(&PlanInput::new(10_000, [n]))
                .unwrap()
                .recommended_bits()
        };
        assert_eq!(at(511), None);
        assert_eq!(at(512), Some(8));
        assert_eq!(at(1023), Some(8));
        assert_eq!(at(1024), Some(9));
        let k3 = |n| {
            plan(&PlanInput::new(10_000, [n]).with_min_values_per_bucket(3.0))
                .unwrap()
                .recommended_bits()
        };
        assert_eq!(k3(767), None);
        assert_eq!(k3(768), Some(8));
    }

    #[test]
    fn one_value_is_never_private_and_never_costly() {
        let p = plan(&PlanInput::new(100, [1])).unwrap();
        assert_eq!(p.recommended_bits(), None);
        assert_eq!(p.recommendation.budget_min_bits, Some(8));
        let w = p.width(8).unwrap();
        assert_eq!(w.false_positives_per_query, 0.0);
        assert_eq!(w.alone_fraction, 1.0);
        let one = plan(&PlanInput::new(1, [1])).unwrap();
        assert_eq!(kinds(&one), ["no_private_width"]);
    }

    #[test]
    fn compound_counts_multiply_and_cap_at_the_rows() {
        // 50 000 × 365 = 18 250 000 > 5 · 10^6 rows: planned as unique rows.
        let p = plan(&PlanInput::new(5_000_000, [50_000, 365])).unwrap();
        assert_eq!(p.distinct, 5_000_000);
        assert_eq!(p.recommended_bits(), Some(21));
        assert_eq!(
            p.warnings[0],
            Warning::CompoundProduct {
                product: Some(18_250_000),
                rows: 5_000_000
            }
        );
        assert!(p.warnings[0].to_string().contains("capped"));
        assert_eq!(kinds(&p), ["compound_product", "unique_values"]);

        let overflow = plan(&PlanInput::new(MAX_ROWS, [MAX_ROWS, MAX_ROWS])).unwrap();
        assert_eq!(overflow.distinct, MAX_ROWS);
        assert!(matches!(
            overflow.warnings[0],
            Warning::CompoundProduct { product: None, .. }
        ));
    }

    #[test]
    fn over_budget_says_what_the_budget_would_cost() {
        // N = 1000 × 365 = 365 000: 2 · 2^17 ≤ N < 2 · 2^18, so 17 bits; there
        // (5·10^6 − 5·10^6/365 000) / 2^17 = 38.1 > 10; the budget needs 2^L ≥ 499 998.6: 19 bits.
        let p = plan(&PlanInput::new(5_000_000, [1000, 365])).unwrap();
        assert_eq!(p.recommended_bits(), Some(17));
        assert_eq!(p.recommendation.budget_min_bits, Some(19));
        assert_eq!(p.recommendation.range(), None);
        let Some(Warning::OverBudget {
            bits,
            false_positives,
            within_budget,
            ..
        }) = p.warnings.get(1)
        else {
            panic!("{:?}", p.warnings);
        };
        assert_eq!(*bits, 17);
        assert!((false_positives - 38.146).abs() < 1e-3);
        assert_eq!(*within_budget, Some((19, 365_000.0 / 524_288.0)));

        let tiny = plan(&PlanInput::new(1000, [1000]).with_max_false_positives(1e-90)).unwrap();
        assert_eq!(tiny.recommendation.budget_min_bits, None);
        assert!(
            tiny.warnings[0]
                .to_string()
                .contains("no width up to 256 bits")
        );
    }

    #[test]
    fn prefixes_are_planned_per_length() {
        // N_k = min(10^6, 26^k): 26, 676, 17 576, 456 976.
        let spec = PrefixSpec {
            min_len: 1,
            max_len: 4,
            alphabet: 26,
        };
        let p = plan(&PlanInput::new(1_000_000, [1_000_000]).with_prefix(spec)).unwrap();
        let got: Vec<(u16, u64, Option<u16>)> = p
            .prefixes
            .iter()
            .map(|pp| (pp.length, pp.distinct, pp.recommendation.bits()))
            .collect();
        // 676/2^8 = 2.6; 17 576/2^13 = 2.1; 456 976/2^17 = 3.5.
        assert_eq!(
            got,
            [
                (1, 26, None),
                (2, 676, Some(8)),
                (3, 17_576, Some(13)),
                (4, 456_976, Some(17))
            ]
        );
        assert_eq!(p.prefix_bytes_per_row(), 1 + 2 + 3);
        assert_eq!(
            p.warnings[1],
            Warning::PrefixLengthsLeak {
                lengths: vec![1],
                first_private: Some(2)
            }
        );
        assert_eq!(
            kinds(&p),
            [
                "unique_values",
                "prefix_lengths_leak",
                "prefix_counts_are_bounds",
                "prefix_tokens_combine"
            ]
        );
        // 26^64 overflows u64: the count is N.
        let long = PrefixSpec {
            min_len: 64,
            max_len: 64,
            alphabet: 26,
        };
        let p = plan(&PlanInput::new(1000, [1000]).with_prefix(long)).unwrap();
        assert_eq!(p.prefixes[0].distinct, 1000);
        assert_eq!(kinds(&p), ["unique_values", "prefix_counts_are_bounds"]);
    }

    #[test]
    fn the_table_covers_the_useful_range() {
        let p = plan(&PlanInput::new(5_000_000, [5_000_000])).unwrap();
        let bits: Vec<u16> = p.widths.iter().map(|w| w.bits).collect();
        // ⌈log2 5·10^6⌉ = 23, plus 2; then 32.
        assert_eq!(bits, (8..=25).chain([32]).collect::<Vec<_>>());
        let tiny = plan(&PlanInput::new(10, [2])).unwrap();
        assert_eq!(tiny.widths.len(), 16 - 8 + 1 + 1);
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let err = |i: PlanInput| plan(&i).unwrap_err().to_string();
        assert!(err(PlanInput::new(0, [1])).contains("row count: 0"));
        assert!(err(PlanInput::new(MAX_ROWS + 1, [1])).contains("2^53"));
        assert!(err(PlanInput::new(10, [])).contains("none given"));
        assert!(err(PlanInput::new(10, [0])).contains("at least one value"));
        assert!(err(PlanInput::new(10, [11])).contains("swapped"));
        assert!(err(PlanInput::new(10, [5, 11])).contains("more than the 10 rows"));
        for f in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = err(PlanInput::new(10, [5]).with_max_false_positives(f));
            assert!(e.contains("false-positive budget"), "{e}");
        }
        for k in [0.5, f64::NAN, f64::INFINITY] {
            let e = err(PlanInput::new(10, [5]).with_min_values_per_bucket(k));
            assert!(e.contains("values-per-bucket floor"), "{e}");
        }
        let prefix = |min_len, max_len, alphabet| {
            err(PlanInput::new(10, [5]).with_prefix(PrefixSpec {
                min_len,
                max_len,
                alphabet,
            }))
        };
        assert!(prefix(0, 3, 26).contains("prefix lengths"));
        assert!(prefix(4, 3, 26).contains("prefix lengths"));
        assert!(prefix(1, 65, 26).contains("prefix lengths"));
        assert!(prefix(1, 3, 1).contains("prefix alphabet"));
        let compound = PlanInput::new(10, [5, 2]).with_prefix(PrefixSpec {
            min_len: 1,
            max_len: 2,
            alphabet: 26,
        });
        assert!(err(compound).contains("one column"));
        let p = plan(&PlanInput::new(10, [5])).unwrap();
        assert!(p.width(7).is_err() && p.width(257).is_err());
        assert!(p.width(256).is_ok());
    }

    proptest! {
        #[test]
        fn plans_match_the_closed_forms(
            rows in 1u64..=MAX_ROWS,
            frac in 0.0f64..=1.0,
            k in 1u64..=16,
            budget in 0.001f64..1e7,
        ) {
            let n = ((rows as f64 * frac) as u64).clamp(1, rows);
            let p = plan(&PlanInput::new(rows, [n])
                .with_min_values_per_bucket(k as f64)
                .with_max_false_positives(budget)).unwrap();
            // Privacy: the largest L in 8..=256 with N ≥ K·2^L, in integers.
            let fits = |l: u16| u128::from(n) >= u128::from(k) << l;
            let want = (MIN_BITS..=MAX_BITS).rev().find(|&l| l < 100 && fits(l));
            prop_assert_eq!(p.recommended_bits(), want);
            if let Some(b) = want {
                let w = p.width(b).unwrap();
                prop_assert!(w.meets_privacy);
                prop_assert!(!p.width(b + 1).unwrap().meets_privacy);
                // The floor's price: FP / true rows = (N − 1)/2^L, in [K(N−1)/N, 2K(N−1)/N).
                let ratio = w.false_positives_per_query / w.true_rows_per_query;
                let base = k as f64 * (n as f64 - 1.0) / n as f64;
                prop_assert!(ratio >= base * (1.0 - 1e-9) && ratio <= 2.0 * base * (1.0 + 1e-9));
            }
            // Budget: the smallest width within it, and the one below it is not.
            if let Some(b) = p.recommendation.budget_min_bits {
                prop_assert!(p.width(b).unwrap().meets_budget);
                if b > MIN_BITS {
                    prop_assert!(!p.width(b - 1).unwrap().meets_budget);
                }
            }
            // Each extra bit halves values per bucket and false positives.
            for pair in p.widths.windows(2) {
                if pair[1].bits == pair[0].bits + 1 {
                    prop_assert_eq!(pair[1].values_per_bucket * 2.0, pair[0].values_per_bucket);
                    prop_assert!(
                        pair[1].false_positives_per_query <= pair[0].false_positives_per_query
                    );
                    prop_assert!(pair[1].alone_fraction >= pair[0].alone_fraction - 1e-12);
                }
            }
            if let Some(r) = p.recommendation.range() {
                prop_assert!(p.widths.iter().any(|w| w.bits == *r.end()));
                for b in r {
                    let w = p.width(b).unwrap();
                    prop_assert!(w.meets_privacy && w.meets_budget);
                }
            }
        }

        #[test]
        fn any_input_plans_or_errs_without_panicking(
            rows in prop_oneof![1u64..=1_000_000, any::<u64>()],
            distinct in proptest::collection::vec(
                prop_oneof![0u64..=1_000_000, any::<u64>()],
                0..4,
            ),
            budget in prop_oneof![0.001f64..1e6, any::<f64>()],
            floor in prop_oneof![1.0f64..100.0, any::<f64>()],
            prefix in proptest::option::of(prop_oneof![
                (0u16..=70, 0u16..=70, 0u64..=40),
                (any::<u16>(), any::<u16>(), any::<u64>()),
            ]),
        ) {
            let mut input = PlanInput::new(rows, distinct)
                .with_max_false_positives(budget)
                .with_min_values_per_bucket(floor);
            if let Some((min_len, max_len, alphabet)) = prefix {
                input = input.with_prefix(PrefixSpec { min_len, max_len, alphabet });
            }
            if let Ok(p) = plan(&input) {
                prop_assert!(p.distinct >= 1 && p.distinct <= p.rows);
                for w in &p.widths {
                    prop_assert!(w.false_positives_per_query.is_finite());
                    prop_assert!((0.0..=1.0).contains(&w.alone_fraction));
                }
            }
        }
    }
}
