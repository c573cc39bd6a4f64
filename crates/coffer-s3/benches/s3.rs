//! coffer-s3 against moto on loopback, each figure beside the same operation done with plain,
//! unencrypted object_store calls in the same run: a 64 MiB put (multipart, 8 MiB parts, two at a
//! time in both), a 64 MiB get, and a 64 KiB range of it.
//!
//! moto is a Python server: it, not the encryption, bounds these figures, and real S3 adds
//! network round trips. What they show is the cost Coffer adds on top of the same S3 traffic
//! (encrypting, decrypting, and for a range the extra GETs of the header and final frame).
//! The endpoint comes from `COFFER_TEST_MOTO_ENDPOINT`, or `scripts/moto-up.sh` is run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io;

use bytes::Bytes;
use coffer_core::stream::EncryptionContext;
use coffer_keys::FileKeyring;
use coffer_s3::object_store::{ObjectStoreExt as _, WriteMultipart};
use coffer_s3::{Bucket, Path, PutOptions};
use coffer_testkit::bench_setup;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LEN: usize = 64 * 1024 * 1024;
const PART: usize = 8 * 1024 * 1024;
const RANGE: u64 = 64 * 1024;

fn s3(c: &mut Criterion) {
    let rt = bench_setup::two_workers();
    eprintln!(
        "note: s3 benches run against moto at {} (loopback)",
        common::moto_endpoint()
    );
    let name = common::create_bucket("bench");
    let store = common::s3(&name);
    let bucket = Bucket::new(name, store.clone());
    let keyring = common::keyring("bench/v1");
    let keys: [&dyn FileKeyring; 1] = [&keyring];
    let context = EncryptionContext::new();
    let opts = PutOptions::default();
    let pt = Bytes::from(common::data(LEN));
    let (plain, sealed) = (Path::from("plain.bin"), Path::from("sealed.bin"));

    let mut g = c.benchmark_group("s3 put 64 MiB (moto)");
    g.sample_size(10).throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("baseline put: plain object_store multipart", |b| {
        b.to_async(&rt).iter(|| async {
            let upload = store.put_multipart(&plain).await.unwrap();
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
            for chunk in pt.chunks(PART) {
                w.wait_for_capacity(opts.concurrency).await.unwrap();
                w.put(pt.slice_ref(chunk));
            }
            black_box(w.finish().await.unwrap())
        })
    });
    g.bench_function("coffer put: encrypt + multipart", |b| {
        b.to_async(&rt).iter(|| async {
            let src = io::Cursor::new(pt.clone());
            black_box(
                bucket
                    .put(&sealed, src, &keys, &context, &opts)
                    .await
                    .unwrap(),
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("s3 get 64 MiB (moto)");
    g.sample_size(10).throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("baseline get: plain object_store", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.get(&plain).await.unwrap().bytes().await.unwrap()) })
    });
    g.bench_function("coffer get: download + decrypt", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(bucket.get(&sealed, &keys, io::sink()).await.unwrap()) })
    });
    g.finish();

    // A 64 KiB range in the middle, not frame-aligned (two frames).
    let start = 23 * 1024 * 1024 + 4321;
    let mut g = c.benchmark_group("s3 range 64 KiB of 64 MiB (moto)");
    g.sample_size(30).throughput(Throughput::Bytes(RANGE));
    g.bench_function("baseline range: one plain ranged GET", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(store.get_range(&plain, start..start + RANGE).await.unwrap())
        })
    });
    g.bench_function("coffer get_range: header, final frame, 2 frames", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                bucket
                    .get_range(&sealed, &keys, start..start + RANGE)
                    .await
                    .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, s3);
criterion_main!(benches);
