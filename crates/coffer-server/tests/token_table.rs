//! The token table holds a hash of each token and never the token: a copy of the key store's
//! files gives nothing that authenticates.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Service;

#[tokio::test]
async fn the_token_table_holds_hashes_never_the_tokens() {
    let svc = Service::start("").await;
    let tenant = svc.tenant_token("acme", "api").await;
    let admin = svc.admin_token().await;
    // The secret part of each token (after `cft_<id>_`), which alone would authenticate.
    let secrets: Vec<&str> = [&tenant, &admin]
        .iter()
        .map(|t| {
            let id = coffer_server::tokens::parse_id(t).unwrap();
            &t[t.find(id).unwrap() + id.len() + 1..]
        })
        .collect();
    for s in &secrets {
        assert_eq!(
            s.len(),
            43,
            "a token secret is 256 random bits in base64url"
        );
    }
    // Every byte the key store's files hold, the write-ahead log included.
    let mut files = Vec::new();
    for entry in std::fs::read_dir(svc.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("keys.db") {
            files.extend(std::fs::read(&path).unwrap());
        }
    }
    let hay = String::from_utf8_lossy(&files);
    for s in &secrets {
        assert!(
            !hay.contains(s),
            "a token secret is in the key store's files"
        );
    }
    // What the table does hold is the domain-separated SHA-256 of each token.
    for token in [&tenant, &admin] {
        let id = coffer_server::tokens::parse_id(token).unwrap();
        let rec = svc.tokens.get(id).await.unwrap().unwrap();
        assert_eq!(rec.secret_hash, coffer_server::tokens::hash(token));
        assert!(coffer_server::tokens::verify(&rec, token));
        assert!(!coffer_server::tokens::verify(&rec, &format!("{token}x")));
    }
}
