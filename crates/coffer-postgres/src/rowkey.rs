//! Per-row keys (`keys = "row"`): each row's values are sealed under its own data key, stored
//! beside the row wrapped under the row's scope (the data-key blob of docs/FORMAT.md §8).
//! Values sealed this way carry key version 0 in their header: "the row's key", never a
//! version of the scope (docs/COLUMNS.md §8).

use coffer_core::{Dek, FieldContext, FieldKey, KeyVersion, ScopeId};

use crate::columns::Columns;
use crate::error::{Error, Result};
use crate::schema::Column;

/// The header version of a value sealed under a row key.
pub const ROW_KEY_VERSION: KeyVersion = KeyVersion(0);

/// An opened row key and its wrapped form.
pub(crate) struct RowKey {
    dek: Dek,
    blob: Vec<u8>,
    version: KeyVersion,
}

impl RowKey {
    /// The scope version the row key is wrapped under.
    pub(crate) fn version(&self) -> KeyVersion {
        self.version
    }

    pub(crate) fn into_blob(self) -> Vec<u8> {
        self.blob
    }

    fn field_key(&self, scope: &ScopeId, c: &Column) -> Result<FieldKey> {
        Ok(FieldKey::new(
            &self.dek,
            ROW_KEY_VERSION,
            c.suite,
            scope,
            &c.id,
        )?)
    }

    pub(crate) fn seal(
        &self,
        scope: &ScopeId,
        c: &Column,
        ctx: &FieldContext<'_>,
        plain: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let key = self.field_key(scope, c)?;
        Ok(match plain {
            Some(p) => key.encrypt(ctx, p)?,
            None => key.encrypt_null(ctx)?,
        })
    }

    pub(crate) fn open(
        &self,
        scope: &ScopeId,
        c: &Column,
        ctx: &FieldContext<'_>,
        ciphertext: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        Ok(self.field_key(scope, c)?.decrypt(ctx, ciphertext)?)
    }
}

impl Columns {
    /// The row key to seal a row with: the stored one opened, or a fresh one.
    pub(crate) async fn row_key_for_seal(&self, row: &str, blob: Option<&[u8]>) -> Result<RowKey> {
        let scope = self.scope()?;
        match blob {
            Some(b) => self.open_row_key(row, b).await,
            None => {
                let (dek, blob) = self.keyring().generate_data_key(scope).await?;
                let (version, _) = coffer_core::datakey::parse(&blob)?;
                Ok(RowKey { dek, blob, version })
            }
        }
    }

    /// The row key to open a row's values with: `None` for a table without row keys; an
    /// error naming the erasure when the row's key column is NULL.
    pub(crate) async fn row_key_for_open(
        &self,
        row: &str,
        blob: Option<&[u8]>,
    ) -> Result<Option<RowKey>> {
        if self.table().row_key_column().is_none() {
            return Ok(None);
        }
        match blob {
            Some(b) => Ok(Some(self.open_row_key(row, b).await?)),
            None => Err(Error::Shredded {
                table: self.table().name().to_owned(),
                row: row.to_owned(),
            }),
        }
    }

    async fn open_row_key(&self, row: &str, blob: &[u8]) -> Result<RowKey> {
        let scope = self.scope()?;
        let (version, _) = coffer_core::datakey::parse(blob).map_err(|_| Error::Row {
            table: self.table().name().to_owned(),
            row: row.to_owned(),
            reason: format!(
                "its '{}' column does not hold a Coffer row key",
                self.table().row_key_column().unwrap_or("row_key")
            ),
        })?;
        let dek = self.keyring().open_data_key(scope, blob).await?;
        Ok(RowKey {
            dek,
            blob: blob.to_vec(),
            version,
        })
    }
}
