//! Backups and restores through readers and writers, without pg_dump or the CLI: round trips,
//! and every kind of damage refused with its error kind.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use coffer_backup::{
    BackupOptions, BackupReader, BackupWriter, Error, Format, NoProgress, Progress, RestoreOptions,
    backup, restore,
};
use coffer_core::stream::RawAesKeyring;
use coffer_core::{ErrorKind, Kek};
use coffer_keys::files::{FileKeyring, NAMESPACE};

fn keyring(name: &str) -> RawAesKeyring {
    RawAesKeyring::new(NAMESPACE, name, Kek::generate().unwrap()).unwrap()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn small_parts() -> BackupOptions {
    BackupOptions {
        part_size: 10_000,
        frame_size: 4096,
        database: "app".into(),
        ..BackupOptions::default()
    }
}

/// A backup of `data(35_000)` in four parts.
fn four_parts(dir: &Path, key: &RawAesKeyring) -> PathBuf {
    let keyrings: [&dyn FileKeyring; 1] = [key];
    let done = backup(&data(35_000)[..], dir, &keyrings, &small_parts()).unwrap();
    assert_eq!(done.manifest.parts.len(), 4);
    done.path
}

fn restore_err(path: &Path, key: &RawAesKeyring) -> Error {
    let keyrings: [&dyn FileKeyring; 1] = [key];
    let mut out = Vec::new();
    restore(path, &keyrings, &mut out, &RestoreOptions::default()).unwrap_err()
}

#[derive(Default)]
struct Count(AtomicU64);

impl Progress for Count {
    fn advance(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[test]
fn a_stream_round_trips_with_either_key() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, recovery) = (keyring("default/v1"), keyring("recovery/v1"));
    let keyrings: [&dyn FileKeyring; 2] = [&primary, &recovery];
    let plain = data(35_000);
    let done = backup(&plain[..], dir.path(), &keyrings, &small_parts()).unwrap();
    let m = &done.manifest;
    assert!(coffer_backup::valid_id(&m.backup_id));
    assert_eq!(done.path, dir.path().join(&m.backup_id));
    assert_eq!(
        (m.format, m.total_len, m.parts.len()),
        (Format::Custom, 35_000, 4)
    );
    assert_eq!(m.database, "app");
    // Only the finished backup is left: no partial directory.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    for key in [&primary, &recovery] {
        let one: [&dyn FileKeyring; 1] = [key];
        let mut out = Vec::new();
        let got = restore(&done.path, &one, &mut out, &RestoreOptions::default()).unwrap();
        assert_eq!(out, plain);
        assert_eq!(&got, m);
    }
}

#[test]
fn an_empty_stream_makes_one_empty_part() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let keyrings: [&dyn FileKeyring; 1] = [&key];
    let done = backup(io::empty(), dir.path(), &keyrings, &small_parts()).unwrap();
    assert_eq!(done.manifest.parts.len(), 1);
    let mut out = Vec::new();
    restore(&done.path, &keyrings, &mut out, &RestoreOptions::default()).unwrap();
    assert!(out.is_empty());
}

#[test]
fn files_round_trip_into_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let keyrings: [&dyn FileKeyring; 1] = [&key];
    let progress = Count::default();
    let mut w = BackupWriter::create(dir.path(), &keyrings, &small_parts(), &progress).unwrap();
    let files = [("toc.dat", data(1_000)), ("3001.dat.gz", data(25_000))];
    for (name, bytes) in &files {
        w.add_file(name, &mut &bytes[..]).unwrap();
    }
    assert!(matches!(
        w.add_file("../escape", &mut &b""[..]),
        Err(Error::InvalidInput(_))
    ));
    assert!(w.add_stream(&mut &b""[..]).is_err());
    let done = w.finish().unwrap();
    assert_eq!(done.manifest.format, Format::Directory);
    assert_eq!(done.manifest.parts.len(), 4);
    assert_eq!(progress.0.load(Ordering::Relaxed), 26_000);

    let reader = BackupReader::open(&done.path, &keyrings, &RestoreOptions::default()).unwrap();
    reader.verify(&NoProgress).unwrap();
    let out = dir.path().join("restored");
    reader.extract_to(&out, &NoProgress).unwrap();
    for (name, bytes) in &files {
        assert_eq!(&fs::read(out.join(name)).unwrap(), bytes);
    }
    // Never over an existing directory; never into a writer.
    assert!(matches!(
        reader.extract_to(&out, &NoProgress),
        Err(Error::InvalidInput(_))
    ));
    let mut sink = Vec::new();
    let e = restore(&done.path, &keyrings, &mut sink, &RestoreOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_missing_part_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let b = four_parts(dir.path(), &key);
    fs::remove_file(b.join("part-000002.cfr")).unwrap();
    let e = restore_err(&b, &key);
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("part-000002.cfr is missing"), "{e}");
}

#[test]
fn no_manifest_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let b = four_parts(dir.path(), &key);
    fs::remove_file(b.join("manifest.cfr")).unwrap();
    let e = restore_err(&b, &key);
    assert!(matches!(e, Error::NoManifest { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn the_wrong_key_fails_to_decrypt_and_names_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let b = four_parts(dir.path(), &keyring("default/v1"));
    let e = restore_err(&b, &keyring("other/v1"));
    assert_eq!(e.kind(), ErrorKind::Decrypt);
    let source = std::error::Error::source(&e).unwrap().to_string();
    assert!(source.contains("default/v1"), "{source}");
}

/// Flips one bit at `at` (a fraction of the length) of a file.
fn flip(path: &Path, at: f64) {
    let mut bytes = fs::read(path).unwrap();
    let i = (bytes.len() as f64 * at) as usize;
    bytes[i] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_tampered_part_is_refused_and_nothing_is_taken_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let b = four_parts(dir.path(), &key);
    flip(&b.join("part-000004.cfr"), 0.9);
    // Opening checks only lengths and headers: the damage is found while decrypting.
    let keyrings: [&dyn FileKeyring; 1] = [&key];
    let reader = BackupReader::open(&b, &keyrings, &RestoreOptions::default()).unwrap();
    let e = reader.verify(&NoProgress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decrypt, "{e}");
}

#[test]
fn a_tampered_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let b = four_parts(dir.path(), &key);
    flip(&b.join("manifest.cfr"), 0.6);
    let e = restore_err(&b, &key);
    assert_eq!(e.kind(), ErrorKind::Decrypt);
    assert!(e.to_string().contains("manifest.cfr"), "{e}");
}

#[test]
fn a_part_in_the_wrong_place_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let b = four_parts(dir.path(), &key);
    // Parts 1..3 have the same length: swap two of them.
    fs::rename(b.join("part-000001.cfr"), b.join("x")).unwrap();
    fs::rename(b.join("part-000002.cfr"), b.join("part-000001.cfr")).unwrap();
    fs::rename(b.join("x"), b.join("part-000002.cfr")).unwrap();
    let e = restore_err(&b, &key);
    assert!(matches!(e, Error::Refused(_)), "{e}");
    assert!(
        e.to_string()
            .contains("holds part 2 of the backup, not part 1"),
        "{e}"
    );
}

#[test]
fn a_part_of_another_backup_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let a = four_parts(dir.path(), &key);
    let b = four_parts(dir.path(), &key);
    fs::copy(b.join("part-000003.cfr"), a.join("part-000003.cfr")).unwrap();
    let e = restore_err(&a, &key);
    assert_eq!(e.kind(), ErrorKind::Decrypt);
    assert!(e.to_string().contains("belongs to backup"), "{e}");
}

#[test]
fn extra_and_truncated_parts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let b = four_parts(dir.path(), &key);
    fs::copy(b.join("part-000002.cfr"), b.join("part-000099.cfr")).unwrap();
    let e = restore_err(&b, &key);
    assert!(e.to_string().contains("not in its manifest"), "{e}");
    fs::remove_file(b.join("part-000099.cfr")).unwrap();

    let p = b.join("part-000004.cfr");
    let len = fs::metadata(&p).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let e = restore_err(&b, &key);
    assert_eq!(e.kind(), ErrorKind::Decrypt);
    assert!(e.to_string().contains("truncated or replaced"), "{e}");
}

/// A source that fails part-way.
struct Broken(usize);

impl Read for Broken {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::other("the dump broke"));
        }
        let n = buf.len().min(self.0);
        buf[..n].fill(1);
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn a_failed_backup_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let keyrings: [&dyn FileKeyring; 1] = [&key];
    let e = backup(Broken(25_000), dir.path(), &keyrings, &small_parts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    // Nor does a backup without keys or with a zero part size start.
    let none: [&dyn FileKeyring; 0] = [];
    let e = backup(io::empty(), dir.path(), &none, &small_parts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let zero = BackupOptions {
        part_size: 0,
        ..small_parts()
    };
    let e = backup(io::empty(), dir.path(), &keyrings, &zero).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_restore_into_a_failing_writer_is_the_writers_fault() {
    struct Full;
    impl io::Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let b = four_parts(dir.path(), &key);
    let keyrings: [&dyn FileKeyring; 1] = [&key];
    let e = restore(&b, &keyrings, Full, &RestoreOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Sink(_)), "{e}");
}

#[test]
fn keyrings_can_run_on_the_callers_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = keyring("default/v1");
    let keyrings: [&dyn FileKeyring; 1] = [&key];
    let options = BackupOptions {
        runtime: Some(rt.handle().clone()),
        ..small_parts()
    };
    let done = backup(&data(12_345)[..], dir.path(), &keyrings, &options).unwrap();
    let mut out = Vec::new();
    let ropts = RestoreOptions {
        runtime: Some(rt.handle().clone()),
        threads: 1,
    };
    restore(&done.path, &keyrings, &mut out, &ropts).unwrap();
    assert_eq!(out, data(12_345));
}
