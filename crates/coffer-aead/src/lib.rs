//! AES-256-GCM with a 96- or 128-bit tag and an IV generated inside the AWS-LC module.
//!
//! aws-lc-rs's safe `aead` API only offers 128-bit tags. AWS-LC's C `EVP_AEAD` interface takes a
//! tag length, and `EVP_aead_aes_256_gcm_randnonce()` draws the 96-bit IV inside the module (the
//! FIPS-approved way, SP 800-38D §8.2.2). This crate wraps exactly those calls; with coffer-py's one
//! `pthread_atfork` registration it is the only `unsafe` code in the workspace (docs/DESIGN.md
//! §L4), and every block carries its safety argument.
//!
//! A sealed value is laid out as AWS-LC produces it: `ciphertext ‖ tag ‖ iv`. Coffer's field format
//! (docs/FORMAT.md §2) keeps that order so sealing and opening never copy.
//!
//! It also holds AES key wrap ([`keywrap`]), so that the key-encryption key's AES schedule is
//! cleansed after every call.
//!
//! The crate links the same AWS-LC that aws-lc-rs links: `aws-lc-sys` by default, `aws-lc-fips-sys`
//! (the FIPS 140-3 validated module) with the `fips` feature.

#![allow(unsafe_code)]
#![deny(missing_docs)]

#[cfg(all(feature = "fips", feature = "non-fips"))]
compile_error!(
    "coffer-aead: the `fips` and `non-fips` features link two different AWS-LC builds; \
     build the FIPS profile with `--no-default-features --features fips`"
);

#[cfg(feature = "fips")]
use aws_lc_fips_sys as ffi;
#[cfg(all(feature = "non-fips", not(feature = "fips")))]
use aws_lc_sys as ffi;

use std::fmt;
use std::ptr::NonNull;

pub mod keywrap;

/// Length of the GCM IV, in bytes.
pub const IV_LEN: usize = 12;
/// Length of an AES-256 key, in bytes.
pub const KEY_LEN: usize = 32;

/// The GCM tag length (SP 800-38D §5.2.1.2 allows 96 and 128 bits, among others).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagLength {
    /// 96-bit tag (12 bytes): Coffer's compact default.
    Bits96,
    /// 128-bit tag (16 bytes).
    Bits128,
}

impl TagLength {
    /// The tag length in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            TagLength::Bits96 => 12,
            TagLength::Bits128 => 16,
        }
    }
}

/// The one error of this crate. It never says why an operation failed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Error;

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("coffer_aead::Error")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AES-GCM operation failed")
    }
}

impl std::error::Error for Error {}

/// An owned `EVP_AEAD_CTX` allocated by AWS-LC.
struct Ctx(NonNull<ffi::EVP_AEAD_CTX>);

impl Ctx {
    fn new(aead: *const ffi::EVP_AEAD, key: &[u8; KEY_LEN], tag_len: usize) -> Result<Self, Error> {
        // SAFETY: `aead` comes from an `EVP_aead_*` constructor (a pointer to a static method table);
        // `key` is valid for KEY_LEN bytes for the duration of the call, and AWS-LC copies the key
        // schedule into the new context. A null return means failure and is handled below.
        let ptr = unsafe { ffi::EVP_AEAD_CTX_new(aead, key.as_ptr(), key.len(), tag_len) };
        match NonNull::new(ptr) {
            Some(p) => Ok(Ctx(p)),
            None => {
                clear_errors();
                Err(Error)
            }
        }
    }

    fn as_ptr(&self) -> *const ffi::EVP_AEAD_CTX {
        self.0.as_ptr()
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `EVP_AEAD_CTX_new`, is owned by this value alone and is
        // freed exactly once. `EVP_AEAD_CTX_free` runs the AEAD's cleanup and `OPENSSL_free`, which
        // cleanses the whole allocation (the AES key schedule and GHASH key) before freeing it.
        unsafe { ffi::EVP_AEAD_CTX_free(self.0.as_ptr()) }
    }
}

// SAFETY: an initialised GCM `EVP_AEAD_CTX` is only read by `EVP_AEAD_CTX_seal`/`open` (they take a
// `const EVP_AEAD_CTX *`); AWS-LC documents these calls as safe to make concurrently on one context.
// Nothing mutates it after construction, and it is freed only in `Drop`.
unsafe impl Send for Ctx {}
// SAFETY: see `Send` above; shared references only reach the const seal/open entry points.
unsafe impl Sync for Ctx {}

fn clear_errors() {
    // SAFETY: clears this thread's AWS-LC error queue; no pointers involved.
    unsafe { ffi::ERR_clear_error() }
}

/// An AES-256-GCM key for sealing with module-generated IVs and opening `ct ‖ tag ‖ iv` values.
///
/// The key schedule lives in memory owned by AWS-LC and is cleansed when this value drops. The type
/// has no way to hand the key bytes back out.
pub struct GcmKey {
    randnonce: Ctx,
    #[cfg(not(feature = "fips"))]
    external: Ctx,
    tag: TagLength,
}

impl fmt::Debug for GcmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcmKey")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl GcmKey {
    /// Builds a key. The caller keeps (and zeroizes) its copy of `key`.
    pub fn new(key: &[u8; KEY_LEN], tag: TagLength) -> Result<Self, Error> {
        // SAFETY: returns a pointer to a static method table; no arguments.
        let randnonce_aead = unsafe { ffi::EVP_aead_aes_256_gcm_randnonce() };
        // The randnonce AEAD counts the 12 IV bytes it appends as part of the "tag".
        let randnonce = Ctx::new(randnonce_aead, key, tag.bytes() + IV_LEN)?;
        #[cfg(not(feature = "fips"))]
        let external = {
            // SAFETY: as above.
            let aead = unsafe { ffi::EVP_aead_aes_256_gcm() };
            Ctx::new(aead, key, tag.bytes())?
        };
        Ok(GcmKey {
            randnonce,
            #[cfg(not(feature = "fips"))]
            external,
            tag,
        })
    }

    /// The tag length of this key.
    pub fn tag_length(&self) -> TagLength {
        self.tag
    }

    /// Bytes added to a plaintext: tag plus IV.
    pub fn overhead(&self) -> usize {
        self.tag.bytes() + IV_LEN
    }

    /// Seals `plaintext` with a fresh module-generated IV and appends `ct ‖ tag ‖ iv` to `out`.
    pub fn seal_append(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let max = plaintext.len() + self.overhead();
        let start = out.len();
        out.reserve(max);
        let mut written = 0usize;
        // SAFETY: `out` has at least `max` bytes of spare capacity starting at `start` (reserved
        // above), which is what AWS-LC may write; `plaintext` and `aad` are valid for their lengths
        // and do not overlap the spare capacity of `out` (a `&[u8]` cannot alias a `&mut Vec`).
        // The randnonce AEAD takes no external nonce (null, 0). On success AWS-LC has initialised
        // `written <= max` bytes, and only then is the length extended.
        let ok = unsafe {
            ffi::EVP_AEAD_CTX_seal(
                self.randnonce.as_ptr(),
                out.as_mut_ptr().add(start),
                &mut written,
                max,
                std::ptr::null(),
                0,
                plaintext.as_ptr(),
                plaintext.len(),
                aad.as_ptr(),
                aad.len(),
            )
        };
        if ok != 1 || written != max {
            clear_errors();
            return Err(Error);
        }
        // SAFETY: AWS-LC initialised exactly `written` bytes after `start` (checked above).
        unsafe { out.set_len(start + written) };
        Ok(())
    }

    /// Verifies `sealed` (`ct ‖ tag ‖ iv`) and appends the plaintext to `out`. On failure `out` is
    /// left as it was and nothing of the plaintext is released.
    pub fn open_append(&self, aad: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let Some(pt_len) = sealed.len().checked_sub(self.overhead()) else {
            return Err(Error);
        };
        let start = out.len();
        out.reserve(pt_len);
        let mut written = 0usize;
        // SAFETY: `out` has `pt_len` bytes of spare capacity after `start`; `sealed` and `aad` are
        // valid for their lengths and cannot alias `out`. AWS-LC verifies the tag before it
        // reports success; on failure it has written nothing we expose (the length is not
        // extended, and the spare capacity is overwritten with zeros below).
        let ok = unsafe {
            ffi::EVP_AEAD_CTX_open(
                self.randnonce.as_ptr(),
                out.as_mut_ptr().add(start),
                &mut written,
                pt_len,
                std::ptr::null(),
                0,
                sealed.as_ptr(),
                sealed.len(),
                aad.as_ptr(),
                aad.len(),
            )
        };
        if ok != 1 || written != pt_len {
            clear_errors();
            // AWS-LC may have decrypted into the spare capacity before the tag check failed:
            // wipe it so unauthenticated plaintext does not linger in the buffer.
            let spare = out.spare_capacity_mut();
            for b in spare.iter_mut().take(pt_len) {
                b.write(0);
            }
            return Err(Error);
        }
        // SAFETY: AWS-LC initialised exactly `written` bytes after `start` (checked above).
        unsafe { out.set_len(start + written) };
        Ok(())
    }

    /// Draws the IVs for `count` seals in one CSPRNG call (see [`IvBatch`]).
    ///
    /// Not in the `fips` build: there every seal draws its IV inside the module.
    #[cfg(not(feature = "fips"))]
    pub fn iv_batch(&self, count: usize) -> Result<IvBatch, Error> {
        IvBatch::draw(count)
    }

    /// Seals with an IV taken from an [`IvBatch`]; the output layout is that of
    /// [`seal_append`](Self::seal_append). The IV is consumed, so it cannot be used twice.
    #[cfg(not(feature = "fips"))]
    pub fn seal_append_with_iv(
        &self,
        iv: BatchIv,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let max = plaintext.len() + self.overhead();
        let start = out.len();
        out.reserve(max);
        let mut written = 0usize;
        // SAFETY: as in `seal_append`; the external AEAD takes the 12-byte IV, which is valid for
        // the call. It writes `ct ‖ tag` (max - IV_LEN bytes), and the IV is appended after.
        let ok = unsafe {
            ffi::EVP_AEAD_CTX_seal(
                self.external.as_ptr(),
                out.as_mut_ptr().add(start),
                &mut written,
                max - IV_LEN,
                iv.0.as_ptr(),
                IV_LEN,
                plaintext.as_ptr(),
                plaintext.len(),
                aad.as_ptr(),
                aad.len(),
            )
        };
        if ok != 1 || written != max - IV_LEN {
            clear_errors();
            return Err(Error);
        }
        // SAFETY: AWS-LC initialised exactly `written` bytes after `start` (checked above).
        unsafe { out.set_len(start + written) };
        out.extend_from_slice(&iv.0);
        Ok(())
    }
}

/// IVs for a batch of seals, drawn from AWS-LC's CSPRNG in a single call.
///
/// A module-IV seal costs one CSPRNG call per value, and that call dominates the cost of sealing
/// a short field. A batch draws all of its IVs at once and hands each out exactly once; nothing is
/// kept between batches (a pool that survived `fork()` would repeat IVs in pre-fork servers).
#[cfg(not(feature = "fips"))]
pub struct IvBatch {
    ivs: std::vec::IntoIter<[u8; IV_LEN]>,
}

#[cfg(not(feature = "fips"))]
impl IvBatch {
    fn draw(count: usize) -> Result<Self, Error> {
        let mut bytes = vec![0u8; count.checked_mul(IV_LEN).ok_or(Error)?];
        // SAFETY: `bytes` is valid for writes of its whole length.
        let ok = unsafe { ffi::RAND_bytes(bytes.as_mut_ptr(), bytes.len()) };
        if ok != 1 {
            clear_errors();
            return Err(Error);
        }
        let ivs: Vec<[u8; IV_LEN]> = bytes
            .chunks_exact(IV_LEN)
            .map(|c| {
                let mut iv = [0u8; IV_LEN];
                iv.copy_from_slice(c);
                iv
            })
            .collect();
        Ok(IvBatch {
            ivs: ivs.into_iter(),
        })
    }

    /// IVs not handed out yet.
    pub fn remaining(&self) -> usize {
        self.ivs.len()
    }
}

#[cfg(not(feature = "fips"))]
impl Iterator for IvBatch {
    type Item = BatchIv;
    fn next(&mut self) -> Option<BatchIv> {
        self.ivs.next().map(BatchIv)
    }
}

/// One IV from an [`IvBatch`]: not `Clone`, consumed by the seal that uses it.
#[cfg(not(feature = "fips"))]
pub struct BatchIv([u8; IV_LEN]);

#[cfg(not(feature = "fips"))]
impl fmt::Debug for BatchIv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BatchIv")
    }
}

/// What AWS-LC build this crate links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The Rust crate that links AWS-LC (`aws-lc-sys` or `aws-lc-fips-sys`).
    pub sys_crate: &'static str,
    /// AWS-LC's own version string.
    pub version: String,
    /// Whether this is the FIPS module build.
    pub fips_build: bool,
    /// Whether the module reports FIPS mode on (`FIPS_mode() == 1`).
    pub fips_mode: bool,
}

/// Reports the linked AWS-LC build and whether it runs in FIPS mode.
pub fn module_info() -> ModuleInfo {
    let version = std::str::from_utf8(ffi::AWSLC_VERSION_NUMBER_STRING)
        .unwrap_or("unknown")
        .trim_end_matches('\0')
        .to_string();
    // SAFETY: `FIPS_mode` takes no arguments and only reads module state.
    let fips_mode = unsafe { ffi::FIPS_mode() } == 1;
    ModuleInfo {
        sys_crate: if cfg!(feature = "fips") {
            "aws-lc-fips-sys"
        } else {
            "aws-lc-sys"
        },
        version,
        fips_build: cfg!(feature = "fips"),
        fips_mode,
    }
}

/// Runs `f` and reports whether the FIPS service indicator counted an approved service during it.
#[cfg(feature = "fips")]
pub fn service_indicator_approved<T>(f: impl FnOnce() -> T) -> (T, bool) {
    // SAFETY: both calls read a thread-local counter and take no arguments.
    let before = unsafe { ffi::FIPS_service_indicator_before_call() };
    let out = f();
    // SAFETY: as above.
    let after = unsafe { ffi::FIPS_service_indicator_after_call() };
    (out, after != before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; KEY_LEN] {
        let mut k = [0u8; KEY_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        k
    }

    #[test]
    fn seal_open_round_trip_both_tag_lengths() {
        for tag in [TagLength::Bits96, TagLength::Bits128] {
            let k = GcmKey::new(&key(), tag).unwrap();
            let mut out = b"prefix".to_vec();
            k.seal_append(b"aad", b"hello", &mut out).unwrap();
            assert_eq!(out.len(), 6 + 5 + tag.bytes() + IV_LEN);
            let mut pt = Vec::new();
            k.open_append(b"aad", &out[6..], &mut pt).unwrap();
            assert_eq!(pt, b"hello");
            assert_eq!(k.open_append(b"aaD", &out[6..], &mut pt), Err(Error));
            assert_eq!(pt, b"hello", "a failed open leaves the output untouched");
        }
    }

    #[test]
    fn two_seals_use_different_ivs() {
        let k = GcmKey::new(&key(), TagLength::Bits96).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        k.seal_append(b"", b"same", &mut a).unwrap();
        k.seal_append(b"", b"same", &mut b).unwrap();
        assert_ne!(a[a.len() - IV_LEN..], b[b.len() - IV_LEN..]);
    }

    #[test]
    fn too_short_input_is_rejected() {
        let k = GcmKey::new(&key(), TagLength::Bits96).unwrap();
        let mut pt = Vec::new();
        for n in 0..k.overhead() {
            assert_eq!(k.open_append(b"", &vec![0u8; n], &mut pt), Err(Error));
        }
    }

    /// NIST GCM test case 16 (AES-256, 96-bit IV, AAD) from the original GCM specification,
    /// sealed through the batch path with the IV fixed, then opened through the module-IV path.
    #[cfg(not(feature = "fips"))]
    #[test]
    fn batch_path_matches_known_answer() {
        let h = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let k: [u8; 32] = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
            .try_into()
            .unwrap();
        let iv: [u8; 12] = h("cafebabefacedbaddecaf888").try_into().unwrap();
        let pt = h(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let ct = h(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        );
        let tag = h("76fc6ece0f4e1768cddf8853bb2d551b");
        for t in [TagLength::Bits96, TagLength::Bits128] {
            let key = GcmKey::new(&k, t).unwrap();
            let mut out = Vec::new();
            key.seal_append_with_iv(BatchIv(iv), &aad, &pt, &mut out)
                .unwrap();
            let mut want = ct.clone();
            want.extend_from_slice(&tag[..t.bytes()]);
            want.extend_from_slice(&iv);
            assert_eq!(out, want);
            let mut back = Vec::new();
            key.open_append(&aad, &out, &mut back).unwrap();
            assert_eq!(back, pt);
        }
    }

    #[cfg(not(feature = "fips"))]
    #[test]
    fn iv_batch_hands_out_each_iv_once() {
        let k = GcmKey::new(&key(), TagLength::Bits96).unwrap();
        let batch = k.iv_batch(1000).unwrap();
        assert_eq!(batch.remaining(), 1000);
        let ivs: std::collections::HashSet<[u8; IV_LEN]> = batch.map(|iv| iv.0).collect();
        assert_eq!(ivs.len(), 1000);
    }

    #[test]
    fn module_info_names_the_linked_build() {
        let info = module_info();
        assert_eq!(info.fips_build, cfg!(feature = "fips"));
        assert!(!info.version.is_empty());
    }

    /// In the FIPS build, seal and open with a 96-bit tag and module IV are Approved services.
    #[cfg(feature = "fips")]
    #[test]
    fn fips_indicator_approves_seal_and_open() {
        let k = GcmKey::new(&key(), TagLength::Bits96).unwrap();
        let mut out = Vec::new();
        let (r, approved) = service_indicator_approved(|| k.seal_append(b"a", b"value", &mut out));
        r.unwrap();
        assert!(approved, "seal not reported as an approved service");
        let mut pt = Vec::new();
        let (r, approved) = service_indicator_approved(|| k.open_append(b"a", &out, &mut pt));
        r.unwrap();
        assert!(approved, "open not reported as an approved service");
        assert!(module_info().fips_mode);
    }
}
