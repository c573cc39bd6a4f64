//! Many owners' rows in one table (docs/COLUMNS.md §7–8), against a real PostgreSQL: a scope
//! per tenant from a scope template, search per tenant, destroying one tenant, restoring the
//! key store behind its back, and per-row keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use coffer_core::{ErrorKind, Kek};
use coffer_postgres::{Columns, Encrypted, Schema, Search};
use sqlx::PgPool;
use uuid::Uuid;

use common::TestDb;

const TENANT_SQL: &str = "
CREATE TABLE patients (
    id          uuid PRIMARY KEY,
    tenant_id   text NOT NULL,
    ssn         bytea,
    ssn_bidx    bytea,
    name        text,
    name_prefix bytea[],
    key_version int
);";

fn tenant_toml(extra: &[(&str, &str)]) -> String {
    let mut t = coffer_testkit::columns_schema::table("patients", "tenant:{tenant_id}/patients");
    for (k, v) in extra {
        t = t.setting(k, v);
    }
    t.column("ssn", "text", &[])
        .column("name", "text", &[("storage", "text")])
        .index("ssn_bidx", &["ssn"], 32, &["digits"])
        .prefix_index("name_prefix", "name", 32, &["casefold"], (2, 6))
        .toml()
}

async fn setup(extra: &[(&str, &str)]) -> (TestDb, Columns) {
    let db = common::database().await;
    sqlx::raw_sql(TENANT_SQL).execute(&db.pool).await.unwrap();
    let keyring = db
        .keyring(&Kek::generate().unwrap(), Duration::from_millis(100))
        .await;
    let table = Schema::from_toml(&tenant_toml(extra))
        .unwrap()
        .table("patients")
        .unwrap();
    (db, Columns::new(keyring, table))
}

async fn insert(cols: &Columns, pool: &PgPool, tenant: &str, id: Uuid, ssn: &str, name: &str) {
    let t = cols.for_scope(&[("tenant_id", tenant)]).unwrap();
    let row = t
        .row(&id)
        .set("ssn", ssn)
        .unwrap()
        .set("name", name)
        .unwrap()
        .seal()
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO patients (id, tenant_id, ssn, ssn_bidx, name, name_prefix, key_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(tenant)
    .bind(row.value("ssn").unwrap())
    .bind(row.index("ssn_bidx").unwrap())
    .bind(row.value("name").unwrap())
    .bind(row.index("name_prefix").unwrap())
    .bind(row.version())
    .execute(pool)
    .await
    .unwrap();
}

/// The ids of the rows the search finds in `tenant`'s rows (filtered on tenant_id, as the
/// application's query is), confirmed by decryption.
async fn find(cols: &Columns, pool: &PgPool, tenant: &str, ssn: &str) -> Vec<Uuid> {
    let t = cols.for_scope(&[("tenant_id", tenant)]).unwrap();
    let q = t.search_eq("ssn_bidx", &[ssn]).await.unwrap();
    let rows: Vec<(Uuid, Encrypted<String>)> = sqlx::query_as(
        "SELECT id, ssn FROM patients WHERE tenant_id = $1 AND ssn_bidx = ANY($2) ORDER BY id",
    )
    .bind(tenant)
    .bind(q.terms())
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for (id, v) in rows {
        if q.matches(&[t.open("ssn", &id, &v).await.unwrap().as_str()]) {
            out.push(id);
        }
    }
    out
}

async fn open_acme(cols: &Columns, pool: &PgPool, a: Uuid) -> coffer_postgres::Result<String> {
    let (_, ct, _) = raw(pool, a).await;
    cols.for_scope(&[("tenant_id", "acme")])
        .unwrap()
        .open(
            "ssn",
            &a,
            &Encrypted::<String>::from_bytes(ct, coffer_postgres::Storage::Bytea).unwrap(),
        )
        .await
}

async fn raw(pool: &PgPool, id: Uuid) -> (String, Vec<u8>, Vec<u8>) {
    sqlx::query_as("SELECT tenant_id, ssn, ssn_bidx FROM patients WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_tenants_in_one_table_never_see_each_other() {
    let (db, cols) = setup(&[]).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    // Scopes are created on the first write (the template's default).
    insert(&cols, &db.pool, "acme", a, "123-45-6789", "Ann Lee").await;
    insert(&cols, &db.pool, "globex", b, "123-45-6789", "Ann Lee").await;
    let ks = cols.keyring().store();
    for s in ["tenant:acme/patients", "tenant:globex/patients"] {
        let scope = coffer_core::ScopeId::new(s).unwrap();
        assert!(ks.active_dek(&scope).await.unwrap().is_some(), "{s}");
    }

    // The same SSN: different ciphertexts and different index terms.
    let (_, ct_a, ix_a) = raw(&db.pool, a).await;
    let (_, ct_b, ix_b) = raw(&db.pool, b).await;
    assert_ne!(ct_a, ct_b);
    assert_ne!(ix_a, ix_b);
    let qa = cols
        .for_scope(&[("tenant_id", "acme")])
        .unwrap()
        .search_eq("ssn_bidx", &["123456789"])
        .await
        .unwrap();
    let qb = cols
        .for_scope(&[("tenant_id", "globex")])
        .unwrap()
        .search_eq("ssn_bidx", &["123456789"])
        .await
        .unwrap();
    assert!(qa.terms().iter().all(|t| !qb.terms().contains(t)));

    // Each tenant's search finds its own row only, even without the tenant filter in SQL.
    assert_eq!(find(&cols, &db.pool, "acme", "123456789").await, vec![a]);
    assert_eq!(find(&cols, &db.pool, "globex", "123456789").await, vec![b]);
    let unfiltered: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM patients WHERE ssn_bidx = ANY($1)")
            .bind(qb.terms())
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(unfiltered, vec![b]);

    // A query across the tenants the caller names: one term per tenant (and version).
    let both = Search::merge([qa.clone(), qb.clone()]).unwrap();
    assert_eq!(both.terms().len(), qa.terms().len() + qb.terms().len());
    let mut found: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM patients WHERE ssn_bidx = ANY($1)")
            .bind(both.terms())
            .fetch_all(&db.pool)
            .await
            .unwrap();
    found.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(found, want);

    // A search without the tenant is refused, naming the missing filter.
    let e = cols
        .search_eq("ssn_bidx", &["123456789"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("tenant_id"), "{e}");
    let e = cols.search_prefix("name_prefix", "ann").await.unwrap_err();
    assert!(e.to_string().contains("tenant_id"), "{e}");

    // A value copied into another tenant's row fails; so does a row moved to another tenant.
    sqlx::query("UPDATE patients SET ssn = $1 WHERE id = $2")
        .bind(&ct_a)
        .bind(b)
        .execute(&db.pool)
        .await
        .unwrap();
    let (_, moved, _) = raw(&db.pool, b).await;
    let globex = cols.for_scope(&[("tenant_id", "globex")]).unwrap();
    let e = globex
        .open(
            "ssn",
            &b,
            &Encrypted::<String>::from_bytes(moved, coffer_postgres::Storage::Bytea).unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decrypt, "{e}");
    sqlx::query("UPDATE patients SET tenant_id = 'globex' WHERE id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    let (tenant, ct, _) = raw(&db.pool, a).await;
    let as_moved = cols.for_scope(&[("tenant_id", tenant.as_str())]).unwrap();
    let e = as_moved
        .open(
            "ssn",
            &a,
            &Encrypted::<String>::from_bytes(ct, coffer_postgres::Storage::Bytea).unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decrypt, "{e}");
    db.drop().await;
}

#[tokio::test]
async fn destroying_one_tenant_leaves_the_others_and_survives_a_key_store_restore() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("tombstones");
    let db = common::database().await;
    sqlx::raw_sql(TENANT_SQL).execute(&db.pool).await.unwrap();
    let kek = Kek::generate().unwrap();
    let config = coffer_keys::KeyringConfig {
        active_ttl: Duration::from_millis(100),
        audit_unwraps: false,
        tombstone_file: Some(ledger.clone()),
        ..coffer_keys::KeyringConfig::default()
    };
    let keyring = db.keyring_with(&kek, config.clone()).await;
    let table = Schema::from_toml(&tenant_toml(&[]))
        .unwrap()
        .table("patients")
        .unwrap();
    let cols = Columns::new(keyring.clone(), table.clone());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    insert(&cols, &db.pool, "acme", a, "111-11-1111", "Ann").await;
    insert(&cols, &db.pool, "globex", b, "222-22-2222", "Bob").await;

    // A backup of the key store, taken before the destroy.
    sqlx::raw_sql(
        "CREATE TABLE bk_scopes AS TABLE coffer_scopes; CREATE TABLE bk_deks AS TABLE coffer_deks;",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let acme_scope = table.resolve_scope(&[("tenant_id", "acme")]).unwrap();
    keyring.destroy(&acme_scope).await.unwrap();
    let e = open_acme(&cols, &db.pool, a).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Destroyed, "{e}");
    assert!(e.to_string().contains("destroyed"), "{e}");
    // The other tenant reads and searches as before.
    assert_eq!(find(&cols, &db.pool, "globex", "222222222").await, vec![b]);
    // A destroyed tenant is never created again by a write.
    let e = cols
        .for_scope(&[("tenant_id", "acme")])
        .unwrap()
        .row(&Uuid::new_v4())
        .set("ssn", "333")
        .unwrap()
        .seal()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Destroyed, "{e}");

    // Restore the key store from the backup; the ledger destroys acme again.
    sqlx::raw_sql(
        "DELETE FROM coffer_deks; DELETE FROM coffer_scopes; \
         INSERT INTO coffer_scopes SELECT * FROM bk_scopes; \
         INSERT INTO coffer_deks SELECT * FROM bk_deks;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let restored = db.keyring_with(&kek, config).await;
    let report = restored.apply_tombstones().await.unwrap();
    assert_eq!(report.reapplied, vec![acme_scope.as_str().to_owned()]);
    let cols = Columns::new(restored, table);
    let e = open_acme(&cols, &db.pool, a).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Destroyed, "{e}");
    assert_eq!(find(&cols, &db.pool, "globex", "222222222").await, vec![b]);
    db.drop().await;
}

#[tokio::test]
async fn scopes_are_created_on_first_write_only_when_the_table_says_so() {
    let (db, cols) = setup(&[("create_scopes", "false")]).await;
    let e = cols
        .for_scope(&[("tenant_id", "acme")])
        .unwrap()
        .row(&Uuid::new_v4())
        .set("ssn", "1")
        .unwrap()
        .seal()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("tenant:acme/patients"), "{e}");
    // Once created, writes go through.
    let scope = cols
        .table()
        .resolve_scope(&[("tenant_id", "acme")])
        .unwrap();
    cols.keyring().create_scope(&scope).await.unwrap();
    insert(&cols, &db.pool, "acme", Uuid::new_v4(), "1", "Al").await;
    db.drop().await;
}

#[test]
fn templates_that_cannot_work_are_refused_at_load_time() {
    let base = |scope: &str| {
        coffer_testkit::columns_schema::table("patients", scope)
            .column("ssn", "text", &[])
            .index("ssn_bidx", &["ssn"], 32, &[])
    };
    for (toml, why) in [
        (base("tenant:{ssn}/p").toml(), "names an encrypted column"),
        (base("tenant:{ssn_bidx}/p").toml(), "names a blind index"),
        (base("tenant:{key_version}/p").toml(), "the version column"),
        (base("tenant:{tenant id}/p").toml(), "must name a column"),
        (base("tenant:{a}{b}/p").toml(), "separator"),
        (
            base("t:{tenant_id}")
                .setting("keys", "\"row\"")
                .setting("row_key", "\"tenant_id\"")
                .toml(),
            "row-key column",
        ),
        (
            coffer_testkit::columns_schema::table("p", "t:{tenant_id}")
                .setting("keys", "\"row\"")
                .column("mrn", "text", &[("mode", "deterministic")])
                .toml(),
            // FIPS builds refuse the deterministic mode itself first.
            if cfg!(feature = "fips") {
                "FIPS"
            } else {
                "per-row key"
            },
        ),
        (
            base("t:x").setting("keys", "\"rows\"").toml(),
            "expected \"scope\" or \"row\"",
        ),
    ] {
        let e = Schema::from_toml(&toml)
            .unwrap()
            .tables()
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{toml}\n→ {e}");
    }
    // A value that cannot form a scope id is refused at write time, naming the column.
    let t = Schema::from_toml(&base("tenant:{tenant_id}/p").toml())
        .unwrap()
        .table("patients")
        .unwrap();
    let e = t
        .resolve_scope(&[("tenant_id", "acme/../globex")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tenant_id") && e.contains("cannot be part of a scope id"),
        "{e}"
    );
}

#[tokio::test]
async fn erasing_a_row_key_shreds_that_row_and_no_other() {
    let (db, cols) = setup(&[("keys", "\"row\"")]).await;
    sqlx::raw_sql("ALTER TABLE patients ADD COLUMN row_key bytea")
        .execute(&db.pool)
        .await
        .unwrap();
    let acme = cols.for_scope(&[("tenant_id", "acme")]).unwrap();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for (i, id) in ids.iter().enumerate() {
        let row = acme
            .row(id)
            .set("ssn", &format!("00{i}-00-0000"))
            .unwrap()
            .set("name", "Ann")
            .unwrap()
            .seal()
            .await
            .unwrap();
        let rk = row.row_key().expect("a fresh row key").to_vec();
        // Values under a row key name version 0, never a version of the scope.
        assert_eq!(
            row.value("ssn").unwrap().version(),
            Some(coffer_postgres::ROW_KEY_VERSION)
        );
        sqlx::query(
            "INSERT INTO patients (id, tenant_id, ssn, ssn_bidx, name, name_prefix, key_version, row_key) \
             VALUES ($1, 'acme', $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(row.value("ssn").unwrap())
        .bind(row.index("ssn_bidx").unwrap())
        .bind(row.value("name").unwrap())
        .bind(row.index("name_prefix").unwrap())
        .bind(row.version())
        .bind(&rk)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    // Another row's key does not open a row's values; the scope's key alone does not either.
    let read = |id: Uuid| {
        let pool = db.pool.clone();
        async move {
            let r: (Encrypted<String>, Option<Vec<u8>>) =
                sqlx::query_as("SELECT ssn, row_key FROM patients WHERE id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            r
        }
    };
    let (ssn0, rk0) = read(ids[0]).await;
    let (_, rk1) = read(ids[1]).await;
    assert_eq!(
        acme.open_keyed("ssn", &ids[0], rk0.as_deref(), &ssn0)
            .await
            .unwrap(),
        "000-00-0000"
    );
    let e = acme
        .open_keyed("ssn", &ids[0], rk1.as_deref(), &ssn0)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decrypt, "{e}");
    let e = acme.open("ssn", &ids[0], &ssn0).await.unwrap_err();
    assert!(e.to_string().contains("open_keyed"), "{e}");

    // An update keeps the row's key.
    let row = acme
        .row(&ids[2])
        .with_row_key(read(ids[2]).await.1.as_deref().unwrap())
        .set("ssn", "999-99-9999")
        .unwrap()
        .seal()
        .await
        .unwrap();
    assert_eq!(row.row_key(), read(ids[2]).await.1.as_deref());

    // Erase row 1's key: row 1 is shredded, rows 0 and 2 open.
    sqlx::query("UPDATE patients SET row_key = NULL WHERE id = $1")
        .bind(ids[1])
        .execute(&db.pool)
        .await
        .unwrap();
    let (ssn1, rk1) = read(ids[1]).await;
    let e = acme
        .open_keyed("ssn", &ids[1], rk1.as_deref(), &ssn1)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Destroyed, "{e}");
    assert!(e.to_string().contains("shredded"), "{e}");
    for i in [0, 2] {
        let (ssn, rk) = read(ids[i]).await;
        assert_eq!(
            acme.open_keyed("ssn", &ids[i], rk.as_deref(), &ssn)
                .await
                .unwrap(),
            format!("00{i}-00-0000")
        );
    }
    // Search still works: blind indexes stay under the scope's key.
    assert_eq!(find_keyed(&acme, &db.pool, "002000000").await, vec![ids[2]]);
    db.drop().await;
}

async fn find_keyed(t: &Columns, pool: &PgPool, ssn: &str) -> Vec<Uuid> {
    let q = t.search_eq("ssn_bidx", &[ssn]).await.unwrap();
    let rows: Vec<(Uuid, Encrypted<String>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT id, ssn, row_key FROM patients WHERE tenant_id = 'acme' AND ssn_bidx = ANY($1)",
    )
    .bind(q.terms())
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for (id, v, rk) in rows {
        let plain = t.open_keyed("ssn", &id, rk.as_deref(), &v).await.unwrap();
        if q.matches(&[plain.as_str()]) {
            out.push(id);
        }
    }
    out
}
