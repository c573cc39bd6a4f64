//! Keys derived from a scope: data keys kept in rows, files keyed by a scope.

use coffer_core::Kek;
use coffer_keys::Error;

use super::{Env, one_kek, scope};

pub async fn data_keys_in_rows<E: Env>(env: &E) {
    let kek = Kek::generate().unwrap();
    let kr = one_kek(env, &kek).await;
    let s = scope("table:ballots");
    kr.create_scope(&s).await.unwrap();
    let (key, blob) = kr.generate_data_key(&s).await.unwrap();
    assert_eq!(blob.len(), coffer_keys::datakey::DATA_KEY_BLOB_LEN);
    assert!(!blob.windows(32).any(|w| w == key.expose_secret()));
    kr.rotate(&s).await.unwrap();
    // After a rotation the blob still names its parent version; a cold process opens it.
    let cold = one_kek(env, &kek).await;
    let opened = cold.open_data_key(&s, &blob).await.unwrap();
    assert_eq!(opened.expose_secret(), key.expose_secret());
    // Another scope, any changed byte, a cut blob: refused.
    let other = scope("table:other");
    kr.create_scope(&other).await.unwrap();
    assert!(kr.open_data_key(&other, &blob).await.is_err());
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        assert!(kr.open_data_key(&s, &bad).await.is_err(), "byte {i}");
    }
    assert!(kr.open_data_key(&s, &blob[..blob.len() - 1]).await.is_err());
    // Shredding the parent scope shreds the row keys.
    kr.destroy(&s).await.unwrap();
    let err = cold.open_data_key(&s, &blob).await;
    let err = match err {
        Err(e) => e,
        Ok(_) => {
            // The cold process may still hold the parent in L1; a fresh one cannot open it.
            one_kek(env, &kek)
                .await
                .open_data_key(&s, &blob)
                .await
                .unwrap_err()
        }
    };
    assert!(matches!(err, Error::Destroyed { .. }), "{err}");
}

pub async fn files_keyed_by_a_scope<E: Env>(env: &E) {
    use coffer_core::stream::{Decryptor, EncryptionContext, Encryptor, Limits, MessageHeader};
    use std::io::{Read as _, Write as _};
    let kek = Kek::generate().unwrap();
    let kr = one_kek(env, &kek).await;
    let (a, b) = (scope("tenant:a-files"), scope("tenant:b-files"));
    kr.create_scope(&a).await.unwrap();
    kr.create_scope(&b).await.unwrap();
    let seal = |keyring: &coffer_core::stream::RawAesKeyring, pt: &[u8]| {
        let mut e =
            Encryptor::new(Vec::new(), &[keyring], &EncryptionContext::new(), 4096).unwrap();
        e.write_all(pt).unwrap();
        e.finish().unwrap()
    };
    let pt = vec![7u8; 10_000];
    let msg = seal(&kr.scope_file_keyring(&a).await.unwrap(), &pt);
    let header = MessageHeader::read_from(&mut &msg[..], &Limits::default()).unwrap();
    let name = header.edks[0].key_name().unwrap().to_owned();
    assert!(name.starts_with(&hex::encode(kr.store_id())), "{name}");
    assert!(name.ends_with("/v1") && !name.contains("tenant"), "{name}");
    // A rotation later, a cold process still opens it with the version the name carries.
    kr.rotate(&a).await.unwrap();
    let cold = one_kek(env, &kek).await;
    let dk = cold.open_scope_file(&a, &header).await.unwrap();
    let mut d = Decryptor::with_data_key(&msg[header.len()..], header.clone(), &dk).unwrap();
    let mut out = Vec::new();
    d.read_to_end(&mut out).unwrap();
    assert_eq!(out, pt);
    assert!(
        kr.scope_file_keyring(&a)
            .await
            .unwrap()
            .name()
            .ends_with("/v2"),
        "new files use the active version"
    );
    // Another tenant's scope does not open it.
    let err = cold.open_scope_file(&b, &header).await.unwrap_err();
    assert!(matches!(err, Error::NoMatchingKey { .. }), "{err}");
    // Crypto-shredding the scope shreds its files.
    kr.destroy(&a).await.unwrap();
    let err = one_kek(env, &kek)
        .await
        .open_scope_file(&a, &header)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Destroyed { .. }), "{err}");
}
