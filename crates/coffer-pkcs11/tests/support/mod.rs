//! The SoftHSM2 token the PKCS#11 tests and benchmarks run against (coffer-testkit's
//! `softhsm`: the token `SOFTHSM2_CONF` describes, or one scripts/softhsm-setup.sh sets up in a
//! directory under `CARGO_TARGET_TMPDIR`).
//!
//! The module is loaded in this process, so `SOFTHSM2_CONF` is set here when the script chose
//! it, and `COFFER_TEST_PKCS11_PIN` is set to the user PIN if unset, for the `pin-env=` tests.
#![allow(dead_code, unsafe_code, clippy::expect_used)]

use std::path::Path;
use std::sync::OnceLock;

pub use coffer_testkit::softhsm::{PIN_ENV, Token as Hsm};

/// The test token, set up on first use; an error says what is missing.
pub fn hsm() -> Result<&'static Hsm, String> {
    static HSM: OnceLock<Result<Hsm, String>> = OnceLock::new();
    HSM.get_or_init(setup).as_ref().map_err(Clone::clone)
}

/// Sets an environment variable. Called only from `setup`, inside the `OnceLock`
/// initialization that every test and the benchmark go through before anything reads the
/// environment or loads the PKCS#11 module.
fn set_env(key: &str, value: &str) {
    // SAFETY: see above; no other thread reads the environment at this point of the tests.
    unsafe { std::env::set_var(key, value) };
}

fn setup() -> Result<Hsm, String> {
    let hsm = Hsm::find_or_setup(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("coffer-softhsm"))?;
    if std::env::var_os("SOFTHSM2_CONF").is_none() {
        set_env("SOFTHSM2_CONF", &hsm.conf.display().to_string());
    }
    if std::env::var_os(PIN_ENV).is_none() {
        set_env(PIN_ENV, &hsm.pin()?);
    }
    Ok(hsm)
}

/// A label no other test run used: `prefix-` and 12 random hex digits.
pub fn unique_label(prefix: &str) -> String {
    coffer_testkit::random::name_with(prefix, '-')
}
