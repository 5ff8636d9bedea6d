//! [`Dialers`]: every dialer and group by name, as the configuration of
//! this generation has them. A reload swaps the set in place: a dialer
//! whose spec did not change is the same [`Dialer`] afterwards (its
//! health, latency history and learned state kept), a group whose members
//! and policy did not change the same [`Group`] (its choice kept); what
//! changed is built anew. Everything that holds the `Arc<Dialers>` sees the
//! new set at its next lookup.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::group::{Group, Via};
use super::health::Track;
use super::metrics::DialerMetrics;
use super::path::Dialer;
use super::settings::{DialerSettings, GroupSpec, DIRECT};
use crate::reload::Changes;

/// Every dialer and group, by name. The dialers' actors come and go; a
/// reload ([`Dialers::reconfigure`]) replaces what changed.
pub struct Dialers {
    set: ArcSwap<DialerSet>,
    metrics: Arc<DialerMetrics>,
}

/// One generation's dialers and groups.
struct DialerSet {
    dialers: BTreeMap<String, Arc<Dialer>>,
    groups: BTreeMap<String, Arc<Group>>,
    settings: DialerSettings,
}

impl Dialers {
    /// Builds every dialer and group; `direct` is added when missing.
    pub fn new(settings: DialerSettings, metrics: Arc<DialerMetrics>) -> Arc<Dialers> {
        let set = DialerSet::build(settings, &metrics, None);
        Arc::new(Dialers {
            set: ArcSwap::from_pointee(set),
            metrics,
        })
    }

    /// Swaps in the dialers and groups of `settings`, keeping every dialer
    /// whose spec (and the health settings) did not change and every group
    /// whose members and policy did not: what was added, replaced, kept
    /// and removed, as `dialers/<name>` and `groups/<name>`.
    pub fn reconfigure(&self, settings: DialerSettings) -> Changes {
        let old = self.set.load_full();
        let new = DialerSet::build(settings, &self.metrics, Some(&old));
        let mut changes = Changes::default();
        changes.compare("dialers", &old.dialers, &new.dialers, Arc::ptr_eq);
        changes.compare("groups", &old.groups, &new.groups, Arc::ptr_eq);
        self.set.store(Arc::new(new));
        changes
    }

    /// The settings of this generation.
    pub fn settings(&self) -> DialerSettings {
        self.set.load().settings.clone()
    }

    /// A dialer or a group by name.
    pub fn via(&self, name: &str) -> Option<Via> {
        let set = self.set.load();
        if let Some(dialer) = set.dialers.get(name) {
            return Some(Via::Dialer(dialer.clone()));
        }
        set.groups.get(name).map(|g| Via::Group(g.clone()))
    }

    /// The `direct` dialer (always there).
    pub fn direct(&self) -> Via {
        Via::Dialer(self.set.load().dialers[DIRECT].clone())
    }

    pub fn dialer(&self, name: &str) -> Option<Arc<Dialer>> {
        self.set.load().dialers.get(name).cloned()
    }

    /// Every dialer, by name.
    pub fn dialers(&self) -> Vec<Arc<Dialer>> {
        self.set.load().dialers.values().cloned().collect()
    }

    /// Every group, by name.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.set.load().groups.values().cloned().collect()
    }

    /// True when some group has `name` as a member (it is probed
    /// periodically).
    pub fn in_a_group(&self, name: &str) -> bool {
        self.set
            .load()
            .groups
            .values()
            .any(|g| g.members.iter().any(|d| d.name == name))
    }

    /// The groups whose current choice on `track` is `name`.
    pub fn selected_by(&self, name: &str, track: Track) -> Vec<String> {
        self.set
            .load()
            .groups
            .values()
            .filter(|g| g.current(track).is_some_and(|d| d.name == name))
            .map(|g| g.name.clone())
            .collect()
    }
}

impl DialerSet {
    /// The set of `settings`, taking from `old` every dialer and group
    /// that did not change.
    fn build(
        mut settings: DialerSettings,
        metrics: &Arc<DialerMetrics>,
        old: Option<&DialerSet>,
    ) -> DialerSet {
        if !settings.dialers.contains_key(DIRECT) {
            let direct = DialerSettings::direct_only().dialers;
            settings.dialers.extend(direct);
        }
        // Health settings are every dialer's: when they change, every
        // dialer is new.
        let old = old.filter(|old| old.settings.health == settings.health);
        let health = match old.and_then(|old| old.dialers.values().next()) {
            Some(any) => any.settings.clone(),
            None => Arc::new(settings.health.clone()),
        };
        let dialers: BTreeMap<String, Arc<Dialer>> = settings
            .dialers
            .iter()
            .map(|(name, spec)| {
                let kept = old
                    .and_then(|old| old.dialers.get(name))
                    .filter(|d| d.spec == *spec)
                    .cloned();
                let dialer = kept.unwrap_or_else(|| {
                    let dialer =
                        Dialer::new(name.clone(), spec.clone(), health.clone(), metrics.clone());
                    Arc::new(dialer)
                });
                (name.clone(), dialer)
            })
            .collect();
        let groups = settings
            .groups
            .iter()
            .map(|(name, spec)| {
                let members: Vec<Arc<Dialer>> = spec
                    .dialers
                    .iter()
                    .filter_map(|m| dialers.get(m).cloned())
                    .collect();
                let kept = old
                    .and_then(|old| old.groups.get(name))
                    .filter(|g| same_group(g, spec, &members))
                    .cloned();
                let group = kept.unwrap_or_else(|| {
                    let group = Group::new(
                        name.clone(),
                        members,
                        spec.policy,
                        spec.tolerance,
                        metrics.clone(),
                    );
                    if let Some(was) = old.and_then(|old| old.groups.get(name)) {
                        group.adopt_choice(was);
                    }
                    Arc::new(group)
                });
                (name.clone(), group)
            })
            .collect();
        DialerSet {
            dialers,
            groups,
            settings,
        }
    }
}

/// The group `old` is the one `spec` describes over `members`: the same
/// dialers in the same order, the same policy and tolerance.
fn same_group(old: &Group, spec: &GroupSpec, members: &[Arc<Dialer>]) -> bool {
    old.policy == spec.policy
        && old.tolerance == spec.tolerance
        && old.members.len() == members.len()
        && old
            .members
            .iter()
            .zip(members)
            .all(|(a, b)| Arc::ptr_eq(a, b))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dialer::settings::{DialerSpec, Policy};

    fn node(port: u16) -> DialerSpec {
        DialerSpec::Socks5 {
            server: format!("127.0.0.1:{port}"),
            credentials: None,
            mark: None,
        }
    }

    fn settings(nodes: &[(&str, u16)], group: &[&str], policy: Policy) -> DialerSettings {
        let mut settings = DialerSettings::direct_only();
        for (name, port) in nodes {
            settings.dialers.insert(name.to_string(), node(*port));
        }
        settings.groups.insert(
            "g".to_string(),
            GroupSpec {
                dialers: group.iter().map(|s| s.to_string()).collect(),
                policy,
                tolerance: Duration::from_millis(50),
            },
        );
        settings
    }

    #[test]
    fn a_reload_keeps_what_did_not_change_and_a_rebuilt_group_keeps_its_choice() {
        let first = settings(&[("a", 1), ("b", 2)], &["a", "b"], Policy::Fixed(1));
        let dialers = Dialers::new(first.clone(), Default::default());
        let (a, b) = (dialers.dialer("a").unwrap(), dialers.dialer("b").unwrap());
        let Some(Via::Group(g)) = dialers.via("g") else {
            panic!("g is a group")
        };
        assert!(Arc::ptr_eq(&g.select(Track::Udp, &[]).unwrap(), &b));

        // The same settings: the same objects.
        let same = dialers.reconfigure(first);
        assert!(same.is_empty(), "{same:?}");
        assert!(Arc::ptr_eq(&dialers.dialer("a").unwrap(), &a));
        let Some(Via::Group(kept)) = dialers.via("g") else {
            panic!("g is a group")
        };
        assert!(Arc::ptr_eq(&kept, &g));

        // c joins and the members reorder: a and b are kept, the group is
        // rebuilt, and it goes on with b, its choice, while b stays a
        // member (though Fixed(1) names a now).
        let second = settings(
            &[("a", 1), ("b", 2), ("c", 3)],
            &["b", "a", "c"],
            Policy::Fixed(1),
        );
        let changes = dialers.reconfigure(second);
        assert_eq!(changes.added, ["dialers/c"]);
        assert_eq!(changes.replaced, ["groups/g"]);
        assert!(changes.kept.contains(&"dialers/b".to_string()));
        let Some(Via::Group(rebuilt)) = dialers.via("g") else {
            panic!("g is a group")
        };
        assert!(!Arc::ptr_eq(&rebuilt, &g));
        let current = rebuilt.current(Track::Udp).expect("a choice kept");
        assert!(Arc::ptr_eq(current, &b));
        assert!(
            rebuilt.current(Track::Tcp).is_none(),
            "no choice made on TCP"
        );

        // A changed spec: a new dialer, whatever its name.
        let third = settings(
            &[("a", 9), ("b", 2), ("c", 3)],
            &["b", "a", "c"],
            Policy::Fixed(1),
        );
        let changes = dialers.reconfigure(third);
        assert_eq!(changes.replaced, ["dialers/a", "groups/g"]);
        assert!(!Arc::ptr_eq(&dialers.dialer("a").unwrap(), &a));
    }
}
