//! The data endpoints in process, each on a fresh key store: encrypt and decrypt in every mode
//! and encoding, blind indexes, data keys, rotation and rewrap, scope information, the errors a
//! failing request answers, and what /metrics and the audit trail record.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_keys::KeyStore as _;
use common::{
    CARD, DETERMINISTIC, EMAIL, MARKER, METRICS_TOKEN, NATIONAL_ID, SSN, Tenants, expect_error,
    secrets,
};
use serde_json::{Value, json};

/// The six values of the round trip: text, an array context, deterministic, a 128-bit tag, an
/// authenticated NULL and a value no redactor recognises.
fn six_values() -> Value {
    json!({"encoding": "utf8", "items": [
        {"column": "ssn", "context": "42", "plaintext": SSN},
        {"column": "email", "context": ["acme", "42"], "plaintext": EMAIL, "type": "text"},
        {"column": "nid", "mode": DETERMINISTIC, "plaintext": NATIONAL_ID},
        {"column": "card", "context": "42", "mode": "randomized-tag128", "plaintext": CARD},
        {"column": "notes", "context": "42", "null": true},
        {"column": "marker", "context": "42", "plaintext": MARKER},
    ]})
}

/// The decrypt items for the ciphertexts of [`six_values`].
fn six_items(cts: &[String]) -> Value {
    json!([
        {"column": "ssn", "context": "42", "ciphertext": cts[0]},
        {"column": "email", "context": ["acme", "42"], "type": "text", "ciphertext": cts[1]},
        {"column": "nid", "ciphertext": cts[2]},
        {"column": "card", "context": "42", "ciphertext": cts[3]},
        {"column": "notes", "context": "42", "ciphertext": cts[4]},
        {"column": "marker", "context": "42", "ciphertext": cts[5]},
    ])
}

fn ciphertexts(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ciphertext"].as_str().unwrap().to_owned())
        .collect()
}

async fn encrypt_six(t: &Tenants) -> Vec<String> {
    let enc = t
        .svc
        .client()
        .post("/v1/scopes/acme:patients/encrypt", &t.acme, six_values())
        .await;
    assert_eq!(enc.0, 200, "{}", enc.1);
    assert_eq!(enc.1["version"], 1);
    ciphertexts(&enc.1["items"])
}

fn bidx(v: &str, search: bool) -> Value {
    json!({"encoding": "utf8", "search": search, "items": [
        {"column": "ssn", "index": "ssn_eq", "bits": 24, "normalize": ["digits"], "values": [v]}
    ]})
}

#[tokio::test]
async fn encrypt_then_decrypt_every_mode_type_and_null() {
    let t = Tenants::start("").await;
    let c = t.svc.client();
    let cts = encrypt_six(&t).await;
    assert!(cts.iter().all(|c| c.starts_with("cf1:")));
    let dec = c
        .utf8("decrypt", "acme:patients", &t.acme, six_items(&cts))
        .await;
    assert_eq!(dec.0, 200, "{}", dec.1);
    let got = dec.1["items"].as_array().unwrap();
    assert_eq!(got[0]["plaintext"], SSN);
    assert_eq!(got[1]["plaintext"], EMAIL);
    assert_eq!(got[2]["plaintext"], NATIONAL_ID);
    assert_eq!(got[3]["plaintext"], CARD);
    assert_eq!(got[4]["null"], true);
    assert!(got[4].get("plaintext").is_none());
    assert_eq!(got[5]["plaintext"], MARKER);
}

#[tokio::test]
async fn base64_values_round_trip_any_bytes() {
    let t = Tenants::start("").await;
    let c = t.svc.client();
    let bytes = STANDARD.encode([0u8, 255, 1]);
    let enc = c
        .post(
            "/v1/scopes/acme:patients/encrypt",
            &t.acme,
            json!({"items": [{"column": "bin", "plaintext": bytes}]}),
        )
        .await;
    assert_eq!(enc.0, 200, "{}", enc.1);
    let dec = c
        .post(
            "/v1/scopes/acme:patients/decrypt",
            &t.acme,
            json!({"items": [{"column": "bin", "ciphertext": enc.1["items"][0]["ciphertext"]}]}),
        )
        .await;
    assert_eq!(dec.1["items"][0]["plaintext"], bytes);
}

#[tokio::test]
async fn deterministic_mode_gives_equal_ciphertexts_or_is_refused_by_fips() {
    let t = Tenants::start("").await;
    let c = t.svc.client();
    let body = json!({"encoding": "utf8", "items": [{"column": "nid", "mode": "deterministic", "plaintext": NATIONAL_ID}]});
    let first = c
        .post("/v1/scopes/acme:patients/encrypt", &t.acme, body.clone())
        .await;
    let again = c
        .post("/v1/scopes/acme:patients/encrypt", &t.acme, body)
        .await;
    if cfg!(feature = "fips") {
        expect_error(&again, 400, "invalid");
    } else {
        assert_eq!(first.0, 200, "{}", first.1);
        assert_eq!(
            again.1["items"][0]["ciphertext"],
            first.1["items"][0]["ciphertext"]
        );
    }
}

#[tokio::test]
async fn blind_index_normalizes_and_differs_between_tenants() {
    let t = Tenants::start("").await;
    let c = t.svc.client();
    let path = "/v1/scopes/acme:patients/blind-index";
    let stored = c.post(path, &t.acme, bidx(SSN, false)).await;
    assert_eq!(stored.0, 200, "{}", stored.1);
    let other_spelling = c.post(path, &t.acme, bidx("123456789", false)).await;
    assert_eq!(
        stored.1["items"][0][0]["index"],
        other_spelling.1["items"][0][0]["index"]
    );
    assert_eq!(stored.1["items"][0][0]["index"].as_str().unwrap().len(), 6);
    // Another tenant's index of the same value differs (its scope's keys are its own).
    let theirs = c
        .post(
            "/v1/scopes/globex:users/blind-index",
            &t.globex,
            bidx(SSN, false),
        )
        .await;
    assert_eq!(theirs.0, 200);
    assert_ne!(
        theirs.1["items"][0][0]["index"],
        stored.1["items"][0][0]["index"]
    );
}

#[tokio::test]
async fn data_keys_open_to_the_key_they_were_issued_as() {
    let t = Tenants::start("").await;
    let c = t.svc.client();
    let dk = c
        .post(
            "/v1/scopes/acme:patients/datakeys",
            &t.acme,
            json!({"count": 2}),
        )
        .await;
    assert_eq!(dk.0, 200, "{}", dk.1);
    assert_eq!(dk.1["items"].as_array().unwrap().len(), 2);
    let k0 = &dk.1["items"][0];
    let plain = STANDARD.decode(k0["plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(plain.len(), 32);
    let opened = c
        .post(
            "/v1/scopes/acme:patients/datakeys/decrypt",
            &t.acme,
            json!({"items": [{"wrapped": k0["wrapped"]}]}),
        )
        .await;
    assert_eq!(opened.0, 200, "{}", opened.1);
    assert_eq!(opened.1["items"][0]["plaintext"], k0["plaintext"]);
    // Another tenant's scope does not open it.
    let r = c
        .post(
            "/v1/scopes/globex:users/datakeys/decrypt",
            &t.globex,
            json!({"items": [{"wrapped": k0["wrapped"]}]}),
        )
        .await;
    expect_error(&r, 422, "decryption_failed");
}

#[tokio::test]
async fn rotation_then_rewrap_moves_values_and_search_covers_both_versions() {
    let t = Tenants::start("").await;
    let c = t.svc.client();
    let cts = encrypt_six(&t).await;
    let dec = c
        .utf8("decrypt", "acme:patients", &t.acme, six_items(&cts))
        .await;
    let stored = c
        .post(
            "/v1/scopes/acme:patients/blind-index",
            &t.acme,
            bidx(SSN, false),
        )
        .await;
    let dk = c
        .post("/v1/scopes/acme:patients/datakeys", &t.acme, json!({}))
        .await;
    let k0 = dk.1["items"][0].clone();

    let rot = c
        .send(
            reqwest::Method::POST,
            "/v1/admin/scopes/acme:patients/rotate",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(rot.0, 200, "{}", rot.1);
    assert_eq!(rot.1["version"], 2);
    let mut items = six_items(&cts).as_array().unwrap().clone();
    items.push(json!({"wrapped": k0["wrapped"]}));
    let rw = c
        .post(
            "/v1/scopes/acme:patients/rewrap",
            &t.acme,
            json!({"items": items}),
        )
        .await;
    assert_eq!(rw.0, 200, "{}", rw.1);
    assert_eq!(rw.1["version"], 2);
    let out = rw.1["items"].as_array().unwrap();
    assert!(out.iter().all(|i| i["changed"] == true));
    let new_cts = ciphertexts(&Value::Array(out[..6].to_vec()));
    let dec2 = c
        .utf8("decrypt", "acme:patients", &t.acme, six_items(&new_cts))
        .await;
    assert_eq!(dec2.0, 200, "{}", dec2.1);
    assert_eq!(dec2.1["items"], dec.1["items"]);
    let rewrapped_key = out[6]["wrapped"].clone();
    assert_ne!(rewrapped_key, k0["wrapped"]);
    let opened = c
        .post(
            "/v1/scopes/acme:patients/datakeys/decrypt",
            &t.acme,
            json!({"items": [{"wrapped": rewrapped_key}]}),
        )
        .await;
    assert_eq!(opened.1["items"][0]["plaintext"], k0["plaintext"]);
    // A value under the active version comes back unchanged.
    let again = c
        .post(
            "/v1/scopes/acme:patients/rewrap",
            &t.acme,
            json!({"items": [{"column": "ssn", "context": "42", "ciphertext": new_cts[0]}]}),
        )
        .await;
    assert_eq!(again.1["items"][0]["changed"], false);
    assert_eq!(again.1["items"][0]["ciphertext"], new_cts[0].as_str());
    let terms = c
        .post(
            "/v1/scopes/acme:patients/blind-index",
            &t.acme,
            bidx(SSN, true),
        )
        .await;
    let terms = terms.1["items"][0].as_array().unwrap().clone();
    assert_eq!(terms.len(), 2, "{terms:?}");
    assert_eq!(terms[0]["version"], 2);
    assert_eq!(terms[1]["index"], stored.1["items"][0][0]["index"]);
}

#[tokio::test]
async fn scope_information_for_the_tenant_and_the_admin() {
    let t = Tenants::start("").await;
    let c = t.svc.client();
    let rot = c
        .send(
            reqwest::Method::POST,
            "/v1/admin/scopes/acme:patients/rotate",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(rot.0, 200, "{}", rot.1);
    let info = c.get("/v1/scopes/acme:patients", Some(&t.acme)).await;
    assert_eq!(info.0, 200, "{}", info.1);
    assert_eq!(info.1["versions"].as_array().unwrap().len(), 2);
    assert_eq!(info.1["versions"][0]["state"], "decrypt-only");
    assert_eq!(info.1["versions"][1]["state"], "active");
    let ainfo = c
        .get("/v1/admin/scopes/acme:patients", Some(&t.admin))
        .await;
    assert_eq!(ainfo.1["tenant"], "acme");
    let list = c.get("/v1/admin/scopes", Some(&t.admin)).await;
    assert!(
        list.1["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["scope"] == "globex:users" && s["tenant"] == "globex"),
        "{}",
        list.1
    );
}

#[tokio::test]
async fn failing_requests_answer_the_error_and_the_failing_item() {
    let t = Tenants::start("max_batch = 50\n").await;
    let c = t.svc.client();
    let cts = encrypt_six(&t).await;
    t.failing_requests(&json!(cts[0])).await;
    let r = c
        .utf8(
            "blind-index",
            "acme:patients",
            &t.acme,
            json!([{"column": "ssn", "bits": MARKER, "values": [SSN]}]),
        )
        .await;
    expect_error(&r, 400, "bad_request");
    let many: Vec<Value> = (0..51)
        .map(|_| json!({"column": "m", "plaintext": MARKER}))
        .collect();
    let r = c.utf8("encrypt", "acme:patients", &t.acme, many).await;
    expect_error(&r, 400, "batch_too_large");
}

#[tokio::test]
async fn metrics_count_requests_by_operation_and_outcome_without_tenants_or_plaintexts() {
    let t = Tenants::start("").await;
    let c = t.svc.client();
    let cts = encrypt_six(&t).await;
    let r = c
        .utf8(
            "decrypt",
            "acme:patients",
            &t.acme,
            json!([{"column": "ssn", "context": "43", "ciphertext": cts[0]}]),
        )
        .await;
    expect_error(&r, 422, "decryption_failed");
    let r = c
        .utf8(
            "encrypt",
            "globex:users",
            &t.acme,
            json!([{"column": "m", "plaintext": MARKER}]),
        )
        .await;
    expect_error(&r, 403, "wrong_tenant");
    let m = c.metrics(METRICS_TOKEN).await;
    for needle in [
        "coffer_service_requests_total{operation=\"encrypt\",outcome=\"ok\"}",
        "coffer_service_requests_total{operation=\"decrypt\",outcome=\"decryption_failed\"}",
        "coffer_service_requests_total{operation=\"encrypt\",outcome=\"denied\"}",
        "coffer_service_request_duration_seconds_bucket{operation=\"encrypt\",outcome=\"ok\"",
        "coffer_service_items_total{operation=\"encrypt\"}",
        "coffer_keys_l1_hits_total",
        "coffer_keys_l1_misses_total",
        "coffer_keys_deks_pending_kek_rotation 0",
    ] {
        assert!(m.contains(needle), "{needle} not in /metrics:\n{m}");
    }
    assert!(
        !m.contains("tenant="),
        "tenant label without metrics_tenant_label"
    );
    for s in secrets() {
        assert!(!m.contains(&s), "{s} in /metrics");
    }
}

#[tokio::test]
async fn audit_records_refusals_and_data_access_when_flushed() {
    let t = Tenants::start("audit_interval = \"1h\"\n").await;
    let c = t.svc.client();
    let r = c
        .utf8(
            "encrypt",
            "globex:users",
            &t.acme,
            json!([{"column": "m", "plaintext": MARKER}]),
        )
        .await;
    expect_error(&r, 403, "wrong_tenant");
    let denied = |records: &[coffer_keys::AuditRecord]| {
        records
            .iter()
            .filter(|r| r.event.operation.as_str() == "access-denied")
            .count()
    };
    // A refusal is counted, and written with the access counts.
    assert_eq!(denied(&t.svc.audit("globex:users").await), 0);
    let cts = encrypt_six(&t).await;
    let mut items = six_items(&cts).as_array().unwrap().clone();
    items.push(json!({"column": "ssn", "context": "43", "ciphertext": cts[0]}));
    let r = c.utf8("decrypt", "acme:patients", &t.acme, items).await;
    expect_error(&r, 422, "decryption_failed");
    assert_eq!(r.1["error"]["item"], 6);
    let access = |records: &[coffer_keys::AuditRecord]| {
        records
            .iter()
            .filter(|r| r.event.operation.as_str() == "data-access")
            .map(|r| r.event.detail.clone())
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Data access is gathered and written in batches (here: on shutdown).
    assert_eq!(access(&t.svc.audit("acme:patients").await), "");
    let store = t.svc.store.clone();
    let keyring = t.svc.app.keyring().clone();
    t.svc.stop().await;
    let records = store
        .audit(&coffer_keys::AuditFilter::default())
        .await
        .unwrap();
    let access = access(
        &records
            .iter()
            .filter(|r| r.event.scope.as_deref() == Some("acme:patients"))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let refusals: Vec<_> = records
        .iter()
        .filter(|r| r.event.scope.as_deref() == Some("globex:users"))
        .cloned()
        .collect();
    assert_eq!(denied(&refusals), 1);
    assert!(
        access.contains("tenant=acme operation=encrypt ok=6 failed=0"),
        "{access}"
    );
    assert!(
        access.contains("operation=decrypt ok=6 failed=1"),
        "{access}"
    );
    // The chain is keyed: checked by the keyring that holds the chain key.
    let (all, v) = keyring.verify_audit().await.unwrap();
    assert_eq!(all, records);
    assert_eq!(
        v.outcome,
        coffer_keys::audit::Outcome::Intact,
        "the audit chain is broken"
    );
}
