//! coffer-columns.toml text for tests and benchmarks (docs/COLUMNS.md): one builder instead of a
//! TOML literal per test, so a schema states only what differs.
//!
//! ```
//! let toml = coffer_testkit::columns_schema::table("people", "table:people")
//!     .column("ssn", "text", &[("migrate_from", "ssn_plain")])
//!     .index("ssn_bidx", &["ssn"], 24, &["digits"])
//!     .toml();
//! assert!(toml.contains("migrate_from = \"ssn_plain\""));
//! ```

use std::fmt::Write as _;

/// One `[[table]]` of a coffer-columns.toml, built column by column.
#[derive(Clone, Debug)]
pub struct Table {
    toml: String,
}

/// A `[[table]]` named `name` whose keys live under `scope`.
pub fn table(name: &str, scope: &str) -> Table {
    Table {
        toml: format!("[[table]]\nname = {name:?}\nscope = {scope:?}\n"),
    }
}

impl Table {
    /// A table-level setting (`keys`, `row_key`, `create_scopes`, `row_id`, …), written
    /// before the first column whatever the order of the calls. `value` is TOML as written
    /// (`"\"row\""`, `false`).
    pub fn setting(mut self, key: &str, value: &str) -> Table {
        let at = self.toml.find("\n[[table.").unwrap_or(self.toml.len());
        self.toml.insert_str(at, &format!("{key} = {value}\n"));
        self
    }

    /// A `[[table.column]]` of type `ty` (`text`, `int`, `date`, `json`, …) with its other
    /// settings, each a string in the file (`mode`, `storage`, `nulls`, `migrate_from`).
    pub fn column(mut self, name: &str, ty: &str, settings: &[(&str, &str)]) -> Table {
        let _ = write!(
            self.toml,
            "\n[[table.column]]\nname = {name:?}\ntype = {ty:?}\n"
        );
        for (key, value) in settings {
            let _ = writeln!(self.toml, "{key} = {value:?}");
        }
        self
    }

    /// A `[[table.index]]`: a blind index of `bits` bits over `columns`, normalized by
    /// `normalize` in order.
    pub fn index(mut self, name: &str, columns: &[&str], bits: u16, normalize: &[&str]) -> Table {
        let _ = write!(
            self.toml,
            "\n[[table.index]]\nname = {name:?}\ncolumns = {columns:?}\nbits = {bits}\nnormalize = {normalize:?}\n"
        );
        self
    }

    /// A prefix index on `column` (for `LIKE 'abc%'`): [`Table::index`] with one token per
    /// prefix length from `min` to `max`.
    pub fn prefix_index(
        self,
        name: &str,
        column: &str,
        bits: u16,
        normalize: &[&str],
        (min, max): (u16, u16),
    ) -> Table {
        let mut t = self.index(name, &[column], bits, normalize);
        let _ = writeln!(t.toml, "prefix = [{min}, {max}]");
        t
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        self.toml.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_the_hand_written_schema() {
        let built = table("patients", "table:patients")
            .column("ssn", "text", &[("migrate_from", "ssn_plain")])
            .column("mrn", "text", &[("mode", "deterministic")])
            .index("ssn_bidx", &["ssn"], 20, &["digits"])
            .prefix_index("mrn_prefix", "mrn", 32, &[], (3, 8))
            .toml();
        let by_hand = r#"[[table]]
name = "patients"
scope = "table:patients"

[[table.column]]
name = "ssn"
type = "text"
migrate_from = "ssn_plain"

[[table.column]]
name = "mrn"
type = "text"
mode = "deterministic"

[[table.index]]
name = "ssn_bidx"
columns = ["ssn"]
bits = 20
normalize = ["digits"]

[[table.index]]
name = "mrn_prefix"
columns = ["mrn"]
bits = 32
normalize = []
prefix = [3, 8]
"#;
        assert_eq!(built, by_hand);
    }
}
