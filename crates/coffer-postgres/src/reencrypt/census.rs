//! Where a table's data stands, from the ciphertext headers and row-key blobs themselves, and
//! the retirement of versions that seal nothing any more.

use std::collections::BTreeMap;

use coffer_core::{Header, KeyVersion};
use coffer_keys::DekState;

use super::Reencryptor;
use super::sql::{Mode, erased_cond, tuple_filter};
use crate::error::{Error, Result};
use crate::rowkey::ROW_KEY_VERSION;
use crate::schema::Storage;

/// Where a table's data stands: how many values each key version sealed (read from the
/// ciphertext headers, not the version column), and what is left to migrate. For a job that
/// walks a scope template the counts add up every scope's versions (v2 of one tenant and v2 of
/// another are counted together); a job resolved to one scope counts that scope's rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Encrypted values per DEK version, over every encrypted column. With per-row keys, the
    /// values under row keys (header version 0) are not here but in `values_under_row_keys`.
    pub values_by_version: BTreeMap<u32, u64>,
    /// With per-row keys: row keys per scope version they are wrapped under (read from the
    /// blobs).
    pub row_keys_by_version: BTreeMap<u32, u64>,
    /// With per-row keys: values sealed under their row's key.
    pub values_under_row_keys: u64,
    /// With per-row keys: rows whose key was erased (their values are shredded).
    pub row_keys_erased: u64,
    /// Rows per value of the version column (`None`: NULL, not migrated yet); rows whose
    /// row key was erased are not counted (nothing of theirs is under any version).
    pub rows_by_version_column: BTreeMap<Option<i32>, u64>,
    /// Values still only in a plaintext source column.
    pub plaintext_left: u64,
    /// Values in an encrypted TEXT column that are not Coffer ciphertexts, and row-key column
    /// values that are not Coffer data-key blobs.
    pub not_ciphertext: u64,
}

impl Census {
    /// Versions below `active` that still seal a value or (per-row keys) wrap a row key.
    pub fn old_versions(&self, active: KeyVersion) -> Vec<KeyVersion> {
        let mut out: Vec<KeyVersion> = self
            .values_by_version
            .iter()
            .chain(&self.row_keys_by_version)
            .filter(|(v, n)| **v < active.0 && **n > 0)
            .map(|(v, _)| KeyVersion(*v))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Reencryptor {
    /// `WHERE …` restricting to the job's scope, and its values to bind.
    fn census_filter(&self) -> (String, Vec<Vec<String>>) {
        match &self.inner.mode {
            Mode::One(values) => (
                tuple_filter(&self.inner.placeholders, 1),
                values.iter().map(|v| vec![v.clone()]).collect(),
            ),
            Mode::Fixed | Mode::Walk => (String::new(), Vec::new()),
        }
    }

    async fn census_rows<T>(&self, q: &str, binds: &[Vec<String>]) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let mut q = sqlx::query_as::<_, T>(q);
        for b in binds {
            q = q.bind(b.clone());
        }
        Ok(q.fetch_all(&self.inner.pool).await?)
    }

    /// Counts values per key version from the ciphertext headers of every encrypted column
    /// (and, with per-row keys, row keys per version from their blobs), rows per version-column
    /// value, and plaintext left to migrate. Reads one or a few bytes per value; takes no
    /// locks.
    pub async fn census(&self) -> Result<Census> {
        self.check()?;
        let t = &self.inner.cols.table().inner;
        let (scope_filter, binds) = self.census_filter();
        let from = format!("{} AS t", t.sql);
        let keyed = t.row_keys.is_some();
        let mut census = Census::default();
        for c in &t.columns {
            let col = format!("t.{}", c.sql);
            let first = match c.storage {
                Storage::Bytea => col.clone(),
                Storage::Text => format!(
                    "decode(translate(substring({col} from 5 for 8), '-_', '+/'), 'base64')"
                ),
            };
            let filter = match c.storage {
                Storage::Bytea => format!("{col} IS NOT NULL AND length({col}) > 0"),
                Storage::Text => format!("{col} LIKE 'cf1:%' AND length({col}) >= 12"),
            };
            let rows: Vec<(i32, i64)> = self
                .census_rows(
                    &format!(
                        "SELECT get_byte({first}, 0) & 31, count(*) FROM {from} WHERE {filter}{scope_filter} GROUP BY 1"
                    ),
                    &binds,
                )
                .await?;
            let add = |census: &mut Census, v: u32, n: u64| {
                if keyed && v == ROW_KEY_VERSION.0 {
                    census.values_under_row_keys += n;
                } else {
                    *census.values_by_version.entry(v).or_default() += n;
                }
            };
            for (v, n) in rows {
                if v == 31 {
                    // Escaped (large) versions: parse each header.
                    let heads: Vec<(Vec<u8>,)> = self
                        .census_rows(
                            &format!(
                                "SELECT substring({first} from 1 for 6) FROM {from} WHERE {filter} AND get_byte({first}, 0) & 31 = 31{scope_filter}"
                            ),
                            &binds,
                        )
                        .await?;
                    for (h,) in heads {
                        let v = Header::parse(&h)
                            .map(|(h, _)| h.version.0)
                            .unwrap_or(u32::MAX);
                        add(&mut census, v, 1);
                    }
                } else {
                    add(
                        &mut census,
                        u32::try_from(v).unwrap_or(u32::MAX),
                        u64::try_from(n).unwrap_or(0),
                    );
                }
            }
            if c.storage == Storage::Text {
                let bad: Vec<(i64,)> = self
                    .census_rows(
                        &format!(
                            "SELECT count(*) FROM {from} WHERE {col} IS NOT NULL AND NOT ({filter}){scope_filter}"
                        ),
                        &binds,
                    )
                    .await?;
                census.not_ciphertext += count(&bad);
            }
            if let Some((_, src)) = &c.migrate_from {
                let left: Vec<(i64,)> = self
                    .census_rows(
                        &format!(
                            "SELECT count(*) FROM {from} WHERE {col} IS NULL AND t.{src} IS NOT NULL{scope_filter}"
                        ),
                        &binds,
                    )
                    .await?;
                census.plaintext_left += count(&left);
            }
        }
        if let Some((_, rk)) = &t.row_keys {
            // A blob's first five bytes are its format and the version it is wrapped under;
            // coffer-core reads them (the rest of the blob is irrelevant to the version).
            let len = coffer_core::datakey::BLOB_LEN;
            let heads: Vec<(Vec<u8>, i64)> = self
                .census_rows(
                    &format!(
                        "SELECT substring(t.{rk} from 1 for 5), count(*) FROM {from} \
                         WHERE t.{rk} IS NOT NULL AND length(t.{rk}) = {len}{scope_filter} GROUP BY 1"
                    ),
                    &binds,
                )
                .await?;
            for (head, n) in heads {
                let mut blob = head;
                blob.resize(len, 0);
                let n = u64::try_from(n).unwrap_or(0);
                match coffer_core::datakey::parse(&blob) {
                    Ok((v, _)) => *census.row_keys_by_version.entry(v.0).or_default() += n,
                    Err(_) => census.not_ciphertext += n,
                }
            }
            let bad: Vec<(i64,)> = self
                .census_rows(
                    &format!(
                        "SELECT count(*) FROM {from} WHERE t.{rk} IS NOT NULL AND length(t.{rk}) <> {len}{scope_filter}"
                    ),
                    &binds,
                )
                .await?;
            census.not_ciphertext += count(&bad);
            let erased: Vec<(i64,)> = self
                .census_rows(
                    &format!(
                        "SELECT count(*) FROM {from} WHERE {}{scope_filter}",
                        erased_cond(t)
                    ),
                    &binds,
                )
                .await?;
            census.row_keys_erased = count(&erased);
        }
        let rows: Vec<(Option<i32>, i64)> = self
            .census_rows(
                &format!(
                    "SELECT t.{v}, count(*) FROM {from} WHERE NOT {erased}{scope_filter} GROUP BY 1",
                    v = t.version_sql,
                    erased = erased_cond(t)
                ),
                &binds,
            )
            .await?;
        for (v, n) in rows {
            census
                .rows_by_version_column
                .insert(v, u64::try_from(n).unwrap_or(0));
        }
        Ok(census)
    }
}

fn count(rows: &[(i64,)]) -> u64 {
    rows.first()
        .map_or(0, |(n,)| u64::try_from(*n).unwrap_or(0))
}

/// Versions of `scope` that are decrypt-only and seal no value (nor, with per-row keys, wrap
/// any row key) in any of `jobs`' tables, checked by two censuses (docs/DESIGN.md §K3: two
/// empty scans). Retires them when `retire` is set (refused per version while its grace
/// period runs). Every table that uses the scope must be among `jobs`.
///
/// A table with a scope template is retired scope by scope: make its job from
/// [`Columns::for_scope`](crate::Columns::for_scope) (`coffer reencrypt --scope`); a job that
/// walks every scope is refused.
pub async fn retirable(jobs: &[Reencryptor], retire: bool) -> Result<Vec<KeyVersion>> {
    let Some(first) = jobs.first() else {
        return Ok(Vec::new());
    };
    if let Some(walk) = jobs.iter().find(|j| j.walks_scopes()) {
        let t = walk.columns().table();
        return Err(Error::Schema(format!(
            "table '{}' keys rows by the scope template '{}': versions are retired scope by \
             scope; make the job for one scope (Columns::for_scope, or coffer reencrypt --scope)",
            t.name(),
            t.scope_template()
        )));
    }
    let keyring = first.columns().keyring();
    let scope = first.columns().scope()?.clone();
    if jobs
        .iter()
        .any(|j| j.columns().scope().ok() != Some(&scope))
    {
        return Err(Error::Schema(
            "retirable: every table must share one scope".into(),
        ));
    }
    let deks = keyring.store().deks(&scope).await?;
    let mut candidates: Vec<KeyVersion> = deks
        .iter()
        .filter(|d| d.state == DekState::DecryptOnly)
        .map(|d| d.version)
        .collect();
    for _pass in 0..2 {
        for job in jobs {
            let c = job.census().await?;
            if c.plaintext_left > 0 {
                return Ok(Vec::new());
            }
            candidates.retain(|v| {
                c.values_by_version.get(&v.0).copied().unwrap_or(0) == 0
                    && c.row_keys_by_version.get(&v.0).copied().unwrap_or(0) == 0
            });
            candidates.retain(|v| {
                !c.rows_by_version_column
                    .keys()
                    .any(|rv| rv.is_some_and(|rv| i64::from(rv) == i64::from(v.0)))
            });
        }
    }
    if retire {
        for v in &candidates {
            keyring.retire(&scope, *v, keyring.retire_grace()).await?;
        }
    }
    Ok(candidates)
}
