//! Codec tests: the hex vectors in `protocol-spec/vectors/`, round trips of
//! generated frames, and arbitrary bytes that must never panic the decoder.

use super::frame::*;

const VECTORS: &str = include_str!("../../protocol-spec/vectors/frames.txt");

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// Every vector line is `NAME: HEX`; every NAME must decode to the frame `expected`
/// builds, and that frame must encode to exactly the bytes.
#[test]
fn spec_vectors_decode_and_encode_exactly() {
    let mut seen = 0;
    for line in VECTORS.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, hex) = line.split_once(':').expect("NAME: HEX");
        let bytes = unhex(hex);
        let want = expected(name.trim());
        assert_eq!(want.to_vec(), bytes, "{name}: encoding differs from the vector");
        match decode(&bytes, &Limits::default()).unwrap() {
            Decoded::Frame(f, n) => {
                assert_eq!(n, bytes.len());
                assert_eq!(f, want, "{name}");
            }
            Decoded::Incomplete(_) => panic!("{name}: incomplete"),
        }
        seen += 1;
    }
    assert_eq!(seen, samples().len(), "one vector per frame type");
}

fn expected(name: &str) -> Frame {
    samples().into_iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no sample {name}")).1
}

/// One sample of every frame type; `cargo test print_vectors -- --ignored --nocapture`
/// prints them in the vector file's format.
fn samples() -> Vec<(&'static str, Frame)> {
    let meta = FileMeta {
        id: 7,
        kind: EntryKind::File,
        mode: 0o644,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 5,
        size: 3,
        path: b"dir/a b".to_vec(),
        link: vec![],
        owner: None,
        xattrs: Vec::new(),
        rdev: 0,
        hardlink: false,
    };
    vec![
        ("HELLO", Frame::Hello { min_version: 1, max_version: 1, caps: 0, nonce: [0x11; 32] }),
        ("CHALLENGE", Frame::Challenge { version: 1, caps: 0, nonce: [0x22; 32] }),
        ("AUTH", Frame::Auth { proof: [0x33; 32], lanes: 8, chunk_size: 8 << 20, job_id: [0x44; 16] }),
        ("WELCOME", Frame::Welcome { proof: [0x55; 32], session_id: [0x66; 16], discard: false }),
        ("JOIN", Frame::Join { session_id: [0x66; 16], lane: 2, mac: [0x77; 32] }),
        ("JOINED", Frame::Joined { lane: 2 }),
        ("TARGET", Frame::Target { path: b"incoming".to_vec() }),
        ("TARGET_INFO", Frame::TargetInfo { kind: TargetKind::Dir }),
        ("FILE", Frame::File(meta.clone())),
        (
            "FILE_OWNER",
            Frame::File(FileMeta {
                owner: Some(super::frame::Owner {
                    uid: 1000,
                    gid: 100,
                    user: b"ann".to_vec(),
                    group: b"users".to_vec(),
                }),
                ..meta.clone()
            }),
        ),
        ("FILE_DEVICE", Frame::File(FileMeta { kind: EntryKind::CharDev, size: 0, rdev: 0x0103, ..meta.clone() })),
        (
            "FILE_HARDLINK",
            Frame::File(FileMeta { size: 0, hardlink: true, link: b"dir/first".to_vec(), ..meta.clone() }),
        ),
        (
            "FILE_XATTRS",
            Frame::File(FileMeta {
                xattrs: vec![
                    (b"user.a".to_vec(), b"1".to_vec()),
                    (b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0]),
                ],
                ..meta
            }),
        ),
        ("FILE_READY", Frame::FileReady { id: 7 }),
        ("FILE_END", Frame::FileEnd { id: 7, digest: [0x88; 16] }),
        ("FILE_DONE", Frame::FileDone { id: 7 }),
        ("FILE_FAILED", Frame::FileFailed { id: 7, code: 6, message: "disk full".into() }),
        ("FILE_ABORT", Frame::FileAbort { id: 7, code: 9, message: "changed".into() }),
        ("DONE", Frame::Done { files: 1 }),
        ("SESSION_DONE", Frame::SessionDone { files: 1, bytes: 3 }),
        ("FILE_HAVE", Frame::FileHave { id: 7, chunks: vec![(0, [0x99; 16]), (2, [0xaa; 16])] }),
        ("FILE_SUMS", Frame::FileSums { id: 7, chunks: vec![(0, [0x99; 16]), (3, [0xbb; 16])] }),
        ("FILE_SAME", Frame::FileSame { id: 7, chunks: vec![0, 3] }),
        ("PULL", Frame::Pull { target: b"local".to_vec(), kind: TargetKind::Dir, is_dir: true, source: None }),
        (
            "PULL_FROM_DAEMON",
            Frame::Pull {
                target: b"local".to_vec(),
                kind: TargetKind::Dir,
                is_dir: true,
                source: Some(b"data/run1".to_vec()),
            },
        ),
        (
            "CHUNK",
            Frame::Chunk {
                head: ChunkHead { id: 7, offset: 0 },
                data: b"abc".to_vec(),
                hash: super::hash::chunk_hash(b"abc"),
            },
        ),
        ("CHUNK_ACK", Frame::ChunkAck { id: 7, offset: 0, status: AckStatus::Ok }),
        ("ERROR", Frame::Error { code: 1, message: "auth".into() }),
        ("NOTICE", Frame::Notice { code: 9, message: "changed".into() }),
        ("LIST", Frame::List { root: b"backup".to_vec(), sums: true }),
        (
            "LISTED",
            Frame::Listed {
                last: true,
                mask: 0o755,
                entries: vec![
                    super::sync::Listed {
                        kind: EntryKind::Dir,
                        mode: 0o755,
                        mtime_sec: 1_700_000_000,
                        mtime_nsec: 0,
                        size: 0,
                        path: vec![],
                        link: vec![],
                        sum: None,
                    },
                    super::sync::Listed {
                        kind: EntryKind::File,
                        mode: 0o644,
                        mtime_sec: 1_700_000_000,
                        mtime_nsec: 5,
                        size: 3,
                        path: b"a".to_vec(),
                        link: vec![],
                        sum: Some([0xcc; 16]),
                    },
                    super::sync::Listed {
                        kind: EntryKind::Symlink,
                        mode: 0o777,
                        mtime_sec: 1_700_000_000,
                        mtime_nsec: 0,
                        size: 0,
                        path: b"l".to_vec(),
                        link: b"a".to_vec(),
                        sum: None,
                    },
                ],
            },
        ),
        ("REMOVE", Frame::Remove { paths: vec![b"backup/old/x".to_vec(), b"backup/old".to_vec()] }),
        ("REMOVED", Frame::Removed { removed: 1, failed: 1, message: "not empty".into() }),
    ]
}

#[test]
#[ignore = "prints the vector file; run by hand when a frame changes"]
fn print_vectors() {
    for (name, f) in samples() {
        let hex: String = f.to_vec().iter().map(|b| format!("{b:02x}")).collect();
        println!("{name}: {hex}");
    }
}

use super::sim::Rng;

#[test]
fn random_frames_round_trip() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for _ in 0..20_000 {
        let n = samples().len() as u64;
        let (_, base) = samples().swap_remove((rng.next() % n) as usize);
        let f = mutate(base, &mut rng);
        let bytes = f.to_vec();
        match decode(&bytes, &Limits::default()).unwrap() {
            Decoded::Frame(g, n) => {
                assert_eq!(n, bytes.len());
                assert_eq!(g, f);
            }
            Decoded::Incomplete(_) => panic!("incomplete"),
        }
        // Every strict prefix is incomplete, never an error or a panic.
        let cut = (rng.next() as usize) % bytes.len();
        assert!(matches!(decode(&bytes[..cut], &Limits::default()), Ok(Decoded::Incomplete(_))));
    }
}

fn mutate(f: Frame, rng: &mut Rng) -> Frame {
    let r = rng.next();
    let name_len = (r % 300) as usize;
    let name: Vec<u8> = (0..name_len).map(|i| (r >> (i % 56)) as u8 | 1).collect();
    match f {
        Frame::File(mut m) => {
            m.id = r;
            if m.carries_data() {
                m.size = r >> 3;
            }
            m.mtime_sec = r as i64;
            m.mtime_nsec = (r % 1_000_000_000) as u32;
            m.path = name;
            Frame::File(m)
        }
        Frame::Target { .. } => Frame::Target { path: name },
        Frame::Chunk { head, .. } => {
            Frame::Chunk { head: ChunkHead { id: r, offset: head.offset ^ r }, data: name, hash: [r as u8; 16] }
        }
        Frame::ChunkAck { .. } => Frame::ChunkAck { id: r, offset: r >> 1, status: AckStatus::BadHash },
        Frame::Error { code, .. } => Frame::Error { code, message: String::from_utf8_lossy(&name).into_owned() },
        other => other,
    }
}

#[test]
fn arbitrary_bytes_never_panic_and_respect_limits() {
    let mut rng = Rng(12345);
    let small = Limits { max_control: 64, max_chunk: 64, handshake: false };
    for i in 0..200_000 {
        let len = (rng.next() % 80) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 && buf.len() >= 8 {
            // Make the header plausible so the body decoders get exercised.
            let kinds = [0x01, 0x05, 0x12, 0x14, 0x20, 0x21, 0x30, 0x70, 0x7f, 0x50, 0x51, 0x52, 0x53];
            buf[0] = kinds[(rng.next() % kinds.len() as u64) as usize];
            buf[1] = 0;
            buf[2] = 0;
            buf[3] = 0;
            buf[4..8].copy_from_slice(&((len as u32).saturating_sub(8)).to_be_bytes());
        }
        if let Ok(Decoded::Frame(f, n)) = decode(&buf, &small) {
            assert!(n <= buf.len());
            let again = f.to_vec();
            assert_eq!(decode(&again, &Limits::default()), Ok(Decoded::Frame(f, again.len())));
        }
    }
}

#[test]
fn oversized_lengths_are_refused_before_reading_the_body() {
    let mut h = Header { kind: kind::FILE, flags: 0, len: MAX_CONTROL_PAYLOAD + 1 }.encode().to_vec();
    assert!(matches!(decode(&h, &Limits::default()), Err(DecodeError::TooLong { .. })));
    h[0] = kind::CHUNK;
    assert!(decode(&h, &Limits::default()).is_ok(), "a chunk may be larger than a control frame");
    h[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode(&h, &Limits::default()), Err(DecodeError::TooLong { .. })));
}

use super::error::DecodeError;

#[test]
fn before_auth_only_small_handshake_frames_are_read() {
    let hs = Limits::handshake();
    // Every other frame type is refused at its header, whatever its length.
    for k in [kind::CHUNK, kind::FILE, kind::TARGET, kind::PULL, kind::DONE, kind::NOTICE] {
        let h = Header { kind: k, flags: 0, len: 10 }.encode();
        assert_eq!(decode(&h, &hs), Err(DecodeError::NotInHandshake(k)), "0x{k:02x}");
    }
    // A handshake frame over 4 KiB is refused before its body.
    let h = Header { kind: kind::HELLO, flags: 0, len: MAX_HANDSHAKE_PAYLOAD + 1 }.encode();
    assert!(matches!(decode(&h, &hs), Err(DecodeError::TooLong { .. })));
    let h = Header { kind: kind::AUTH, flags: 0, len: 1 << 30 }.encode();
    assert!(matches!(decode(&h, &hs), Err(DecodeError::TooLong { .. })));
    // The real handshake frames pass.
    for (_, f) in samples() {
        let b = f.to_vec();
        if is_handshake_kind(b[0]) {
            assert_eq!(decode(&b, &hs), Ok(Decoded::Frame(f, b.len())));
        }
    }
    // After the handshake a control connection takes no CHUNK either.
    let h = Header { kind: kind::CHUNK, flags: 0, len: 100 }.encode();
    assert_eq!(decode(&h, &Limits::control()), Err(DecodeError::NotInHandshake(kind::CHUNK)));
}

/// FILE's extensions (flag bits 0-2, kinds 3-6) bounded and checked: counts
/// past the frame, empty or oversized names and values, a hard link with data
/// or no target, a device without its number, unknown flags — each an error,
/// never a panic or an allocation from a stated length.
#[test]
fn malformed_file_extensions_are_refused() {
    let base = FileMeta {
        id: 1,
        kind: EntryKind::File,
        mode: 0o644,
        mtime_sec: 0,
        mtime_nsec: 0,
        size: 0,
        path: b"f".to_vec(),
        link: vec![],
        owner: None,
        xattrs: Vec::new(),
        rdev: 0,
        hardlink: false,
    };
    let payload = |m: &FileMeta| Frame::File(m.clone()).to_vec()[HEADER_LEN..].to_vec();
    let with = |m: &FileMeta, tail: &[u8]| {
        let mut p = payload(m);
        p.extend_from_slice(tail);
        p
    };
    let bad = |flags: u8, p: &[u8], why: &str| {
        assert!(decode_flagged(kind::FILE, flags, p).is_err(), "{why}");
    };
    // xattrs: a count of 0, a count past the frame, an empty name, a value over 64 KiB.
    bad(FILE_XATTRS, &with(&base, &0u16.to_be_bytes()), "no xattrs");
    bad(FILE_XATTRS, &with(&base, &u16::MAX.to_be_bytes()), "65535 xattrs in a few bytes");
    let mut t = 1u16.to_be_bytes().to_vec();
    t.extend_from_slice(&0u16.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.push(b'x');
    bad(FILE_XATTRS, &with(&base, &t), "an empty name");
    let mut t = 1u16.to_be_bytes().to_vec();
    t.extend_from_slice(&6u16.to_be_bytes());
    t.extend_from_slice(b"user.a");
    t.extend_from_slice(&(MAX_XATTR_VALUE as u32 + 1).to_be_bytes());
    bad(FILE_XATTRS, &with(&base, &t), "a value over 64 KiB");
    let mut t = 1u16.to_be_bytes().to_vec();
    t.extend_from_slice(&6u16.to_be_bytes());
    t.extend_from_slice(b"user.a");
    t.extend_from_slice(&1000u32.to_be_bytes());
    bad(FILE_XATTRS, &with(&base, &t), "a value longer than the frame");
    // Owner: names over 255 bytes, or cut short.
    let mut t = [1u32.to_be_bytes(), 2u32.to_be_bytes()].concat();
    t.extend_from_slice(&300u16.to_be_bytes());
    t.extend_from_slice(&[b'a'; 300]);
    t.extend_from_slice(&0u16.to_be_bytes());
    bad(FILE_OWNER, &with(&base, &t), "a user name of 300 bytes");
    bad(FILE_OWNER, &with(&base, &[0, 0, 0, 1]), "an owner cut short");
    // Hard links: with data, or without a target.
    let link = FileMeta { link: b"g".to_vec(), ..base.clone() };
    assert!(decode_flagged(kind::FILE, FILE_HARDLINK, &payload(&link)).is_ok(), "a well-formed link");
    bad(FILE_HARDLINK, &payload(&base), "a link without a target");
    bad(FILE_HARDLINK, &payload(&FileMeta { size: 5, ..link.clone() }), "a link with data");
    let dir = FileMeta { kind: EntryKind::Dir, ..link };
    bad(FILE_HARDLINK, &payload(&dir), "a link that is a directory");
    // A device without its number; an unknown kind; an unknown flag.
    let dev = FileMeta { kind: EntryKind::CharDev, ..base.clone() };
    let p = payload(&dev);
    bad(0, &p[..p.len() - 8], "a device without rdev");
    let mut p = payload(&base);
    p[8] = 7;
    bad(0, &p, "kind 7");
    let h = Header { kind: kind::FILE, flags: 8, len: 10 }.encode();
    assert!(Header::decode(&h, &Limits::control()).is_err(), "FILE flag bit 3");
}
