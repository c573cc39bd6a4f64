//! AES key wrap (SP 800-38F KW = RFC 3394, KWP = RFC 5649) over AWS-LC's `AES_wrap_key*` calls.
//!
//! The AES key schedule lives on the stack for one call and is cleansed before returning, so no
//! copy of the key-encryption key outlives the call (aws-lc-rs's `AesKek` keeps an uncleansed heap
//! copy of the key, which is why Coffer does not use it).

use crate::{Error, clear_errors, ffi};

/// The two key-wrap modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WrapMode {
    /// AES-KW (RFC 3394): input a multiple of 8 bytes, at least 16.
    Kw,
    /// AES-KWP (RFC 5649): any input length from 1 byte.
    Kwp,
}

/// An `AES_KEY` that is cleansed when dropped.
struct Schedule(ffi::AES_KEY);

impl Schedule {
    fn new(key: &[u8], encrypt: bool) -> Result<Self, Error> {
        let bits = match key.len() {
            16 | 24 | 32 => (key.len() * 8) as u32,
            _ => return Err(Error),
        };
        let mut s = Schedule(ffi::AES_KEY {
            rd_key: [0; 60],
            rounds: 0,
        });
        // SAFETY: `key` is valid for `bits / 8` bytes and `s.0` is a writable AES_KEY.
        let rc = unsafe {
            if encrypt {
                ffi::AES_set_encrypt_key(key.as_ptr(), bits, &mut s.0)
            } else {
                ffi::AES_set_decrypt_key(key.as_ptr(), bits, &mut s.0)
            }
        };
        if rc != 0 {
            clear_errors();
            return Err(Error);
        }
        Ok(s)
    }
}

impl Drop for Schedule {
    fn drop(&mut self) {
        // SAFETY: cleanses exactly the bytes of this AES_KEY, which we own.
        unsafe {
            ffi::OPENSSL_cleanse(
                (&mut self.0 as *mut ffi::AES_KEY).cast(),
                std::mem::size_of::<ffi::AES_KEY>(),
            )
        }
    }
}

/// Wraps `input` under `kek` (16, 24 or 32 bytes).
pub fn wrap(kek: &[u8], mode: WrapMode, input: &[u8]) -> Result<Vec<u8>, Error> {
    let key = Schedule::new(kek, true)?;
    match mode {
        WrapMode::Kw => {
            if input.len() < 16 || input.len() % 8 != 0 {
                return Err(Error);
            }
            let mut out = vec![0u8; input.len() + 8];
            let len = i32::try_from(out.len()).map_err(|_| Error)?;
            // SAFETY: `out` has `input.len() + 8` bytes, what AES_wrap_key writes for an input of
            // `input.len()` bytes; a null IV selects the RFC 3394 default IV.
            let n = unsafe {
                ffi::AES_wrap_key(
                    &key.0,
                    std::ptr::null(),
                    out.as_mut_ptr(),
                    input.as_ptr(),
                    input.len(),
                )
            };
            if n != len {
                clear_errors();
                return Err(Error);
            }
            Ok(out)
        }
        WrapMode::Kwp => {
            if input.is_empty() {
                return Err(Error);
            }
            let max = input.len().div_ceil(8) * 8 + 8;
            let mut out = vec![0u8; max];
            let mut written = 0usize;
            // SAFETY: `out` is valid for `max` bytes, the most KWP writes for this input.
            let ok = unsafe {
                ffi::AES_wrap_key_padded(
                    &key.0,
                    out.as_mut_ptr(),
                    &mut written,
                    max,
                    input.as_ptr(),
                    input.len(),
                )
            };
            if ok != 1 || written > max {
                clear_errors();
                return Err(Error);
            }
            out.truncate(written);
            Ok(out)
        }
    }
}

/// Unwraps `wrapped` under `kek` into `out`; returns the unwrapped length. On failure `out` is
/// zeroed and nothing unauthenticated is released.
pub fn unwrap_into(
    kek: &[u8],
    mode: WrapMode,
    wrapped: &[u8],
    out: &mut [u8],
) -> Result<usize, Error> {
    let key = Schedule::new(kek, false)?;
    let result = match mode {
        WrapMode::Kw => {
            if wrapped.len() < 24 || wrapped.len() % 8 != 0 || out.len() < wrapped.len() - 8 {
                return Err(Error);
            }
            // SAFETY: `out` holds at least `wrapped.len() - 8` bytes, what AES_unwrap_key writes.
            let n = unsafe {
                ffi::AES_unwrap_key(
                    &key.0,
                    std::ptr::null(),
                    out.as_mut_ptr(),
                    wrapped.as_ptr(),
                    wrapped.len(),
                )
            };
            usize::try_from(n).ok().filter(|n| *n == wrapped.len() - 8)
        }
        WrapMode::Kwp => {
            if wrapped.len() < 16 || wrapped.len() % 8 != 0 {
                return Err(Error);
            }
            let mut written = 0usize;
            // SAFETY: `out` is valid for `out.len()` bytes, passed as the maximum output length.
            let ok = unsafe {
                ffi::AES_unwrap_key_padded(
                    &key.0,
                    out.as_mut_ptr(),
                    &mut written,
                    out.len(),
                    wrapped.as_ptr(),
                    wrapped.len(),
                )
            };
            (ok == 1 && written <= out.len()).then_some(written)
        }
    };
    result.ok_or_else(|| {
        clear_errors();
        out.fill(0);
        Error
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3394_and_rfc5649_examples() {
        let h = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        // RFC 3394 §4.6: 256-bit key data with a 256-bit KEK.
        let kek = h("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
        let data = h("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
        let want =
            h("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21");
        assert_eq!(wrap(&kek, WrapMode::Kw, &data).unwrap(), want);
        let mut out = [0u8; 32];
        assert_eq!(
            unwrap_into(&kek, WrapMode::Kw, &want, &mut out).unwrap(),
            32
        );
        assert_eq!(out.to_vec(), data);
        // RFC 5649 §6: 20 octets with a 192-bit KEK.
        let kek = h("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
        let data = h("c37b7e6492584340bed12207808941155068f738");
        let want = h("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a");
        assert_eq!(wrap(&kek, WrapMode::Kwp, &data).unwrap(), want);
        let mut out = [0u8; 32];
        assert_eq!(
            unwrap_into(&kek, WrapMode::Kwp, &want, &mut out).unwrap(),
            20
        );
        assert_eq!(&out[..20], &data[..]);
        let mut bad = want.clone();
        bad[3] ^= 1;
        assert_eq!(unwrap_into(&kek, WrapMode::Kwp, &bad, &mut out), Err(Error));
        assert_eq!(out, [0u8; 32]);
    }

    #[cfg(feature = "fips")]
    #[test]
    fn fips_indicator_approves_kwp() {
        let kek = [7u8; 32];
        let (w, approved) =
            crate::service_indicator_approved(|| wrap(&kek, WrapMode::Kwp, &[1u8; 32]));
        assert!(approved);
        let mut out = [0u8; 32];
        let (n, approved) = crate::service_indicator_approved(|| {
            unwrap_into(&kek, WrapMode::Kwp, &w.unwrap(), &mut out)
        });
        assert_eq!(n, Ok(32));
        assert!(approved);
    }
}
