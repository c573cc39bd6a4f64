//! Re-encryption of tables with scope templates and per-row keys (docs/COLUMNS.md §4, §7, §8),
//! against a real PostgreSQL: only the rotated tenant's rows move, destroyed and missing scopes
//! are counted and left alone, a run stopped half way resumes, plaintext migrates into every
//! tenant's scope, and a per-row-key table re-wraps its keys without touching a value.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use coffer_core::{Kek, KeyVersion, ScopeId};
use coffer_postgres::reencrypt::retirable;
use coffer_postgres::{Columns, Encrypted, ReencryptOptions, Reencryptor, Schema, Storage};
use sqlx::PgPool;
use uuid::Uuid;

use common::TestDb;

const SQL: &str = "
CREATE TABLE patients (
    id          uuid PRIMARY KEY,
    tenant_id   text,
    ssn         bytea,
    ssn_bidx    bytea,
    name        text,
    name_prefix bytea[],
    ssn_plain   text,
    row_key     bytea,
    key_version int
);
CREATE INDEX patients_tenant ON patients (tenant_id);";

fn toml(row_keys: bool, migrate: bool) -> String {
    let mut t = coffer_testkit::columns_schema::table("patients", "tenant:{tenant_id}/patients");
    if row_keys {
        t = t.setting("keys", "\"row\"");
    }
    let ssn: &[(&str, &str)] = if migrate {
        &[("migrate_from", "ssn_plain")]
    } else {
        &[]
    };
    t.column("ssn", "text", ssn)
        .column("name", "text", &[("storage", "text")])
        .index("ssn_bidx", &["ssn"], 32, &["digits"])
        .prefix_index("name_prefix", "name", 32, &["casefold"], (2, 6))
        .toml()
}

async fn setup(row_keys: bool, migrate: bool) -> (TestDb, Columns) {
    let db = common::database().await;
    sqlx::raw_sql(SQL).execute(&db.pool).await.unwrap();
    let keyring = db
        .keyring(&Kek::generate().unwrap(), Duration::from_millis(100))
        .await;
    let table = Schema::from_toml(&toml(row_keys, migrate))
        .unwrap()
        .table("patients")
        .unwrap();
    (db, Columns::new(keyring, table))
}

fn ssn_of(i: usize) -> String {
    format!("{:03}-{:02}-{:04}", i % 1000, i % 100, i)
}

/// Inserts `n` sealed rows for `tenant`; returns their ids in order.
async fn fill(cols: &Columns, pool: &PgPool, tenant: &str, n: usize) -> Vec<Uuid> {
    let t = cols.for_scope(&[("tenant_id", tenant)]).unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = Uuid::new_v4();
        let row = t
            .row(&id)
            .set("ssn", &ssn_of(i))
            .unwrap()
            .set("name", &format!("Ann {tenant} {i}"))
            .unwrap()
            .seal()
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO patients (id, tenant_id, ssn, ssn_bidx, name, name_prefix, row_key, key_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(tenant)
        .bind(row.value("ssn").unwrap())
        .bind(row.index("ssn_bidx").unwrap())
        .bind(row.value("name").unwrap())
        .bind(row.index("name_prefix").unwrap())
        .bind(row.row_key())
        .bind(row.version())
        .execute(pool)
        .await
        .unwrap();
        ids.push(id);
    }
    ids
}

type Raw = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<String>,
    Option<Vec<Vec<u8>>>,
    Option<Vec<u8>>,
    Option<i32>,
);

/// Every stored byte of a tenant's rows, in id order.
async fn snapshot(pool: &PgPool, tenant: &str) -> Vec<Raw> {
    sqlx::query_as(
        "SELECT ssn, ssn_bidx, name, name_prefix, row_key, key_version FROM patients \
         WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn scope(tenant: &str) -> ScopeId {
    ScopeId::new(format!("tenant:{tenant}/patients")).unwrap()
}

/// Opens every row of `tenant` and checks its SSN (rows in `ids` order, `ssn_of(i)`).
async fn opens(cols: &Columns, pool: &PgPool, tenant: &str, ids: &[Uuid]) {
    let t = cols.for_scope(&[("tenant_id", tenant)]).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let (ssn, rk): (Encrypted<String>, Option<Vec<u8>>) =
            sqlx::query_as("SELECT ssn, row_key FROM patients WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap();
        let got = if cols.table().row_key_column().is_some() {
            t.open_keyed("ssn", id, rk.as_deref(), &ssn).await.unwrap()
        } else {
            t.open("ssn", id, &ssn).await.unwrap()
        };
        assert_eq!(got, ssn_of(i), "{tenant} row {i}");
    }
}

/// The rows of `tenant` a search for `ssn_of(i)` finds (search terms under every live version).
async fn search(cols: &Columns, pool: &PgPool, tenant: &str, i: usize) -> Vec<Uuid> {
    let t = cols.for_scope(&[("tenant_id", tenant)]).unwrap();
    let digits: String = ssn_of(i).chars().filter(char::is_ascii_digit).collect();
    let q = t.search_eq("ssn_bidx", &[digits.as_str()]).await.unwrap();
    sqlx::query_scalar("SELECT id FROM patients WHERE tenant_id = $1 AND ssn_bidx = ANY($2)")
        .bind(tenant)
        .bind(q.terms())
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn versions(pool: &PgPool, tenant: &str) -> Vec<Option<i32>> {
    sqlx::query_scalar("SELECT DISTINCT key_version FROM patients WHERE tenant_id = $1 ORDER BY 1")
        .bind(tenant)
        .fetch_all(pool)
        .await
        .unwrap()
}

fn opts(batch_size: u32) -> ReencryptOptions {
    ReencryptOptions {
        batch_size,
        locked_wait: Duration::from_secs(5),
        ..ReencryptOptions::default()
    }
}

#[tokio::test]
async fn rotating_one_tenant_moves_only_its_rows_and_a_destroyed_tenant_is_left_as_it_is() {
    let (db, cols) = setup(false, false).await;
    let pool = &db.pool;
    let acme = fill(&cols, pool, "acme", 30).await;
    let globex = fill(&cols, pool, "globex", 20).await;
    fill(&cols, pool, "initech", 10).await;
    let keyring = cols.keyring().clone();
    keyring.rotate(&scope("acme")).await.unwrap();
    keyring.destroy(&scope("initech")).await.unwrap();
    let globex_before = snapshot(pool, "globex").await;
    let initech_before = snapshot(pool, "initech").await;

    let job = Reencryptor::new(cols.clone(), pool.clone(), opts(7));
    assert!(job.walks_scopes());
    let s = job.standing(20).await.unwrap();
    assert_eq!(
        (s.scopes, s.rows, s.pending, s.pending_scopes),
        (3, 60, 30, 1)
    );
    assert_eq!(s.listed.len(), 1);
    assert_eq!(s.listed[0].scope, "tenant:acme/patients");
    assert_eq!(s.listed[0].active, Some(KeyVersion(2)));
    assert_eq!((s.destroyed_scopes, s.destroyed_rows), (1, 10));

    let r = job.run(|_| {}).await.unwrap();
    assert_eq!(r.rows, 30, "{r:?}");
    assert_eq!(r.remaining, 0);
    assert_eq!((r.destroyed_scopes, r.destroyed_rows), (1, 10), "{r:?}");
    assert_eq!(r.active, Some(KeyVersion(2)));
    // Only acme moved; globex and the destroyed initech are byte-identical.
    assert_eq!(versions(pool, "acme").await, vec![Some(2)]);
    assert_eq!(snapshot(pool, "globex").await, globex_before);
    assert_eq!(snapshot(pool, "initech").await, initech_before);
    opens(&cols, pool, "acme", &acme).await;
    opens(&cols, pool, "globex", &globex).await;
    for (i, id) in acme.iter().enumerate().step_by(7) {
        assert!(search(&cols, pool, "acme", i).await.contains(id));
    }
    // Every acme value's header names v2.
    for (ct, ..) in snapshot(pool, "acme").await {
        let e = Encrypted::<String>::from_bytes(ct.unwrap(), Storage::Bytea).unwrap();
        assert_eq!(e.version(), KeyVersion(2));
    }
    // A rerun finds nothing to do.
    assert_eq!(job.run(|_| {}).await.unwrap().rows, 0);

    // A job resolved to one scope moves that scope only.
    keyring.rotate(&scope("acme")).await.unwrap();
    keyring.rotate(&scope("globex")).await.unwrap();
    let acme_before = snapshot(pool, "acme").await;
    let one = Reencryptor::new(
        cols.for_scope(&[("tenant_id", "globex")]).unwrap(),
        pool.clone(),
        opts(1000),
    );
    assert!(!one.walks_scopes());
    assert_eq!(one.pending().await.unwrap(), (KeyVersion(2), 20));
    let r = one.run(|_| {}).await.unwrap();
    assert_eq!((r.rows, r.remaining, r.scopes), (20, 0, 1), "{r:?}");
    assert_eq!(versions(pool, "globex").await, vec![Some(2)]);
    assert_eq!(snapshot(pool, "acme").await, acme_before);
    assert_eq!(job.pending().await.unwrap(), (KeyVersion(3), 30));
    db.drop().await;
}

#[tokio::test]
async fn a_run_stopped_half_way_resumes_every_row_moved_once_and_missing_scopes_are_reported() {
    let (db, cols) = setup(false, false).await;
    let pool = &db.pool;
    let a = fill(&cols, pool, "a1", 40).await;
    let b = fill(&cols, pool, "b2", 35).await;
    let keyring = cols.keyring().clone();
    keyring.rotate(&scope("a1")).await.unwrap();
    keyring.rotate(&scope("b2")).await.unwrap();
    // A row of a tenant the key store does not know, and one whose tenant cannot be a scope.
    sqlx::query(
        "INSERT INTO patients (id, tenant_id, ssn, key_version) VALUES ($1, 'ghost', '\\x01aa', 1), \
         ($2, 'bad/tenant', '\\x01aa', 1), ($3, NULL, '\\x01aa', 1)",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .execute(pool)
    .await
    .unwrap();

    let job = Reencryptor::new(
        cols.clone(),
        pool.clone(),
        ReencryptOptions {
            max_rows: Some(37),
            ..opts(10)
        },
    );
    let s = job.standing(20).await.unwrap();
    assert_eq!((s.pending, s.pending_scopes), (75, 2), "{s:?}");
    assert_eq!(s.missing, vec!["tenant:ghost/patients".to_owned()]);
    assert_eq!(
        (s.missing_scopes, s.missing_rows, s.unresolvable_rows),
        (1, 1, 2)
    );

    // Stopped after 37 rows: those are wholly moved, the rest untouched.
    let r = job.run(|_| {}).await.unwrap();
    assert_eq!((r.rows, r.remaining), (37, 38), "{r:?}");
    let moved: i64 = sqlx::query_scalar("SELECT count(*) FROM patients WHERE key_version = 2")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(moved, 37);

    // The rerun does exactly the rest, and reports what it left alone.
    let rest = Reencryptor::new(cols.clone(), pool.clone(), opts(10));
    let r = rest.run(|_| {}).await.unwrap();
    assert_eq!((r.rows, r.remaining), (38, 0), "{r:?}");
    assert_eq!((r.missing_scopes, r.missing_rows), (1, 1), "{r:?}");
    assert_eq!(r.unresolvable_rows, 2, "{r:?}");
    assert_eq!(versions(pool, "a1").await, vec![Some(2)]);
    assert_eq!(versions(pool, "b2").await, vec![Some(2)]);
    opens(&cols, pool, "a1", &a).await;
    opens(&cols, pool, "b2", &b).await;
    // The missing scope was not created behind the operator's back.
    assert!(
        keyring
            .store()
            .scope(&scope("ghost"))
            .await
            .unwrap()
            .is_none()
    );
    db.drop().await;
}

#[tokio::test]
async fn two_workers_share_a_templated_table_and_move_each_row_once() {
    let (db, cols) = setup(false, false).await;
    let pool = &db.pool;
    let mut tenants = Vec::new();
    for k in 0..12 {
        let t = format!("t{k:02}");
        let ids = fill(&cols, pool, &t, 15).await;
        cols.keyring().rotate(&scope(&t)).await.unwrap();
        tenants.push((t, ids));
    }
    let job = Reencryptor::new(cols.clone(), pool.clone(), opts(8));
    let r = job.run_workers(2, |_| {}).await.unwrap();
    assert_eq!((r.rows, r.remaining, r.scopes), (180, 0, 12), "{r:?}");
    for (t, ids) in &tenants {
        assert_eq!(versions(pool, t).await, vec![Some(2)]);
        opens(&cols, pool, t, ids).await;
    }
    db.drop().await;
}

#[tokio::test]
async fn plaintext_migrates_into_each_tenants_own_scope() {
    let (db, cols) = setup(false, true).await;
    let pool = &db.pool;
    let mut ids = Vec::new();
    for (k, tenant) in ["acme", "globex", "initech"].iter().enumerate() {
        let mut tids = Vec::new();
        for i in 0..(10 + k) {
            let id = Uuid::new_v4();
            sqlx::query("INSERT INTO patients (id, tenant_id, ssn_plain) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(tenant)
                .bind(ssn_of(i))
                .execute(pool)
                .await
                .unwrap();
            tids.push(id);
        }
        ids.push((*tenant, tids));
    }
    let job = Reencryptor::new(
        cols.clone(),
        pool.clone(),
        ReencryptOptions {
            clear_plaintext: true,
            ..opts(4)
        },
    );
    // Before: every tenant pending, its scope to be created by the job.
    let s = job.standing(20).await.unwrap();
    assert_eq!((s.pending, s.pending_scopes), (33, 3), "{s:?}");
    assert!(s.listed.iter().all(|l| l.active.is_none()), "{s:?}");
    assert_eq!(job.census().await.unwrap().plaintext_left, 33);

    let r = job.run(|_| {}).await.unwrap();
    assert_eq!((r.rows, r.migrated, r.remaining), (33, 33, 0), "{r:?}");
    for (tenant, tids) in &ids {
        assert!(
            cols.keyring()
                .store()
                .active_dek(&scope(tenant))
                .await
                .unwrap()
                .is_some()
        );
        opens(&cols, pool, tenant, tids).await;
        assert!(search(&cols, pool, tenant, 3).await.contains(&tids[3]));
    }
    let c = job.census().await.unwrap();
    assert_eq!(c.plaintext_left, 0);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM patients WHERE ssn_plain IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    db.drop().await;
}

#[tokio::test]
async fn rotating_a_row_keyed_table_rewraps_the_keys_and_leaves_every_value_byte_identical() {
    let (db, cols) = setup(true, false).await;
    let pool = &db.pool;
    let acme = fill(&cols, pool, "acme", 12).await;
    let globex = fill(&cols, pool, "globex", 5).await;
    // Erase one acme row's key: shredded, skipped, counted.
    sqlx::query("UPDATE patients SET row_key = NULL WHERE id = $1")
        .bind(acme[3])
        .execute(pool)
        .await
        .unwrap();
    let job = Reencryptor::new(cols.clone(), pool.clone(), opts(5));
    let c = job.census().await.unwrap();
    assert_eq!(c.row_keys_by_version.get(&1), Some(&16), "{c:?}");
    assert_eq!(c.row_keys_erased, 1);
    assert!(c.values_by_version.is_empty(), "{c:?}");
    assert_eq!(c.values_under_row_keys, 17 * 2);

    cols.keyring().rotate(&scope("acme")).await.unwrap();
    let before = snapshot(pool, "acme").await;
    let globex_before = snapshot(pool, "globex").await;
    let s = job.standing(20).await.unwrap();
    assert_eq!((s.pending, s.erased_rows), (11, 1), "{s:?}");

    let r = job.run(|_| {}).await.unwrap();
    assert_eq!((r.rows, r.rewrapped, r.remaining), (11, 11, 0), "{r:?}");
    assert_eq!(r.erased_rows, 1);
    let after = snapshot(pool, "acme").await;
    let acme_sorted = {
        let mut v = acme.clone();
        v.sort();
        v
    };
    for ((b, a), id) in before.iter().zip(&after).zip(&acme_sorted) {
        // The values: byte-identical.
        assert_eq!((&b.0, &b.2), (&a.0, &a.2), "row {id}");
        if *id == acme[3] {
            assert_eq!(b, a, "the erased row is left as it is");
            continue;
        }
        // The row key re-wrapped under v2, the version column and the blind indexes moved.
        assert_ne!(b.4, a.4);
        let (v, _) = coffer_core::datakey::parse(a.4.as_deref().unwrap()).unwrap();
        assert_eq!(v, KeyVersion(2));
        assert_eq!(a.5, Some(2));
        assert_ne!(b.1, a.1);
        assert_ne!(b.3, a.3);
    }
    assert_eq!(snapshot(pool, "globex").await, globex_before);
    let live: Vec<Uuid> = acme
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, id)| *id)
        .collect();
    let t = cols.for_scope(&[("tenant_id", "acme")]).unwrap();
    for (i, id) in acme.iter().enumerate() {
        if i == 3 {
            continue;
        }
        let (ssn, rk): (Encrypted<String>, Option<Vec<u8>>) =
            sqlx::query_as("SELECT ssn, row_key FROM patients WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(
            t.open_keyed("ssn", id, rk.as_deref(), &ssn).await.unwrap(),
            ssn_of(i)
        );
        assert_eq!(search(&cols, pool, "acme", i).await, vec![*id]);
    }
    assert_eq!(live.len(), 11);
    opens(&cols, pool, "globex", &globex).await;

    // Census and retirement read the row keys: acme's v1 wraps nothing now.
    let c = job.census().await.unwrap();
    assert_eq!(c.row_keys_by_version.get(&2), Some(&11), "{c:?}");
    assert_eq!(c.row_keys_by_version.get(&1), Some(&5), "{c:?}");
    let e = retirable(std::slice::from_ref(&job), false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("scope by scope"), "{e}");
    let acme_job = Reencryptor::new(t.clone(), pool.clone(), opts(5));
    let c = acme_job.census().await.unwrap();
    assert_eq!(
        c.row_keys_by_version.keys().copied().collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(c.old_versions(KeyVersion(2)), Vec::<KeyVersion>::new());
    tokio::time::sleep(cols.keyring().retire_grace()).await;
    let retired = retirable(std::slice::from_ref(&acme_job), true)
        .await
        .unwrap();
    assert_eq!(retired, vec![KeyVersion(1)]);
    // Still opens after retirement (a retired version decrypts).
    opens(&cols, pool, "globex", &globex).await;
    db.drop().await;
}
