//! `coffer field`: encrypt, decrypt and blind-index one value with coffer-core.
//!
//! This module maps options to coffer-core types and renders results; the cryptography, the
//! formats and every policy about them (suites, NULLs, deterministic contexts, FIPS) are
//! coffer-core's.

use std::fmt;

use anyhow::{Result, bail};
use coffer_core::field::text;
use coffer_core::{
    BlindIndexKey, ColumnId, Error as CoreError, FieldContext, FieldKey, Header, KeyVersion,
    ScopeId, Suite, ValueType,
};
use zeroize::Zeroizing;

use crate::Hinted;
use crate::cli::{BlindIndexArgs, CipherOpts, DecryptArgs, EncryptArgs, Mode, TagBits, ValueKind};
use crate::input::{self, Newline};
use crate::keygen;

/// A decrypted authenticated NULL when `--null-ok` was not given: an input error (exit 2).
#[derive(Debug)]
pub struct UnexpectedNull;

impl fmt::Display for UnexpectedNull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the value is an authenticated NULL, not a value; \
             pass --null-ok to accept it (then nothing is printed and the exit status is 0)",
        )
    }
}

impl std::error::Error for UnexpectedNull {}

/// `coffer field encrypt`.
pub fn encrypt(args: &EncryptArgs) -> Result<()> {
    let key = field_key(&args.opts)?;
    let parts = ContextParts::new(&args.opts);
    let ctx = parts.context(args.opts.value_type);
    let sealed = if args.null {
        key.encrypt_null(&ctx).map_err(explain)?
    } else {
        let value = input::plaintext(
            args.value.as_deref(),
            Newline::from_raw_flag(args.raw_stdin),
        )?;
        if args.opts.value_type == ValueKind::Text && std::str::from_utf8(&value).is_err() {
            bail!("--type text needs UTF-8 input; use --type bytes for binary values");
        }
        key.encrypt(&ctx, &value).map_err(explain)?
    };
    let mut line = if args.hex {
        hex::encode(&sealed)
    } else {
        text::encode(&sealed)
    };
    line.push('\n');
    input::write_stdout(line.as_bytes())
}

/// `coffer field decrypt`.
pub fn decrypt(args: &DecryptArgs) -> Result<()> {
    let key = field_key(&args.opts)?;
    let parts = ContextParts::new(&args.opts);
    let ctx = parts.context(args.opts.value_type);
    let sealed = decode_ciphertext(input::ciphertext(args.value.as_deref())?, args.hex)?;
    match key.decrypt(&ctx, &sealed) {
        Ok(Some(plaintext)) => input::write_plaintext(&Zeroizing::new(plaintext)),
        Ok(None) if args.null_ok => Ok(()),
        Ok(None) => Err(UnexpectedNull.into()),
        Err(CoreError::Decrypt) => Err(match header_mismatch(&key, &sealed) {
            Some(hint) => Hinted::new(CoreError::Decrypt, hint).into(),
            None => CoreError::Decrypt.into(),
        }),
        Err(e) => Err(explain(e)),
    }
}

/// `coffer field blind-index`.
pub fn blind_index(args: &BlindIndexArgs) -> Result<()> {
    let column = ColumnId::new(args.column.as_str())?;
    let dek = keygen::load(&args.key.key)?;
    let index = BlindIndexKey::new(&dek, &column, &args.name, args.bits)?
        .with_normalizers(args.normalize.clone());
    let domain = components(&args.domain);
    let mac = if args.value.is_empty() {
        let value = input::plaintext(None, Newline::from_raw_flag(args.raw_stdin))?;
        index.compute_in_domain(&domain, &[value.as_slice()])?
    } else {
        index.compute_in_domain(&domain, &components(&args.value))?
    };
    let mut line = hex::encode(mac);
    line.push('\n');
    input::write_stdout(line.as_bytes())
}

/// The suite the options ask for: the mode, and the tag length for randomized mode.
fn suite(mode: Mode, tag_bits: Option<TagBits>) -> Result<Suite> {
    Ok(match (mode, tag_bits) {
        (Mode::Randomized, None | Some(TagBits::Bits96)) => Suite::Gcm96,
        (Mode::Randomized, Some(TagBits::Bits128)) => Suite::Gcm128,
        (Mode::Deterministic, None) => Suite::Siv,
        (Mode::Deterministic, Some(_)) => bail!(
            "--tag-bits applies to --mode randomized only; \
             deterministic mode (AES-SIV) always has a 128-bit synthetic IV"
        ),
    })
}

/// The column key the options describe. Options are checked before the key is read.
fn field_key(opts: &CipherOpts) -> Result<FieldKey> {
    let suite = suite(opts.mode, opts.tag_bits)?;
    let scope = ScopeId::new(opts.scope.as_str())?;
    let column = ColumnId::new(opts.column.as_str())?;
    let dek = keygen::load(&opts.key.key)?;
    FieldKey::new(&dek, KeyVersion(opts.key_version), suite, &scope, &column).map_err(explain)
}

/// A coffer-core error, with the CLI options to change when its message speaks of API terms.
fn explain(err: CoreError) -> anyhow::Error {
    let hint = match err {
        CoreError::RowContextInDeterministic => {
            "with --mode deterministic, pass --domain instead of --context"
        }
        CoreError::NotFipsApproved { .. } => {
            "use --mode randomized, and `coffer field blind-index` for equality search"
        }
        _ => return err.into(),
    };
    Hinted::new(err, hint.into()).into()
}

/// Repeated string options as the byte components coffer-core takes.
fn components(values: &[String]) -> Vec<&[u8]> {
    values.iter().map(String::as_bytes).collect()
}

/// The row and domain components of `--context` and `--domain`, borrowed by a [`FieldContext`].
struct ContextParts<'a> {
    row: Vec<&'a [u8]>,
    domain: Vec<&'a [u8]>,
}

impl<'a> ContextParts<'a> {
    fn new(opts: &'a CipherOpts) -> Self {
        ContextParts {
            row: components(&opts.context),
            domain: components(&opts.domain),
        }
    }

    fn context(&self, kind: ValueKind) -> FieldContext<'_> {
        FieldContext::row(&self.row)
            .with_domain(&self.domain)
            .with_type(value_type(kind))
    }
}

/// Decodes the text form, or the hex form with `--hex`. Input that is neither is
/// [`CoreError::Format`] (exit 1), with a hint when it is the other form.
fn decode_ciphertext(input: Option<String>, hex_form: bool) -> Result<Vec<u8>> {
    let Some(input) = input else {
        return Err(CoreError::Format("the input is not UTF-8 text").into());
    };
    if hex_form {
        return hex::decode(&input).map_err(|_| {
            let err = CoreError::Format("--hex input is not an even number of hex digits");
            if text::is_encrypted(&input) {
                Hinted::new(err, "this is the text form: drop --hex".into()).into()
            } else {
                err.into()
            }
        });
    }
    text::decode(&input).map_err(|err| {
        let looks_hex = !input.is_empty()
            && input.len() % 2 == 0
            && input.bytes().all(|b| b.is_ascii_hexdigit());
        if looks_hex {
            Hinted::new(
                err,
                "this looks like the binary form in hex: pass --hex".into(),
            )
            .into()
        } else {
            err.into()
        }
    })
}

/// When authentication failed and the (public, unauthenticated) header names another suite or
/// key version than the options, says so: the likeliest mistake, and no secret.
fn header_mismatch(key: &FieldKey, sealed: &[u8]) -> Option<String> {
    let (header, _) = Header::parse(sealed).ok()?;
    if header.suite == key.suite() && header.version == key.version() {
        return None;
    }
    Some(format!(
        "the value's header says {} with key version {}, but the options ask for {} with key \
         version {} (check --mode, --tag-bits and --key-version)",
        header.suite.name(),
        header.version.0,
        key.suite().name(),
        key.version().0,
    ))
}

/// The core value type of a `--type` choice.
fn value_type(kind: ValueKind) -> ValueType {
    match kind {
        ValueKind::Bytes => ValueType::Bytes,
        ValueKind::Text => ValueType::Text,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn suites_follow_mode_and_tag_bits() {
        assert_eq!(suite(Mode::Randomized, None).unwrap(), Suite::Gcm96);
        assert_eq!(
            suite(Mode::Randomized, Some(TagBits::Bits96)).unwrap(),
            Suite::Gcm96
        );
        assert_eq!(
            suite(Mode::Randomized, Some(TagBits::Bits128)).unwrap(),
            Suite::Gcm128
        );
        assert_eq!(suite(Mode::Deterministic, None).unwrap(), Suite::Siv);
        assert!(suite(Mode::Deterministic, Some(TagBits::Bits128)).is_err());
    }

    #[test]
    fn wrong_forms_get_hints() {
        let hex_err = decode_ciphertext(Some("0102".into()), false).unwrap_err();
        assert!(hex_err.downcast_ref::<Hinted>().is_some());
        let text_err = decode_ciphertext(Some("cf1:AQI".into()), true).unwrap_err();
        assert!(text_err.downcast_ref::<Hinted>().is_some());
        let plain = decode_ciphertext(Some("hello".into()), false).unwrap_err();
        assert!(matches!(
            plain.downcast_ref::<CoreError>(),
            Some(CoreError::Format(_))
        ));
        assert_eq!(
            decode_ciphertext(Some("0102".into()), true).unwrap(),
            [1, 2]
        );
    }
}
