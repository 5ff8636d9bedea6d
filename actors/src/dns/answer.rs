//! Answers kept as bytes, ready to send: what the cache stores and what a
//! hit writes out after patching the id, flags, question case and TTLs.
//!
//! An upstream answer is made canonical once, when it arrives: id 0, the
//! question name lowercased, no OPT record, TTLs clamped to the cache policy
//! (the SOA of a negative answer carries the negative TTL, RFC 2308). The
//! offsets of every TTL are remembered, so a hit counts TTLs down without
//! parsing anything.

use std::time::Instant;

use super::wire::{self, flags, rcode, Query, RecordInfo, HEADER_LEN};

/// How long answers may be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    pub min_ttl: u32,
    pub max_ttl: u32,
    pub negative_max_ttl: u32,
    pub servfail_ttl: u32,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        Self {
            min_ttl: 0,
            max_ttl: 86_400,
            negative_max_ttl: 3_600,
            servfail_ttl: 5,
        }
    }
}

/// What an answer says, for caching and for serve-stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerKind {
    /// Records for the question.
    Positive,
    /// NXDOMAIN or NODATA with an SOA (RFC 2308).
    Negative,
    /// Every upstream failed; kept a few seconds.
    ServFail,
    /// From hosts or inline records: never expires, TTLs fixed.
    Static,
}

/// The TTL a stale answer is served with (RFC 8767).
pub const STALE_TTL: u32 = 30;

/// An answer ready to be served to any query with the same key.
#[derive(Debug)]
pub struct CachedAnswer {
    bytes: Box<[u8]>,
    qname_len: usize,
    ttl_at: Box<[u16]>,
    kind: AnswerKind,
    rcode: u8,
    authentic: bool,
    born: Instant,
    lifetime: u32,
    /// When the answer first expired: the serve-stale window counts from
    /// here, also for copies re-served stale.
    stale_base: Instant,
}

/// Why an upstream answer is not used as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("malformed answer")]
    Malformed,
    #[error("truncated answer")]
    Truncated,
    #[error("answer with rcode {}", rcode::name(*.0))]
    Rcode(u16),
}

/// An upstream answer made canonical, and whether it may be cached.
#[derive(Debug)]
pub struct Accepted {
    pub answer: CachedAnswer,
    pub cacheable: bool,
}

impl CachedAnswer {
    pub fn kind(&self) -> AnswerKind {
        self.kind
    }

    pub fn rcode(&self) -> u8 {
        self.rcode
    }

    /// Seconds of freshness left at `now`; 0 once expired.
    pub fn ttl_left(&self, now: Instant) -> u32 {
        if self.kind == AnswerKind::Static {
            return self.lifetime;
        }
        self.lifetime.saturating_sub(elapsed_secs(self.born, now))
    }

    /// True while the answer may be served as fresh.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.kind == AnswerKind::Static || elapsed_secs(self.born, now) < self.lifetime
    }

    /// Seconds since the answer first expired (0 while fresh).
    pub fn expired_for(&self, now: Instant) -> u32 {
        elapsed_secs(self.stale_base, now)
    }

    /// A copy to serve stale for the next [`STALE_TTL`] seconds (RFC 8767:
    /// upstreams are not asked again for this name meanwhile); its records
    /// carry TTL 30 and count down from there.
    pub fn restaled(&self, now: Instant) -> CachedAnswer {
        let mut bytes = self.bytes.to_vec();
        for &at in self.ttl_at.iter() {
            let at = at as usize;
            bytes[at..at + 4].copy_from_slice(&STALE_TTL.to_be_bytes());
        }
        CachedAnswer {
            bytes: bytes.into_boxed_slice(),
            qname_len: self.qname_len,
            ttl_at: self.ttl_at.clone(),
            kind: self.kind,
            rcode: self.rcode,
            authentic: false,
            born: now,
            lifetime: STALE_TTL,
            stale_base: self.stale_base,
        }
    }

    /// Makes an upstream answer canonical. `question` is the question ward
    /// asked (from the client's query); the answer must match it.
    pub fn from_upstream(
        response: &[u8],
        question: &[u8],
        policy: &TtlPolicy,
        now: Instant,
    ) -> Result<Accepted, AnswerError> {
        if !wire::same_question(response, question) {
            return Err(AnswerError::Malformed);
        }
        let records = wire::records(response).ok_or(AnswerError::Malformed)?;
        let header_flags = wire::read_u16(response, 2).ok_or(AnswerError::Malformed)?;
        if header_flags & flags::TC != 0 {
            return Err(AnswerError::Truncated);
        }
        let edns = wire::edns_of(response).map_err(|_| AnswerError::Malformed)?;
        let ext = edns.map_or(0, |_| extended_rcode_bits(response, &records));
        let code = (header_flags & flags::RCODE) | (u16::from(ext) << 4);
        let answers = records.iter().filter(|r| r.section == 0).count();
        let (kind, lifetime) = match code {
            c if c == rcode::NOERROR as u16 && answers > 0 => {
                (AnswerKind::Positive, positive_lifetime(&records, policy))
            }
            c if c == rcode::NOERROR as u16 || c == rcode::NXDOMAIN as u16 => (
                AnswerKind::Negative,
                negative_lifetime(response, &records, policy),
            ),
            other => return Err(AnswerError::Rcode(other)),
        };
        let answer = canonical(
            response,
            question.len() - 4,
            &records,
            header_flags,
            kind,
            now,
            policy,
            lifetime,
        );
        Ok(Accepted {
            cacheable: lifetime.is_some_and(|l| l > 0),
            answer,
        })
    }

    /// SERVFAIL for a question, kept `servfail_ttl` seconds.
    pub fn servfail(query: &Query<'_>, policy: &TtlPolicy, now: Instant) -> CachedAnswer {
        let mut out = Vec::new();
        wire::write_empty_response(query, rcode::SERVFAIL as u16, false, &mut out);
        // Keep header and question only; OPT is added per client.
        out.truncate(HEADER_LEN + query.qname.len() + 4);
        out[10..12].copy_from_slice(&0u16.to_be_bytes());
        out[HEADER_LEN..HEADER_LEN + query.qname.len()].make_ascii_lowercase();
        CachedAnswer {
            bytes: out.into_boxed_slice(),
            qname_len: query.qname.len(),
            ttl_at: Box::new([]),
            kind: AnswerKind::ServFail,
            rcode: rcode::SERVFAIL,
            authentic: false,
            born: now,
            lifetime: policy.servfail_ttl,
            stale_base: now + std::time::Duration::from_secs(policy.servfail_ttl.into()),
        }
    }

    /// A static answer from a complete response built elsewhere (no OPT).
    pub fn from_static(response: &[u8]) -> Option<CachedAnswer> {
        let records = wire::records(response)?;
        let qname_len = wire::uncompressed_name_end(response, HEADER_LEN)? - HEADER_LEN;
        let mut bytes = response.to_vec();
        bytes[0..2].copy_from_slice(&[0, 0]);
        bytes[HEADER_LEN..HEADER_LEN + qname_len].make_ascii_lowercase();
        let flags = wire::read_u16(response, 2)?;
        Some(CachedAnswer {
            bytes: bytes.into_boxed_slice(),
            qname_len,
            ttl_at: records.iter().map(|r| r.ttl_at as u16).collect(),
            kind: AnswerKind::Static,
            rcode: (flags & flags::RCODE) as u8,
            authentic: false,
            born: Instant::now(),
            lifetime: u32::MAX,
            stale_base: Instant::now(),
        })
    }

    /// Writes the answer for `query` into `out`: its id, RD/CD echoed, its
    /// question case, TTLs counted down (or [`STALE_TTL`] when `stale`), an
    /// OPT record when it sent one. Past `limit` bytes a TC=1 reply is
    /// written instead. Returns true when the full answer fit.
    pub fn write(
        &self,
        query: &Query<'_>,
        now: Instant,
        stale: bool,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        out.extend_from_slice(&self.bytes);
        out[0..2].copy_from_slice(&query.id.to_be_bytes());
        let mut response_flags = wire::response_flags(query.flags, self.rcode);
        if self.authentic && (query.flags & flags::AD != 0 || query.dnssec_ok()) {
            response_flags |= flags::AD;
        }
        if self.kind == AnswerKind::Static {
            response_flags |= flags::AA;
        }
        out[2..4].copy_from_slice(&response_flags.to_be_bytes());
        // The whole question is the asker's: its case, and (for a static
        // name's shared answer) its type.
        out[HEADER_LEN..HEADER_LEN + self.qname_len + 4].copy_from_slice(query.question());
        self.write_ttls(now, stale, out);
        if query.edns.is_some() {
            let additional = wire::read_u16(out, 10).unwrap_or(0) + 1;
            out[10..12].copy_from_slice(&additional.to_be_bytes());
            wire::push_opt(out, query.dnssec_ok(), 0);
        }
        if out.len() > limit {
            wire::write_empty_response(query, u16::from(self.rcode), true, out);
            return false;
        }
        true
    }

    fn write_ttls(&self, now: Instant, stale: bool, out: &mut [u8]) {
        if self.kind == AnswerKind::Static {
            return;
        }
        let elapsed = elapsed_secs(self.born, now);
        for &at in self.ttl_at.iter() {
            let at = at as usize;
            let stored = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
            let ttl = if stale {
                STALE_TTL.min(stored.max(1))
            } else {
                stored.saturating_sub(elapsed)
            };
            out[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
        }
    }
}

fn elapsed_secs(born: Instant, now: Instant) -> u32 {
    u32::try_from(now.saturating_duration_since(born).as_secs()).unwrap_or(u32::MAX)
}

/// The high eight bits of a 12-bit rcode, from the OPT record's TTL.
fn extended_rcode_bits(response: &[u8], records: &[RecordInfo]) -> u8 {
    records
        .iter()
        .find(|r| r.rtype == wire::TYPE_OPT)
        .map_or(0, |r| response[r.ttl_at])
}

fn clamp(ttl: u32, policy: &TtlPolicy) -> u32 {
    ttl.clamp(policy.min_ttl, policy.max_ttl.max(policy.min_ttl))
}

/// The lifetime of a positive answer: its shortest clamped TTL in the answer
/// and authority sections.
fn positive_lifetime(records: &[RecordInfo], policy: &TtlPolicy) -> Option<u32> {
    records
        .iter()
        .filter(|r| r.section < 2 && r.rtype != wire::TYPE_OPT)
        .map(|r| clamp(r.ttl, policy))
        .min()
}

/// The negative TTL of RFC 2308: min(SOA TTL, SOA MINIMUM), capped. None
/// without an SOA: such an answer is passed on but not cached.
fn negative_lifetime(response: &[u8], records: &[RecordInfo], policy: &TtlPolicy) -> Option<u32> {
    let soa = records
        .iter()
        .find(|r| r.section == 1 && r.rtype == wire::TYPE_SOA)?;
    // Two names (at least a byte each) and five 32-bit numbers.
    if soa.rdata_len < 22 {
        return None;
    }
    let minimum = wire::read_u32(response, soa.rdata_at + soa.rdata_len - 4)?;
    Some(soa.ttl.min(minimum).min(policy.negative_max_ttl))
}

#[allow(clippy::too_many_arguments)]
fn canonical(
    response: &[u8],
    qname_len: usize,
    records: &[RecordInfo],
    header_flags: u16,
    kind: AnswerKind,
    now: Instant,
    policy: &TtlPolicy,
    lifetime: Option<u32>,
) -> CachedAnswer {
    let question_end = HEADER_LEN + qname_len + 4;
    let mut bytes = Vec::with_capacity(response.len());
    bytes.extend_from_slice(&response[..question_end]);
    bytes[0..2].copy_from_slice(&[0, 0]);
    bytes[HEADER_LEN..HEADER_LEN + qname_len].make_ascii_lowercase();
    let mut ttl_at = Vec::with_capacity(records.len());
    let mut counts = [0u16; 3];
    for record in records.iter().filter(|r| r.rtype != wire::TYPE_OPT) {
        let at = bytes.len() + (record.ttl_at - record.start);
        bytes.extend_from_slice(&response[record.start..record.end]);
        let ttl = match (kind, record.rtype) {
            (AnswerKind::Negative, wire::TYPE_SOA) => lifetime.unwrap_or(0),
            (AnswerKind::Negative, _) => record.ttl.min(policy.negative_max_ttl),
            _ => clamp(record.ttl, policy),
        };
        bytes[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
        if let Ok(at) = u16::try_from(at) {
            ttl_at.push(at);
        }
        counts[record.section as usize] += 1;
    }
    for (i, count) in counts.iter().enumerate() {
        bytes[6 + 2 * i..8 + 2 * i].copy_from_slice(&count.to_be_bytes());
    }
    CachedAnswer {
        bytes: bytes.into_boxed_slice(),
        qname_len,
        ttl_at: ttl_at.into_boxed_slice(),
        kind,
        rcode: (header_flags & flags::RCODE) as u8,
        authentic: header_flags & flags::AD != 0,
        born: now,
        lifetime: lifetime.unwrap_or(0),
        stale_base: now + std::time::Duration::from_secs(lifetime.unwrap_or(0).into()),
    }
}

#[cfg(test)]
pub mod tests {
    use std::time::Duration;

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;
    use crate::dns::wire::parse_query;
    use crate::dns::wire::tests::query_bytes;

    /// An upstream answer to `name` A with the given records, for tests.
    pub fn upstream_answer(
        name: &str,
        code: ResponseCode,
        ttls: &[u32],
        soa: Option<(u32, u32)>,
    ) -> Vec<u8> {
        let mut msg = Message::new(999, MessageType::Response, OpCode::Query);
        msg.metadata.response_code = code;
        msg.metadata.recursion_available = true;
        let qname = Name::from_ascii(name).unwrap();
        msg.add_query(HQuery::query(qname.clone(), RecordType::A));
        for (i, ttl) in ttls.iter().enumerate() {
            msg.add_answer(Record::from_rdata(
                qname.clone(),
                *ttl,
                RData::A(A::new(10, 0, 0, i as u8)),
            ));
        }
        if let Some((ttl, minimum)) = soa {
            let zone = Name::from_ascii("test.").unwrap();
            let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, minimum);
            msg.add_authority(Record::from_rdata(zone, ttl, RData::SOA(soa)));
        }
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        msg.set_edns(edns);
        msg.to_vec().unwrap()
    }

    fn ttls(bytes: &[u8]) -> Vec<u32> {
        Message::from_vec(bytes)
            .unwrap()
            .all_sections()
            .map(|r| r.ttl)
            .collect()
    }

    #[test]
    fn positive_answers_are_clamped_and_count_down() {
        let query = query_bytes("Host.Test.", 1, Some((1232, false)));
        let q = parse_query(&query).unwrap();
        let response = upstream_answer(
            "host.test.",
            ResponseCode::NoError,
            &[5, 300, 999_999],
            None,
        );
        let policy = TtlPolicy {
            min_ttl: 60,
            max_ttl: 3600,
            ..TtlPolicy::default()
        };
        let t0 = Instant::now();
        let accepted = CachedAnswer::from_upstream(&response, q.question(), &policy, t0).unwrap();
        assert!(accepted.cacheable);
        let answer = accepted.answer;
        assert_eq!(answer.kind(), AnswerKind::Positive);
        assert_eq!(answer.ttl_left(t0), 60);

        let mut out = Vec::new();
        assert!(answer.write(&q, t0 + Duration::from_secs(10), false, 1232, &mut out));
        let msg = Message::from_vec(&out).unwrap();
        assert_eq!(msg.metadata.id, 0x1234);
        assert_eq!(msg.queries[0].name().to_ascii(), "Host.Test.");
        assert_eq!(msg.answers.len(), 3);
        assert!(msg.edns.is_some(), "the client sent EDNS");
        assert_eq!(ttls(&out), vec![50, 290, 3590]);

        assert!(answer.write(&q, t0 + Duration::from_secs(100), true, 1232, &mut out));
        assert_eq!(ttls(&out), vec![STALE_TTL, STALE_TTL, STALE_TTL]);
        assert!(!answer.is_fresh(t0 + Duration::from_secs(60)));
        assert_eq!(answer.expired_for(t0 + Duration::from_secs(100)), 40);

        let t1 = t0 + Duration::from_secs(100);
        let again = answer.restaled(t1);
        assert!(again.is_fresh(t1 + Duration::from_secs(29)));
        assert!(!again.is_fresh(t1 + Duration::from_secs(30)));
        assert_eq!(
            again.expired_for(t1 + Duration::from_secs(10)),
            50,
            "the stale window keeps its start"
        );
        again.write(&q, t1 + Duration::from_secs(10), false, 1232, &mut out);
        assert_eq!(ttls(&out), vec![20, 20, 20]);
    }

    #[test]
    fn negative_answers_live_for_the_soa_minimum() {
        let query = query_bytes("nx.test.", 1, None);
        let q = parse_query(&query).unwrap();
        let response = upstream_answer("nx.test.", ResponseCode::NXDomain, &[], Some((3600, 120)));
        let t0 = Instant::now();
        let accepted =
            CachedAnswer::from_upstream(&response, q.question(), &TtlPolicy::default(), t0)
                .unwrap();
        assert!(accepted.cacheable);
        assert_eq!(accepted.answer.kind(), AnswerKind::Negative);
        assert_eq!(accepted.answer.ttl_left(t0), 120);
        let mut out = Vec::new();
        accepted
            .answer
            .write(&q, t0 + Duration::from_secs(20), false, 512, &mut out);
        let msg = Message::from_vec(&out).unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
        assert!(msg.edns.is_none(), "no OPT for a client without EDNS");
        assert_eq!(ttls(&out), vec![100]);

        let nodata = upstream_answer("nx.test.", ResponseCode::NoError, &[], None);
        let accepted =
            CachedAnswer::from_upstream(&nodata, q.question(), &TtlPolicy::default(), t0).unwrap();
        assert!(
            !accepted.cacheable,
            "NODATA without SOA is passed on, not cached"
        );
    }

    #[test]
    fn failures_and_mismatches_are_rejected() {
        let query = query_bytes("a.test.", 1, None);
        let q = parse_query(&query).unwrap();
        let policy = TtlPolicy::default();
        let now = Instant::now();
        let servfail = upstream_answer("a.test.", ResponseCode::ServFail, &[], None);
        assert_eq!(
            CachedAnswer::from_upstream(&servfail, q.question(), &policy, now).unwrap_err(),
            AnswerError::Rcode(2)
        );
        let other = upstream_answer("b.test.", ResponseCode::NoError, &[60], None);
        assert_eq!(
            CachedAnswer::from_upstream(&other, q.question(), &policy, now).unwrap_err(),
            AnswerError::Malformed
        );
        let mut truncated = upstream_answer("a.test.", ResponseCode::NoError, &[60], None);
        truncated[2] |= 0x02;
        assert_eq!(
            CachedAnswer::from_upstream(&truncated, q.question(), &policy, now).unwrap_err(),
            AnswerError::Truncated
        );
        let cut = upstream_answer("a.test.", ResponseCode::NoError, &[60], None);
        assert_eq!(
            CachedAnswer::from_upstream(&cut[..cut.len() - 15], q.question(), &policy, now)
                .unwrap_err(),
            AnswerError::Malformed
        );
    }

    #[test]
    fn answers_past_the_client_limit_become_tc_replies() {
        let query = query_bytes("big.test.", 1, None);
        let q = parse_query(&query).unwrap();
        let many: Vec<u32> = vec![300; 40];
        let response = upstream_answer("big.test.", ResponseCode::NoError, &many, None);
        let now = Instant::now();
        let answer =
            CachedAnswer::from_upstream(&response, q.question(), &TtlPolicy::default(), now)
                .unwrap()
                .answer;
        let mut out = Vec::new();
        assert!(!answer.write(&q, now, false, q.udp_limit(), &mut out));
        let msg = Message::from_vec(&out).unwrap();
        assert!(msg.metadata.truncation);
        assert!(msg.answers.is_empty());
        assert!(
            answer.write(&q, now, false, 65535, &mut out),
            "TCP takes it whole"
        );
        assert_eq!(Message::from_vec(&out).unwrap().answers.len(), 40);
    }
}
