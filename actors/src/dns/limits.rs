//! Who may ask and how fast: the client ACL and the per-client token bucket.
//!
//! The bucket table is bounded: past its size, idle clients are forgotten
//! first, and a client that cannot get an entry is not limited (the ACL and
//! the in-flight bound still hold). Nothing here allocates per query.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use ipnet::IpNet;

/// The clients allowed to query.
#[derive(Clone, Debug)]
pub struct Acl(Vec<IpNet>);

impl Acl {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub fn allows(&self, client: IpAddr) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&client))
    }
}

/// Clients tracked by the rate limiter at most.
const MAX_CLIENTS: usize = 65_536;
const SHARDS: usize = 16;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token bucket per client address: `qps` per second, bursts of `qps`.
pub struct RateLimiter {
    qps: f64,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
}

impl RateLimiter {
    pub fn new(qps: u32) -> Self {
        Self {
            qps: f64::from(qps.max(1)),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// True when the client may send this query now. IPv6 clients are
    /// limited per /64, the block one host can pick addresses from. When
    /// every bucket is in use, an unknown client is refused, not waved
    /// through.
    pub fn allow(&self, client: IpAddr, now: Instant) -> bool {
        let client = client_key(client);
        let shard = &self.shards[shard_of(client)];
        let mut buckets = shard.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CLIENTS / SHARDS && !buckets.contains_key(&client) {
            let qps = self.qps;
            buckets.retain(|_, b| refill(b, qps, now) < qps);
            if buckets.len() >= MAX_CLIENTS / SHARDS {
                return false;
            }
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.qps,
            last: now,
        });
        refill(bucket, self.qps, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn refill(bucket: &mut Bucket, qps: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * qps).min(qps);
    bucket.last = now;
    bucket.tokens
}

/// The address a limit applies to: IPv4 as is, IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
        v4 => v4,
    }
}

fn shard_of(key: IpAddr) -> usize {
    let varying = match key {
        IpAddr::V4(v4) => v4.octets()[3],
        // The last byte of the /64 prefix: the host half is zero in keys.
        IpAddr::V6(v6) => v6.octets()[7],
    };
    varying as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn acl_matches_nets_and_v4_mapped_addresses() {
        let acl = Acl::new(vec![
            "192.168.0.0/16".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(acl.allows("192.168.3.4".parse().unwrap()));
        assert!(acl.allows("::ffff:192.168.3.4".parse().unwrap()));
        assert!(acl.allows("::1".parse().unwrap()));
        assert!(!acl.allows("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(10);
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let burst = (0..20).filter(|_| limiter.allow(client, t0)).count();
        assert_eq!(burst, 10);
        assert!(!limiter.allow(client, t0 + Duration::from_millis(50)));
        assert!(limiter.allow(client, t0 + Duration::from_millis(150)));
        assert!(
            limiter.allow("10.0.0.2".parse().unwrap(), t0),
            "clients are independent"
        );
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        assert!(limiter.allow("2001:db8:1:2::1".parse().unwrap(), t0));
        assert!(limiter.allow("2001:db8:1:2::ffff".parse().unwrap(), t0));
        assert!(
            !limiter.allow("2001:db8:1:2:abcd::7".parse().unwrap(), t0),
            "same /64, new address"
        );
        assert!(
            limiter.allow("2001:db8:1:3::1".parse().unwrap(), t0),
            "another /64"
        );
    }
}
