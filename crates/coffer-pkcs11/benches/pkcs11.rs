//! One SoftHSM2 unwrap (`C_Decrypt`, CKM_AES_GCM) and wrap (`C_Encrypt`) through the provider,
//! including the hop to tokio's blocking pool. Sets the token up with scripts/softhsm-setup.sh
//! unless `SOFTHSM2_CONF` is set; skips, saying why, when SoftHSM2 is not available.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use coffer_core::Dek;
use coffer_keys::KekProvider;
use coffer_pkcs11::Pkcs11Kek;
use coffer_testkit::fixtures::DekSlot;
use criterion::Criterion;

fn main() {
    let hsm = match support::hsm() {
        Ok(hsm) => hsm,
        Err(e) => {
            println!("skipping the PKCS#11 benchmarks: {e}");
            return;
        }
    };
    let kek = match Pkcs11Kek::open_or_generate(&hsm.reference("coffer-bench-kek")) {
        Ok((kek, _)) => kek,
        Err(e) => {
            println!("skipping the PKCS#11 benchmarks: {e}");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let slot = DekSlot::new();
    let ctx = slot.wrap_context();
    let dek = Dek::generate().unwrap();
    let wrapped = rt.block_on(kek.wrap(&dek, &ctx)).unwrap();

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("pkcs11_softhsm2");
    g.bench_function("unwrap_gcm_c_decrypt", |b| {
        b.iter(|| rt.block_on(kek.unwrap(black_box(&wrapped), &ctx)).unwrap());
    });
    g.bench_function("wrap_gcm_c_encrypt", |b| {
        b.iter(|| rt.block_on(kek.wrap(black_box(&dek), &ctx)).unwrap());
    });
    g.finish();
    c.final_summary();
}
