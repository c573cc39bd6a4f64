//! The PKCS#11 KEK provider against a real SoftHSM2 token.
//!
//! `cargo test -p coffer-pkcs11` sets the token up itself (scripts/softhsm-setup.sh) unless
//! `SOFTHSM2_CONF` is set; see tests/support/mod.rs. Without SoftHSM2 these tests fail, saying so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::task::{Context, Poll, Waker};

use coffer_core::{Dek, KeyVersion, ScopeId};
use coffer_keys::{Error, KekId, KekProvider, WrapContext};
use coffer_pkcs11::{KeyMode, Pkcs11Kek, Pkcs11Ref, WRAPPED_LEN};
use coffer_testkit::bench_setup::two_workers;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::Session;
use support::Hsm;

/// Tests that log the token out take this for writing; all others for reading.
static LOGIN_STATE: RwLock<()> = RwLock::new(());

fn hsm() -> (&'static Hsm, RwLockReadGuard<'static, ()>) {
    let hsm = support::hsm().unwrap_or_else(|e| panic!("no SoftHSM2 token for the tests: {e}"));
    let guard = LOGIN_STATE.read().unwrap_or_else(|e| e.into_inner());
    (hsm, guard)
}

/// The slot the test DEKs are wrapped for.
use coffer_testkit::fixtures::DekSlot as Ctx;

fn new_kek(hsm: &Hsm, prefix: &str) -> Pkcs11Kek {
    Pkcs11Kek::generate(&hsm.reference(&support::unique_label(prefix))).unwrap()
}

/// A session of this test process on the KEK's token, bypassing the provider. Login state is
/// per process and token, so it sees what the provider's login sees.
fn raw_session(hsm: &Hsm, kek: &Pkcs11Kek) -> Session {
    raw_session_on(hsm, kek, false)
}

/// [`raw_session`], read-write when `rw` (to create objects behind the provider's back).
fn raw_session_on(hsm: &Hsm, kek: &Pkcs11Kek, rw: bool) -> Session {
    let ctx = Pkcs11::new(&hsm.module).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| s.id() == kek.slot_id())
        .unwrap();
    if rw {
        ctx.open_rw_session(slot).unwrap()
    } else {
        ctx.open_ro_session(slot).unwrap()
    }
}

fn is_wrong_kek(e: &Error) -> bool {
    matches!(e, Error::WrongKek { .. })
}

#[test]
fn generated_kek_is_sensitive_non_extractable_and_unique() {
    let (hsm, _g) = hsm();
    let label = support::unique_label("attrs");
    let reference = hsm.reference(&label);
    let kek = Pkcs11Kek::generate(&reference).unwrap();
    assert_eq!(kek.kind(), "pkcs11");
    assert_eq!(kek.algorithm(), "pkcs11-aes256-gcm");
    let rt = two_workers();

    let attrs = rt.block_on(kek.key_attributes()).unwrap();
    assert_eq!(attrs.label, label);
    assert!(attrs.aes);
    assert_eq!(attrs.value_len, Some(32));
    assert!(attrs.token, "a token object");
    assert!(attrs.private);
    assert!(attrs.sensitive && attrs.always_sensitive, "{attrs:?}");
    assert!(!attrs.extractable && attrs.never_extractable, "{attrs:?}");
    assert!(attrs.encrypt && attrs.decrypt);

    // Independently of the provider: the token refuses to hand out the key's value.
    let session = raw_session(hsm, &kek);
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let values = session
        .get_attributes(found[0], &[AttributeType::Value, AttributeType::Sensitive])
        .unwrap();
    assert!(
        !values.iter().any(|a| matches!(a, Attribute::Value(_))),
        "CKA_VALUE must not be readable"
    );
    assert!(values.contains(&Attribute::Sensitive(true)));
    drop(session);

    // The label is taken now: generating again is refused, opening finds the same key.
    let again = Pkcs11Kek::generate(&reference).unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
    let opened = Pkcs11Kek::open(&reference).unwrap();
    let (same, generated) = Pkcs11Kek::open_or_generate(&reference).unwrap();
    assert!(!generated);
    let ctx = Ctx::new();
    let dek = Dek::generate().unwrap();
    let w = rt.block_on(kek.wrap(&dek, &ctx.wrap_context())).unwrap();
    for k in [&opened, &same] {
        let back = rt.block_on(k.unwrap(&w, &ctx.wrap_context())).unwrap();
        assert_eq!(back.expose_secret(), dek.expose_secret());
    }

    let fresh = hsm.reference(&support::unique_label("attrs-new"));
    let (_, generated) = Pkcs11Kek::open_or_generate(&fresh).unwrap();
    assert!(generated);
}

#[test]
fn wrap_unwrap_round_trips() {
    let (hsm, _g) = hsm();
    let kek = new_kek(hsm, "roundtrip");
    let rt = two_workers();
    let ctx = Ctx::new();
    let dek = Dek::generate().unwrap();
    let w1 = rt.block_on(kek.wrap(&dek, &ctx.wrap_context())).unwrap();
    let w2 = rt.block_on(kek.wrap(&dek, &ctx.wrap_context())).unwrap();
    assert_eq!(w1.len(), WRAPPED_LEN);
    assert_eq!(WRAPPED_LEN, 60);
    assert_ne!(w1[..12], w2[..12], "a fresh IV per wrap");
    assert!(
        !w1.windows(32).any(|w| w == dek.expose_secret()),
        "the DEK is not in the wrap"
    );
    for w in [&w1, &w2] {
        let back = rt.block_on(kek.unwrap(w, &ctx.wrap_context())).unwrap();
        assert_eq!(back.expose_secret(), dek.expose_secret());
    }

    // The same key through a pin-env= reference, and through a caller-supplied PIN.
    let label = kek.reference().key.clone();
    let by_env = Pkcs11Kek::open(&hsm.reference_pin_env(&label)).unwrap();
    let back = rt
        .block_on(by_env.unwrap(&w1, &ctx.wrap_context()))
        .unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    let mut parsed = Pkcs11Ref::parse(&hsm.reference(&label)).unwrap();
    parsed.pin = None;
    let pin = std::fs::read_to_string(&hsm.pin_file).unwrap();
    let (by_pin, _) = Pkcs11Kek::open_with_pin(
        &parsed,
        cryptoki::types::AuthPin::from(pin.trim_end().to_owned()),
        KeyMode::Open,
    )
    .unwrap();
    let back = rt
        .block_on(by_pin.unwrap(&w2, &ctx.wrap_context()))
        .unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
}

/// Polls a future once without any runtime: the provider then runs PKCS#11 calls inline.
fn poll_once<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the provider must not wait outside a runtime"),
    }
}

#[test]
fn works_without_a_tokio_runtime() {
    let (hsm, _g) = hsm();
    let kek = new_kek(hsm, "noruntime");
    let ctx = Ctx::new();
    let dek = Dek::generate().unwrap();
    let w = poll_once(kek.wrap(&dek, &ctx.wrap_context())).unwrap();
    let back = poll_once(kek.unwrap(&w, &ctx.wrap_context())).unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
}

#[test]
fn a_changed_context_does_not_unwrap() {
    let (hsm, _g) = hsm();
    let kek = new_kek(hsm, "context").with_id(&KekId::new("main", 1).unwrap());
    let rt = two_workers();
    let ctx = Ctx::new();
    let dek = Dek::generate().unwrap();
    let w = rt.block_on(kek.wrap(&dek, &ctx.wrap_context())).unwrap();

    let other_scope = ScopeId::new("tenant:other").unwrap();
    let variants = [
        WrapContext {
            version: KeyVersion(2),
            ..ctx.wrap_context()
        },
        WrapContext {
            scope: &other_scope,
            ..ctx.wrap_context()
        },
        WrapContext {
            store_id: &[8; 16],
            ..ctx.wrap_context()
        },
        WrapContext {
            key_id: &[10; 16],
            ..ctx.wrap_context()
        },
    ];
    for (i, changed) in variants.iter().enumerate() {
        let e = rt.block_on(kek.unwrap(&w, changed)).unwrap_err();
        assert!(is_wrong_kek(&e), "variant {i}: {e:?}");
        assert!(e.to_string().contains("main/v1"), "{e}");
    }
    // The original context still works.
    assert!(rt.block_on(kek.unwrap(&w, &ctx.wrap_context())).is_ok());
}

#[test]
fn a_tampered_wrap_does_not_unwrap() {
    let (hsm, _g) = hsm();
    let kek = new_kek(hsm, "tamper");
    let rt = two_workers();
    let ctx = Ctx::new();
    let dek = Dek::generate().unwrap();
    let w = rt.block_on(kek.wrap(&dek, &ctx.wrap_context())).unwrap();
    for i in 0..w.len() {
        let mut bad = w.clone();
        bad[i] ^= 0x01;
        let e = rt
            .block_on(kek.unwrap(&bad, &ctx.wrap_context()))
            .unwrap_err();
        assert!(is_wrong_kek(&e), "byte {i}: {e:?}");
    }
    for bad in [
        &w[..w.len() - 1],
        &w[..12],
        &[][..],
        &[w.as_slice(), &[0]].concat()[..],
    ] {
        let e = rt
            .block_on(kek.unwrap(bad, &ctx.wrap_context()))
            .unwrap_err();
        assert!(is_wrong_kek(&e), "length {}: {e:?}", bad.len());
    }
}

#[test]
fn another_kek_does_not_unwrap() {
    let (hsm, _g) = hsm();
    let a = new_kek(hsm, "kek-a");
    let b = new_kek(hsm, "kek-b").with_id(&KekId::new("hsm", 2).unwrap());
    let rt = two_workers();
    let ctx = Ctx::new();
    let dek = Dek::generate().unwrap();
    let w = rt.block_on(a.wrap(&dek, &ctx.wrap_context())).unwrap();
    let e = rt.block_on(b.unwrap(&w, &ctx.wrap_context())).unwrap_err();
    assert!(is_wrong_kek(&e), "{e:?}");
    assert!(e.to_string().contains("hsm/v2"), "{e}");
}

#[test]
fn concurrent_unwraps_from_eight_tasks() {
    let (hsm, _g) = hsm();
    let kek = Arc::new(new_kek(hsm, "concurrent"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .max_blocking_threads(8)
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = Ctx::new();
        let mut wraps = Vec::new();
        for _ in 0..8 {
            let dek = Dek::generate().unwrap();
            let w = kek.wrap(&dek, &ctx.wrap_context()).await.unwrap();
            wraps.push((dek, w));
        }
        let wraps = Arc::new(wraps);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let kek = Arc::clone(&kek);
            let wraps = Arc::clone(&wraps);
            tasks.push(tokio::spawn(async move {
                let ctx = Ctx::new();
                for round in 0..25 {
                    let (dek, w) = &wraps[(t + round) % wraps.len()];
                    let back = kek.unwrap(w, &ctx.wrap_context()).await.unwrap();
                    assert_eq!(back.expose_secret(), dek.expose_secret());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn a_lost_login_is_recovered() {
    let (hsm, read) = hsm();
    drop(read);
    let _exclusive = LOGIN_STATE.write().unwrap_or_else(|e| e.into_inner());
    let kek = new_kek(hsm, "relogin");
    let rt = two_workers();
    let ctx = Ctx::new();
    let dek = Dek::generate().unwrap();
    let w = rt.block_on(kek.wrap(&dek, &ctx.wrap_context())).unwrap();

    // Log the whole process out of the token behind the provider's back.
    let session = raw_session(hsm, &kek);
    session.logout().unwrap();
    drop(session);

    let back = rt.block_on(kek.unwrap(&w, &ctx.wrap_context())).unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
}

#[test]
fn a_wrong_pin_is_refused_and_not_shown() {
    let (hsm, read) = hsm();
    drop(read);
    let _exclusive = LOGIN_STATE.write().unwrap_or_else(|e| e.into_inner());
    // Login state belongs to the process: while any session of it is logged in, C_Login answers
    // CKR_USER_ALREADY_LOGGED_IN without looking at the PIN. Other tests are excluded now, and
    // their KEKs (and sessions) are gone; make sure the token is logged out.
    let kek = new_kek(hsm, "wrongpin");
    let slot = kek.slot_id();
    let session = raw_session(hsm, &kek);
    drop(kek);
    match session.logout() {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => {}
        Err(e) => panic!("C_Logout: {e}"),
    }
    drop(session);

    let wrong = std::env::temp_dir().join(format!("coffer-wrong-pin-{}", std::process::id()));
    std::fs::write(&wrong, "98765432\n").unwrap();
    let e = open_err(&format!(
        "pkcs11:module={};slot={slot};key=k;pin-file={}",
        hsm.module.display(),
        wrong.display()
    ));
    std::fs::remove_file(&wrong).unwrap();
    assert!(e.contains("refused the user PIN"), "{e}");
    assert!(e.contains("coffer-wrong-pin"), "names the PIN file: {e}");
    assert!(!e.contains("98765432"), "{e}");
}

fn open_err(reference: &str) -> String {
    Pkcs11Kek::open(reference).unwrap_err().to_string()
}

#[test]
fn bad_references_give_clear_errors() {
    let (hsm, _g) = hsm();
    let module = hsm.module.display().to_string();
    let token = &hsm.token;
    let pin_file = hsm.pin_file.display().to_string();

    let e = open_err(&format!(
        "pkcs11:module=/nonexistent/libnothing.so;token={token};key=k;pin-file={pin_file}"
    ));
    assert!(
        e.contains("/nonexistent/libnothing.so") && e.contains("cannot load"),
        "{e}"
    );

    let e = open_err(&format!(
        "pkcs11:module={module};token=no-such-token;key=k;pin-file={pin_file}"
    ));
    assert!(
        e.contains("no token labelled 'no-such-token'") && e.contains(&format!("'{token}'")),
        "{e}"
    );

    let missing = support::unique_label("missing");
    let e = open_err(&hsm.reference(&missing));
    assert!(
        e.contains(&format!("no key labelled '{missing}'")) && e.contains("coffer keys init"),
        "{e}"
    );

    let e = open_err(&format!(
        "pkcs11:module={module};slot=999999;key=k;pin-file={pin_file}"
    ));
    assert!(e.contains("no token in slot 999999"), "{e}");

    let e = open_err(&format!(
        "pkcs11:module={module};token={token};key=k;pin-env=COFFER_TEST_SURELY_UNSET_PIN_VAR"
    ));
    assert!(
        e.contains("COFFER_TEST_SURELY_UNSET_PIN_VAR is not set"),
        "{e}"
    );

    let e = open_err(&format!("pkcs11:module={module};token={token};key=k"));
    assert!(e.contains("no PIN source"), "{e}");

    let e = open_err(&format!(
        "pkcs11:module={module};token={token};key=k;pin=1234"
    ));
    assert!(
        e.contains("never goes in the reference") && !e.contains("1234"),
        "{e}"
    );

    // slot= reaches the same token as token=.
    let kek = new_kek(hsm, "byslot");
    let by_slot = format!(
        "pkcs11:module={module};slot={};key={};pin-file={pin_file}",
        kek.slot_id(),
        kek.reference().key
    );
    assert_eq!(Pkcs11Kek::open(&by_slot).unwrap().slot_id(), kek.slot_id());
}

#[test]
fn debug_shows_no_pin() {
    let (hsm, _g) = hsm();
    let kek = new_kek(hsm, "debug");
    let pin = std::fs::read_to_string(&hsm.pin_file).unwrap();
    let pin = pin.trim_end();
    let debug = format!("{kek:?}").replace(&kek.slot_id().to_string(), "<slot>");
    assert!(debug.starts_with("Pkcs11Kek {"), "{debug}");
    assert!(!debug.contains(pin), "{debug}");
    assert!(!debug.to_lowercase().contains("secret"), "{debug}");
    let by_env = Pkcs11Kek::open(&hsm.reference_pin_env(&kek.reference().key)).unwrap();
    let debug = format!("{by_env:?}").replace(&kek.slot_id().to_string(), "<slot>");
    assert!(!debug.contains(pin), "{debug}");
    assert!(
        debug.contains(support::PIN_ENV),
        "names the variable: {debug}"
    );
}

/// A key under the KEK's label that is not AES-256 (an AES-128 key, a generic secret) is refused
/// by what it is; the reading of its attributes tells such a key from one the token answered for
/// without attributes.
#[test]
fn keys_of_another_type_or_length_are_refused_by_what_they_are() {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::KeyType;
    use cryptoki::types::Ulong;
    let (hsm, _g) = hsm();
    let anchor = new_kek(hsm, "anchor");
    let session = raw_session_on(hsm, &anchor, true);
    let cases = [
        ("aes128", Mechanism::AesKeyGen, Some(KeyType::AES), 16),
        ("generic", Mechanism::GenericSecretKeyGen, None, 32),
    ];
    for (prefix, mechanism, key_type, len) in cases {
        let label = support::unique_label(prefix);
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::ValueLen(Ulong::new(len)),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Sensitive(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ];
        if let Some(t) = key_type {
            template.push(Attribute::KeyType(t));
        }
        session.generate_key(&mechanism, &template).unwrap();
        let err = Pkcs11Kek::open(&hsm.reference(&label)).unwrap_err();
        assert!(
            err.to_string().contains("is not an AES-256 key"),
            "{prefix}: {err}"
        );
    }
}
