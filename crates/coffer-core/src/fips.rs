//! FIPS profile: what the linked module is, and which algorithms the `fips` build refuses.
//!
//! Build with `--no-default-features --features fips` to link the FIPS 140-3 validated AWS-LC module
//! (aws-lc-fips-sys 0.13, AWS-LC-FIPS 3.x, certificate #5314). In that build the algorithms outside
//! the FIPS boundary (AES-SIV, Argon2id) are not compiled in, and asking for them returns
//! [`Error::NotFipsApproved`] when the key or parameters are set up, before any data is touched.
//! docs/COMPLIANCE.md maps every call to its standard.

use std::fmt;

use crate::error::Error;

/// Algorithms that are outside the FIPS boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// AES-SIV (RFC 5297), used for deterministic field encryption.
    AesSiv,
    /// Argon2id, a passphrase KDF.
    Argon2id,
}

impl Algorithm {
    /// The algorithm's name.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::AesSiv => "AES-SIV (deterministic encryption)",
            Algorithm::Argon2id => "Argon2id",
        }
    }

    const fn instead(self) -> &'static str {
        match self {
            Algorithm::AesSiv => {
                "search with HMAC-SHA-256 blind indexes over randomized AES-GCM columns instead"
            }
            Algorithm::Argon2id => "use PBKDF2-HMAC-SHA-256 instead",
        }
    }
}

/// Whether this build may use `alg`.
pub const fn is_available(alg: Algorithm) -> bool {
    let _ = alg;
    cfg!(feature = "non-fips")
}

#[cfg_attr(feature = "non-fips", allow(dead_code))]
pub(crate) fn refuse(alg: Algorithm) -> Error {
    Error::NotFipsApproved {
        algorithm: alg.name(),
        instead: alg.instead(),
    }
}

/// What `coffer fips-status` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The provider library.
    pub provider: &'static str,
    /// The crate that links it.
    pub module_crate: &'static str,
    /// The AWS-LC version of the linked module.
    pub module_version: String,
    /// Whether this binary was built in the FIPS profile.
    pub fips_build: bool,
    /// Whether the module reports FIPS mode on (it checks its own integrity at load).
    pub fips_mode: bool,
    /// Algorithms this build refuses.
    pub refused: Vec<&'static str>,
}

/// Reads the linked module's status.
pub fn status() -> Status {
    let info = coffer_aead::module_info();
    let fips_mode = info.fips_mode && aws_lc_rs::try_fips_mode().is_ok();
    let refused = [Algorithm::AesSiv, Algorithm::Argon2id]
        .into_iter()
        .filter(|a| !is_available(*a))
        .map(Algorithm::name)
        .collect();
    Status {
        provider: "AWS-LC (aws-lc-rs 1.17.4)",
        module_crate: info.sys_crate,
        module_version: info.version,
        fips_build: info.fips_build,
        fips_mode,
        refused,
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "provider:       {}", self.provider)?;
        writeln!(
            f,
            "module:         {} (AWS-LC {})",
            self.module_crate, self.module_version
        )?;
        writeln!(
            f,
            "fips build:     {}",
            if self.fips_build { "yes" } else { "no" }
        )?;
        writeln!(
            f,
            "fips mode:      {}",
            if self.fips_mode { "on" } else { "off" }
        )?;
        if self.refused.is_empty() {
            write!(
                f,
                "refused:        none (non-FIPS build: AES-SIV and Argon2id available)"
            )
        } else {
            write!(f, "refused:        {}", self.refused.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_matches_the_build() {
        let s = status();
        assert_eq!(s.fips_build, cfg!(feature = "fips"));
        assert_eq!(s.fips_mode, cfg!(feature = "fips"));
        assert_eq!(s.refused.is_empty(), cfg!(feature = "non-fips"));
        assert!(s.to_string().contains("fips mode"));
    }
}
