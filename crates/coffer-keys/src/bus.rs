//! The invalidation bus: how processes sharing one key store tell each other, at once, that keys
//! they may hold in L1 must go (destroy, compromise, retirement) or that a scope's active version
//! changed (rotation).
//!
//! Redis carries these notices when an L2 cache is configured ([`crate::L2Backend`]). A key store
//! can carry them itself: the PostgreSQL store publishes them with `NOTIFY` and listens with
//! `LISTEN` ([`crate::KeyStore::invalidation_bus`]), so the window in which another process may
//! still use a destroyed key no longer depends on Redis (docs/KEYS.md §7.7). A keyring whose store
//! offers a bus subscribes to it when it is built.

use std::sync::Arc;

use async_trait::async_trait;
use coffer_core::{KeyVersion, ScopeId};

/// What one notice asks of every process: drop the listed versions of a scope from L1, and its
/// cached active pointer. An empty list means only the pointer changed (a rotation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalidation {
    /// The store the scope lives in ([`crate::StoreInfo::store_id`]): a process of another store
    /// on the same channel ignores the notice.
    pub store_id: [u8; 16],
    /// The scope.
    pub scope: ScopeId,
    /// The versions to drop; empty for a pointer-only notice.
    pub versions: Vec<KeyVersion>,
    /// Drop every cached version of the scope (a notice whose list would not fit a channel's
    /// message size says this instead).
    pub every_version: bool,
}

/// What a subscription hands its handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// A notice from some process (this one included).
    Notice(Invalidation),
    /// The subscription was down for a while and is back: notices may have been missed, so the
    /// keyring drops its whole L1.
    Resumed,
    /// Nothing happened (sent about once a second so the handler can say whether to go on).
    Idle,
}

/// Called by a subscription's background task; returning `false` ends it (its keyring is gone).
pub type BusHandler = Arc<dyn Fn(BusEvent) -> bool + Send + Sync>;

/// A broadcast channel between the processes of one key store.
#[async_trait]
pub trait InvalidationBus: Send + Sync + 'static {
    /// Sends a notice to every subscribed process. An error is reported, never fatal: the
    /// caches' TTLs bound how long a missed notice matters.
    async fn publish(&self, notice: &Invalidation) -> Result<(), String>;

    /// Calls `handler` with every notice any process publishes, from a background task on the
    /// current Tokio runtime that reconnects by itself (and then sends [`BusEvent::Resumed`]).
    /// Does nothing outside a runtime.
    fn subscribe(&self, handler: BusHandler);
}

/// The longest notice [`encode_notice`] writes (PostgreSQL `NOTIFY` payloads must stay under
/// 8 000 bytes).
pub const MAX_NOTICE_LEN: usize = 4096;

/// The text form of a notice on a channel that carries text: `store-id-hex ' ' versions ' '
/// scope`, where versions is `-` (pointer only), `*` (every version) or `3,4,…`. The scope comes
/// last because it is the only part that may hold spaces. A version list that would make the
/// notice longer than [`MAX_NOTICE_LEN`] is sent as `*`.
pub fn encode_notice(notice: &Invalidation) -> String {
    let versions = if notice.every_version {
        "*".to_owned()
    } else if notice.versions.is_empty() {
        "-".to_owned()
    } else {
        let list: Vec<String> = notice.versions.iter().map(|v| v.0.to_string()).collect();
        list.join(",")
    };
    // 32 hex digits, two spaces, a scope of at most 255 bytes.
    let versions = if versions.len() > MAX_NOTICE_LEN - 32 - 2 - 255 {
        "*".to_owned()
    } else {
        versions
    };
    format!(
        "{} {versions} {}",
        hex::encode(notice.store_id),
        notice.scope.as_str()
    )
}

/// Parses [`encode_notice`]'s form; `None` for anything else (ignored by the subscriber).
pub fn decode_notice(text: &str) -> Option<Invalidation> {
    let mut parts = text.splitn(3, ' ');
    let store = parts.next()?;
    let versions = parts.next()?;
    let scope = parts.next()?;
    let mut store_id = [0u8; 16];
    hex::decode_to_slice(store, &mut store_id).ok()?;
    let every_version = versions == "*";
    let versions = if versions == "-" || every_version {
        Vec::new()
    } else {
        versions
            .split(',')
            .map(|v| v.parse::<u32>().ok().map(KeyVersion))
            .collect::<Option<Vec<_>>>()?
    };
    Some(Invalidation {
        store_id,
        scope: ScopeId::new(scope).ok()?,
        versions,
        every_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_junk_is_ignored() {
        for versions in [
            vec![],
            vec![KeyVersion(1)],
            vec![KeyVersion(3), KeyVersion(12)],
        ] {
            let n = Invalidation {
                store_id: [7; 16],
                scope: ScopeId::new("tenant:acme corp").unwrap(),
                versions,
                every_version: false,
            };
            assert_eq!(decode_notice(&encode_notice(&n)), Some(n));
        }
        // A list too long for one message becomes "every version", within the size bound.
        let long = Invalidation {
            store_id: [7; 16],
            scope: ScopeId::new("s".repeat(255)).unwrap(),
            versions: (1..5000).map(KeyVersion).collect(),
            every_version: false,
        };
        let text = encode_notice(&long);
        assert!(text.len() <= MAX_NOTICE_LEN, "{}", text.len());
        let back = decode_notice(&text).unwrap();
        assert!(back.every_version && back.versions.is_empty());
        for junk in [
            "",
            "zz - s",
            "0707 - s",
            "07070707070707070707070707070707 x s",
        ] {
            assert_eq!(decode_notice(junk), None, "{junk}");
        }
    }
}
