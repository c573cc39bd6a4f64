//! The service's request decoding (`coffer_server::decode`) on arbitrary bodies, for every
//! endpoint with a body: never a panic; every refusal is a 400 with a known code and a bounded
//! message (errors name fields and expected types, they do not copy the body).
#![no_main]

use coffer_server::decode::{Endpoint, decode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let endpoint = Endpoint::ALL[usize::from(selector) % Endpoint::ALL.len()];
    if let Err(e) = decode_request(endpoint, body) {
        assert_eq!(e.status.as_u16(), 400, "{endpoint:?}: {}", e.message);
        assert!(
            matches!(
                e.code,
                "bad_request" | "bad_json" | "bad_base64" | "type_mismatch"
            ),
            "{endpoint:?}: unexpected code {}",
            e.code
        );
        assert!(
            e.message.len() <= 16 * 1024,
            "{endpoint:?}: a {}-byte message",
            e.message.len()
        );
    }
});
