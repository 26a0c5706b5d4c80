//! The greeting scanner, the normaliser and the keyed hash, as user space runs them (the kernel
//! runs the same code; its cost per packet is measured by `cargo xtask bench`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use helo_common::{hash_helo_arg, scan_greeting, HashKey, PAYLOAD_WINDOW};
use std::hint::black_box;

const KEY: HashKey = HashKey { k0: 0x0706_0504_0302_0100, k1: 0x0f0e_0d0c_0b0a_0908 };

fn name(len: usize) -> Vec<u8> {
    (0..len).map(|i| if i % 9 == 8 { b'.' } else { b'a' + (i % 26) as u8 }).collect()
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("hash_helo_arg");
    for len in [8usize, 30, 64, 255] {
        let arg = name(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &arg, |b, arg| b.iter(|| hash_helo_arg(&KEY, black_box(arg))));
    }
    g.finish();
    let mut g = c.benchmark_group("scan_greeting");
    for len in [8usize, 30, 64, 255] {
        let payload = [b"EHLO ".as_slice(), &name(len), b"\r\nMAIL FROM:<a@b.example>\r\n"].concat();
        let mut window = [0u8; PAYLOAD_WINDOW];
        window[..payload.len()].copy_from_slice(&payload);
        let n = payload.len();
        g.bench_with_input(BenchmarkId::from_parameter(len), &window, |b, w| b.iter(|| scan_greeting(black_box(w), n, &KEY)));
    }
    g.finish();
}

criterion_group!(normalise_hash, benches);
criterion_main!(normalise_hash);
