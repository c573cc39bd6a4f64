//! Field operations: encrypting and decrypting values, batches, blind indexes and deterministic
//! search terms, and the column keys handed to bindings.

use std::collections::HashMap;
use std::sync::Arc;

use coffer_core::{
    BlindIndexKey, ColumnId, Dek, FieldContext, FieldKey, Header, KeyVersion, Normalizer, ScopeId,
    Suite,
};

use super::Keyring;
use crate::error::{Error, Result};

impl Keyring {
    /// Encrypts a field value under the scope's active version.
    pub async fn encrypt(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        suite: Suite,
        ctx: &FieldContext<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let live = self.for_write(scope, 1).await?;
        let key = live.field_key(scope, column, suite)?;
        Ok(key.encrypt(ctx, plaintext)?)
    }

    /// Encrypts an authenticated NULL under the scope's active version.
    pub async fn encrypt_null(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        suite: Suite,
        ctx: &FieldContext<'_>,
    ) -> Result<Vec<u8>> {
        let live = self.for_write(scope, 1).await?;
        let key = live.field_key(scope, column, suite)?;
        Ok(key.encrypt_null(ctx)?)
    }

    /// Encrypts many field values of one scope under its active version, in order: one lease
    /// and one key lookup for the whole batch, and, per run of items with the same column and
    /// suite, the batch path of [`FieldKey::encrypt_batch`] (one CSPRNG draw for all IVs in the
    /// default build; a run of one value is sealed alone, [`FieldKey::encrypt`]). `None` seals
    /// an authenticated NULL. Returns the version used.
    pub async fn encrypt_batch(
        &self,
        scope: &ScopeId,
        items: &[BatchItem<'_>],
    ) -> Result<(KeyVersion, Vec<Vec<u8>>)> {
        if items.is_empty() {
            return Ok((self.active_version(scope).await?, Vec::new()));
        }
        let live = self.for_write(scope, items.len() as u64).await?;
        let mut out = Vec::with_capacity(items.len());
        let mut start = 0;
        while start < items.len() {
            let first = &items[start];
            let mut end = start + 1;
            while end < items.len()
                && items[end].column == first.column
                && items[end].suite == first.suite
                && items[end].plaintext.is_some() == first.plaintext.is_some()
            {
                end += 1;
            }
            let key = live.field_key(scope, first.column, first.suite)?;
            let run = &items[start..end];
            if let [one] = run
                && let Some(pt) = one.plaintext
            {
                // A run of one: the single seal draws its own IV, without the batch path's
                // IV buffer and pair list (the same bytes, one value).
                out.push(key.encrypt(&one.ctx, pt)?);
            } else if first.plaintext.is_some() {
                let pairs: Vec<(FieldContext<'_>, &[u8])> = run
                    .iter()
                    .map(|i| (i.ctx, i.plaintext.unwrap_or_default()))
                    .collect();
                out.extend(key.encrypt_batch(&pairs)?);
            } else {
                for i in run {
                    out.push(key.encrypt_null(&i.ctx)?);
                }
            }
            start = end;
        }
        Ok((live.version, out))
    }

    /// Encrypts many values of one column under the scope's active version on all cores
    /// (rayon, in the caller's pool when called inside `ThreadPool::install`), in order: one
    /// lease and one key lookup for the whole batch, then
    /// [`FieldKey::encrypt_batch_parallel`]. Returns the version used.
    pub async fn encrypt_batch_parallel(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        suite: Suite,
        items: &[(FieldContext<'_>, &[u8])],
    ) -> Result<(KeyVersion, Vec<Vec<u8>>)> {
        if items.is_empty() {
            return Ok((self.active_version(scope).await?, Vec::new()));
        }
        let live = self.for_write(scope, items.len() as u64).await?;
        let key = live.field_key(scope, column, suite)?;
        Ok((live.version, key.encrypt_batch_parallel(items)?))
    }

    /// Decrypts many values of one column on all cores, in order. The keys every header
    /// names are resolved first, so a value under an unknown or destroyed version fails the
    /// whole call with that error; after that each result stands alone (a value that does
    /// not authenticate is an `Err` in its place).
    pub async fn decrypt_batch_parallel(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        items: &[(FieldContext<'_>, &[u8])],
    ) -> Result<Vec<Result<Option<Vec<u8>>>>> {
        use rayon::prelude::*;
        let mut keys: HashMap<(KeyVersion, Suite), Arc<FieldKey>> = HashMap::new();
        for (_, ct) in items {
            if let Ok((h, _)) = Header::parse(ct)
                && !keys.contains_key(&(h.version, h.suite))
            {
                let live = self.live(scope, h.version).await?;
                keys.insert(
                    (h.version, h.suite),
                    live.field_key(scope, column, h.suite)?,
                );
            }
        }
        Ok(items
            .par_iter()
            .with_min_len(256)
            .map(|(ctx, ct)| {
                let (h, _) =
                    Header::parse(ct).map_err(|_| Error::Crypto(coffer_core::Error::Decrypt))?;
                let key = keys
                    .get(&(h.version, h.suite))
                    .ok_or(Error::Crypto(coffer_core::Error::Decrypt))?;
                Ok(key.decrypt(ctx, ct)?)
            })
            .collect())
    }

    /// The column key of one version (for opening values it sealed), under the same rules as
    /// [`leased_field_key`](Self::leased_field_key) for keeping it (with `l1_ttl`).
    pub async fn field_key_at(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        version: KeyVersion,
        suite: Suite,
    ) -> Result<Arc<FieldKey>> {
        self.live(scope, version)
            .await?
            .field_key(scope, column, suite)
    }

    /// Decrypts a field value with the version its header names: `Some(plaintext)`, or `None`
    /// for an authenticated NULL.
    pub async fn decrypt(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        ctx: &FieldContext<'_>,
        ciphertext: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let (header, _) =
            Header::parse(ciphertext).map_err(|_| Error::Crypto(coffer_core::Error::Decrypt))?;
        let live = self.live(scope, header.version).await?;
        let key = live.field_key(scope, column, header.suite)?;
        Ok(key.decrypt(ctx, ciphertext)?)
    }

    /// The blind index of `values` under the scope's active version (for writes).
    pub async fn blind_index(
        &self,
        scope: &ScopeId,
        index: &BlindIndexSpec,
        values: &[&[u8]],
    ) -> Result<(KeyVersion, Vec<u8>)> {
        let p = self.active_pointer(scope).await?;
        let live = self.live(scope, p.version).await?;
        Ok((p.version, live.index_key(index)?.compute(values)?))
    }

    /// The blind index of `values` under every version that may still have rows indexed
    /// (active and decrypt-only), for searching while a re-encryption runs.
    pub async fn blind_index_terms(
        &self,
        scope: &ScopeId,
        index: &BlindIndexSpec,
        values: &[&[u8]],
    ) -> Result<Vec<(KeyVersion, Vec<u8>)>> {
        let mut out = Vec::new();
        for live in self.searchable(scope).await? {
            out.push((live.version, live.index_key(index)?.compute(values)?));
        }
        Ok(out)
    }

    /// A deterministic (AES-SIV) field value sealed under every version that may still have
    /// rows (active and decrypt-only), active first: the terms of an equality search on a
    /// deterministic column while a re-encryption runs.
    pub async fn deterministic_terms(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        ctx: &FieldContext<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<(KeyVersion, Vec<u8>)>> {
        let mut out = Vec::new();
        for live in self.searchable(scope).await? {
            let key = live.field_key(scope, column, Suite::Siv)?;
            out.push((live.version, key.encrypt(ctx, plaintext)?));
        }
        Ok(out)
    }

    /// The scope's active version, as this process sees it (the cached pointer lives at most
    /// `active_ttl`).
    pub async fn active_version(&self, scope: &ScopeId) -> Result<KeyVersion> {
        Ok(self.active_pointer(scope).await?.version)
    }

    /// The scope's active version as the key store has it now, not as this process cached it
    /// (for up to `active_ttl`): the cached pointer is dropped and read again, so the writes
    /// that follow use that version too. Jobs that must not miss a rotation made by another
    /// process, or by another keyring of this one, call it (re-encryption does).
    pub async fn refresh_active(&self, scope: &ScopeId) -> Result<KeyVersion> {
        self.inner.invalidate_pointer(scope);
        Ok(self.active_pointer(scope).await?.version)
    }

    /// The blind-index key of `index` under the scope's active version, for computing many
    /// indexes without a cache lookup or a subkey derivation per value (writers, batch jobs).
    pub async fn blind_index_key(
        &self,
        scope: &ScopeId,
        index: &BlindIndexSpec,
    ) -> Result<(KeyVersion, Arc<BlindIndexKey>)> {
        let p = self.active_pointer(scope).await?;
        let live = self.live(scope, p.version).await?;
        Ok((p.version, live.index_key(index)?))
    }

    /// The blind-index keys of `index` under every version that may still have rows indexed
    /// (active and decrypt-only), active first, for searching while a re-encryption runs.
    pub async fn blind_index_keys(
        &self,
        scope: &ScopeId,
        index: &BlindIndexSpec,
    ) -> Result<Vec<(KeyVersion, Arc<BlindIndexKey>)>> {
        let mut out = Vec::new();
        for live in self.searchable(scope).await? {
            out.push((live.version, live.index_key(index)?));
        }
        Ok(out)
    }
}

/// One value of [`Keyring::encrypt_batch`].
#[derive(Clone, Copy, Debug)]
pub struct BatchItem<'a> {
    /// The column.
    pub column: &'a ColumnId,
    /// The suite.
    pub suite: Suite,
    /// Row context, domain and value type.
    pub ctx: FieldContext<'a>,
    /// The value, or `None` for an authenticated NULL.
    pub plaintext: Option<&'a [u8]>,
}

/// A blind index definition: column, index name, width and normalizers.
#[derive(Clone, Debug)]
pub struct BlindIndexSpec {
    /// The column.
    pub column: ColumnId,
    /// The index name (one subkey per name).
    pub name: String,
    /// Width in bits.
    pub bits: u16,
    /// Normalizers, in order.
    pub normalizers: Vec<Normalizer>,
}

impl BlindIndexSpec {
    pub(super) fn key(&self, dek: &Dek) -> Result<BlindIndexKey> {
        Ok(
            BlindIndexKey::new(dek, &self.column, &self.name, self.bits)?
                .with_normalizers(self.normalizers.clone()),
        )
    }
}
