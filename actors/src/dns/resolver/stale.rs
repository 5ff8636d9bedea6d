//! What a miss leaves behind, and what it serves when every upstream fails.
//! A fetch's answer is cached when it may be; a failure where an upstream
//! was really asked caches SERVFAIL for `servfail_ttl_s`. A failed miss
//! with an expired answer within `serve_stale_s` serves it (RFC 8767): the
//! leader of the miss keeps the stale copy in the cache and refreshes it
//! once in the background. Walking the chain is `fetch`'s job.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Resolver;
use crate::dns::answer::{Accepted, CachedAnswer};
use crate::dns::cache::KeyBuf;
use crate::dns::coalesce::{FetchError, Outcome, Role};
use crate::dns::wire::{self, Query};

/// How long a stale answer is served before it is asked for again.
const REFRESH_AFTER: Duration = Duration::from_secs(1);

impl Resolver {
    /// Caches what a fetch brought: the answer, or SERVFAIL when an
    /// upstream was asked and none answered.
    pub(super) fn remember(
        &self,
        query: &Query<'_>,
        result: Result<Accepted, FetchError>,
    ) -> Outcome {
        let now = Instant::now();
        let key = KeyBuf::of(query);
        match result {
            Ok(accepted) => {
                let answer = Arc::new(accepted.answer);
                if accepted.cacheable {
                    self.cache.insert(key.as_bytes(), answer.clone(), now);
                }
                Ok(answer)
            }
            // Nothing known about the name (no upstream asked), or only that
            // it does not fit UDP (TCP will do): nothing to remember.
            Err(error @ (FetchError::Unavailable | FetchError::Truncated)) => Err(error),
            Err(error) => {
                let ttl = self.conf.load().settings.cache.ttl;
                let servfail = CachedAnswer::servfail(query, &ttl, now);
                self.cache.insert(key.as_bytes(), Arc::new(servfail), now);
                Err(error)
            }
        }
    }

    /// After a failed miss served `stale`, its leader keeps the stale copy
    /// (so other askers get it from the cache) and refreshes it once.
    pub(super) fn keep_stale(
        self: &Arc<Self>,
        key: &KeyBuf,
        stale: &CachedAnswer,
        packet: &[u8],
        client: IpAddr,
        now: Instant,
    ) {
        self.cache
            .insert(key.as_bytes(), Arc::new(stale.restaled(now)), now);
        self.refresh_later(packet.to_vec(), client);
    }

    /// After serving stale, tries the upstreams again in the background.
    fn refresh_later(self: &Arc<Self>, packet: Vec<u8>, client: IpAddr) {
        let in_flight = self.conf.load().in_flight.clone();
        let Ok(permit) = in_flight.try_acquire_owned() else {
            return;
        };
        let resolver = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::time::sleep(REFRESH_AFTER).await;
            if let Ok(query) = wire::parse_query(&packet) {
                let key = KeyBuf::of(&query);
                if let Role::Leader(leader) = resolver.coalescer.join(key.as_bytes()) {
                    let outcome = resolver.fetch(&query, client).await;
                    leader.finish(&outcome);
                }
            }
        });
    }
}
