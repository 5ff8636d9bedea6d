//! Admission: what [`Resolver::decide`] does with a packet inside a
//! listener's receive loop, without waiting. It parses, applies the ACL and
//! the per-client rate limit, refuses what ward does not serve, answers
//! static names and fresh cache hits on the spot, and hands the rest an
//! in-flight permit (or REFUSED past the bound). It never talks to an
//! upstream; that is [`Resolver::resolve`]'s job.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::Resolver;
use crate::dns::answer::CachedAnswer;
use crate::dns::cache::{KeyBuf, Lookup};
use crate::dns::metrics::{Dropped, Refused, Transport};
use crate::dns::wire::{self, rcode, Query, QueryError};

const TYPE_AXFR: u16 = 252;
const TYPE_IXFR: u16 = 251;
/// The largest answer over TCP.
const TCP_LIMIT: usize = 65_535;

/// What to do with a packet, decided without waiting.
pub enum Decision {
    /// The answer is in `out`.
    Reply,
    /// Nothing to send.
    Drop,
    /// Needs upstreams: run [`Resolver::resolve`] holding this permit.
    Resolve(Pending),
}

/// A query on its way upstream.
pub struct Pending {
    pub permit: OwnedSemaphorePermit,
    /// An expired answer to serve if every upstream fails.
    pub stale: Option<Arc<CachedAnswer>>,
}

impl Resolver {
    /// Decides what to do with a packet from `client`; writes any immediate
    /// answer into `out`.
    pub fn decide(
        &self,
        packet: &[u8],
        client: IpAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Decision {
        let query = match wire::parse_query(packet) {
            Ok(query) => query,
            Err(error) => return self.bad_query(packet, error, transport, out),
        };
        let conf = self.conf.load();
        if !conf.acl.allows(client) {
            return self.refuse(&query, Refused::Acl, transport, out);
        }
        let now = Instant::now();
        if conf
            .rate
            .as_ref()
            .is_some_and(|rate| !rate.allow(client, now))
        {
            self.metrics.dropped(Dropped::RateLimited);
            return Decision::Drop;
        }
        if query.qclass != wire::CLASS_IN || query.qtype == TYPE_AXFR || query.qtype == TYPE_IXFR {
            return self.refuse(&query, Refused::Unsupported, transport, out);
        }
        let limit = limit(&query, transport);
        if let Some(answer) = conf.statics.lookup(&query) {
            answer.write(&query, now, false, limit, out);
            self.metrics.answered(transport, answer.rcode());
            return Decision::Reply;
        }
        let stale = match self.cache.lookup(KeyBuf::of(&query).as_bytes(), now) {
            Lookup::Fresh(answer) => {
                answer.write(&query, now, false, limit, out);
                self.metrics.answered(transport, answer.rcode());
                return Decision::Reply;
            }
            Lookup::Stale(answer) => Some(answer),
            Lookup::Miss => None,
        };
        match conf.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Decision::Resolve(Pending { permit, stale }),
            Err(_) => self.refuse(&query, Refused::Overload, transport, out),
        }
    }

    fn bad_query(
        &self,
        packet: &[u8],
        error: QueryError,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Decision {
        let code = match error {
            QueryError::Short => {
                self.metrics.dropped(Dropped::Short);
                return Decision::Drop;
            }
            QueryError::IsResponse => {
                self.metrics.dropped(Dropped::Response);
                return Decision::Drop;
            }
            QueryError::NotImplemented => rcode::NOTIMP as u16,
            QueryError::Malformed => rcode::FORMERR as u16,
            QueryError::BadVersion => rcode::BADVERS,
        };
        wire::write_header_error(packet, code, out);
        self.metrics.answered(transport, (code & 0xf) as u8);
        Decision::Reply
    }

    fn refuse(
        &self,
        query: &Query<'_>,
        reason: Refused,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Decision {
        wire::write_empty_response(query, rcode::REFUSED as u16, false, out);
        self.metrics.refused(reason);
        self.metrics.answered(transport, rcode::REFUSED);
        Decision::Reply
    }
}

/// The largest answer the client can take over `transport`.
pub(super) fn limit(query: &Query<'_>, transport: Transport) -> usize {
    match transport {
        Transport::Udp => query.udp_limit(),
        Transport::Tcp => TCP_LIMIT,
    }
}
