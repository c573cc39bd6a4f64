//! Replacing a message's encrypted data keys without touching its frames.
//!
//! The frames' keys derive from the data key and the message id only, and the frame AAD holds
//! neither the EDKs nor the header tag, so a new header (same message id, context, frame length
//! and commitment; new EDKs; a new tag) followed by the old frames is a valid message.

use super::frame::MessageKeys;
use super::header::{EncryptedDataKey, MessageHeader};
use super::reader::authenticate;
use crate::error::{Error, Result};
use crate::secret::Dek;

/// Authenticates `header` with its `data_key`, then returns the bytes of a header (body and tag)
/// carrying `edks` instead of its encrypted data keys. Write it, then copy the old message's
/// bytes from offset `header.len()` on unchanged.
pub fn rewrap_header(
    header: &MessageHeader,
    data_key: &Dek,
    edks: &[EncryptedDataKey],
) -> Result<Vec<u8>> {
    authenticate(header, data_key).map_err(|_| Error::Decrypt)?;
    let keys = MessageKeys::derive(data_key, &header.message_id)?;
    let mut out = MessageHeader::body(
        &header.message_id,
        &header.context,
        edks,
        header.frame_len,
        &header.commitment,
    )?;
    let tag = keys.header_tag(&out)?;
    out.extend_from_slice(&tag);
    Ok(out)
}
