//! Groups choose a dialer per use, reading published health only.
//!
//! Healthy members are candidates; the policy picks one. Latency policies
//! keep their current choice until a candidate beats it by more than the
//! tolerance, so a group does not swing between two similar nodes. A
//! selection can exclude dialers that already failed this request. With no
//! healthy member left, the least recently failed one is used, the group's
//! members are probed at once, and a warning goes through the throttle.
//! A user's pick (the API's `PUT /proxies/<group>`) overrides the policy
//! while the picked member is up and not excluded; the policy takes over
//! while it is not, and the pick holds again once it is back up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::health::Track;
use super::metrics::DialerMetrics;
use super::path::Dialer;
use super::settings::Policy;
use crate::warn_throttled;

/// No choice made yet.
const NONE: usize = usize::MAX;

pub struct Group {
    pub name: String,
    pub members: Vec<Arc<Dialer>>,
    pub policy: Policy,
    pub tolerance: Duration,
    /// The current choice per track (an index into `members`).
    current: [AtomicUsize; 2],
    /// The member a user picked (an index into `members`), `NONE` for none.
    pick: AtomicUsize,
    next: AtomicUsize,
    metrics: Arc<DialerMetrics>,
}

/// What a use of the path goes through: one dialer, or a group's choice.
#[derive(Clone)]
pub enum Via {
    Dialer(Arc<Dialer>),
    Group(Arc<Group>),
}

impl Via {
    /// The very same dialer or group (not one configured alike).
    pub fn same(&self, other: &Via) -> bool {
        match (self, other) {
            (Via::Dialer(a), Via::Dialer(b)) => Arc::ptr_eq(a, b),
            (Via::Group(a), Via::Group(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Via::Dialer(d) => &d.name,
            Via::Group(g) => &g.name,
        }
    }

    /// The dialer for one use on `track`, never one named in `exclude`.
    /// `None` when every candidate is excluded, or when the only members
    /// up are excluded (the caller may then ask again without exclusions).
    pub fn select(&self, track: Track, exclude: &[&str]) -> Option<Arc<Dialer>> {
        match self {
            Via::Dialer(d) => (!exclude.contains(&d.name.as_str())).then(|| d.clone()),
            Via::Group(g) => g.select(track, exclude),
        }
    }

    /// True when a group has a member other than `name` that is up on
    /// `track` (so a failure through `name` need not wait to retry).
    pub fn has_other_up(&self, track: Track, name: &str) -> bool {
        match self {
            Via::Dialer(_) => false,
            Via::Group(g) => g
                .members
                .iter()
                .any(|d| d.name != name && d.health(track).is_up()),
        }
    }
}

impl Group {
    pub fn new(
        name: String,
        members: Vec<Arc<Dialer>>,
        policy: Policy,
        tolerance: Duration,
        metrics: Arc<DialerMetrics>,
    ) -> Self {
        Self {
            name,
            members,
            policy,
            tolerance,
            current: [AtomicUsize::new(NONE), AtomicUsize::new(NONE)],
            pick: AtomicUsize::new(NONE),
            next: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Takes `old`'s choice on each track, and its pick, where that dialer
    /// is still a member (a group rebuilt by a reload keeps what it was
    /// using and what the user picked).
    pub fn adopt_choice(&self, old: &Group) {
        if let Some(picked) = old.picked() {
            if let Some(i) = self.members.iter().position(|m| Arc::ptr_eq(m, picked)) {
                self.pick.store(i, Ordering::Relaxed);
            }
        }
        for track in [Track::Tcp, Track::Udp] {
            let Some(chosen) = old.current(track) else {
                continue;
            };
            if let Some(i) = self.members.iter().position(|m| Arc::ptr_eq(m, chosen)) {
                self.current[track as usize].store(i, Ordering::Relaxed);
            }
        }
    }

    /// Picks the member named `name` for every use while it is up; it
    /// becomes the current choice at once on each track where it is up.
    /// False when no member has that name.
    pub fn set_pick(&self, name: &str) -> bool {
        let Some(i) = self.members.iter().position(|m| m.name == name) else {
            return false;
        };
        self.pick.store(i, Ordering::Relaxed);
        for track in Track::ALL {
            if self.members[i].health(track).is_up() {
                self.current[track as usize].store(i, Ordering::Relaxed);
            }
        }
        true
    }

    /// The member a user picked, if any.
    pub fn picked(&self) -> Option<&Arc<Dialer>> {
        self.members.get(self.pick.load(Ordering::Relaxed))
    }

    /// The member currently chosen on `track`, if any choice was made.
    pub fn current(&self, track: Track) -> Option<&Arc<Dialer>> {
        self.members
            .get(self.current[track as usize].load(Ordering::Relaxed))
    }

    pub fn select(&self, track: Track, exclude: &[&str]) -> Option<Arc<Dialer>> {
        let allowed = |d: &Arc<Dialer>| !exclude.contains(&d.name.as_str());
        let up: Vec<usize> = (0..self.members.len())
            .filter(|&i| allowed(&self.members[i]) && self.members[i].health(track).is_up())
            .collect();
        let chosen = if up.is_empty() {
            // Members up but excluded: the caller decides whether to use one.
            if self.members.iter().any(|d| d.health(track).is_up()) {
                return None;
            }
            let i = self.least_recently_failed(track, &allowed)?;
            self.members.iter().for_each(|d| d.request_reprobe(track));
            warn_throttled!(&format!("group-none-up:{}", self.name), group = %self.name,
                track = track.label(), using = %self.members[i].name,
                "no member of the group is up; using the least recently failed one");
            i
        } else {
            let pick = self.pick.load(Ordering::Relaxed);
            if up.contains(&pick) {
                pick
            } else {
                self.by_policy(track, &up)
            }
        };
        let previous = self.current[track as usize].swap(chosen, Ordering::Relaxed);
        // Random and RoundRobin change with every pick by design; the other
        // policies switch only when health or latency tells them to.
        let spreads = matches!(self.policy, Policy::Random | Policy::RoundRobin);
        if previous != chosen && previous != NONE && !spreads {
            self.metrics.switched(&self.name);
            warn_throttled!(&format!("group-switch:{}", self.name), group = %self.name,
                track = track.label(), from = %self.members[previous].name,
                to = %self.members[chosen].name, "group switched dialer");
        }
        Some(self.members[chosen].clone())
    }

    /// Picks among the healthy candidates (indices into `members`, in
    /// member order, not empty).
    fn by_policy(&self, track: Track, up: &[usize]) -> usize {
        let latency = |i: usize| {
            let health = self.members[i].health(track);
            match self.policy {
                Policy::MinLast => health.last_latency(),
                Policy::MinAvg10 => health.avg10(),
                _ => health.moving_avg(),
            }
            // Unmeasured members come last.
            .unwrap_or(Duration::MAX)
        };
        match self.policy {
            Policy::Fixed(want) => up.iter().copied().find(|&i| i >= want).unwrap_or(up[0]),
            Policy::Random => up[rand::random_range(0..up.len())],
            Policy::RoundRobin => up[self.next.fetch_add(1, Ordering::Relaxed) % up.len()],
            Policy::MinLast | Policy::MinAvg10 | Policy::MinMovingAvg => {
                let best = up
                    .iter()
                    .copied()
                    .min_by_key(|&i| latency(i))
                    .unwrap_or(up[0]);
                let current = self.current[track as usize].load(Ordering::Relaxed);
                if up.contains(&current)
                    && latency(best).saturating_add(self.tolerance) >= latency(current)
                {
                    current
                } else {
                    best
                }
            }
        }
    }

    fn least_recently_failed(
        &self,
        track: Track,
        allowed: &dyn Fn(&Arc<Dialer>) -> bool,
    ) -> Option<usize> {
        (0..self.members.len())
            .filter(|&i| allowed(&self.members[i]))
            .min_by_key(|&i| self.members[i].health(track).failed_at())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::failure::{Blame, Failure, Stage};
    use crate::dialer::health::Source;
    use crate::dialer::settings::{DialerSpec, HealthSettings};
    use crate::io_class::IoClass;

    fn dialer(name: &str) -> Arc<Dialer> {
        Arc::new(Dialer::new(
            name.to_string(),
            DialerSpec::Direct {
                mark: None,
                interface: None,
            },
            Arc::new(HealthSettings::default()),
            Arc::new(DialerMetrics::default()),
        ))
    }

    fn group(policy: Policy, tolerance_ms: u64, members: &[Arc<Dialer>]) -> Group {
        Group::new(
            "g".into(),
            members.to_vec(),
            policy,
            Duration::from_millis(tolerance_ms),
            Arc::new(DialerMetrics::default()),
        )
    }

    fn fail(d: &Dialer, track: Track) {
        let failure = Failure {
            class: IoClass::PeerGone,
            stage: Stage::Session,
            blame: Blame::Path,
            reason: "reset".into(),
        };
        d.record_failure(track, failure, Source::Traffic);
    }

    fn ms(d: &Dialer, track: Track, ms: u64) {
        d.health(track).record_success(Duration::from_millis(ms));
    }

    fn pick(g: &Group, exclude: &[&str]) -> String {
        g.select(Track::Tcp, exclude).unwrap().name.clone()
    }

    #[test]
    fn latency_policy_switches_only_past_the_tolerance() {
        let (a, b) = (dialer("a"), dialer("b"));
        let g = group(Policy::MinMovingAvg, 50, &[a.clone(), b.clone()]);
        ms(&a, Track::Tcp, 100);
        ms(&b, Track::Tcp, 120);
        assert_eq!(pick(&g, &[]), "a");
        // b gets better, but not by more than 50 ms: stay on a.
        for _ in 0..20 {
            ms(&b, Track::Tcp, 60);
        }
        assert_eq!(pick(&g, &[]), "a");
        for _ in 0..20 {
            ms(&b, Track::Tcp, 10);
        }
        assert_eq!(pick(&g, &[]), "b", "beats a by more than the tolerance");
        // Each track keeps its own choice.
        assert_eq!(g.select(Track::Udp, &[]).unwrap().name, "a");
    }

    #[test]
    fn down_members_and_excluded_ones_are_skipped() {
        let (a, b, c) = (dialer("a"), dialer("b"), dialer("c"));
        let g = group(Policy::Fixed(0), 0, &[a.clone(), b.clone(), c.clone()]);
        assert_eq!(pick(&g, &[]), "a");
        fail(&a, Track::Tcp);
        assert!(!a.health(Track::Tcp).is_up());
        assert_eq!(pick(&g, &[]), "b", "a is down on TCP");
        assert_eq!(g.select(Track::Udp, &[]).unwrap().name, "a", "UDP is up");
        assert_eq!(pick(&g, &["b"]), "c", "b already failed this request");
        assert!(g.select(Track::Tcp, &["a", "b", "c"]).is_none());
    }

    #[test]
    fn an_excluded_member_up_beats_a_dead_one() {
        let (a, b) = (dialer("a"), dialer("b"));
        let g = group(Policy::Fixed(0), 0, &[a.clone(), b.clone()]);
        fail(&b, Track::Tcp);
        // a failed this request but is up; b is down: the caller decides.
        assert!(g.select(Track::Tcp, &["a"]).is_none());
        assert_eq!(pick(&g, &[]), "a");
    }

    #[test]
    fn with_none_up_the_least_recently_failed_is_used() {
        let (a, b) = (dialer("a"), dialer("b"));
        let g = group(Policy::MinLast, 0, &[a.clone(), b.clone()]);
        fail(&b, Track::Tcp);
        // Health keeps failure times to the millisecond: fail a until its
        // failure is recorded as later than b's.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        fail(&a, Track::Tcp);
        while a.health(Track::Tcp).failed_at() <= b.health(Track::Tcp).failed_at() {
            assert!(
                std::time::Instant::now() < deadline,
                "the clock stood still"
            );
            std::thread::yield_now();
            fail(&a, Track::Tcp);
        }
        assert_eq!(pick(&g, &[]), "b", "b failed longer ago");
        assert_eq!(pick(&g, &["b"]), "a");
    }

    #[test]
    fn round_robin_and_random_use_every_healthy_member() {
        let members = [dialer("a"), dialer("b"), dialer("c")];
        fail(&members[1], Track::Tcp);
        let rr = group(Policy::RoundRobin, 0, &members);
        let picks: Vec<String> = (0..4).map(|_| pick(&rr, &[])).collect();
        assert_eq!(picks, ["a", "c", "a", "c"]);
        let random = group(Policy::Random, 0, &members);
        let mut seen: Vec<String> = (0..200).map(|_| pick(&random, &[])).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, ["a", "c"]);
    }

    #[test]
    fn a_pick_overrides_the_policy_while_its_member_is_up_and_survives_a_rebuild() {
        let (a, b, c) = (dialer("a"), dialer("b"), dialer("c"));
        let g = group(Policy::Fixed(0), 0, &[a.clone(), b.clone(), c.clone()]);
        assert_eq!(pick(&g, &[]), "a");
        assert!(!g.set_pick("nobody"));
        assert!(g.set_pick("b"));
        assert_eq!(g.current(Track::Udp).unwrap().name, "b", "current at once");
        assert_eq!(pick(&g, &[]), "b");
        assert_eq!(pick(&g, &["b"]), "a", "an excluded pick is skipped");
        fail(&b, Track::Tcp);
        assert_eq!(pick(&g, &[]), "a", "the policy while the pick is down");
        b.health(Track::Tcp).mark_up();
        assert_eq!(pick(&g, &[]), "b", "the pick again once it is up");
        // Rebuilt with the members reordered: the pick follows the dialer.
        let rebuilt = group(Policy::Fixed(0), 0, &[c.clone(), b.clone(), a.clone()]);
        rebuilt.adopt_choice(&g);
        assert_eq!(rebuilt.picked().unwrap().name, "b");
        assert_eq!(pick(&rebuilt, &[]), "b");
        // Rebuilt without it: no pick.
        let without = group(Policy::Fixed(0), 0, &[c.clone(), a.clone()]);
        without.adopt_choice(&g);
        assert!(without.picked().is_none());
    }

    #[test]
    fn min_last_and_min_avg10_read_their_own_figure() {
        let (a, b) = (dialer("a"), dialer("b"));
        // a: steady 20 ms; b: nine slow samples then one fast.
        for _ in 0..10 {
            ms(&a, Track::Tcp, 20);
        }
        for _ in 0..9 {
            ms(&b, Track::Tcp, 100);
        }
        ms(&b, Track::Tcp, 1);
        let last = group(Policy::MinLast, 0, &[a.clone(), b.clone()]);
        assert_eq!(pick(&last, &[]), "b");
        let avg10 = group(Policy::MinAvg10, 0, &[a.clone(), b.clone()]);
        assert_eq!(pick(&avg10, &[]), "a");
    }
}
