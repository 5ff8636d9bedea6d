//! Static records: a hosts file and inline records, answered without an
//! upstream and with AA set. Answers are built once, at start, with
//! hickory-proto and kept as bytes like cached answers.
//!
//! A name with records answers every type: the records of that type, its
//! CNAME (followed through other static names), or NODATA.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use super::answer::CachedAnswer;
use super::settings::{StaticData, StaticRecord};
use super::wire::Query;

/// TTL of records read from a hosts file.
pub const HOSTS_TTL: u32 = 300;
/// CNAME chains are followed this deep.
const MAX_CHAIN: usize = 8;

/// Parses hosts-file text into A/AAAA records and their PTR records.
/// Errors carry the 1-based line.
pub fn parse_hosts(text: &str) -> Result<Vec<StaticRecord>, (usize, String)> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(addr) = words.next() else {
            continue;
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| (index + 1, format!("{addr:?} is not an IP address")))?;
        let names: Vec<String> = words
            .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        if names.is_empty() {
            return Err((index + 1, format!("{addr} has no names")));
        }
        for name in &names {
            Name::from_ascii(name).map_err(|e| (index + 1, format!("{name:?}: {e}")))?;
            out.push(StaticRecord {
                name: name.clone(),
                ttl: HOSTS_TTL,
                data: match ip {
                    IpAddr::V4(v4) => StaticData::A(v4),
                    IpAddr::V6(v6) => StaticData::Aaaa(v6),
                },
            });
        }
        out.push(StaticRecord {
            name: reverse_name(ip),
            ttl: HOSTS_TTL,
            data: StaticData::Ptr(names[0].clone()),
        });
    }
    Ok(out)
}

/// `4.3.2.1.in-addr.arpa` / nibbles `.ip6.arpa`, without the trailing dot.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut out = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                out.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            out.push_str("ip6.arpa");
            out
        }
    }
}

fn rtype_of(data: &StaticData) -> RecordType {
    match data {
        StaticData::A(_) => RecordType::A,
        StaticData::Aaaa(_) => RecordType::AAAA,
        StaticData::Cname(_) => RecordType::CNAME,
        StaticData::Ptr(_) => RecordType::PTR,
    }
}

fn record_of(name: &Name, record: &StaticRecord) -> Option<Record> {
    let data = match &record.data {
        StaticData::A(ip) => RData::A(A(*ip)),
        StaticData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        StaticData::Cname(target) => {
            RData::CNAME(CNAME(Name::from_ascii(format!("{target}.")).ok()?))
        }
        StaticData::Ptr(target) => RData::PTR(PTR(Name::from_ascii(format!("{target}.")).ok()?)),
    };
    Some(Record::from_rdata(name.clone(), record.ttl, data))
}

/// The types static records hold; every other type gets the name's shared
/// answer (its CNAME chain, or NODATA).
const HELD_TYPES: [RecordType; 4] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::PTR,
];
/// The type the shared answer is built for; a query's own type replaces it.
const OTHER_TYPE: RecordType = RecordType::TXT;

/// Pre-built answers, found without allocating: by qtype and lowercased
/// wire name for the held types, by name alone for every other type.
#[derive(Default)]
pub struct Statics {
    by_name: HashMap<String, Vec<StaticRecord>>,
    held: HashMap<Box<[u8]>, Arc<CachedAnswer>>,
    other: HashMap<Box<[u8]>, Arc<CachedAnswer>>,
}

/// `qtype` then the lowercased wire name, on the stack.
fn held_key<'b>(qtype: u16, wire_name: &[u8], buf: &'b mut [u8; 2 + 255]) -> Option<&'b [u8]> {
    let len = wire_name.len();
    if len > 255 {
        return None;
    }
    buf[..2].copy_from_slice(&qtype.to_be_bytes());
    buf[2..2 + len].copy_from_slice(wire_name);
    buf[2..2 + len].make_ascii_lowercase();
    Some(&buf[..2 + len])
}

impl Statics {
    pub fn new(records: &[StaticRecord]) -> Self {
        let mut by_name: HashMap<String, Vec<StaticRecord>> = HashMap::new();
        for record in records {
            let entry = by_name.entry(record.name.clone()).or_default();
            if !entry.contains(record) {
                entry.push(record.clone());
            }
        }
        let mut statics = Self {
            by_name,
            ..Self::default()
        };
        statics.build_all();
        statics
    }

    fn build_all(&mut self) {
        let mut held = HashMap::new();
        let mut other = HashMap::new();
        let mut buf = [0u8; 2 + 255];
        for name in self.by_name.keys() {
            let Ok(wire_name) = Name::from_ascii(format!("{name}.")).and_then(|n| n.to_bytes())
            else {
                continue;
            };
            for qtype in HELD_TYPES {
                if let (Some(answer), Some(key)) = (
                    self.build(name, qtype),
                    held_key(u16::from(qtype), &wire_name, &mut buf),
                ) {
                    held.insert(key.into(), Arc::new(answer));
                }
            }
            if let Some(answer) = self.build(name, OTHER_TYPE) {
                let mut key = wire_name.clone();
                key.make_ascii_lowercase();
                other.insert(key.into_boxed_slice(), Arc::new(answer));
            }
        }
        self.held = held;
        self.other = other;
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The answer for a query about a static name; None for other names.
    pub fn lookup(&self, query: &Query<'_>) -> Option<Arc<CachedAnswer>> {
        if self.by_name.is_empty() {
            return None;
        }
        let mut buf = [0u8; 2 + 255];
        let key = held_key(query.qtype, query.qname, &mut buf)?;
        if let Some(answer) = self.held.get(key) {
            return Some(answer.clone());
        }
        self.other.get(&key[2..]).cloned()
    }

    fn build(&self, name: &str, qtype: RecordType) -> Option<CachedAnswer> {
        let qname = Name::from_ascii(format!("{name}.")).ok()?;
        let mut msg = Message::new(0, MessageType::Response, OpCode::Query);
        msg.metadata.authoritative = true;
        msg.metadata.recursion_available = true;
        msg.add_query(HQuery::query(qname.clone(), qtype));
        let mut current = (name.to_string(), qname);
        for _ in 0..MAX_CHAIN {
            let Some(records) = self.by_name.get(&current.0) else {
                break;
            };
            let matching: Vec<&StaticRecord> = records
                .iter()
                .filter(|r| rtype_of(&r.data) == qtype)
                .collect();
            if !matching.is_empty() {
                msg.add_answers(matching.iter().filter_map(|r| record_of(&current.1, r)));
                break;
            }
            let Some(cname) = records
                .iter()
                .find(|r| matches!(r.data, StaticData::Cname(_)))
            else {
                break;
            };
            msg.add_answers(record_of(&current.1, cname));
            let StaticData::Cname(target) = &cname.data else {
                break;
            };
            let target_name = Name::from_ascii(format!("{target}.")).ok()?;
            current = (target.clone(), target_name);
        }
        CachedAnswer::from_static(&msg.to_vec().ok()?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use hickory_proto::op::ResponseCode;

    use super::*;
    use crate::dns::wire::parse_query;
    use crate::dns::wire::tests::query_bytes;

    fn ask(statics: &Statics, name: &str, qtype: u16) -> Option<Message> {
        let bytes = query_bytes(name, qtype, None);
        let q = parse_query(&bytes).unwrap();
        let answer = statics.lookup(&q)?;
        let mut out = Vec::new();
        answer.write(&q, Instant::now(), false, 65535, &mut out);
        Some(Message::from_vec(&out).unwrap())
    }

    #[test]
    fn hosts_files_give_addresses_and_reverse_names() {
        let records =
            parse_hosts("# comment\n192.168.1.1 Router.lan router\n\n::1 localhost6 # v6\n")
                .unwrap();
        let statics = Statics::new(&records);
        let msg = ask(&statics, "ROUTER.lan.", 1).unwrap();
        assert!(msg.metadata.authoritative);
        assert_eq!(msg.queries[0].name().to_ascii(), "ROUTER.lan.");
        assert_eq!(msg.answers[0].data, RData::A(A::new(192, 168, 1, 1)));
        assert_eq!(msg.answers[0].ttl, HOSTS_TTL);
        let ptr = ask(&statics, "1.1.168.192.in-addr.arpa.", 12).unwrap();
        assert_eq!(
            ptr.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("router.lan.").unwrap()))
        );
        let v6 = ask(&statics, "localhost6.", 28).unwrap();
        assert_eq!(v6.answers.len(), 1);
        let reverse6 = reverse_name("::1".parse().unwrap());
        assert!(reverse6.starts_with("1.0.0.0.") && reverse6.ends_with(".ip6.arpa"));
        assert!(
            ask(&statics, "other.lan.", 1).is_none(),
            "unknown names go upstream"
        );
    }

    #[test]
    fn other_types_get_nodata_and_cnames_are_followed() {
        let records = vec![
            StaticRecord {
                name: "nas.lan".into(),
                ttl: 60,
                data: StaticData::A("10.0.0.5".parse().unwrap()),
            },
            StaticRecord {
                name: "files.lan".into(),
                ttl: 60,
                data: StaticData::Cname("nas.lan".into()),
            },
        ];
        let statics = Statics::new(&records);
        let nodata = ask(&statics, "nas.lan.", 28).unwrap();
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        let nodata_txt = ask(&statics, "nas.lan.", 99).unwrap();
        assert!(nodata_txt.answers.is_empty());
        let chased = ask(&statics, "files.lan.", 1).unwrap();
        let types: Vec<RecordType> = chased.answers.iter().map(|r| r.record_type()).collect();
        assert_eq!(types, vec![RecordType::CNAME, RecordType::A]);
    }

    #[test]
    fn bad_hosts_lines_name_their_line() {
        assert_eq!(
            parse_hosts("1.2.3.4 ok\nnot-an-ip host\n").unwrap_err().0,
            2
        );
        assert_eq!(
            parse_hosts("1.2.3.4\n").unwrap_err(),
            (1, "1.2.3.4 has no names".into())
        );
    }
}
