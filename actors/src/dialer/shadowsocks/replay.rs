//! The sliding window that refuses a 2022 UDP packet ID seen before, or
//! too far behind the newest (SIP022 3.2.4), the way WireGuard's counter
//! filter does (RFC 6479): a ring of 64-bit words, cleared word by word as
//! the newest ID moves on. Checking and recording are separate: a packet
//! is recorded only once its header proved valid.

/// Words in the ring: 256 bytes per server session.
const WORDS: usize = 32;
/// How far behind the newest ID a packet may be: one word of the ring is
/// the one being filled.
const WINDOW: u64 = ((WORDS - 1) * 64) as u64;

/// The packet IDs seen on one server session.
#[derive(Clone, Debug)]
pub(super) struct ReplayWindow {
    newest: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            newest: 0,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// True when `id` is neither seen nor too old.
    pub(super) fn check(&self, id: u64) -> bool {
        if id > self.newest {
            return true;
        }
        if self.newest - id >= WINDOW {
            return false;
        }
        let (word, bit) = position(id);
        self.bits[word] & bit == 0
    }

    /// Records `id` (which [`check`](Self::check) accepted).
    pub(super) fn record(&mut self, id: u64) {
        if id > self.newest {
            let current = self.newest / 64;
            let new = id / 64;
            let clear = (new - current).min(WORDS as u64);
            for step in 1..=clear {
                self.bits[((current + step) % WORDS as u64) as usize] = 0;
            }
            self.newest = id;
        }
        let (word, bit) = position(id);
        self.bits[word] |= bit;
    }
}

fn position(id: u64) -> (usize, u64) {
    (((id / 64) % WORDS as u64) as usize, 1 << (id % 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(window: &mut ReplayWindow, id: u64) -> bool {
        let fresh = window.check(id);
        if fresh {
            window.record(id);
        }
        fresh
    }

    #[test]
    fn each_id_is_accepted_once() {
        let mut window = ReplayWindow::default();
        for id in [0, 1, 5, 3, 2, 4, 100, 64, 65, 6] {
            assert!(accept(&mut window, id), "{id}");
        }
        for id in [0, 1, 5, 3, 100, 64] {
            assert!(!accept(&mut window, id), "{id} again");
        }
    }

    #[test]
    fn ids_too_far_behind_are_refused() {
        let mut window = ReplayWindow::default();
        assert!(accept(&mut window, 10_000));
        assert!(!accept(&mut window, 10_000 - WINDOW));
        assert!(accept(&mut window, 10_000 - WINDOW + 1));
        assert!(accept(&mut window, 9_999));
    }

    #[test]
    fn a_jump_clears_the_ring() {
        let mut window = ReplayWindow::default();
        for id in 0..WINDOW {
            assert!(accept(&mut window, id));
        }
        // The newest moves a whole ring ahead: every old bit is gone, and
        // IDs within the new window are new.
        let far = 5 * WINDOW;
        assert!(accept(&mut window, far));
        for id in far - WINDOW + 1..far {
            assert!(window.check(id), "{id}");
        }
        assert!(!window.check(far));
        assert!(accept(&mut window, u64::MAX));
        assert!(!accept(&mut window, u64::MAX));
    }
}
