//! Median time of one `Classifier::classify` call for the three shapes of greeting that matter:
//! a typical host name (the accept path, which must stay under 1 µs), an address literal, and a
//! bogus name (the reject path).

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use helo_user::classify::{Classifier, ClassifierConfig, GreetingFacts, Verb};

fn classifier() -> Classifier {
    let mut config = ClassifierConfig::default().with_server_facts(
        ["192.0.2.25".parse().unwrap(), "2001:db8::25".parse().unwrap()],
        Some("mx.example.com".to_owned()),
        ["example.com".to_owned(), "example.org".to_owned(), "example.net".to_owned()],
    );
    config.relay_cidrs = vec!["198.51.100.0/24".to_owned()];
    Classifier::new(&config).expect("bench config compiles")
}

fn bench_classify(c: &mut Criterion) {
    let classifier = classifier();
    let client: IpAddr = "203.0.113.7".parse().unwrap();
    let mut group = c.benchmark_group("classify");
    let cases: [(&str, &[u8]); 3] =
        [("typical_fqdn", b"mail-yw1-f41.Google.com"), ("ip_literal", b"[203.0.113.7]"), ("bogus_name", b"rad.internal")];
    for (name, arg) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                let greeting = GreetingFacts::new(Verb::Ehlo, black_box(arg), black_box(client));
                black_box(classifier.classify(&greeting))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_classify);
criterion_main!(benches);
