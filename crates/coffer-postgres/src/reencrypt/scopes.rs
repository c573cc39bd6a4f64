//! The scopes a job covers and where each stands: one for a fixed scope (or a templated table
//! resolved to one scope), and for a scope template every scope its rows spell, read in pages
//! of distinct placeholder values (keyset order), so a table with a million tenants is walked
//! in bounded memory.

use coffer_core::{ErrorKind, KeyVersion, ScopeId};
use sqlx::Row as _;

use super::Reencryptor;
use super::sql::{Mode, erased_cond, pending_cond, tuple_filter, version_i32};
use crate::error::{Error, Result};

/// Distinct placeholder tuples per page of the scope walk.
pub(super) const PAGE: usize = 1000;

/// One scope's rows, as a page of the walk reads them.
#[derive(Clone, Debug)]
pub(super) struct ScopeRows {
    /// The placeholder values (empty for a fixed scope).
    pub values: Vec<String>,
    pub rows: u64,
    /// Rows with a NULL version column (never sealed: plaintext to migrate).
    pub unmigrated: u64,
    /// The lowest version column among rows that are neither unmigrated nor erased.
    pub min_version: Option<i32>,
    /// Rows whose per-row key was erased.
    pub erased: u64,
}

impl ScopeRows {
    /// Whether some row is pending under `active`.
    pub fn pending_under(&self, active: KeyVersion) -> bool {
        self.unmigrated > 0 || self.min_version.is_some_and(|v| v < version_i32(active))
    }
}

/// Where one scope stands in the key store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ScopeState {
    /// Its active version.
    Active(KeyVersion),
    /// Destroyed: its rows stay as they are.
    Destroyed,
    /// Not in the key store.
    Missing,
    /// Not in the key store, every row still to migrate and the table creates scopes: the job
    /// creates it (as a first write would).
    New,
    /// The placeholder values cannot form a scope id.
    Invalid,
}

/// One scope with pending rows, for a status listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeStanding {
    /// The scope id.
    pub scope: String,
    /// Its active version (`None`: created when the job first writes to it).
    pub active: Option<KeyVersion>,
    /// Its rows.
    pub rows: u64,
    /// Of which pending.
    pub pending: u64,
}

/// Where a job's rows stand, scope by scope: what is pending and what the job leaves alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// The active version of a fixed scope (or of the one scope a resolved job covers); for a
    /// scope template, the highest active version among its scopes.
    pub active: Option<KeyVersion>,
    /// Scopes that hold rows.
    pub scopes: u64,
    /// Rows in those scopes.
    pub rows: u64,
    /// Rows the job would move: version column NULL or below their scope's active version.
    pub pending: u64,
    /// Scopes with pending rows.
    pub pending_scopes: u64,
    /// The first scopes with pending rows (as many as asked), in placeholder-value order.
    pub listed: Vec<ScopeStanding>,
    /// Destroyed scopes that hold rows: those rows are shredded and left as they are.
    pub destroyed_scopes: u64,
    /// Rows in destroyed scopes.
    pub destroyed_rows: u64,
    /// Scopes that hold rows but are not in the key store (a key store restored from an older
    /// backup, or scopes made elsewhere): their rows are left as they are.
    pub missing_scopes: u64,
    /// Rows in missing scopes.
    pub missing_rows: u64,
    /// The first missing scopes (as many as asked).
    pub missing: Vec<String>,
    /// Rows whose placeholder values are NULL or cannot form a scope id (left as they are).
    pub unresolvable_rows: u64,
    /// Rows whose per-row key was erased (`keys = "row"`): shredded, left as they are.
    pub erased_rows: u64,
}

impl Reencryptor {
    /// One page of scopes after `after` (placeholder values), each with its row counts. A
    /// fixed or resolved job has one "page" of one scope (or none when it has no rows and
    /// `after` is set).
    pub(super) async fn scope_page(&self, after: Option<&[String]>) -> Result<Vec<ScopeRows>> {
        let t = &self.inner.cols.table().inner;
        let v = format!("t.{}", t.version_sql);
        let erased = erased_cond(t);
        let aggs = format!(
            "count(*), count(*) FILTER (WHERE {v} IS NULL), \
             min({v}) FILTER (WHERE NOT {erased}), count(*) FILTER (WHERE {erased})"
        );
        let ph = &self.inner.placeholders;
        let read = |row: &sqlx::postgres::PgRow, at: usize, values: Vec<String>| {
            let n = |i: usize| -> Result<u64> {
                Ok(u64::try_from(row.try_get::<i64, _>(at + i)?).unwrap_or(0))
            };
            Ok::<_, Error>(ScopeRows {
                values,
                rows: n(0)?,
                unmigrated: n(1)?,
                min_version: row.try_get(at + 2)?,
                erased: n(3)?,
            })
        };
        match &self.inner.mode {
            Mode::Fixed | Mode::One(_) => {
                if after.is_some() {
                    return Ok(Vec::new());
                }
                let values = match &self.inner.mode {
                    Mode::One(v) => v.clone(),
                    _ => Vec::new(),
                };
                let mut q = format!("SELECT {aggs} FROM {} AS t WHERE TRUE", t.sql);
                q.push_str(&tuple_filter(ph, 1));
                let mut q = sqlx::query(&q);
                for v in &values {
                    q = q.bind(vec![v.clone()]);
                }
                let row = q.fetch_one(&self.inner.pool).await?;
                Ok(vec![read(&row, 0, values)?])
            }
            Mode::Walk => {
                let mut q = format!(
                    "SELECT {}, {aggs} FROM {} AS t WHERE {}",
                    ph.join(", "),
                    t.sql,
                    ph.iter()
                        .map(|p| format!("{p} IS NOT NULL"))
                        .collect::<Vec<_>>()
                        .join(" AND ")
                );
                if after.is_some() {
                    let params: Vec<String> = (1..=ph.len()).map(|i| format!("${i}")).collect();
                    q.push_str(&format!(
                        " AND ({}) > ({})",
                        ph.join(", "),
                        params.join(", ")
                    ));
                }
                let cols: Vec<String> = (1..=ph.len()).map(|i| i.to_string()).collect();
                q.push_str(&format!(
                    " GROUP BY {c} ORDER BY {c} LIMIT {PAGE}",
                    c = cols.join(", ")
                ));
                let mut q = sqlx::query(&q);
                for v in after.unwrap_or_default() {
                    q = q.bind(v.clone());
                }
                let rows = q.fetch_all(&self.inner.pool).await?;
                rows.iter()
                    .map(|row| {
                        let values = (0..ph.len())
                            .map(|i| row.try_get::<String, _>(i))
                            .collect::<std::result::Result<Vec<_>, _>>()?;
                        read(row, ph.len(), values)
                    })
                    .collect()
            }
        }
    }

    /// The scope id of a tuple of placeholder values (`None`: they cannot form one).
    pub(super) fn scope_of(&self, values: &[String]) -> Option<ScopeId> {
        let cols = &self.inner.cols;
        match &self.inner.mode {
            Mode::Fixed | Mode::One(_) => cols.scope().ok().cloned(),
            Mode::Walk => {
                let names = cols.table().scope_template().placeholders();
                let pairs: Vec<(&str, &str)> = names
                    .iter()
                    .copied()
                    .zip(values.iter().map(String::as_str))
                    .collect();
                cols.table().resolve_scope(&pairs).ok()
            }
        }
    }

    /// Reads a scope's active version from the key store (not the cached pointer). With
    /// `create`, a missing scope whose rows are all still to migrate is created when the table
    /// creates scopes (as the first write would). A fixed or resolved job whose scope is
    /// missing is an error (it names the scope); in a walk, a missing scope is reported.
    pub(super) async fn classify(
        &self,
        scope: Option<&ScopeId>,
        rows: &ScopeRows,
        create: bool,
    ) -> Result<ScopeState> {
        let Some(scope) = scope else {
            return Ok(ScopeState::Invalid);
        };
        let keyring = self.inner.cols.keyring();
        match keyring.refresh_active(scope).await {
            Ok(v) => Ok(ScopeState::Active(v)),
            Err(e) if e.kind() == ErrorKind::Destroyed => Ok(ScopeState::Destroyed),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let creatable = self.inner.cols.table().creates_scopes()
                    && rows.min_version.is_none()
                    && rows.erased == 0;
                if creatable && create {
                    Ok(ScopeState::Active(keyring.ensure_scope(scope).await?))
                } else if creatable {
                    Ok(ScopeState::New)
                } else if matches!(self.inner.mode, Mode::Walk) {
                    Ok(ScopeState::Missing)
                } else {
                    Err(e.into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Where the job's rows stand, scope by scope, with the first `list` scopes that have
    /// pending rows (and the first `list` missing ones) named. Reads every scope's active
    /// version from the key store; takes no locks.
    pub async fn standing(&self, list: usize) -> Result<Standing> {
        let t = &self.inner.cols.table().inner;
        let ph = &self.inner.placeholders;
        let mut s = Standing::default();
        if matches!(self.inner.mode, Mode::Walk) {
            let nulls: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {} AS t WHERE {}",
                t.sql,
                ph.iter()
                    .map(|p| format!("{p} IS NULL"))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            ))
            .fetch_one(&self.inner.pool)
            .await?;
            s.unresolvable_rows += u64::try_from(nulls).unwrap_or(0);
        }
        let mut after: Option<Vec<String>> = None;
        loop {
            let page = self.scope_page(after.as_deref()).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.values.clone());
            let full = page.len() == PAGE && matches!(self.inner.mode, Mode::Walk);
            // (index in page, active version) of the scopes whose pending rows to count.
            let mut count: Vec<(usize, KeyVersion)> = Vec::new();
            let mut states = Vec::with_capacity(page.len());
            for (i, r) in page.iter().enumerate() {
                let scope = self.scope_of(&r.values);
                let state = self.classify(scope.as_ref(), r, false).await?;
                if let ScopeState::Active(v) = state {
                    s.active = s.active.max(Some(v));
                }
                if r.rows == 0 {
                    states.push((scope, state));
                    continue;
                }
                s.scopes += 1;
                s.rows += r.rows;
                s.erased_rows += r.erased;
                match &state {
                    ScopeState::Active(v) if r.pending_under(*v) => count.push((i, *v)),
                    ScopeState::Active(_) => {}
                    ScopeState::Destroyed => {
                        s.destroyed_scopes += 1;
                        s.destroyed_rows += r.rows - r.erased;
                    }
                    ScopeState::Missing => {
                        s.missing_scopes += 1;
                        s.missing_rows += r.rows - r.erased;
                        if s.missing.len() < list
                            && let Some(sc) = &scope
                        {
                            s.missing.push(sc.as_str().to_owned());
                        }
                    }
                    ScopeState::Invalid => s.unresolvable_rows += r.rows,
                    ScopeState::New => {}
                }
                states.push((scope, state));
            }
            let counted = self.count_pending(&page, &count).await?;
            for (i, r) in page.iter().enumerate() {
                let (scope, state) = &states[i];
                let (active, pending) = match state {
                    ScopeState::New => (None, r.rows),
                    ScopeState::Active(v) => (
                        Some(*v),
                        counted.iter().find(|(k, _)| *k == i).map_or(0, |(_, n)| *n),
                    ),
                    _ => continue,
                };
                if pending == 0 {
                    continue;
                }
                s.pending += pending;
                s.pending_scopes += 1;
                if s.listed.len() < list {
                    s.listed.push(ScopeStanding {
                        scope: scope
                            .as_ref()
                            .map(|x| x.as_str().to_owned())
                            .unwrap_or_default(),
                        active,
                        rows: r.rows,
                        pending,
                    });
                }
            }
            if !full {
                break;
            }
        }
        let table = t.name.clone();
        metrics::gauge!("coffer_reencrypt_pending_rows", "table" => table).set(s.pending as f64);
        Ok(s)
    }

    /// Exact pending rows of the scopes `which` (index in `page`, active version): one query.
    async fn count_pending(
        &self,
        page: &[ScopeRows],
        which: &[(usize, KeyVersion)],
    ) -> Result<Vec<(usize, u64)>> {
        if which.is_empty() {
            return Ok(Vec::new());
        }
        let t = &self.inner.cols.table().inner;
        let ph = &self.inner.placeholders;
        let mut s_cols = vec!["k".to_owned(), "v".to_owned()];
        let mut params = vec!["$1::int4[]".to_owned(), "$2::int4[]".to_owned()];
        let mut on = vec!["TRUE".to_owned()];
        for (i, p) in ph.iter().enumerate() {
            s_cols.push(format!("p{i}"));
            params.push(format!("${}::text[]", i + 3));
            on.push(format!("{p} = s.p{i}"));
        }
        let q = format!(
            "SELECT s.k, count(*) FROM unnest({}) AS s({}) JOIN {} AS t ON {} WHERE {} GROUP BY s.k",
            params.join(", "),
            s_cols.join(", "),
            t.sql,
            on.join(" AND "),
            pending_cond(t, "s.v")
        );
        let mut q = sqlx::query_as::<_, (i32, i64)>(&q)
            .bind(
                which
                    .iter()
                    .map(|(i, _)| i32::try_from(*i).unwrap_or(i32::MAX))
                    .collect::<Vec<_>>(),
            )
            .bind(
                which
                    .iter()
                    .map(|(_, v)| version_i32(*v))
                    .collect::<Vec<_>>(),
            );
        for p in 0..ph.len() {
            q = q.bind(
                which
                    .iter()
                    .map(|(i, _)| page[*i].values[p].clone())
                    .collect::<Vec<_>>(),
            );
        }
        Ok(q.fetch_all(&self.inner.pool)
            .await?
            .into_iter()
            .map(|(k, n)| {
                (
                    usize::try_from(k).unwrap_or(usize::MAX),
                    u64::try_from(n).unwrap_or(0),
                )
            })
            .collect())
    }
}
