//! The query path driven by arbitrary bytes: what the cargo-fuzz target
//! `query_path` runs, and what the regression test replays over the saved
//! corpus. It checks properties, not just absence of panics: every reply
//! parses, ward's own messages parse back, keys ignore case.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::answer::{CachedAnswer, TtlPolicy};
use super::cache::KeyBuf;
use super::metrics::{DnsMetrics, Transport};
use super::resolver::{Decision, Resolver};
use super::settings::{Chain, DnsSettings, Limits, StaticData, StaticRecord, Strategy};
use super::wire::{self, HEADER_LEN};

/// The question arbitrary bytes are offered as an answer to.
fn question() -> &'static [u8] {
    static QUESTION: OnceLock<Vec<u8>> = OnceLock::new();
    QUESTION.get_or_init(|| wire::question("www.test.", 1, wire::CLASS_IN).expect("a fixed name"))
}

fn resolver() -> &'static Arc<Resolver> {
    static RESOLVER: OnceLock<Arc<Resolver>> = OnceLock::new();
    RESOLVER.get_or_init(|| {
        let settings = DnsSettings {
            listen: Vec::new(),
            allow: vec!["127.0.0.0/8".parse().expect("a CIDR")],
            upstreams: Default::default(),
            routes: Vec::new(),
            default: Chain {
                upstreams: Vec::new(),
                strategy: Strategy::Sequential,
            },
            timeout: std::time::Duration::from_secs(1),
            limits: Limits::default(),
            cache: Default::default(),
            statics: vec![StaticRecord {
                name: "router.lan".into(),
                ttl: 60,
                data: StaticData::A(Ipv4Addr::new(192, 168, 1, 1)),
            }],
        };
        let mut registry = prometheus_client::registry::Registry::default();
        Resolver::new(
            settings,
            DnsMetrics::register(&mut registry),
            &crate::dialer::Dialers::new(
                crate::dialer::settings::DialerSettings::direct_only(),
                Default::default(),
            ),
        )
    })
}

/// Runs the query path on `data`; panics when a property does not hold.
pub fn query_path(data: &[u8]) {
    as_query(data);
    as_upstream_answer(data);
    let mut out = Vec::new();
    for client in [IpAddr::from([127, 0, 0, 1]), IpAddr::from([8, 8, 8, 8])] {
        for transport in [Transport::Udp, Transport::Tcp] {
            match resolver().decide(data, client, transport, &mut out) {
                Decision::Reply => assert_parses(&out, "a reply"),
                Decision::Drop | Decision::Resolve(_) => {}
            }
        }
    }
}

fn assert_parses(bytes: &[u8], what: &str) {
    if let Err(e) = hickory_proto::op::Message::from_vec(bytes) {
        panic!("{what} does not parse ({e}): {bytes:?}");
    }
}

fn as_query(data: &[u8]) {
    let Ok(query) = wire::parse_query(data) else {
        return;
    };
    let key = KeyBuf::of(&query);
    let mut out = Vec::new();
    wire::write_empty_response(&query, 2, false, &mut out);
    assert_parses(&out, "an error reply");
    wire::write_upstream_query(&query, 7, &mut out);
    let upstream = wire::parse_query(&out).expect("ward's own query parses");
    assert_eq!(
        KeyBuf::of(&upstream).as_bytes(),
        key.as_bytes(),
        "keys ignore case"
    );
    let answer = synthetic_answer(&out, query.qname.len());
    let question = wire::lowercase_question(&query);
    let accepted =
        CachedAnswer::from_upstream(&answer, &question, &TtlPolicy::default(), Instant::now())
            .expect("a well-formed answer is accepted");
    let full = accepted
        .answer
        .write(&query, Instant::now(), false, 65_535, &mut out);
    assert!(full);
    assert_parses(&out, "a cached answer");
    assert_eq!(
        &out[HEADER_LEN..HEADER_LEN + query.qname.len()],
        query.qname,
        "the asker's case"
    );
}

/// ward's upstream query turned into an answer with one A record.
fn synthetic_answer(upstream_query: &[u8], qname_len: usize) -> Vec<u8> {
    let question_end = HEADER_LEN + qname_len + 4;
    let mut answer = upstream_query[..question_end].to_vec();
    answer[2] |= 0x80;
    answer[3] |= 0x80;
    answer[6..8].copy_from_slice(&1u16.to_be_bytes());
    answer[10..12].copy_from_slice(&0u16.to_be_bytes());
    answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 192, 0, 2, 1]);
    answer
}

fn as_upstream_answer(data: &[u8]) {
    let now = Instant::now();
    if let Ok(accepted) = CachedAnswer::from_upstream(data, question(), &TtlPolicy::default(), now)
    {
        let query =
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03WWW\x04test\x00\x00\x01\x00\x01";
        let query = wire::parse_query(query).expect("a fixed query");
        let mut out = Vec::new();
        accepted.answer.write(&query, now, false, 512, &mut out);
        assert!(wire::records(&out).is_some(), "a served answer walks");
        accepted.answer.write(&query, now, true, 65_535, &mut out);
        assert!(wire::records(&out).is_some(), "a stale answer walks");
    }
    let _ = wire::records(data);
    let _ = wire::edns_of(data);
}
