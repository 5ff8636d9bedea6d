//! DNS wire format on the query path, by hand: parse a query without
//! allocating, walk the records of a response, and write the small messages
//! ward makes itself (errors, truncated replies, upstream queries, OPT,
//! the question of a query ward asks on its own).
//!
//! hickory-proto is used where a full model of a message pays off (static
//! records, validating upstream answers); a cache hit touches only this.

use std::fmt;

/// The longest name on the wire, root label included (RFC 1035 3.1).
const MAX_NAME: usize = 255;
/// The longest label (RFC 1035 3.1).
const MAX_LABEL: usize = 63;

/// The fixed header length.
pub const HEADER_LEN: usize = 12;
/// The UDP payload size ward advertises and answers within (DNS flag day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;
/// The answer size limit for clients without EDNS.
pub const CLASSIC_UDP_LIMIT: usize = 512;
/// RR type of the EDNS OPT pseudo-record.
pub const TYPE_OPT: u16 = 41;
pub const TYPE_NS: u16 = 2;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_CNAME: u16 = 5;
pub const CLASS_IN: u16 = 1;
/// The question `. IN NS`, which every DNS server answers: the probes'.
pub const ROOT_NS: [u8; 5] = [0, 0, TYPE_NS as u8, 0, CLASS_IN as u8];

pub mod flags {
    pub const QR: u16 = 0x8000;
    pub const OPCODE: u16 = 0x7800;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
    pub const AD: u16 = 0x0020;
    pub const CD: u16 = 0x0010;
    pub const RCODE: u16 = 0x000f;
}

/// Response codes ward produces or acts on.
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    /// Extended (12-bit) code, carried partly in OPT.
    pub const BADVERS: u16 = 16;

    pub fn name(code: u16) -> &'static str {
        match code {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            16 => "BADVERS",
            _ => "OTHER",
        }
    }
}

/// Why a packet is not a query ward can answer normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// Shorter than a header: nothing to answer to; dropped.
    Short,
    /// QR=1: a response sent to us; dropped (never answered, to avoid loops).
    IsResponse,
    /// Not a standard query (opcode): NOTIMP.
    NotImplemented,
    /// Readable header, unreadable rest: FORMERR.
    Malformed,
    /// EDNS version ward does not speak: BADVERS.
    BadVersion,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryError::Short => "short packet",
            QueryError::IsResponse => "response (QR=1)",
            QueryError::NotImplemented => "opcode not implemented",
            QueryError::Malformed => "malformed query",
            QueryError::BadVersion => "unsupported EDNS version",
        })
    }
}

/// EDNS facts of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub dnssec_ok: bool,
    pub version: u8,
}

/// A parsed query, borrowing the packet.
#[derive(Clone, Debug)]
pub struct Query<'a> {
    pub packet: &'a [u8],
    pub id: u16,
    pub flags: u16,
    /// The question name in wire format (labels, ending with the root label).
    pub qname: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl Query<'_> {
    pub fn recursion_desired(&self) -> bool {
        self.flags & flags::RD != 0
    }
    pub fn checking_disabled(&self) -> bool {
        self.flags & flags::CD != 0
    }
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }
    /// The question section's bytes (name, type, class).
    pub fn question(&self) -> &[u8] {
        &self.packet[HEADER_LEN..HEADER_LEN + self.qname.len() + 4]
    }
    /// The largest UDP answer this client takes.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => (e.payload as usize).clamp(CLASSIC_UDP_LIMIT, EDNS_PAYLOAD as usize),
            None => CLASSIC_UDP_LIMIT,
        }
    }
    /// The question name as text, for logs (`www.example.com.`).
    pub fn qname_text(&self) -> String {
        name_to_text(self.qname)
    }
}

pub fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

pub fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The end of an uncompressed name starting at `at`; None when malformed.
pub fn uncompressed_name_end(buf: &[u8], at: usize) -> Option<usize> {
    let mut pos = at;
    loop {
        let len = *buf.get(pos)? as usize;
        if len == 0 {
            let end = pos + 1;
            return (end - at <= 255).then_some(end);
        }
        if len > 63 {
            return None;
        }
        pos += 1 + len;
        if pos - at > 255 {
            return None;
        }
    }
}

/// The end of a possibly compressed name starting at `at` (a pointer ends it).
pub fn name_end(buf: &[u8], at: usize) -> Option<usize> {
    let mut pos = at;
    loop {
        let len = *buf.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            1..=63 => {
                pos += 1 + len as usize;
                if pos - at > 255 {
                    return None;
                }
            }
            0xc0..=0xff => {
                buf.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
    }
}

/// Text form of a wire name, for logs and routing.
pub fn name_to_text(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pos = 0;
    while let Some(&len) = name.get(pos) {
        if len == 0 || len > 63 {
            break;
        }
        let label = name
            .get(pos + 1..pos + 1 + len as usize)
            .unwrap_or_default();
        for &b in label {
            match b {
                b'.' | b'\\' => {
                    out.push('\\');
                    out.push(b as char);
                }
                0x21..=0x7e => out.push(b as char),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('.');
        pos += 1 + len as usize;
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// One resource record found by [`records`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// 0 answer, 1 authority, 2 additional.
    pub section: u8,
    pub start: usize,
    pub rtype: u16,
    pub class: u16,
    pub ttl_at: usize,
    pub ttl: u32,
    pub rdata_at: usize,
    pub rdata_len: usize,
    pub end: usize,
}

/// The records of a message after its question section; None when malformed.
pub fn records(buf: &[u8]) -> Option<Vec<RecordInfo>> {
    let qdcount = read_u16(buf, 4)?;
    let counts = [read_u16(buf, 6)?, read_u16(buf, 8)?, read_u16(buf, 10)?];
    let mut pos = HEADER_LEN;
    for _ in 0..qdcount {
        pos = name_end(buf, pos)? + 4;
    }
    if pos > buf.len() {
        return None;
    }
    let total: usize = counts.iter().map(|&c| c as usize).sum();
    // Counts come from the packet: never reserve more than it can hold
    // (a record takes at least 11 bytes).
    let mut out = Vec::with_capacity(total.min(buf.len() / 11));
    for (section, &count) in counts.iter().enumerate() {
        for _ in 0..count {
            let start = pos;
            let after_name = name_end(buf, pos)?;
            let rtype = read_u16(buf, after_name)?;
            let class = read_u16(buf, after_name + 2)?;
            let ttl = read_u32(buf, after_name + 4)?;
            let rdata_len = read_u16(buf, after_name + 8)? as usize;
            let rdata_at = after_name + 10;
            let end = rdata_at + rdata_len;
            if end > buf.len() {
                return None;
            }
            out.push(RecordInfo {
                section: section as u8,
                start,
                rtype,
                class,
                ttl_at: after_name + 4,
                ttl,
                rdata_at,
                rdata_len,
                end,
            });
            pos = end;
        }
    }
    Some(out)
}

/// Parses a query. Errors say how to answer (see [`QueryError`]).
pub fn parse_query(packet: &[u8]) -> Result<Query<'_>, QueryError> {
    if packet.len() < HEADER_LEN {
        return Err(QueryError::Short);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & flags::QR != 0 {
        return Err(QueryError::IsResponse);
    }
    if flags & flags::OPCODE != 0 {
        return Err(QueryError::NotImplemented);
    }
    if read_u16(packet, 4) != Some(1) {
        return Err(QueryError::Malformed);
    }
    let qname_end = uncompressed_name_end(packet, HEADER_LEN).ok_or(QueryError::Malformed)?;
    let qtype = read_u16(packet, qname_end).ok_or(QueryError::Malformed)?;
    let qclass = read_u16(packet, qname_end + 2).ok_or(QueryError::Malformed)?;
    let edns = find_edns(packet)?;
    if edns.is_some_and(|e| e.version != 0) {
        return Err(QueryError::BadVersion);
    }
    Ok(Query {
        packet,
        id,
        flags,
        qname: &packet[HEADER_LEN..qname_end],
        qtype,
        qclass,
        edns,
    })
}

/// The EDNS facts of a message: at most one OPT, in the additional section,
/// owned by the root name.
fn find_edns(packet: &[u8]) -> Result<Option<Edns>, QueryError> {
    let Some(counts) = packet.get(6..HEADER_LEN) else {
        return Err(QueryError::Short);
    };
    if counts.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let records = records(packet).ok_or(QueryError::Malformed)?;
    let mut opts = records.iter().filter(|r| r.rtype == TYPE_OPT);
    let Some(opt) = opts.next() else {
        return Ok(None);
    };
    if opts.next().is_some() || opt.section != 2 || packet[opt.start] != 0 {
        return Err(QueryError::Malformed);
    }
    Ok(Some(Edns {
        payload: opt.class,
        dnssec_ok: opt.ttl & 0x8000 != 0,
        version: (opt.ttl >> 16) as u8,
    }))
}

/// The EDNS facts of any message, for answers from upstreams: None without
/// OPT, an error when OPT is misplaced or repeated.
pub fn edns_of(packet: &[u8]) -> Result<Option<Edns>, QueryError> {
    find_edns(packet)
}

/// Appends an OPT record: our payload size, DO echoed, extended rcode bits.
pub fn push_opt(out: &mut Vec<u8>, dnssec_ok: bool, extended_rcode: u8) {
    out.push(0); // root name
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
    out.push(extended_rcode);
    out.push(0); // version
    out.extend_from_slice(&(if dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // no options
}

fn push_header(out: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
}

/// Response flags for a query: QR, RA, the opcode, RD and CD echoed.
pub fn response_flags(query_flags: u16, rcode: u8) -> u16 {
    flags::QR
        | flags::RA
        | (query_flags & (flags::OPCODE | flags::RD | flags::CD))
        | (rcode as u16 & flags::RCODE)
}

/// An answer without records: an error, or a TC=1 reply.
pub fn write_empty_response(query: &Query<'_>, rcode: u16, truncated: bool, out: &mut Vec<u8>) {
    out.clear();
    let mut flags = response_flags(query.flags, (rcode & 0xf) as u8);
    if truncated {
        flags |= flags::TC;
    }
    let additional = u16::from(query.edns.is_some());
    push_header(out, query.id, flags, [1, 0, 0, additional]);
    out.extend_from_slice(query.question());
    if query.edns.is_some() {
        push_opt(out, query.dnssec_ok(), (rcode >> 4) as u8);
    }
}

/// FORMERR, NOTIMP or BADVERS for a packet whose question may be unreadable:
/// the header is echoed with the error and no question.
pub fn write_header_error(packet: &[u8], rcode: u16, out: &mut Vec<u8>) {
    out.clear();
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let query_flags = u16::from_be_bytes([packet[2], packet[3]]);
    let flags = response_flags(query_flags, (rcode & 0xf) as u8);
    let with_opt = rcode > 15;
    push_header(out, id, flags, [0, 0, 0, u16::from(with_opt)]);
    if with_opt {
        push_opt(out, false, (rcode >> 4) as u8);
    }
}

/// The query ward sends upstream for a client's question: a fresh id, RD,
/// CD as the client asked, the question with the name lowercased, EDNS with
/// our payload size and DO as the client asked.
pub fn write_upstream_query(query: &Query<'_>, id: u16, out: &mut Vec<u8>) {
    let question = lowercase_question(query);
    write_question_query(
        &question,
        id,
        query.checking_disabled(),
        query.dnssec_ok(),
        out,
    );
}

/// A query for `question` (name, type, class as on the wire) with this id,
/// RD set, CD and DO as given, and EDNS with our payload size.
pub fn write_question_query(
    question: &[u8],
    id: u16,
    checking_disabled: bool,
    dnssec_ok: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    let flags = flags::RD | if checking_disabled { flags::CD } else { 0 };
    push_header(out, id, flags, [1, 0, 0, 1]);
    out.extend_from_slice(question);
    push_opt(out, dnssec_ok, 0);
}

/// Why a name cannot be written on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("an empty label (a leading dot or two dots in a row)")]
    EmptyLabel,
    #[error("a label longer than {MAX_LABEL} bytes")]
    LongLabel,
    #[error("a name longer than {MAX_NAME} bytes on the wire")]
    LongName,
}

/// A question as on the wire (what [`write_question_query`] asks): the
/// labels of `name` as given, then `qtype` and `qclass`. `name` is text with
/// dots between labels, the trailing dot optional, `.` alone the root; no
/// escapes (ward asks its own questions with it, never a client's).
pub fn question(name: &str, qtype: u16, qclass: u16) -> Result<Vec<u8>, NameError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(name.len() + 6);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel);
            }
            if label.len() > MAX_LABEL {
                return Err(NameError::LongLabel);
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() > MAX_NAME {
        return Err(NameError::LongName);
    }
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
    Ok(out)
}

/// The question of a query with the name lowercased: what upstreams are asked.
pub fn lowercase_question(query: &Query<'_>) -> Vec<u8> {
    let mut question = query.question().to_vec();
    question[..query.qname.len()].make_ascii_lowercase();
    question
}

/// True when `answer` answers `question`: the same name ignoring case, the
/// same type and class exactly. Checked before an upstream answer is accepted.
pub fn same_question(answer: &[u8], question: &[u8]) -> bool {
    if read_u16(answer, 4) != Some(1) || question.len() < 5 {
        return false;
    }
    let Some(asked) = answer.get(HEADER_LEN..HEADER_LEN + question.len()) else {
        return false;
    };
    let name_len = question.len() - 4;
    asked[..name_len].eq_ignore_ascii_case(&question[..name_len])
        && asked[name_len..] == question[name_len..]
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A query for `name`/`qtype` built with hickory, for tests.
    pub fn query_bytes(name: &str, qtype: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
        use hickory_proto::op::{Edns as HEdns, Message, Query as HQuery};
        use hickory_proto::rr::{Name, RecordType};
        let mut msg = Message::query();
        msg.metadata.id = 0x1234;
        msg.metadata.recursion_desired = true;
        msg.add_query(HQuery::query(
            Name::from_ascii(name).unwrap(),
            RecordType::from(qtype),
        ));
        if let Some((payload, dnssec_ok)) = edns {
            let mut e = HEdns::new();
            e.set_max_payload(payload);
            e.set_dnssec_ok(dnssec_ok);
            msg.set_edns(e);
        }
        msg.to_vec().unwrap()
    }

    #[test]
    fn parses_a_plain_query() {
        let bytes = query_bytes("WWW.Example.com.", 1, None);
        let q = parse_query(&bytes).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(q.recursion_desired());
        assert_eq!(q.qname_text(), "WWW.Example.com.");
        assert_eq!((q.qtype, q.qclass), (1, 1));
        assert_eq!(q.edns, None);
        assert_eq!(q.udp_limit(), 512);
    }

    #[test]
    fn parses_edns_payload_and_do() {
        let bytes = query_bytes("a.test.", 28, Some((4096, true)));
        let q = parse_query(&bytes).unwrap();
        assert_eq!(
            q.edns,
            Some(Edns {
                payload: 4096,
                dnssec_ok: true,
                version: 0
            })
        );
        assert_eq!(q.udp_limit(), EDNS_PAYLOAD as usize);
        let small = query_bytes("a.test.", 28, Some((100, false)));
        assert_eq!(parse_query(&small).unwrap().udp_limit(), 512);
    }

    #[test]
    fn rejects_what_is_not_a_query() {
        assert_eq!(parse_query(&[0; 11]).unwrap_err(), QueryError::Short);
        let mut response = query_bytes("a.test.", 1, None);
        response[2] |= 0x80;
        assert_eq!(parse_query(&response).unwrap_err(), QueryError::IsResponse);
        let mut notify = query_bytes("a.test.", 1, None);
        notify[2] |= 4 << 3;
        assert_eq!(
            parse_query(&notify).unwrap_err(),
            QueryError::NotImplemented
        );
        let mut two_questions = query_bytes("a.test.", 1, None);
        two_questions[5] = 2;
        assert_eq!(
            parse_query(&two_questions).unwrap_err(),
            QueryError::Malformed
        );
        let truncated = &query_bytes("a.test.", 1, None)[..15];
        assert_eq!(parse_query(truncated).unwrap_err(), QueryError::Malformed);
        let mut pointer = query_bytes("a.test.", 1, None);
        pointer[12] = 0xc0;
        assert_eq!(parse_query(&pointer).unwrap_err(), QueryError::Malformed);
        let mut version = query_bytes("a.test.", 1, Some((1232, false)));
        let at = version.len() - 5; // OPT TTL: ext rcode, version, flags
        version[at] = 1;
        assert_eq!(parse_query(&version).unwrap_err(), QueryError::BadVersion);
    }

    #[test]
    fn error_responses_echo_id_question_and_edns() {
        let bytes = query_bytes("a.test.", 1, Some((1232, true)));
        let q = parse_query(&bytes).unwrap();
        let mut out = Vec::new();
        write_empty_response(&q, rcode::REFUSED as u16, false, &mut out);
        let msg = hickory_proto::op::Message::from_vec(&out).unwrap();
        assert_eq!(msg.metadata.id, 0x1234);
        assert_eq!(
            msg.metadata.response_code,
            hickory_proto::op::ResponseCode::Refused
        );
        assert!(msg.metadata.recursion_desired && msg.metadata.recursion_available);
        assert_eq!(msg.queries[0].name().to_ascii(), "a.test.");
        assert!(msg.edns.as_ref().unwrap().flags().dnssec_ok);

        write_empty_response(&q, rcode::NOERROR as u16, true, &mut out);
        assert!(
            hickory_proto::op::Message::from_vec(&out)
                .unwrap()
                .metadata
                .truncation
        );

        write_header_error(&bytes, rcode::BADVERS, &mut out);
        let msg = hickory_proto::op::Message::from_vec(&out).unwrap();
        assert_eq!(u16::from(msg.metadata.response_code), rcode::BADVERS);
        assert!(msg.queries.is_empty());
    }

    #[test]
    fn upstream_query_lowercases_and_carries_edns() {
        let bytes = query_bytes("MiXeD.Test.", 1, Some((4096, true)));
        let q = parse_query(&bytes).unwrap();
        let mut out = Vec::new();
        write_upstream_query(&q, 777, &mut out);
        let up = parse_query(&out).unwrap();
        assert_eq!(up.id, 777);
        assert_eq!(up.qname_text(), "mixed.test.");
        assert_eq!(
            up.edns,
            Some(Edns {
                payload: EDNS_PAYLOAD,
                dnssec_ok: true,
                version: 0
            })
        );
        assert!(same_question(&out, q.question()));
    }

    #[test]
    fn answers_must_match_type_and_class_exactly() {
        // Type 65 (HTTPS) is 0x0041, 'A'; type 97 is 0x0061, 'a'. Ignoring
        // case over the whole question once made one answer the other.
        let https = query_bytes("Name.test.", 65, None);
        let q = parse_query(&https).unwrap();
        let mut out = Vec::new();
        write_upstream_query(&q, 1, &mut out);
        assert!(same_question(&out, q.question()));
        let other = query_bytes("name.test.", 97, None);
        assert!(same_question(
            &query_bytes("NAME.TEST.", 65, None),
            q.question()
        ));
        assert!(!same_question(&other, q.question()));
        let mut two = out.clone();
        two[5] = 2;
        assert!(!same_question(&two, q.question()));
        let cut = HEADER_LEN + q.question().len() - 1;
        assert!(!same_question(&out[..cut], q.question()));
    }

    #[test]
    fn questions_encode_as_hickory_encodes_them() {
        let long_label = "a".repeat(MAX_LABEL);
        let longest = format!("{0}.{0}.{0}.{1}.", long_label, "b".repeat(61));
        for (name, qtype) in [
            (".", TYPE_NS),
            ("www.example.com.", 1),
            ("MiXeD.Test.", 28),
            (&format!("{long_label}.test."), 16),
            (&longest, 1),
        ] {
            let ours = question(name, qtype, CLASS_IN).unwrap();
            let hickory = query_bytes(name, qtype, None);
            assert_eq!(ours, hickory[HEADER_LEN..], "{name}");
            let mut query = Vec::new();
            write_question_query(&ours, 9, false, false, &mut query);
            let msg = hickory_proto::op::Message::from_vec(&query).unwrap();
            assert_eq!(msg.queries[0].name().to_ascii(), name);
            assert_eq!(u16::from(msg.queries[0].query_type()), qtype);
        }
        assert_eq!(question("a.test", 1, 1), question("a.test.", 1, 1));
        assert_eq!(question(".", TYPE_NS, CLASS_IN).unwrap(), ROOT_NS);
    }

    #[test]
    fn names_hickory_refuses_are_refused() {
        let label = |n: usize| "c".repeat(n);
        let too_long = format!("{0}.{0}.{0}.{0}.", label(MAX_LABEL));
        for (name, error) in [
            ("a..test.", NameError::EmptyLabel),
            (".a.test.", NameError::EmptyLabel),
            (&label(MAX_LABEL + 1), NameError::LongLabel),
            (&too_long, NameError::LongName),
        ] {
            assert_eq!(question(name, 1, CLASS_IN), Err(error), "{name}");
            assert!(hickory_proto::rr::Name::from_ascii(name).is_err(), "{name}");
        }
    }

    #[test]
    fn record_counts_cannot_reserve_more_than_the_packet() {
        let mut packet = query_bytes("a.test.", 1, None);
        packet[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        packet[8..10].copy_from_slice(&u16::MAX.to_be_bytes());
        packet[10..12].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(records(&packet).is_none());
    }

    #[test]
    fn names_render_with_escapes() {
        assert_eq!(name_to_text(&[0]), ".");
        assert_eq!(name_to_text(b"\x03a.b\x01\x00\x00"), "a\\.b.\\000.");
    }
}
