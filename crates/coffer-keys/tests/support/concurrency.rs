//! Several keyrings ("processes") over one store at once: rotations under load, racing creations and rotations, single-flight unwraps, shared lease blocks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use coffer_core::{FieldContext, Kek, KeyVersion, Suite};
use coffer_keys::{AuditFilter, DekState, Operation};

use super::{Env, col, configured, leasing, one_kek, scope, seal};

pub async fn rotation_under_load_loses_nothing<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(env, &kek).await;
    let s = scope("table:patients");
    kr.create_scope(&s).await.unwrap();
    // Another "process": its own pool and caches over the same store.
    let other = one_kek(env, &kek).await;

    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let kr = if t % 2 == 0 {
            kr.clone()
        } else {
            other.clone()
        };
        let (s, written, failures, stop) =
            (s.clone(), written.clone(), failures.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = col("diagnosis");
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) || i < 20 {
                let value = format!("task {t} value {i}");
                let row = format!("{t}/{i}");
                let parts: &[&[u8]] = &[row.as_bytes()];
                let ctx = FieldContext::row(parts);
                match kr
                    .encrypt(&s, &c, Suite::Gcm96, &ctx, value.as_bytes())
                    .await
                {
                    Ok(ct) => {
                        // Read back at once, and every earlier value of this task too.
                        match kr.decrypt(&s, &c, &ctx, &ct).await {
                            Ok(Some(p)) if p == value.as_bytes() => {}
                            _ => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        written.lock().unwrap().push((row, value, ct));
                    }
                    Err(e) => {
                        eprintln!("write failed: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        kr.rotate(&s).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no failed read or write"
    );

    // No lost write: every value written reads back, through a cold keyring.
    let cold = one_kek(env, &kek).await;
    let c = col("diagnosis");
    let written = written.lock().unwrap().clone();
    assert!(written.len() >= 80);
    let mut versions = std::collections::BTreeSet::new();
    for (row, value, ct) in &written {
        let parts: &[&[u8]] = &[row.as_bytes()];
        let got = cold
            .decrypt(&s, &c, &FieldContext::row(parts), ct)
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some(value.as_bytes()));
        versions.insert(coffer_core::Header::parse(ct).unwrap().0.version);
    }
    assert!(
        versions.len() >= 2,
        "writes spanned several versions: {versions:?}"
    );
    let deks = cold.store().deks(&s).await.unwrap();
    assert_eq!(deks.len(), 6);
    assert_eq!(
        deks.iter().filter(|d| d.state == DekState::Active).count(),
        1
    );
}

pub async fn concurrent_creates_and_rotations_leave_one_active_version<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    // Eight independent keyrings (eight "processes", each with its own pool).
    let mut rings = Vec::new();
    for _ in 0..8 {
        rings.push(one_kek(env, &kek).await);
    }
    let s = scope("ballot:2026-11");
    let created = futures_join(rings.iter().map(|kr| {
        let s = s.clone();
        let kr = kr.clone();
        async move { kr.ensure_scope(&s).await.unwrap() }
    }))
    .await;
    assert!(created.iter().all(|v| *v == KeyVersion(1)), "{created:?}");

    // All eight rotate away from v1 at once: exactly one wins, the others see its version.
    let rotated = futures_join(rings.iter().map(|kr| {
        let s = s.clone();
        let kr = kr.clone();
        async move {
            kr.rotate_if_active(&s, KeyVersion(1))
                .await
                .unwrap()
                .version
        }
    }))
    .await;
    assert!(rotated.iter().all(|v| *v == KeyVersion(2)), "{rotated:?}");
    let deks = rings[0].store().deks(&s).await.unwrap();
    assert_eq!(deks.len(), 2);
    assert_eq!(
        deks.iter().filter(|d| d.state == DekState::Active).count(),
        1
    );

    // Unconditional rotations at once: each makes a version or loses a race to one; never
    // two active versions, never a gap or a reused number.
    futures_join(rings.iter().map(|kr| {
        let s = s.clone();
        let kr = kr.clone();
        async move { kr.rotate(&s).await.unwrap().version }
    }))
    .await;
    let deks = rings[0].store().deks(&s).await.unwrap();
    assert_eq!(
        deks.iter().filter(|d| d.state == DekState::Active).count(),
        1
    );
    let numbers: Vec<u32> = deks.iter().map(|d| d.version.0).collect();
    assert_eq!(numbers, (1..=numbers.len() as u32).collect::<Vec<_>>());
    assert!(numbers.len() >= 3 && numbers.len() <= 10, "{numbers:?}");
    assert_eq!(deks.last().unwrap().state, DekState::Active);
    let rotations = rings[0]
        .store()
        .audit(&AuditFilter::default())
        .await
        .unwrap()
        .iter()
        .filter(|r| matches!(r.event.operation, Operation::Create | Operation::Rotate))
        .count();
    assert_eq!(rotations, numbers.len(), "one audit event per version made");
}

pub async fn cold_requests_make_one_kek_call<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let warm = one_kek(env, &kek).await;
    let s = scope("tenant:busy");
    warm.create_scope(&s).await.unwrap();
    let c = col("email");
    let ct = seal(&warm, &s, &c, b"a@example.org").await;

    let cold = one_kek(env, &kek).await;
    let results = futures_join((0..1000).map(|_| {
        let (cold, s, c, ct) = (cold.clone(), s.clone(), c.clone(), ct.clone());
        async move { cold.decrypt(&s, &c, &FieldContext::new(), &ct).await }
    }))
    .await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(Some(p)) if p == b"a@example.org"))
    );
    let stats = cold.stats();
    assert_eq!(stats.kek_unwraps, 1, "{stats:?}");
    assert_eq!(stats.l1_hits + stats.l1_misses, 1000);
}

/// Writers that find the lease used up at the same moment share the next block: before, each
/// leased a block of its own, and under load the key store counted 20–30 times more encryptions
/// than were made (docs/BENCHMARKS.md, the service benchmark).
pub async fn concurrent_writers_lease_one_block_at_a_time<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let kr = configured(env, &kek, leasing(1000)).await;
    let s = scope("table:busy");
    kr.create_scope(&s).await.unwrap();
    let writers: Vec<_> = (0..200u32)
        .map(|w| {
            let kr = kr.clone();
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..10u32 {
                    let v = (w * 10 + i).to_be_bytes();
                    kr.encrypt(&s, &col("n"), Suite::Gcm96, &FieldContext::new(), &v)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let deks = kr.store().deks(&s).await.unwrap();
    assert_eq!(deks.len(), 1, "{deks:?}");
    // 2 000 encryptions: two blocks, three at most if two refills crossed.
    assert!(deks[0].encryptions <= 3000, "{deks:?}");
}

async fn futures_join<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
