//! `coffer file …` end to end with the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{Out, coffer};

fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> Out {
    use std::io::Write as _;
    let mut child = coffer()
        .current_dir(dir)
        .arg("file")
        .args(args)
        .envs(envs.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn key() -> String {
    coffer_core::Kek::generate()
        .unwrap()
        .to_base64()
        .to_string()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 253) as u8).collect()
}

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
