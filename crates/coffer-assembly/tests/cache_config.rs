//! `[cache] redis_cluster`: keyrings started from coffer.toml share DEKs through the Redis
//! Cluster on 127.0.0.1:7000-7005 (started by `scripts/services-up.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use coffer_core::{ColumnId, FieldContext, ScopeId, Suite};
use coffer_keys::config::Config;

fn config(dir: &std::path::Path, cache: &str) -> String {
    let kek = dir.join("kek.key");
    if !kek.exists() {
        coffer_keys::source::create_key_file(&kek).unwrap();
        coffer_keys::source::create_key_file(&dir.join("cache.key")).unwrap();
    }
    format!(
        "[store]\nurl = \"sqlite:{}\"\n\n[[kek]]\nname = \"main\"\nversion = 1\n\
         source = \"file:{}\"\nprimary = true\n\n[cache]\ncache_key = \"file:{}\"\n{cache}\n",
        dir.join("keys.db").display(),
        kek.display(),
        dir.join("cache.key").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyrings_from_a_redis_cluster_config_share_the_l2() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        dir.path(),
        "redis_cluster = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\", \
         \"redis://127.0.0.1:7002\"]",
    );
    let cfg = Config::from_toml(&text).unwrap();
    let a = coffer_assembly::start(&cfg).await.unwrap();
    let scope = ScopeId::new("tenant:acme").unwrap();
    let column = ColumnId::new("diagnosis").unwrap();
    a.create_scope(&scope).await.unwrap();
    let ct = a
        .encrypt(&scope, &column, Suite::Gcm96, &FieldContext::new(), b"J45")
        .await
        .unwrap();
    a.clear_l1();
    a.decrypt(&scope, &column, &FieldContext::new(), &ct)
        .await
        .unwrap()
        .unwrap();

    let b = coffer_assembly::start(&cfg).await.unwrap();
    let pt = b
        .decrypt(&scope, &column, &FieldContext::new(), &ct)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pt, b"J45");
    let s = b.stats();
    assert_eq!(
        (s.l2_hits, s.kek_unwraps, s.l2_errors),
        (1, 0, 0),
        "no DEK from the Redis Cluster ({s:?}): is it running? run scripts/services-up.sh"
    );
}

#[tokio::test]
async fn both_or_bad_cluster_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let both = config(
        dir.path(),
        "redis_url = \"redis://127.0.0.1:6379\"\nredis_cluster = [\"redis://127.0.0.1:7000\"]",
    );
    let err = Config::from_toml(&both).unwrap_err().to_string();
    assert!(err.contains("both redis_url and redis_cluster"), "{err}");

    // A Config built in code skips the file checks: the keyring refuses it all the same.
    let mut cfg = Config::from_toml(&config(dir.path(), "")).unwrap();
    cfg.cache.redis_url = Some("redis://127.0.0.1:6379".into());
    cfg.cache.redis_cluster = Some(vec!["redis://127.0.0.1:7000".into()]);
    let err = coffer_assembly::open_keyring(&cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("both redis_url and redis_cluster"), "{err}");

    cfg.cache.redis_url = None;
    cfg.cache.redis_cluster = Some(vec!["redis://127.0.0.1:7000/2".into()]);
    let err = coffer_assembly::open_keyring(&cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("database 0"), "{err}");
}
