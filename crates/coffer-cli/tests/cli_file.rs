//! `coffer file …` end to end with the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{data, file as run, kek_base64 as key};

#[test]
fn files_round_trip_and_ranges_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = key();
    let env = [("K", k.as_str())];
    let pt = data(300_000);
    std::fs::write(d.join("scan.dcm"), &pt).unwrap();
    let enc = run(
        d,
        &[
            "encrypt",
            "scan.dcm",
            "-o",
            "scan.cfr",
            "--kek",
            "env:K",
            "--context",
            "type=dicom",
            "--frame-size",
            "4096",
        ],
        &env,
        None,
    );
    assert_eq!(enc.code, Some(0), "{}", enc.stderr);
    let dec = run(d, &["decrypt", "scan.cfr", "--kek", "env:K"], &env, None);
    assert_eq!(dec.code, Some(0), "{}", dec.stderr);
    assert_eq!(dec.stdout, pt);
    let range = run(
        d,
        &[
            "decrypt",
            "scan.cfr",
            "--kek",
            "env:K",
            "--range",
            "5000-9999",
        ],
        &env,
        None,
    );
    assert_eq!(range.code, Some(0), "{}", range.stderr);
    assert_eq!(range.stdout, pt[5000..10000]);
    // stdin to stdout.
    let piped = run(d, &["encrypt", "--kek", "env:K"], &env, Some(&pt));
    assert_eq!(piped.code, Some(0), "{}", piped.stderr);
    let back = run(d, &["decrypt", "--kek", "env:K"], &env, Some(&piped.stdout));
    assert_eq!(back.stdout, pt);
    // inspect
    let info = run(d, &["inspect", "--json", "scan.cfr"], &[], None);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["frame_size"], 4096);
    assert_eq!(v["encryption_context"]["type"], "dicom");
    assert_eq!(v["encrypted_data_keys"][0]["key_name"], "default/v1");
}

#[test]
fn failures_leave_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (k, wrong) = (key(), key());
    let pt = data(50_000);
    std::fs::write(d.join("in"), &pt).unwrap();
    let out = run(
        d,
        &[
            "encrypt",
            "in",
            "-o",
            "in.cfr",
            "--kek",
            "env:K",
            "--frame-size",
            "1024",
        ],
        &[("K", &k)],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let leftovers = |d: &Path| std::fs::read_dir(d).unwrap().count();
    let before = leftovers(d);

    let bad = run(
        d,
        &["decrypt", "in.cfr", "-o", "out", "--kek", "env:K"],
        &[("K", &wrong)],
        None,
    );
    bad.fails(1, "decryption failed");
    assert!(bad.stderr.contains("coffer/default/v1"), "{}", bad.stderr);
    assert_eq!(leftovers(d), before, "no output and no partial file");

    // A flipped byte in the last frame: most plaintext was already written when it is found.
    let mut msg = std::fs::read(d.join("in.cfr")).unwrap();
    let n = msg.len();
    msg[n - 20] ^= 1;
    std::fs::write(d.join("tampered.cfr"), &msg).unwrap();
    let t = run(
        d,
        &["decrypt", "tampered.cfr", "-o", "out", "--kek", "env:K"],
        &[("K", &k)],
        None,
    );
    t.fails(1, "decryption failed");
    assert!(!d.join("out").exists());
    assert_eq!(
        leftovers(d),
        before + 1,
        "only the tampered input was added"
    );

    // Truncated: refused, nothing left.
    std::fs::write(d.join("cut.cfr"), &msg[..n / 2]).unwrap();
    run(
        d,
        &["decrypt", "cut.cfr", "-o", "out", "--kek", "env:K"],
        &[("K", &k)],
        None,
    )
    .fails(1, "truncated");
    assert!(!d.join("out").exists());

    // Never overwrites; bad ranges are usage errors.
    run(
        d,
        &["encrypt", "in", "-o", "in.cfr", "--kek", "env:K"],
        &[("K", &k)],
        None,
    )
    .fails(2, "never overwrites");
    run(
        d,
        &["decrypt", "in.cfr", "--kek", "env:K", "--range", "9-1"],
        &[("K", &k)],
        None,
    )
    .fails(2, "before START");
    run(
        d,
        &["decrypt", "in.cfr", "--kek", "env:K", "--range", "0-50000"],
        &[("K", &k)],
        None,
    )
    .fails(2, "past the end");
}

#[test]
fn a_recovery_key_also_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (k, r) = (key(), key());
    let env = [("K", k.as_str()), ("R", r.as_str())];
    let enc = run(
        d,
        &["encrypt", "--kek", "env:K", "--recovery-kek", "env:R"],
        &env,
        Some(b"break glass"),
    );
    assert_eq!(enc.code, Some(0), "{}", enc.stderr);
    let back = run(d, &["decrypt", "--kek", "env:R"], &env, Some(&enc.stdout));
    assert_eq!(back.stdout, b"break glass");
}

fn esdk(args: &[&str], input: &[u8], legacy: bool) -> (Vec<u8>, String) {
    let legacy = [("COFFER_ESDK_LEGACY", if legacy { "1" } else { "0" })];
    common::python("esdk.py", args, &legacy, input)
}

fn hex_of(b64: &str) -> String {
    use base64::Engine as _;
    hex::encode(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
}

/// Through the binary, both ways, with the SDK's current keyring API (MPL RawAESKeyring):
/// frame sizes 4096 and 65536; plaintexts 0, 1, frame-1, frame, frame+1 bytes and 5 MiB.
#[test]
fn the_python_sdk_and_the_cli_read_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = key();
    let khex = hex_of(&k);
    let env = [("K", k.as_str())];
    for frame in [4096usize, 65536] {
        for n in [0, 1, frame - 1, frame, frame + 1, 5 << 20] {
            let pt = data(n);
            let fs = frame.to_string();
            let ours = run(
                d,
                &[
                    "encrypt",
                    "--kek",
                    "env:K",
                    "--key-name",
                    "backups/v3",
                    "--frame-size",
                    &fs,
                    "--context",
                    "db=clinic",
                ],
                &env,
                Some(&pt),
            );
            assert_eq!(ours.code, Some(0), "{}", ours.stderr);
            let (plain, ctx) = esdk(
                &["decrypt", &khex, "coffer", "backups/v3"],
                &ours.stdout,
                false,
            );
            assert!(
                plain == pt,
                "Python decrypting coffer, frame {frame}, {n} bytes"
            );
            assert!(ctx.contains("context db=clinic"), "{ctx}");
            let (theirs, _) = esdk(
                &["encrypt", &khex, "coffer", "backups/v3", &fs, "db=clinic"],
                &pt,
                false,
            );
            let back = run(d, &["decrypt", "--kek", "env:K"], &env, Some(&theirs));
            assert_eq!(back.code, Some(0), "{}", back.stderr);
            assert!(
                back.stdout == pt,
                "coffer decrypting Python, frame {frame}, {n} bytes"
            );
        }
    }
    // The SDK's older master-key API reads the same bytes.
    let pt = data(70_000);
    let ours = run(d, &["encrypt", "--kek", "env:K"], &env, Some(&pt));
    let (plain, _) = esdk(
        &["decrypt", &khex, "coffer", "default/v1"],
        &ours.stdout,
        true,
    );
    assert!(plain == pt);
}

#[test]
fn compressed_files_round_trip_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = key();
    let env = [("K", k.as_str())];
    let text: Vec<u8> = (0..200_000)
        .flat_map(|i| format!("row {i}, diagnosis E11.9\n").into_bytes())
        .collect();
    std::fs::write(d.join("dump.sql"), &text).unwrap();
    let enc = run(
        d,
        &[
            "encrypt",
            "dump.sql",
            "-o",
            "dump.cfr",
            "--kek",
            "env:K",
            "--compress",
            "zstd",
        ],
        &env,
        None,
    );
    assert_eq!(enc.code, Some(0), "{}", enc.stderr);
    let size = std::fs::metadata(d.join("dump.cfr")).unwrap().len();
    assert!(
        size * 5 < text.len() as u64,
        "{size} bytes for {}",
        text.len()
    );
    let info = run(d, &["inspect", "--json", "dump.cfr"], &[], None);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["encryption_context"]["coffer:compression"], "zstd");
    let back = run(
        d,
        &["decrypt", "dump.cfr", "-o", "back.sql", "--kek", "env:K"],
        &env,
        None,
    );
    assert_eq!(back.code, Some(0), "{}", back.stderr);
    assert!(std::fs::read(d.join("back.sql")).unwrap() == text);
    let range = run(
        d,
        &["decrypt", "dump.cfr", "--range", "0-9", "--kek", "env:K"],
        &env,
        None,
    );
    range.fails(2, "compressed before encryption");
    let reserved = run(
        d,
        &[
            "encrypt",
            "--kek",
            "env:K",
            "--context",
            "coffer:compression=none",
        ],
        &env,
        Some(b"x"),
    );
    reserved.fails(2, "reserved");
}

#[test]
fn rewrap_changes_the_keys_and_not_the_frames() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new, rec) = (key(), key(), key());
    let env = [
        ("OLD", old.as_str()),
        ("NEW", new.as_str()),
        ("REC", rec.as_str()),
    ];
    let pt = data(200_000);
    std::fs::write(d.join("scan.dcm"), &pt).unwrap();
    let enc = run(
        d,
        &[
            "encrypt",
            "scan.dcm",
            "-o",
            "a.cfr",
            "--kek",
            "env:OLD",
            "--frame-size",
            "4096",
        ],
        &env,
        None,
    );
    assert_eq!(enc.code, Some(0), "{}", enc.stderr);
    let rw = run(
        d,
        &[
            "rewrap",
            "a.cfr",
            "-o",
            "b.cfr",
            "--kek",
            "env:OLD",
            "--new-kek",
            "env:NEW",
            "--key-name",
            "main/v2",
            "--recovery-kek",
            "env:REC",
        ],
        &env,
        None,
    );
    assert_eq!(rw.code, Some(0), "{}", rw.stderr);
    let (a, b) = (
        std::fs::read(d.join("a.cfr")).unwrap(),
        std::fs::read(d.join("b.cfr")).unwrap(),
    );
    let frames = 48 * (4 + 12 + 4096 + 16) + (4 + 4 + 12 + 4 + 200_000 % 4096 + 16);
    assert_eq!(
        a[a.len() - frames..],
        b[b.len() - frames..],
        "frames untouched"
    );
    for k in ["env:NEW", "env:REC"] {
        let out = run(d, &["decrypt", "b.cfr", "--kek", k], &env, None);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(out.stdout == pt);
    }
    run(d, &["decrypt", "b.cfr", "--kek", "env:OLD"], &env, None).fails(1, "main/v2");
    let info = run(d, &["inspect", "b.cfr"], &[], None);
    assert!(
        info.stdout_str().contains("coffer / main/v2"),
        "{}",
        info.stdout_str()
    );
    assert!(info.stdout_str().contains("coffer / recovery/v1"));
    // The wrong current key: refused, no output.
    run(
        d,
        &[
            "rewrap",
            "a.cfr",
            "-o",
            "c.cfr",
            "--kek",
            "env:NEW",
            "--new-kek",
            "env:REC",
        ],
        &env,
        None,
    )
    .fails(1, "decryption failed");
    assert!(!d.join("c.cfr").exists());
}

/// An AES key imported into SoftHSM wraps files in the raw AES layout: the Python SDK opens them
/// with the same key bytes, and so does `--kek env:` with them.
#[cfg(feature = "pkcs11")]
#[test]
fn hsm_wrapped_files_open_with_the_same_key_anywhere() {
    let hsm = common::softhsm("coffer-cli-file-softhsm");
    let get = |k: &str| hsm.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let (module, token) = (
        get("COFFER_TEST_PKCS11_MODULE"),
        get("COFFER_TEST_PKCS11_TOKEN"),
    );
    let pin = std::fs::read_to_string(get("COFFER_TEST_PKCS11_PIN_FILE")).unwrap();
    let conf = get("SOFTHSM2_CONF");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // softhsm2-util --import --aes reads the key file as a C string: a key with a NUL (or a line
    // break) would be imported short, so draw until it has none.
    let (k, khex) = loop {
        let k = key();
        let khex = hex_of(&k);
        let raw = hex::decode(&khex).unwrap();
        if !raw.iter().any(|b| matches!(b, 0x00 | 0x0a | 0x0d)) {
            break (k, khex);
        }
    };
    std::fs::write(d.join("raw.key"), hex::decode(&khex).unwrap()).unwrap();
    let label = format!("coffer-file-{}", &hex_of(&key())[..12]);
    coffer_testkit::process::output_of(
        std::process::Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--import", "raw.key", "--aes", "--token", &token, "--label", &label,
            ])
            .args([
                "--id",
                &label.as_bytes()[..4]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            ])
            .args(["--pin", pin.trim()])
            .current_dir(d),
    );
    let reference = format!("pkcs11:module={module};token={token};key={label};pin-env=HSM_PIN");
    let env = [
        ("K", k.as_str()),
        ("HSM_PIN", pin.trim()),
        ("SOFTHSM2_CONF", conf.as_str()),
    ];
    let pt = data(150_000);
    let enc = run(
        d,
        &["encrypt", "--kek", &reference, "--key-name", "hsm/v1"],
        &env,
        Some(&pt),
    );
    assert_eq!(enc.code, Some(0), "{}", enc.stderr);
    let (plain, _) = esdk(&["decrypt", &khex, "coffer", "hsm/v1"], &enc.stdout, false);
    assert!(plain == pt, "the SDK opens the HSM's EDK");
    for kek in [reference.as_str(), "env:K"] {
        let out = run(d, &["decrypt", "--kek", kek], &env, Some(&enc.stdout));
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(out.stdout == pt);
    }
    let other = key();
    let out = run(
        d,
        &["decrypt", "--kek", "env:O"],
        &[("O", other.as_str())],
        Some(&enc.stdout),
    );
    out.fails(1, "hsm/v1");
}

/// `--scope`: the file's wrapping key derives from a key-store scope's DEK; another scope cannot
/// open it, and destroying the scope shreds the file.
#[test]
fn files_keyed_by_a_key_store_scope() {
    let store = common::KeyStoreDir::init();
    let (d, env) = (store.path(), store.env());
    let created = common::keys(d, &["create-scope", "tenant:a", "tenant:b"], &env);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let pt = data(100_000);
    std::fs::write(d.join("report.pdf"), &pt).unwrap();
    let enc = run(
        d,
        &[
            "encrypt",
            "report.pdf",
            "-o",
            "report.cfr",
            "--scope",
            "tenant:a",
        ],
        &env,
        None,
    );
    assert_eq!(enc.code, Some(0), "{}", enc.stderr);
    let info = run(d, &["inspect", "report.cfr"], &[], None);
    assert!(
        !info.stdout_str().contains("tenant"),
        "{}",
        info.stdout_str()
    );
    let back = run(
        d,
        &["decrypt", "report.cfr", "--scope", "tenant:a"],
        &env,
        None,
    );
    assert_eq!(back.code, Some(0), "{}", back.stderr);
    assert!(back.stdout == pt);
    run(
        d,
        &["decrypt", "report.cfr", "--scope", "tenant:b"],
        &env,
        None,
    )
    .fails(1, "scope 'tenant:b'");
    run(
        d,
        &[
            "encrypt",
            "report.pdf",
            "--scope",
            "tenant:a",
            "--recovery-kek",
            "env:COFFER_KEK",
        ],
        &env,
        None,
    )
    .fails(2, "cannot be used with");
    let destroyed = common::keys(d, &["destroy", "tenant:a", "--yes"], &env);
    assert_eq!(destroyed.code, Some(0), "{}", destroyed.stderr);
    run(
        d,
        &["decrypt", "report.cfr", "--scope", "tenant:a"],
        &env,
        None,
    )
    .fails(2, "destroyed");
}
