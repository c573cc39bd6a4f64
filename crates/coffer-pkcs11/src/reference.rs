//! The `pkcs11:` KEK reference: which module, which token, which key, and where the PIN comes from.
//!
//! See the crate documentation for the syntax. A reference never carries a PIN, only the name of
//! an environment variable or a file holding it, so it can be stored in `coffer.toml`, logged and
//! shown in errors.

use std::fmt;
use std::path::{Path, PathBuf};

use coffer_keys::{Error, Result};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

/// The scheme every reference starts with.
pub const SCHEME: &str = "pkcs11:";

/// The longest key label accepted (PKCS#11 puts no limit on `CKA_LABEL`; tokens do).
const MAX_LABEL_LEN: usize = 128;

/// The longest PIN file read; a PIN is a few dozen bytes at most.
const MAX_PIN_FILE_LEN: u64 = 4096;

/// Which token of the module holds the KEK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token whose label (`CK_TOKEN_INFO.label`, trailing blanks removed) is this. Preferred:
    /// slot ids are not stable on every module (SoftHSM2 renumbers them when a token is created).
    Label(String),
    /// The token in this slot id.
    Slot(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(label) => write!(f, "token '{label}'"),
            TokenSelector::Slot(slot) => write!(f, "slot {slot}"),
        }
    }
}

/// Where the user PIN is read from, when the KEK is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// An environment variable (`pin-env=VAR`).
    Env(String),
    /// A file (`pin-file=PATH`); one trailing newline (`\n` or `\r\n`) is removed.
    File(PathBuf),
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::Env(var) => write!(f, "environment variable {var}"),
            PinSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

impl PinSource {
    /// Reads the PIN. Errors name the source, never the PIN or any part of it.
    pub fn read(&self) -> Result<AuthPin> {
        let raw: Zeroizing<String> = match self {
            PinSource::Env(var) => match std::env::var(var) {
                Ok(v) => Zeroizing::new(v),
                Err(std::env::VarError::NotPresent) => {
                    return Err(Error::config(format!(
                        "the PKCS#11 PIN variable {var} is not set (named by pin-env= in the KEK reference)"
                    )));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Error::config(format!(
                        "the PKCS#11 PIN variable {var} is not valid UTF-8"
                    )));
                }
            },
            PinSource::File(path) => Zeroizing::new(read_pin_file(path)?),
        };
        let pin = raw
            .strip_suffix("\r\n")
            .or_else(|| raw.strip_suffix('\n'))
            .unwrap_or(&raw);
        if pin.is_empty() {
            return Err(Error::config(format!(
                "the PKCS#11 PIN from {self} is empty"
            )));
        }
        // Copy into an exactly sized buffer so that `into_boxed_str` does not reallocate and
        // leave an unzeroized copy behind; `raw` is zeroized on drop.
        let mut exact = String::with_capacity(pin.len());
        exact.push_str(pin);
        Ok(AuthPin::from(exact))
    }
}

fn read_pin_file(path: &Path) -> Result<String> {
    use std::io::Read as _;
    let describe = |e: std::io::Error| {
        Error::config(format!(
            "cannot read the PKCS#11 PIN file {}: {e}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(describe)?;
    // Sized for the longest file read: a buffer that grew would leave unwiped copies behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_PIN_FILE_LEN as usize + 1));
    file.take(MAX_PIN_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(describe)?;
    if bytes.len() as u64 > MAX_PIN_FILE_LEN {
        return Err(Error::config(format!(
            "the PKCS#11 PIN file {} is larger than {MAX_PIN_FILE_LEN} bytes; it must hold only the PIN",
            path.display()
        )));
    }
    match std::str::from_utf8(&bytes) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err(Error::config(format!(
            "the PKCS#11 PIN file {} is not valid UTF-8",
            path.display()
        ))),
    }
}

/// A parsed `pkcs11:` KEK reference. [`fmt::Display`] gives it back in canonical form (part
/// order `module`, `token`/`slot`, `key`, `pin-env`/`pin-file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Ref {
    /// The PKCS#11 module (shared library), an absolute path.
    pub module: PathBuf,
    /// The token.
    pub token: TokenSelector,
    /// The KEK's `CKA_LABEL`.
    pub key: String,
    /// Where the user PIN comes from; `None` when the caller supplies it
    /// ([`crate::Pkcs11Kek::open_with_pin`]).
    pub pin: Option<PinSource>,
}

impl fmt::Display for Pkcs11Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}module={}", self.module.display())?;
        match &self.token {
            TokenSelector::Label(label) => write!(f, ";token={label}")?,
            TokenSelector::Slot(slot) => write!(f, ";slot={slot}")?,
        }
        write!(f, ";key={}", self.key)?;
        match &self.pin {
            Some(PinSource::Env(var)) => write!(f, ";pin-env={var}"),
            Some(PinSource::File(path)) => write!(f, ";pin-file={}", path.display()),
            None => Ok(()),
        }
    }
}

impl std::str::FromStr for Pkcs11Ref {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Pkcs11Ref::parse(s)
    }
}

fn bad(msg: impl fmt::Display) -> Error {
    Error::config(format!("invalid PKCS#11 KEK reference: {msg}"))
}

fn check_text(part: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(bad(format!("'{part}=' has an empty value")));
    }
    if value.chars().any(char::is_control) {
        return Err(bad(format!("'{part}=' contains a control character")));
    }
    Ok(())
}

impl Pkcs11Ref {
    /// Parses `pkcs11:module=PATH;token=LABEL|slot=N;key=LABEL[;pin-env=VAR|pin-file=PATH]`.
    ///
    /// Strict: every part is `name=value`, appears at most once, and must be known; `module` and
    /// `key` are required, exactly one of `token` and `slot`, at most one of `pin-env` and
    /// `pin-file`. A part that looks like a PIN (`pin=`, `pin-value=`, `pin-source=`) is refused,
    /// and no error ever repeats a value that could be one.
    pub fn parse(reference: &str) -> Result<Self> {
        let body = reference.strip_prefix(SCHEME).ok_or_else(|| {
            bad(format!(
                "it must start with '{SCHEME}', e.g. \
                 pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=LABEL;key=KEYLABEL;pin-env=VAR"
            ))
        })?;
        if body.is_empty() {
            return Err(bad(
                "nothing after 'pkcs11:'; 'module=' and 'key=' are required",
            ));
        }
        let mut module = None;
        let mut token = None;
        let mut slot = None;
        let mut key = None;
        let mut pin_env = None;
        let mut pin_file = None;
        for (i, part) in body.split(';').enumerate() {
            let n = i + 1;
            if part.is_empty() {
                return Err(bad(format!("part {n} is empty (a stray ';')")));
            }
            let Some((name, value)) = part.split_once('=') else {
                // Only the part's position, never its text: it might be a PIN typed in by mistake.
                return Err(bad(format!(
                    "part {n} is not 'name=value' (known names: module, token, slot, key, pin-env, pin-file)"
                )));
            };
            let slot_for = match name {
                "module" => &mut module,
                "token" => &mut token,
                "slot" => &mut slot,
                "key" => &mut key,
                "pin-env" => &mut pin_env,
                "pin-file" => &mut pin_file,
                "pin" | "pin-value" | "pin-source" | "pin_value" | "pin_env" | "pin_file" => {
                    return Err(bad(format!(
                        "'{name}=' is not accepted: a PIN never goes in the reference; use \
                         pin-env=VAR (an environment variable) or pin-file=PATH"
                    )));
                }
                other => {
                    let shown: String = other.chars().take(32).collect();
                    return Err(bad(format!(
                        "unknown part '{}' (known: module, token, slot, key, pin-env, pin-file)",
                        shown.escape_debug()
                    )));
                }
            };
            if slot_for.is_some() {
                return Err(bad(format!("'{name}=' appears more than once")));
            }
            *slot_for = Some(value);
        }

        let module = module.ok_or_else(|| {
            bad("'module=' is missing (the PKCS#11 library, e.g. module=/usr/lib/softhsm/libsofthsm2.so)")
        })?;
        check_text("module", module)?;
        let module = PathBuf::from(module);
        if !module.is_absolute() {
            return Err(bad(format!(
                "'module={}' must be an absolute path (a bare name would be searched for on the library path)",
                module.display()
            )));
        }

        let token =
            match (token, slot) {
                (Some(_), Some(_)) => {
                    return Err(bad(
                        "give either 'token=' (a token label) or 'slot=', not both",
                    ));
                }
                (None, None) => {
                    return Err(bad("'token=' is missing (the token label; or 'slot=N')"));
                }
                (Some(label), None) => {
                    check_text("token", label)?;
                    if label.len() > 32 {
                        return Err(bad(format!(
                            "'token={label}' is longer than the 32 bytes of a PKCS#11 token label"
                        )));
                    }
                    TokenSelector::Label(label.to_owned())
                }
                (None, Some(n)) => TokenSelector::Slot(n.parse::<u64>().map_err(|_| {
                    bad(format!("'slot={}' is not a slot number", n.escape_debug()))
                })?),
            };

        let key = key.ok_or_else(|| bad("'key=' is missing (the KEK's label on the token)"))?;
        check_text("key", key)?;
        if key.len() > MAX_LABEL_LEN {
            return Err(bad(format!("'key=' is longer than {MAX_LABEL_LEN} bytes")));
        }

        let pin = match (pin_env, pin_file) {
            (Some(_), Some(_)) => {
                return Err(bad("give either 'pin-env=' or 'pin-file=', not both"));
            }
            (Some(var), None) => {
                check_text("pin-env", var)?;
                if !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(bad(format!(
                        "'pin-env={}' is not an environment variable name ([A-Za-z0-9_])",
                        var.escape_debug()
                    )));
                }
                Some(PinSource::Env(var.to_owned()))
            }
            (None, Some(path)) => {
                check_text("pin-file", path)?;
                Some(PinSource::File(PathBuf::from(path)))
            }
            (None, None) => None,
        };

        Ok(Pkcs11Ref {
            module,
            token,
            key: key.to_owned(),
            pin,
        })
    }

    /// The PIN source, or a configuration error saying how to name one.
    pub fn pin_source(&self) -> Result<&PinSource> {
        self.pin.as_ref().ok_or_else(|| {
            bad("no PIN source: add 'pin-env=VAR' (an environment variable) or 'pin-file=PATH'")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str =
        "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=coffer;key=kek-1;pin-env=COFFER_PIN";

    #[test]
    fn parses_and_prints_canonically() {
        let r = Pkcs11Ref::parse(OK).unwrap();
        assert_eq!(r.module, PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(r.token, TokenSelector::Label("coffer".into()));
        assert_eq!(r.key, "kek-1");
        assert_eq!(r.pin, Some(PinSource::Env("COFFER_PIN".into())));
        assert_eq!(r.to_string(), OK);

        let r = Pkcs11Ref::parse("pkcs11:key=k;pin-file=/run/pin;slot=7;module=/m.so").unwrap();
        assert_eq!(r.token, TokenSelector::Slot(7));
        assert_eq!(r.pin, Some(PinSource::File("/run/pin".into())));
        assert_eq!(
            r.to_string(),
            "pkcs11:module=/m.so;slot=7;key=k;pin-file=/run/pin"
        );

        let r = Pkcs11Ref::parse("pkcs11:module=/m.so;token=t;key=k").unwrap();
        assert!(r.pin.is_none());
        assert!(r.pin_source().unwrap_err().to_string().contains("pin-env"));
    }

    fn err(s: &str) -> String {
        Pkcs11Ref::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_part() {
        assert!(err("module=/m.so;token=t;key=k").contains("must start with 'pkcs11:'"));
        assert!(err("pkcs11:").contains("'module=' and 'key=' are required"));
        assert!(err("pkcs11:token=t;key=k").contains("'module=' is missing"));
        assert!(err("pkcs11:module=/m.so;key=k").contains("'token=' is missing"));
        assert!(err("pkcs11:module=/m.so;token=t").contains("'key=' is missing"));
        assert!(err("pkcs11:module=m.so;token=t;key=k").contains("absolute path"));
        assert!(err("pkcs11:module=/m.so;token=t;slot=1;key=k").contains("not both"));
        assert!(err("pkcs11:module=/m.so;slot=x;key=k").contains("'slot=x'"));
        assert!(
            err("pkcs11:module=/m.so;token=t;key=k;colour=red").contains("unknown part 'colour'")
        );
        assert!(err("pkcs11:module=/m.so;token=t;key=k;key=j").contains("more than once"));
        assert!(err("pkcs11:module=/m.so;token=t;key=k;").contains("stray ';'"));
        assert!(err("pkcs11:module=/m.so;token=t;key=").contains("'key=' has an empty value"));
        assert!(
            err("pkcs11:module=/m.so;token=t;key=k;pin-env=A;pin-file=/p").contains("not both")
        );
        assert!(err("pkcs11:module=/m.so;token=t;key=k;pin-env=A-B").contains("variable name"));
    }

    #[test]
    fn a_pin_in_the_reference_is_refused_and_never_echoed() {
        for r in [
            "pkcs11:module=/m.so;token=t;key=k;pin=s3cr3t-PIN",
            "pkcs11:module=/m.so;token=t;key=k;pin-value=s3cr3t-PIN",
            "pkcs11:module=/m.so;token=t;key=k;s3cr3t-PIN",
        ] {
            let e = err(r);
            assert!(!e.contains("s3cr3t"), "{e}");
        }
        assert!(
            err("pkcs11:module=/m.so;token=t;key=k;pin=1").contains("never goes in the reference")
        );
    }

    #[test]
    fn pin_files_lose_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("coffer-pkcs11-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pin");
        std::fs::write(&path, "1234\n").unwrap();
        use secrecy::ExposeSecret as _;
        assert_eq!(
            PinSource::File(path.clone())
                .read()
                .unwrap()
                .expose_secret(),
            "1234"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(
            PinSource::File(path.clone())
                .read()
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let missing = PinSource::File(dir.join("missing")).read().unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("cannot read the PKCS#11 PIN file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let e = PinSource::Env("COFFER_PKCS11_SURELY_UNSET_VAR".into())
            .read()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("COFFER_PKCS11_SURELY_UNSET_VAR is not set")
        );
    }
}
