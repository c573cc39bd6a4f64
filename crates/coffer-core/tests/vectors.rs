//! Known-answer tests: every vector shipped in `tests/data/` (Wycheproof and NIST CAVP) run against
//! the exact primitives Coffer calls, through [`coffer_core::hazmat`].
//!
//! Each suite counts the vectors it sees, checks and skips, prints a summary line and asserts the
//! exact counts, so a missing, truncated or replaced vector file fails the test. Wycheproof's
//! `numberOfTests` is cross-checked against the tests actually iterated. Vectors that are skipped
//! (key sizes Coffer's primitives do not offer) are still fed to the primitive, which must refuse
//! the key. `tests/data/README.md` lists the files, their provenance and the skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use coffer_core::hazmat;
use serde_json::Value;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data");

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

fn read(rel: &str) -> String {
    let path = format!("{DATA}/{rel}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A Wycheproof test vector together with its test group.
struct Vector<'a> {
    group: &'a Value,
    test: &'a Value,
}

impl Vector<'_> {
    fn id(&self) -> u64 {
        self.test["tcId"].as_u64().expect("tcId")
    }

    fn hex(&self, field: &str) -> Vec<u8> {
        let s = self.test[field]
            .as_str()
            .unwrap_or_else(|| panic!("tcId {}: no string field {field}", self.id()));
        hex::decode(s).unwrap_or_else(|e| panic!("tcId {}: field {field}: {e}", self.id()))
    }

    fn num(&self, field: &str) -> u64 {
        self.test[field]
            .as_u64()
            .unwrap_or_else(|| panic!("tcId {}: no integer field {field}", self.id()))
    }

    fn group_num(&self, field: &str) -> u64 {
        self.group[field]
            .as_u64()
            .unwrap_or_else(|| panic!("tcId {}: group has no integer field {field}", self.id()))
    }

    fn flags(&self) -> Vec<&str> {
        self.test["flags"]
            .as_array()
            .map(|a| a.iter().map(|f| f.as_str().expect("flag")).collect())
            .unwrap_or_default()
    }

    fn result(&self) -> Expect {
        match self.test["result"].as_str() {
            Some("valid") => Expect::Valid,
            Some("invalid") => Expect::Invalid,
            Some("acceptable") => Expect::Acceptable,
            other => panic!("tcId {}: unknown result {other:?}", self.id()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Valid,
    Invalid,
    Acceptable,
}

/// Loads a Wycheproof file, checks its algorithm name and that `numberOfTests` matches the tests
/// in its groups, and returns the parsed document.
fn wycheproof(file: &str, algorithm: &str) -> Value {
    let doc: Value = serde_json::from_str(&read(&format!("wycheproof/{file}")))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(
        doc["algorithm"].as_str(),
        Some(algorithm),
        "{file}: algorithm"
    );
    let declared = doc["numberOfTests"].as_u64().expect("numberOfTests");
    let present: usize = doc["testGroups"]
        .as_array()
        .expect("testGroups")
        .iter()
        .map(|g| g["tests"].as_array().expect("tests").len())
        .sum();
    assert_eq!(present as u64, declared, "{file}: numberOfTests");
    doc
}

fn vectors(doc: &Value) -> impl Iterator<Item = Vector<'_>> {
    doc["testGroups"]
        .as_array()
        .expect("testGroups")
        .iter()
        .flat_map(|group| {
            group["tests"]
                .as_array()
                .expect("tests")
                .iter()
                .map(move |test| Vector { group, test })
        })
}

/// What a suite did with its vectors.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    /// Vectors iterated (for Wycheproof files: equals `numberOfTests`).
    total: usize,
    /// Vectors with `result: valid` (or NIST pass records) checked.
    valid: usize,
    /// Vectors with `result: invalid` (or NIST `FAIL` records) checked.
    invalid: usize,
    /// Vectors with `result: acceptable` checked.
    acceptable: usize,
    /// Vectors not checked (see `skip_reason`).
    skipped: usize,
}

impl Tally {
    fn checked(&self) -> usize {
        self.valid + self.invalid + self.acceptable
    }

    fn count(&mut self, e: Expect) {
        match e {
            Expect::Valid => self.valid += 1,
            Expect::Invalid => self.invalid += 1,
            Expect::Acceptable => self.acceptable += 1,
        }
    }

    fn report(&self, name: &str, skip_reason: &str) {
        assert_eq!(self.checked() + self.skipped, self.total, "{name}: tally");
        let skipped = if self.skipped == 0 {
            String::new()
        } else {
            format!(", {} skipped ({skip_reason})", self.skipped)
        };
        println!(
            "{name}: {} vectors, {} checked ({} valid, {} invalid, {} acceptable){skipped}",
            self.total,
            self.checked(),
            self.valid,
            self.invalid,
            self.acceptable,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// AES-KW / AES-KWP (Wycheproof)
// ---------------------------------------------------------------------------------------------

/// Whether AES-KW (SP 800-38F §6.2) is defined for a plaintext of `len` bytes: at least two
/// semiblocks, a whole number of semiblocks. RFC 3394's one-semiblock special case (plain AES of
/// `IV ‖ P`) is not part of SP 800-38F, and AWS-LC does not implement it.
fn kw_plaintext_ok(len: usize) -> bool {
    len >= 16 && len % 8 == 0
}

/// Whether AES-KWP (SP 800-38F §6.3) is defined for a plaintext of `len` bytes: 1 ≤ len < 2^32.
fn kwp_plaintext_ok(len: usize) -> bool {
    len >= 1 && (len as u64) < (1u64 << 32)
}

/// `hazmat::aes_kw_wrap` / `hazmat::aes_kwp_wrap`.
type WrapFn = fn(&[u8], &[u8]) -> coffer_core::Result<Vec<u8>>;
/// `hazmat::aes_kw_unwrap_into` / `hazmat::aes_kwp_unwrap_into`.
type UnwrapIntoFn = fn(&[u8], &[u8], &mut [u8]) -> coffer_core::Result<usize>;

#[derive(Clone, Copy)]
struct KeyWrap {
    name: &'static str,
    wrap: WrapFn,
    unwrap_into: UnwrapIntoFn,
    plaintext_ok: fn(usize) -> bool,
}

const KW: KeyWrap = KeyWrap {
    name: "AES-KW",
    wrap: hazmat::aes_kw_wrap,
    unwrap_into: hazmat::aes_kw_unwrap_into,
    plaintext_ok: kw_plaintext_ok,
};

const KWP: KeyWrap = KeyWrap {
    name: "AES-KWP",
    wrap: hazmat::aes_kwp_wrap,
    unwrap_into: hazmat::aes_kwp_unwrap_into,
    plaintext_ok: kwp_plaintext_ok,
};

impl KeyWrap {
    fn unwrap(&self, key: &[u8], wrapped: &[u8]) -> coffer_core::Result<Vec<u8>> {
        // Both AWS-LC unwrap functions need room for `wrapped.len() - 8` bytes; give them more.
        let mut out = vec![0u8; wrapped.len() + 8];
        let n = (self.unwrap_into)(key, wrapped, &mut out)?;
        out.truncate(n);
        Ok(out)
    }
}

/// Runs a Wycheproof key-wrap file.
///
/// * `valid`: wrap(msg) must equal ct, and unwrap(ct) must equal msg.
/// * `invalid`: unwrap(ct) must fail. A vector can be invalid only because of its ciphertext
///   (modified IV or padding, appended bytes) while its msg is a perfectly good key: then wrap(msg)
///   must succeed and give something other than ct. When the msg itself is outside the algorithm's
///   domain (empty, not a multiple of 8 bytes for KW, a single semiblock for KW), wrap must fail.
/// * `acceptable`: the only such vectors are AES-KW `ShortKey` (an 8-byte key wrapped as RFC 3394
///   §2 allows, by one AES encryption of `IV ‖ P`). SP 800-38F, which Coffer follows, does not
///   define KW for one semiblock, and AWS-LC refuses it. We *require* that refusal, for wrap and
///   unwrap alike, so that a library change that starts accepting one-semiblock KW is noticed.
///   Any other `acceptable` flag fails the test until someone decides how to treat it.
/// * All key sizes (128, 192, 256 bits) are checked: the wrap goes straight to AWS-LC's
///   `AES_wrap_key*` (coffer-aead), which takes all three. Coffer's own KEKs are 256-bit.
///
/// Returns the tally and how many `invalid` vectors had a msg outside the domain (wrap refused).
fn run_key_wrap(file: &str, algorithm: &str, kw: KeyWrap) -> (Tally, usize) {
    let doc = wycheproof(file, algorithm);
    let mut tally = Tally::default();
    let mut wrap_refused = 0usize;
    for v in vectors(&doc) {
        tally.total += 1;
        let id = v.id();
        let (key, msg, ct) = (v.hex("key"), v.hex("msg"), v.hex("ct"));
        assert_eq!(v.group_num("keySize") as usize, key.len() * 8, "tcId {id}");
        let expect = v.result();
        let msg_ok = (kw.plaintext_ok)(msg.len());
        match expect {
            Expect::Valid => {
                assert!(
                    msg_ok,
                    "{} tcId {id}: valid vector with bad msg length",
                    kw.name
                );
                let wrapped = (kw.wrap)(&key, &msg)
                    .unwrap_or_else(|e| panic!("{} tcId {id}: wrap failed: {e}", kw.name));
                assert_eq!(
                    hex::encode(&wrapped),
                    hex::encode(&ct),
                    "{} tcId {id}: wrap",
                    kw.name
                );
                let back = kw
                    .unwrap(&key, &ct)
                    .unwrap_or_else(|e| panic!("{} tcId {id}: unwrap failed: {e}", kw.name));
                assert_eq!(
                    hex::encode(&back),
                    hex::encode(&msg),
                    "{} tcId {id}: unwrap",
                    kw.name
                );
            }
            Expect::Invalid => {
                assert!(
                    kw.unwrap(&key, &ct).is_err(),
                    "{} tcId {id} ({:?}): invalid ciphertext unwrapped",
                    kw.name,
                    v.flags()
                );
                match (kw.wrap)(&key, &msg) {
                    Ok(w) if msg_ok => assert_ne!(w, ct, "{} tcId {id}: wrap gave ct", kw.name),
                    Ok(_) => panic!(
                        "{} tcId {id}: wrapped a {}-byte msg outside the algorithm's domain",
                        kw.name,
                        msg.len()
                    ),
                    Err(e) => {
                        assert!(
                            !msg_ok,
                            "{} tcId {id}: wrap of a good msg failed: {e}",
                            kw.name
                        );
                        wrap_refused += 1;
                    }
                }
            }
            Expect::Acceptable => {
                assert_eq!(
                    v.flags(),
                    ["ShortKey"],
                    "{} tcId {id}: decide how to treat this acceptable vector",
                    kw.name
                );
                assert!(!msg_ok, "{} tcId {id}", kw.name);
                assert!(
                    (kw.wrap)(&key, &msg).is_err(),
                    "{} tcId {id}: 8-byte KW wrap accepted",
                    kw.name
                );
                assert!(
                    kw.unwrap(&key, &ct).is_err(),
                    "{} tcId {id}: 8-byte KW unwrap accepted",
                    kw.name
                );
            }
        }
        tally.count(expect);
    }
    (tally, wrap_refused)
}

#[test]
fn wycheproof_aes_kw() {
    let (t, wrap_refused) = run_key_wrap("aes_wrap_test.json", "AES-WRAP", KW);
    t.report("aes_kw (aes_wrap_test.json)", "none");
    println!("aes_kw: {wrap_refused} invalid vectors have a msg KW cannot wrap (wrap refused)");
    // All key sizes: EmptyKey, ShortKey (invalid), WrongDataSize, and the InvalidWrappingSize
    // vectors with an empty msg (51 in all). The other 75 invalid vectors (ModifiedIv, and
    // bytes appended to a good wrap) have a good msg; only their ciphertext is wrong.
    assert_eq!(wrap_refused, 51);
    assert_eq!(
        t,
        Tally {
            total: 165,
            valid: 36,
            invalid: 126,
            acceptable: 3,
            skipped: 0,
        }
    );
}

#[test]
fn wycheproof_aes_kwp() {
    let (t, wrap_refused) = run_key_wrap("aes_kwp_test.json", "AES-KWP", KWP);
    t.report("aes_kwp (aes_kwp_test.json)", "none");
    println!("aes_kwp: {wrap_refused} invalid vectors have a msg KWP cannot wrap (wrap refused)");
    // The three "invalid wrapping of empty key" vectors (one per key size); all other invalid KWP vectors have a good
    // msg and a modified IV, padding or length field.
    assert_eq!(wrap_refused, 3);
    assert_eq!(
        t,
        Tally {
            total: 254,
            valid: 77,
            invalid: 177,
            acceptable: 0,
            skipped: 0,
        }
    );
}

// ---------------------------------------------------------------------------------------------
// AES-KW / AES-KWP (NIST CAVP, SP 800-38F)
// ---------------------------------------------------------------------------------------------

/// One CAVP record.
#[derive(Debug, Default)]
struct CavpRecord {
    /// Line number of `COUNT`.
    line: usize,
    /// `[PLAINTEXT LENGTH = n]` of the section, in bits.
    plaintext_bits: usize,
    count: Option<u32>,
    k: Option<Vec<u8>>,
    p: Option<Vec<u8>>,
    c: Option<Vec<u8>>,
    fail: bool,
}

/// Parses a CAVP key-wrap response file (CRLF or LF line ends).
fn parse_cavp(file: &str) -> Vec<CavpRecord> {
    let text = read(&format!("nist-cavp-kw/{file}"));
    let mut records: Vec<CavpRecord> = Vec::new();
    let mut section: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let lineno = i + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let (name, value) = inner
                .split_once('=')
                .unwrap_or_else(|| panic!("{file}:{lineno}: bad section {line}"));
            assert_eq!(name.trim(), "PLAINTEXT LENGTH", "{file}:{lineno}");
            section = Some(value.trim().parse().expect("plaintext length"));
            continue;
        }
        if line == "FAIL" {
            let r = records.last_mut().expect("FAIL before any COUNT");
            assert!(!r.fail, "{file}:{lineno}: two FAILs");
            r.fail = true;
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{file}:{lineno}: cannot parse {line:?}"));
        let (name, value) = (name.trim(), value.trim());
        if name == "COUNT" {
            records.push(CavpRecord {
                line: lineno,
                plaintext_bits: section.unwrap_or_else(|| panic!("{file}:{lineno}: no section")),
                count: Some(value.parse().expect("COUNT")),
                ..CavpRecord::default()
            });
            continue;
        }
        let r = records
            .last_mut()
            .unwrap_or_else(|| panic!("{file}:{lineno}: field before COUNT"));
        let bytes = hex::decode(value).unwrap_or_else(|e| panic!("{file}:{lineno}: {e}"));
        let slot = match name {
            "K" => &mut r.k,
            "P" => &mut r.p,
            "C" => &mut r.c,
            other => panic!("{file}:{lineno}: unknown field {other}"),
        };
        assert!(slot.is_none(), "{file}:{lineno}: repeated {name}");
        *slot = Some(bytes);
    }
    records
}

/// Runs one CAVP file. `AE` files (authenticated encryption): wrap(K, P) must equal C, and
/// unwrap(K, C) must give P back. `AD` files (authenticated decryption): unwrap(K, C) must equal P,
/// or fail for `FAIL` records. Every record of a 128- or 256-bit KEK is checked; nothing is skipped.
fn run_cavp(file: &str, kw: KeyWrap, key_len: usize) -> Tally {
    let decrypt = file.contains("_AD_");
    assert!(
        decrypt || file.contains("_AE_"),
        "{file}: neither AE nor AD"
    );
    let mut tally = Tally::default();
    let mut lengths = std::collections::BTreeMap::<usize, usize>::new();
    let mut fails = std::collections::BTreeMap::<usize, usize>::new();
    for r in parse_cavp(file) {
        tally.total += 1;
        let at = format!(
            "{file}:{} (COUNT = {})",
            r.line,
            r.count.unwrap_or_default()
        );
        let k = r.k.as_deref().unwrap_or_else(|| panic!("{at}: no K"));
        let c = r.c.as_deref().unwrap_or_else(|| panic!("{at}: no C"));
        assert_eq!(k.len(), key_len, "{at}: KEK length");
        *lengths.entry(r.plaintext_bits).or_default() += 1;
        if r.fail {
            assert!(decrypt, "{at}: FAIL record in an AE file");
            assert!(r.p.is_none(), "{at}: FAIL record with P");
            assert!(
                kw.unwrap(k, c).is_err(),
                "{at}: {} unwrapped a FAIL record",
                kw.name
            );
            *fails.entry(r.plaintext_bits).or_default() += 1;
            tally.invalid += 1;
            continue;
        }
        let p = r.p.as_deref().unwrap_or_else(|| panic!("{at}: no P"));
        assert_eq!(p.len() * 8, r.plaintext_bits, "{at}: P length vs section");
        if !decrypt {
            let wrapped = (kw.wrap)(k, p)
                .unwrap_or_else(|e| panic!("{at}: {} wrap of a valid record failed: {e}", kw.name));
            assert_eq!(
                hex::encode(&wrapped),
                hex::encode(c),
                "{at}: {} wrap",
                kw.name
            );
        }
        let back = kw
            .unwrap(k, c)
            .unwrap_or_else(|e| panic!("{at}: {} unwrap of a valid record failed: {e}", kw.name));
        assert_eq!(
            hex::encode(&back),
            hex::encode(p),
            "{at}: {} unwrap",
            kw.name
        );
        tally.valid += 1;
    }
    // Each file has five plaintext lengths with 100 records each; AD files have 20 FAIL records in
    // each (NIST's Readme.txt).
    assert_eq!(lengths.len(), 5, "{file}: sections {lengths:?}");
    assert!(
        lengths.values().all(|&n| n == 100),
        "{file}: sections {lengths:?}"
    );
    if decrypt {
        assert!(
            fails.keys().eq(lengths.keys()) && fails.values().all(|&n| n == 20),
            "{file}: FAIL records per section {fails:?}"
        );
    }
    tally.report(&format!("nist-cavp-kw/{file} {lengths:?}"), "");
    tally
}

#[test]
fn nist_cavp_kw() {
    // Plaintext lengths (bits): 128, 192, 256, 320, 4096. All are multiples of 64 and ≥ 128.
    let ae = Tally {
        total: 500,
        valid: 500,
        ..Tally::default()
    };
    let ad = Tally {
        total: 500,
        valid: 400,
        invalid: 100,
        ..Tally::default()
    };
    assert_eq!(run_cavp("KW_AE_128.txt", KW, 16), ae);
    assert_eq!(run_cavp("KW_AE_192.txt", KW, 24), ae);
    assert_eq!(run_cavp("KW_AE_256.txt", KW, 32), ae);
    assert_eq!(run_cavp("KW_AD_128.txt", KW, 16), ad);
    assert_eq!(run_cavp("KW_AD_192.txt", KW, 24), ad);
    assert_eq!(run_cavp("KW_AD_256.txt", KW, 32), ad);
}

#[test]
fn nist_cavp_kwp() {
    // Plaintext lengths (bits): 8, 64, 72, 248, 4096, i.e. both padded and unpadded inputs and the
    // one-semiblock case that KWP encrypts with a single AES call.
    let ae = Tally {
        total: 500,
        valid: 500,
        ..Tally::default()
    };
    let ad = Tally {
        total: 500,
        valid: 400,
        invalid: 100,
        ..Tally::default()
    };
    assert_eq!(run_cavp("KWP_AE_128.txt", KWP, 16), ae);
    assert_eq!(run_cavp("KWP_AE_192.txt", KWP, 24), ae);
    assert_eq!(run_cavp("KWP_AE_256.txt", KWP, 32), ae);
    assert_eq!(run_cavp("KWP_AD_128.txt", KWP, 16), ad);
    assert_eq!(run_cavp("KWP_AD_192.txt", KWP, 24), ad);
    assert_eq!(run_cavp("KWP_AD_256.txt", KWP, 32), ad);
}

// ---------------------------------------------------------------------------------------------
// HKDF-SHA-256, HMAC-SHA-256, PBKDF2-HMAC-SHA-256 (Wycheproof)
// ---------------------------------------------------------------------------------------------

/// `valid`: the output must equal okm. `invalid` (all `SizeTooLarge`: 8161 bytes, one more than
/// 255 · 32): the call must fail. No `acceptable` vectors exist; one would fail the test.
#[test]
fn wycheproof_hkdf_sha256() {
    let doc = wycheproof("hkdf_sha256_test.json", "HKDF-SHA-256");
    let mut t = Tally::default();
    for v in vectors(&doc) {
        t.total += 1;
        let id = v.id();
        let size = v.num("size") as usize;
        let out = hazmat::hkdf_sha256(&v.hex("salt"), &v.hex("ikm"), &v.hex("info"), size);
        let expect = v.result();
        match expect {
            Expect::Valid => {
                let okm = out.unwrap_or_else(|e| panic!("tcId {id}: {e}"));
                assert_eq!(hex::encode(okm), hex::encode(v.hex("okm")), "tcId {id}");
            }
            Expect::Invalid => {
                assert_eq!(v.flags(), ["SizeTooLarge"], "tcId {id}");
                assert!(out.is_err(), "tcId {id}: {size}-byte output accepted");
            }
            Expect::Acceptable => panic!("tcId {id}: unexpected acceptable vector"),
        }
        t.count(expect);
    }
    t.report("hkdf_sha256", "");
    assert_eq!(
        t,
        Tally {
            total: 86,
            valid: 83,
            invalid: 3,
            ..Tally::default()
        }
    );
}

/// The tag may be truncated (`tagSize` 128): compare the first `tagSize / 8` bytes of the full
/// HMAC. `valid`: equal; `invalid` (all `ModifiedTag`): different.
#[test]
fn wycheproof_hmac_sha256() {
    let doc = wycheproof("hmac_sha256_test.json", "HMACSHA256");
    let mut t = Tally::default();
    let mut truncated = 0usize;
    for v in vectors(&doc) {
        t.total += 1;
        let id = v.id();
        let tag_len = v.group_num("tagSize") as usize / 8;
        let tag = v.hex("tag");
        assert_eq!(tag.len(), tag_len, "tcId {id}: tag length");
        assert!((1..=32).contains(&tag_len), "tcId {id}: tagSize");
        truncated += usize::from(tag_len < 32);
        let mac = hazmat::hmac_sha256(&v.hex("key"), &v.hex("msg"));
        let expect = v.result();
        match expect {
            Expect::Valid => {
                assert_eq!(hex::encode(&mac[..tag_len]), hex::encode(&tag), "tcId {id}")
            }
            Expect::Invalid => {
                assert_ne!(&mac[..tag_len], &tag[..], "tcId {id}: modified tag matched")
            }
            Expect::Acceptable => panic!("tcId {id}: unexpected acceptable vector"),
        }
        t.count(expect);
    }
    t.report("hmac_sha256", "");
    println!("hmac_sha256: {truncated} with 128-bit truncated tags");
    assert_eq!(
        t,
        Tally {
            total: 174,
            valid: 66,
            invalid: 108,
            ..Tally::default()
        }
    );
    assert_eq!(truncated, 87);
}

/// All vectors are `valid`: the derived key must equal dk. (An `invalid` vector would have to
/// either fail or give something else; there are none.)
#[test]
fn wycheproof_pbkdf2_hmac_sha256() {
    let doc = wycheproof("pbkdf2_hmacsha256_test.json", "PBKDF2-HMACSHA256");
    let mut t = Tally::default();
    for v in vectors(&doc) {
        t.total += 1;
        let id = v.id();
        let iterations = u32::try_from(v.num("iterationCount")).expect("iterationCount");
        let mut out = vec![0u8; v.num("dkLen") as usize];
        let r =
            hazmat::pbkdf2_hmac_sha256(&v.hex("password"), &v.hex("salt"), iterations, &mut out);
        let expect = v.result();
        match expect {
            Expect::Valid => {
                r.unwrap_or_else(|e| panic!("tcId {id}: {e}"));
                assert_eq!(hex::encode(&out), hex::encode(v.hex("dk")), "tcId {id}");
            }
            Expect::Invalid => assert!(r.is_err() || out != v.hex("dk"), "tcId {id}"),
            Expect::Acceptable => panic!("tcId {id}: unexpected acceptable vector"),
        }
        t.count(expect);
    }
    t.report("pbkdf2_hmacsha256", "");
    assert_eq!(
        t,
        Tally {
            total: 60,
            valid: 60,
            ..Tally::default()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// AES-SIV (Wycheproof; not in the fips build)
// ---------------------------------------------------------------------------------------------

/// AES-SIV-CMAC (RFC 5297) with the single `aad` as a one-element S2V header vector. Coffer uses
/// 512-bit keys (AES-256-SIV); `hazmat` also offers 256-bit ones (AES-128-SIV). 384-bit keys are
/// skipped after checking that they are refused.
///
/// `valid`: encrypt must give ct (`SIV ‖ C`) and decrypt must give msg back. `invalid` (all are
/// modified SIVs): decrypt must fail, and encrypting msg must not give ct.
#[cfg(feature = "non-fips")]
#[test]
fn wycheproof_aes_siv_cmac() {
    let doc = wycheproof("aes_siv_cmac_test.json", "AES-SIV-CMAC");
    let mut t = Tally::default();
    let mut by_key = std::collections::BTreeMap::<usize, usize>::new();
    for v in vectors(&doc) {
        t.total += 1;
        let id = v.id();
        let (key, aad, msg, ct) = (v.hex("key"), v.hex("aad"), v.hex("msg"), v.hex("ct"));
        assert_eq!(v.group_num("keySize") as usize, key.len() * 8, "tcId {id}");
        let headers: &[&[u8]] = &[&aad];
        if key.len() == 48 {
            assert!(
                hazmat::aes_siv_encrypt(&key, headers, &msg).is_err()
                    && hazmat::aes_siv_decrypt(&key, headers, &ct).is_err(),
                "tcId {id}: a 384-bit AES-SIV key was not refused"
            );
            t.skipped += 1;
            continue;
        }
        *by_key.entry(key.len() * 8).or_default() += 1;
        let sealed = hazmat::aes_siv_encrypt(&key, headers, &msg);
        let opened = hazmat::aes_siv_decrypt(&key, headers, &ct);
        let expect = v.result();
        match expect {
            Expect::Valid => {
                let sealed = sealed.unwrap_or_else(|e| panic!("tcId {id}: encrypt: {e}"));
                assert_eq!(hex::encode(sealed), hex::encode(&ct), "tcId {id}: encrypt");
                let opened = opened.unwrap_or_else(|e| panic!("tcId {id}: decrypt: {e}"));
                assert_eq!(hex::encode(opened), hex::encode(&msg), "tcId {id}: decrypt");
            }
            Expect::Invalid => {
                assert!(opened.is_err(), "tcId {id}: invalid ciphertext decrypted");
                assert_ne!(sealed.expect("encrypt"), ct, "tcId {id}: encrypt gave ct");
            }
            Expect::Acceptable => panic!("tcId {id}: unexpected acceptable vector"),
        }
        t.count(expect);
    }
    t.report("aes_siv_cmac", "384-bit keys");
    println!("aes_siv_cmac: checked by key size (bits) {by_key:?}");
    assert_eq!(
        t,
        Tally {
            total: 442,
            valid: 79,
            invalid: 216,
            acceptable: 0,
            skipped: 147,
        }
    );
    assert_eq!(by_key, [(256, 148), (512, 147)].into_iter().collect());
}
