//! Hot-path benchmarks for coffer-core, each beside a baseline measured in the same run.
//! `make bench` runs them and prints the summary table used in docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use aws_lc_rs::aead::{AES_256_GCM, Aad, RandomizedNonceKey};
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded as _};
use coffer_core::{
    BlindIndexKey, ColumnId, Dek, EncryptionCounter, FieldContext, FieldKey, KdfParams, Kek,
    KeyVersion, Normalizer, ScopeId, Suite, WrapAlgorithm,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

const VALUE: &[u8; 50] = b"ann.example+records@hospital-example.org 555-01234";

fn field_key(suite: Suite) -> FieldKey {
    // A limit no benchmark run reaches, so the counter never stops the loop.
    FieldKey::with_counter(
        &Dek::from_bytes([7; 32]),
        KeyVersion(1),
        suite,
        &ScopeId::new("tenant:acme").unwrap(),
        &ColumnId::new("patients.email").unwrap(),
        Arc::new(EncryptionCounter::new(0, u64::MAX)),
    )
    .unwrap()
}

fn single_values(c: &mut Criterion) {
    let mut g = c.benchmark_group("field-50B");
    let raw = RandomizedNonceKey::new(&AES_256_GCM, &[7; 32]).unwrap();
    g.bench_function("baseline: aws-lc-rs RandomizedNonceKey seal", |b| {
        b.iter_batched_ref(
            || VALUE.to_vec(),
            |buf| {
                raw.seal_in_place_append_tag(Aad::from(&b"row-42"[..]), buf)
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    let mut sealed = VALUE.to_vec();
    let nonce = raw
        .seal_in_place_append_tag(Aad::from(&b"row-42"[..]), &mut sealed)
        .unwrap();
    g.bench_function("baseline: aws-lc-rs RandomizedNonceKey open", |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |buf| {
                let n = aws_lc_rs::aead::Nonce::from(nonce.as_ref());
                raw.open_in_place(n, Aad::from(&b"row-42"[..]), buf)
                    .map(|p| p.len())
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });

    let ctx = FieldContext::row(&[b"row-42"]);
    for suite in [Suite::Gcm96, Suite::Gcm128] {
        let k = field_key(suite);
        let ct = k.encrypt(&ctx, VALUE).unwrap();
        g.bench_function(format!("coffer {} encrypt", suite.name()), |b| {
            b.iter(|| k.encrypt(black_box(&ctx), black_box(VALUE)).unwrap())
        });
        g.bench_function(format!("coffer {} decrypt", suite.name()), |b| {
            b.iter(|| k.decrypt(black_box(&ctx), black_box(&ct)).unwrap())
        });
    }
    let siv = field_key(Suite::Siv);
    let dctx = FieldContext::new().with_domain(&[b"tenant-1"]);
    let sct = siv.encrypt(&dctx, VALUE).unwrap();
    g.bench_function("coffer aes-256-siv encrypt", |b| {
        b.iter(|| siv.encrypt(black_box(&dctx), black_box(VALUE)).unwrap())
    });
    g.bench_function("coffer aes-256-siv decrypt", |b| {
        b.iter(|| siv.decrypt(black_box(&dctx), black_box(&sct)).unwrap())
    });

    let dek = Dek::from_bytes([7; 32]);
    let col = ColumnId::new("patients.email").unwrap();
    let bidx = BlindIndexKey::new(&dek, &col, "email", 32).unwrap();
    g.bench_function("coffer blind index (32 bits, no normalizer)", |b| {
        b.iter(|| bidx.compute(black_box(&[&VALUE[..]])).unwrap())
    });
    let bidx_norm = BlindIndexKey::new(&dek, &col, "email", 32)
        .unwrap()
        .with_normalizers(vec![Normalizer::Trim, Normalizer::CaseFold]);
    g.bench_function("coffer blind index (32 bits, trim+casefold)", |b| {
        b.iter(|| bidx_norm.compute(black_box(&[&VALUE[..]])).unwrap())
    });
    g.bench_function("coffer FieldKey setup (HKDF + AES key schedule)", |b| {
        b.iter(|| field_key(black_box(Suite::Gcm96)))
    });
    g.finish();
}

fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch-10000x50B");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(30);
    let rows: Vec<[u8; 8]> = (0..10_000u64).map(u64::to_be_bytes).collect();
    let row_refs: Vec<[&[u8]; 1]> = rows.iter().map(|r| [&r[..]]).collect();
    let items: Vec<(FieldContext<'_>, &[u8])> = row_refs
        .iter()
        .map(|r| (FieldContext::row(r), &VALUE[..]))
        .collect();
    let k = field_key(Suite::Gcm96);
    let raw = RandomizedNonceKey::new(&AES_256_GCM, &[7; 32]).unwrap();
    g.bench_function("baseline: 10000 aws-lc-rs RandomizedNonceKey seals", |b| {
        b.iter(|| {
            for r in &rows {
                let mut buf = VALUE.to_vec();
                raw.seal_in_place_append_tag(Aad::from(&r[..]), &mut buf)
                    .unwrap();
                black_box(buf);
            }
        })
    });
    g.bench_function("coffer encrypt_batch (one core)", |b| {
        b.iter(|| k.encrypt_batch(black_box(&items)).unwrap())
    });
    g.bench_function("coffer encrypt_batch_parallel (all cores)", |b| {
        b.iter(|| k.encrypt_batch_parallel(black_box(&items)).unwrap())
    });
    let cts = k.encrypt_batch(&items).unwrap();
    let opens: Vec<(FieldContext<'_>, &[u8])> = items
        .iter()
        .zip(&cts)
        .map(|((c, _), ct)| (*c, ct.as_slice()))
        .collect();
    g.bench_function("coffer decrypt_batch (one core)", |b| {
        b.iter(|| k.decrypt_batch(black_box(&opens)))
    });
    g.bench_function("coffer decrypt_batch_parallel (all cores)", |b| {
        b.iter(|| k.decrypt_batch_parallel(black_box(&opens)))
    });
    g.finish();
}

fn key_wrap(c: &mut Criterion) {
    let mut g = c.benchmark_group("key-wrap-32B");
    let kek = Kek::from_bytes([9; 32]);
    let dek = Dek::from_bytes([7; 32]);
    let wrapped = kek.wrap_dek(&dek, WrapAlgorithm::AesKwp).unwrap();
    g.bench_function("baseline: aws-lc-rs AesKek unwrap_with_padding", |b| {
        b.iter(|| {
            let mut out = [0u8; 32];
            AesKek::new(&AES_256, &[9; 32])
                .unwrap()
                .unwrap_with_padding(black_box(&wrapped), &mut out)
                .unwrap()
                .len()
        })
    });
    g.bench_function("coffer Kek::unwrap_dek (AES-KWP)", |b| {
        b.iter(|| {
            kek.unwrap_dek(black_box(&wrapped), WrapAlgorithm::AesKwp)
                .unwrap()
        })
    });
    g.bench_function("coffer Kek::wrap_dek (AES-KWP)", |b| {
        b.iter(|| {
            kek.wrap_dek(black_box(&dek), WrapAlgorithm::AesKwp)
                .unwrap()
        })
    });
    g.finish();
}

fn passphrase(c: &mut Criterion) {
    let mut g = c.benchmark_group("passphrase-kdf-defaults");
    g.sample_size(10);
    let pbkdf2 = KdfParams::pbkdf2_default().unwrap();
    g.bench_function("PBKDF2-HMAC-SHA-256 default", |b| {
        b.iter(|| {
            pbkdf2
                .derive_kek(black_box(b"correct horse battery staple"))
                .unwrap()
        })
    });
    let argon = KdfParams::argon2id_default().unwrap();
    g.bench_function("Argon2id default", |b| {
        b.iter(|| {
            argon
                .derive_kek(black_box(b"correct horse battery staple"))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, single_values, batches, key_wrap, passphrase);
criterion_main!(benches);
