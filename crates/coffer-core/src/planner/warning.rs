//! What a plan says besides its numbers: [`Warning`], with a message a user can act on.

use std::fmt;

/// Something the numbers alone do not say.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Warning {
    /// Too few distinct values for any width to keep the privacy floor.
    NoPrivateWidth {
        /// Distinct values planned for.
        distinct: u64,
        /// Distinct values the narrowest index (8 bits) needs to keep the floor.
        needed: f64,
    },
    /// At the recommended width, searches fetch more false positives than the budget.
    OverBudget {
        /// The recommended width.
        bits: u16,
        /// Rows a query is after.
        true_rows: f64,
        /// False positives per query there.
        false_positives: f64,
        /// The budget.
        budget: f64,
        /// The privacy floor.
        min_values_per_bucket: f64,
        /// The narrowest width within the budget, and its distinct values per bucket.
        within_budget: Option<(u16, f64)>,
    },
    /// Every row holds its own value (`N = R`).
    UniqueValues {
        /// The privacy floor.
        min_values_per_bucket: f64,
        /// False positives per search at the recommended width.
        false_positives: Option<f64>,
    },
    /// A compound index: `N` is the product of the columns' counts, an upper bound.
    CompoundProduct {
        /// The product (`None`: beyond `u64`).
        product: Option<u64>,
        /// The rows, which cap it.
        rows: u64,
    },
    /// Prefix lengths too short for any width to keep the privacy floor.
    PrefixLengthsLeak {
        /// The lengths.
        lengths: Vec<u16>,
        /// The shortest length planned that keeps it, if any.
        first_private: Option<u16>,
    },
    /// The prefix counts are upper bounds, `min(N, alphabet^k)`.
    PrefixCountsAreBounds,
    /// A prefix index stores several tokens per row, which narrow each other.
    PrefixTokensCombine,
}

impl Warning {
    /// A stable name for the kind of warning (as in `coffer index plan --json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Warning::NoPrivateWidth { .. } => "no_private_width",
            Warning::OverBudget { .. } => "over_budget",
            Warning::UniqueValues { .. } => "unique_values",
            Warning::CompoundProduct { .. } => "compound_product",
            Warning::PrefixLengthsLeak { .. } => "prefix_lengths_leak",
            Warning::PrefixCountsAreBounds => "prefix_counts_are_bounds",
            Warning::PrefixTokensCombine => "prefix_tokens_combine",
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::NoPrivateWidth { distinct, needed } => write!(
                f,
                "only {distinct} distinct values: even the narrowest index (8 bits, 256 buckets) \
                 needs {} to keep the privacy floor. Any blind index on this column shows which \
                 rows share a value, and anyone who knows how the values are distributed can tell \
                 which bucket is which value (frequency analysis). Do not index it on its own: \
                 index it together with a high-cardinality column (a compound index), or leave it \
                 unindexed and filter after decryption.",
                approx(*needed)
            ),
            Warning::OverBudget {
                bits,
                true_rows,
                false_positives,
                budget,
                min_values_per_bucket,
                within_budget,
            } => {
                write!(
                    f,
                    "at {bits} bits a query fetches ~{} rows of other values besides its ~{} true \
                     rows, over the budget of {}: keeping {} values per bucket costs about {} to \
                     {} false positives per true row, whatever the budget. Accept the cost \
                     (raise the budget)",
                    approx(*false_positives),
                    approx(*true_rows),
                    approx(*budget),
                    approx(*min_values_per_bucket),
                    approx(*min_values_per_bucket),
                    approx(2.0 * min_values_per_bucket),
                )?;
                match within_budget {
                    Some((b, v)) => write!(
                        f,
                        ", or use {b} bits, which meets the budget with only ~{} distinct values \
                         per bucket (more leakage).",
                        approx(*v)
                    ),
                    None => f.write_str(": no width up to 256 bits meets it."),
                }
            }
            Warning::UniqueValues {
                min_values_per_bucket,
                false_positives,
            } => {
                write!(
                    f,
                    "every value is unique (as many distinct values as rows): with at least {} \
                     values per bucket, each query fetches its one row plus ",
                    approx(*min_values_per_bucket)
                )?;
                match false_positives {
                    Some(fp) => write!(f, "~{} rows of other values", approx(*fp))?,
                    None => f.write_str("rows of other values")?,
                }
                f.write_str(
                    ", by design. So the index column cannot carry a UNIQUE constraint; enforce \
                     uniqueness after decryption (query, decrypt the candidates, compare).",
                )
            }
            Warning::CompoundProduct { product, rows } => {
                match product {
                    Some(p) if p <= rows => write!(
                        f,
                        "the compound index is planned for {p} distinct combinations"
                    )?,
                    Some(p) => write!(
                        f,
                        "the columns' counts multiply to {p} combinations, capped at the {rows} \
                         rows"
                    )?,
                    None => write!(
                        f,
                        "the columns' counts multiply beyond 2^64, capped at the {rows} rows"
                    )?,
                }
                f.write_str(
                    ", which assumes the columns vary independently. Correlated columns (city and \
                     postcode) have fewer combinations, and then the recommended width leaks more \
                     than planned: count them (SELECT count(DISTINCT (a, b))) and plan with that \
                     single count.",
                )
            }
            Warning::PrefixLengthsLeak {
                lengths,
                first_private,
            } => {
                let one = lengths.len() == 1;
                f.write_str(if one {
                    "prefix length "
                } else {
                    "prefix lengths "
                })?;
                for (i, l) in lengths.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{l}")?;
                }
                f.write_str(if one { " has" } else { " have" })?;
                f.write_str(
                    " too few distinct prefixes for any width to keep the privacy floor: an \
                     index there is an equality oracle on those prefixes. ",
                )?;
                match first_private {
                    Some(k) => write!(f, "Start the prefix index at length {k}."),
                    None => f.write_str("No length planned keeps the floor."),
                }
            }
            Warning::PrefixCountsAreBounds => f.write_str(
                "the prefix counts are upper bounds, min(N, alphabet^k): real prefixes cluster \
                 (far more names start with \"s\" than with \"x\"), and fewer prefixes mean \
                 fewer values per bucket. Count them where you can \
                 (SELECT count(DISTINCT left(c, k))) and plan each length with its real count.",
            ),
            Warning::PrefixTokensCombine => f.write_str(
                "a prefix index stores one token per length in every row, and a row's tokens \
                 narrow each other (rows sharing the tokens of lengths 3 and 4 most likely share \
                 their 4-character prefix): the floor holds for each length alone, not for a \
                 row's set of tokens.",
            ),
        }
    }
}

/// A number for a sentence: about three significant digits, no trailing zeros.
fn approx(x: f64) -> String {
    let s = if x >= 100.0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_words() {
        assert_eq!(approx(2.0), "2");
        assert_eq!(approx(2.384), "2.38");
        assert_eq!(approx(38.146), "38.1");
        assert_eq!(approx(305.18), "305");
        assert_eq!(approx(0.004), "4.0e-3");
    }

    #[test]
    fn prefix_lengths_agree_in_number() {
        let one = Warning::PrefixLengthsLeak {
            lengths: vec![1],
            first_private: Some(2),
        };
        assert!(one.to_string().starts_with("prefix length 1 has too few"));
        let two = Warning::PrefixLengthsLeak {
            lengths: vec![1, 2],
            first_private: None,
        };
        let text = two.to_string();
        assert!(
            text.starts_with("prefix lengths 1, 2 have too few"),
            "{text}"
        );
        assert!(
            text.ends_with("No length planned keeps the floor."),
            "{text}"
        );
    }
}
