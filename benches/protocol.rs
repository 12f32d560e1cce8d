//! Benchmarks for the pure half of the protocol: encoding and decoding every
//! message frame, and checking remote names against the naming rules.
//!
//! Run with `cargo bench --bench protocol`; each case is checked once before
//! it is timed, so a benchmark cannot quietly measure an error path.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferry::protocol::{self, Entry, EntryKind, ErrorCode, Message, NameError, RemoteName};

/// A typical nested file name, 40 bytes long.
const NAME: &str = "photos/2024/summer/IMG_20240714_1830.jpg";

/// One realistic value of every message variant, with the id it is
/// benchmarked under.
fn messages() -> Vec<(&'static str, Message)> {
    assert_eq!(NAME.len(), 40, "the name's length is part of its doc");
    let size = 3_481_902;
    vec![
        (
            "put",
            Message::Put {
                name: NAME.to_owned(),
                size,
            },
        ),
        (
            "get",
            Message::Get {
                name: NAME.to_owned(),
            },
        ),
        (
            "list",
            Message::List {
                dir: "photos/2024".to_owned(),
                long: true,
            },
        ),
        (
            "delete",
            Message::Delete {
                name: NAME.to_owned(),
                recursive: false,
            },
        ),
        (
            "trailer",
            Message::Trailer {
                digest: *blake3::hash(b"a file body").as_bytes(),
            },
        ),
        ("proceed", Message::Proceed),
        ("body", Message::Body { size }),
        (
            "entry",
            Message::Entry(Entry {
                kind: EntryKind::File,
                size,
                modified: 1_720_981_812,
                name: "IMG_20240714_1830.jpg".to_owned(),
            }),
        ),
        ("done", Message::Done),
        (
            "error",
            Message::Error {
                code: ErrorCode::AlreadyExists,
                message: format!("cannot store {NAME}: a file by that name already exists"),
            },
        ),
    ]
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for (id, message) in messages() {
        let mut frame = Vec::new();
        protocol::encode(&message, &mut frame).expect("every sample message fits a frame");
        assert_eq!(
            protocol::decode(&frame),
            Ok(Some((message.clone(), frame.len()))),
            "{id} must round-trip"
        );
        group.throughput(Throughput::Bytes(frame.len() as u64));

        // Reuse one buffer, as a connection does, so the allocator stays out
        // of the encode numbers.
        let mut out = Vec::with_capacity(frame.len());
        group.bench_function(BenchmarkId::new("encode", id), |b| {
            b.iter(|| {
                out.clear();
                protocol::encode(black_box(&message), &mut out).expect("checked to fit above");
                black_box(&out);
            })
        });
        // Decoding allocates the message's strings; that is part of its cost.
        group.bench_function(BenchmarkId::new("decode", id), |b| {
            b.iter(|| protocol::decode(black_box(&frame)))
        });
    }
    group.finish();
}

fn remote_name(c: &mut Criterion) {
    let nested = (1..=20)
        .map(|depth| format!("level-{depth:02}"))
        .collect::<Vec<_>>()
        .join("/");
    let cases: [(&str, &str, Result<(), NameError>); 5] = [
        ("accept/short", "report.pdf", Ok(())),
        ("accept/nested-20", &nested, Ok(())),
        (
            "reject/dot-dot",
            "photos/../../etc/passwd",
            Err(NameError::DotComponent),
        ),
        ("reject/absolute", "/etc/passwd", Err(NameError::Absolute)),
        (
            "reject/control",
            "reports/q3\u{1b}[31m.pdf",
            Err(NameError::ControlCharacter),
        ),
    ];

    let mut group = c.benchmark_group("remote_name");
    for (id, name, expected) in cases {
        assert_eq!(
            RemoteName::parse(name).map(|_| ()),
            expected,
            "{id}: {name:?}"
        );
        group.bench_function(id, |b| b.iter(|| RemoteName::parse(black_box(name))));
    }
    group.finish();
}

criterion_group!(benches, codec, remote_name);
criterion_main!(benches);
