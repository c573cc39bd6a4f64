//! Typed plaintexts: the plaintext's JSON type must fit the declared `type` (so a reader in any
//! language finds the type's canonical encoding), refusals name the field, and typed values come
//! back as the JSON they went in as.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Service, expect_error};
use serde_json::{Value, json};

async fn service() -> (Service, String) {
    let (svc, _admin, acme) = Service::start_with_scope("", "acme:t").await;
    (svc, acme)
}

#[tokio::test]
async fn plaintexts_that_do_not_fit_their_type_are_refused() {
    let (svc, acme) = service().await;
    let c = svc.client();
    let before = svc.state().await;
    let bad: Vec<(&str, Value)> = vec![
        ("int", json!("42")),
        ("int", json!(9_223_372_036_854_775_808u64)),
        ("int", json!(1.5)),
        ("int", json!(true)),
        ("timestamp", json!("2026-01-01")),
        ("date", json!(2_147_483_648i64)),
        ("bool", json!(1)),
        ("bool", json!("true")),
        ("uuid", json!("not-a-uuid")),
        ("uuid", json!(7)),
        ("bytes", json!(42)),
        ("text", json!({"a": 1})),
    ];
    for (ty, plaintext) in bad {
        let r = c
            .utf8(
                "encrypt",
                "acme:t",
                &acme,
                json!([
                    {"column": "ok", "plaintext": "fine"},
                    {"column": "c", "type": ty, "plaintext": plaintext},
                ]),
            )
            .await;
        expect_error(&r, 400, "type_mismatch");
        assert_eq!(r.1["error"]["item"], 1, "{ty} {plaintext}: {}", r.1);
        let m = r.1["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("`plaintext`") && m.contains(&format!("`type` {ty}")),
            "{ty} {plaintext}: {m}"
        );
    }
    // Text sent as base64 must decode to UTF-8.
    let r = c
        .post(
            "/v1/scopes/acme:t/encrypt",
            &acme,
            json!({"items": [{"column": "c", "type": "text", "plaintext": "/w=="}]}),
        )
        .await;
    expect_error(&r, 400, "type_mismatch");
    assert_eq!(svc.state().await, before, "a refusal changed the store");
}

#[tokio::test]
async fn typed_values_round_trip_as_their_json() {
    let (svc, acme) = service().await;
    let c = svc.client();
    let values: Vec<(&str, Value)> = vec![
        ("int", json!(i64::MIN)),
        ("int", json!(42)),
        ("timestamp", json!(1_767_225_600_000_000i64)),
        ("date", json!(-1)),
        ("bool", json!(true)),
        ("uuid", json!("0f8fad5b-d9cb-469f-a165-70867728950e")),
        ("json", json!({"b": [1, null], "a": "x"})),
        ("text", json!("añ")),
        ("bytes", json!("raw")),
    ];
    let items: Vec<Value> = values
        .iter()
        .map(|(t, p)| json!({"column": "c", "type": t, "plaintext": p}))
        .collect();
    let r = c.utf8("encrypt", "acme:t", &acme, items).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let dec: Vec<Value> = values
        .iter()
        .zip(r.1["items"].as_array().unwrap())
        .map(|((t, _), s)| json!({"column": "c", "type": t, "ciphertext": s["ciphertext"]}))
        .collect();
    let d = c.utf8("decrypt", "acme:t", &acme, dec).await;
    assert_eq!(d.0, 200, "{}", d.1);
    for (i, (t, p)) in values.iter().enumerate() {
        assert_eq!(&d.1["items"][i]["plaintext"], p, "{t}");
    }
    // The canonical encodings other languages read: an int is 8 bytes big-endian.
    let b = c
        .post(
            "/v1/scopes/acme:t/decrypt",
            &acme,
            json!({"items": [{"column": "c", "type": "int", "ciphertext": r.1["items"][1]["ciphertext"]}]}),
        )
        .await;
    assert_eq!(b.1["items"][0]["plaintext"], 42, "{}", b.1);
    let id = coffer_core::ScopeId::new("acme:t").unwrap();
    let col = coffer_core::ColumnId::new("c").unwrap();
    let ct =
        coffer_core::field::text::decode(r.1["items"][1]["ciphertext"].as_str().unwrap()).unwrap();
    let ctx = coffer_core::FieldContext::new().with_type(coffer_core::ValueType::Int64);
    let plain = svc
        .app
        .keyring()
        .decrypt(&id, &col, &ctx, &ct)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain.to_vec(), 42i64.to_be_bytes().to_vec());
}
