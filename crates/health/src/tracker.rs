//! The per-gateway health state machine (pure: no clock, no I/O).

use std::fmt;

/// The health of one gateway as the [`Tracker`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not enough evidence yet: fewer than `up` consecutive successes and fewer than `down`
    /// consecutive failures since the tracker started. [`State::is_usable`] is true: a gateway
    /// that `apply` put in the split stays there until it is proven down.
    Unknown,
    /// `up` consecutive successes (or started as up).
    Up,
    /// `down` consecutive failures (or started as down).
    Down,
}

impl State {
    /// Whether new connections may use the gateway: `Up` and `Unknown` (innocent until proven
    /// dead, so that starting `watch` never changes the split before the first verdict).
    pub fn is_usable(self) -> bool {
        self != State::Down
    }

    /// `"unknown"`, `"up"` or `"down"` (for logs, the state file and `status --json`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Down => "down",
        }
    }

    /// Inverse of [`State::as_str`].
    pub fn parse(s: &str) -> Option<State> {
        match s {
            "unknown" => Some(State::Unknown),
            "up" => Some(State::Up),
            "down" => Some(State::Down),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change reported by [`Tracker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// the state before
    pub from: State,
    /// the state after (never equal to `from`)
    pub to: State,
    /// the number of consecutive results that caused it (the threshold that was reached)
    pub streak: u32,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.to == State::Up {
            "successes"
        } else {
            "failures"
        };
        write!(
            f,
            "{} -> {} after {} consecutive {what}",
            self.from, self.to, self.streak
        )
    }
}

/// Consecutive-result hysteresis for one gateway.
///
/// * A success resets the failure streak and counts one more success; when the success streak
///   reaches `up` and the state is not already `Up`, the state becomes `Up`.
/// * A failure resets the success streak and counts one more failure; when the failure streak
///   reaches `down` and the state is not already `Down`, the state becomes `Down`.
///
/// **Initial state: [`State::Unknown`]** ([`Tracker::new`]). Rationale: right after `watch`
/// starts nothing has been measured, and `status` should say so rather than claim "up"; a gateway
/// that is dead at start still goes `Down` after exactly `down` failures (the same latency as
/// starting `Up`), a live one is confirmed `Up` after `up` successes, and because `Unknown` is
/// [usable](State::is_usable) the split `apply` loaded is not touched before a verdict. Whichever
/// threshold is reached first decides. [`Tracker::starting_as`] starts from a known state instead
/// (e.g. the state file of a previous `watch`, or keeping states across a SIGHUP reload).
///
/// Thresholds of 0 are treated as 1 (a single result decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    up: u32,
    down: u32,
    state: State,
    successes: u32,
    failures: u32,
}

impl Tracker {
    /// A tracker in [`State::Unknown`] that needs `up` consecutive successes to become `Up` and
    /// `down` consecutive failures to become `Down`.
    pub fn new(up: u32, down: u32) -> Tracker {
        Tracker::starting_as(State::Unknown, up, down)
    }

    /// Like [`Tracker::new`] but starting in `state`.
    pub fn starting_as(state: State, up: u32, down: u32) -> Tracker {
        Tracker {
            up: up.max(1),
            down: down.max(1),
            state,
            successes: 0,
            failures: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// `(up, down)` thresholds in force.
    pub fn thresholds(&self) -> (u32, u32) {
        (self.up, self.down)
    }

    /// Changes the thresholds (spec reload) keeping the state and the current streaks; a streak
    /// that already reaches a lowered threshold takes effect at the next result of that kind.
    pub fn set_thresholds(&mut self, up: u32, down: u32) {
        self.up = up.max(1);
        self.down = down.max(1);
    }

    /// Current streak of consecutive successes (0 after a failure).
    pub fn successes(&self) -> u32 {
        self.successes
    }

    /// Current streak of consecutive failures (0 after a success).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records one probe result; returns the transition it caused, if any.
    pub fn record(&mut self, ok: bool) -> Option<Transition> {
        let (streak, threshold, target) = if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes, self.up, State::Up)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures, self.down, State::Down)
        };
        if self.state != target && streak >= threshold {
            let from = self.state;
            self.state = target;
            Some(Transition {
                from,
                to: target,
                streak,
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut Tracker, results: &str) -> Vec<Option<State>> {
        results
            .chars()
            .map(|c| t.record(c == '+').map(|tr| tr.to))
            .collect()
    }

    #[test]
    fn starts_unknown_and_first_threshold_decides() {
        let mut t = Tracker::new(2, 3);
        assert_eq!(t.state(), State::Unknown);
        assert!(t.state().is_usable());
        assert_eq!(run(&mut t, "+"), [None]);
        assert_eq!(t.state(), State::Unknown);
        let tr = t.record(true).unwrap();
        assert_eq!(
            tr,
            Transition {
                from: State::Unknown,
                to: State::Up,
                streak: 2
            }
        );
        assert_eq!(
            tr.to_string(),
            "unknown -> up after 2 consecutive successes"
        );

        let mut t = Tracker::new(2, 3);
        assert_eq!(
            run(&mut t, "--+---"),
            [None, None, None, None, None, Some(State::Down)]
        );
        assert!(!t.state().is_usable());
    }

    #[test]
    fn hysteresis_needs_consecutive_results() {
        let mut t = Tracker::starting_as(State::Up, 2, 3);
        // failures interrupted by a success never reach 3 in a row
        assert_eq!(run(&mut t, "--+--+--"), vec![None; 8]);
        assert_eq!(t.state(), State::Up);
        assert_eq!(t.failures(), 2);
        assert_eq!(run(&mut t, "-"), [Some(State::Down)]);
        // further failures do not repeat the transition
        assert_eq!(run(&mut t, "---"), [None, None, None]);
        // one success is not enough to come back
        assert_eq!(run(&mut t, "+-+"), [None, None, None]);
        assert_eq!(t.state(), State::Down);
        let tr = t.record(true).unwrap();
        assert_eq!((tr.from, tr.to, tr.streak), (State::Down, State::Up, 2));
        assert_eq!(t.successes(), 2);
        assert_eq!(run(&mut t, "+++"), [None, None, None]);
    }

    #[test]
    fn thresholds_of_one_and_zero() {
        let mut t = Tracker::new(0, 1);
        assert_eq!(t.thresholds(), (1, 1));
        assert_eq!(
            run(&mut t, "+-+-"),
            [
                Some(State::Up),
                Some(State::Down),
                Some(State::Up),
                Some(State::Down)
            ]
        );
    }

    #[test]
    fn reload_keeps_state_and_streak() {
        let mut t = Tracker::starting_as(State::Down, 5, 2);
        assert_eq!(run(&mut t, "+++"), [None, None, None]);
        t.set_thresholds(3, 2);
        assert_eq!(t.state(), State::Down);
        assert_eq!(run(&mut t, "+"), [Some(State::Up)]);
    }

    #[test]
    fn state_names_round_trip() {
        for s in [State::Unknown, State::Up, State::Down] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("UP"), None);
    }

    #[test]
    fn streaks_saturate() {
        let mut t = Tracker::starting_as(State::Up, 1, 1);
        t.successes = u32::MAX;
        assert_eq!(t.record(true), None);
        assert_eq!(t.successes(), u32::MAX);
    }
}
