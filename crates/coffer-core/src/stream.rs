//! Streaming encryption in the AWS Encryption SDK message format, version 2, algorithm suite
//! 0x0478 (AES-256-GCM, HKDF-SHA-512, key commitment, no signature), framed.
//!
//! The format is the public one, byte for byte, so the official AWS Encryption SDKs decrypt what
//! Coffer writes (with a raw AES keyring holding the same wrapping key) and Coffer decrypts theirs;
//! docs/FORMAT.md §10 summarises the bytes. [`Encryptor`] is a `Write` that frames and seals;
//! [`Decryptor`] is a `Read` that checks the key commitment (in constant time) and the header tag
//! before anything else, and releases a frame's plaintext only after its tag verifies. Truncation,
//! reordering, frames spliced from another message, trailing bytes and header changes all fail.
//!
//! ```
//! use std::io::{Read as _, Write as _};
//! use coffer_core::Kek;
//! use coffer_core::stream::{Decryptor, EncryptionContext, Encryptor, Limits, RawAesKeyring};
//!
//! let keyring = RawAesKeyring::new("coffer/backups", "main/v1", Kek::generate()?)?;
//! let mut context = EncryptionContext::new();
//! context.insert("purpose", "nightly-dump")?;
//! let mut enc = Encryptor::new(Vec::new(), &[&keyring], &context, 64 * 1024)?;
//! enc.write_all(b"pg_dump output ...")?;
//! let message = enc.finish()?;
//!
//! let mut dec = Decryptor::new(&message[..], &[&keyring], Limits::default())?;
//! assert_eq!(dec.context().get("purpose"), Some("nightly-dump"));
//! let mut plain = Vec::new();
//! dec.read_to_end(&mut plain)?;
//! assert_eq!(plain, b"pg_dump output ...");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod context;
mod frame;
mod header;
mod pool;
mod positional;
mod raw_aes;
mod reader;
mod rewrap;
mod seek;
mod writer;

pub use context::EncryptionContext;
pub use frame::{IV_LEN, TAG_LEN};
pub use header::{EncryptedDataKey, MessageHeader};
pub use positional::{ReadAt, decrypt_at};
pub use raw_aes::RawAesKeyring;
pub use reader::{Decryptor, no_key};
pub use rewrap::rewrap_header;
pub use seek::{FrameLayout, SeekableDecryptor};
pub use writer::Encryptor;

/// The algorithm suite: AES-256-GCM, HKDF-SHA-512, key commitment, no signature.
pub const SUITE_ID: u16 = 0x0478;
/// Message format version 2.
pub const MESSAGE_VERSION: u8 = 0x02;
/// Coffer's default frame length (the SDKs default to 4 096, which costs 0.8 % in tags).
pub const DEFAULT_FRAME_LEN: u32 = 64 * 1024;

/// Parser limits: a message asking for more is refused before anything is allocated for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most encrypted data keys in a header (default 16).
    pub max_edks: usize,
    /// Largest serialized encryption context, bytes (default 16 KiB; the format allows 64 KiB).
    pub max_context_len: usize,
    /// Largest frame length accepted (default 16 MiB).
    pub max_frame_len: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_edks: 16,
            max_context_len: 16 * 1024,
            max_frame_len: 16 * 1024 * 1024,
        }
    }
}
