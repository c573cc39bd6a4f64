//! Streaming-format throughput on one core: 16 MiB through `Encryptor` and `Decryptor` with
//! 64 KiB frames, beside a bare aws-lc-rs AES-256-GCM seal of the same 64 KiB frames (the
//! baseline; `make bench` also prints `openssl speed -evp aes-256-gcm -bytes 65536`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::io::{Read as _, Write as _};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use coffer_core::Kek;
use coffer_core::stream::{Decryptor, EncryptionContext, Encryptor, Limits, RawAesKeyring};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TOTAL: usize = 16 * 1024 * 1024;
const FRAME: usize = 64 * 1024;

fn stream(c: &mut Criterion) {
    let keyring = RawAesKeyring::new("bench", "k/v1", Kek::from_bytes([1; 32])).unwrap();
    let ctx = EncryptionContext::new();
    let pt = vec![0x5au8; TOTAL];
    let mut g = c.benchmark_group("stream-16MiB-64KiB-frames");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(20);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[2; 32]).unwrap());
    let mut buf = pt.clone();
    g.bench_function("baseline-aws-lc-rs-gcm-seal-frames", |b| {
        b.iter(|| {
            for (i, chunk) in buf.chunks_mut(FRAME).enumerate() {
                let mut iv = [0u8; 12];
                iv[8..].copy_from_slice(&(i as u32).to_be_bytes());
                let _tag = black_box(
                    key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(&[0u8; 80][..]),
                        chunk,
                    )
                    .unwrap(),
                );
            }
        })
    });
    g.bench_function("encrypt", |b| {
        b.iter(|| {
            let mut e = Encryptor::new(
                Vec::with_capacity(TOTAL + 16 * 1024),
                &[&keyring],
                &ctx,
                FRAME as u32,
            )
            .unwrap();
            e.write_all(&pt).unwrap();
            black_box(e.finish().unwrap())
        })
    });
    let msg = {
        let mut e = Encryptor::new(Vec::new(), &[&keyring], &ctx, FRAME as u32).unwrap();
        e.write_all(&pt).unwrap();
        e.finish().unwrap()
    };
    let mut out = Vec::with_capacity(TOTAL);
    g.bench_function("decrypt", |b| {
        b.iter(|| {
            out.clear();
            let mut d = Decryptor::new(&msg[..], &[&keyring], Limits::default()).unwrap();
            d.read_to_end(&mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);
