//! The in-memory key store passes the store conformance suite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use coffer_keys::audit::{AuditEvent, AuditFilter, Operation, verify_chain};
use coffer_keys::{KeyStore, StoreInfo};
use coffer_testkit::conformance;
use coffer_testkit::memory::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_conformance_suite() {
    conformance::run(|| async { Arc::new(MemoryStore::new()) as Arc<dyn KeyStore> }).await;
}

#[tokio::test]
async fn stores_have_their_own_ids_unless_given_one() {
    let (a, b) = (MemoryStore::new(), MemoryStore::new());
    assert_ne!(
        a.info().await.unwrap().store_id,
        b.info().await.unwrap().store_id
    );
    let c = MemoryStore::with_id([5; 16]);
    assert_eq!(
        c.info().await.unwrap(),
        StoreInfo {
            store_id: [5; 16],
            schema_version: coffer_testkit::memory::SCHEMA_VERSION,
            epoch: 0
        }
    );
}

#[tokio::test]
async fn a_tampered_audit_record_breaks_the_chain() {
    let store = MemoryStore::new();
    for op in [Operation::Init, Operation::Create, Operation::Rotate] {
        store
            .append_audit(&AuditEvent::new("tester", op).detail("ok"), None)
            .await
            .unwrap();
    }
    assert!(!store.tamper_audit_detail(9, "x"), "no record 9");
    assert!(store.tamper_audit_detail(2, "nothing happened"));
    let all = store.audit(&AuditFilter::default()).await.unwrap();
    let broken = verify_chain(&all).unwrap().expect("the chain is broken");
    assert_eq!(broken.id, 2);
}
