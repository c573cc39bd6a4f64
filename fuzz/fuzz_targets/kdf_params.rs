//! The passphrase-KDF parameter string parser: never a panic; what parses prints back the same.
#![no_main]

use coffer_core::KdfParams;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = KdfParams::parse(s) {
        let again = KdfParams::parse(&p.to_string()).expect("re-parse");
        assert_eq!(again, p);
    }
});
