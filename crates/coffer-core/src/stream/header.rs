//! The message header (v2): version, suite, message id, encryption context, encrypted data keys,
//! content type, frame length, key commitment, then its 16-byte authentication tag.

use std::io::{self, Read};

use super::context::EncryptionContext;
use super::frame::TAG_LEN;
use super::{Limits, MESSAGE_VERSION, SUITE_ID};
use crate::error::Error;

/// Content type "framed" (the only one Coffer writes or reads).
const FRAMED: u8 = 0x02;

/// The v2 suite with an ECDSA P-384 signature, which Coffer recognises but does not read.
const SIGNED_SUITE_ID: u16 = 0x0578;

/// A format v1 message starts with version 0x01 and message type 0x80.
const V1_VERSION: u8 = 0x01;
const V1_TYPE: u8 = 0x80;

/// One encrypted data key: who can open it (provider id and info) and the wrapped key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedDataKey {
    /// The provider id (for a raw AES keyring, its namespace).
    pub provider_id: String,
    /// Provider-specific bytes (for a raw AES keyring, key name, tag and IV lengths, IV).
    pub provider_info: Vec<u8>,
    /// The wrapped data key.
    pub ciphertext: Vec<u8>,
}

impl EncryptedDataKey {
    /// For a raw AES EDK, the key name at the front of the provider info (best effort, for
    /// display: the info is `name ‖ u32 ‖ u32 ‖ IV`).
    pub fn key_name(&self) -> Option<&str> {
        let n = self.provider_info.len().checked_sub(8 + 12)?;
        std::str::from_utf8(&self.provider_info[..n]).ok()
    }
}

/// A parsed (or written) header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// Random 32-byte message id (salt of the key schedule, in every frame's AAD).
    pub message_id: [u8; 32],
    /// The encryption context.
    pub context: EncryptionContext,
    /// The encrypted data keys (at least one).
    pub edks: Vec<EncryptedDataKey>,
    /// Plaintext bytes per regular frame.
    pub frame_len: u32,
    /// The key commitment.
    pub commitment: [u8; 32],
    /// The header authentication tag.
    pub tag: [u8; TAG_LEN],
    pub(crate) body: Vec<u8>,
}

pub(crate) fn invalid(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn put16(out: &mut Vec<u8>, bytes: &[u8], what: &'static str) -> Result<(), Error> {
    let n =
        u16::try_from(bytes.len()).map_err(|_| Error::invalid(what, "longer than 65 535 bytes"))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

impl MessageHeader {
    /// The serialized header body (everything the tag covers).
    pub(crate) fn body(
        message_id: &[u8; 32],
        context: &EncryptionContext,
        edks: &[EncryptedDataKey],
        frame_len: u32,
        commitment: &[u8; 32],
    ) -> Result<Vec<u8>, Error> {
        let mut out = vec![MESSAGE_VERSION];
        out.extend_from_slice(&SUITE_ID.to_be_bytes());
        out.extend_from_slice(message_id);
        put16(&mut out, &context.serialize()?, "encryption context")?;
        let count = u16::try_from(edks.len())
            .ok()
            .filter(|&c| c > 0)
            .ok_or(Error::invalid("encrypted data keys", "need 1 to 65 535"))?;
        out.extend_from_slice(&count.to_be_bytes());
        for e in edks {
            put16(&mut out, e.provider_id.as_bytes(), "EDK provider id")?;
            put16(&mut out, &e.provider_info, "EDK provider info")?;
            put16(&mut out, &e.ciphertext, "EDK ciphertext")?;
        }
        out.push(FRAMED);
        out.extend_from_slice(&frame_len.to_be_bytes());
        out.extend_from_slice(commitment);
        Ok(out)
    }

    /// Serialized length: body and tag.
    pub fn len(&self) -> usize {
        self.body.len() + TAG_LEN
    }

    /// Never empty; here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Reads and parses a header, enforcing `limits` before allocating for any field.
    pub fn read_from<R: Read>(r: &mut R, limits: &Limits) -> io::Result<Self> {
        let fmt = |why: &'static str| invalid(Error::Format(why));
        let mut body = Vec::with_capacity(512);
        let take = |r: &mut R, n: usize, body: &mut Vec<u8>| -> io::Result<Vec<u8>> {
            let mut buf = vec![0u8; n];
            r.read_exact(&mut buf).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    fmt("truncated message header")
                } else {
                    e
                }
            })?;
            body.extend_from_slice(&buf);
            Ok(buf)
        };
        let unsupported = |why: &'static str| invalid(Error::Unsupported(why));
        let head = take(r, 3, &mut body)?;
        let suite = u16::from_be_bytes([head[1], head[2]]);
        match (head[0], suite) {
            (MESSAGE_VERSION, SUITE_ID) => {}
            (MESSAGE_VERSION, SIGNED_SUITE_ID) => {
                return Err(unsupported(
                    "this is an AWS Encryption SDK message with the signed suite 0x0578 (ECDSA \
                     P-384); Coffer reads only the unsigned committing suite 0x0478: decrypt it \
                     with the AWS Encryption SDK, or have the writer use suite 0x0478",
                ));
            }
            (MESSAGE_VERSION, _) => {
                return Err(unsupported(
                    "this is an AWS Encryption SDK v2 message with an algorithm suite Coffer does \
                     not read (only 0x0478, committing and unsigned): decrypt it with the AWS \
                     Encryption SDK",
                ));
            }
            (V1_VERSION, _) if head[1] == V1_TYPE => {
                return Err(unsupported(
                    "this is an AWS Encryption SDK format v1 message (a non-committing suite); \
                     Coffer reads only v2 messages with the committing suite 0x0478: decrypt it \
                     with the AWS Encryption SDK, then re-encrypt it with `coffer file encrypt`",
                ));
            }
            _ => {
                return Err(fmt(
                    "the input does not start like an AWS Encryption SDK message (version byte \
                     0x02 and suite 0x0478 expected)",
                ));
            }
        }
        let mut message_id = [0u8; 32];
        message_id.copy_from_slice(&take(r, 32, &mut body)?);
        let u16_of = |b: Vec<u8>| usize::from(u16::from_be_bytes([b[0], b[1]]));
        let aad_len = u16_of(take(r, 2, &mut body)?);
        if aad_len > limits.max_context_len {
            return Err(unsupported(
                "the encryption context is larger than the configured limit (Limits::max_context_len)",
            ));
        }
        let context = EncryptionContext::parse(&take(r, aad_len, &mut body)?).map_err(invalid)?;
        let count = u16_of(take(r, 2, &mut body)?);
        if count == 0 {
            return Err(fmt("message has no encrypted data key"));
        }
        if count > limits.max_edks {
            return Err(unsupported(
                "the message has more encrypted data keys than the configured limit (Limits::max_edks)",
            ));
        }
        let mut edks = Vec::with_capacity(count);
        for _ in 0..count {
            let n = u16_of(take(r, 2, &mut body)?);
            let id = String::from_utf8(take(r, n, &mut body)?)
                .map_err(|_| fmt("EDK provider id is not UTF-8"))?;
            let n = u16_of(take(r, 2, &mut body)?);
            let info = take(r, n, &mut body)?;
            let n = u16_of(take(r, 2, &mut body)?);
            let ct = take(r, n, &mut body)?;
            edks.push(EncryptedDataKey {
                provider_id: id,
                provider_info: info,
                ciphertext: ct,
            });
        }
        if take(r, 1, &mut body)?[0] != FRAMED {
            return Err(unsupported(
                "this AWS Encryption SDK message has non-framed content; Coffer reads framed \
                 messages only: decrypt it with the AWS Encryption SDK (its writers frame by \
                 default)",
            ));
        }
        let fl = take(r, 4, &mut body)?;
        let frame_len = u32::from_be_bytes([fl[0], fl[1], fl[2], fl[3]]);
        if frame_len == 0 {
            return Err(fmt("frame length zero"));
        }
        if frame_len > limits.max_frame_len {
            return Err(unsupported(
                "the message's frame length is above the configured limit (Limits::max_frame_len)",
            ));
        }
        let mut commitment = [0u8; 32];
        commitment.copy_from_slice(&take(r, 32, &mut body)?);
        let mut tag = [0u8; TAG_LEN];
        r.read_exact(&mut tag)
            .map_err(|_| fmt("truncated message header"))?;
        Ok(MessageHeader {
            message_id,
            context,
            edks,
            frame_len,
            commitment,
            tag,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(bytes: &[u8]) -> Error {
        let err = MessageHeader::read_from(&mut &bytes[..], &Limits::default()).unwrap_err();
        err.into_inner()
            .and_then(|e| e.downcast::<Error>().ok())
            .map(|e| *e)
            .expect("a coffer-core error")
    }

    #[test]
    fn sdk_messages_coffer_does_not_read_are_named_not_called_garbage() {
        let tail = vec![0u8; 64];
        for (head, says) in [
            (&[0x01, 0x80, 0x01, 0x78][..], "format v1"),
            (&[0x01, 0x80, 0x00, 0x14][..], "format v1"),
            (&[0x02, 0x05, 0x78][..], "signed suite 0x0578"),
            (
                &[0x02, 0x01, 0x78][..],
                "v2 message with an algorithm suite",
            ),
        ] {
            let mut msg = head.to_vec();
            msg.append(&mut tail.clone());
            let err = refusal(&msg);
            assert!(matches!(err, Error::Unsupported(_)), "{head:02x?}: {err:?}");
            assert!(err.to_string().contains(says), "{err}");
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        }
        for junk in [&b"PK\x03\x04"[..], b"\x00\x00\x00", b"cf1:AQ"] {
            let err = refusal(junk);
            assert!(matches!(err, Error::Format(_)), "{junk:02x?}: {err:?}");
            assert_eq!(err.kind(), crate::ErrorKind::Decrypt);
        }
    }
}
