//! Streaming-format throughput and random access.
//!
//! - `stream-16MiB-64KiB-frames`: 16 MiB through `Encryptor` (`write_from`; every core:
//!   `write_from_threaded`) and `Decryptor` (`copy_to`) with 64 KiB frames on one thread and on
//!   every core, beside a bare aws-lc-rs AES-256-GCM seal of the same frames
//!   on one core (the baseline; `make bench` also prints `openssl speed -evp aes-256-gcm -bytes
//!   65536`).
//! - `seek-2GiB`: a 2 GiB message in a file (page cache warm); one random 64 KiB plaintext range
//!   per iteration, opening the message each time (header, data key, final frame) and then only
//!   with the opened reader. Set `COFFER_BENCH_SEEK_MIB` to change the size.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs::File;
use std::hint::black_box;
use std::io::{BufReader, Write as _};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use coffer_core::Kek;
use coffer_core::stream::{
    Decryptor, EncryptionContext, Encryptor, Limits, RawAesKeyring, SeekableDecryptor,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TOTAL: usize = 16 * 1024 * 1024;
const FRAME: usize = 64 * 1024;

fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn stream(c: &mut Criterion) {
    let keyring = RawAesKeyring::new("bench", "k/v1", Kek::from_bytes([1; 32])).unwrap();
    let ctx = EncryptionContext::new();
    let pt = vec![0x5au8; TOTAL];
    let mut g = c.benchmark_group("stream-16MiB-64KiB-frames");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(20);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[2; 32]).unwrap());
    let mut buf = pt.clone();
    g.bench_function("baseline-aws-lc-rs-gcm-seal-frames", |b| {
        b.iter(|| {
            for (i, chunk) in buf.chunks_mut(FRAME).enumerate() {
                let mut iv = [0u8; 12];
                iv[8..].copy_from_slice(&(i as u32).to_be_bytes());
                let _tag = black_box(
                    key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(&[0u8; 80][..]),
                        chunk,
                    )
                    .unwrap(),
                );
            }
        })
    });
    for (label, threads) in [("1-thread", 1), ("all-cores", all_cores())] {
        g.bench_function(format!("encrypt-{label}"), |b| {
            b.iter(|| {
                let mut e = Encryptor::new(
                    Vec::with_capacity(TOTAL + 16 * 1024),
                    &[&keyring],
                    &ctx,
                    FRAME as u32,
                )
                .unwrap()
                .with_threads(threads);
                if threads == 1 {
                    e.write_from(&mut &pt[..]).unwrap();
                } else {
                    e.write_from_threaded(&pt[..]).unwrap();
                }
                black_box(e.finish().unwrap())
            })
        });
    }
    let msg = {
        let mut e = Encryptor::new(Vec::new(), &[&keyring], &ctx, FRAME as u32).unwrap();
        e.write_all(&pt).unwrap();
        e.finish().unwrap()
    };
    let mut out = Vec::with_capacity(TOTAL);
    for (label, threads) in [("1-thread", 1), ("all-cores", all_cores())] {
        g.bench_function(format!("decrypt-{label}"), |b| {
            b.iter(|| {
                out.clear();
                let d = Decryptor::new(&msg[..], &[&keyring], Limits::default())
                    .unwrap()
                    .with_threads(threads);
                black_box(d.copy_to(&mut out).unwrap())
            })
        });
    }
    g.finish();
}

/// A reader of `n` pseudo-random bytes (cheap to generate, not compressible by accident).
struct Pattern {
    left: u64,
    state: u64,
}

impl std::io::Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize) & !7;
        let n = if n == 0 {
            buf.len().min(self.left as usize)
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            self.state = self
                .state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let b = self.state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn seek(c: &mut Criterion) {
    let mib: u64 = std::env::var("COFFER_BENCH_SEEK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let size = mib << 20;
    let keyring = RawAesKeyring::new("bench", "k/v1", Kek::from_bytes([3; 32])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.cfr");
    {
        let f = std::io::BufWriter::with_capacity(1 << 20, File::create(&path).unwrap());
        let mut e =
            Encryptor::new(f, &[&keyring], &EncryptionContext::new(), FRAME as u32).unwrap();
        e.write_from(&mut Pattern {
            left: size,
            state: 7,
        })
        .unwrap();
        e.finish().unwrap().flush().unwrap();
    }
    let mut g = c.benchmark_group(format!("seek-{mib}MiB"));
    g.throughput(Throughput::Bytes(64 * 1024));
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_offset = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % (size - 64 * 1024)
    };
    g.bench_function("open-and-read-random-64KiB", |b| {
        b.iter(|| {
            let start = next_offset();
            let f = BufReader::with_capacity(128 * 1024, File::open(&path).unwrap());
            let mut d = SeekableDecryptor::open(f, &[&keyring], Limits::default()).unwrap();
            black_box(d.read_range(start..start + 64 * 1024).unwrap())
        })
    });
    let f = BufReader::with_capacity(128 * 1024, File::open(&path).unwrap());
    let mut d = SeekableDecryptor::open(f, &[&keyring], Limits::default()).unwrap();
    g.bench_function("read-random-64KiB", |b| {
        b.iter(|| {
            let start = next_offset();
            black_box(d.read_range(start..start + 64 * 1024).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, stream, seek);
criterion_main!(benches);
