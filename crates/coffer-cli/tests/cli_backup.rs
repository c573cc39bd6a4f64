//! `coffer backup` and `coffer restore` end to end: the real binary, real pg_dump and pg_restore,
//! the PostgreSQL of scripts/services-up.sh (127.0.0.1:5432, user postgres, trust), databases
//! created and dropped per test; and the disaster-recovery path through the AWS Encryption SDK
//! for Python (tools/dr_decrypt.py).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use coffer_testkit::pg;
use coffer_testkit::process::output_of;
use common::{Out, coffer};

const KEK_VAR: &str = "COFFER_BACKUP_TEST_KEK";
const RECOVERY_VAR: &str = "COFFER_BACKUP_TEST_RECOVERY";

/// libpq settings for coffer's children and for the helpers here.
const PG_ENV: [(&str, &str); 2] = [("PGHOST", "127.0.0.1"), ("PGUSER", "postgres")];

/// Runs `sql` in database `db` of the test server.
fn psql(db: &str, sql: &str) -> String {
    coffer_testkit::psql::psql(&pg::with_database(&pg::admin_url(), db), sql)
}

/// A database of its own, dropped when the test ends.
struct Db(pg::TestDb);

impl Db {
    fn new(tag: &str) -> Db {
        Db(pg::TestDb::new(&format!("coffer_bk_{tag}")))
    }

    fn name(&self) -> &str {
        self.0.name()
    }

    /// The tables of the public schema.
    fn tables(&self) -> Vec<String> {
        let list = psql(
            self.name(),
            "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables \
             WHERE schemaname = 'public'",
        );
        list.split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Every table with a checksum over all its rows in id order.
    fn checksums(&self) -> Vec<(String, String)> {
        self.tables()
            .into_iter()
            .map(|t| {
                let sum = psql(
                    self.name(),
                    &format!(
                        "SELECT count(*) || ':' || md5(string_agg(md5(x::text), '' ORDER BY id)) \
                         FROM {t} x"
                    ),
                );
                (t, sum)
            })
            .collect()
    }
}

/// A small database: several types, NULLs, a sequence, an index, a foreign key; ~1.5 MB of dump.
fn small_db(tag: &str) -> Db {
    let db = Db::new(tag);
    psql(
        db.name(),
        "CREATE TABLE patients (id bigserial PRIMARY KEY, name text NOT NULL, born date,
                                scan bytea, score numeric(10,3), seen timestamptz);
         CREATE TABLE visits (id bigserial PRIMARY KEY,
                              patient bigint NOT NULL REFERENCES patients(id), note text);
         CREATE INDEX ON visits (patient);
         INSERT INTO patients (name, born, scan, score, seen)
           SELECT 'patient ' || g || ' ' || md5(g::text),
                  date '1950-01-01' + (g * 37 % 20000),
                  CASE WHEN g % 7 = 0 THEN NULL
                       ELSE decode(md5(g::text) || md5((g * 3)::text), 'hex') END,
                  (g * 1.618) % 1000,
                  timestamptz '2026-01-01 00:00:00+00' + g * interval '17 minutes'
           FROM generate_series(1, 8000) g;
         INSERT INTO visits (patient, note)
           SELECT 1 + g % 8000, repeat(md5((g * 11)::text), 1 + g % 5)
           FROM generate_series(1, 12000) g;",
    );
    db
}

struct Keys {
    kek: String,
    recovery: String,
}

impl Keys {
    fn new() -> Keys {
        let k = || {
            coffer_core::Kek::generate()
                .unwrap()
                .to_base64()
                .to_string()
        };
        Keys {
            kek: k(),
            recovery: k(),
        }
    }
}

fn run(args: &[&str], keys: &Keys) -> Out {
    let mut cmd = coffer();
    cmd.args(args)
        .envs(PG_ENV)
        .env(KEK_VAR, &keys.kek)
        .env(RECOVERY_VAR, &keys.recovery);
    common::output(cmd, None)
}

/// `coffer backup` of `db` into `dir` with the recovery key too; the backup's path.
fn backup(db: &Db, dir: &Path, keys: &Keys, extra: &[&str]) -> PathBuf {
    backup_sized(db, dir, keys, extra).0
}

/// [`backup`], also returning the dump's size as coffer reports it.
fn backup_sized(db: &Db, dir: &Path, keys: &Keys, extra: &[&str]) -> (PathBuf, u64) {
    let kek = format!("env:{KEK_VAR}");
    let recovery = format!("env:{RECOVERY_VAR}");
    let mut args = vec![
        "backup",
        "--dbname",
        db.name(),
        "-o",
        dir.to_str().unwrap(),
        "--kek",
        &kek,
        "--recovery-kek",
        &recovery,
    ];
    args.extend_from_slice(extra);
    let out = run(&args, keys);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let path = out
        .stdout_str()
        .lines()
        .find_map(|l| l.strip_prefix("path: "))
        .unwrap_or_else(|| panic!("no path in {}", out.stdout_str()));
    // "dump: 212.4 MiB (222703104 bytes)"
    let dump = out
        .stdout_str()
        .lines()
        .find_map(|l| l.strip_prefix("dump: "))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dump size in {}", out.stdout_str()));
    (PathBuf::from(path), dump)
}

fn restore(backup: &Path, keys: &Keys, extra: &[&str]) -> Out {
    let kek = format!("env:{KEK_VAR}");
    let mut args = vec!["restore", backup.to_str().unwrap(), "--kek", &kek];
    args.extend_from_slice(extra);
    run(&args, keys)
}

fn parts(backup: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(backup)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("part-"))
        .collect();
    names.sort();
    names
}

/// A copy of a backup directory to damage.
fn copy_of(backup: &Path, to: &Path) -> PathBuf {
    let dst = to.join(backup.file_name().unwrap());
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(backup).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

#[test]
fn custom_format_round_trips_in_many_parts() {
    let src = small_db("src");
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let b = backup(&src, dir.path(), &keys, &["--part-size", "64KiB"]);
    let names = parts(&b);
    assert!(names.len() >= 5, "{names:?}");
    // Only the finished backup is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let dst = Db::new("dst");
    let out = restore(&b, &keys, &["--dbname", dst.name()]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(out.stdout_str().starts_with("restored: backup "));
    assert_eq!(dst.checksums(), src.checksums());
    assert_eq!(dst.tables(), ["patients", "visits"]);

    // The recovery key opens it too, and -o writes the plain dump pg_restore reads.
    let recovery = Keys {
        kek: keys.recovery.clone(),
        recovery: String::new(),
    };
    let plain = dir.path().join("plain.dump");
    let out = restore(&b, &recovery, &["-o", plain.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let list = Command::new("pg_restore")
        .arg("--list")
        .arg(&plain)
        .output()
        .unwrap();
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("TABLE DATA public patients"));
    let out = restore(&b, &recovery, &["--verify-only"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(out.stdout_str().starts_with("verified: backup "));
}

#[test]
fn directory_format_round_trips_with_parallel_jobs() {
    let src = small_db("src");
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let b = backup(
        &src,
        dir.path(),
        &keys,
        &[
            "--format",
            "directory",
            "--jobs",
            "2",
            "--part-size",
            "256KiB",
        ],
    );
    assert!(parts(&b).len() >= 3);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let dst = Db::new("dst");
    let tmp = tempfile::tempdir().unwrap();
    let out = restore(
        &b,
        &keys,
        &[
            "--dbname",
            dst.name(),
            "--jobs",
            "2",
            "--tmp-dir",
            tmp.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(dst.checksums(), src.checksums());
    // The decrypted dump does not outlive the restore.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// Every kind of damage is refused with exit status 1 and a message naming it, and the target
/// database stays empty.
#[test]
fn damaged_backups_are_refused_and_nothing_is_restored() {
    let src = small_db("src");
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    // Uncompressed (about 3 MB), so that pg_restore must have read and executed much of the
    // dump before the last part: coffer buffers at most 1 MiB ahead of it.
    let args = ["--part-size", "64KiB", "--pg-dump-arg=--compress=0"];
    let b = backup(&src, dir.path(), &keys, &args);
    let other = backup(&src, dir.path(), &keys, &args);
    assert!(parts(&b).len() >= 32, "{:?}", parts(&b));
    let last = parts(&b).pop().unwrap();

    type Damage = Box<dyn Fn(&Path)>;
    let other2 = other.clone();
    let last2 = last.clone();
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "deleted part",
            Box::new(|d| std::fs::remove_file(d.join("part-000002.cfr")).unwrap()),
            "part-000002.cfr is missing",
        ),
        (
            "swapped parts",
            Box::new(|d| {
                std::fs::rename(d.join("part-000001.cfr"), d.join("x")).unwrap();
                std::fs::rename(d.join("part-000002.cfr"), d.join("part-000001.cfr")).unwrap();
                std::fs::rename(d.join("x"), d.join("part-000002.cfr")).unwrap();
            }),
            "part-000001.cfr holds part 2 of the backup, not part 1",
        ),
        (
            "part from another backup",
            Box::new(move |d| {
                std::fs::copy(other2.join("part-000003.cfr"), d.join("part-000003.cfr")).unwrap();
            }),
            "part-000003.cfr belongs to backup",
        ),
        (
            "truncated part",
            Box::new(move |d| {
                let p = d.join(&last2);
                let len = std::fs::metadata(&p).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_len(len - 100)
                    .unwrap();
            }),
            "truncated or replaced",
        ),
        (
            "extra part",
            Box::new(|d| {
                std::fs::copy(d.join("part-000002.cfr"), d.join("part-000099.cfr")).unwrap();
            }),
            "part-000099.cfr is in the backup directory but not in its manifest",
        ),
        (
            "edited manifest",
            Box::new(|d| flip(&d.join("manifest.cfr"), 0.6)),
            "manifest.cfr",
        ),
        (
            "no manifest",
            Box::new(|d| std::fs::remove_file(d.join("manifest.cfr")).unwrap()),
            "has no manifest.cfr",
        ),
        (
            // Passes every check made up front: found only while streaming into pg_restore,
            // which is killed before its single transaction commits.
            "bit flipped late in the last part",
            Box::new(move |d| flip(&d.join(&last), 0.9)),
            "rolled back",
        ),
    ];
    let work = tempfile::tempdir().unwrap();
    for (i, (what, damage, message)) in cases.into_iter().enumerate() {
        let case = work.path().join(i.to_string());
        let copy = copy_of(&b, &case);
        damage(&copy);
        let dst = Db::new("dst");
        let out = restore(&copy, &keys, &["--dbname", dst.name()]);
        assert_eq!(out.code, Some(1), "{what}: stderr: {}", out.stderr);
        assert!(
            out.stderr.contains(message),
            "{what}: {message:?} not in: {}",
            out.stderr
        );
        assert!(dst.tables().is_empty(), "{what}: something was restored");
        let out = restore(&copy, &keys, &["--verify-only"]);
        assert_eq!(out.code, Some(1), "{what} (verify-only): {}", out.stderr);
    }
    // The late bit flip does reach pg_restore after much of the data: without the single
    // transaction, part of the backup stays restored (so the empty database above is the
    // rollback's doing).
    let copy = copy_of(&b, &work.path().join("late"));
    flip(&copy.join(parts(&b).pop().unwrap()), 0.9);
    let dst = Db::new("dst");
    let out = restore(
        &copy,
        &keys,
        &["--dbname", dst.name(), "--no-single-transaction"],
    );
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("the database holds part of the backup"));
    assert_eq!(dst.tables(), ["patients", "visits"]);

    // The undamaged original still restores.
    let dst = Db::new("dst");
    let out = restore(&b, &keys, &["--dbname", dst.name()]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
}

/// Flips one bit at `at` (a fraction of the length) of a file.
fn flip(path: &Path, at: f64) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = (bytes.len() as f64 * at) as usize;
    bytes[i] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn wrong_key_exits_1_and_restores_nothing() {
    let src = small_db("src");
    let dir = tempfile::tempdir().unwrap();
    let b = backup(&src, dir.path(), &Keys::new(), &[]);
    let dst = Db::new("dst");
    let out = restore(&b, &Keys::new(), &["--dbname", dst.name()]);
    out.fails(1, "decryption failed");
    assert!(out.stderr.contains("default/v1"), "{}", out.stderr);
    assert!(dst.tables().is_empty());
}

#[test]
fn failed_pg_dump_leaves_no_backup() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("backups");
    let keys = Keys::new();
    let out = run(
        &[
            "backup",
            "--dbname",
            "coffer_bk_no_such_database",
            "-o",
            out_dir.to_str().unwrap(),
            "--kek",
            &format!("env:{KEK_VAR}"),
        ],
        &keys,
    );
    assert_eq!(out.code, Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("pg_dump failed"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("database \"coffer_bk_no_such_database\" does not exist"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
}

/// A stand-in `pg_dump` on PATH: it records its environment, writes some bytes and fails, so
/// this runs without a database.
#[test]
fn pg_dump_gets_a_cleared_environment_and_its_failure_part_way_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let env_file = dir.path().join("env.txt");
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'pg_dump (PostgreSQL) 99.0'; exit 0; }}\n\
         env > '{}'\nhead -c 300000 /dev/zero\necho 'pg_dump: error: query failed' >&2\nexit 1\n",
        env_file.display()
    );
    let fake = bin.join("pg_dump");
    std::fs::write(&fake, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let keys = Keys::new();
    let out_dir = dir.path().join("backups");
    let out = coffer()
        .args([
            "backup",
            "--dbname",
            "app",
            "-o",
            out_dir.to_str().unwrap(),
            "--kek",
            &format!("env:{KEK_VAR}"),
            "--part-size",
            "64KiB",
        ])
        .env("PATH", path)
        .env(KEK_VAR, &keys.kek)
        .env("PGAPPNAME", "nightly")
        .env("UNRELATED_SECRET", "s3cr3t")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pg_dump: error: query failed"), "{stderr}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("PGAPPNAME=nightly"), "{env}");
    assert!(!env.contains(KEK_VAR), "{env}");
    assert!(!env.contains(&keys.kek), "{env}");
    assert!(!env.contains("UNRELATED_SECRET"), "{env}");
}

#[test]
fn passwords_in_dbname_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "backup",
            "--dbname",
            "postgresql://postgres:hunter2@127.0.0.1/postgres",
            "-o",
            dir.path().to_str().unwrap(),
            "--kek",
            &format!("env:{KEK_VAR}"),
        ],
        &Keys::new(),
    );
    out.fails(2, "PGPASSWORD");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Disaster recovery without Coffer: the official AWS Encryption SDK for Python decrypts a
/// backup with the KEK alone (tools/dr_decrypt.py), and pg_restore restores what it writes.
#[test]
fn python_esdk_decrypts_a_backup_for_pg_restore() {
    let src = small_db("src");
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let b = backup(&src, dir.path(), &keys, &["--part-size", "100KiB"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/dr_decrypt.py");
    for (var, name) in [(KEK_VAR, "default/v1"), (RECOVERY_VAR, "recovery/v1")] {
        let dump = dir.path().join(format!("{var}.dump"));
        output_of(
            Command::new("python3")
                .arg(&script)
                .arg(&b)
                .args(["--key-env", var, "--key-name", name])
                .env(KEK_VAR, &keys.kek)
                .env(RECOVERY_VAR, &keys.recovery)
                .stdout(std::fs::File::create(&dump).unwrap()),
        );
        let dst = Db::new("py");
        output_of(
            Command::new("pg_restore")
                .envs(PG_ENV)
                .args(["--exit-on-error", "--dbname", dst.name()])
                .arg(&dump),
        );
        assert_eq!(dst.checksums(), src.checksums());
    }
    // It refuses damage too: a part from another position.
    let copy = copy_of(&b, &dir.path().join("damaged"));
    std::fs::copy(copy.join("part-000002.cfr"), copy.join("part-000001.cfr")).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(&copy)
        .args(["--key-env", KEK_VAR])
        .env(KEK_VAR, &keys.kek)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("part-000001.cfr"));
}

/// Issue #4's acceptance test: a real pg_dump of a generated database whose dump is over 200 MB
/// → `coffer backup` → `coffer restore` into a fresh database → identical table checksums.
#[test]
fn a_200_mb_database_round_trips() {
    let src = Db::new("big");
    // 200 000 rows of 512 random bytes (hex in the dump: 1 KiB) and 64 random hex characters;
    // the dump is uncompressed (--compress=0), so its size is the data's.
    psql(
        src.name(),
        "CREATE EXTENSION pgcrypto;
         CREATE TABLE readings (id bigint PRIMARY KEY, device int NOT NULL, payload bytea NOT NULL,
                                label text NOT NULL);
         INSERT INTO readings
           SELECT g, g % 997, gen_random_bytes(512), encode(gen_random_bytes(32), 'hex')
           FROM generate_series(1, 200000) g;
         CREATE TABLE devices (id int PRIMARY KEY, name text);
         INSERT INTO devices SELECT g, 'device-' || g FROM generate_series(0, 996) g;
         DROP EXTENSION pgcrypto;",
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let (b, dump) = backup_sized(
        &src,
        dir.path(),
        &keys,
        &["--part-size", "64MiB", "--pg-dump-arg=--compress=0"],
    );
    assert!(dump > 200 << 20, "the dump is only {dump} bytes");
    assert!(parts(&b).len() >= 4);
    let dst = Db::new("bigdst");
    let out = restore(&b, &keys, &["--dbname", dst.name()]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let sums = src.checksums();
    assert_eq!(sums.len(), 2);
    assert!(
        sums.iter()
            .any(|(t, s)| t == "readings" && s.starts_with("200000:"))
    );
    assert_eq!(dst.checksums(), sums);
}
