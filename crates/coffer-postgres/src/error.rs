//! Errors of the column layer.

/// What went wrong. No variant carries a plaintext value or key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Key management: unknown scope or version, destroyed key, wrong KEK, a ciphertext that
    /// failed to authenticate (opaque on purpose).
    #[error(transparent)]
    Keys(#[from] coffer_keys::Error),
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The column schema (coffer-columns.toml or a `TableSpec`) is not usable.
    #[error("column schema: {0}")]
    Schema(String),
    /// A value cannot go into, or come out of, a column as asked: a plaintext where a
    /// ciphertext belongs, the wrong Rust type, an SQL NULL in an authenticated-NULL column.
    #[error("{table}.{column}: {reason}")]
    Value {
        /// The table's SQL name.
        table: String,
        /// The column's SQL name.
        column: String,
        /// Why.
        reason: String,
    },
    /// Pending rows stayed locked by other transactions for the whole wait: nothing is wrong
    /// with them; run the job again later.
    #[error(
        "{table}: {rows} pending rows still locked by other transactions after {waited:?}; rerun the job later"
    )]
    Busy {
        /// The table's SQL name.
        table: String,
        /// Rows still pending.
        rows: u64,
        /// How long the job waited.
        waited: std::time::Duration,
    },
    /// The row's key (`keys = "row"`) was erased: its values can never be decrypted again.
    #[error("{table} row {row}: its row key was erased, so its values are shredded")]
    Shredded {
        /// The table's SQL name.
        table: String,
        /// The row id (as PostgreSQL prints it).
        row: String,
    },
    /// A row could not be re-encrypted (the job stops, its batch rolled back).
    #[error("{table} row {row}: {reason}")]
    Row {
        /// The table's SQL name.
        table: String,
        /// The row id (as PostgreSQL prints it).
        row: String,
        /// Why.
        reason: String,
    },
}

impl From<coffer_core::Error> for Error {
    fn from(e: coffer_core::Error) -> Self {
        Error::Keys(coffer_keys::Error::Crypto(e))
    }
}

impl Error {
    /// What kind of failure this is (docs: [`coffer_core::ErrorKind`]); frontends map kinds.
    pub fn kind(&self) -> coffer_core::ErrorKind {
        use coffer_core::ErrorKind as K;
        match self {
            Error::Keys(k) => k.kind(),
            Error::Db(_) | Error::Busy { .. } => K::Unavailable,
            Error::Schema(_) | Error::Value { .. } => K::InvalidInput,
            // A stored value that did not open: tampered, moved, or under another key.
            Error::Row { .. } => K::Decrypt,
            Error::Shredded { .. } => K::Destroyed,
        }
    }

    pub(crate) fn value(table: &str, column: &str, reason: impl Into<String>) -> Self {
        Error::Value {
            table: table.to_owned(),
            column: column.to_owned(),
            reason: reason.into(),
        }
    }

    /// Whether the error is a ciphertext that failed to authenticate (tampering, a value
    /// moved from another row or column, the wrong key).
    pub fn is_authentication(&self) -> bool {
        matches!(
            self,
            Error::Keys(coffer_keys::Error::Crypto(coffer_core::Error::Decrypt))
        )
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::ErrorKind as K;

    #[test]
    fn kinds_classify_every_variant() {
        let table: Vec<(Error, K)> = vec![
            (
                Error::Keys(coffer_keys::Error::store("down")),
                K::Unavailable,
            ),
            (coffer_core::Error::Decrypt.into(), K::Decrypt),
            (Error::Db(sqlx::Error::PoolTimedOut), K::Unavailable),
            (Error::Schema("no such column".into()), K::InvalidInput),
            (Error::value("t", "c", "a plaintext"), K::InvalidInput),
            (
                Error::Busy {
                    table: "t".into(),
                    rows: 3,
                    waited: std::time::Duration::from_secs(1),
                },
                K::Unavailable,
            ),
            (
                Error::Row {
                    table: "t".into(),
                    row: "1".into(),
                    reason: "decryption failed".into(),
                },
                K::Decrypt,
            ),
        ];
        for (e, kind) in table {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }
}
