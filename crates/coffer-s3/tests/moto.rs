//! coffer-s3 against moto's S3 server (a real HTTP S3 implementation, not a mock of our calls).
//! The endpoint comes from `COFFER_TEST_MOTO_ENDPOINT`, or `scripts/moto-up.sh` is run to start
//! or reuse one, so `cargo test -p coffer-s3` works on its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{self, Read};

use coffer_core::stream::{EncryptionContext, Limits, MessageHeader};
use coffer_keys::FileKeyring;
use coffer_s3::object_store::{ObjectStoreExt as _, PutPayload};
use coffer_s3::{Error, Path, PutOptions};
use futures_util::TryStreamExt as _;

const MIB: usize = 1024 * 1024;

fn context() -> EncryptionContext {
    let mut c = EncryptionContext::new();
    c.insert("purpose", "test").unwrap();
    c
}

fn opts(frame_len: u32) -> PutOptions {
    PutOptions {
        frame_len,
        part_size: 5 * MIB,
        threads: 2,
        ..PutOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_every_size_round_trip() {
    let (bucket, _) = common::bucket("sizes");
    let k = common::keyring("main/v1");
    let keys: [&dyn FileKeyring; 1] = [&k];
    let frame = 4096usize;
    for n in [0, 1, frame - 1, frame, frame + 1, 5 * frame + 17] {
        let key = Path::from(format!("sizes/{n}"));
        let pt = common::data(n);
        let put = bucket
            .put(
                &key,
                io::Cursor::new(pt.clone()),
                &keys,
                &context(),
                &opts(4096),
            )
            .await
            .unwrap();
        assert_eq!(put.plaintext_len, n as u64);
        assert_eq!(put.parts, 0, "a small object is one PUT");
        let (report, back) = bucket.get(&key, &keys, Vec::new()).await.unwrap();
        assert_eq!(back, pt, "{n} bytes");
        assert_eq!(report.plaintext_len, n as u64);
        assert_eq!(report.info.size, put.object_len);
        assert_eq!(report.context.get("purpose"), Some("test"));
        // The stored bytes are one message: its header parses, with the key's name in it.
        let raw = bucket
            .store()
            .get(&key)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(raw.len() as u64, put.object_len);
        let header = MessageHeader::read_from(&mut &raw[..], &Limits::default()).unwrap();
        assert_eq!(header.edks[0].key_name(), Some("main/v1"));
        assert!(
            n < 16 || !raw.windows(16).any(|w| w == &pt[..16]),
            "plaintext stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_goes_up_in_parts_and_ranges_fetch_only_their_frames() {
    let (bucket, gets) = common::bucket("large");
    let k = common::keyring("main/v1");
    let keys: [&dyn FileKeyring; 1] = [&k];
    let key = Path::from("big/object.bin");
    let n = 22 * MIB + 12_345;
    let pt = common::data(n);
    let put = bucket
        .put(
            &key,
            io::Cursor::new(pt.clone()),
            &keys,
            &context(),
            &opts(65536),
        )
        .await
        .unwrap();
    assert_eq!(put.plaintext_len, n as u64);
    assert_eq!(put.parts, 5, "22 MiB of ciphertext in 5 MiB parts");
    assert_eq!(common::open_uploads(bucket.name()), 0);

    gets.take();
    let (report, back) = bucket.get(&key, &keys, Vec::new()).await.unwrap();
    assert_eq!(report.plaintext_len, n as u64);
    assert!(back == pt, "the 22 MiB round trip differs");
    assert_eq!(gets.take(), (1, put.object_len), "a full get is one GET");

    // 64 KiB from the middle, not aligned to frames: header probe, final frame, and the two
    // frames the range touches, nothing else.
    for (start, len) in [
        (7_000_003u64, 65_536u64),
        (0, 10),
        (n as u64 - 5, 5),
        (131_072, 65_536),
    ] {
        let range = start..start + len;
        let out = bucket.get_range(&key, &keys, range.clone()).await.unwrap();
        assert_eq!(out.plaintext, &pt[start as usize..(start + len) as usize]);
        assert_eq!(out.plaintext_len, n as u64);
        let (requests, bytes) = gets.take();
        assert_eq!(
            (out.fetched.requests, out.fetched.bytes),
            (requests, bytes),
            "the reader's own count agrees with the store's"
        );
        assert!(requests <= 4, "{range:?}: {requests} GETs");
        assert!(bytes < 300 * 1024, "{range:?}: {bytes} bytes fetched");
    }
    // A range across many frames is fetched in one request (besides header and final frame).
    let out = bucket
        .get_range(&key, &keys, 1_000_000..3_000_000)
        .await
        .unwrap();
    assert_eq!(out.plaintext, &pt[1_000_000..3_000_000]);
    let (requests, bytes) = gets.take();
    assert!(requests <= 3, "{requests} GETs");
    assert!(bytes < 2_000_000 + 200 * 1024, "{bytes} bytes");
    // Outside the plaintext: a clear error, and no frame fetched.
    let err = bucket
        .get_range(&key, &keys, n as u64..n as u64 + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Range { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_and_metadata_are_kept() {
    let (bucket, _) = common::bucket("meta");
    let k = common::keyring("main/v1");
    let keys: [&dyn FileKeyring; 1] = [&k];
    let key = Path::from("scan.dcm");
    let metadata = BTreeMap::from([
        ("study".to_owned(), "ct-2024-07".to_owned()),
        ("site".to_owned(), "north".to_owned()),
    ]);
    let options = PutOptions {
        content_type: Some("application/dicom".into()),
        metadata: metadata.clone(),
        ..opts(4096)
    };
    let put = bucket
        .put(
            &key,
            io::Cursor::new(common::data(10_000)),
            &keys,
            &context(),
            &options,
        )
        .await
        .unwrap();
    assert_eq!(put.context.get("content-type"), Some("application/dicom"));

    let head = bucket.head(&key).await.unwrap();
    assert_eq!(head.content_type.as_deref(), Some("application/dicom"));
    assert_eq!(head.metadata, metadata);
    assert_eq!(head.size, put.object_len);

    let (report, _) = bucket.get(&key, &keys, Vec::new()).await.unwrap();
    assert_eq!(report.info, head);
    assert_eq!(report.content_type(), Some("application/dicom"));
    let ranged = bucket.get_range(&key, &keys, 5..50).await.unwrap();
    assert_eq!(ranged.info.metadata, metadata);

    // Metadata S3 would not give back as written is refused before anything is uploaded.
    let bad = PutOptions {
        metadata: BTreeMap::from([("Study".to_owned(), "x".to_owned())]),
        ..opts(4096)
    };
    let err = bucket
        .put(&Path::from("bad"), io::empty(), &keys, &context(), &bad)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    // A content type that contradicts the caller's context is refused too.
    let mut c = context();
    c.insert("content-type", "text/plain").unwrap();
    let err = bucket
        .put(&Path::from("bad"), io::empty(), &keys, &c, &options)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let listed: Vec<_> = bucket.store().list(None).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_key_and_a_missing_object_fail_clearly() {
    let (bucket, _) = common::bucket("wrong");
    let k = common::keyring("main/v1");
    let other = common::keyring("main/v1");
    let key = Path::from("doc.pdf");
    bucket
        .put(
            &key,
            io::Cursor::new(common::data(5000)),
            &[&k],
            &context(),
            &opts(4096),
        )
        .await
        .unwrap();
    let err = bucket.get(&key, &[&other], Vec::new()).await.unwrap_err();
    assert!(
        matches!(err, Error::Keys(coffer_keys::Error::NoMatchingKey { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("coffer/main/v1"), "{err}");
    let err = bucket.get_range(&key, &[&other], 0..10).await.unwrap_err();
    assert!(
        matches!(err, Error::Keys(coffer_keys::Error::NoMatchingKey { .. })),
        "{err}"
    );

    let missing = Path::from("nothing/here");
    for err in [
        bucket.get(&missing, &[&k], Vec::new()).await.unwrap_err(),
        bucket.get_range(&missing, &[&k], 0..1).await.unwrap_err(),
        bucket.head(&missing).await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("s3://{}/nothing/here", bucket.name())),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_object_fails_to_decrypt() {
    let (bucket, _) = common::bucket("tamper");
    let k = common::keyring("main/v1");
    let keys: [&dyn FileKeyring; 1] = [&k];
    let key = Path::from("record");
    let frame = 4096u64;
    bucket
        .put(
            &key,
            io::Cursor::new(common::data(10 * 4096)),
            &keys,
            &context(),
            &opts(4096),
        )
        .await
        .unwrap();
    let mut raw = bucket
        .store()
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let header_len = MessageHeader::read_from(&mut &raw[..], &Limits::default())
        .unwrap()
        .len() as u64;
    // One byte of frame 3's ciphertext (frame index 2), written back with a plain PUT.
    let at = header_len + 2 * (frame + 32) + 16 + 100;
    raw[at as usize] ^= 0x01;
    bucket
        .store()
        .put(&key, PutPayload::from(raw))
        .await
        .unwrap();

    let err = bucket.get(&key, &keys, Vec::new()).await.unwrap_err();
    assert!(
        matches!(err, Error::Crypto(coffer_core::Error::Decrypt)),
        "{err}"
    );
    let err = bucket
        .get_range(&key, &keys, 2 * frame + 10..2 * frame + 20)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Crypto(coffer_core::Error::Decrypt)),
        "{err}"
    );
    // Frames that were not touched still verify and decrypt on their own.
    let ok = bucket.get_range(&key, &keys, 0..100).await.unwrap();
    assert_eq!(ok.plaintext, common::data(100));
}

/// Yields `limit` bytes of data, then fails.
struct FailsAfter {
    left: usize,
}

impl Read for FailsAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("the disk went away"));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(0x5a);
        self.left -= n;
        Ok(n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_failing_mid_upload_leaves_no_object() {
    let (bucket, _) = common::bucket("abort");
    let k = common::keyring("main/v1");
    let keys: [&dyn FileKeyring; 1] = [&k];
    let key = Path::from("half/written");
    let err = bucket
        .put(
            &key,
            FailsAfter { left: 12 * MIB },
            &keys,
            &context(),
            &opts(65536),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Source(_)), "{err}");
    assert!(err.to_string().contains("the disk went away"), "{err}");
    let listed: Vec<_> = bucket.store().list(None).try_collect().await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(
        common::open_uploads(bucket.name()),
        0,
        "the upload was aborted"
    );
    // (The count above sees an upload left open.)
    let mut open = bucket.store().put_multipart(&key).await.unwrap();
    open.put_part(PutPayload::from(vec![0u8; 5 * MIB]))
        .await
        .unwrap();
    assert_eq!(common::open_uploads(bucket.name()), 1);
    open.abort().await.unwrap();
    assert_eq!(common::open_uploads(bucket.name()), 0);

    // A bucket that does not exist is named as such, for a put as for a get.
    let gone = coffer_s3::Bucket::new("no-such-bucket", common::s3("no-such-bucket"));
    let err = gone
        .put(
            &key,
            io::Cursor::new(vec![1u8; 10]),
            &keys,
            &context(),
            &opts(4096),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
    let err = gone.get(&key, &keys, Vec::new()).await.unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err:?}");
}
