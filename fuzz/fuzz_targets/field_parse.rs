//! The field header parser and the decrypt path on arbitrary bytes: never a panic; a header that
//! parses writes back to the same bytes; nothing but a genuine ciphertext decrypts.
#![no_main]

use coffer_core::{ColumnId, Dek, FieldContext, FieldKey, Header, KeyVersion, ScopeId, Suite};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn keys() -> &'static [FieldKey] {
    static KEYS: OnceLock<Vec<FieldKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dek = Dek::from_bytes([0x42; 32]);
        let scope = ScopeId::new("fuzz").unwrap();
        let column = ColumnId::new("c").unwrap();
        [Suite::Gcm96, Suite::Gcm128, Suite::Siv]
            .into_iter()
            .map(|s| FieldKey::new(&dek, KeyVersion(1), s, &scope, &column).unwrap())
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok((header, used)) = Header::parse(data) {
        let mut out = Vec::new();
        header.write(&mut out);
        assert_eq!(&out[..], &data[..used], "header round trip");
        assert_eq!(header.len(), used);
    }
    for key in keys() {
        // Random bytes must not authenticate (probability 2^-96 or less).
        assert!(key.decrypt(&FieldContext::new(), data).is_err());
    }
});
