//! `AwsKmsKek` against a real moto server (KMS mock). The endpoint comes from
//! `COFFER_TEST_MOTO_ENDPOINT`, or `scripts/moto-up.sh` is run to start or reuse one.
//!
//! moto is not KMS: its ciphertext format differs, it does not enforce key policies, and it
//! reports a ciphertext from another key as AccessDeniedException where KMS says
//! IncorrectKeyException. Each test says which behaviour it relies on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_aws_kms::{AwsKmsKek, AwsKmsReference};
use coffer_core::wrap::{metadata_tag, verify_metadata_tag};
use coffer_core::{Dek, KeyVersion, ScopeId};
use coffer_keys::{Error, KekId, KekProvider};

/// The slot the test DEKs are wrapped for.
use coffer_testkit::fixtures::DekSlot as Ctx;

#[tokio::test]
async fn wrap_and_unwrap_round_trip() {
    let admin = common::admin().await;
    let (key_id, _) = common::create_key(&admin).await;
    let kek = common::kek(&key_id)
        .await
        .with_kek_id(&KekId::new("kms-main", 1).unwrap());
    assert_eq!(kek.kind(), "aws-kms");
    assert_eq!(kek.algorithm(), "aws-kms-symmetric");

    let ctx = Ctx::new();
    let dek = Dek::generate().unwrap();
    let wrapped = kek.wrap(&dek, &ctx.wrap_context()).await.unwrap();
    assert!(
        !wrapped
            .windows(32)
            .any(|w| w == dek.expose_secret().as_slice()),
        "the wrap must not contain the DEK"
    );
    let back = kek.unwrap(&wrapped, &ctx.wrap_context()).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());

    // Two wraps of the same DEK differ (KMS ciphertexts are randomized).
    let again = kek.wrap(&dek, &ctx.wrap_context()).await.unwrap();
    assert_ne!(again, wrapped);

    let debug = format!("{kek:?}");
    assert!(
        debug.contains(&key_id) && debug.contains("kms-main/v1"),
        "{debug}"
    );
}

#[tokio::test]
async fn key_arn_and_alias_name_the_same_key() {
    let admin = common::admin().await;
    let (key_id, arn) = common::create_key(&admin).await;
    let alias = format!("alias/coffer-test-{key_id}");
    admin
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .unwrap();

    let ctx = Ctx::new();
    let dek = Dek::generate().unwrap();
    let by_alias = common::kek(&alias).await;
    let wrapped = by_alias.wrap(&dek, &ctx.wrap_context()).await.unwrap();
    for key in [key_id.as_str(), arn.as_str(), alias.as_str()] {
        let kek = common::kek(key).await;
        let back = kek.unwrap(&wrapped, &ctx.wrap_context()).await.unwrap();
        assert_eq!(back.expose_secret(), dek.expose_secret(), "{key}");
    }
}

#[tokio::test]
async fn a_different_context_does_not_unwrap() {
    let admin = common::admin().await;
    let (key_id, _) = common::create_key(&admin).await;
    let kek = common::kek(&key_id)
        .await
        .with_kek_id(&KekId::new("kms-main", 1).unwrap());
    let ctx = Ctx::new();
    let dek = Dek::generate().unwrap();
    let wrapped = kek.wrap(&dek, &ctx.wrap_context()).await.unwrap();
    let tag = metadata_tag(&dek, &ctx.metadata()).unwrap();

    // Store id, DEK key id and version are in the KMS encryption context. moto (checked with
    // moto 5.2: kms/utils.py uses the serialized context as AES-GCM associated data) enforces it
    // as KMS does and answers InvalidCiphertextException, which is Error::WrongKek.
    let others = [
        Ctx {
            store: vec![8; 16],
            ..Ctx::new()
        },
        Ctx {
            key_id: [10; 16],
            ..Ctx::new()
        },
        Ctx {
            version: KeyVersion(2),
            ..Ctx::new()
        },
    ];
    for other in &others {
        let err = kek
            .unwrap(&wrapped, &other.wrap_context())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::WrongKek { kek } if kek == "kms-main/v1"),
            "{err}"
        );
    }

    // The scope is deliberately not in the encryption context (it could name a tenant or a
    // patient and would land in CloudTrail), so KMS, like moto, unwraps a wrap moved to another
    // scope. What refuses it is coffer's metadata tag, checked by the key store after every
    // unwrap.
    let moved = Ctx {
        scope: ScopeId::new("tenant:other").unwrap(),
        ..Ctx::new()
    };
    let dek_again = kek.unwrap(&wrapped, &moved.wrap_context()).await.unwrap();
    assert_eq!(dek_again.expose_secret(), dek.expose_secret());
    assert!(verify_metadata_tag(&dek_again, &ctx.metadata(), &tag).is_ok());
    assert!(verify_metadata_tag(&dek_again, &moved.metadata(), &tag).is_err());
}

#[tokio::test]
async fn another_key_or_a_damaged_wrap_does_not_unwrap() {
    let admin = common::admin().await;
    let (key_a, _) = common::create_key(&admin).await;
    let (key_b, _) = common::create_key(&admin).await;
    let a = common::kek(&key_a).await;
    let b = common::kek(&key_b)
        .await
        .with_kek_id(&KekId::new("kms-b", 1).unwrap());
    let ctx = Ctx::new();
    let wrapped = a
        .wrap(&Dek::generate().unwrap(), &ctx.wrap_context())
        .await
        .unwrap();

    // Real KMS answers IncorrectKeyException (→ Error::WrongKek) when the KeyId does not match
    // the ciphertext's key. moto 5.2 answers AccessDeniedException instead, which the provider
    // reports as a provider error (an access denial is usually a policy problem, not a wrong
    // key), naming the key and the KMS error code.
    let err = b.unwrap(&wrapped, &ctx.wrap_context()).await.unwrap_err();
    match &err {
        Error::WrongKek { kek } => assert_eq!(kek, "kms-b/v1"),
        Error::Provider { kek, reason } => {
            assert_eq!(kek, "kms-b/v1");
            assert!(reason.contains("AccessDeniedException"), "{reason}");
            assert!(reason.contains(&key_b), "{reason}");
        }
        other => panic!("unexpected error: {other}"),
    }

    // A flipped byte, a truncated wrap, an empty one: InvalidCiphertextException → WrongKek.
    let mut flipped = wrapped.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    for bad in [flipped, wrapped[..wrapped.len() / 2].to_vec(), Vec::new()] {
        let err = a.unwrap(&bad, &ctx.wrap_context()).await.unwrap_err();
        assert!(matches!(err, Error::WrongKek { .. }), "{err}");
    }
}

#[tokio::test]
async fn missing_and_disabled_keys_are_provider_errors() {
    let admin = common::admin().await;
    let ctx = Ctx::new();
    let dek = Dek::generate().unwrap();

    let missing = "00000000-0000-4000-8000-000000000000";
    let err = common::kek(missing)
        .await
        .wrap(&dek, &ctx.wrap_context())
        .await
        .unwrap_err();
    let Error::Provider { reason, .. } = &err else {
        panic!("unexpected error: {err}");
    };
    assert!(
        reason.contains("NotFoundException") && reason.contains(missing),
        "{reason}"
    );

    // KMS refuses a disabled key (DisabledException → "is disabled"). moto 5.2 records the
    // state (DescribeKey says Disabled) but enforces it on neither Encrypt nor Decrypt, so here a
    // call either succeeds (moto) or fails with that message; the message itself is checked on a
    // constructed error in the unit tests (src/lib.rs).
    let (key_id, _) = common::create_key(&admin).await;
    let kek = common::kek(&key_id).await;
    let wrapped = kek.wrap(&dek, &ctx.wrap_context()).await.unwrap();
    admin.disable_key().key_id(&key_id).send().await.unwrap();
    let state = admin.describe_key().key_id(&key_id).send().await.unwrap();
    assert_eq!(state.key_metadata().map(|m| m.enabled()), Some(false));
    let check = |result: Result<(), Error>| match result {
        Ok(()) => {} // moto: key state not enforced
        Err(Error::Provider { reason, .. }) => assert!(reason.contains("is disabled"), "{reason}"),
        Err(other) => panic!("unexpected error: {other}"),
    };
    check(kek.wrap(&dek, &ctx.wrap_context()).await.map(drop));
    check(kek.unwrap(&wrapped, &ctx.wrap_context()).await.map(drop));
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_fast_with_a_clear_error() {
    // A loopback port with nothing listening: connection refused, retried MAX_ATTEMPTS times.
    let port = coffer_testkit::ports::free_port();
    let reference = AwsKmsReference::parse(&format!(
        "aws-kms:alias/x;region=us-east-1;endpoint=http://127.0.0.1:{port}"
    ))
    .unwrap();
    let config = AwsKmsKek::config_loader(&reference)
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "test", "test", None, None, "t",
        ))
        .load()
        .await;
    let kek = AwsKmsKek::from_sdk_config(reference, &config).unwrap();
    let started = Instant::now();
    let err = kek
        .wrap(&Dek::generate().unwrap(), &Ctx::new().wrap_context())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let Error::Provider { reason, .. } = &err else {
        panic!("unexpected error: {err}");
    };
    assert!(reason.contains("could not reach KMS"), "{reason}");
}

#[tokio::test]
async fn bad_references_give_clear_errors() {
    for (reference, why) in [
        ("alias/x", "must start with 'aws-kms:'"),
        ("aws-kms:", "no key"),
        ("aws-kms:my-key", "is not a KMS key id"),
        ("aws-kms:alias/x;region=Mars", "not an AWS region"),
        ("aws-kms:alias/x;color=red", "unknown option 'color'"),
        (
            "aws-kms:alias/x;endpoint=http://10.0.0.5:4566",
            "not loopback",
        ),
    ] {
        let err = AwsKmsKek::from_reference(reference).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.to_string().contains(why), "{reference}: {err}");
    }

    // No region anywhere: refused before any call, saying where a region can come from.
    let reference = AwsKmsReference::parse("aws-kms:alias/x").unwrap();
    let err = AwsKmsKek::from_sdk_config(reference, &aws_config::SdkConfig::builder().build())
        .unwrap_err();
    assert!(err.to_string().contains("no AWS region"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_unwrap_concurrently() {
    let admin = common::admin().await;
    let (key_id, _) = common::create_key(&admin).await;
    let kek = Arc::new(common::kek(&key_id).await);
    let ctx = Ctx::new();
    let mut deks = Vec::new();
    let mut wraps = Vec::new();
    for _ in 0..8 {
        let dek = Dek::generate().unwrap();
        wraps.push(kek.wrap(&dek, &ctx.wrap_context()).await.unwrap());
        deks.push(dek);
    }
    let tasks: Vec<_> = wraps
        .into_iter()
        .map(|wrapped| {
            let kek = Arc::clone(&kek);
            tokio::spawn(async move {
                let ctx = Ctx::new();
                let mut last = None;
                for _ in 0..5 {
                    last = Some(kek.unwrap(&wrapped, &ctx.wrap_context()).await.unwrap());
                }
                last.unwrap()
            })
        })
        .collect();
    for (task, dek) in tasks.into_iter().zip(&deks) {
        let back = task.await.unwrap();
        assert_eq!(back.expose_secret(), dek.expose_secret());
    }
}
