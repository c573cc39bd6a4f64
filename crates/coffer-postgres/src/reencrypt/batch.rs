//! One batch: lock pending rows, open each under its scope (and row key), seal under the
//! active version, recompute the blind indexes, one UPDATE, commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use coffer_core::field::text;
use coffer_core::{BlindIndexKey, Header, KeyVersion, Nulls};
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::sql::{Mode, Statements, array_literal, read_cipher, read_source, version_i32};
use super::{BatchReport, Reencryptor};
use crate::columns::Columns;
use crate::error::{Error, Result};
use crate::rowkey::{ROW_KEY_VERSION, RowKey};
use crate::schema::Storage;
use crate::sealed::IndexValue;
use crate::search::index_value;

/// A scope met in a batch: its columns handle and its active index keys.
struct ScopeKeys {
    cols: Columns,
    index_keys: Vec<Vec<Arc<BlindIndexKey>>>,
    /// The lowest version the index keys are under.
    lowest: KeyVersion,
}

/// One column of a rewritten row: (plaintext, new ciphertext); `None`: NULL.
type ColumnValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// One row rewritten.
struct Rewritten {
    rid: String,
    /// Per column: (plaintext, new ciphertext).
    values: Vec<ColumnValue>,
    /// The lowest version any value (or the row key) is under.
    version: KeyVersion,
    migrated: bool,
    /// The row key to store (per-row keys), and whether it was re-wrapped.
    row_key: Option<Vec<u8>>,
    rewrapped: bool,
}

impl Reencryptor {
    /// The columns handle and active index keys of the scope a row's placeholder values spell.
    async fn scope_keys(&self, values: &[String]) -> Result<ScopeKeys> {
        let cols = match self.inner.mode {
            Mode::Fixed | Mode::One(_) => self.inner.cols.clone(),
            Mode::Walk => {
                let names = self.inner.cols.table().scope_template().placeholders();
                let pairs: Vec<(&str, &str)> = names
                    .iter()
                    .copied()
                    .zip(values.iter().map(String::as_str))
                    .collect();
                self.inner.cols.for_scope(&pairs)?
            }
        };
        let mut lowest: Option<KeyVersion> = None;
        let mut index_keys = Vec::new();
        for ix in cols.table().indexes() {
            let (v, keys) = cols.active_index_keys(ix).await?;
            lowest = Some(lowest.map_or(v, |l| l.min(v)));
            index_keys.push(keys);
        }
        let lowest = match lowest {
            Some(l) => l,
            None => cols.keyring().active_version(cols.scope()?).await?,
        };
        Ok(ScopeKeys {
            cols,
            index_keys,
            lowest,
        })
    }

    /// One batch: lock up to `limit` pending rows (of the scopes whose placeholder values are
    /// in `tuples`, one array per placeholder) after `cursor`, rewrite them, commit.
    pub(super) async fn batch(
        &self,
        st: &Statements,
        active: KeyVersion,
        tuples: &[Vec<String>],
        cursor: Option<&str>,
        limit: u64,
    ) -> Result<(BatchReport, Option<String>)> {
        let started = Instant::now();
        let t = &self.inner.cols.table().inner;
        let mut tx = self.inner.pool.begin().await?;
        let mut q = match cursor {
            None => sqlx::query(&st.select_first),
            Some(_) => sqlx::query(&st.select_after),
        }
        .bind(version_i32(active))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        for a in tuples {
            q = q.bind(a.clone());
        }
        if let Some(c) = cursor {
            q = q.bind(c.to_owned());
        }
        let rows = q.fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok((BatchReport::default(), None));
        }
        let n = rows.len();
        let np = self.inner.placeholders.len();
        let mut scopes: HashMap<Vec<String>, ScopeKeys> = HashMap::new();
        let mut rids = Vec::with_capacity(n);
        let mut cols_bytes: Vec<Vec<Option<Vec<u8>>>> =
            vec![Vec::with_capacity(n); t.columns.len()];
        let mut cols_text: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(n); t.columns.len()];
        let mut idx_single: Vec<Vec<Option<Vec<u8>>>> =
            vec![Vec::with_capacity(n); t.indexes.len()];
        let mut idx_tokens: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(n); t.indexes.len()];
        let mut row_keys: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut report = BatchReport::default();
        for row in &rows {
            let values = (0..np)
                .map(|i| row.try_get::<String, _>(st.at_placeholders + i))
                .collect::<std::result::Result<Vec<String>, _>>()?;
            if !scopes.contains_key(&values) {
                let keys = self.scope_keys(&values).await?;
                scopes.insert(values.clone(), keys);
            }
            let Some(sk) = scopes.get(&values) else {
                continue;
            };
            let r = self.rewrite_row(&sk.cols, st, row, active).await?;
            if r.migrated {
                report.migrated += 1;
            }
            if r.rewrapped {
                report.rewrapped += 1;
            }
            // `r.version` already covers every value's header; the indexes used `lowest`.
            let row_version = r.version.min(sk.lowest);
            for (i, (c, v)) in t.columns.iter().zip(&r.values).enumerate() {
                let sealed = &v.1;
                match c.storage {
                    Storage::Bytea => cols_bytes[i].push(sealed.clone()),
                    Storage::Text => cols_text[i].push(sealed.as_deref().map(text::encode)),
                }
            }
            for (i, ix) in t.indexes.iter().enumerate() {
                let parts: Vec<Option<&[u8]>> = ix
                    .columns
                    .iter()
                    .map(|p| r.values[*p].0.as_deref())
                    .collect();
                match index_value(ix, &sk.index_keys[i], &parts)? {
                    IndexValue::Single(v) => idx_single[i].push(v),
                    IndexValue::Tokens(v) => idx_tokens[i].push(v.map(|t| array_literal(&t))),
                }
            }
            row_keys.push(r.row_key);
            versions.push(version_i32(row_version));
            rids.push(r.rid);
        }
        let last = rids.last().cloned();
        let mut q = sqlx::query(&st.update).bind(rids);
        for (i, c) in t.columns.iter().enumerate() {
            q = match c.storage {
                Storage::Bytea => q.bind(std::mem::take(&mut cols_bytes[i])),
                Storage::Text => q.bind(std::mem::take(&mut cols_text[i])),
            };
        }
        for (i, ix) in t.indexes.iter().enumerate() {
            q = match ix.prefix {
                Some(_) => q.bind(std::mem::take(&mut idx_tokens[i])),
                None => q.bind(std::mem::take(&mut idx_single[i])),
            };
        }
        if t.row_keys.is_some() {
            q = q.bind(row_keys);
        }
        let updated = q.bind(versions).execute(&mut *tx).await?.rows_affected();
        if updated != n as u64 {
            return Err(Error::Row {
                table: t.name.clone(),
                row: format!("({n} rows)"),
                reason: format!("the batch update matched {updated} rows of {n}; rolled back"),
            });
        }
        tx.commit().await?;
        report.rows = n as u64;
        let table = t.name.clone();
        metrics::counter!("coffer_reencrypt_rows_total", "table" => table.clone())
            .increment(report.rows);
        metrics::counter!("coffer_reencrypt_migrated_rows_total", "table" => table.clone())
            .increment(report.migrated);
        metrics::counter!("coffer_reencrypt_batches_total", "table" => table.clone()).increment(1);
        metrics::histogram!("coffer_reencrypt_batch_seconds", "table" => table)
            .record(started.elapsed().as_secs_f64());
        Ok((report, last))
    }

    /// Decrypts (or reads from plaintext) every encrypted column of one row and seals it
    /// under the active version of the row's scope (`cols`). With per-row keys, values sealed
    /// under the row's key keep their ciphertext and the key is re-wrapped instead.
    async fn rewrite_row(
        &self,
        cols: &Columns,
        st: &Statements,
        row: &PgRow,
        active: KeyVersion,
    ) -> Result<Rewritten> {
        let t = &self.inner.cols.table().inner;
        let rid: String = row.try_get(0)?;
        let row_err = |reason: String| Error::Row {
            table: t.name.clone(),
            row: rid.clone(),
            reason,
        };
        let keyed = t.row_keys.is_some();
        let stored_key: Option<Vec<u8>> = if keyed {
            row.try_get(st.at_row_key)?
        } else {
            None
        };
        // The row's key: the stored one opened, or (a row still to migrate) a fresh one.
        let mut rk: Option<RowKey> = match &stored_key {
            Some(b) => Some(
                cols.row_key_for_seal(&rid, Some(b))
                    .await
                    .map_err(|e| row_err(format!("row key: {e}")))?,
            ),
            None => None,
        };
        let mut at = st.at_columns;
        let mut out = Vec::with_capacity(t.columns.len());
        let mut migrated = false;
        let mut lowest = active;
        for c in &t.columns {
            let cipher =
                read_cipher(row, at, c).map_err(|e| row_err(format!("{}: {e}", c.name)))?;
            at += 1;
            let source = match &c.migrate_from {
                Some(_) => {
                    let s = read_source(row, at, c.value_type)
                        .map_err(|e| row_err(format!("{} (plaintext source): {e}", c.name)))?;
                    at += 1;
                    Some(s)
                }
                None => None,
            };
            // `plain`: None = NULL (SQL NULL or authenticated NULL).
            let (plain, keep) = match (cipher, source) {
                (Some(ct), _) => {
                    let version = Header::parse(&ct).ok().map(|(h, _)| h.version);
                    let under_row_key = keyed && version == Some(ROW_KEY_VERSION);
                    if under_row_key && rk.is_none() {
                        return Err(row_err(format!(
                            "{}: sealed under a row key, but the row's key column is NULL and its \
                             version column too: its values are shredded; delete the row, or set \
                             its version column to mark it erased",
                            c.name
                        )));
                    }
                    let plain = cols
                        .open_bytes(c, &rid, &ct, if under_row_key { rk.as_ref() } else { None })
                        .await
                        .map_err(|e| row_err(format!("{}: {e}", c.name)))?;
                    // A value already under the row's key, or (without row keys) under the
                    // active version, keeps its ciphertext.
                    let keep = if under_row_key || (!keyed && version.is_some_and(|v| v >= active))
                    {
                        Some(ct)
                    } else {
                        None
                    };
                    (plain, keep)
                }
                (None, Some(src)) => {
                    migrated |= src.is_some();
                    (src, None)
                }
                (None, None) => {
                    if c.nulls == Nulls::Authenticated {
                        return Err(row_err(format!(
                            "{}: SQL NULL in a column with authenticated NULLs (removed without the key?)",
                            c.name
                        )));
                    }
                    out.push((None, None));
                    continue;
                }
            };
            let sealed = match keep {
                Some(ct) => Some(ct),
                None if plain.is_none() && c.nulls == Nulls::Passthrough => None,
                None => {
                    if keyed && rk.is_none() {
                        rk = Some(cols.row_key_for_seal(&rid, None).await?);
                    }
                    Some(
                        cols.seal_bytes(c, &rid, plain.as_deref(), rk.as_ref())
                            .await
                            .map_err(|e| row_err(format!("{}: {e}", c.name)))?,
                    )
                }
            };
            if !keyed
                && let Some(s) = &sealed
                && let Ok((h, _)) = Header::parse(s)
            {
                lowest = lowest.min(h.version);
            }
            out.push((plain, sealed));
        }
        let (row_key, rewrapped) = if keyed {
            let (blob, rewrapped) = match (stored_key, rk) {
                (Some(b), _) => match cols
                    .keyring()
                    .rewrap_data_key(cols.scope()?, &b)
                    .await
                    .map_err(|e| row_err(format!("row key: {e}")))?
                {
                    Some(new) => (new, true),
                    None => (b, false),
                },
                (None, Some(fresh)) => (fresh.into_blob(), false),
                // Nothing to seal (every value NULL): a fresh key marks the row done.
                (None, None) => (cols.row_key_for_seal(&rid, None).await?.into_blob(), false),
            };
            let (v, _) = coffer_core::datakey::parse(&blob)?;
            lowest = lowest.min(v);
            (Some(blob), rewrapped)
        } else {
            (None, false)
        };
        Ok(Rewritten {
            rid,
            values: out,
            version: lowest,
            migrated,
            row_key,
            rewrapped,
        })
    }
}
