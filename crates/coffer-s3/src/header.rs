//! Parsing a message header from the first bytes of an object, which may not hold all of it.

use std::io::{self, Read};

use coffer_core::stream::{Limits, MessageHeader};

use crate::error::{Error, Result};

/// The header at the front of `bytes`, or `None` if `bytes` ends before the header does (fetch
/// more and try again). Any other defect is the parser's error.
pub(crate) fn parse(bytes: &[u8]) -> Result<Option<MessageHeader>> {
    let mut probe = Probe {
        rest: bytes,
        starved: false,
    };
    match MessageHeader::read_from(&mut probe, &Limits::default()) {
        Ok(h) => Ok(Some(h)),
        // The parser asked for bytes past the end: the header may still be complete further on.
        Err(_) if probe.starved => Ok(None),
        Err(e) => Err(Error::from_stream(e, |e| Error::Internal(e.to_string()))),
    }
}

/// A reader over a byte slice that notes whether anyone read past its end.
struct Probe<'a> {
    rest: &'a [u8],
    starved: bool,
}

impl Read for Probe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rest.is_empty() && !buf.is_empty() {
            self.starved = true;
            return Ok(0);
        }
        self.rest.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use coffer_core::Kek;
    use coffer_core::stream::{EncryptionContext, Encryptor, RawAesKeyring};

    use super::*;

    #[test]
    fn a_prefix_asks_for_more_and_garbage_is_refused() {
        let keyring = RawAesKeyring::new("coffer", "k/v1", Kek::generate().unwrap()).unwrap();
        let mut enc =
            Encryptor::new(Vec::new(), &[&keyring], &EncryptionContext::new(), 4096).unwrap();
        enc.write_all(b"hello").unwrap();
        let message = enc.finish().unwrap();
        let full = parse(&message).unwrap().unwrap();
        for cut in 0..full.len() {
            assert!(parse(&message[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        assert_eq!(parse(&message[..full.len()]).unwrap().unwrap(), full);
        let mut bad = message.clone();
        bad[0] = 0x01;
        assert!(matches!(
            parse(&bad),
            Err(Error::Crypto(coffer_core::Error::Format(_)))
        ));
    }
}
