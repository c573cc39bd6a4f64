//! Property tests for the field format: round trips, and every kind of tampering is the one opaque
//! decryption error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use coffer_core::{
    ColumnId, Dek, Error, FieldContext, FieldKey, KeyVersion, Nulls, ScopeId, Suite, ValueType,
};
use proptest::prelude::*;

fn key(dek: &Dek, suite: Suite, version: u32, scope: &str, column: &str) -> FieldKey {
    FieldKey::new(
        dek,
        KeyVersion(version),
        suite,
        &ScopeId::new(scope).unwrap(),
        &ColumnId::new(column).unwrap(),
    )
    .unwrap()
}

#[cfg(feature = "non-fips")]
const SUITES: &[Suite] = &[Suite::Gcm96, Suite::Gcm128, Suite::Siv];
#[cfg(not(feature = "non-fips"))]
const SUITES: &[Suite] = &[Suite::Gcm96, Suite::Gcm128];
const RANDOMIZED: &[Suite] = &[Suite::Gcm96, Suite::Gcm128];

fn assert_opaque(r: coffer_core::Result<Option<Vec<u8>>>, what: &str) {
    match r {
        Err(Error::Decrypt) => {}
        other => panic!("{what}: expected the opaque decryption error, got {other:?}"),
    }
}

fn ctx_for(suite: Suite, row: &'static [&'static [u8]]) -> FieldContext<'static> {
    if suite.is_deterministic() {
        FieldContext::new()
    } else {
        FieldContext::row(row)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip(pt in proptest::collection::vec(any::<u8>(), 0..300), version in 0u32..100_000, si in 0usize..3) {
        let suite = SUITES[si % SUITES.len()];
        let dek = Dek::generate().unwrap();
        let k = key(&dek, suite, version, "tenant:a", "c");
        let ctx = ctx_for(suite, &[b"row-1"]);
        let ct = k.encrypt(&ctx, &pt).unwrap();
        prop_assert_eq!(ct.len(), pt.len() + k.overhead());
        prop_assert_eq!(k.decrypt(&ctx, &ct).unwrap(), Some(pt.clone()));
        // Randomized suites: a second encryption of the same value shares nothing visible but
        // the header and the length.
        if suite != Suite::Siv {
            prop_assert_ne!(&k.encrypt(&ctx, &pt).unwrap(), &ct);
        }
        let t = k.encrypt_text(&ctx, &pt).unwrap();
        prop_assert_eq!(k.decrypt_text(&ctx, &t).unwrap(), Some(pt));
    }

    #[test]
    fn every_bit_flip_fails(pt in proptest::collection::vec(any::<u8>(), 0..40), si in 0usize..3) {
        let suite = SUITES[si % SUITES.len()];
        let dek = Dek::generate().unwrap();
        let k = key(&dek, suite, 7, "s", "c");
        let ctx = ctx_for(suite, &[b"r"]);
        let ct = k.encrypt(&ctx, &pt).unwrap();
        for bit in 0..ct.len() * 8 {
            let mut bad = ct.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_opaque(k.decrypt(&ctx, &bad), &format!("{suite:?} bit {bit}"));
        }
    }

    #[test]
    fn every_truncation_and_extension_fails(pt in proptest::collection::vec(any::<u8>(), 0..60), si in 0usize..3, extra in any::<u8>()) {
        let suite = SUITES[si % SUITES.len()];
        let dek = Dek::generate().unwrap();
        let k = key(&dek, suite, 40, "s", "c");
        let ctx = ctx_for(suite, &[b"r"]);
        let ct = k.encrypt(&ctx, &pt).unwrap();
        for n in 0..ct.len() {
            assert_opaque(k.decrypt(&ctx, &ct[..n]), &format!("{suite:?} truncated to {n}"));
            assert_opaque(k.decrypt(&ctx, &ct[ct.len() - n..]), &format!("{suite:?} front-cut to {n}"));
        }
        let mut longer = ct.clone();
        longer.push(extra);
        assert_opaque(k.decrypt(&ctx, &longer), "extended");
    }

    #[test]
    fn any_header_change_fails(pt in proptest::collection::vec(any::<u8>(), 0..20), si in 0usize..3, version in 0u32..40) {
        let suite = SUITES[si % SUITES.len()];
        let dek = Dek::generate().unwrap();
        let k = key(&dek, suite, version, "s", "c");
        let ctx = ctx_for(suite, &[b"r"]);
        let ct = k.encrypt(&ctx, &pt).unwrap();
        for b in 0..=255u8 {
            if b == ct[0] { continue; }
            let mut bad = ct.clone();
            bad[0] = b;
            assert_opaque(k.decrypt(&ctx, &bad), &format!("header byte {b:#04x}"));
        }
    }

    #[test]
    fn any_context_change_fails_for_randomized(
        pt in proptest::collection::vec(any::<u8>(), 0..50),
        row in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..4),
        other_row in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..4),
        ri in 0usize..2,
    ) {
        prop_assume!(row != other_row);
        let suite = RANDOMIZED[ri];
        let dek = Dek::generate().unwrap();
        let k = key(&dek, suite, 1, "tenant:a", "ssn");
        let row_refs: Vec<&[u8]> = row.iter().map(Vec::as_slice).collect();
        let other_refs: Vec<&[u8]> = other_row.iter().map(Vec::as_slice).collect();
        let ctx = FieldContext::row(&row_refs).with_type(ValueType::Text);
        let ct = k.encrypt(&ctx, &pt).unwrap();
        prop_assert_eq!(k.decrypt(&ctx, &ct).unwrap(), Some(pt));
        assert_opaque(k.decrypt(&FieldContext::row(&other_refs).with_type(ValueType::Text), &ct), "other row");
        assert_opaque(k.decrypt(&FieldContext::row(&row_refs), &ct), "other value type");
        assert_opaque(k.decrypt(&ctx.with_domain(&[b"d"]), &ct), "added domain");
        assert_opaque(key(&dek, suite, 1, "tenant:b", "ssn").decrypt(&ctx, &ct), "other scope");
        assert_opaque(key(&dek, suite, 1, "tenant:a", "email").decrypt(&ctx, &ct), "other column");
        assert_opaque(key(&dek, suite, 2, "tenant:a", "ssn").decrypt(&ctx, &ct), "other version");
        assert_opaque(key(&Dek::generate().unwrap(), suite, 1, "tenant:a", "ssn").decrypt(&ctx, &ct), "other DEK");
        let other_suite = if suite == Suite::Gcm96 { Suite::Gcm128 } else { Suite::Gcm96 };
        assert_opaque(key(&dek, other_suite, 1, "tenant:a", "ssn").decrypt(&ctx, &ct), "other suite");
    }

    #[test]
    fn null_and_empty_never_swap(si in 0usize..3) {
        let suite = SUITES[si % SUITES.len()];
        let dek = Dek::generate().unwrap();
        let k = key(&dek, suite, 3, "s", "c");
        let ctx = ctx_for(suite, &[b"r"]);
        let null = k.encrypt_null(&ctx).unwrap();
        let empty = k.encrypt(&ctx, b"").unwrap();
        prop_assert_eq!(null.len(), empty.len());
        prop_assert_eq!(k.decrypt(&ctx, &null).unwrap(), None);
        prop_assert_eq!(k.decrypt(&ctx, &empty).unwrap(), Some(Vec::new()));
        // Flip the N bit of each: both must fail, never turn into the other.
        let mut n2e = null.clone();
        n2e[0] ^= 0x80;
        let mut e2n = empty.clone();
        e2n[0] ^= 0x80;
        assert_opaque(k.decrypt(&ctx, &n2e), "NULL relabelled as value");
        assert_opaque(k.decrypt(&ctx, &e2n), "empty relabelled as NULL");
    }
}

#[test]
fn nullable_policies() {
    let dek = Dek::generate().unwrap();
    let k = key(&dek, Suite::Gcm96, 1, "s", "c");
    let ctx = FieldContext::row(&[b"r"]);
    assert_eq!(
        k.encrypt_nullable(&ctx, None, Nulls::Passthrough).unwrap(),
        None
    );
    let sealed = k
        .encrypt_nullable(&ctx, None, Nulls::Authenticated)
        .unwrap()
        .unwrap();
    assert_eq!(
        k.decrypt_nullable(&ctx, Some(&sealed), Nulls::Authenticated)
            .unwrap(),
        None
    );
    assert_eq!(
        k.decrypt_nullable(&ctx, None, Nulls::Passthrough).unwrap(),
        None
    );
    assert!(matches!(
        k.decrypt_nullable(&ctx, None, Nulls::Authenticated),
        Err(Error::UnauthenticatedNull)
    ));
}

#[test]
fn overhead_bounds_of_design_c6() {
    let dek = Dek::generate().unwrap();
    let ctx = FieldContext::new();
    for (suite, overhead) in [(Suite::Gcm96, 25), (Suite::Gcm128, 29)] {
        for v in [1, 30] {
            let k = key(&dek, suite, v, "s", "c");
            assert_eq!(k.encrypt(&ctx, &[0u8; 50]).unwrap().len(), 50 + overhead);
        }
        // Versions above 30 take the escape byte.
        assert_eq!(key(&dek, suite, 31, "s", "c").overhead(), overhead + 1);
    }
    #[cfg(feature = "non-fips")]
    assert_eq!(
        key(&dek, Suite::Siv, 1, "s", "c")
            .encrypt(&ctx, &[0u8; 50])
            .unwrap()
            .len(),
        67
    );
}

#[cfg(feature = "non-fips")]
mod deterministic {
    use super::*;

    #[test]
    fn equal_inputs_equal_outputs_and_bindings() {
        let dek = Dek::generate().unwrap();
        let k = key(&dek, Suite::Siv, 1, "tenant:a", "ssn");
        let ctx = FieldContext::new()
            .with_domain(&[b"tenant-1"])
            .with_type(ValueType::Text);
        let a = k.encrypt(&ctx, b"123-45-6789").unwrap();
        assert_eq!(a, k.encrypt(&ctx, b"123-45-6789").unwrap());
        assert_ne!(a, k.encrypt(&ctx, b"123-45-6780").unwrap());
        assert_eq!(k.decrypt(&ctx, &a).unwrap().unwrap(), b"123-45-6789");
        // Scope, column, domain and type are bound.
        assert_opaque(
            key(&dek, Suite::Siv, 1, "tenant:b", "ssn").decrypt(&ctx, &a),
            "scope",
        );
        assert_opaque(
            key(&dek, Suite::Siv, 1, "tenant:a", "mrn").decrypt(&ctx, &a),
            "column",
        );
        assert_opaque(k.decrypt(&ctx.with_domain(&[b"tenant-2"]), &a), "domain");
        assert_opaque(k.decrypt(&ctx.with_type(ValueType::Bytes), &a), "type");
    }

    #[test]
    fn a_row_context_is_refused() {
        let dek = Dek::generate().unwrap();
        let k = key(&dek, Suite::Siv, 1, "s", "c");
        let e = k.encrypt(&FieldContext::row(&[b"pk"]), b"x").unwrap_err();
        assert!(matches!(e, Error::RowContextInDeterministic), "{e}");
    }
}

#[cfg(feature = "fips")]
#[test]
fn siv_is_refused_at_configuration_in_fips() {
    let dek = Dek::generate().unwrap();
    let e = FieldKey::new(
        &dek,
        KeyVersion(1),
        Suite::Siv,
        &ScopeId::new("s").unwrap(),
        &ColumnId::new("c").unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::NotFipsApproved { .. }));
    assert!(e.to_string().contains("blind indexes"), "{e}");
}

#[test]
fn batches_match_single_calls_and_count() {
    let dek = Dek::generate().unwrap();
    let k = key(&dek, Suite::Gcm96, 1, "s", "c");
    let rows: Vec<[u8; 8]> = (0..3000u64).map(u64::to_be_bytes).collect();
    let row_refs: Vec<[&[u8]; 1]> = rows.iter().map(|r| [&r[..]]).collect();
    let values: Vec<Vec<u8>> = (0..3000)
        .map(|i| format!("value-{i}").into_bytes())
        .collect();
    let items: Vec<(FieldContext<'_>, &[u8])> = row_refs
        .iter()
        .zip(&values)
        .map(|(r, v)| (FieldContext::row(r), v.as_slice()))
        .collect();
    let serial = k.encrypt_batch(&items).unwrap();
    let parallel = k.encrypt_batch_parallel(&items).unwrap();
    assert_eq!(k.counter().count(), 6000);
    let mut ivs = std::collections::HashSet::new();
    for (i, ((ctx, v), (a, b))) in items.iter().zip(serial.iter().zip(&parallel)).enumerate() {
        assert_eq!(
            k.decrypt(ctx, a).unwrap().as_deref(),
            Some(*v),
            "serial {i}"
        );
        assert_eq!(
            k.decrypt(ctx, b).unwrap().as_deref(),
            Some(*v),
            "parallel {i}"
        );
        assert!(ivs.insert(a[a.len() - 12..].to_vec()), "IV repeated");
        assert!(ivs.insert(b[b.len() - 12..].to_vec()), "IV repeated");
    }
    let opened = k.decrypt_batch_parallel(
        &items
            .iter()
            .zip(&parallel)
            .map(|((c, _), ct)| (*c, ct.as_slice()))
            .collect::<Vec<_>>(),
    );
    assert!(
        opened
            .iter()
            .zip(&values)
            .all(|(r, v)| r.as_ref().unwrap().as_deref() == Some(v.as_slice()))
    );
}

#[test]
fn packed_seals_and_appended_opens_match_single_calls() {
    let dek = Dek::generate().unwrap();
    let k = key(&dek, Suite::Gcm96, 1, "s", "c");
    let rows: Vec<[u8; 8]> = (0..300u64).map(u64::to_be_bytes).collect();
    let row_refs: Vec<[&[u8]; 1]> = rows.iter().map(|r| [&r[..]]).collect();
    let values: Vec<Vec<u8>> = (0..300).map(|i| vec![b'v'; i % 70]).collect();
    let items: Vec<(FieldContext<'_>, &[u8])> = row_refs
        .iter()
        .zip(&values)
        .map(|(r, v)| (FieldContext::row(r), v.as_slice()))
        .collect();
    let packed = k.encrypt_packed(&items).unwrap();
    assert_eq!(packed.len(), 300);
    assert_eq!(k.counter().count(), 300);
    let mut opened = Vec::new();
    let mut ends = Vec::new();
    for (i, ((ctx, v), ct)) in items.iter().zip(packed.iter()).enumerate() {
        assert_eq!(ct.len(), k.sealed_len(v.len()), "length {i}");
        assert_eq!(
            k.decrypt(ctx, ct).unwrap().as_deref(),
            Some(*v),
            "value {i}"
        );
        assert!(k.decrypt_append(ctx, ct, &mut opened).unwrap());
        ends.push(opened.len());
    }
    let mut start = 0;
    for (v, end) in values.iter().zip(ends) {
        assert_eq!(&opened[start..end], v.as_slice());
        start = end;
    }
    // A failure appends nothing; an authenticated NULL appends nothing and says so.
    let before = opened.len();
    let first = packed.iter().next().unwrap();
    assert!(k.decrypt_append(&items[1].0, first, &mut opened).is_err());
    let null = k.encrypt_null(&items[0].0).unwrap();
    assert!(!k.decrypt_append(&items[0].0, &null, &mut opened).unwrap());
    assert_eq!(opened.len(), before);
}

#[test]
fn encryption_limit_is_enforced() {
    use std::sync::Arc;
    let dek = Dek::generate().unwrap();
    let counter = Arc::new(coffer_core::EncryptionCounter::new(0, 2));
    let k = FieldKey::with_counter(
        &dek,
        KeyVersion(1),
        Suite::Gcm96,
        &ScopeId::new("s").unwrap(),
        &ColumnId::new("c").unwrap(),
        counter,
    )
    .unwrap();
    let ctx = FieldContext::new();
    k.encrypt(&ctx, b"1").unwrap();
    k.encrypt(&ctx, b"2").unwrap();
    let e = k.encrypt(&ctx, b"3").unwrap_err();
    assert!(matches!(e, Error::EncryptionLimit { limit: 2 }));
    assert!(e.to_string().contains("rotate"));
    // Decryption still works past the limit.
    let items = [(ctx, &b"x"[..])];
    assert!(k.encrypt_batch(&items).is_err());
}

/// docs/FORMAT.md §2.6 states the overhead table; it must match what the code writes.
#[test]
fn format_doc_overhead_table_matches_the_code() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/FORMAT.md"))
        .unwrap();
    let sizes = [0usize, 1, 11, 50, 1000];
    let dek = Dek::generate().unwrap();
    #[allow(unused_mut)]
    let mut rows = vec![
        ("| GCM tag 96, binary |", Suite::Gcm96, false),
        ("| GCM tag 128, binary |", Suite::Gcm128, false),
        ("| GCM tag 96, text |", Suite::Gcm96, true),
    ];
    #[cfg(feature = "non-fips")]
    rows.extend([
        ("| AES-SIV, binary |", Suite::Siv, false),
        ("| AES-SIV, text |", Suite::Siv, true),
    ]);
    for (prefix, suite, text) in rows {
        let line = doc
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} missing"));
        let cells: Vec<usize> = line[prefix.len()..]
            .split('|')
            .filter(|c| !c.trim().is_empty())
            .map(|c| {
                c.trim()
                    .trim_start_matches("**")
                    .split([' ', '*'])
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        let k = key(&dek, suite, 1, "s", "c");
        let ctx = FieldContext::new();
        for (n, documented) in sizes.iter().zip(cells) {
            let pt = vec![0u8; *n];
            let stored = if text {
                k.encrypt_text(&ctx, &pt).unwrap().len()
            } else {
                k.encrypt(&ctx, &pt).unwrap().len()
            };
            assert_eq!(stored - n, documented, "{prefix} at {n} bytes");
        }
    }
}
