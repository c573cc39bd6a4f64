//! Two clinics in one table, and erasing one patient (docs/COLUMNS.md §7 walks through it).
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run -p coffer-postgres --example tenants
//! ```
//!
//! Each clinic's patients are sealed under the clinic's own scope (`clinic:{clinic}/patients`),
//! and each patient's visit notes under a scope of the patient's own
//! (`clinic:{clinic}/patient:{patient_id}`), so offboarding a clinic or erasing a patient is
//! one destroy. It creates the tables `example_clinic_patients` and `example_visit_notes`
//! (dropping earlier ones) and keeps the key store in the same database; the keyring comes from
//! a coffer.toml written in `.coffer-example-tenants/` (COFFER_EXAMPLE_DIR to choose another).

use std::path::{Path, PathBuf};

use coffer_postgres::{Columns, Encrypted, Schema, Search};
use sqlx::PgPool;
use uuid::Uuid;

type Error = Box<dyn std::error::Error + Send + Sync>;

const SCHEMA: &str = r#"
[[table]]
name = "example_clinic_patients"
scope = "clinic:{clinic}/patients"      # one scope per clinic, created on its first write

[[table.column]]
name = "ssn"
type = "text"

[[table.index]]
name = "ssn_bidx"
columns = ["ssn"]
bits = 32
normalize = ["digits"]

[[table]]
name = "example_visit_notes"
scope = "clinic:{clinic}/patient:{patient_id}"   # one scope per patient: erasable alone

[[table.column]]
name = "note"
type = "text"
"#;

const DDL: &str = "
DROP TABLE IF EXISTS example_clinic_patients, example_visit_notes;
CREATE TABLE example_clinic_patients (
    id          uuid PRIMARY KEY,
    clinic      text NOT NULL,
    ssn         bytea,
    ssn_bidx    bytea,
    key_version int NOT NULL
);
CREATE INDEX ON example_clinic_patients (clinic, ssn_bidx);
CREATE TABLE example_visit_notes (
    id          uuid PRIMARY KEY,
    clinic      text NOT NULL,
    patient_id  uuid NOT NULL,
    note        bytea,
    key_version int NOT NULL
);";

async fn add_patient(
    patients: &Columns,
    pool: &PgPool,
    clinic: &str,
    ssn: &str,
) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    let row = patients
        .for_scope(&[("clinic", clinic)])?
        .row(&id)
        .set("ssn", ssn)?
        .seal()
        .await?;
    sqlx::query(
        "INSERT INTO example_clinic_patients (id, clinic, ssn, ssn_bidx, key_version) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(clinic)
    .bind(row.value("ssn")?)
    .bind(row.index("ssn_bidx")?)
    .bind(row.version())
    .execute(pool)
    .await?;
    Ok(id)
}

/// The clinic's patients with this SSN: the search is computed under the clinic's scope, and
/// the query filters on the clinic too.
async fn find(
    patients: &Columns,
    pool: &PgPool,
    clinic: &str,
    ssn: &str,
) -> Result<Vec<Uuid>, Error> {
    let clinic_cols = patients.for_scope(&[("clinic", clinic)])?;
    let q = clinic_cols.search_eq("ssn_bidx", &[ssn]).await?;
    let rows: Vec<(Uuid, Encrypted<String>)> = sqlx::query_as(
        "SELECT id, ssn FROM example_clinic_patients WHERE clinic = $1 AND ssn_bidx = ANY($2)",
    )
    .bind(clinic)
    .bind(q.terms())
    .fetch_all(pool)
    .await?;
    let mut found = Vec::new();
    for (id, ssn) in rows {
        if q.matches(&[clinic_cols.open("ssn", &id, &ssn).await?.as_str()]) {
            found.push(id);
        }
    }
    Ok(found)
}

async fn add_note(
    notes: &Columns,
    pool: &PgPool,
    clinic: &str,
    patient: Uuid,
    text: &str,
) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    let patient_id = patient.to_string();
    let row = notes
        .for_scope(&[("clinic", clinic), ("patient_id", &patient_id)])?
        .row(&id)
        .set("note", text)?
        .seal()
        .await?;
    sqlx::query(
        "INSERT INTO example_visit_notes (id, clinic, patient_id, note, key_version) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(clinic)
    .bind(patient)
    .bind(row.value("note")?)
    .bind(row.version())
    .execute(pool)
    .await?;
    Ok(id)
}

async fn read_note(notes: &Columns, pool: &PgPool, id: Uuid) -> Result<String, Error> {
    let (clinic, patient, note): (String, Uuid, Encrypted<String>) =
        sqlx::query_as("SELECT clinic, patient_id, note FROM example_visit_notes WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let patient_id = patient.to_string();
    let cols = notes.for_scope(&[("clinic", clinic.as_str()), ("patient_id", &patient_id)])?;
    Ok(cols.open("note", &id, &note).await?)
}

/// The error of a step that must fail: the example checks what it shows.
fn must_fail<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> Result<String, Error> {
    match result {
        Ok(_) => Err(format!("{what} should have been refused").into()),
        Err(e) => Ok(e.to_string()),
    }
}

fn write_config(dir: &Path, url: &str) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir)?;
    let key = std::path::absolute(dir.join("example.key"))?;
    coffer_keys::source::create_key_file(&key)?;
    let config = dir.join("coffer.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{url}\"\n\n[[kek]]\nname = \"example\"\nversion = 1\nsource = \"file:{}\"\nprimary = true\n",
            key.display()
        ),
    )?;
    Ok(config)
}

/// The walk-through against the database at `url`, with coffer.toml and the KEK file in `dir`.
pub async fn run(url: &str, dir: &Path) -> Result<(), Error> {
    let pool = PgPool::connect(url).await?;
    sqlx::raw_sql(DDL).execute(&pool).await?;
    let keyring = coffer_assembly::keyring_from_file(write_config(dir, url)?).await?;
    let schema = Schema::from_toml(SCHEMA)?;
    let patients = Columns::new(keyring.clone(), schema.table("example_clinic_patients")?);
    let notes = Columns::new(keyring.clone(), schema.table("example_visit_notes")?);
    // A run on an earlier run's key store: the clinics' and patients' scopes of that run stay
    // as they were, so each run uses clinics of its own.
    let run = &Uuid::new_v4().simple().to_string()[..8];
    let (north, south) = (format!("north-{run}"), format!("south-{run}"));

    // The same SSN at two clinics: unrelated ciphertexts and index terms; each clinic finds
    // only its own patient.
    let n1 = add_patient(&patients, &pool, &north, "123-45-6789").await?;
    let s1 = add_patient(&patients, &pool, &south, "123-45-6789").await?;
    assert_eq!(find(&patients, &pool, &north, "123456789").await?, vec![n1]);
    assert_eq!(find(&patients, &pool, &south, "123456789").await?, vec![s1]);
    println!("the same SSN at {north} and {south}: each clinic's search finds its own patient");

    // A search across the clinics a caller names: one term per clinic.
    let both = Search::merge([
        patients
            .for_scope(&[("clinic", &north)])?
            .search_eq("ssn_bidx", &["123456789"])
            .await?,
        patients
            .for_scope(&[("clinic", &south)])?
            .search_eq("ssn_bidx", &["123456789"])
            .await?,
    ])?;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM example_clinic_patients WHERE ssn_bidx = ANY($1)")
            .bind(both.terms())
            .fetch_one(&pool)
            .await?;
    assert_eq!(n, 2);

    // Searching without naming the clinic is refused, with the column to filter on.
    let refused = must_fail(
        patients.search_eq("ssn_bidx", &["123456789"]).await,
        "a search without the clinic",
    )?;
    println!("without a clinic: {refused}");

    // Erase one patient: destroy the patient's scope. Their notes are shredded, in every
    // backup of the table too; the clinic's other patients are untouched. (The patient's row
    // in example_clinic_patients is deleted, but an old backup of that table still holds their
    // SSN under the clinic's key: what must be erasable goes under the patient's scope.)
    let n2 = add_patient(&patients, &pool, &north, "987-65-4321").await?;
    let note1 = add_note(&notes, &pool, &north, n1, "first visit").await?;
    let note2 = add_note(&notes, &pool, &north, n2, "follow-up").await?;
    let subject = notes
        .table()
        .resolve_scope(&[("clinic", &north), ("patient_id", &n1.to_string())])?;
    keyring.destroy(&subject).await?;
    sqlx::query("DELETE FROM example_clinic_patients WHERE id = $1")
        .bind(n1)
        .execute(&pool)
        .await?;
    let gone = must_fail(
        read_note(&notes, &pool, note1).await,
        "an erased patient's note",
    )?;
    println!("erased {subject}: {gone}");
    assert_eq!(read_note(&notes, &pool, note2).await?, "follow-up");

    // Offboard a clinic: destroy its scope; the other clinic reads and searches as before.
    let south_scope = patients.table().resolve_scope(&[("clinic", &south)])?;
    keyring.destroy(&south_scope).await?;
    let offboarded = must_fail(
        find(&patients, &pool, &south, "123456789").await,
        "an offboarded clinic's search",
    )?;
    println!("offboarded {south}: {offboarded}");
    assert_eq!(find(&patients, &pool, &north, "987654321").await?, vec![n2]);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let dir =
        std::env::var_os("COFFER_EXAMPLE_DIR").unwrap_or_else(|| ".coffer-example-tenants".into());
    run(&url, Path::new(&dir)).await
}
