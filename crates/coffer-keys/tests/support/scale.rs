//! The key store at many scopes: bulk creation, paged listing by prefix, subject erasure, KEK
//! rotation in pages, the L1 bound (docs/KEYS.md, "Scale and subject erasure").

use coffer_core::{Kek, KeyVersion, ScopeId};
use coffer_keys::{
    AuditFilter, BulkCreate, Error, KeyStore, KeyringConfig, Operation, ScopePage,
    prefix_upper_bound,
};

use super::{Env, col, configured, keyring, one_kek, open, ring, scope, seal};

/// Every scope of `prefix` (destroyed ones included), read `limit` at a time.
async fn all_pages(store: &dyn KeyStore, prefix: Option<&str>, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_scopes(&ScopePage {
                prefix: prefix.map(str::to_owned),
                after: after.clone(),
                limit,
            })
            .await
            .unwrap();
        assert!(page.len() <= limit, "a page holds at most its limit");
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.scope.as_str().to_owned());
        out.extend(page.into_iter().map(|s| s.scope.as_str().to_owned()));
    }
    out
}

pub async fn scopes_are_created_in_bulk_with_an_outcome_each<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(env, &kek).await;
    let store = env.store().await;
    kr.create_scope(&scope("p:alive")).await.unwrap();
    kr.create_scope(&scope("p:gone")).await.unwrap();
    kr.destroy(&scope("p:gone")).await.unwrap();
    let audit_before = store.audit(&AuditFilter::default()).await.unwrap().len();

    // More than one batch, with an existing, a destroyed and a repeated name among them.
    let n = coffer_keys::keyring::BULK_BATCH + 1_500;
    let mut names: Vec<ScopeId> = (0..n).map(|i| scope(&format!("p:{i:06}"))).collect();
    names.insert(10, scope("p:alive"));
    names.insert(20, scope("p:gone"));
    names.insert(30, scope("p:000001"));
    let outcomes = kr.create_scopes(&names).await.unwrap();
    assert_eq!(outcomes.len(), names.len());
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, BulkCreate::Created { .. }))
        .count();
    assert_eq!(created, n);
    assert_eq!(outcomes[10], BulkCreate::Exists);
    assert!(
        matches!(outcomes[20], BulkCreate::Destroyed { destroyed_at_us } if destroyed_at_us > 0)
    );
    assert_eq!(
        outcomes[30],
        BulkCreate::Exists,
        "a repeated name is created once"
    );

    // The destroyed scope stays a tombstone; new scopes work, in this process and another.
    assert!(store.active_dek(&scope("p:gone")).await.unwrap().is_none());
    let c = col("ssn");
    for i in [0, 4_999, 5_000, n - 1] {
        let s = scope(&format!("p:{i:06}"));
        let rec = store.active_dek(&s).await.unwrap().unwrap();
        assert_eq!(rec.version, KeyVersion(1));
        let ct = seal(&kr, &s, &c, b"value").await;
        let other = one_kek(env, &kek).await;
        assert_eq!(open(&other, &s, &c, &ct).await, b"value");
    }

    // One chained `create` record per scope created, and the trail verifies.
    let trail = store.audit(&AuditFilter::default()).await.unwrap();
    let creates = trail[audit_before..]
        .iter()
        .filter(|r| r.event.operation == Operation::Create)
        .count();
    assert_eq!(creates, n);
    let (_, v) = kr.verify_audit().await.unwrap();
    assert_eq!(v.outcome, coffer_keys::audit::Outcome::Intact);

    // Repeating the run (after a crash, say) creates nothing and changes nothing.
    let again = kr.create_scopes(&names).await.unwrap();
    assert!(
        again
            .iter()
            .all(|o| !matches!(o, BulkCreate::Created { .. })),
        "nothing is created twice"
    );

    // A reserved name refuses the whole call before anything is written.
    let err = kr
        .create_scopes(&[scope("p:new"), scope("coffer:audit")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    assert!(store.scope(&scope("p:new")).await.unwrap().is_none());
}

pub async fn scopes_are_listed_a_page_at_a_time_by_prefix<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(env, &kek).await;
    let store = env.store().await;
    let names = [
        "patient:1",
        "patient:1/notes",
        "patient:1/visits",
        "patient:10",
        "patient:1é",
        "patient:1\u{10FFFF}",
        "patient:2",
        "patient;",
        "patienta",
        "tenant:x",
    ];
    let ids: Vec<ScopeId> = names.iter().map(|n| scope(n)).collect();
    kr.create_scopes(&ids).await.unwrap();
    kr.destroy(&scope("patient:10")).await.unwrap();

    // Code point order, every page at most its limit, pages adjoining without gap or overlap.
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort_unstable();
    for limit in [1, 2, 3, 100] {
        let all = all_pages(store.as_ref(), None, limit).await;
        let listed: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|s| !s.starts_with("coffer:"))
            .collect();
        assert_eq!(listed, sorted, "limit {limit}");
        let p1 = all_pages(store.as_ref(), Some("patient:1"), limit).await;
        assert_eq!(
            p1,
            [
                "patient:1",
                "patient:1/notes",
                "patient:1/visits",
                "patient:10",
                "patient:1é",
                "patient:1\u{10FFFF}",
            ],
            "limit {limit}"
        );
        let sub = all_pages(store.as_ref(), Some("patient:1/"), limit).await;
        assert_eq!(sub, ["patient:1/notes", "patient:1/visits"]);
    }
    // A destroyed scope is listed, as a tombstone.
    let page = store
        .list_scopes(&ScopePage {
            prefix: Some("patient:10".into()),
            after: None,
            limit: 5,
        })
        .await
        .unwrap();
    assert!(page[0].is_destroyed());
    // `after` outside the prefix's range: nothing, or the whole range.
    let none = store
        .list_scopes(&ScopePage {
            prefix: Some("patient:1".into()),
            after: Some("q".into()),
            limit: 5,
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let whole = store
        .list_scopes(&ScopePage {
            prefix: Some("patient:2".into()),
            after: Some("a".into()),
            limit: 5,
        })
        .await
        .unwrap();
    assert_eq!(whole.len(), 1);
    // The active DEKs of live scopes, a page at a time (what `keys check` walks).
    let mut seen = Vec::new();
    let mut after: Option<ScopeId> = None;
    loop {
        let page = store.active_deks_page(after.as_ref(), 3).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.scope.clone());
        seen.extend(page.into_iter().map(|d| d.scope.as_str().to_owned()));
    }
    seen.retain(|s| !s.starts_with("coffer:"));
    seen.sort_unstable();
    let mut live: Vec<&str> = sorted
        .iter()
        .copied()
        .filter(|s| *s != "patient:10")
        .collect();
    live.sort_unstable();
    assert_eq!(seen, live);
}

pub async fn a_subject_is_erased_with_its_sub_scopes<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("tombstones");
    let config = KeyringConfig {
        tombstone_file: Some(ledger.clone()),
        ..KeyringConfig::default()
    };
    let kr = configured(env, &kek, config).await;
    let other = one_kek(env, &kek).await;
    let store = env.store().await;
    let c = col("notes");
    let erased = ["patient:1234", "patient:1234/notes", "patient:1234/visits"];
    let kept = [
        "patient:12345",
        "patient:1234x",
        "patient:123",
        "patient:12345/visits",
    ];
    let mut sealed = Vec::new();
    for n in erased.iter().chain(&kept) {
        let s = scope(n);
        kr.create_scope(&s).await.unwrap();
        let ct = seal(&kr, &s, &c, n.as_bytes()).await;
        assert_eq!(open(&other, &s, &c, &ct).await, n.as_bytes());
        sealed.push((s, ct));
    }

    let done = kr.erase_subject(&scope("patient:1234")).await.unwrap();
    let names: Vec<&str> = done.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, erased);
    assert!(done.iter().all(|(_, n)| *n == 1));
    // This process and a new one fail on the erased scopes (other running processes drop
    // their cached keys through the store's bus or L2, tested with destroy).
    let fresh = one_kek(env, &kek).await;
    for (s, ct) in &sealed {
        let gone = erased.contains(&s.as_str());
        for k in [&kr, &fresh] {
            let r = k
                .decrypt(s, &c, &coffer_core::FieldContext::new(), ct)
                .await;
            if gone {
                assert!(matches!(r, Err(Error::Destroyed { .. })), "{s}: {r:?}");
            } else {
                assert_eq!(r.unwrap().unwrap(), s.as_str().as_bytes());
            }
        }
    }
    // One `erase` record per scope, naming the subject and the scope, never data.
    let trail = store.audit(&AuditFilter::default()).await.unwrap();
    let records: Vec<_> = trail
        .iter()
        .filter(|r| r.event.operation == Operation::Erase)
        .collect();
    assert_eq!(records.len(), 3);
    for (r, n) in records.iter().zip(erased) {
        assert_eq!(r.event.scope.as_deref(), Some(n));
        assert!(
            r.event
                .detail
                .contains("erasure of data subject 'patient:1234'")
        );
    }
    // A tombstone line per scope, as destroy writes.
    let lines = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(lines.lines().count(), 3);
    for n in erased {
        assert!(lines.contains(&hex::encode(n)), "{n} in the ledger");
    }
    // The names stay tombstones; erasing again destroys nothing.
    assert!(matches!(
        kr.create_scope(&scope("patient:1234/visits")).await,
        Err(Error::ScopeDestroyed { .. })
    ));
    assert!(
        kr.erase_subject(&scope("patient:1234"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        kr.subject_scopes(&scope("patient:1234"))
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(
        kr.subject_scopes(&scope("patient:9"))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn kek_rotation_walks_the_deks_in_pages<E: Env>(env: &E) {
    let (a, b) = (Kek::generate().unwrap(), Kek::generate().unwrap());
    let old = one_kek(env, &a).await;
    let names: Vec<ScopeId> = (0..57).map(|i| scope(&format!("r:{i:03}"))).collect();
    old.create_scopes(&names).await.unwrap();
    for s in names.iter().step_by(5) {
        old.rotate(s).await.unwrap();
    }
    let c = col("x");
    let mut sealed = Vec::new();
    for s in &names {
        sealed.push(seal(&old, s, &c, s.as_str().as_bytes()).await);
    }
    let new = keyring(
        env,
        ring(&[("main", 1, &a), ("main", 2, &b)], ("main", 2)),
        KeyringConfig::default(),
    )
    .await;
    let mut batches = 0;
    let report = new.rotate_kek(5, |_| batches += 1).await.unwrap();
    // 57 first versions, 12 second ones (and the audit chain key).
    assert_eq!(report.rewrapped, 57 + 12 + 1);
    assert!(batches >= 14, "{batches} batches of at most 5");
    let store = env.store().await;
    let target = coffer_keys::KekId::new("main", 2).unwrap();
    assert_eq!(store.count_deks_not_under(&target).await.unwrap(), 0);
    // Every DEK opens under the new KEK alone.
    let only_b = keyring(
        env,
        ring(&[("main", 2, &b)], ("main", 2)),
        KeyringConfig::default(),
    )
    .await;
    for (s, ct) in names.iter().zip(&sealed) {
        assert_eq!(open(&only_b, s, &c, ct).await, s.as_str().as_bytes());
    }
    // A second run has nothing to do.
    assert_eq!(new.rotate_kek(5, |_| {}).await.unwrap().rewrapped, 0);
}

#[test]
fn prefix_upper_bounds_follow_code_point_order() {
    assert_eq!(
        prefix_upper_bound("patient:1").as_deref(),
        Some("patient:2")
    );
    assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
    assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
    assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    assert_eq!(prefix_upper_bound(""), None);
}
