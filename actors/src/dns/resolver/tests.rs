//! The fetch policy against scripted upstreams (`upstream::fake`), on
//! paused time: the race, the time budget of a chain, the TCP fallback.
//! No sockets and no external tool; the fakes sit in the upstream slots
//! where the real actors publish themselves.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use tokio::time::Instant;

use super::Resolver;
use crate::dialer::settings::DialerSettings;
use crate::dialer::Dialers;
use crate::dns::metrics::{DnsMetrics, Transport};
use crate::dns::settings::{Chain, DnsSettings, Limits, Strategy, Transport as Via, UpstreamSpec};
use crate::dns::upstream::fake::{Asked, FakeUpstream, Reply};
use crate::dns::upstream::UpstreamError;
use crate::dns::wire::tests::query_bytes;
use crate::io_class::IoClass;

/// Where the configured upstreams are: nothing is ever sent there, the
/// fakes answer in their place.
const NOWHERE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const MS: Duration = Duration::from_millis(1);
const ONE: [u8; 4] = [192, 0, 2, 1];
const TWO: [u8; 4] = [192, 0, 2, 2];
const THREE: [u8; 4] = [192, 0, 2, 3];

/// A resolver whose default chain is the upstreams `names`, in order,
/// each reached over `transport`, within `timeout`.
fn resolver(
    names: &[&str],
    transport: Via,
    strategy: Strategy,
    timeout: Duration,
) -> Arc<Resolver> {
    let spec = UpstreamSpec {
        transport,
        via: "direct".into(),
    };
    let settings = DnsSettings {
        listen: Vec::new(),
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        upstreams: names
            .iter()
            .map(|n| (n.to_string(), spec.clone()))
            .collect(),
        routes: Vec::new(),
        default: Chain {
            upstreams: names.iter().map(|n| n.to_string()).collect(),
            strategy,
        },
        timeout,
        limits: Limits::default(),
        cache: Default::default(),
        statics: Vec::new(),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let dialers = Dialers::new(DialerSettings::direct_only(), Default::default());
    Resolver::new(settings, DnsMetrics::register(&mut registry), &dialers)
}

/// Upstreams `a`, `b`, `c` over UDP, asked one after another.
fn three_in_sequence(timeout: Duration) -> Arc<Resolver> {
    resolver(
        &["a", "b", "c"],
        Via::Udp(NOWHERE),
        Strategy::Sequential,
        timeout,
    )
}

/// Upstream `a` over UDP with TCP fallback.
fn tcp_udp() -> Arc<Resolver> {
    resolver(
        &["a"],
        Via::TcpUdp(NOWHERE),
        Strategy::Sequential,
        2000 * MS,
    )
}

async fn fake(resolver: &Resolver, name: &str, after: Duration, reply: Reply) -> FakeUpstream {
    FakeUpstream::always(&resolver.upstream(name).unwrap(), after, reply).await
}

/// Asks `www.test. A` over UDP as a listener would: the answer and how
/// long it took.
async fn ask(resolver: &Arc<Resolver>) -> (Message, Duration) {
    let started = Instant::now();
    let query = query_bytes("www.test.", 1, None);
    let answer = resolver.resolve(&query, CLIENT, Transport::Udp, None).await;
    (Message::from_vec(&answer).unwrap(), started.elapsed())
}

fn addresses(msg: &Message) -> Vec<[u8; 4]> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.octets()),
            _ => None,
        })
        .collect()
}

/// When each query reached the fake, and until when it was given, counted
/// from `start`.
fn times(asked: &[Asked], start: Instant) -> Vec<(Duration, Duration)> {
    asked
        .iter()
        .map(|a| (a.at - start, a.deadline - start))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_race_takes_the_first_good_answer() {
    let r = resolver(&["a", "b"], Via::Udp(NOWHERE), Strategy::Race, 2000 * MS);
    let _a = fake(&r, "a", 100 * MS, Reply::Answer(ONE)).await;
    let _b = fake(&r, "b", 20 * MS, Reply::Answer(TWO)).await;
    let (msg, took) = ask(&r).await;
    assert_eq!(addresses(&msg), vec![TWO]);
    assert_eq!(took, 20 * MS, "without waiting for the slower one");
}

#[tokio::test(start_paused = true)]
async fn a_servfail_does_not_win_the_race() {
    let r = resolver(
        &["a", "b", "c"],
        Via::Udp(NOWHERE),
        Strategy::Race,
        2000 * MS,
    );
    let _a = fake(&r, "a", 10 * MS, Reply::Rcode(ResponseCode::ServFail)).await;
    let _b = fake(&r, "b", 50 * MS, Reply::Answer(TWO)).await;
    let c = fake(&r, "c", MS, Reply::Answer(THREE)).await;
    let (msg, took) = ask(&r).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&msg), vec![TWO]);
    assert_eq!(took, 50 * MS);
    assert!(
        c.asked().is_empty(),
        "the rest waits until both racers fail"
    );
}

#[tokio::test(start_paused = true)]
async fn a_chain_of_slow_upstreams_stays_within_the_time_budget() {
    let r = three_in_sequence(1500 * MS);
    let mut fakes = Vec::new();
    for name in ["a", "b", "c"] {
        fakes.push(fake(&r, name, MS, Reply::Silent).await);
    }
    let start = Instant::now();
    let (msg, took) = ask(&r).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert!(took <= 1500 * MS, "{took:?}");
    // Each gets a fair share of what is left, and every one is asked.
    let asked: Vec<_> = fakes.iter().map(|f| times(&f.asked(), start)).collect();
    assert_eq!(
        asked,
        vec![
            vec![(Duration::ZERO, 500 * MS)],
            vec![(500 * MS, 1000 * MS)],
            vec![(1000 * MS, 1500 * MS)],
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn later_upstreams_still_answer_after_slow_ones() {
    let r = three_in_sequence(900 * MS);
    let _a = fake(&r, "a", MS, Reply::Silent).await;
    let gone = Reply::Fail(UpstreamError::Io(IoClass::PeerGone));
    let _b = fake(&r, "b", MS, gone).await;
    let _c = fake(&r, "c", 10 * MS, Reply::Answer(THREE)).await;
    let (msg, took) = ask(&r).await;
    assert_eq!(addresses(&msg), vec![THREE]);
    // a's share (300 ms), b's failure at once (1 ms), c's answer (10 ms).
    assert_eq!(took, 311 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let r = tcp_udp();
    let slot = r.upstream("a").unwrap();
    let a = FakeUpstream::by_transport(&slot, 5 * MS, Reply::Truncated, Reply::Answer(ONE)).await;
    let (msg, took) = ask(&r).await;
    assert!(!msg.metadata.truncation);
    assert_eq!(addresses(&msg), vec![ONE]);
    assert_eq!(took, 10 * MS);
    assert_eq!(a.over_tcp(), vec![false, true]);
}

#[tokio::test(start_paused = true)]
async fn a_udp_failure_on_tcp_udp_falls_back_to_tcp() {
    let r = tcp_udp();
    let slot = r.upstream("a").unwrap();
    let failed = Reply::Fail(UpstreamError::Io(IoClass::PathFailed));
    let a = FakeUpstream::by_transport(&slot, MS, failed, Reply::Answer(ONE)).await;
    let (msg, _) = ask(&r).await;
    assert_eq!(addresses(&msg), vec![ONE]);
    assert_eq!(a.over_tcp(), vec![false, true]);
    assert_eq!(
        slot.health.consecutive_failures(),
        0,
        "the upstream answered"
    );
}

#[tokio::test(start_paused = true)]
async fn a_udp_only_upstream_passes_truncation_on_to_the_client() {
    let r = resolver(&["a"], Via::Udp(NOWHERE), Strategy::Sequential, 2000 * MS);
    let a = fake(&r, "a", MS, Reply::Truncated).await;
    let (msg, _) = ask(&r).await;
    assert!(
        msg.metadata.truncation,
        "the client retries over TCP itself"
    );
    assert!(addresses(&msg).is_empty());
    assert_eq!(a.over_tcp(), vec![false], "no TCP to fall back to");
}
