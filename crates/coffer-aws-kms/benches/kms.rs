//! One DEK unwrap through `AwsKmsKek` against moto on loopback. This measures the provider, the
//! SDK (signing, HTTP, retries layer) and moto, not AWS: real KMS adds network round trips and
//! its own latency (typically milliseconds), which the DEK cache exists to hide.
//!
//! The endpoint comes from `COFFER_TEST_MOTO_ENDPOINT`, or `scripts/moto-up.sh` is run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use coffer_core::Dek;
use coffer_keys::KekProvider;
use coffer_testkit::bench_setup;
use coffer_testkit::fixtures::DekSlot;
use criterion::{Criterion, criterion_group, criterion_main};

fn unwrap(c: &mut Criterion) {
    let rt = bench_setup::two_workers();
    let endpoint = common::moto_endpoint();
    eprintln!(
        "note: aws-kms/unwrap runs against moto at {endpoint} (loopback); moto latency is not \
         AWS KMS latency, which adds network round trips and KMS's own processing time"
    );
    let slot = DekSlot::in_scope("tenant:bench");
    let (kek, wrapped) = rt.block_on(async {
        let admin = common::admin().await;
        let (key_id, _) = common::create_key(&admin).await;
        let kek = common::kek(&key_id).await;
        let wrapped = kek
            .wrap(&Dek::generate().unwrap(), &slot.wrap_context())
            .await
            .unwrap();
        (kek, wrapped)
    });
    let ctx = slot.wrap_context();
    c.bench_function("aws-kms/unwrap (moto, loopback)", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(kek.unwrap(black_box(&wrapped), &ctx).await.unwrap()) })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = unwrap
}
criterion_main!(benches);
