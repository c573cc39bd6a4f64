//! The key schedule and the AES-GCM operations of a message: header tag and frames.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use aws_lc_rs::{constant_time, hkdf};
use zeroize::Zeroizing;

use super::SUITE_ID;
use crate::error::{Error, Result};
use crate::secret::Dek;

/// Tag length of every GCM operation in the format.
pub const TAG_LEN: usize = 16;
/// IV length.
pub const IV_LEN: usize = 12;
/// The sequence-number marker that opens the final frame.
pub(crate) const FINAL_MARKER: u32 = 0xFFFF_FFFF;
const FRAME_STR: &[u8] = b"AWSKMSEncryptionClient Frame";
const FINAL_STR: &[u8] = b"AWSKMSEncryptionClient Final Frame";

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf_sha512(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA512, salt).extract(ikm);
    let infos = [info];
    prk.expand(&infos, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| Error::Module("HKDF-SHA-512"))
}

/// The message key (for the header tag and frames) and the key commitment, both derived from the
/// data key with the message id as salt.
pub(crate) struct MessageKeys {
    key: LessSafeKey,
    pub(crate) commitment: [u8; 32],
    message_id: [u8; 32],
}

impl MessageKeys {
    pub(crate) fn derive(data_key: &Dek, message_id: &[u8; 32]) -> Result<Self> {
        let mut info = SUITE_ID.to_be_bytes().to_vec();
        info.extend_from_slice(b"DERIVEKEY");
        let mut enc = Zeroizing::new([0u8; 32]);
        hkdf_sha512(data_key.expose_secret(), message_id, &info, &mut enc[..])?;
        let mut commitment = [0u8; 32];
        hkdf_sha512(
            data_key.expose_secret(),
            message_id,
            b"COMMITKEY",
            &mut commitment,
        )?;
        let key = UnboundKey::new(&AES_256_GCM, &enc[..])
            .map_err(|_| Error::Module("AES-GCM key setup"))?;
        Ok(MessageKeys {
            key: LessSafeKey::new(key),
            commitment,
            message_id: *message_id,
        })
    }

    /// Constant-time check of the header's commitment.
    pub(crate) fn check_commitment(&self, in_header: &[u8; 32]) -> Result<()> {
        constant_time::verify_slices_are_equal(&self.commitment, in_header)
            .map_err(|_| Error::Decrypt)
    }

    /// The header tag: GCM with IV 0, no plaintext, AAD = the header body.
    pub(crate) fn header_tag(&self, body: &[u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; IV_LEN]),
                Aad::from(body),
                &mut [],
            )
            .map_err(|_| Error::Module("AES-GCM seal"))?;
        Ok(tag_bytes(&tag))
    }

    pub(crate) fn check_header_tag(&self, body: &[u8], tag: &[u8; TAG_LEN]) -> Result<()> {
        let expected = self.header_tag(body)?;
        constant_time::verify_slices_are_equal(&expected, tag).map_err(|_| Error::Decrypt)
    }

    fn aad(&self, last: bool, seq: u32, len: usize) -> Vec<u8> {
        let s = if last { FINAL_STR } else { FRAME_STR };
        let mut aad = Vec::with_capacity(32 + s.len() + 12);
        aad.extend_from_slice(&self.message_id);
        aad.extend_from_slice(s);
        aad.extend_from_slice(&seq.to_be_bytes());
        aad.extend_from_slice(&(len as u64).to_be_bytes());
        aad
    }

    /// Seals a frame in place; returns its tag. The IV is the sequence number (format-defined).
    pub(crate) fn seal_frame(
        &self,
        last: bool,
        seq: u32,
        data: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let aad = self.aad(last, seq, data.len());
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv(seq)),
                Aad::from(&aad[..]),
                data,
            )
            .map_err(|_| Error::Module("AES-GCM seal"))?;
        Ok(tag_bytes(&tag))
    }

    /// Opens a frame in place (`data` = ciphertext ‖ tag); returns the plaintext length.
    pub(crate) fn open_frame(&self, last: bool, seq: u32, data: &mut [u8]) -> Result<usize> {
        let len = data.len().checked_sub(TAG_LEN).ok_or(Error::Decrypt)?;
        let aad = self.aad(last, seq, len);
        self.key
            .open_in_place(
                Nonce::assume_unique_for_key(iv(seq)),
                Aad::from(&aad[..]),
                data,
            )
            .map(|p| p.len())
            .map_err(|_| Error::Decrypt)
    }
}

/// A frame's IV: eight zero bytes, then the sequence number.
pub(crate) fn iv(seq: u32) -> [u8; IV_LEN] {
    let mut iv = [0u8; IV_LEN];
    iv[8..].copy_from_slice(&seq.to_be_bytes());
    iv
}

fn tag_bytes(tag: &Tag) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}
