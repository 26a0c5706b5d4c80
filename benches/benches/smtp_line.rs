//! The agent's SMTP line handling: splitting lines under the 512-byte limit and parsing commands.

use criterion::{criterion_group, criterion_main, Criterion};
use helo_user::smtp::{command, line::LineReader};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let lines: [&[u8]; 4] = [
        b"EHLO mail-yw1-f41.google.com\r\n",
        b"MAIL FROM:<someone@example.org> SIZE=12345\r\n",
        b"RCPT TO:<user@example.com>\r\n",
        b"DATA\r\n",
    ];
    c.bench_function("command::parse (4 commands)", |b| {
        b.iter(|| {
            for l in lines {
                black_box(command::parse(black_box(l)));
            }
        })
    });
    let session: Vec<u8> = lines.concat().repeat(64);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    c.bench_function("LineReader (256 lines)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut r = LineReader::new(session.as_slice(), helo_user::smtp::line::COMMAND_LINE);
                let mut n = 0;
                while let Ok(helo_user::smtp::line::Line::Complete(_)) = r.read_line().await {
                    n += 1;
                }
                black_box(n)
            })
        })
    });
}

criterion_group!(smtp_line, benches);
criterion_main!(smtp_line);
