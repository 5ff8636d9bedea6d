//! Queries sent on one socket or connection and not yet answered, by
//! message id. An answer completes its query only if the id and the
//! question both match; ids are random among the free ones.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::{UpstreamError, UpstreamQuery};
use crate::dns::wire;

/// The most queries in flight on one socket or connection.
pub const MAX_PENDING: usize = 16_384;

#[derive(Debug, Default)]
pub struct Pending {
    queries: Mutex<HashMap<u16, UpstreamQuery>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, UpstreamQuery>> {
        self.queries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a query under a random free id and returns the id with the
    /// wire query `encode` builds for it; gives the query back when full.
    pub fn insert(
        &self,
        query: UpstreamQuery,
        encode: impl FnOnce(u16, &UpstreamQuery) -> Vec<u8>,
    ) -> Result<(u16, Vec<u8>), UpstreamQuery> {
        let mut queries = self.lock();
        if queries.len() >= MAX_PENDING {
            return Err(query);
        }
        let id = loop {
            let id = rand::random::<u16>();
            if !queries.contains_key(&id) {
                break id;
            }
        };
        let wire = encode(id, &query);
        queries.insert(id, query);
        Ok((id, wire))
    }

    /// The deadline of the query with this id.
    pub fn deadline_of(&self, id: u16) -> Option<std::time::Instant> {
        self.lock().get(&id).map(|q| q.deadline)
    }

    /// Removes the query with this id.
    pub fn take(&self, id: u16) -> Option<UpstreamQuery> {
        self.lock().remove(&id)
    }

    /// Completes the query this answer belongs to; false when none matches
    /// (late, spoofed or for a question we did not ask).
    pub fn complete(&self, answer: &[u8]) -> bool {
        let Some(id) = wire::read_u16(answer, 0) else {
            return false;
        };
        let mut queries = self.lock();
        let matches = queries
            .get(&id)
            .is_some_and(|q| wire::same_question(answer, &q.question));
        if !matches {
            return false;
        }
        if let Some(query) = queries.remove(&id) {
            drop(queries);
            let _ = query.reply.send(Ok(answer.to_vec()));
        }
        true
    }

    /// Everything still pending, removed (for a retry elsewhere).
    pub fn take_all(&self) -> Vec<UpstreamQuery> {
        self.lock().drain().map(|(_, q)| q).collect()
    }

    /// Fails everything still pending.
    pub fn fail_all(&self, error: UpstreamError) {
        for query in self.take_all() {
            query.fail(error);
        }
    }

    /// Fails queries whose deadline passed.
    pub fn expire(&self, now: Instant) {
        let expired: Vec<UpstreamQuery> = {
            let mut queries = self.lock();
            let ids: Vec<u16> = queries
                .iter()
                .filter(|(_, q)| q.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| queries.remove(&id))
                .collect()
        };
        for query in expired {
            query.fail(UpstreamError::Timeout);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
