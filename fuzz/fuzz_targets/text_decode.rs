//! The `cf1:` text decoding on arbitrary strings: never a panic; what decodes re-encodes exactly.
#![no_main]

use coffer_core::field::text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(bytes) = text::decode(s) {
        assert_eq!(text::encode(&bytes), s, "text round trip");
    }
});
