//! The KEK provider registry: unknown and not-compiled-in schemes, and a provider added with one
//! registration line (a fake scheme defined here, as a provider crate would define it).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use coffer_assembly::{Error, Registry};
use coffer_core::stream::{EncryptionContext, Encryptor, Limits, MessageHeader, RawAesKeyring};
use coffer_core::{ErrorKind, Kek, ScopeId};
use coffer_keys::config::Config;
use coffer_keys::files::{self, FileKeyring};
use coffer_keys::{KekId, KekProvider, KekScheme, LocalKek};

/// `fake:NAME`: KEKs held in a map, standing in for an HSM's key labels.
struct FakeScheme {
    keys: BTreeMap<String, [u8; 32]>,
}

impl FakeScheme {
    fn key(&self, reference: &str) -> coffer_keys::Result<Kek> {
        self.check_reference(reference)?;
        let name = &reference["fake:".len()..];
        self.keys
            .get(name)
            .map(|k| Kek::from_bytes(*k))
            .ok_or_else(|| coffer_keys::Error::provider(reference, "no such key"))
    }
}

#[async_trait]
impl KekScheme for FakeScheme {
    fn scheme(&self) -> &'static str {
        "fake"
    }

    fn check_reference(&self, reference: &str) -> coffer_keys::Result<()> {
        match reference.strip_prefix("fake:") {
            Some(name) if !name.is_empty() => Ok(()),
            _ => Err(coffer_keys::Error::config("fake:NAME needs a key name")),
        }
    }

    async fn open_kek(
        &self,
        reference: &str,
        id: &KekId,
    ) -> coffer_keys::Result<Arc<dyn KekProvider>> {
        Ok(Arc::new(LocalKek::new(id.clone(), self.key(reference)?)))
    }

    async fn open_file_keyring(
        &self,
        reference: &str,
        key_name: Option<&str>,
    ) -> coffer_keys::Result<Box<dyn FileKeyring>> {
        let kek = self.key(reference)?;
        Ok(Box::new(match key_name {
            Some(n) => RawAesKeyring::new("fake", n, kek)?,
            None => RawAesKeyring::any_name("fake", kek)?,
        }))
    }
}

fn fake(keys: &[(&str, u8)]) -> FakeScheme {
    FakeScheme {
        keys: keys
            .iter()
            .map(|(n, b)| ((*n).to_owned(), [*b; 32]))
            .collect(),
    }
}

fn config(dir: &Path, source: &str) -> Config {
    Config::from_toml(&format!(
        "[store]\nurl = \"sqlite:{}/keys.db\"\n[[kek]]\nname = \"main\"\nversion = 1\n\
         source = \"{source}\"\nprimary = true\n",
        dir.display()
    ))
    .unwrap()
}

#[test]
fn an_unknown_scheme_is_named_with_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::local_only();
    registry.register(fake(&[]));
    let err = registry
        .check(&config(dir.path(), "hsm9:key=a"))
        .unwrap_err();
    assert!(matches!(err, Error::UnknownScheme { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let msg = err.to_string();
    assert!(msg.contains("'hsm9:'"), "{msg}");
    assert!(msg.contains("[[kek]] main/v1"), "{msg}");
    assert!(msg.contains("(fake)"), "{msg}");
}

#[tokio::test]
async fn a_provider_left_out_of_the_build_names_its_cargo_feature() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::local_only();
    let cfg = config(dir.path(), "pkcs11:module=/x.so;token=t;key=k;pin-env=P");
    let err = registry.kek_ring(&cfg).await.unwrap_err();
    assert!(matches!(err, Error::NotCompiledIn { .. }), "{err:?}");
    assert!(err.to_string().contains("--features pkcs11"), "{err}");
    let err = registry
        .file_keyring("aws-kms:alias/x", None)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("--features aws-kms"), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn the_compiled_in_registry_has_exactly_the_enabled_providers() {
    let schemes: Vec<_> = Registry::compiled_in().schemes().collect();
    assert_eq!(schemes.contains(&"pkcs11"), cfg!(feature = "pkcs11"));
    assert_eq!(schemes.contains(&"aws-kms"), cfg!(feature = "aws-kms"));
}

#[tokio::test]
async fn a_registered_scheme_opens_keks_and_file_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::local_only();
    registry.register(fake(&[("a", 1), ("b", 2)]));

    // Its references are checked by the provider, prefixed by the [[kek]] entry.
    let bad = registry.check(&config(dir.path(), "fake:")).unwrap_err();
    assert!(bad.to_string().contains("[[kek]] main/v1"), "{bad}");

    // The KEK wraps the canary; the same KEK proves itself again, another one does not.
    let cfg = config(dir.path(), "fake:a");
    registry.check(&cfg).unwrap();
    let open = |cfg: Config, registry: Registry| async move {
        let store = coffer_assembly::open_store(&cfg).await?;
        let ring = registry.kek_ring(&cfg).await?;
        let kc = cfg.keyring_config()?;
        coffer_assembly::keyring_on(&cfg, store, ring, kc).await
    };
    let keyring = open(cfg.clone(), registry.clone()).await.unwrap();
    assert_eq!(
        coffer_assembly::prove_keks(&keyring).await.unwrap().len(),
        1
    );
    keyring
        .create_scope(&ScopeId::new("tenant-1").unwrap())
        .await
        .unwrap();
    let again = open(cfg, registry.clone()).await.unwrap();
    assert!(
        coffer_assembly::prove_keks(&again)
            .await
            .unwrap()
            .is_empty()
    );
    let other = open(config(dir.path(), "fake:b"), registry.clone())
        .await
        .unwrap();
    let err = coffer_assembly::prove_keks(&other).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKek, "{err}");

    // File keyrings: sealed under one name, opened by any-name keyrings of the same key only.
    let mut context = EncryptionContext::new();
    context.insert("purpose", "test").unwrap();
    let sealer = registry.file_keyring("fake:a", Some("k1")).await.unwrap();
    let (data_key, edks) = files::seal(&[sealer.as_ref()], &context).await.unwrap();
    let message = Encryptor::with_data_key(Vec::new(), &data_key, edks, &context, 4096)
        .unwrap()
        .finish()
        .unwrap();
    let header = MessageHeader::read_from(&mut message.as_slice(), &Limits::default()).unwrap();
    let right = registry.file_keyring("fake:a", None).await.unwrap();
    let opened = files::open(&header, &[right.as_ref()]).await.unwrap();
    assert_eq!(opened.expose_secret(), data_key.expose_secret());
    let wrong = registry.file_keyring("fake:b", None).await.unwrap();
    assert!(files::open(&header, &[wrong.as_ref()]).await.is_err());
}

#[tokio::test]
async fn passphrases_do_not_wrap_files() {
    let err = Registry::local_only()
        .file_keyring("passphrase:env:P", Some("k"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::PassphraseForFile { .. }), "{err:?}");
}

#[tokio::test]
async fn keyring_from_file_refuses_a_changed_kek_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("kek");
    coffer_keys::source::create_key_file(&kek).unwrap();
    let path = dir.path().join("coffer.toml");
    let cfg = config(dir.path(), &format!("file:{}", kek.display()));
    cfg.write_new(&path).unwrap();
    let keyring = coffer_assembly::keyring_from_file(&path).await.unwrap();
    assert_eq!(keyring.keks().ids().count(), 1);
    drop(keyring);

    std::fs::remove_file(&kek).unwrap();
    coffer_keys::source::create_key_file(&kek).unwrap();
    let err = coffer_assembly::keyring_from_file(&path)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::WrongKek, "{err}");

    let missing = coffer_assembly::keyring_from_file(dir.path().join("nope.toml"))
        .await
        .err()
        .unwrap();
    assert_eq!(missing.kind(), ErrorKind::InvalidInput);
    assert!(
        missing.to_string().contains("coffer keys init"),
        "{missing}"
    );
}
