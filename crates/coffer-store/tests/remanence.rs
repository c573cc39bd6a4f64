//! What a destroy leaves in the database files (docs/KEYS.md, "What a destroy leaves behind"):
//! on SQLite, no byte of an erased wrap stays in the database file or its write-ahead log; on
//! PostgreSQL, no row version holding it stays in `coffer_deks`'s heap (read page by page with
//! `pageinspect`). PostgreSQL's own WAL still holds it; that is documented, not tested.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use coffer_core::{KeyVersion, ScopeId};
use coffer_keys::{KekId, KeyStore, NewDek};
use coffer_store::SqlStore;
use coffer_testkit::psql::psql;

/// A DEK record whose wrap is a recognisable 40-byte pattern that occurs nowhere else.
fn dek(scope: &ScopeId, version: u32, wrap: &[u8; 40]) -> NewDek {
    NewDek {
        scope: scope.clone(),
        version: KeyVersion(version),
        key_id: coffer_testkit::random::bytes::<16>(),
        wrapped: wrap.to_vec(),
        kek: KekId::new("main", 1).unwrap(),
        wrap_algorithm: "aes256-kwp".to_owned(),
        check: vec![0; 32],
    }
}

/// Two scopes with two versions each; returns the wraps of the scope that will be destroyed and
/// of the one that stays.
async fn fill(store: &SqlStore) -> (Vec<[u8; 40]>, Vec<[u8; 40]>) {
    let mut out = (Vec::new(), Vec::new());
    for (name, into) in [("tenant:gone", 0), ("tenant:kept", 1)] {
        let s = ScopeId::new(name).unwrap();
        let w1 = coffer_testkit::random::bytes::<40>();
        let w2 = coffer_testkit::random::bytes::<40>();
        store.create_scope(&dek(&s, 1, &w1)).await.unwrap();
        store.rotate(KeyVersion(1), &dek(&s, 2, &w2)).await.unwrap();
        let v = if into == 0 { &mut out.0 } else { &mut out.1 };
        v.extend([w1, w2]);
    }
    (out.0, out.1)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The database file and its `-wal` file (if any), concatenated.
fn sqlite_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).unwrap();
    let wal = db.with_extension("db-wal");
    if let Ok(w) = std::fs::read(wal) {
        bytes.extend(w);
    }
    bytes
}

#[tokio::test]
async fn a_destroy_leaves_no_erased_wrap_in_the_sqlite_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let store = SqlStore::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let (gone, kept) = fill(&store).await;
    let before = sqlite_bytes(&path);
    for w in gone.iter().chain(&kept) {
        assert!(
            contains(&before, w),
            "the wraps are stored before the destroy"
        );
    }
    let n = store
        .destroy_scope(&ScopeId::new("tenant:gone").unwrap())
        .await
        .unwrap();
    assert_eq!(n, 2);
    // The store stays open (a running service), so this is what a thief copying the files now
    // would get.
    let after = sqlite_bytes(&path);
    for w in &gone {
        assert!(!contains(&after, w), "an erased wrap is still in the files");
    }
    for w in &kept {
        assert!(contains(&after, w), "a kept scope's wrap went missing");
    }
}

#[tokio::test]
async fn a_destroy_leaves_no_row_version_holding_an_erased_wrap_in_postgresql() {
    let db = common::postgres().await;
    let store = SqlStore::connect(&db.url).await.unwrap();
    let (gone, kept) = fill(&store).await;
    psql(&db.url, "CREATE EXTENSION IF NOT EXISTS pageinspect");
    // Every tuple on every heap page of coffer_deks, live or dead, as hex.
    let heap = || {
        psql(
            &db.url,
            "SELECT encode(t_data, 'hex') FROM generate_series(0, \
             (pg_relation_size('coffer_deks') / current_setting('block_size')::int) - 1) AS p, \
             heap_page_items(get_raw_page('coffer_deks', p::int)) WHERE t_data IS NOT NULL",
        )
    };
    let hex = |w: &[u8; 40]| coffer_testkit::hex::encode(w);
    let before = heap();
    for w in gone.iter().chain(&kept) {
        assert!(
            before.contains(&hex(w)),
            "the wraps are stored before the destroy"
        );
    }
    store
        .destroy_scope(&ScopeId::new("tenant:gone").unwrap())
        .await
        .unwrap();
    let after = heap();
    for w in &gone {
        assert!(
            !after.contains(&hex(w)),
            "a dead row version still holds an erased wrap"
        );
    }
    for w in &kept {
        assert!(after.contains(&hex(w)), "a kept scope's wrap went missing");
    }
}
