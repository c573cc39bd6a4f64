//! Declarative column encryption: which columns of which table are encrypted, how, under which
//! scope, with which blind indexes. Written in `coffer-columns.toml` (shared by the application
//! and `coffer reencrypt`) or built in code as [`TableSpec`]s.
//!
//! ```toml
//! [[table]]
//! name = "patients"            # SQL table (optionally schema.table)
//! scope = "table:patients"     # key-store scope whose DEK versions encrypt it
//! row_id = "id"                # bound into every randomized value's AAD (default "id")
//! version_column = "key_version"
//!
//! [[table.column]]
//! name = "ssn"
//! type = "text"                # text bytes int bool date timestamp json uuid
//! mode = "randomized"          # or "deterministic" (AES-SIV, not in FIPS builds), "randomized-tag128"
//! storage = "bytea"            # or "text" ("cf1:" + base64url)
//! nulls = "passthrough"        # or "authenticated"
//! migrate_from = "ssn_plain"   # plaintext column `coffer reencrypt` migrates from
//!
//! [[table.index]]
//! name = "ssn_bidx"            # a BYTEA column (BYTEA[] with GIN for prefix indexes)
//! columns = ["ssn"]            # several for a compound index
//! bits = 32                    # see `coffer index plan`
//! normalize = ["digits"]       # trim casefold nfc digits last:N (text columns only)
//! # prefix = [3, 10]           # a prefix index: one token per prefix length 3..=10
//! ```

use std::path::Path;
use std::sync::Arc;

use coffer_core::{ColumnId, Normalizer, ScopeId, Suite, ValueType};
use coffer_keys::BlindIndexSpec;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::scope::ScopeTemplate;
use crate::value::{parse_type, type_name};

/// A schema file: every encrypted table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// The tables.
    #[serde(rename = "table", default)]
    pub tables: Vec<TableSpec>,
}

/// One table, as written in the schema file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// SQL name (`patients` or `clinic.patients`).
    pub name: String,
    /// Stable logical id bound into the AADs and key derivations (default: `name`). Keep it
    /// when renaming the SQL table.
    #[serde(default)]
    pub id: Option<String>,
    /// Key-store scope, or a scope template whose `{column}` placeholders take the row's values
    /// (`tenant:{tenant_id}/patients`: one scope per tenant).
    pub scope: String,
    /// `scope` (default): values are sealed under the scope's DEK versions. `row`: every row
    /// gets its own data key, stored wrapped under the row's scope in the `row_key` column.
    #[serde(default)]
    pub keys: Option<String>,
    /// The BYTEA column holding a row's wrapped data key with `keys = "row"` (default `row_key`).
    #[serde(default)]
    pub row_key: Option<String>,
    /// Whether a write to a scope that does not exist yet creates it (default: yes for a
    /// template, no for a fixed scope). A destroyed scope is never created again.
    #[serde(default)]
    pub create_scopes: Option<bool>,
    /// Row-id column (default `id`); its text form is every randomized value's row context.
    #[serde(default)]
    pub row_id: Option<String>,
    /// Column holding the DEK version the row was written under (default `key_version`).
    #[serde(default)]
    pub version_column: Option<String>,
    /// Encrypted columns.
    #[serde(rename = "column", default)]
    pub columns: Vec<ColumnSpec>,
    /// Blind indexes.
    #[serde(rename = "index", default)]
    pub indexes: Vec<IndexSpec>,
}

/// One encrypted column, as written in the schema file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// SQL name.
    pub name: String,
    /// Stable logical id (default `<table id>.<name>`).
    #[serde(default)]
    pub id: Option<String>,
    /// Value type: `text`, `bytes`, `int`, `bool`, `date`, `timestamp`, `json`, `uuid`.
    #[serde(rename = "type")]
    pub value_type: String,
    /// `randomized` (default), `randomized-tag128` or `deterministic`.
    #[serde(default)]
    pub mode: Option<String>,
    /// `bytea` (default) or `text`.
    #[serde(default)]
    pub storage: Option<String>,
    /// `passthrough` (default) or `authenticated`.
    #[serde(default)]
    pub nulls: Option<String>,
    /// A plaintext column to migrate from (`coffer reencrypt` fills this column from it).
    #[serde(default)]
    pub migrate_from: Option<String>,
}

/// One blind index, as written in the schema file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSpec {
    /// SQL column holding the index (BYTEA; BYTEA[] for a prefix index). Also the key name.
    pub name: String,
    /// The encrypted columns it indexes, in order.
    pub columns: Vec<String>,
    /// Width in bits (8–256; `coffer index plan` recommends one).
    pub bits: u16,
    /// Normalizers, applied in order (text columns only).
    #[serde(default)]
    pub normalize: Vec<String>,
    /// `[min, max]`: a prefix index with one token per prefix length, for `LIKE 'abc%'`.
    #[serde(default)]
    pub prefix: Option<[u16; 2]>,
}

/// How values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// BYTEA: the binary ciphertext.
    Bytea,
    /// TEXT: `cf1:` + base64url.
    Text,
}

/// A validated encrypted column.
#[derive(Clone, Debug)]
pub struct Column {
    /// SQL name.
    pub name: String,
    pub(crate) sql: String,
    /// Logical id (in the AAD and the subkey).
    pub id: ColumnId,
    /// Value type.
    pub value_type: ValueType,
    /// Suite.
    pub suite: Suite,
    /// Storage.
    pub storage: Storage,
    /// NULL handling.
    pub nulls: coffer_core::Nulls,
    /// Plaintext source column, quoted, for migration.
    pub(crate) migrate_from: Option<(String, String)>,
}

/// A validated blind index.
#[derive(Clone, Debug)]
pub struct Index {
    /// SQL name (also the key name).
    pub name: String,
    pub(crate) sql: String,
    /// Positions of the indexed columns in [`Table::columns`].
    pub(crate) columns: Vec<usize>,
    /// Width in bits.
    pub bits: u16,
    /// Normalizers.
    pub normalizers: Vec<Normalizer>,
    /// Prefix lengths, for a prefix index.
    pub prefix: Option<(u16, u16)>,
    /// Key specs: one for an equality index; one per length (min..=max) for a prefix index.
    pub(crate) keys: Vec<BlindIndexSpec>,
}

impl Index {
    /// The names of the encrypted columns it indexes, in order.
    pub fn column_names<'a>(&self, table: &'a Table) -> Vec<&'a str> {
        self.columns
            .iter()
            .map(|i| table.column_at(*i).name.as_str())
            .collect()
    }
}

/// A validated table definition. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Table {
    pub(crate) inner: Arc<TableInner>,
}

#[derive(Debug)]
pub(crate) struct TableInner {
    pub name: String,
    pub sql: String,
    pub id: String,
    pub scope: ScopeTemplate,
    pub row_keys: Option<(String, String)>,
    pub create_scopes: bool,
    pub row_id: String,
    pub row_id_sql: String,
    pub version_sql: String,
    pub columns: Vec<Column>,
    pub indexes: Vec<Index>,
}

impl Schema {
    /// Parses a schema file's text.
    pub fn from_toml(text: &str) -> Result<Schema> {
        toml::from_str(text).map_err(|e| Error::Schema(e.to_string()))
    }

    /// Reads and parses a schema file.
    pub fn load(path: &Path) -> Result<Schema> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Schema(format!("cannot read {}: {e}", path.display())))?;
        Schema::from_toml(&text).map_err(|e| match e {
            Error::Schema(m) => Error::Schema(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Validates every table.
    pub fn tables(&self) -> Result<Vec<Table>> {
        if self.tables.is_empty() {
            return Err(Error::Schema("no [[table]] defined".into()));
        }
        let tables = self
            .tables
            .iter()
            .map(Table::new)
            .collect::<Result<Vec<_>>>()?;
        for (i, t) in tables.iter().enumerate() {
            if tables[..i].iter().any(|o| o.inner.sql == t.inner.sql) {
                return Err(Error::Schema(format!(
                    "table '{}' is defined twice",
                    t.name()
                )));
            }
        }
        Ok(tables)
    }

    /// The validated table named `name` (its SQL name).
    pub fn table(&self, name: &str) -> Result<Table> {
        let spec = self.tables.iter().find(|t| t.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
            Error::Schema(format!(
                "no table '{name}' in the schema (it defines: {})",
                names.join(", ")
            ))
        })?;
        Table::new(spec)
    }
}

/// Quotes an SQL identifier (`a` or `schema.a`), refusing anything but plain identifiers.
pub(crate) fn ident(name: &str, what: &str) -> Result<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let ok = !parts.is_empty()
        && parts.len() <= 2
        && parts.iter().all(|p| {
            let mut chars = p.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && p.len() <= 63
        });
    if !ok || (parts.len() == 2 && what != "table") {
        return Err(Error::Schema(format!(
            "{what} name '{name}' is not a plain SQL identifier (letters, digits, _)"
        )));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
}

fn keyword<T: Copy>(
    value: Option<&str>,
    default: T,
    choices: &[(&str, T)],
    what: &str,
) -> Result<T> {
    let Some(v) = value else { return Ok(default) };
    choices
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            Error::Schema(format!(
                "{what} '{v}': expected one of {}",
                names.join(", ")
            ))
        })
}

impl Table {
    /// Validates a table definition.
    pub fn new(spec: &TableSpec) -> Result<Table> {
        let sql = ident(&spec.name, "table")?;
        let id = spec.id.clone().unwrap_or_else(|| spec.name.clone());
        let scope = ScopeTemplate::parse(&spec.scope)
            .map_err(|e| Error::Schema(format!("table '{}': {e}", spec.name)))?;
        let row_id = spec.row_id.clone().unwrap_or_else(|| "id".to_owned());
        let row_id_sql = ident(&row_id, "row_id")?;
        let version_sql = ident(
            spec.version_column.as_deref().unwrap_or("key_version"),
            "version_column",
        )?;
        let t = &spec.name;
        if spec.columns.is_empty() {
            return Err(Error::Schema(format!(
                "table '{t}' has no [[table.column]]"
            )));
        }
        let mut columns: Vec<Column> = Vec::new();
        for c in &spec.columns {
            let csql = ident(&c.name, "column")?;
            if columns.iter().any(|o| o.name == c.name) || c.name == row_id {
                return Err(Error::Schema(format!(
                    "table '{t}': column '{}' twice",
                    c.name
                )));
            }
            let value_type = parse_type(&c.value_type).ok_or_else(|| {
                Error::Schema(format!(
                    "{t}.{}: type '{}': expected text, bytes, int, bool, date, timestamp, json or uuid",
                    c.name, c.value_type
                ))
            })?;
            let suite = keyword(
                c.mode.as_deref(),
                Suite::Gcm96,
                &[
                    ("randomized", Suite::Gcm96),
                    ("randomized-tag128", Suite::Gcm128),
                    ("deterministic", Suite::Siv),
                ],
                "mode",
            )?;
            if cfg!(feature = "fips") && suite == Suite::Siv {
                return Err(Error::Schema(format!(
                    "{t}.{}: mode = \"deterministic\" is AES-SIV, which this FIPS build refuses; \
                     use a randomized column with a blind index for equality search",
                    c.name
                )));
            }
            let storage = keyword(
                c.storage.as_deref(),
                Storage::Bytea,
                &[("bytea", Storage::Bytea), ("text", Storage::Text)],
                "storage",
            )?;
            let nulls = keyword(
                c.nulls.as_deref(),
                coffer_core::Nulls::Passthrough,
                &[
                    ("passthrough", coffer_core::Nulls::Passthrough),
                    ("authenticated", coffer_core::Nulls::Authenticated),
                ],
                "nulls",
            )?;
            let cid = c.id.clone().unwrap_or_else(|| format!("{id}.{}", c.name));
            let cid = ColumnId::new(&cid)
                .map_err(|e| Error::Schema(format!("{t}.{}: column id: {e}", c.name)))?;
            let migrate_from = match &c.migrate_from {
                Some(m) => Some((m.clone(), ident(m, "migrate_from")?)),
                None => None,
            };
            columns.push(Column {
                name: c.name.clone(),
                sql: csql,
                id: cid,
                value_type,
                suite,
                storage,
                nulls,
                migrate_from,
            });
        }
        let mut indexes: Vec<Index> = Vec::new();
        for i in &spec.indexes {
            let isql = ident(&i.name, "index")?;
            if indexes.iter().any(|o| o.name == i.name) || columns.iter().any(|c| c.name == i.name)
            {
                return Err(Error::Schema(format!(
                    "table '{t}': index '{}' clashes with another index or column",
                    i.name
                )));
            }
            if i.columns.is_empty() {
                return Err(Error::Schema(format!(
                    "{t}.{}: index lists no columns",
                    i.name
                )));
            }
            let mut pos = Vec::new();
            for name in &i.columns {
                let p = columns.iter().position(|c| &c.name == name).ok_or_else(|| {
                    Error::Schema(format!(
                        "{t}.{}: indexes '{name}', which is not an encrypted column of the table",
                        i.name
                    ))
                })?;
                pos.push(p);
            }
            let normalizers = i
                .normalize
                .iter()
                .map(|n| n.parse::<Normalizer>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Schema(format!("{t}.{}: {e}", i.name)))?;
            if !normalizers.is_empty()
                && pos
                    .iter()
                    .any(|p| columns[*p].value_type != ValueType::Text)
            {
                return Err(Error::Schema(format!(
                    "{t}.{}: normalizers apply to text columns only",
                    i.name
                )));
            }
            let index_key = |name: String| -> Result<BlindIndexSpec> {
                let spec = BlindIndexSpec {
                    column: columns[pos[0]].id.clone(),
                    name,
                    bits: i.bits,
                    normalizers: Vec::new(),
                };
                // Validate the width now rather than at the first write.
                if !(coffer_core::blind_index::MIN_BITS..=coffer_core::blind_index::MAX_BITS)
                    .contains(&i.bits)
                {
                    return Err(Error::Schema(format!(
                        "{t}.{}: bits = {}: choose 8–256 (see `coffer index plan`)",
                        i.name, i.bits
                    )));
                }
                Ok(spec)
            };
            // The key name binds the index name and, for compound indexes, every column id.
            // Index names are SQL identifiers; column ids here may not hold the separators, so
            // the name splits back into its parts one way only (docs/DESIGN.md §C4: no ambiguous
            // concatenation).
            if let Some(c) = pos
                .iter()
                .map(|p| &columns[*p])
                .find(|c| c.id.as_str().contains(['(', ')', ',', '/']))
            {
                return Err(Error::Schema(format!(
                    "{t}.{}: column id '{}' of an indexed column may not contain ( ) , or /",
                    i.name,
                    c.id.as_str()
                )));
            }
            let base = {
                let ids: Vec<&str> = pos.iter().map(|p| columns[*p].id.as_str()).collect();
                format!("{}({})", i.name, ids.join(","))
            };
            let (prefix, keys) = match i.prefix {
                None => (None, vec![index_key(base)?]),
                Some([min, max]) => {
                    if pos.len() != 1 || columns[pos[0]].value_type != ValueType::Text {
                        return Err(Error::Schema(format!(
                            "{t}.{}: a prefix index covers one text column",
                            i.name
                        )));
                    }
                    if min == 0 || min > max || max > 64 {
                        return Err(Error::Schema(format!(
                            "{t}.{}: prefix = [{min}, {max}]: need 1 <= min <= max <= 64",
                            i.name
                        )));
                    }
                    let keys = (min..=max)
                        .map(|k| index_key(format!("{base}/prefix:{k}")))
                        .collect::<Result<Vec<_>>>()?;
                    (Some((min, max)), keys)
                }
            };
            indexes.push(Index {
                name: i.name.clone(),
                sql: isql,
                columns: pos,
                bits: i.bits,
                normalizers,
                prefix,
                keys,
            });
        }
        let row_keys = match spec.keys.as_deref() {
            None | Some("scope") => {
                if let Some(rk) = &spec.row_key {
                    return Err(Error::Schema(format!(
                        "table '{t}': row_key = \"{rk}\" needs keys = \"row\""
                    )));
                }
                None
            }
            Some("row") => {
                let name = spec.row_key.clone().unwrap_or_else(|| "row_key".to_owned());
                let rsql = ident(&name, "row_key")?;
                if let Some(c) = columns.iter().find(|c| c.suite.is_deterministic()) {
                    return Err(Error::Schema(format!(
                        "{t}.{}: a deterministic column is compared across rows, so it cannot be \
                         sealed under a per-row key; make it randomized with a blind index",
                        c.name
                    )));
                }
                Some((name, rsql))
            }
            Some(other) => {
                return Err(Error::Schema(format!(
                    "table '{t}': keys = \"{other}\": expected \"scope\" or \"row\""
                )));
            }
        };
        let version_name = spec.version_column.as_deref().unwrap_or("key_version");
        for p in scope.placeholders() {
            let clash = if columns.iter().any(|c| c.name == p) {
                Some("an encrypted column: its plaintext is not in the row")
            } else if indexes.iter().any(|i| i.name == p) {
                Some("a blind index")
            } else if p == version_name {
                Some("the version column")
            } else if row_keys.as_ref().is_some_and(|(n, _)| n == p) {
                Some("the row-key column")
            } else if columns
                .iter()
                .any(|c| c.migrate_from.as_ref().is_some_and(|(m, _)| m == p))
            {
                Some("a plaintext column being migrated and cleared")
            } else {
                None
            };
            if let Some(what) = clash {
                return Err(Error::Schema(format!(
                    "table '{t}': scope placeholder {{{p}}} names {what}; it must name a plaintext \
                     column that holds the tenant's or subject's id"
                )));
            }
        }
        if let Some((rk, _)) = &row_keys
            && (columns.iter().any(|c| &c.name == rk) || indexes.iter().any(|i| &i.name == rk))
        {
            return Err(Error::Schema(format!(
                "table '{t}': the row-key column '{rk}' clashes with an encrypted column or index"
            )));
        }
        let create_scopes = spec.create_scopes.unwrap_or(scope.is_template());
        Ok(Table {
            inner: Arc::new(TableInner {
                name: spec.name.clone(),
                sql,
                id,
                scope,
                row_keys,
                create_scopes,
                row_id,
                row_id_sql,
                version_sql,
                columns,
                indexes,
            }),
        })
    }

    /// The SQL name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The logical id bound into the AADs (default: the SQL name).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The key-store scope of a table with a fixed scope. A table with a scope template has
    /// one scope per row value: this is an error naming the placeholders (use
    /// [`Columns::for_scope`](crate::Columns::for_scope), or
    /// [`scope_template`](Self::scope_template)).
    pub fn scope(&self) -> Result<&ScopeId> {
        self.inner.scope.fixed().ok_or_else(|| {
            self.inner
                .scope
                .missing(&self.inner.name, &self.inner.scope.placeholders())
        })
    }

    /// The scope as written: fixed, or a template with placeholders.
    pub fn scope_template(&self) -> &ScopeTemplate {
        &self.inner.scope
    }

    /// The row's scope from the values of the template's placeholder columns (none for a
    /// fixed scope).
    pub fn resolve_scope(&self, values: &[(&str, &str)]) -> Result<ScopeId> {
        self.inner.scope.resolve(&self.inner.name, values)
    }

    /// With `keys = "row"`: the column holding each row's wrapped data key.
    pub fn row_key_column(&self) -> Option<&str> {
        self.inner.row_keys.as_ref().map(|(n, _)| n.as_str())
    }

    /// Whether a write creates a scope that does not exist yet.
    pub fn creates_scopes(&self) -> bool {
        self.inner.create_scopes
    }

    /// The row-id column's name.
    pub fn row_id(&self) -> &str {
        &self.inner.row_id
    }

    /// The encrypted columns.
    pub fn columns(&self) -> &[Column] {
        &self.inner.columns
    }

    /// The blind indexes.
    pub fn indexes(&self) -> &[Index] {
        &self.inner.indexes
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Result<&Column> {
        self.inner
            .columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                Error::value(
                    &self.inner.name,
                    name,
                    "not an encrypted column of the table",
                )
            })
    }

    /// The index named `name`.
    pub fn index(&self, name: &str) -> Result<&Index> {
        self.inner
            .indexes
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| Error::value(&self.inner.name, name, "not a blind index of the table"))
    }

    pub(crate) fn column_at(&self, i: usize) -> &Column {
        &self.inner.columns[i]
    }

    /// A human summary of a column's type, for errors.
    pub(crate) fn describe(c: &Column) -> &'static str {
        type_name(c.value_type)
    }
}
