//! The keyring scenarios that need SQL behaviour (several connection pools racing on one
//! database, rows edited behind the store's back, multi-row re-wraps), each on a fresh SQLite
//! file and a fresh PostgreSQL database. The scenarios are written once in coffer-keys'
//! `tests/support/`, which runs all of them on the in-memory store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../coffer-keys/tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use coffer_keys::KeyStore;
use coffer_store::SqlStore;
use coffer_testkit::store_audit;
use common::TestDb;

/// A test database; each keyring a scenario builds opens its own pool on it, as a process would.
struct Sql<'a>(&'a TestDb);

impl support::Env for Sql<'_> {
    async fn store(&self) -> Arc<dyn KeyStore> {
        Arc::new(SqlStore::connect(&self.0.url).await.unwrap())
    }

    async fn tamper_audit_detail(&self, id: i64, detail: &str) {
        let store = SqlStore::connect(&self.0.url).await.unwrap();
        store_audit::tamper_audit_detail(store.pool(), id, detail).await;
    }

    async fn rewrite_audit(&self, records: &[coffer_keys::AuditRecord]) {
        let store = SqlStore::connect(&self.0.url).await.unwrap();
        store_audit::rewrite_audit(store.pool(), records).await;
    }
}

macro_rules! on_both {
    ($module:ident :: $name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = super::common::sqlite().await;
                super::support::$module::$name(&super::Sql(&db)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let db = super::common::postgres().await;
                super::support::$module::$name(&super::Sql(&db)).await;
                db.drop_pg().await;
            }
        }
    };
}

on_both!(lifecycle::lifecycle_and_errors);
on_both!(audit::a_rewritten_audit_trail_fails_verification);
on_both!(audit::truncation_is_found_against_the_anchor);
on_both!(audit::a_verifier_without_the_kek_cannot_check_keyed_records);
on_both!(wrong_kek::a_wrong_kek_writes_nothing);
on_both!(lifecycle::kek_rotation_rewraps_every_dek);
on_both!(concurrency::rotation_under_load_loses_nothing);
on_both!(concurrency::concurrent_creates_and_rotations_leave_one_active_version);
on_both!(concurrency::concurrent_writers_lease_one_block_at_a_time);
on_both!(scale::scopes_are_created_in_bulk_with_an_outcome_each);
on_both!(scale::scopes_are_listed_a_page_at_a_time_by_prefix);
on_both!(scale::a_subject_is_erased_with_its_sub_scopes);
on_both!(scale::kek_rotation_walks_the_deks_in_pages);
