//! How often watch may repair the same thing: at once the first times, then with an
//! exponentially growing pause, so that watch never fights another program forever (a
//! network manager that removes rules it did not create, a script that flushes the ruleset
//! in a loop). Pure: the caller passes the clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Repairs of one object this close together count as "again".
const AGAIN_WITHIN: Duration = Duration::from_secs(30);
/// Repairs made at once before the pause starts to grow.
const FREE_REPAIRS: u32 = 3;
/// The first pause, doubled with every further repair, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Streak {
    count: u32,
    last: Instant,
}

/// Repair streaks by object (a short text naming what was repaired).
#[derive(Debug, Default)]
pub(crate) struct Pacing {
    streaks: BTreeMap<String, Streak>,
}

impl Pacing {
    /// Whether `object` may be repaired now.
    pub(crate) fn due(&self, object: &str, now: Instant) -> bool {
        self.streaks
            .get(object)
            .is_none_or(|s| now >= s.last + pause(s.count))
    }

    /// Records a repair of `object`; returns a note when the next one will wait.
    pub(crate) fn repaired(&mut self, object: &str, now: Instant) -> Option<String> {
        let streak = self
            .streaks
            .entry(object.to_string())
            .and_modify(|s| {
                s.count = if now.duration_since(s.last) <= AGAIN_WITHIN + pause(s.count) {
                    s.count + 1
                } else {
                    1
                };
                s.last = now;
            })
            .or_insert(Streak {
                count: 1,
                last: now,
            });
        let next = pause(streak.count);
        (!next.is_zero()).then(|| {
            format!(
                "{object}: repaired {} times, each within {} s of the last: something keeps \
                 undoing it; backing off, the next repair waits {} s",
                streak.count,
                AGAIN_WITHIN.as_secs(),
                next.as_secs()
            )
        })
    }

    /// Forgets every streak: the interfaces changed, so a repeat is no fight.
    pub(crate) fn forget(&mut self) {
        self.streaks.clear();
    }

    /// Drops streaks that ended long ago (bounded memory over months of flaps).
    pub(crate) fn expire(&mut self, now: Instant) {
        self.streaks
            .retain(|_, s| now.duration_since(s.last) <= AGAIN_WITHIN + pause(s.count));
    }
}

/// The pause after `count` repairs in a row.
fn pause(count: u32) -> Duration {
    if count < FREE_REPAIRS {
        return Duration::ZERO;
    }
    let doublings = (count - FREE_REPAIRS).min(16);
    (FIRST_PAUSE * 2u32.pow(doublings)).min(MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_repairs_are_immediate_then_the_pause_doubles_up_to_a_minute() {
        let mut p = Pacing::default();
        let t0 = Instant::now();
        let mut t = t0;
        let mut pauses = Vec::new();
        for _ in 0..10 {
            assert!(p.due("table", t));
            let note = p.repaired("table", t);
            let wait = (0..=120)
                .map(Duration::from_secs)
                .find(|d| p.due("table", t + *d))
                .unwrap();
            assert_eq!(note.is_some(), !wait.is_zero(), "{note:?}");
            pauses.push(wait.as_secs());
            t += wait;
        }
        assert_eq!(pauses, [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn a_repair_long_after_the_last_starts_a_new_streak() {
        let mut p = Pacing::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            p.repaired("rules", t0);
        }
        assert!(!p.due("rules", t0));
        assert!(p.due("other", t0), "objects are paced apart");
        let later = t0 + Duration::from_secs(300);
        p.expire(later);
        assert!(p.due("rules", later));
        assert_eq!(p.repaired("rules", later), None);
    }

    #[test]
    fn changed_interfaces_forget_the_streaks() {
        let mut p = Pacing::default();
        let t0 = Instant::now();
        for _ in 0..6 {
            p.repaired("routes", t0);
        }
        p.forget();
        assert!(p.due("routes", t0));
    }
}
