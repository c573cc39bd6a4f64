//! The streaming-format reader on arbitrary bytes: never a panic, never plaintext from a message
//! that does not authenticate. Messages start as a valid one (the seed corpus is empty, so the
//! fuzzer also mutates a real message: the first byte picks whether to prepend one).
#![no_main]

use std::io::{Read as _, Write as _};
use std::sync::OnceLock;

use coffer_core::Kek;
use coffer_core::stream::{Decryptor, EncryptionContext, Encryptor, Limits, RawAesKeyring};
use libfuzzer_sys::fuzz_target;

fn keyring() -> &'static RawAesKeyring {
    static K: OnceLock<RawAesKeyring> = OnceLock::new();
    K.get_or_init(|| RawAesKeyring::new("fuzz", "k/v1", Kek::from_bytes([7; 32])).unwrap())
}

fn valid() -> &'static [u8] {
    static M: OnceLock<Vec<u8>> = OnceLock::new();
    M.get_or_init(|| {
        let mut c = EncryptionContext::new();
        c.insert("a", "b").unwrap();
        let mut e = Encryptor::new(Vec::new(), &[keyring()], &c, 32).unwrap();
        e.write_all(&[9u8; 100]).unwrap();
        e.finish().unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    // Either raw input, or the valid message with the input XORed over it.
    let msg: Vec<u8> = match data.split_first() {
        Some((0, rest)) => rest.to_vec(),
        Some((_, rest)) => {
            let mut m = valid().to_vec();
            for (i, b) in rest.iter().enumerate() {
                if let Some(x) = m.get_mut(i) {
                    *x ^= b;
                }
            }
            m
        }
        None => return,
    };
    let limits = Limits { max_edks: 4, max_context_len: 1024, max_frame_len: 4096 };
    let Ok(mut d) = Decryptor::new(&msg[..], &[keyring()], limits) else { return };
    let mut out = Vec::new();
    if d.read_to_end(&mut out).is_ok() {
        // Only the untouched message authenticates.
        assert_eq!(msg, valid(), "a changed message decrypted");
        assert_eq!(out, [9u8; 100]);
    }
});
