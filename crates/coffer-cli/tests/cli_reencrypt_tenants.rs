//! `coffer reencrypt` on a table with a scope template (docs/COLUMNS.md §4, §7), on PostgreSQL:
//! the status lists the scopes with pending rows (capped) and counts destroyed ones, a run
//! migrates every tenant into its own scope, a rotated tenant moves alone, `--scope` restricts
//! the job (and its retirement) to one scope.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use coffer_testkit::pg::TestDb;
use coffer_testkit::psql::psql;
use common::{coffer, keys, ok, output};

const TENANTS: i64 = 25;
const PER_TENANT: i64 = 4;

fn schema() -> String {
    coffer_testkit::columns_schema::table("patients", "tenant:{tenant_id}/patients")
        .column("ssn", "text", &[("migrate_from", "ssn_plain")])
        .index("ssn_bidx", &["ssn"], 20, &["digits"])
        .toml()
}

fn reencrypt(d: &Path, url: &str, key: &str, args: &[&str]) -> Command {
    let mut cmd = coffer();
    cmd.current_dir(d)
        .arg("reencrypt")
        .args(args)
        .env("DATABASE_URL", url)
        .env("COFFER_KEK", key)
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_COLUMNS")
        .env_remove("COFFER_STORE_URL")
        .env_remove("COFFER_REDIS_URL")
        .stdin(Stdio::null());
    cmd
}

fn count(url: &str, sql: &str) -> i64 {
    psql(url, sql).parse().unwrap()
}

#[test]
fn reencrypt_walks_every_tenant_and_scope_restricts_it_to_one() {
    let db = TestDb::new("coffer_reenc_tn");
    let url = db.url().to_owned();
    psql(
        &url,
        &format!(
            "CREATE TABLE patients (id bigint PRIMARY KEY, tenant_id text NOT NULL, ssn_plain text,
                ssn bytea, ssn_bidx bytea, key_version int);
             CREATE INDEX ON patients (tenant_id);
             INSERT INTO patients (id, tenant_id, ssn_plain)
             SELECT g, 't' || lpad((g % {TENANTS})::text, 2, '0'), lpad((g * 7919)::text, 9, '0')
             FROM generate_series(1, {}) g;",
            TENANTS * PER_TENANT
        ),
    );
    let store = common::KeyStoreDir::init();
    let (d, env, key) = (store.path(), store.env(), store.kek.as_str());
    let toml = std::fs::read_to_string(d.join("coffer.toml")).unwrap();
    std::fs::write(
        d.join("coffer.toml"),
        toml.replace("active_ttl = \"5s\"", "active_ttl = \"500ms\""),
    )
    .unwrap();
    std::fs::write(d.join("coffer-columns.toml"), schema()).unwrap();
    let all = TENANTS * PER_TENANT;

    // 1. Status before the migration: every tenant pending, its scope made by the job; the
    //    listing stops at 20 scopes and counts the rest.
    let st = output(reencrypt(d, &url, key, &["--status"]), None);
    st.success();
    let text = st.stdout_str();
    assert!(
        text.contains(&format!(
            "patients: scope template tenant:{{tenant_id}}/patients, {TENANTS} scopes; {all} rows pending in {TENANTS} scopes"
        )) && text.contains(&format!("plaintext left: {all}")),
        "{text}"
    );
    assert!(
        text.contains("  tenant:t00/patients: new scope (made by the job); 4 of 4 rows pending"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("  tenant:")).count(),
        20,
        "{text}"
    );
    assert!(
        text.contains("… and 5 more scopes with pending rows"),
        "{text}"
    );

    // 2. The migration: every tenant's rows sealed under its own new scope.
    let out = output(reencrypt(d, &url, key, &["--batch-size", "7"]), None);
    out.success();
    let text = out.stdout_str();
    assert!(
        text.contains(&format!(
            "patients: {all} rows moved to the active version of each of {TENANTS} scopes ({all} from plaintext)"
        )),
        "{text}"
    );
    assert!(text.contains("retired scope by scope"), "{text}");
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM patients WHERE key_version = 1 AND ssn IS NOT NULL"
        ),
        all
    );
    let list = ok(&keys(d, &["list"], &env));
    assert!(list.contains("tenant:t24/patients"), "{list}");

    // 3. Rotate one tenant, destroy another: only the rotated tenant is pending; the destroyed
    //    one is counted and left as it is.
    ok(&keys(d, &["rotate", "tenant:t03/patients"], &env));
    ok(&keys(d, &["destroy", "tenant:t07/patients", "--yes"], &env));
    let st = output(reencrypt(d, &url, key, &["--status"]), None);
    st.success();
    let text = st.stdout_str();
    assert!(
        text.contains(&format!("{PER_TENANT} rows pending in 1 scopes"))
            && text.contains("  tenant:t03/patients: active v2; 4 of 4 rows pending")
            && text.contains("patients: destroyed: 1 scopes, 4 rows left as they are"),
        "{text}"
    );
    let other = psql(
        &url,
        "SELECT md5(string_agg(ssn::text || ssn_bidx::text, ',' ORDER BY id)) FROM patients WHERE tenant_id <> 't03'",
    );

    // 4. --scope: one tenant's rows only, then its v1 retired (after the writers' grace).
    let out = output(
        reencrypt(
            d,
            &url,
            key,
            &["--table", "patients", "--scope", "tenant:t03/patients"],
        ),
        None,
    );
    out.success();
    assert!(
        out.stdout_str().contains("patients: 4 rows moved to v2"),
        "{}",
        out.stdout_str()
    );
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM patients WHERE tenant_id = 't03' AND key_version = 2"
        ),
        PER_TENANT
    );
    assert_eq!(
        psql(
            &url,
            "SELECT md5(string_agg(ssn::text || ssn_bidx::text, ',' ORDER BY id)) FROM patients WHERE tenant_id <> 't03'",
        ),
        other
    );
    std::thread::sleep(Duration::from_millis(1100));
    let out = output(
        reencrypt(
            d,
            &url,
            key,
            &["--scope", "tenant:t03/patients", "--retire"],
        ),
        None,
    );
    out.success();
    assert!(
        out.stdout_str()
            .contains("scope tenant:t03/patients: retired v1"),
        "{}",
        out.stdout_str()
    );

    // 5. The whole table again: nothing left to move; the destroyed tenant is reported.
    let out = output(reencrypt(d, &url, key, &[]), None);
    out.success();
    let text = out.stdout_str();
    assert!(
        text.contains("patients: 0 rows moved")
            && text.contains("patients: destroyed: 1 scopes, 4 rows left as they are"),
        "{text}"
    );

    // 6. A scope no table's template fits is a usage error.
    let out = output(
        reencrypt(d, &url, key, &["--scope", "tenant:t03/visits"]),
        None,
    );
    out.fails(2, "no table of the schema has that scope");
}
