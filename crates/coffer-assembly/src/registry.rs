//! The KEK provider registry: which `SCHEME:…` sources this build can open.
//!
//! Local sources (`env:`, `file:`, `passphrase:`) are built in. Every other source is opened by
//! the [`KekScheme`] registered for its scheme; [`Registry::compiled_in`] registers one per
//! provider cargo feature of this crate, one line each.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use coffer_core::stream::RawAesKeyring;
use coffer_keys::config::{Config, KekConfig, local_provider};
use coffer_keys::files::{FileKeyring, NAMESPACE};
use coffer_keys::{KekProvider, KekRing, KekScheme, KekSource};

use crate::error::{Error, Result};

/// Providers that have a cargo feature of this crate: `(scheme, feature)`. A source whose scheme
/// is listed here but not registered fails with a message naming the feature to enable.
const OPTIONAL_PROVIDERS: &[(&str, &str)] = &[("pkcs11", "pkcs11"), ("aws-kms", "aws-kms")];

/// The KEK providers a frontend can open, by scheme.
#[derive(Clone, Default)]
pub struct Registry {
    schemes: BTreeMap<&'static str, Arc<dyn KekScheme>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.schemes.keys()).finish()
    }
}

static COMPILED_IN: LazyLock<Registry> = LazyLock::new(Registry::compiled_in);

impl Registry {
    /// A registry with the local sources only.
    pub fn local_only() -> Self {
        Registry::default()
    }

    /// The local sources and every provider whose cargo feature is on.
    pub fn compiled_in() -> Self {
        #[allow(unused_mut)]
        let mut r = Registry::local_only();
        #[cfg(feature = "pkcs11")]
        r.register(coffer_pkcs11::Scheme);
        #[cfg(feature = "aws-kms")]
        r.register(coffer_aws_kms::Scheme);
        r
    }

    /// The process-wide [`Registry::compiled_in`], which the crate's free functions use.
    pub fn global() -> &'static Registry {
        &COMPILED_IN
    }

    /// Adds a provider under its [`KekScheme::scheme`], replacing one of the same scheme.
    pub fn register(&mut self, scheme: impl KekScheme + 'static) -> &mut Self {
        self.schemes.insert(scheme.scheme(), Arc::new(scheme));
        self
    }

    /// The registered schemes, sorted.
    pub fn schemes(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.schemes.keys().copied()
    }

    /// The provider for `scheme`; `what` says where the source was given, for the message.
    pub fn scheme(&self, scheme: &str, what: &str) -> Result<&dyn KekScheme> {
        if let Some(s) = self.schemes.get(scheme) {
            return Ok(s.as_ref());
        }
        if let Some((_, feature)) = OPTIONAL_PROVIDERS.iter().find(|(s, _)| *s == scheme) {
            return Err(Error::NotCompiledIn {
                what: what.to_owned(),
                scheme: scheme.to_owned(),
                feature,
            });
        }
        let known = self.schemes().collect::<Vec<_>>().join(", ");
        Err(Error::UnknownScheme {
            what: what.to_owned(),
            scheme: scheme.to_owned(),
            known: if known.is_empty() {
                "none".to_owned()
            } else {
                known
            },
        })
    }

    /// Checks that every `[[kek]]` source has a provider in this registry and a well-formed
    /// reference, without opening anything.
    pub fn check(&self, config: &Config) -> Result<()> {
        for k in &config.keks {
            if let KekSource::External { scheme, reference } = k.source()? {
                let what = kek_label(k);
                self.scheme(&scheme, &what)?
                    .check_reference(&reference)
                    .map_err(|e| in_kek(k, e))?;
            }
        }
        Ok(())
    }

    /// Opens the provider of one `[[kek]]` entry.
    pub async fn open_kek(&self, kek: &KekConfig) -> Result<Arc<dyn KekProvider>> {
        if let Some(p) = local_provider(kek)? {
            return Ok(p);
        }
        match kek.source()? {
            KekSource::External { scheme, reference } => {
                let provider = self.scheme(&scheme, &kek_label(kek))?;
                Ok(provider.open_kek(&reference, &kek.id()?).await?)
            }
            KekSource::Key(_) | KekSource::Passphrase(_) => Err(coffer_keys::Error::config(
                format!("{}: a local source gave no provider", kek_label(kek)),
            )
            .into()),
        }
    }

    /// The ring of every `[[kek]]` provider, with the primary one marked.
    pub async fn kek_ring(&self, config: &Config) -> Result<KekRing> {
        let mut keks = Vec::with_capacity(config.keks.len());
        for k in &config.keks {
            keks.push((k.id()?, self.open_kek(k).await?));
        }
        Ok(KekRing::new(keks, config.primary()?.id()?)?)
    }

    /// A keyring for streamed messages from a KEK reference: filed under `key_name` when given
    /// (it can wrap), any name otherwise (it only unwraps). `env:`/`file:` keys make a raw AES
    /// keyring in namespace `coffer`; passphrases are refused (a message has nowhere to keep KDF
    /// parameters).
    pub async fn file_keyring(
        &self,
        reference: &str,
        key_name: Option<&str>,
    ) -> Result<Box<dyn FileKeyring>> {
        match KekSource::parse(reference)? {
            KekSource::Key(secret) => {
                let kek = secret.load_kek()?;
                let keyring = match key_name {
                    Some(n) => RawAesKeyring::new(NAMESPACE, n, kek),
                    None => RawAesKeyring::any_name(NAMESPACE, kek),
                }
                .map_err(coffer_keys::Error::from)?;
                Ok(Box::new(keyring))
            }
            KekSource::Passphrase(_) => Err(Error::PassphraseForFile {
                what: format!("kek {reference}"),
            }),
            KekSource::External { scheme, reference } => {
                let provider = self.scheme(&scheme, "KEK reference")?;
                Ok(provider.open_file_keyring(&reference, key_name).await?)
            }
        }
    }

    /// Makes the key an external source names if its provider can and it does not exist yet
    /// (`coffer keys init`/`add-kek` on an HSM token); `true` when it was made. Local sources:
    /// `false`, nothing to make.
    pub async fn create_kek(&self, kek: &KekConfig) -> Result<bool> {
        match kek.source()? {
            KekSource::External { scheme, reference } => {
                let provider = self.scheme(&scheme, &kek_label(kek))?;
                provider
                    .create_kek(&reference)
                    .await
                    .map_err(|e| in_kek(kek, e))
            }
            KekSource::Key(_) | KekSource::Passphrase(_) => Ok(false),
        }
    }
}

fn kek_label(k: &KekConfig) -> String {
    format!("[[kek]] {}/v{}", k.name, k.version)
}

/// A configuration error of a provider, prefixed by the `[[kek]]` entry it is about.
fn in_kek(k: &KekConfig, e: coffer_keys::Error) -> Error {
    match e {
        coffer_keys::Error::Config(m) => {
            coffer_keys::Error::Config(format!("{}: {m}", kek_label(k))).into()
        }
        other => other.into(),
    }
}
