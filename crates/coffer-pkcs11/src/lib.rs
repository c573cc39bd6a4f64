//! Coffer's PKCS#11 KEK provider: DEKs wrapped by an AES-256 key that lives on an HSM token.
//!
//! [`Scheme`] registers the `pkcs11:` references with coffer-assembly (cargo feature `pkcs11`
//! of the frontends). [`Pkcs11Kek`] implements [`coffer_keys::KekProvider`] (kind `pkcs11`, algorithm
//! `pkcs11-aes256-gcm`). The KEK is generated on the token with `CKM_AES_KEY_GEN` as a private,
//! sensitive (`CKA_SENSITIVE=true`), non-extractable (`CKA_EXTRACTABLE=false`) token object with a
//! `CKA_LABEL`; its value never leaves the token. DEKs are wrapped with `C_Encrypt` and unwrapped
//! with `C_Decrypt` under `CKM_AES_GCM`, binding the wrap to where the DEK belongs (docs/DESIGN.md
//! §K2). `C_WrapKey` is not used: real Level-3 HSMs refuse to import plaintext DEKs for it, and
//! SoftHSM2 does not offer the key-wrap mechanisms through `C_Encrypt`.
//!
//! # KEK references
//!
//! ```text
//! pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=LABEL;key=KEYLABEL;pin-env=VAR
//! pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;slot=N;key=KEYLABEL;pin-file=PATH
//! ```
//!
//! Parts are `name=value`, separated by `;`, in any order, each at most once:
//!
//! | Part | Required | Meaning |
//! |---|---|---|
//! | `module=PATH` | yes | the PKCS#11 library, an **absolute** path |
//! | `token=LABEL` | one of these two | the token's label (trailing blanks ignored) |
//! | `slot=N` | | the slot id (prefer `token=`: SoftHSM2 renumbers slots) |
//! | `key=KEYLABEL` | yes | the KEK's `CKA_LABEL` (unique on the token) |
//! | `pin-env=VAR` | one of these two | the user PIN is in environment variable `VAR` |
//! | `pin-file=PATH` | | the user PIN is in a file (one trailing newline removed) |
//!
//! The PIN itself never appears in a reference: `pin=` and `pin-value=` are refused, and no error
//! message repeats anything that could be a PIN. Unknown, repeated, empty or missing parts are
//! errors naming the part. A PIN source may be omitted only when the caller passes the PIN itself
//! ([`Pkcs11Kek::open_with_pin`]).
//!
//! # Wrapped DEK layout (`pkcs11-aes256-gcm`)
//!
//! ```text
//! IV (12 bytes) ‖ ciphertext (32 bytes) ‖ GCM tag (16 bytes)      = 60 bytes
//! ```
//!
//! * `IV`: 12 bytes from the host's CSPRNG (AWS-LC), fresh for every wrap. A KEK wraps one DEK per
//!   scope and version, far below the 2^32 random-IV limit of SP 800-38D.
//! * `ciphertext ‖ tag`: the output of `C_Encrypt` with `CKM_AES_GCM` (`ulIvLen = 12`,
//!   `ulTagBits = 128`) under the token KEK over the 32 DEK bytes, with the associated data
//!   [`coffer_keys::WrapContext::aad`] (purpose `kek-wrap`, store id, scope, DEK version, key id;
//!   docs/FORMAT.md §1). A wrap moved to another store, scope, version or key id fails to
//!   authenticate.
//!
//! Unwrapping anything that does not authenticate (a wrong length, another KEK, another context,
//! a modified byte) is [`coffer_keys::Error::WrongKek`]; the decrypted DEK bytes are zeroized
//! after being copied into the [`coffer_core::Dek`].
//!
//! # Sessions and threads
//!
//! Each module is loaded and `C_Initialize`d once per process (`CKF_OS_LOCKING_OK`), in a global
//! registry keyed by the module's canonical path, and never finalized. A [`Pkcs11Kek`] logs in
//! once, keeps that session open (the token would log the application out when its last session
//! closes), and pools up to 16 idle read-only sessions; each operation takes one, so concurrent
//! wraps and unwraps run in parallel. The blocking PKCS#11 calls run on tokio's blocking pool
//! (inline when called outside a tokio runtime). A lost session or login (token reset) is
//! retried once after logging in again.
//!
//! Limitation: the IV is supplied by the host. HSMs whose FIPS policy insists on generating GCM
//! IVs themselves (e.g. Luna in FIPS mode) need a vendor-specific mode not implemented here.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod files;
mod kek;
mod module;
pub mod reference;
mod scheme;

pub use files::Pkcs11FileKeyring;
pub use kek::{ALGORITHM, IV_LEN, KIND, KeyAttributes, KeyMode, Pkcs11Kek, TAG_LEN, WRAPPED_LEN};
pub use reference::{PinSource, Pkcs11Ref, TokenSelector};
pub use scheme::Scheme;
