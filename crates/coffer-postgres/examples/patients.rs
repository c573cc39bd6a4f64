//! Encrypted patient records in PostgreSQL, from schema to search to key rotation
//! (docs/COLUMNS.md walks through it).
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run -p coffer-postgres --example patients
//! ```
//!
//! It creates the table `example_patients` (dropping an earlier one) and keeps the key store in
//! the same database. Its keyring comes from a coffer.toml, as an application's does
//! (docs/KEYS.md): the example writes one in `.coffer-example/` (COFFER_EXAMPLE_DIR to choose
//! another directory), naming a KEK file beside it that is generated on the first run and
//! reused after, since the key store refuses a KEK other than the one it registered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coffer_postgres::reencrypt::retirable;
use coffer_postgres::{Columns, Encrypted, ReencryptOptions, Reencryptor, Schema};
use sqlx::PgPool;
use uuid::Uuid;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The declarative part: what is encrypted, how, and how it is searched. Applications
/// usually keep this in coffer-columns.toml, which `coffer reencrypt` reads too.
const SCHEMA: &str = r#"
[[table]]
name = "example_patients"
scope = "table:patients"

[[table.column]]
name = "ssn"
type = "text"

[[table.column]]
name = "mrn"
type = "text"
mode = "deterministic"      # equality on the ciphertext itself

[[table.column]]
name = "diagnoses"
type = "json"

[[table.column]]
name = "email"
type = "text"
storage = "text"

[[table.column]]
name = "notes"
type = "text"
storage = "text"
nulls = "authenticated"     # an SQL NULL written without the key is an error on read

[[table.index]]
name = "ssn_bidx"
columns = ["ssn"]
bits = 24                   # `coffer index plan --rows 5000000 --distinct 5000000`
normalize = ["digits"]

[[table.index]]
name = "email_prefix"
columns = ["email"]
bits = 32
normalize = ["trim", "casefold"]
prefix = [3, 8]
"#;

const DDL: &str = "
DROP TABLE IF EXISTS example_patients;
CREATE TABLE example_patients (
    id           uuid PRIMARY KEY,
    ssn          bytea,
    ssn_bidx     bytea,
    mrn          bytea,
    diagnoses    bytea,
    email        text,
    email_prefix bytea[],
    notes        text,
    key_version  int NOT NULL
);
CREATE INDEX ON example_patients (ssn_bidx);
CREATE INDEX ON example_patients (mrn);
CREATE INDEX ON example_patients USING gin (email_prefix);
";

struct Patient {
    ssn: &'static str,
    mrn: &'static str,
    diagnoses: serde_json::Value,
    email: &'static str,
    notes: Option<&'static str>,
}

async fn insert(patients: &Columns, pool: &PgPool, p: &Patient) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    let row = patients
        .row(&id)
        .set("ssn", p.ssn)?
        .set("mrn", p.mrn)?
        .set("diagnoses", &p.diagnoses)?
        .set("email", p.email)?
        .set_opt("notes", p.notes)?
        .seal()
        .await?;
    sqlx::query(
        "INSERT INTO example_patients
           (id, ssn, ssn_bidx, mrn, diagnoses, email, email_prefix, notes, key_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(row.value("ssn")?)
    .bind(row.index("ssn_bidx")?)
    .bind(row.value("mrn")?)
    .bind(row.value("diagnoses")?)
    .bind(row.value("email")?)
    .bind(row.index("email_prefix")?)
    .bind(row.value("notes")?)
    .bind(row.version())
    .execute(pool)
    .await?;
    Ok(id)
}

/// Patients whose SSN is `ssn` (any formatting): index candidates, confirmed by decryption.
async fn find_by_ssn(patients: &Columns, pool: &PgPool, ssn: &str) -> Result<Vec<Uuid>, Error> {
    let q = patients.search_eq("ssn_bidx", &[ssn]).await?;
    let candidates: Vec<(Uuid, Encrypted<String>)> =
        sqlx::query_as("SELECT id, ssn FROM example_patients WHERE ssn_bidx = ANY($1)")
            .bind(q.terms())
            .fetch_all(pool)
            .await?;
    let mut found = Vec::new();
    for (id, stored) in candidates {
        if q.matches(&[patients.open("ssn", &id, &stored).await?.as_str()]) {
            found.push(id);
        }
    }
    Ok(found)
}

/// Patients whose e-mail starts with `prefix` (LIKE 'prefix%', case-insensitive).
async fn find_by_email_prefix(
    patients: &Columns,
    pool: &PgPool,
    prefix: &str,
) -> Result<Vec<String>, Error> {
    let q = patients.search_prefix("email_prefix", prefix).await?;
    let candidates: Vec<(Uuid, Encrypted<String>)> =
        sqlx::query_as("SELECT id, email FROM example_patients WHERE email_prefix && $1")
            .bind(q.terms())
            .fetch_all(pool)
            .await?;
    let mut found = Vec::new();
    for (id, stored) in candidates {
        let email = patients.open("email", &id, &stored).await?;
        if q.matches(&[email.as_str()]) {
            found.push(email);
        }
    }
    found.sort();
    Ok(found)
}

/// Writes `dir`/coffer.toml for the key store at `url`, under the KEK in `dir`/example.key
/// (created with mode 0600 when missing, as `coffer keygen --out` does; kept otherwise).
fn write_config(dir: &Path, url: &str) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir)?;
    let key = std::path::absolute(dir.join("example.key"))?;
    coffer_keys::source::create_key_file(&key)?;
    let config = dir.join("coffer.toml");
    let toml = format!(
        r#"[store]
url = "{url}"

[[kek]]
name = "example"
version = 1
source = "file:{key}"
primary = true

[cache]
active_ttl = "200ms"
"#,
        key = key.display()
    );
    std::fs::write(&config, toml)?;
    Ok(config)
}

/// The whole walk-through against the database at `url`, with coffer.toml and the KEK file in
/// `dir`.
pub async fn run(url: &str, dir: &Path) -> Result<(), Error> {
    let pool = PgPool::connect(url).await?;
    sqlx::raw_sql(DDL).execute(&pool).await?;

    // Keys: a KEK (here a local one) wraps the scope's DEK versions, kept in a key store; both
    // are named in coffer.toml, and one call opens them.
    let keyring = coffer_assembly::keyring_from_file(write_config(dir, url)?).await?;

    let schema = Schema::from_toml(SCHEMA)?;
    let table = schema.table("example_patients")?;
    keyring.ensure_scope(table.scope()?).await?;
    let patients = Columns::new(keyring.clone(), table);

    // 1. Write.
    let people = [
        Patient {
            ssn: "123-45-6789",
            mrn: "MRN-0001",
            diagnoses: serde_json::json!(["E11.9", "I10"]),
            email: "Ann.Lee@example.org",
            notes: Some("allergic to penicillin"),
        },
        Patient {
            ssn: "987-65-4321",
            mrn: "MRN-0002",
            diagnoses: serde_json::json!(["J45.909"]),
            email: "anna.kim@example.org",
            notes: None,
        },
        Patient {
            ssn: "555-12-3456",
            mrn: "MRN-0003",
            diagnoses: serde_json::json!([]),
            email: "bob@example.org",
            notes: Some("prefers mornings"),
        },
    ];
    let mut ids = Vec::new();
    for p in &people {
        ids.push(insert(&patients, &pool, p).await?);
    }
    println!("inserted {} patients", ids.len());

    // 2. Read: typed values, opened with the row id.
    type Row = (
        Encrypted<String>,
        Encrypted<serde_json::Value>,
        Option<Encrypted<String>>,
    );
    let (ssn, diagnoses, notes): Row =
        sqlx::query_as("SELECT ssn, diagnoses, notes FROM example_patients WHERE id = $1")
            .bind(ids[1])
            .fetch_one(&pool)
            .await?;
    let ssn = patients.open("ssn", &ids[1], &ssn).await?;
    let diagnoses = patients.open("diagnoses", &ids[1], &diagnoses).await?;
    let notes = patients.open_opt("notes", &ids[1], notes.as_ref()).await?;
    println!("patient 2: ssn {ssn}, diagnoses {diagnoses}, notes {notes:?}");
    assert_eq!(notes, None);

    // 3. Search: equality (blind index), deterministic equality, prefix.
    let hits = find_by_ssn(&patients, &pool, "123456789").await?;
    println!("ssn 123456789 → {} patient(s)", hits.len());
    assert_eq!(hits, vec![ids[0]]);
    let mrn = patients.search_deterministic("mrn", "MRN-0003").await?;
    let by_mrn: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM example_patients WHERE mrn = ANY($1)")
            .bind(mrn.terms())
            .fetch_all(&pool)
            .await?;
    assert_eq!(by_mrn, vec![ids[2]]);
    let emails = find_by_email_prefix(&patients, &pool, "ANN").await?;
    println!("emails starting with 'ann': {emails:?}");
    assert_eq!(emails, ["Ann.Lee@example.org", "anna.kim@example.org"]);

    // 4. Rotate the key: new writes use the new version at once; reads and searches span both
    //    (v1 and v2 on the first run).
    let active = keyring.rotate(patients.table().scope()?).await?.version.0;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let late = insert(
        &patients,
        &pool,
        &Patient {
            ssn: "123-45-6789",
            mrn: "MRN-0004",
            diagnoses: serde_json::json!(["Z00.00"]),
            email: "annie@example.org",
            notes: None,
        },
    )
    .await?;
    let hits = find_by_ssn(&patients, &pool, "123-45-6789").await?;
    println!(
        "after rotation, ssn 123-45-6789 → {} patient(s) across v{} and v{active}",
        hits.len(),
        active - 1
    );
    assert_eq!(hits.len(), 2);
    assert!(hits.contains(&ids[0]) && hits.contains(&late));

    // 5. Re-encrypt the old rows (what `coffer reencrypt` does), then retire the old version.
    let job = Reencryptor::new(patients.clone(), pool.clone(), ReencryptOptions::default());
    let report = job.run(|_| {}).await?;
    let census = job.census().await?;
    println!(
        "re-encrypted {} rows; values by key version: {:?}",
        report.rows, census.values_by_version
    );
    assert_eq!(
        census.values_by_version.keys().copied().collect::<Vec<_>>(),
        vec![active]
    );
    tokio::time::sleep(keyring.retire_grace()).await;
    let retired = retirable(std::slice::from_ref(&job), true).await?;
    println!("retired {retired:?}");
    assert_eq!(
        find_by_email_prefix(&patients, &pool, "ann").await?.len(),
        3
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let dir = std::env::var_os("COFFER_EXAMPLE_DIR").unwrap_or_else(|| ".coffer-example".into());
    run(&url, Path::new(&dir)).await
}
