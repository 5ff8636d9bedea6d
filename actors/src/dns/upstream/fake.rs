//! A scripted upstream for tests of the resolver: an in-process actor that
//! publishes itself in an [`UpstreamSlot`] through the same `Live` the real
//! actor uses, with no UDP transports, so every query the resolver asks
//! reaches its mailbox (UDP ones too: `use_tcp` says which transport was
//! asked for). It answers each [`UpstreamQuery`] as its script says, after
//! the script's delay, and records when it was asked. No sockets and no
//! external tool; on paused tokio time the delays take no real time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use ward_supervision::{Attachment, Live};

use super::{UpstreamError, UpstreamHandle, UpstreamMsg, UpstreamQuery, UpstreamSlot};

/// What the fake does with one query.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    /// A NOERROR answer with one A record.
    Answer([u8; 4]),
    /// An empty answer with this rcode.
    Rcode(ResponseCode),
    /// An empty answer with TC set.
    Truncated,
    /// The transport fails the query.
    Fail(UpstreamError),
    /// Nothing: the query fails with `Timeout` at its deadline, as the real
    /// transports fail it.
    Silent,
}

/// One scripted reply and how long it takes.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub after: Duration,
    pub reply: Reply,
}

/// One query the fake was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asked {
    pub at: Instant,
    pub use_tcp: bool,
    pub deadline: Instant,
}

type Script = Arc<dyn Fn(&UpstreamQuery) -> Step + Send + Sync>;

/// A fake upstream attached to a slot; stopped when dropped.
pub struct FakeUpstream {
    actor: ActorRef<UpstreamMsg>,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl FakeUpstream {
    /// Attaches a fake to `slot` that answers as `script` says.
    pub async fn attach(
        slot: &UpstreamSlot,
        script: impl Fn(&UpstreamQuery) -> Step + Send + Sync + 'static,
    ) -> Self {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let args = FakeArgs {
            live: slot.live().clone(),
            script: Arc::new(script),
            asked: asked.clone(),
        };
        let (actor, _) = Actor::spawn(None, FakeActor, args).await.unwrap();
        Self { actor, asked }
    }

    /// Attaches a fake that answers every query the same way.
    pub async fn always(slot: &UpstreamSlot, after: Duration, reply: Reply) -> Self {
        Self::attach(slot, move |_| Step { after, reply }).await
    }

    /// Attaches a fake that answers UDP queries with `udp` and TCP ones
    /// with `tcp`.
    pub async fn by_transport(
        slot: &UpstreamSlot,
        after: Duration,
        udp: Reply,
        tcp: Reply,
    ) -> Self {
        Self::attach(slot, move |query| Step {
            after,
            reply: if query.use_tcp { tcp } else { udp },
        })
        .await
    }

    /// The queries asked so far, in order.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }

    /// For each query asked so far, whether it was asked over TCP.
    pub fn over_tcp(&self) -> Vec<bool> {
        self.asked().iter().map(|q| q.use_tcp).collect()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.actor.stop(None);
    }
}

struct FakeActor;

struct FakeArgs {
    live: Arc<Live<UpstreamHandle>>,
    script: Script,
    asked: Arc<Mutex<Vec<Asked>>>,
}

struct FakeState {
    _attachment: Attachment<UpstreamHandle>,
    script: Script,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl Actor for FakeActor {
    type Msg = UpstreamMsg;
    type State = FakeState;
    type Arguments = FakeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<UpstreamMsg>,
        args: FakeArgs,
    ) -> Result<FakeState, ActorProcessingErr> {
        let handle = UpstreamHandle {
            actor: myself.clone(),
            udp: Arc::new(Vec::new()),
        };
        Ok(FakeState {
            _attachment: args.live.attach(myself.get_id(), handle),
            script: args.script,
            asked: args.asked,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<UpstreamMsg>,
        message: UpstreamMsg,
        state: &mut FakeState,
    ) -> Result<(), ActorProcessingErr> {
        // Probes and the rest of the real actor's traffic are not scripted.
        let UpstreamMsg::Query(query) = message else {
            return Ok(());
        };
        let deadline = Instant::from_std(query.deadline);
        state.asked.lock().unwrap().push(Asked {
            at: Instant::now(),
            use_tcp: query.use_tcp,
            deadline,
        });
        let step = (state.script)(&query);
        // Answered from a task: like the real one, the actor never waits.
        tokio::spawn(async move {
            if let Reply::Silent = step.reply {
                tokio::time::sleep_until(deadline).await;
                return query.fail(UpstreamError::Timeout);
            }
            tokio::time::sleep(step.after).await;
            let reply = match step.reply {
                Reply::Fail(error) => Err(error),
                reply => Ok(answer(&query, reply)),
            };
            let _ = query.reply.send(reply);
        });
        Ok(())
    }
}

/// The answer bytes for `reply`, built with hickory from the query ward
/// would send.
fn answer(query: &UpstreamQuery, reply: Reply) -> Vec<u8> {
    let mut msg = Message::from_vec(&query.wire(0)).unwrap();
    msg.metadata.message_type = MessageType::Response;
    msg.metadata.recursion_available = true;
    match reply {
        Reply::Answer(ip) => {
            let name = msg.queries[0].name().clone();
            msg.add_answer(Record::from_rdata(
                name,
                300,
                RData::A(A::from(std::net::Ipv4Addr::from(ip))),
            ));
        }
        Reply::Rcode(code) => msg.metadata.response_code = code,
        Reply::Truncated => msg.metadata.truncation = true,
        Reply::Fail(_) | Reply::Silent => {}
    }
    msg.to_vec().unwrap()
}
