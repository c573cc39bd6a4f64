//! The logging pipeline as `coffer serve` installs it: every line, including a panic's and an
//! error's, reaches the output with personal data masked. (One process per test file: the
//! subscriber and the panic hook are global.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use coffer_server::telemetry::{Redactor, init_logging_to};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn panics_errors_and_sensitive_fields_are_masked() {
    let buf = Buffer::default();
    let out = buf.clone();
    let redactor =
        Arc::new(Redactor::new(&["MRN-\\d{6}".to_owned()], &["diagnosis".to_owned()]).unwrap());
    init_logging_to("info", redactor, move || out.clone()).unwrap();

    tracing::error!(error = "lookup failed for 123-45-6789", "request failed");
    tracing::info!(
        diagnosis = "E11.9 type 2 diabetes",
        patient = "MRN-123456",
        "note"
    );
    tracing::warn!(sensitive.national_id = "AB123456C", "flagged");
    tracing::info!("card 4111-1111-1111-1111 and mail ann@example.org in a message");
    let r = std::panic::catch_unwind(|| {
        panic!("decrypted national id 987654321 for ann@example.org");
    });
    assert!(r.is_err());

    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
    for leak in [
        "123-45-6789",
        "E11.9",
        "MRN-123456",
        "AB123456C",
        "4111-1111-1111-1111",
        "ann@example.org",
        "987654321",
    ] {
        assert!(!text.contains(leak), "{leak} leaked:\n{text}");
    }
    let panic_line = lines.last().unwrap();
    assert!(panic_line.contains("\"message\":\"panic\""), "{panic_line}");
    assert!(
        panic_line.contains("[REDACTED:national-id]"),
        "{panic_line}"
    );
    assert!(
        panic_line.contains("redaction.rs"),
        "the location stays: {panic_line}"
    );
}
