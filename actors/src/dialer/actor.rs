//! The dialer actor (kind `dialer`, at `dialers/<name>`): probes its path
//! and decides when a down track comes back up.
//!
//! Members of a group are probed every `health.interval`; any dialer is
//! probed at once when traffic reports a failure on it, and then, while a
//! track is down, with a delay that doubles from one second up to the
//! interval, each stretched by up to a fifth (the supervision crate's
//! [`Backoff`]). A track goes down after one failed TCP probe or three
//! failed UDP probes (or `health.traffic_failures` failures reported by
//! traffic);
//! it comes back after `health.up_after` consecutive successes, twice as
//! many for each time it went down again within `flap_window` of coming up.
//! A track without a probe target is let back up after the retry delay, for
//! traffic to try, unless the other track's probes say the node is down:
//! then it comes back with that track. Probes run in tasks the actor owns; the actor never
//! awaits one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ward_supervision::{Attachment, Backoff, BackoffPolicy, TaskGuard};

use super::failure::{Blame, Failure, Stage};
use super::health::{Source, Track};
use super::http_probe;
use super::path::Dialer;
use crate::dns::wire;
use crate::io_class::IoClass;

/// The first re-probe delay of a down track.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// A flapping track needs at most this many successes to come back.
const MAX_REQUIRED: u32 = 16;

pub enum DialerMsg {
    /// Probe every track that has a probe target, now (`ward ctl probe`).
    ProbeNow,
    /// Traffic failed on this track (blamed on the path, or on the
    /// destination behind it), or a group found no member up: probe at
    /// once if the track is up, at its next retry if it is down.
    Reprobe(Track),
    /// Traffic succeeded on this track while it was down.
    Succeeded(Track),
    /// The periodic or retry timer fired for this track.
    Tick(Track),
    ProbeDone(Track, Result<Duration, Failure>),
}

pub struct DialerActor;

pub struct DialerArgs {
    pub dialer: Arc<Dialer>,
    /// Probe every interval (the dialer is a group member).
    pub periodic: bool,
}

struct TrackState {
    probe: Option<TaskGuard>,
    timer: Option<TaskGuard>,
    /// What the actor last saw: up or down.
    seen_up: bool,
    up_since: Option<Instant>,
    /// Successes needed to come back up.
    required: u32,
    /// The delays of a down track's probes (or half-opens).
    retry: Backoff,
}

impl TrackState {
    fn new(required: u32, interval: Duration) -> Self {
        Self {
            probe: None,
            timer: None,
            seen_up: false,
            up_since: None,
            required,
            retry: Backoff::new(retry_policy(interval)),
        }
    }
}

/// A down track's retries: from [`RETRY_FIRST`], doubling up to the probe
/// interval, jittered. (A track starts over when it went down after a
/// stable time up, see `observe`.)
fn retry_policy(interval: Duration) -> BackoffPolicy {
    BackoffPolicy::doubling(RETRY_FIRST, interval)
}

pub struct DialerState {
    dialer: Arc<Dialer>,
    /// Publishes this incarnation in the dialer; withdrawn however the
    /// actor dies (ractor's kill skips `post_stop`, not the state's drop).
    _attachment: Attachment<ActorRef<DialerMsg>>,
    periodic: bool,
    tracks: [TrackState; 2],
}

impl Actor for DialerActor {
    type Msg = DialerMsg;
    type State = DialerState;
    type Arguments = DialerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DialerMsg>,
        args: DialerArgs,
    ) -> Result<DialerState, ActorProcessingErr> {
        let up_after = args.dialer.settings.up_after.max(1);
        let interval = args.dialer.settings.interval;
        let mut state = DialerState {
            _attachment: args.dialer.attach(myself.clone()),
            dialer: args.dialer,
            periodic: args.periodic,
            tracks: [0, 1].map(|_| TrackState::new(up_after, interval)),
        };
        for track in Track::ALL {
            let up = state.dialer.health(track).is_up();
            state.dialer.metrics.set_up(&state.dialer.name, track, up);
            state.tracks[track as usize].seen_up = up;
            // Probe group members at once, and any track that is down
            // (the actor restarted while it was).
            if state.periodic || !up {
                state.start_probe(&myself, track);
            }
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<DialerMsg>,
        message: DialerMsg,
        state: &mut DialerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DialerMsg::ProbeNow => {
                for track in Track::ALL {
                    state.observe(track);
                    state.start_probe(&myself, track);
                }
            }
            DialerMsg::Reprobe(track) => {
                state.dialer.reprobe_taken(track);
                state.observe(track);
                // A down track waiting for its retry keeps its backoff.
                let waiting = state.tracks[track as usize].timer.is_some();
                if !waiting || state.dialer.health(track).is_up() {
                    state.start_probe(&myself, track);
                }
                // Nothing probes this track: ask the other track's probe
                // whether the node itself still answers.
                let other = other(track);
                if !state.target(track) && state.target(other) {
                    state.start_probe(&myself, other);
                }
            }
            DialerMsg::Tick(track) => {
                state.tracks[track as usize].timer = None;
                state.observe(track);
                if state.target(track) {
                    state.start_probe(&myself, track);
                } else {
                    state.half_open(track);
                }
            }
            DialerMsg::Succeeded(track) => state.maybe_up(track, "traffic"),
            DialerMsg::ProbeDone(track, result) => {
                state.tracks[track as usize].probe = None;
                state.probe_done(track, result);
                state.schedule(&myself, track);
            }
        }
        Ok(())
    }
}

impl DialerState {
    /// Notices a track that traffic marked down since the last look, and
    /// makes a flapping one harder to bring back.
    fn observe(&mut self, track: Track) {
        let up = self.dialer.health(track).is_up();
        let settings = self.dialer.settings.clone();
        let t = &mut self.tracks[track as usize];
        if t.seen_up && !up {
            let flapped = t
                .up_since
                .is_some_and(|since| since.elapsed() < settings.flap_window);
            if flapped {
                // Back down soon after coming up: wait longer, and ask
                // for more successes, before trusting it again.
                t.required = (t.required * 2).min(MAX_REQUIRED);
            } else {
                t.required = settings.up_after.max(1);
                t.retry.succeed();
            }
        }
        t.seen_up = up;
    }

    fn probe_done(&mut self, track: Track, result: Result<Duration, Failure>) {
        let dialer = self.dialer.clone();
        match result {
            Ok(latency) => {
                dialer.health(track).record_success(latency);
                dialer.metrics.latency(&dialer.name, track, latency);
                self.maybe_up(track, "probe");
            }
            Err(failure) => {
                dialer.metrics.failure(&dialer.name, track, &failure);
                if failure.blame == Blame::Path {
                    // The node itself did not answer: no track works.
                    let tracks: &[Track] = if failure.stage.reaches_node() {
                        &Track::ALL
                    } else {
                        &[track]
                    };
                    for &each in tracks {
                        dialer.record_failure(each, failure.clone(), Source::Probe);
                        self.observe(each);
                    }
                }
                self.observe(track);
            }
        }
    }

    fn maybe_up(&mut self, track: Track, by: &str) {
        self.observe(track);
        let dialer = self.dialer.clone();
        let health = dialer.health(track);
        let t = &mut self.tracks[track as usize];
        if !health.is_up() && health.consecutive_successes() >= t.required && health.mark_up() {
            t.seen_up = true;
            t.up_since = Some(Instant::now());
            dialer.metrics.set_up(&dialer.name, track, true);
            tracing::info!(dialer = %dialer.name, track = track.label(), by,
                successes = t.required, "dialer up again");
            // The node answers again: a track without probes of its own
            // that waited for this may try too.
            let other = other(track);
            if !self.target(other) && !dialer.health(other).is_up() {
                self.half_open(other);
            }
        }
    }

    /// With no probe target, a down track is let back up once its retry
    /// delay passed, so traffic can tell whether it works again; if it
    /// fails, the next delay is twice as long (up to the interval, before
    /// its jitter).
    fn half_open(&mut self, track: Track) {
        let dialer = self.dialer.clone();
        // While the other track's probes say the node is down, this one
        // waits for them (coming back up, they let it try).
        let other = other(track);
        if self.target(other) && !dialer.health(other).is_up() {
            return;
        }
        if dialer.health(track).is_up() || !dialer.health(track).mark_up() {
            return;
        }
        let t = &mut self.tracks[track as usize];
        t.seen_up = true;
        t.up_since = Some(Instant::now());
        dialer.metrics.set_up(&dialer.name, track, true);
        tracing::info!(dialer = %dialer.name, track = track.label(),
            "no probe target; letting traffic try the dialer again");
    }

    fn target(&self, track: Track) -> bool {
        let settings = &self.dialer.settings;
        match track {
            Track::Tcp => settings.tcp_url.is_some(),
            Track::Udp => settings.udp_dns.is_some(),
        }
    }

    /// Starts a probe on `track` unless one runs or there is no target.
    fn start_probe(&mut self, myself: &ActorRef<DialerMsg>, track: Track) {
        if self.tracks[track as usize].probe.is_some() {
            return;
        }
        if !self.target(track) {
            // Nothing to probe with: a down track is tried again later.
            if !self.dialer.health(track).is_up() && self.tracks[track as usize].timer.is_none() {
                self.schedule(myself, track);
            }
            return;
        }
        let dialer = self.dialer.clone();
        let me = myself.clone();
        // The probe's own deadlines (inside the dial) fire first and say
        // which stage hung; this one bounds the rest.
        let timeout = dialer.settings.timeout + Duration::from_millis(100);
        self.tracks[track as usize].timer = None;
        self.tracks[track as usize].probe = Some(TaskGuard::spawn(async move {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, probe(&dialer, track)).await {
                Ok(Ok(())) => Ok(started.elapsed()),
                Ok(Err(failure)) => Err(failure),
                Err(_) => Err(Failure::timeout(Stage::Session)),
            }
            .map_err(|failure| explain_silence(failure, &dialer));
            let _ = me.send_message(DialerMsg::ProbeDone(track, result));
        }));
    }

    /// The next probe: after the interval for an up member, sooner (and
    /// backing off) for a down track, none for an up non-member.
    fn schedule(&mut self, myself: &ActorRef<DialerMsg>, track: Track) {
        let interval = self.dialer.settings.interval;
        let up = self.dialer.health(track).is_up();
        let t = &mut self.tracks[track as usize];
        let delay = if !up {
            t.retry.fail()
        } else if self.periodic {
            interval
        } else {
            return;
        };
        let me = myself.clone();
        t.timer = Some(TaskGuard::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.send_message(DialerMsg::Tick(track));
        }));
    }
}

/// A probe that met silence or a closed connection from a node whose
/// protocol answers nothing to a wrong key says what that may mean, for
/// the user reading `ward ctl dialers`.
fn explain_silence(mut failure: Failure, dialer: &Dialer) -> Failure {
    let silent = matches!(failure.class, IoClass::PeerGone | IoClass::PathFailed);
    if let Some(hint) = dialer.silence_means() {
        if silent && failure.stage == Stage::Session && failure.blames_path() {
            failure.reason = format!("{}: {hint}", failure.reason);
        }
    }
    failure
}

fn other(track: Track) -> Track {
    match track {
        Track::Tcp => Track::Udp,
        Track::Udp => Track::Tcp,
    }
}

/// One probe through the dialer: an HTTP GET (TCP) or a DNS query (UDP).
async fn probe(dialer: &Dialer, track: Track) -> Result<(), Failure> {
    let settings = dialer.settings.clone();
    match track {
        Track::Tcp => {
            let url = settings.tcp_url.as_ref().ok_or_else(no_target)?;
            let deadline = tokio::time::Instant::now() + settings.timeout;
            http_probe::get(dialer, url, deadline).await.map(|_| ())
        }
        Track::Udp => {
            let server = settings.udp_dns.ok_or_else(no_target)?;
            dns_probe(dialer, server).await
        }
    }
}

fn no_target() -> Failure {
    Failure {
        class: IoClass::Normal,
        stage: Stage::Cancelled,
        blame: Blame::Nobody,
        reason: "no probe target".to_string(),
    }
}

fn session_failure(e: &std::io::Error, dialer: &Dialer) -> Failure {
    Failure::io(e, Stage::Session, dialer.hop(), true)
}

async fn dns_probe(dialer: &Dialer, server: std::net::SocketAddr) -> Result<(), Failure> {
    let session = dialer.open_udp(server, true).await?;
    let id: u16 = rand::random();
    let mut query = Vec::new();
    wire::write_question_query(&wire::ROOT_NS, id, false, false, &mut query);
    session
        .try_send(&query)
        .map_err(|e| session_failure(&e, dialer))?;
    let mut buf = vec![0u8; 1500];
    loop {
        let n = session
            .recv(&mut buf)
            .await
            .map_err(|e| session_failure(&e, dialer))?;
        if n >= 12 && buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU16, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::dialer::metrics::DialerMetrics;
    use crate::dialer::settings::{DialerSpec, HealthSettings, HttpUrl};

    /// An HTTP server on loopback answering every request with `status`.
    async fn http(status: Arc<AtomicU16>) -> SocketAddr {
        http_counted(status, Arc::default()).await
    }

    /// When each request to an [`http_counted`] server arrived.
    type Served = Arc<std::sync::Mutex<Vec<Instant>>>;

    fn served(served: &Served) -> Vec<Instant> {
        served.lock().unwrap().clone()
    }

    /// [`http`], noting when each request arrived in `served`.
    async fn http_counted(status: Arc<AtomicU16>, served: Served) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                served.lock().unwrap().push(Instant::now());
                let code = status.load(Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    let reply = format!("HTTP/1.1 {code} X\r\nConnection: close\r\n\r\n");
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        addr
    }

    fn direct(health: HealthSettings) -> Arc<Dialer> {
        Arc::new(Dialer::new(
            "d".into(),
            DialerSpec::Direct {
                mark: None,
                interface: None,
            },
            Arc::new(health),
            Arc::new(DialerMetrics::default()),
        ))
    }

    /// The dialer's actor; `periodic` as for a group member.
    async fn spawn(d: &Arc<Dialer>, periodic: bool) -> ActorRef<DialerMsg> {
        let args = DialerArgs {
            dialer: d.clone(),
            periodic,
        };
        Actor::spawn(None, DialerActor, args).await.unwrap().0
    }

    fn url(addr: SocketAddr) -> Option<HttpUrl> {
        Some(HttpUrl::parse(&format!("http://{addr}/generate_204")).unwrap())
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        within(Duration::from_secs(10), what, check).await
    }

    async fn within(bound: Duration, what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + bound;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            // The poll interval.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn path_failure() -> Failure {
        Failure {
            class: IoClass::PeerGone,
            stage: Stage::Session,
            blame: Blame::Path,
            reason: "reset".into(),
        }
    }

    #[tokio::test]
    async fn a_member_is_probed_marked_down_by_one_failed_probe_and_up_after_two_good_ones() {
        let status = Arc::new(AtomicU16::new(204));
        let server = http(status.clone()).await;
        let d = direct(HealthSettings {
            interval: Duration::from_secs(1),
            tcp_url: url(server),
            ..HealthSettings::default()
        });
        let actor = spawn(&d, true).await;
        let tcp = d.health(Track::Tcp);
        until("the first probe measured", || tcp.last_latency().is_some()).await;
        assert!(tcp.is_up());

        status.store(503, Ordering::Relaxed);
        until("a 503 marks it down", || !tcp.is_up()).await;
        let last = tcp.view().last_failure.unwrap();
        assert_eq!(last.source, Source::Probe);
        assert!(last.failure.reason.contains("503"), "{}", last.failure);

        status.store(204, Ordering::Relaxed);
        until("two good probes bring it up", || tcp.is_up()).await;
        assert!(tcp.consecutive_successes() >= 2);
        actor.stop(None);
    }

    #[tokio::test]
    async fn a_traffic_failure_triggers_a_probe_at_once() {
        let status = Arc::new(AtomicU16::new(204));
        let server = http(status).await;
        let d = direct(HealthSettings {
            // Long enough that only the triggered probe can run in time.
            interval: Duration::from_secs(60),
            tcp_url: url(server),
            up_after: 1,
            ..HealthSettings::default()
        });
        let actor = spawn(&d, false).await;
        let tcp = d.health(Track::Tcp);
        assert!(
            tcp.last_latency().is_none(),
            "not a member: no periodic probe"
        );
        d.report_failure(Track::Tcp, &path_failure());
        assert!(!tcp.is_up(), "one traffic failure marks it down");
        // At once: well before the first retry delay of a down track.
        within(RETRY_FIRST / 2, "the re-probe brought it up", || {
            tcp.is_up()
        })
        .await;
        assert!(tcp.last_latency().is_some());
        actor.stop(None);
    }

    #[tokio::test]
    async fn without_a_probe_target_a_down_track_is_let_back_up_for_traffic_to_try() {
        let d = direct(HealthSettings::default());
        let actor = spawn(&d, true).await;
        let udp = d.health(Track::Udp);
        let started = Instant::now();
        d.report_failure(Track::Udp, &path_failure());
        assert!(!udp.is_up());
        until("up again", || udp.is_up()).await;
        assert!(
            started.elapsed() >= RETRY_FIRST,
            "not before the retry delay"
        );
        assert!(
            d.health(Track::Tcp).is_up(),
            "the other track was never down"
        );
        actor.stop(None);
    }

    #[tokio::test]
    async fn a_flapping_track_needs_more_successes_to_come_back() {
        let status = Arc::new(AtomicU16::new(204));
        let server = http(status).await;
        let d = direct(HealthSettings {
            interval: Duration::from_secs(60),
            tcp_url: url(server),
            up_after: 1,
            ..HealthSettings::default()
        });
        let actor = spawn(&d, false).await;
        let tcp = d.health(Track::Tcp);
        d.report_failure(Track::Tcp, &path_failure());
        until("up after one good probe", || tcp.is_up()).await;

        // Down again right after coming up: one good probe is not enough now.
        d.report_failure(Track::Tcp, &path_failure());
        until("the re-probe passed", || tcp.consecutive_successes() == 1).await;
        assert!(!tcp.is_up(), "a flapping track needs two successes");
        until("up after the second", || tcp.is_up()).await;
        actor.stop(None);
    }

    #[tokio::test]
    async fn a_burst_of_failures_runs_one_probe_and_a_down_track_keeps_its_backoff() {
        let status = Arc::new(AtomicU16::new(503));
        let requests = Served::default();
        let server = http_counted(status, requests.clone()).await;
        let d = direct(HealthSettings {
            interval: Duration::from_secs(60),
            tcp_url: url(server),
            ..HealthSettings::default()
        });
        let actor = spawn(&d, false).await;
        for _ in 0..200 {
            d.report_failure(Track::Tcp, &path_failure());
        }
        until("the probe ran", || !served(&requests).is_empty()).await;
        // More failures while down and waiting for the retry: no new probe.
        for _ in 0..200 {
            d.report_failure(Track::Tcp, &path_failure());
            tokio::task::yield_now().await;
        }
        // The next probe is the retry, a full retry delay after the first:
        // none ran for the failures in between.
        until("the retry probe ran", || served(&requests).len() >= 2).await;
        let probes = served(&requests);
        assert!(
            probes[1] - probes[0] >= RETRY_FIRST,
            "probes: one, not one per failure; the retry {:?} after the first",
            probes[1] - probes[0]
        );
        actor.stop(None);
    }

    #[tokio::test]
    async fn a_node_that_could_not_be_reached_comes_back_on_both_tracks() {
        let d = direct(HealthSettings::default());
        let actor = spawn(&d, true).await;
        let unreachable = Failure {
            stage: Stage::ProxyConnect,
            ..path_failure()
        };
        d.report_failure(Track::Tcp, &unreachable);
        assert!(!d.health(Track::Tcp).is_up() && !d.health(Track::Udp).is_up());
        until("both tracks up again", || {
            d.health(Track::Tcp).is_up() && d.health(Track::Udp).is_up()
        })
        .await;
        actor.stop(None);
    }
}
