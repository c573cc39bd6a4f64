//! [`LeasedFieldKey`]: a column key with the encryptions leased for it from the key store, which
//! refuses to seal more values than were leased.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coffer_core::{ColumnId, FieldContext, FieldKey, KeyVersion, Packed, ScopeId, Suite};

use super::Keyring;
use crate::error::{Error, Result};

/// The column key of a scope's active version with `n` encryptions leased from the key store
/// ([`Keyring::leased_field_key`]). Every seal takes from the lease, and a seal that would pass
/// it is refused with [`Error::State`] and seals nothing: the key store's count of encryptions
/// under the version stays an upper bound of those made. Opening values takes nothing.
///
/// Share it (`Arc`) between threads as needed; the count is atomic. Drop it once
/// [`is_current`](Self::is_current) turns false (the keyring rotated, destroyed or invalidated
/// keys, or the active pointer's lifetime passed) and lease again.
pub struct LeasedFieldKey {
    key: Arc<FieldKey>,
    version: KeyVersion,
    left: AtomicU64,
    generation: u64,
    until: Instant,
}

impl fmt::Debug for LeasedFieldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasedFieldKey")
            .field("version", &self.version)
            .field("suite", &self.key.suite())
            .field("remaining", &self.remaining())
            .finish_non_exhaustive()
    }
}

impl LeasedFieldKey {
    /// `key` with `n` encryptions to seal, leased when the keyring's generation was
    /// `generation`, usable for `ttl`.
    pub(crate) fn new(key: Arc<FieldKey>, n: u64, generation: u64, ttl: Duration) -> Self {
        LeasedFieldKey {
            version: key.version(),
            key,
            left: AtomicU64::new(n),
            generation,
            until: Instant::now() + ttl,
        }
    }

    /// The version the key belongs to (the scope's active version when it was leased).
    pub fn version(&self) -> KeyVersion {
        self.version
    }

    /// The suite it seals with.
    pub fn suite(&self) -> Suite {
        self.key.suite()
    }

    /// How many values it may still seal.
    pub fn remaining(&self) -> u64 {
        self.left.load(Ordering::Acquire)
    }

    /// The keyring's [`generation`](Keyring::generation) when it was leased.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether it may still be used with `keyring`: the generation has not changed, the active
    /// pointer's lifetime (`active_ttl`) has not passed, and some of the lease is left.
    pub fn is_current(&self, keyring: &Keyring) -> bool {
        self.remaining() > 0
            && keyring.generation() == self.generation
            && Instant::now() < self.until
    }

    /// Takes `n` encryptions from the lease, or refuses if fewer are left.
    fn take(&self, n: u64) -> Result<()> {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .map(|_| ())
            .map_err(|left| {
                Error::State(format!(
                    "the leased column key has {left} of its leased encryptions left and cannot \
                     seal {n} more; lease a new one with Keyring::leased_field_key"
                ))
            })
    }

    /// Seals one value.
    pub fn encrypt(&self, ctx: &FieldContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.take(1)?;
        Ok(self.key.encrypt(ctx, plaintext)?)
    }

    /// Seals an authenticated NULL.
    pub fn encrypt_null(&self, ctx: &FieldContext<'_>) -> Result<Vec<u8>> {
        self.take(1)?;
        Ok(self.key.encrypt_null(ctx)?)
    }

    /// Seals many values on this thread ([`FieldKey::encrypt_batch`]); all or none.
    pub fn encrypt_batch(&self, items: &[(FieldContext<'_>, &[u8])]) -> Result<Vec<Vec<u8>>> {
        self.take(items.len() as u64)?;
        Ok(self.key.encrypt_batch(items)?)
    }

    /// Seals many values on all cores ([`FieldKey::encrypt_batch_parallel`]); all or none.
    pub fn encrypt_batch_parallel(
        &self,
        items: &[(FieldContext<'_>, &[u8])],
    ) -> Result<Vec<Vec<u8>>> {
        self.take(items.len() as u64)?;
        Ok(self.key.encrypt_batch_parallel(items)?)
    }

    /// Seals many values into one packed buffer ([`FieldKey::encrypt_packed`]); all or none.
    pub fn encrypt_packed(&self, items: &[(FieldContext<'_>, &[u8])]) -> Result<Packed> {
        self.take(items.len() as u64)?;
        Ok(self.key.encrypt_packed(items)?)
    }

    /// Opens a value sealed under this key's version: `Some(plaintext)`, or `None` for an
    /// authenticated NULL. Takes nothing from the lease.
    pub fn decrypt(&self, ctx: &FieldContext<'_>, ciphertext: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.key.decrypt(ctx, ciphertext)?)
    }
}

impl Keyring {
    /// Leases `n` encryptions (at least 1) under the scope's active version and returns the
    /// column key with the lease, for a binding that seals values at a high rate without a
    /// cache lookup per value. It seals at most `n` values; see [`LeasedFieldKey`] for how long
    /// to keep it.
    pub async fn leased_field_key(
        &self,
        scope: &ScopeId,
        column: &ColumnId,
        suite: Suite,
        n: u64,
    ) -> Result<LeasedFieldKey> {
        let n = n.max(1);
        let generation = self.generation();
        let live = self.for_write(scope, n).await?;
        let key = live.field_key(scope, column, suite)?;
        Ok(LeasedFieldKey::new(
            key,
            n,
            generation,
            self.inner.config.active_ttl,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use coffer_core::Dek;

    fn leased(n: u64) -> LeasedFieldKey {
        let dek = Dek::generate().unwrap();
        let scope = ScopeId::new("tenant:1").unwrap();
        let column = ColumnId::new("users.email").unwrap();
        let key = FieldKey::new(&dek, KeyVersion(3), Suite::Gcm96, &scope, &column).unwrap();
        LeasedFieldKey::new(Arc::new(key), n, 7, Duration::from_secs(60))
    }

    #[test]
    fn seals_at_most_the_leased_count() {
        let k = leased(3);
        let ctx = FieldContext::new();
        assert_eq!(k.version(), KeyVersion(3));
        assert_eq!(k.generation(), 7);
        let a = k.encrypt(&ctx, b"a").unwrap();
        let _ = k.encrypt_null(&ctx).unwrap();
        assert_eq!(k.remaining(), 1);
        let _ = k.encrypt(&ctx, b"c").unwrap();
        assert_eq!(k.remaining(), 0);
        let err = k.encrypt(&ctx, b"d").unwrap_err();
        assert!(matches!(err, Error::State(_)), "{err:?}");
        assert!(k.encrypt_null(&ctx).is_err());
        // Opening takes nothing from the lease.
        assert_eq!(k.decrypt(&ctx, &a).unwrap().as_deref(), Some(&b"a"[..]));
    }

    #[test]
    fn a_batch_past_the_lease_seals_nothing() {
        let k = leased(4);
        let ctx = FieldContext::new();
        let items: Vec<(FieldContext<'_>, &[u8])> = (0..5).map(|_| (ctx, &b"x"[..])).collect();
        assert!(k.encrypt_batch(&items).is_err());
        assert!(k.encrypt_batch_parallel(&items).is_err());
        assert!(k.encrypt_packed(&items).is_err());
        assert_eq!(k.remaining(), 4, "a refused batch takes nothing");
        assert_eq!(k.encrypt_batch(&items[..2]).unwrap().len(), 2);
        assert_eq!(k.encrypt_packed(&items[..1]).unwrap().len(), 1);
        assert_eq!(k.encrypt_batch_parallel(&items[..1]).unwrap().len(), 1);
        assert_eq!(k.remaining(), 0);
        assert!(k.encrypt_batch(&items[..1]).is_err());
        assert!(k.encrypt_batch(&[]).unwrap().is_empty());
    }

    #[test]
    fn threads_share_one_lease() {
        let k = Arc::new(leased(100));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let k = Arc::clone(&k);
                std::thread::spawn(move || {
                    (0..40)
                        .filter(|_| k.encrypt(&FieldContext::new(), b"v").is_ok())
                        .count()
                })
            })
            .collect();
        let sealed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sealed, 100);
        assert_eq!(k.remaining(), 0);
    }

    #[test]
    fn debug_shows_no_key() {
        let s = format!("{:?}", leased(2));
        assert!(s.contains("remaining: 2"), "{s}");
        assert!(!s.contains("cipher"), "{s}");
    }
}
