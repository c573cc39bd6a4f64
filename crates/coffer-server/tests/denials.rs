//! Wrong-tenant probes are counted and written with the access counts, one audit record per
//! token, scope and reason per interval: requests do not turn into key-store writes one for one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Service, expect_error};

#[tokio::test]
async fn denials_are_aggregated_into_one_audit_record_per_interval() {
    let (svc, admin, acme) = Service::start_with_tokens("audit_interval = \"1h\"\n").await;
    svc.create_scope(&admin, "globex:users", "globex").await;
    let denied = |records: &[coffer_keys::AuditRecord]| {
        records
            .iter()
            .filter(|r| r.event.operation == coffer_keys::Operation::AccessDenied)
            .map(|r| r.event.detail.clone())
            .collect::<Vec<_>>()
    };
    let before = svc.audit("globex:users").await.len();
    let c = svc.client();
    let n = 40;
    for _ in 0..n {
        let r = c.encrypt_one(&acme, "globex:users", "v").await;
        expect_error(&r, 403, "wrong_tenant");
    }
    // Nothing written yet: the probes are counted in memory.
    assert_eq!(svc.audit("globex:users").await.len(), before);
    svc.app.flush_audit(false).await;
    let records = svc.audit("globex:users").await;
    let d = denied(&records);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].contains("tenant=acme") && d[0].contains(&format!("count={n}")),
        "{}",
        d[0]
    );
    // The next flush has nothing new to write.
    svc.app.flush_audit(false).await;
    assert_eq!(denied(&svc.audit("globex:users").await).len(), 1);
}
