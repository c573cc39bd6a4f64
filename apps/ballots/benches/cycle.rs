//! The encryption work of one voter's visit, beside the same primitives called bare on aws-lc-rs.
//!
//! A visit in the load test is: load the ballot (open the measure and 4 options), then vote (one
//! voter tag; one write-in in ten adds an equality index and a seal). `scripts/bench-ballots.sh`
//! measures the whole app's CPU per visit; this gives the part of it that is encryption.

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use coffer_ballots::crypto::{BallotKeys, Cipher};
use coffer_core::{Dek, ScopeId};
use criterion::{Criterion, criterion_group, criterion_main};

const BALLOT: &str = "Qm3xZ0c1_kP9aB2d";
const MEASURE: &str = "Measure 7: shall the town library open on Sundays?";
const OPTIONS: [&str; 4] = ["Yes", "No", "Abstain", "Only in winter"];

fn bench(c: &mut Criterion) {
    let scope = ScopeId::new(format!("ballot:{BALLOT}")).unwrap();
    let keys = BallotKeys::derive(&Dek::from_bytes([9; 32]), &scope).unwrap();
    let cipher = Cipher::Sealed(Arc::new(keys));
    let measure = cipher.seal_measure(BALLOT, MEASURE).unwrap();
    let options: Vec<(Vec<u8>, Vec<u8>)> = OPTIONS
        .iter()
        .map(|o| {
            let idx = cipher.choice_index(o).unwrap();
            (cipher.seal_option(BALLOT, &idx, o).unwrap(), idx)
        })
        .collect();

    let mut g = c.benchmark_group("ballots");
    g.bench_function("view: open measure + 4 options", |b| {
        b.iter(|| {
            let m = cipher.open_measure(BALLOT, black_box(&measure)).unwrap();
            let o: Vec<String> = options
                .iter()
                .map(|(t, i)| cipher.open_option(BALLOT, i, t).unwrap())
                .collect();
            black_box((m, o))
        })
    });
    g.bench_function("vote: voter tag", |b| {
        b.iter(|| {
            black_box(
                cipher
                    .voter_tag(black_box("v1c2d3e4f5a6b7c8-4711-12"))
                    .unwrap(),
            )
        })
    });
    g.bench_function("write-in: index + seal", |b| {
        b.iter(|| {
            let i = cipher.choice_index(black_box("Ada  Lovelace")).unwrap();
            black_box(cipher.seal_option(BALLOT, &i, "Ada  Lovelace").unwrap())
        })
    });

    // Baseline: the bare primitives on aws-lc-rs, same sizes (5 GCM opens of a 32-byte padded
    // text, one HMAC-SHA-256 of the voter id).
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap());
    let nonce = [1u8; 12];
    let mut sealed = vec![0u8; 32];
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(BALLOT),
        &mut sealed,
    )
    .unwrap();
    let mac = hmac::Key::new(hmac::HMAC_SHA256, &[3; 32]);
    g.bench_function("baseline: 5 aws-lc-rs GCM opens of 32 bytes", |b| {
        b.iter(|| {
            for _ in 0..5 {
                let mut buf = sealed.clone();
                let out = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(BALLOT),
                        &mut buf,
                    )
                    .unwrap()
                    .len();
                black_box(out);
            }
        })
    });
    g.bench_function("baseline: aws-lc-rs HMAC-SHA-256 of a voter id", |b| {
        b.iter(|| black_box(hmac::sign(&mac, black_box(b"v1c2d3e4f5a6b7c8-4711-12"))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
