//! Where secrets come from: `env:VAR` and `file:PATH` references, the KEK sources built on them
//! (`passphrase:`), and external sources (`SCHEME:…`) whose providers live in their own crates and
//! implement [`KekScheme`] (an HSM, a cloud KMS; coffer-assembly holds the registry of them).
//!
//! A reference names where a secret is; it never is the secret. Messages name the reference,
//! never the value, and a malformed reference is not echoed whole (it may be a pasted key).

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use coffer_core::{Dek, Kek};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::files::FileKeyring;
use crate::kek::{KekId, KekProvider};

/// Permission bits a secret file must not have: any access by group or others.
const GROUP_OTHER_BITS: u32 = 0o077;

/// Longest secret file read: a base64 key takes 45 bytes, a passphrase a few hundred; the limit
/// keeps a mistaken `file:/dev/zero` from reading forever.
const MAX_SECRET_FILE_LEN: u64 = 4096;
/// The buffer a secret file is read into: never outgrown, so never reallocated.
const SECRET_BUFFER: usize = MAX_SECRET_FILE_LEN as usize + 1;

/// A reference to a secret: `env:VAR` or `file:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// An environment variable.
    Env(String),
    /// A file only its owner can access.
    File(PathBuf),
}

impl SecretRef {
    /// Parses `env:VAR` or `file:PATH`.
    pub fn parse(reference: &str) -> Result<Self> {
        if let Some(var) = reference.strip_prefix("env:") {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return Err(Error::config(
                    "env:VAR needs an environment variable name, e.g. env:COFFER_KEK",
                ));
            }
            return Ok(SecretRef::Env(var.to_owned()));
        }
        if let Some(path) = reference.strip_prefix("file:") {
            if path.is_empty() {
                return Err(Error::config(
                    "file:PATH needs a path, e.g. file:/etc/coffer/kek",
                ));
            }
            return Ok(SecretRef::File(PathBuf::from(path)));
        }
        // Standard base64 has no ':', so a short word before one is a mistyped kind, not a key.
        let kind = reference.split_once(':').map(|(kind, _)| kind).filter(|k| {
            !k.is_empty() && k.len() <= 16 && k.chars().all(|c| c.is_ascii_alphanumeric())
        });
        Err(Error::config(match kind {
            Some(kind) => {
                format!("unknown secret reference kind '{kind}:'; use env:VAR or file:PATH")
            }
            None => "expected a reference, env:VAR or file:PATH, not a secret; put the key in \
                     an environment variable or a file (chmod 600)"
                .to_owned(),
        }))
    }

    /// Reads the secret as text (surrounding white space kept; callers trim if they mean to).
    pub fn read_text(&self) -> Result<Zeroizing<String>> {
        match self {
            SecretRef::Env(var) => {
                let value = std::env::var_os(var)
                    .ok_or_else(|| Error::SecretNotSet { var: var.clone() })?;
                Ok(Zeroizing::new(value.into_string().map_err(|_| {
                    Error::config(format!("environment variable {var} is not UTF-8 text"))
                })?))
            }
            SecretRef::File(path) => read_private_file(path),
        }
    }

    /// Reads a 256-bit key written as standard base64.
    pub fn load_key(&self) -> Result<Zeroizing<[u8; 32]>> {
        let text = self.read_text()?;
        let dek = Dek::from_base64(&text)
            .map_err(|e| Error::config(format!("the key in {}: {e}", self.describe())))?;
        Ok(Zeroizing::new(*dek.expose_secret()))
    }

    /// Reads a KEK written as standard base64.
    pub fn load_kek(&self) -> Result<Kek> {
        Ok(Kek::from_bytes(*self.load_key()?))
    }
}

/// Writes a freshly generated 256-bit key, standard base64, to a new file readable only by its
/// owner (0600), unless the file exists already (then it is left as it is). For development keys
/// (`coffer serve --dev`, `ballots serve --dev`), which `file:PATH` then reads.
pub fn create_key_file(path: &Path) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if path.exists() {
        return Ok(());
    }
    let key = Kek::generate()?;
    let text = Zeroizing::new(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        key.expose_secret(),
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::config(format!("creating {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::config(format!("writing {}: {e}", path.display())))?;
    Ok(())
}

impl SecretRef {
    /// Where the secret is, in words: `environment variable X` or `file P`.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(v) => format!("environment variable {v}"),
            SecretRef::File(p) => format!("file {}", p.display()),
        }
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(v) => write!(f, "env:{v}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

fn read_private_file(path: &Path) -> Result<Zeroizing<String>> {
    let shown = path.display();
    let file = File::open(path)
        .map_err(|e| Error::config(format!("cannot open secret file {shown}: {e}")))?;
    // Checked on the open file, so the file read is the file checked.
    let meta = file
        .metadata()
        .map_err(|e| Error::config(format!("cannot read secret file {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::config(format!(
            "secret file {shown} is not a regular file"
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(Error::config(format!(
            "secret file {shown} is accessible by group or others (mode {mode:04o}); \
             restrict it with `chmod 600 {shown}`"
        )));
    }
    // Sized for the longest secret up front: a buffer that grew would leave its earlier, shorter
    // copies behind, unwiped.
    let mut text = Zeroizing::new(String::with_capacity(SECRET_BUFFER));
    file.take(MAX_SECRET_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(|e| Error::config(format!("cannot read secret file {shown} as text: {e}")))?;
    Ok(text)
}

/// Where a KEK version comes from (the `source` of a `[[kek]]` entry in coffer.toml).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KekSource {
    /// A base64 256-bit key in an environment variable or a private file.
    Key(SecretRef),
    /// A passphrase (from an environment variable or a file) stretched with the KDF parameters
    /// stored beside it (`kdf` in coffer.toml).
    Passphrase(SecretRef),
    /// A key held by an external provider, named `SCHEME:…`; the [`KekScheme`] registered for
    /// `scheme` parses `reference` (the whole string, scheme included) and opens the key.
    External {
        /// The scheme, e.g. `vault` for `vault:transit/keys/main`.
        scheme: String,
        /// The whole reference, scheme included.
        reference: String,
    },
}

/// Longest scheme name accepted in `SCHEME:…`.
const MAX_SCHEME_LEN: usize = 32;

impl KekSource {
    /// Parses `env:VAR`, `file:PATH`, `passphrase:env:VAR`, `passphrase:file:PATH` or an external
    /// `SCHEME:…` (a lower-case word of letters, digits and `-` before the first `:`). Whether
    /// a provider for the scheme is available is the registry's business, not the parser's.
    pub fn parse(reference: &str) -> Result<Self> {
        if let Some(rest) = reference.strip_prefix("passphrase:") {
            return Ok(KekSource::Passphrase(SecretRef::parse(rest).map_err(|_| {
                Error::config("passphrase: takes env:VAR or file:PATH, e.g. passphrase:env:COFFER_PASSPHRASE")
            })?));
        }
        if let Some(scheme) = external_scheme(reference) {
            return Ok(KekSource::External {
                scheme: scheme.to_owned(),
                reference: reference.to_owned(),
            });
        }
        SecretRef::parse(reference)
            .map(KekSource::Key)
            .map_err(|e| match e {
                Error::Config(m) => Error::Config(format!(
                    "{m} (KEK sources: env:VAR, file:PATH, passphrase:env:VAR, or SCHEME:… of \
                     a KEK provider)"
                )),
                other => other,
            })
    }

    /// The provider kind this source makes: `local`, or the external scheme.
    pub fn kind(&self) -> &str {
        match self {
            KekSource::Key(_) | KekSource::Passphrase(_) => "local",
            KekSource::External { scheme, .. } => scheme,
        }
    }
}

/// The scheme of an external reference: the word before the first `:` when it is not one of the
/// local kinds and looks like a scheme name. Base64 has no `:`, so a pasted key never is one.
fn external_scheme(reference: &str) -> Option<&str> {
    let (scheme, _) = reference.split_once(':')?;
    let well_formed = !scheme.is_empty()
        && scheme.len() <= MAX_SCHEME_LEN
        && scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (well_formed && !matches!(scheme, "env" | "file" | "passphrase")).then_some(scheme)
}

/// A family of external KEKs (an HSM, a cloud KMS, a secrets manager), implemented by the crate
/// that talks to it and registered with coffer-assembly's registry under [`KekScheme::scheme`].
/// Every method takes the whole reference (`SCHEME:…`, scheme included).
#[async_trait::async_trait]
pub trait KekScheme: Send + Sync {
    /// The scheme this provider answers to, the word before the `:` of its references.
    fn scheme(&self) -> &'static str;

    /// Checks a reference's syntax without contacting the provider.
    fn check_reference(&self, reference: &str) -> Result<()>;

    /// Opens the KEK a reference names, reporting errors under `id`.
    async fn open_kek(&self, reference: &str, id: &KekId) -> Result<Arc<dyn KekProvider>>;

    /// A keyring for streamed messages wrapped by the KEK a reference names: filed under
    /// `key_name` when given (it can wrap), any name otherwise (decryption only) where the
    /// provider's layout has names.
    async fn open_file_keyring(
        &self,
        reference: &str,
        key_name: Option<&str>,
    ) -> Result<Box<dyn FileKeyring>>;

    /// Makes the key a reference names if the provider can and it does not exist yet (e.g.
    /// generates it on a token); `true` when it was made. The default makes nothing.
    async fn create_kek(&self, reference: &str) -> Result<bool> {
        self.check_reference(reference)?;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_files_are_read_without_reallocating() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.key");
        std::fs::write(&path, "k".repeat(MAX_SECRET_FILE_LEN as usize)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = read_private_file(&path).unwrap();
        assert_eq!(text.len(), MAX_SECRET_FILE_LEN as usize);
        // Still the first allocation: no shorter copy was left behind by a regrowth.
        assert_eq!(text.capacity(), SECRET_BUFFER);
    }

    use super::*;

    #[test]
    fn parses_references() {
        assert_eq!(
            SecretRef::parse("env:COFFER_KEY").unwrap(),
            SecretRef::Env("COFFER_KEY".into())
        );
        assert_eq!(
            SecretRef::parse("file:/etc/coffer/key:1").unwrap(),
            SecretRef::File("/etc/coffer/key:1".into())
        );
        for bad in ["env:", "file:", "env:A=B", ""] {
            assert!(SecretRef::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            KekSource::parse("passphrase:env:P").unwrap(),
            KekSource::Passphrase(SecretRef::Env("P".into()))
        );
        assert_eq!(
            KekSource::parse("cloud-hsm:alias/x").unwrap(),
            KekSource::External {
                scheme: "cloud-hsm".into(),
                reference: "cloud-hsm:alias/x".into()
            }
        );
        assert_eq!(KekSource::parse("vault2:a;b=c").unwrap().kind(), "vault2");
        assert_eq!(KekSource::parse("env:K").unwrap().kind(), "local");
        assert!(KekSource::parse("passphrase:hunter2").is_err());
        // Not scheme names: upper case, too long, leading digit, a local kind misspelt.
        for bad in [
            "Vault:x",
            "1hsm:x",
            &format!("{}:x", "a".repeat(33)),
            "file",
        ] {
            assert!(
                !matches!(KekSource::parse(bad), Ok(KekSource::External { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_pasted_key_is_not_echoed() {
        let key = Dek::generate().unwrap().to_base64();
        for msg in [
            SecretRef::parse(&key).unwrap_err().to_string(),
            KekSource::parse(&key).unwrap_err().to_string(),
        ] {
            assert!(!msg.contains(key.as_str()), "{msg}");
            assert!(msg.contains("not a secret"), "{msg}");
        }
    }

    #[test]
    fn a_mistyped_kind_is_named() {
        let msg = SecretRef::parse("envv:COFFER_KEY").unwrap_err().to_string();
        assert!(msg.contains("'envv:'"), "{msg}");
    }

    #[test]
    fn files_readable_by_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek");
        std::fs::write(&p, Dek::generate().unwrap().to_base64().as_bytes()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let r = SecretRef::File(p.clone());
        assert!(r.load_key().unwrap_err().to_string().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(r.load_key().is_ok());
    }
}
