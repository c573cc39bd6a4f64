//! [`Columns`]: one table's encrypted columns bound to a keyring. Seals values on the way in,
//! opens them on the way out, computes blind indexes and search terms.

use std::sync::Arc;

use coffer_core::{BlindIndexKey, FieldContext, KeyVersion, Nulls, ScopeId, ValueType};
use coffer_keys::Keyring;

use crate::error::{Error, Result};
use crate::rowkey::RowKey;
use crate::schema::{Column, Index, Table};
use crate::sealed::{Encrypted, IndexValue, Sealed};
pub use crate::search::Search;
use crate::search::{Check, index_value, normalize, prefix_token};
use crate::value::{FromPlain, ToPlain, type_name};

/// A row id: its text form, exactly as PostgreSQL prints the row-id column (`id::text`), is
/// the row context bound into every randomized value of the row.
pub trait RowId {
    /// The text form.
    fn row_context(&self) -> String;
}

impl RowId for uuid::Uuid {
    fn row_context(&self) -> String {
        self.hyphenated().to_string()
    }
}

macro_rules! row_id_display {
    ($($t:ty),*) => {$(
        impl RowId for $t {
            fn row_context(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
row_id_display!(i64, i32, i16, u32, String, str);

impl<T: RowId + ?Sized> RowId for &T {
    fn row_context(&self) -> String {
        (**self).row_context()
    }
}

/// One row for [`Columns::seal_rows`]: its row context (the row id's text form) and its
/// values by column name (`None`: NULL).
pub type PlainRow = (String, Vec<(String, Option<Plain>)>);

/// A plaintext in canonical form with its type, for code that handles columns generically.
#[derive(Clone, PartialEq, Eq)]
pub struct Plain {
    pub(crate) value_type: ValueType,
    pub(crate) bytes: Vec<u8>,
}

impl std::fmt::Debug for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Plain({}, {} bytes)",
            type_name(self.value_type),
            self.bytes.len()
        )
    }
}

impl Plain {
    /// The canonical form of `value`.
    pub fn of<T: ToPlain + ?Sized>(value: &T) -> Result<Plain, crate::value::ValueError> {
        Ok(Plain {
            value_type: T::TYPE,
            bytes: value.to_plain()?,
        })
    }

    /// From canonical bytes of a known type.
    pub fn from_canonical(value_type: ValueType, bytes: Vec<u8>) -> Plain {
        Plain { value_type, bytes }
    }

    /// The value type.
    pub fn value_type(&self) -> ValueType {
        self.value_type
    }

    /// The canonical bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// One table's encrypted columns bound to a [`Keyring`]. Cheap to clone; share one per table.
///
/// ```no_run
/// # async fn demo(keyring: coffer_keys::Keyring, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use coffer_postgres::{Columns, Encrypted, Schema};
///
/// let schema = Schema::load("coffer-columns.toml".as_ref())?;
/// let patients = Columns::new(keyring, schema.table("patients")?);
/// let id = uuid::Uuid::new_v4();
///
/// // Write: seal the row's values, bind them like any other value.
/// let row = patients.row(&id).set("ssn", "123-45-6789")?.seal().await?;
/// sqlx::query("INSERT INTO patients (id, ssn, ssn_bidx, key_version) VALUES ($1, $2, $3, $4)")
///     .bind(id)
///     .bind(row.value("ssn")?)
///     .bind(row.index("ssn_bidx")?)
///     .bind(row.version())
///     .execute(&pool)
///     .await?;
///
/// // Read: decode as Encrypted<T>, open with the row id.
/// let (ssn,): (Encrypted<String>,) = sqlx::query_as("SELECT ssn FROM patients WHERE id = $1")
///     .bind(id)
///     .fetch_one(&pool)
///     .await?;
/// assert_eq!(patients.open("ssn", &id, &ssn).await?, "123-45-6789");
///
/// // Search: blind-index terms for every live key version, then confirm each candidate.
/// let q = patients.search_eq("ssn_bidx", &["123456789"]).await?;
/// let hits: Vec<(uuid::Uuid, Encrypted<String>)> =
///     sqlx::query_as("SELECT id, ssn FROM patients WHERE ssn_bidx = ANY($1)")
///         .bind(q.terms())
///         .fetch_all(&pool)
///         .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Columns {
    keyring: Keyring,
    table: Table,
    /// The scope this handle seals under: the table's fixed scope, or the one a scope
    /// template resolved to ([`Columns::for_scope`]); `None` for an unresolved template.
    scope: Option<ScopeId>,
}

impl std::fmt::Debug for Columns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Columns")
            .field("table", &self.table.name())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Columns {
    /// Binds a table definition to a keyring.
    pub fn new(keyring: Keyring, table: Table) -> Self {
        let scope = table.scope_template().fixed().cloned();
        Columns {
            keyring,
            table,
            scope,
        }
    }

    /// This table's columns in the scope of the rows whose placeholder columns hold `values`
    /// (`&[("tenant_id", "acme")]` for `scope = "tenant:{tenant_id}/patients"`). Every
    /// placeholder needs a value; a value must be 1–128 letters, digits or `. _ - @ +`.
    /// Cheap: the keyring's caches are shared.
    pub fn for_scope(&self, values: &[(&str, &str)]) -> Result<Columns> {
        Ok(Columns {
            keyring: self.keyring.clone(),
            table: self.table.clone(),
            scope: Some(self.table.resolve_scope(values)?),
        })
    }

    /// The scope this handle seals under; an error naming the missing placeholder values for
    /// a table with a scope template not yet resolved by [`for_scope`](Self::for_scope).
    pub fn scope(&self) -> Result<&ScopeId> {
        match &self.scope {
            Some(s) => Ok(s),
            None => self.table.scope(),
        }
    }

    /// Before a write: with `create_scopes`, makes the scope if it does not exist yet (a
    /// destroyed scope stays destroyed: the write fails).
    pub(crate) async fn ready_to_write(&self) -> Result<()> {
        let scope = self.scope()?;
        if !self.table.creates_scopes() {
            return Ok(());
        }
        match self.keyring.active_version(scope).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == coffer_core::ErrorKind::NotFound => {
                self.keyring.ensure_scope(scope).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The table definition.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn err(&self, column: &str, reason: impl Into<String>) -> Error {
        Error::value(self.table.name(), column, reason)
    }

    fn check_type(&self, c: &Column, t: ValueType) -> Result<()> {
        if c.value_type != t {
            return Err(self.err(
                &c.name,
                format!(
                    "holds {} values; this is a {} value",
                    Table::describe(c),
                    type_name(t)
                ),
            ));
        }
        Ok(())
    }

    /// Seals one value of `column` for the row `row` under the active key version.
    pub async fn seal<T: ToPlain + ?Sized>(
        &self,
        column: &str,
        row: &(impl RowId + ?Sized),
        value: &T,
    ) -> Result<Encrypted<T>> {
        let c = self.table.column(column)?;
        self.check_type(c, T::TYPE)?;
        self.refuse_row_keyed("seal")?;
        let plain = value.to_plain().map_err(|e| self.err(column, e.0))?;
        self.ready_to_write().await?;
        let bytes = self
            .seal_bytes(c, &row.row_context(), Some(&plain), None)
            .await?;
        Encrypted::from_bytes(bytes, c.storage).map_err(|e| self.err(column, e.to_string()))
    }

    /// Tables with per-row keys seal and open through the row's key, never one value alone.
    fn refuse_row_keyed(&self, what: &str) -> Result<()> {
        match self.table.row_key_column() {
            Some(rk) => Err(Error::Schema(format!(
                "table '{}' has a key per row (keys = \"row\"): {what} values with row() / \
                 open_keyed, which take the row's '{rk}' column",
                self.table.name()
            ))),
            None => Ok(()),
        }
    }

    /// Seals canonical bytes (or an authenticated NULL for `None`).
    pub(crate) async fn seal_bytes(
        &self,
        c: &Column,
        row: &str,
        plain: Option<&[u8]>,
        row_key: Option<&RowKey>,
    ) -> Result<Vec<u8>> {
        let row_parts: [&[u8]; 1] = [row.as_bytes()];
        let ctx = self.context(c, &row_parts);
        let scope = self.scope()?;
        if let Some(rk) = row_key {
            return rk.seal(scope, c, &ctx, plain);
        }
        Ok(match plain {
            Some(p) => self.keyring.encrypt(scope, &c.id, c.suite, &ctx, p).await?,
            None => {
                self.keyring
                    .encrypt_null(scope, &c.id, c.suite, &ctx)
                    .await?
            }
        })
    }

    fn context<'a>(&self, c: &Column, row: &'a [&'a [u8]]) -> FieldContext<'a> {
        let ctx = FieldContext::new().with_type(c.value_type);
        if c.suite.is_deterministic() {
            ctx
        } else {
            ctx.with_row(row)
        }
    }

    /// Opens canonical bytes: `Some(plaintext)`, or `None` for an authenticated NULL.
    pub(crate) async fn open_bytes(
        &self,
        c: &Column,
        row: &str,
        ciphertext: &[u8],
        row_key: Option<&RowKey>,
    ) -> Result<Option<Vec<u8>>> {
        let row_parts: [&[u8]; 1] = [row.as_bytes()];
        let ctx = self.context(c, &row_parts);
        let scope = self.scope()?;
        if let Some(rk) = row_key {
            return rk.open(scope, c, &ctx, ciphertext);
        }
        Ok(self.keyring.decrypt(scope, &c.id, &ctx, ciphertext).await?)
    }

    /// Opens a value of `column` read from row `row`. An authenticated NULL is an error here;
    /// use [`open_opt`](Self::open_opt) for nullable columns.
    pub async fn open<T: FromPlain>(
        &self,
        column: &str,
        row: &(impl RowId + ?Sized),
        value: &Encrypted<T>,
    ) -> Result<T> {
        self.open_opt(column, row, Some(value))
            .await?
            .ok_or_else(|| self.err(column, "is NULL; read it with open_opt"))
    }

    /// Opens a nullable value: SQL NULL in a passthrough column and an authenticated NULL
    /// give `None`; SQL NULL in an authenticated-NULL column is an error (it was nulled by
    /// someone without the key).
    pub async fn open_opt<T: FromPlain>(
        &self,
        column: &str,
        row: &(impl RowId + ?Sized),
        value: Option<&Encrypted<T>>,
    ) -> Result<Option<T>> {
        if value.is_some() {
            self.refuse_row_keyed("open")?;
        }
        self.open_opt_keyed(column, row, None, value).await
    }

    /// Opens canonical bytes of `column` read from the row whose context is `row` (the row
    /// id's text form): `Some(plaintext)` in canonical form, or `None` for an authenticated
    /// NULL. For bindings that convert values themselves (the Python package).
    ///
    /// `row_key` is the row's key column for a table with `keys = "row"` (`None` there: the
    /// key was erased, and the row's values are shredded); pass `None` for other tables.
    pub async fn open_plain(
        &self,
        column: &str,
        row: &str,
        row_key: Option<&[u8]>,
        ciphertext: &[u8],
    ) -> Result<Option<Plain>> {
        let c = self.table.column(column)?;
        let rk = self.row_key_for_open(row, row_key).await?;
        Ok(self
            .open_bytes(c, row, ciphertext, rk.as_ref())
            .await?
            .map(|bytes| Plain::from_canonical(c.value_type, bytes)))
    }

    /// Seals many rows at once, with the same bytes as sealing each through
    /// [`row`](Self::row): per column one lease, one key lookup and the batch path of
    /// [`Keyring::encrypt_batch_parallel`] (all cores); per index one key lookup. Each row is
    /// its row context (the row id's text form) and its values by column name (`None`: NULL).
    ///
    /// With `keys = "row"`, every row gets a fresh data key ([`SealedRow::row_key`]); use
    /// [`seal_rows_keyed`](Self::seal_rows_keyed) to keep the keys of existing rows.
    pub async fn seal_rows(&self, rows: &[PlainRow]) -> Result<Vec<SealedRow>> {
        self.seal_rows_keyed(rows, &[]).await
    }

    /// As [`seal_rows`](Self::seal_rows), for a table with `keys = "row"`: `row_keys[i]` is
    /// row `i`'s stored key (`None`, or a slice shorter than `rows`: a fresh key).
    pub async fn seal_rows_keyed(
        &self,
        rows: &[PlainRow],
        row_keys: &[Option<&[u8]>],
    ) -> Result<Vec<SealedRow>> {
        self.ready_to_write().await?;
        if self.table.row_key_column().is_some() {
            let mut out = Vec::with_capacity(rows.len());
            for (i, (row, vals)) in rows.iter().enumerate() {
                let mut sealer = self.row(row.as_str());
                if let Some(Some(k)) = row_keys.get(i) {
                    sealer = sealer.with_row_key(k);
                }
                for (name, v) in vals {
                    sealer = match v {
                        Some(p) => sealer.set_plain(name, p.clone()),
                        None => sealer.set_null(name)?,
                    };
                }
                out.push(sealer.seal().await?);
            }
            return Ok(out);
        }
        let scope = self.scope()?;
        let table = &self.table;
        let ncols = table.columns().len();
        // values[r][c]: not set, set to NULL, or set to canonical bytes.
        let mut values: Vec<Vec<Option<Option<Vec<u8>>>>> = Vec::with_capacity(rows.len());
        for (_, vals) in rows {
            let mut row = vec![None; ncols];
            for (name, v) in vals {
                let c = table.column(name)?;
                let i = table
                    .columns()
                    .iter()
                    .position(|x| x.name == c.name)
                    .ok_or_else(|| self.err(name, "unknown column"))?;
                if let Some(p) = v {
                    self.check_type(c, p.value_type)?;
                }
                row[i] = Some(v.as_ref().map(|p| p.bytes.clone()));
            }
            values.push(row);
        }
        let parts: Vec<[&[u8]; 1]> = rows.iter().map(|(r, _)| [r.as_bytes()]).collect();
        let mut versions: Vec<Option<KeyVersion>> = vec![None; rows.len()];
        let lower = |slot: &mut Option<KeyVersion>, v: KeyVersion| {
            *slot = Some(slot.map_or(v, |o| o.min(v)));
        };
        let mut sealed: Vec<Vec<(String, Sealed)>> = vec![Vec::new(); rows.len()];
        for (ci, c) in table.columns().iter().enumerate() {
            let mut idx = Vec::new();
            let mut items: Vec<(FieldContext<'_>, &[u8])> = Vec::new();
            for (r, row) in values.iter().enumerate() {
                match &row[ci] {
                    Some(Some(v)) => {
                        idx.push(r);
                        items.push((self.context(c, &parts[r]), v.as_slice()));
                    }
                    Some(None) => {
                        let value = match c.nulls {
                            Nulls::Passthrough => None,
                            Nulls::Authenticated => {
                                let b = self.seal_bytes(c, &rows[r].0, None, None).await?;
                                let e = Encrypted::<()>::from_bytes(b, c.storage)
                                    .map_err(|e| self.err(&c.name, e.to_string()))?;
                                lower(&mut versions[r], e.version());
                                Some(e)
                            }
                        };
                        sealed[r].push((
                            c.name.clone(),
                            Sealed {
                                value,
                                storage: c.storage,
                            },
                        ));
                    }
                    None => {}
                }
            }
            if items.is_empty() {
                continue;
            }
            let (version, out) = self
                .keyring
                .encrypt_batch_parallel(scope, &c.id, c.suite, &items)
                .await?;
            for (r, b) in idx.into_iter().zip(out) {
                let e = Encrypted::<()>::from_bytes(b, c.storage)
                    .map_err(|e| self.err(&c.name, e.to_string()))?;
                lower(&mut versions[r], version);
                sealed[r].push((
                    c.name.clone(),
                    Sealed {
                        value: Some(e),
                        storage: c.storage,
                    },
                ));
            }
        }
        let mut indexes: Vec<Vec<(String, IndexValue)>> = vec![Vec::new(); rows.len()];
        for ix in table.indexes() {
            let mut keys = None;
            for (r, row) in values.iter().enumerate() {
                let p: Option<Vec<Option<&[u8]>>> = ix
                    .columns
                    .iter()
                    .map(|c| row[*c].as_ref().map(|v| v.as_deref()))
                    .collect();
                let Some(p) = p else { continue };
                if keys.is_none() {
                    keys = Some(self.active_index_keys(ix).await?);
                }
                if let Some((v, k)) = &keys {
                    lower(&mut versions[r], *v);
                    indexes[r].push((ix.name.clone(), index_value(ix, k, &p)?));
                }
            }
        }
        let order = |v: &mut Vec<(String, Sealed)>| {
            v.sort_by_key(|(n, _)| table.columns().iter().position(|c| &c.name == n));
        };
        let mut out = Vec::with_capacity(rows.len());
        for ((mut vals, ixs), v) in sealed.into_iter().zip(indexes).zip(versions) {
            order(&mut vals);
            let version =
                v.ok_or_else(|| Error::value(table.name(), "-", "no column was set on this row"))?;
            out.push(SealedRow {
                table: table.name().to_owned(),
                values: vals,
                indexes: ixs,
                version,
                row_key: None,
            });
        }
        Ok(out)
    }

    /// Starts sealing a row: set its values, then [`RowSealer::seal`].
    pub fn row(&self, row: &(impl RowId + ?Sized)) -> RowSealer<'_> {
        RowSealer {
            cols: self,
            row: row.row_context(),
            values: vec![None; self.table.columns().len()],
            row_key: None,
            error: None,
        }
    }

    /// Opens a value of a table with `keys = "row"`: `row_key` is the row's key column as
    /// read (`None`: erased, and the row's values are shredded).
    pub async fn open_keyed<T: FromPlain>(
        &self,
        column: &str,
        row: &(impl RowId + ?Sized),
        row_key: Option<&[u8]>,
        value: &Encrypted<T>,
    ) -> Result<T> {
        self.open_opt_keyed(column, row, row_key, Some(value))
            .await?
            .ok_or_else(|| self.err(column, "is NULL; read it with open_opt_keyed"))
    }

    /// As [`open_opt`](Self::open_opt), for a table with `keys = "row"`.
    pub async fn open_opt_keyed<T: FromPlain>(
        &self,
        column: &str,
        row: &(impl RowId + ?Sized),
        row_key: Option<&[u8]>,
        value: Option<&Encrypted<T>>,
    ) -> Result<Option<T>> {
        let c = self.table.column(column)?;
        self.check_type(c, T::TYPE)?;
        let Some(value) = value else {
            return match c.nulls {
                Nulls::Passthrough => Ok(None),
                Nulls::Authenticated => Err(self.err(
                    column,
                    "SQL NULL in a column with authenticated NULLs: the value was removed without the key",
                )),
            };
        };
        let row = row.row_context();
        let rk = self.row_key_for_open(&row, row_key).await?;
        match self
            .open_bytes(c, &row, value.as_bytes(), rk.as_ref())
            .await?
        {
            Some(p) => Ok(Some(T::from_plain(p).map_err(|e| self.err(column, e.0))?)),
            None => Ok(None),
        }
    }

    /// Search terms for an equality (or compound) index: the index of `values` under every
    /// key version that may still have rows indexed. Bind [`Search::terms`] to
    /// `index_column = ANY($n)`, then confirm candidates with [`Search::matches`].
    pub async fn search_eq<T: ToPlain + ?Sized>(
        &self,
        index: &str,
        values: &[&T],
    ) -> Result<Search> {
        let plains = values
            .iter()
            .map(|v| Plain::of(*v))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(index, e.0))?;
        self.search_eq_plain(index, &plains).await
    }

    /// As [`search_eq`](Self::search_eq) for values of mixed types (compound indexes).
    pub async fn search_eq_plain(&self, index: &str, values: &[Plain]) -> Result<Search> {
        let ix = self.table.index(index)?;
        let scope = self.scope()?;
        if ix.prefix.is_some() {
            return Err(self.err(index, "is a prefix index; use search_prefix"));
        }
        if values.len() != ix.columns.len() {
            return Err(self.err(
                index,
                format!(
                    "indexes {} column(s); {} value(s) given",
                    ix.columns.len(),
                    values.len()
                ),
            ));
        }
        for (v, p) in values.iter().zip(&ix.columns) {
            self.check_type(self.table.column_at(*p), v.value_type)?;
        }
        let normalized: Vec<Vec<u8>> = values
            .iter()
            .map(|v| normalize(ix, &v.bytes).into_owned())
            .collect();
        let refs: Vec<&[u8]> = normalized.iter().map(Vec::as_slice).collect();
        let mut terms = Vec::new();
        for (version, key) in self.keyring.blind_index_keys(scope, &ix.keys[0]).await? {
            terms.push((version, key.compute(&refs)?));
        }
        Ok(Search {
            index: ix.name.clone(),
            terms,
            check: Check::Equal(normalized),
            normalizers: Some(ix.clone()),
        })
    }

    /// Search terms for equality on a deterministic column: `value` sealed under every key
    /// version that may still have rows, so rows not yet re-encrypted are found too. Bind
    /// [`Search::terms`] (BYTEA storage) or [`Search::text_terms`] (TEXT storage) to
    /// `column = ANY($n)`; every row found matches.
    pub async fn search_deterministic<T: ToPlain + ?Sized>(
        &self,
        column: &str,
        value: &T,
    ) -> Result<Search> {
        let c = self.table.column(column)?;
        let scope = self.scope()?;
        if !c.suite.is_deterministic() {
            return Err(self.err(
                column,
                "is randomized: equal values give unrelated ciphertexts; search it through a blind index",
            ));
        }
        self.check_type(c, T::TYPE)?;
        let plain = value.to_plain().map_err(|e| self.err(column, e.0))?;
        let ctx = FieldContext::new().with_type(c.value_type);
        let terms = self
            .keyring
            .deterministic_terms(scope, &c.id, &ctx, &plain)
            .await?;
        Ok(Search {
            index: c.name.clone(),
            terms,
            check: Check::Exact(plain),
            normalizers: None,
        })
    }

    /// Search terms for `LIKE 'prefix%'` on a prefix index: one token per live key version,
    /// for `index_column && $n` (array overlap, served by a GIN index). A prefix longer than
    /// the index's longest is searched by its longest indexed prefix and confirmed by
    /// [`Search::matches`]; one shorter than the shortest is refused (it would leak more and
    /// match too much).
    pub async fn search_prefix(&self, index: &str, prefix: &str) -> Result<Search> {
        let ix = self.table.index(index)?;
        let scope = self.scope()?;
        let Some((min, max)) = ix.prefix else {
            return Err(self.err(index, "is not a prefix index; use search_eq"));
        };
        let normalized = normalize(ix, prefix.as_bytes()).into_owned();
        let text = String::from_utf8_lossy(&normalized).into_owned();
        let len = text.chars().count();
        if len < usize::from(min) {
            return Err(self.err(
                index,
                format!(
                    "a prefix search needs at least {min} characters after normalization; got {len}"
                ),
            ));
        }
        let k = len.min(usize::from(max));
        let token_input: String = text.chars().take(k).collect();
        let spec = &ix.keys[k - usize::from(min)];
        let mut terms = Vec::new();
        for (version, key) in self.keyring.blind_index_keys(scope, spec).await? {
            terms.push((version, prefix_token(k, &key, &token_input)?));
        }
        Ok(Search {
            index: ix.name.clone(),
            terms,
            check: Check::Prefix(text),
            normalizers: Some(ix.clone()),
        })
    }

    /// The blind-index keys of `ix` under the active version (one per prefix length).
    pub(crate) async fn active_index_keys(
        &self,
        ix: &Index,
    ) -> Result<(KeyVersion, Vec<Arc<BlindIndexKey>>)> {
        let mut version = None;
        let mut keys = Vec::with_capacity(ix.keys.len());
        let scope = self.scope()?;
        for spec in &ix.keys {
            let (v, k) = self.keyring.blind_index_key(scope, spec).await?;
            version = Some(version.map_or(v, |o: KeyVersion| o.min(v)));
            keys.push(k);
        }
        let version =
            version.ok_or_else(|| Error::Schema(format!("index '{}' has no key", ix.name)))?;
        Ok((version, keys))
    }
}

/// Collects one row's values, then seals them all and computes its blind indexes.
pub struct RowSealer<'a> {
    cols: &'a Columns,
    row: String,
    values: Vec<Option<Option<Vec<u8>>>>,
    row_key: Option<Vec<u8>>,
    error: Option<Error>,
}

impl RowSealer<'_> {
    fn put(mut self, column: &str, value_type: ValueType, value: Option<Vec<u8>>) -> Self {
        if self.error.is_none() {
            match self.cols.table.column(column) {
                Ok(c) => {
                    if let Err(e) = self.cols.check_type(c, value_type) {
                        self.error = Some(e);
                    } else if let Some(i) = self
                        .cols
                        .table
                        .columns()
                        .iter()
                        .position(|x| x.name == c.name)
                    {
                        self.values[i] = Some(value);
                    }
                }
                Err(e) => self.error = Some(e),
            }
        }
        self
    }

    /// Sets a column's value.
    pub fn set<T: ToPlain + ?Sized>(self, column: &str, value: &T) -> Result<Self> {
        let bytes = value.to_plain().map_err(|e| self.cols.err(column, e.0))?;
        Ok(self.put(column, T::TYPE, Some(bytes)))
    }

    /// Sets a column from canonical bytes of a known type (see [`Plain::from_canonical`]).
    pub fn set_plain(self, column: &str, value: Plain) -> Self {
        self.put(column, value.value_type, Some(value.bytes))
    }

    /// Sets a column to NULL (SQL NULL, or an authenticated NULL if the column asks for it).
    pub fn set_null(self, column: &str) -> Result<Self> {
        let t = self.cols.table.column(column)?.value_type;
        Ok(self.put(column, t, None))
    }

    /// Sets a column from an `Option`.
    pub fn set_opt<T: ToPlain + ?Sized>(self, column: &str, value: Option<&T>) -> Result<Self> {
        match value {
            Some(v) => self.set(column, v),
            None => self.set_null(column),
        }
    }

    /// With `keys = "row"`: the row's stored key, for an update (without it, [`seal`](Self::seal)
    /// makes a fresh key, which suits an insert).
    pub fn with_row_key(mut self, row_key: &[u8]) -> Self {
        self.row_key = Some(row_key.to_vec());
        self
    }

    /// Seals every value set and computes every blind index whose columns were all set.
    pub async fn seal(self) -> Result<SealedRow> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let table = &self.cols.table;
        self.cols.ready_to_write().await?;
        let rk = match table.row_key_column() {
            Some(_) => Some(
                self.cols
                    .row_key_for_seal(&self.row, self.row_key.as_deref())
                    .await?,
            ),
            None => None,
        };
        let mut version: Option<KeyVersion> = rk.as_ref().map(RowKey::version);
        let mut lower = |v: KeyVersion| {
            version = Some(version.map_or(v, |o| o.min(v)));
        };
        let mut values = Vec::new();
        for (c, v) in table.columns().iter().zip(&self.values) {
            let Some(v) = v else { continue };
            let sealed = match (v, c.nulls) {
                (None, Nulls::Passthrough) => None,
                (v, _) => {
                    let bytes = self
                        .cols
                        .seal_bytes(c, &self.row, v.as_deref(), rk.as_ref())
                        .await?;
                    let e = Encrypted::<()>::from_bytes(bytes, c.storage)
                        .map_err(|e| self.cols.err(&c.name, e.to_string()))?;
                    if rk.is_none() {
                        lower(e.version());
                    }
                    Some(e)
                }
            };
            values.push((
                c.name.clone(),
                Sealed {
                    value: sealed,
                    storage: c.storage,
                },
            ));
        }
        let mut indexes = Vec::new();
        for ix in table.indexes() {
            let parts: Option<Vec<Option<&[u8]>>> = ix
                .columns
                .iter()
                .map(|p| self.values[*p].as_ref().map(|v| v.as_deref()))
                .collect();
            let Some(parts) = parts else { continue };
            let (v, keys) = self.cols.active_index_keys(ix).await?;
            lower(v);
            indexes.push((ix.name.clone(), index_value(ix, &keys, &parts)?));
        }
        let version = version
            .ok_or_else(|| Error::value(table.name(), "-", "no column was set on this row"))?;
        Ok(SealedRow {
            table: table.name().to_owned(),
            values,
            indexes,
            version,
            row_key: rk.map(RowKey::into_blob),
        })
    }
}

/// A sealed row: ciphertexts, blind indexes and the key version to store beside them.
#[derive(Clone, Debug)]
pub struct SealedRow {
    table: String,
    values: Vec<(String, Sealed)>,
    indexes: Vec<(String, IndexValue)>,
    version: KeyVersion,
    row_key: Option<Vec<u8>>,
}

impl SealedRow {
    /// The sealed value of `column`, to bind.
    pub fn value(&self, column: &str) -> Result<&Sealed> {
        self.values
            .iter()
            .find(|(n, _)| n == column)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::value(&self.table, column, "was not set on this row"))
    }

    /// The blind index (or prefix tokens) `index`, to bind.
    pub fn index(&self, index: &str) -> Result<&IndexValue> {
        self.indexes
            .iter()
            .find(|(n, _)| n == index)
            .map(|(_, v)| v)
            .ok_or_else(|| {
                Error::value(
                    &self.table,
                    index,
                    "not computed: set every column this index covers",
                )
            })
    }

    /// The key version to store in the row's version column (the lowest version any of its
    /// values or indexes used). A partial UPDATE stores `LEAST(version_column, $v)`.
    pub fn version(&self) -> i32 {
        i32::try_from(self.version.0).unwrap_or(i32::MAX)
    }

    /// With `keys = "row"`: the row's key as wrapped under its scope, for the row-key column
    /// (a fresh one unless [`RowSealer::with_row_key`] gave the stored one).
    pub fn row_key(&self) -> Option<&[u8]> {
        self.row_key.as_deref()
    }

    /// The sealed columns, in schema order.
    pub fn values(&self) -> &[(String, Sealed)] {
        &self.values
    }

    /// The computed indexes, in schema order.
    pub fn indexes(&self) -> &[(String, IndexValue)] {
        &self.indexes
    }
}
