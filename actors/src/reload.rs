//! What a reload changed, part by part, for `ward ctl reload` to print.

use std::collections::BTreeMap;

use serde::Serialize;

/// Parts of the configuration a reload added, replaced, kept or removed,
/// each named by where it lives (`dialers/hk1`, `dns/upstreams/knot`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub kept: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    /// Compares the parts named in `old` and `new` under `prefix`: kept
    /// when `same` says the new one is the old one.
    pub fn compare<T>(
        &mut self,
        prefix: &str,
        old: &BTreeMap<String, T>,
        new: &BTreeMap<String, T>,
        same: impl Fn(&T, &T) -> bool,
    ) {
        for (name, part) in new {
            let path = format!("{prefix}/{name}");
            match old.get(name) {
                None => self.added.push(path),
                Some(was) if same(was, part) => self.kept.push(path),
                Some(_) => self.replaced.push(path),
            }
        }
        for name in old.keys().filter(|name| !new.contains_key(*name)) {
            self.removed.push(format!("{prefix}/{name}"));
        }
    }

    /// Adds what `other` changed.
    pub fn extend(&mut self, other: Changes) {
        self.added.extend(other.added);
        self.replaced.extend(other.replaced);
        self.kept.extend(other.kept);
        self.removed.extend(other.removed);
    }

    /// Nothing added, replaced or removed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty()
    }
}
