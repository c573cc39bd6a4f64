//! The streaming format (AWS Encryption SDK v2, suite 0x0478): round trips, tampering, and
//! interop both ways with the official AWS Encryption SDK for Python (tests/interop/esdk.py).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};

use coffer_core::Kek;
use coffer_core::stream::{Decryptor, EncryptionContext, Encryptor, Limits, RawAesKeyring};

const KEY: [u8; 32] = [0x42; 32];

fn keyring() -> RawAesKeyring {
    RawAesKeyring::new("coffer/test", "main/v1", Kek::from_bytes(KEY)).unwrap()
}

fn context() -> EncryptionContext {
    let mut c = EncryptionContext::new();
    c.insert("content-type", "application/dicom").unwrap();
    c.insert("coffer:patient", "9f86d081").unwrap();
    c
}

fn encrypt(pt: &[u8], frame: u32) -> Vec<u8> {
    let k = keyring();
    let mut e = Encryptor::new(Vec::new(), &[&k], &context(), frame).unwrap();
    // Odd-sized writes, so frames are assembled across calls.
    for chunk in pt.chunks(777) {
        e.write_all(chunk).unwrap();
    }
    e.finish().unwrap()
}

fn decrypt_with(msg: &[u8], threads: usize) -> std::io::Result<Vec<u8>> {
    let k = keyring();
    let mut d = Decryptor::new(msg, &[&k], Limits::default())?.with_threads(threads);
    let mut out = Vec::new();
    d.read_to_end(&mut out)?;
    Ok(out)
}

/// Decrypts on one thread and on four; both must agree (plaintext, or failure).
fn decrypt(msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let one = decrypt_with(msg, 1);
    let four = decrypt_with(msg, 4);
    match (&one, &four) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("one thread and four disagree: {one:?} vs {four:?}"),
    }
    one
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

mod parallel {
    use super::*;
    use coffer_core::Dek;
    use coffer_core::stream::{MessageHeader, rewrap_header};

    fn encrypt_threads(pt: &[u8], frame: u32, threads: usize, from_reader: bool) -> Vec<u8> {
        let k = keyring();
        let mut e = Encryptor::new(Vec::new(), &[&k], &context(), frame)
            .unwrap()
            .with_threads(threads);
        if from_reader {
            let mut r = Trickle { data: pt, step: 0 };
            if threads % 2 == 0 {
                assert_eq!(e.write_from_threaded(r).unwrap(), pt.len() as u64);
            } else {
                assert_eq!(e.write_from(&mut r).unwrap(), pt.len() as u64);
            }
        } else {
            for chunk in pt.chunks(1000) {
                e.write_all(chunk).unwrap();
            }
        }
        e.finish().unwrap()
    }

    /// A reader that returns uneven pieces and an `Interrupted` error now and then.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.step += 1;
            if self.step % 7 == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::Interrupted));
            }
            let n = buf
                .len()
                .min(self.data.len())
                .min(1 + self.step * 37 % 3000);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn any_thread_count_writes_a_message_any_thread_count_reads() {
        // 4 KiB frames: 128 to a 512 KiB batch, so the larger sizes span several batches.
        let frame = 4096u32;
        let batch = 512 * 1024;
        for n in [0usize, 1, 4095, 4096, 4097, batch, batch + 1, 6 * batch + 7] {
            let pt = data(n);
            for threads in [1usize, 2, 3, 8] {
                for from_reader in [false, true] {
                    let msg = encrypt_threads(&pt, frame, threads, from_reader);
                    for read_threads in [1usize, 2, 5] {
                        assert_eq!(
                            decrypt_with(&msg, read_threads).unwrap(),
                            pt,
                            "{n} bytes, {threads} writers (reader: {from_reader}), {read_threads} readers"
                        );
                        let k = keyring();
                        let d = Decryptor::new(&msg[..], &[&k], Limits::default())
                            .unwrap()
                            .with_threads(read_threads);
                        let mut out = Vec::new();
                        assert_eq!(d.copy_to(&mut out).unwrap(), n as u64);
                        assert!(out == pt, "copy_to, {n} bytes, {read_threads} threads");
                    }
                }
            }
        }
    }

    /// `write_at` / `decrypt_at`: workers read their own batches at offsets.
    #[test]
    fn positional_reads_write_and_read_the_same_messages() {
        use coffer_core::stream::decrypt_at;
        let frame = 4096u32;
        let batch = 512 * 1024;
        for n in [
            0usize,
            1,
            4095,
            4096,
            4097,
            batch,
            batch + 1,
            3 * batch + 4096,
            6 * batch + 7,
        ] {
            let pt = data(n);
            for threads in [1usize, 2, 5] {
                let k = keyring();
                let e = Encryptor::new(Vec::new(), &[&k], &context(), frame)
                    .unwrap()
                    .with_threads(threads);
                let msg = e.write_at(&pt[..], pt.len() as u64).unwrap();
                assert_eq!(
                    decrypt_with(&msg, 1).unwrap(),
                    pt,
                    "{n} bytes, {threads} threads"
                );
                let streamed = encrypt_threads(&pt, frame, threads, false);
                for m in [&msg, &streamed] {
                    let header = MessageHeader::read_from(&mut &m[..], &Limits::default()).unwrap();
                    let dk = header.unwrap_data_key(&[&k]).unwrap();
                    let mut out = Vec::new();
                    let got = decrypt_at(&m[..], m.len() as u64, &header, &dk, &mut out, threads)
                        .unwrap();
                    assert_eq!(got, n as u64);
                    assert!(out == pt, "decrypt_at, {n} bytes, {threads} threads");
                }
            }
        }
        // Tampering, truncation and extension are refused; nothing after a bad batch is written.
        let pt = data(3 * batch + 100);
        let k = keyring();
        let msg = Encryptor::new(Vec::new(), &[&k], &context(), frame)
            .unwrap()
            .write_at(&pt[..], pt.len() as u64)
            .unwrap();
        let header = MessageHeader::read_from(&mut &msg[..], &Limits::default()).unwrap();
        let dk = header.unwrap_data_key(&[&k]).unwrap();
        let hl = header.len();
        let stride = 4 + 12 + 4096 + 16;
        for at in [
            hl,
            hl + 3,
            hl + 17,
            hl + 200 * stride + 50,
            msg.len() - 30,
            msg.len() - 1,
        ] {
            let mut bad = msg.clone();
            bad[at] ^= 0x20;
            let mut out = Vec::new();
            assert!(
                decrypt_at(&bad[..], bad.len() as u64, &header, &dk, &mut out, 3).is_err(),
                "flip at {at}"
            );
            assert!(out.len() <= at - hl && out[..] == pt[..out.len()]);
        }
        for total in [msg.len() - 1, msg.len() - 17, hl + stride, msg.len() + 1] {
            let mut m = msg.clone();
            m.resize(total, 0);
            assert!(decrypt_at(&m[..], total as u64, &header, &dk, &mut Vec::new(), 2).is_err());
        }
        // A source shorter than the length it was given.
        let e = Encryptor::new(Vec::new(), &[&k], &context(), frame).unwrap();
        assert!(e.write_at(&pt[..10], 20).is_err());
    }

    #[test]
    fn a_bad_frame_stops_the_stream_before_its_plaintext() {
        let frame = 4096usize;
        let pt = data(640 * frame); // five 128-frame batches
        let msg = encrypt_threads(&pt, frame as u32, 4, false);
        let header_len = MessageHeader::read_from(&mut &msg[..], &Limits::default())
            .unwrap()
            .len();
        let stride = 4 + 12 + frame + 16;
        for bad_frame in [0usize, 1, 130, 639] {
            let mut bad = msg.clone();
            bad[header_len + bad_frame * stride + 40] ^= 0x10;
            for threads in [1usize, 4] {
                let k = keyring();
                let mut d = Decryptor::new(&bad[..], &[&k], Limits::default())
                    .unwrap()
                    .with_threads(threads);
                let mut released = 0usize;
                let mut buf = [0u8; 100];
                let err = loop {
                    match d.read(&mut buf) {
                        Ok(0) => panic!("a tampered frame was accepted"),
                        Ok(n) => {
                            assert_eq!(buf[..n], pt[released..released + n]);
                            released += n;
                        }
                        Err(e) => break e,
                    }
                };
                assert!(err.to_string().contains("decryption failed"), "{err}");
                let d2 = Decryptor::new(&bad[..], &[&k], Limits::default())
                    .unwrap()
                    .with_threads(threads);
                let mut out = Vec::new();
                assert!(d2.copy_to(&mut out).is_err());
                assert!(out.len() <= bad_frame * frame && out[..] == pt[..out.len()]);
                // Truncated inside the bad frame: refused the same way.
                let d3 = Decryptor::new(
                    &bad[..header_len + bad_frame * stride + 50],
                    &[&k],
                    Limits::default(),
                )
                .unwrap()
                .with_threads(threads);
                assert!(d3.copy_to(&mut Vec::new()).is_err());
                // Frames are opened in batches: whatever came out came before the bad frame.
                assert!(released <= bad_frame * frame, "{threads} threads");
                // The stream stays failed.
                assert!(d.read(&mut buf).is_err());
            }
        }
    }

    #[test]
    fn a_reader_dropped_mid_stream_stops_its_workers() {
        let pt = data(4 << 20);
        let msg = encrypt_threads(&pt, 1024, 2, false);
        for _ in 0..20 {
            let k = keyring();
            let mut d = Decryptor::new(&msg[..], &[&k], Limits::default())
                .unwrap()
                .with_threads(3);
            let mut buf = [0u8; 3000];
            d.read_exact(&mut buf).unwrap();
            assert_eq!(buf[..], pt[..3000]);
            drop(d);
        }
    }

    #[test]
    fn a_caller_supplied_data_key_and_rewrapping() {
        let old = keyring();
        let new =
            RawAesKeyring::new("coffer", "store-1/main/v2", Kek::generate().unwrap()).unwrap();
        let pt = data(10_000);
        let msg = encrypt_threads(&pt, 1024, 2, false);
        let header = MessageHeader::read_from(&mut &msg[..], &Limits::default()).unwrap();
        let dk: Dek = header.unwrap_data_key(&[&old]).unwrap();
        let edk = new.wrap(&dk, &header.context).unwrap();
        let mut rewrapped = rewrap_header(&header, &dk, &[edk]).unwrap();
        let parsed = MessageHeader::read_from(&mut &rewrapped[..], &Limits::default()).unwrap();
        assert_eq!(parsed.len(), rewrapped.len());
        assert_eq!(parsed.message_id, header.message_id);
        assert_eq!(parsed.edks.len(), 1);
        assert_eq!(parsed.edks[0].key_name(), Some("store-1/main/v2"));
        rewrapped.extend_from_slice(&msg[header.len()..]);
        let mut d = Decryptor::new(&rewrapped[..], &[&new], Limits::default()).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out, pt);
        assert!(Decryptor::new(&rewrapped[..], &[&old], Limits::default()).is_err());
        // with_data_key: the same key opens it; another key fails the commitment.
        let h2 = MessageHeader::read_from(&mut &rewrapped[..], &Limits::default()).unwrap();
        let rest = &rewrapped[h2.len()..];
        let mut d = Decryptor::with_data_key(rest, h2.clone(), &dk).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out, pt);
        assert!(Decryptor::with_data_key(rest, h2.clone(), &Dek::generate().unwrap()).is_err());
        // A tampered header is not re-blessed.
        let mut bad = msg.clone();
        bad[10] ^= 1; // in the message id
        let hb = MessageHeader::read_from(&mut &bad[..], &Limits::default()).unwrap();
        let edk = new.wrap(&dk, &hb.context).unwrap();
        assert!(rewrap_header(&hb, &dk, &[edk]).is_err());
        // Written with a data key the caller wrapped.
        let dk2 = Dek::generate().unwrap();
        let edk = new.wrap(&dk2, &context()).unwrap();
        let mut e = Encryptor::with_data_key(Vec::new(), &dk2, vec![edk], &context(), 100).unwrap();
        e.write_all(&pt).unwrap();
        let m = e.finish().unwrap();
        let mut d = Decryptor::new(&m[..], &[&new], Limits::default()).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out, pt);
        assert!(Encryptor::with_data_key(Vec::new(), &dk2, vec![], &context(), 100).is_err());
    }
}

fn sizes(frame: usize) -> Vec<usize> {
    vec![0, 1, frame - 1, frame, frame + 1, 3 * frame, 3 * frame + 5]
}

#[test]
fn round_trips_at_frame_boundaries() {
    for frame in [4096u32, 65536] {
        for n in sizes(frame as usize) {
            let pt = data(n);
            let msg = encrypt(&pt, frame);
            assert_eq!(decrypt(&msg).unwrap(), pt, "frame {frame}, {n} bytes");
        }
    }
}

#[test]
fn the_context_and_key_names_are_in_the_header() {
    let msg = encrypt(b"x", 4096);
    let k = keyring();
    let d = Decryptor::new(&msg[..], &[&k], Limits::default()).unwrap();
    assert_eq!(d.context().get("content-type"), Some("application/dicom"));
    let edk = &d.header().edks[0];
    assert_eq!(edk.provider_id, "coffer/test");
    assert_eq!(edk.key_name(), Some("main/v1"));
    assert_eq!(d.header().frame_len, 4096);
}

#[test]
fn every_truncation_and_bit_flip_is_rejected() {
    let frame = 64u32;
    let pt = data(3 * 64 + 10);
    let msg = encrypt(&pt, frame);
    for cut in 0..msg.len() {
        assert!(decrypt(&msg[..cut]).is_err(), "cut at {cut}");
    }
    for i in 0..msg.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = msg.clone();
            bad[i] ^= bit;
            assert!(decrypt(&bad).is_err(), "flip at byte {i}");
        }
    }
    let mut longer = msg.clone();
    longer.push(0);
    assert!(decrypt(&longer).is_err(), "trailing byte");
}

#[test]
fn frames_cannot_be_reordered_or_spliced() {
    let frame = 64usize;
    let pt = data(4 * frame);
    let a = encrypt(&pt, frame as u32);
    let b = encrypt(&pt, frame as u32);
    let header_len = {
        let k = keyring();
        Decryptor::new(&a[..], &[&k], Limits::default())
            .unwrap()
            .header()
            .len()
    };
    let flen = 4 + 12 + frame + 16;
    // Swap frames 1 and 2.
    let mut swapped = a.clone();
    let (f1, f2) = (header_len, header_len + flen);
    let first = a[f1..f1 + flen].to_vec();
    swapped[f1..f1 + flen].copy_from_slice(&a[f2..f2 + flen]);
    swapped[f2..f2 + flen].copy_from_slice(&first);
    assert!(decrypt(&swapped).is_err());
    // Frame 2 of another message with the same key and plaintext.
    let mut spliced = a.clone();
    spliced[f2..f2 + flen].copy_from_slice(&b[f2..f2 + flen]);
    assert!(decrypt(&spliced).is_err());
    // Drop a regular frame.
    let mut dropped = a[..f2].to_vec();
    dropped.extend_from_slice(&a[f2 + flen..]);
    assert!(decrypt(&dropped).is_err());
}

#[test]
fn wrong_keys_and_limits_are_clear_errors() {
    let msg = encrypt(b"secret", 4096);
    let other = RawAesKeyring::new("coffer/test", "main/v1", Kek::generate().unwrap()).unwrap();
    let err = Decryptor::new(&msg[..], &[&other], Limits::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("coffer/test:main/v1"), "{err}");
    let tight = Limits {
        max_frame_len: 1024,
        ..Limits::default()
    };
    let k = keyring();
    let err = Decryptor::new(&msg[..], &[&k], tight).err().unwrap();
    assert!(err.to_string().contains("frame length"), "{err}");
    assert!(Decryptor::new(&b"not a message"[..], &[&k], Limits::default()).is_err());
    // A second EDK (a recovery key) opens the same message.
    let recovery =
        RawAesKeyring::new("coffer/recovery", "offline/v1", Kek::generate().unwrap()).unwrap();
    let mut e = Encryptor::new(Vec::new(), &[&k, &recovery], &context(), 4096).unwrap();
    e.write_all(b"two keys").unwrap();
    let two = e.finish().unwrap();
    let mut d = Decryptor::new(&two[..], &[&recovery], Limits::default()).unwrap();
    let mut out = Vec::new();
    d.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"two keys");
}

fn esdk(args: &[&str], input: &[u8]) -> Vec<u8> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/interop/esdk.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "aws-encryption-sdk (Python) failed; `make test` installs it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn the_python_esdk_decrypts_coffer_and_coffer_decrypts_it() {
    let key = hex::encode(KEY);
    for frame in [4096usize, 65536] {
        let mut cases = sizes(frame);
        cases.push(3 * 1024 * 1024 + 17);
        for n in cases {
            let pt = data(n);
            let ours = encrypt(&pt, frame as u32);
            assert_eq!(
                esdk(&["decrypt", &key, "coffer/test", "main/v1"], &ours),
                pt,
                "Python decrypting Coffer, frame {frame}, {n} bytes"
            );
            let theirs = esdk(
                &[
                    "encrypt",
                    &key,
                    "coffer/test",
                    "main/v1",
                    &frame.to_string(),
                    "a=b",
                ],
                &pt,
            );
            assert_eq!(
                decrypt(&theirs).unwrap(),
                pt,
                "Coffer decrypting Python, frame {frame}, {n} bytes"
            );
        }
    }
}

mod seekable {
    use std::io::Cursor;

    use super::*;
    use coffer_core::stream::{FrameLayout, SeekableDecryptor};

    fn open(msg: &[u8]) -> std::io::Result<SeekableDecryptor<Cursor<Vec<u8>>>> {
        let k = keyring();
        SeekableDecryptor::open(Cursor::new(msg.to_vec()), &[&k], Limits::default())
    }

    #[test]
    fn any_range_decrypts_from_the_frames_it_touches() {
        for (frame, n) in [
            (64usize, 0usize),
            (64, 1),
            (64, 64),
            (64, 640),
            (64, 651),
            (4096, 100_000),
        ] {
            let pt = data(n);
            let msg = encrypt(&pt, frame as u32);
            let mut d = open(&msg).unwrap();
            assert_eq!(
                d.layout().plaintext_len(),
                n as u64,
                "frame {frame}, {n} bytes"
            );
            let mut starts: Vec<usize> = vec![
                0,
                1,
                frame - 1,
                frame,
                frame + 1,
                n / 2,
                n.saturating_sub(1),
                n,
            ];
            starts.retain(|&s| s <= n);
            for &a in &starts {
                for &b in &starts {
                    if a <= b {
                        assert_eq!(
                            d.read_range(a as u64..b as u64).unwrap(),
                            pt[a..b],
                            "{a}..{b} of {n}"
                        );
                    }
                }
            }
            assert!(d.read_range(0..n as u64 + 1).is_err());
        }
    }

    #[test]
    fn ciphertext_ranges_cover_exactly_the_needed_frames() {
        let pt = data(1000);
        let msg = encrypt(&pt, 64);
        let d = open(&msg).unwrap();
        let layout = *d.layout();
        let total = msg.len() as u64;
        assert_eq!(
            FrameLayout::from_total(layout.header_len, 64, total),
            Some(layout)
        );
        assert_eq!(layout.regular_frames, 15);
        assert_eq!(layout.final_len, 40);
        // A range inside frame 3 (0-based 2) maps to that frame only.
        let r = layout.ciphertext_range(130..140);
        assert_eq!(r.end - r.start, 64 + 32);
        // Decrypting from just those bytes (plus the header and final frame) works: splice them
        // into an otherwise zeroed object.
        let mut sparse = vec![0u8; msg.len()];
        let h = layout.header_len as usize;
        sparse[..h].copy_from_slice(&msg[..h]);
        sparse[r.start as usize..r.end as usize]
            .copy_from_slice(&msg[r.start as usize..r.end as usize]);
        let tail = (layout.final_len + 40) as usize; // the final frame: its plaintext + 40 bytes
        sparse[msg.len() - tail..].copy_from_slice(&msg[msg.len() - tail..]);
        let mut d = open(&sparse).unwrap();
        assert_eq!(d.read_range(130..140).unwrap(), pt[130..140]);
        assert!(
            d.read_range(0..10).is_err(),
            "frames not fetched do not authenticate"
        );
        let last = layout.ciphertext_range(990..1000);
        assert_eq!(last.end, total);
    }

    #[test]
    fn truncated_extended_or_tampered_objects_are_refused() {
        let pt = data(640);
        let msg = encrypt(&pt, 64);
        for cut in [1usize, 16, 40, 41, 96, 97] {
            assert!(open(&msg[..msg.len() - cut]).is_err(), "cut {cut}");
        }
        let mut longer = msg.clone();
        longer.extend_from_slice(&[0; 96]);
        assert!(open(&longer).is_err());
        // A flipped bit in frame 2 spoils that frame's ranges only.
        let mut bad = msg.clone();
        let h = open(&msg).unwrap().layout().header_len as usize;
        bad[h + 96 + 20] ^= 1;
        let mut d = open(&bad).unwrap();
        assert_eq!(d.read_range(0..64).unwrap(), pt[..64]);
        assert!(d.read_range(64..65).is_err());
        assert_eq!(d.read_range(128..640).unwrap(), pt[128..640]);
    }
}
