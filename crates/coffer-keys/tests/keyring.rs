//! The keyring on the in-memory key store (`coffer_testkit::memory`): every scenario of
//! `support/`, each on a fresh store shared by the keyrings it builds. coffer-store runs the
//! scenarios that need SQL behaviour on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;

use coffer_core::{FieldContext, Kek, Suite};
use coffer_keys::KeyStore;
use coffer_testkit::memory::MemoryStore;
use support::{Env, col, one_kek, scope};

/// One in-memory store; every keyring built on it shares it, as processes share a database.
#[derive(Default)]
struct Memory(Arc<MemoryStore>);

impl Env for Memory {
    async fn store(&self) -> Arc<dyn KeyStore> {
        Arc::clone(&self.0) as Arc<dyn KeyStore>
    }

    async fn tamper_audit_detail(&self, id: i64, detail: &str) {
        assert!(
            self.0.tamper_audit_detail(id, detail),
            "no audit record {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_and_errors() {
    support::lifecycle::lifecycle_and_errors(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compromise_and_restore() {
    support::lifecycle::compromise_and_restore(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kek_rotation_rewraps_every_dek() {
    support::lifecycle::kek_rotation_rewraps_every_dek(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load_loses_nothing() {
    support::concurrency::rotation_under_load_loses_nothing(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_and_rotations_leave_one_active_version() {
    support::concurrency::concurrent_creates_and_rotations_leave_one_active_version(
        &Memory::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_requests_make_one_kek_call() {
    support::concurrency::cold_requests_make_one_kek_call(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lease_one_block_at_a_time() {
    support::concurrency::concurrent_writers_lease_one_block_at_a_time(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_rotate_automatically() {
    support::writes::counters_rotate_automatically(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_next_block_is_leased_ahead() {
    support::writes::the_next_block_is_leased_ahead(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_lease_once_and_keep_order() {
    support::writes::batches_lease_once_and_keep_order(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn age_rotates_once_and_metrics_count() {
    support::writes::age_rotates_once_and_metrics_count(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leased_field_keys_keep_to_their_lease() {
    support::writes::leased_field_keys_keep_to_their_lease(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_keys_in_rows() {
    support::scoped_keys::data_keys_in_rows(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_keyed_by_a_scope() {
    support::scoped_keys::files_keyed_by_a_scope(&Memory::default()).await;
}

#[test]
fn cache_and_kek_traffic_is_exported_as_metrics() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let env = Memory::default();
            let kek = Kek::generate().unwrap();
            let kr = one_kek(&env, &kek).await;
            let s = scope("tenant:m");
            let c = col("x");
            kr.create_scope(&s).await.unwrap();
            // The creator keeps the new DEK: its first use is an L1 hit, with no KEK call.
            let ct = kr
                .encrypt(&s, &c, Suite::Gcm96, &FieldContext::new(), b"v")
                .await
                .unwrap();
            // Another process: one miss and one unwrap, then hits.
            let cold = one_kek(&env, &kek).await;
            for _ in 0..9 {
                cold.decrypt(&s, &c, &FieldContext::new(), &ct)
                    .await
                    .unwrap();
            }
        })
    });
    let counts: std::collections::HashMap<String, u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => {
                Some((key.key().name().to_owned(), n))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        counts.get("coffer_keys_kek_unwraps_total"),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("coffer_keys_kek_wraps_total"),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("coffer_keys_l1_misses_total"),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("coffer_keys_l1_hits_total"),
        Some(&9),
        "1 + 8: {counts:?}"
    );
}
