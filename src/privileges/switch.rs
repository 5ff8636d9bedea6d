//! The system calls of a privilege drop: narrowing the capability sets to
//! exactly those kept. Capabilities belong to a thread, not a process, so
//! this must run while ward has one thread: every thread started
//! afterwards inherits what it left. Deciding what to keep is
//! [`super`]'s.

use caps::{CapSet, Capability, CapsHashSet};

/// A step of the drop that the kernel refused.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{step}: {source}")]
    Caps {
        step: &'static str,
        source: caps::errors::CapsError,
    },
    #[error("the capability sets are not {keep:?} after narrowing them (effective: {found:?})")]
    Unexpected {
        keep: Vec<Capability>,
        found: Vec<Capability>,
    },
}

fn caps_err(step: &'static str) -> impl FnOnce(caps::errors::CapsError) -> SwitchError {
    move |source| SwitchError::Caps { step, source }
}

/// Sets the permitted, effective, inheritable and ambient sets to exactly
/// `keep`, which must be permitted now. Effective first (raising what
/// `keep` holds), permitted last: the kernel checks each set against the
/// others as they are at that moment.
pub fn narrow_to(keep: &CapsHashSet) -> Result<(), SwitchError> {
    // Nothing to change (an unprivileged run that needs nothing): no
    // capset, which a sandbox may refuse for no reason of ours.
    if holds_exactly(keep)? {
        return Ok(());
    }
    caps::set(None, CapSet::Effective, keep).map_err(caps_err("effective set"))?;
    caps::set(None, CapSet::Inheritable, keep).map_err(caps_err("inheritable set"))?;
    caps::set(None, CapSet::Permitted, keep).map_err(caps_err("permitted set"))?;
    caps::set(None, CapSet::Ambient, keep).map_err(caps_err("ambient set"))?;
    if holds_exactly(keep)? {
        Ok(())
    } else {
        let sorted = |set: &CapsHashSet| {
            let mut caps: Vec<Capability> = set.iter().copied().collect();
            caps.sort_by_key(|c| c.index());
            caps
        };
        let found = caps::read(None, CapSet::Effective).unwrap_or_default();
        Err(SwitchError::Unexpected {
            keep: sorted(keep),
            found: sorted(&found),
        })
    }
}

/// Whether the permitted, effective, inheritable and ambient sets are
/// all `keep`.
fn holds_exactly(keep: &CapsHashSet) -> Result<bool, SwitchError> {
    for set in [
        CapSet::Permitted,
        CapSet::Effective,
        CapSet::Inheritable,
        CapSet::Ambient,
    ] {
        if &caps::read(None, set).map_err(caps_err("reading the capability sets"))? != keep {
            return Ok(false);
        }
    }
    Ok(true)
}
