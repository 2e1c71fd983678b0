//! Quality-based health of one gateway: loss and latency over a window of rounds, the
//! consecutive-result rule of [`Tracker`](crate::Tracker), and hold-down after a recovery
//! (pure: the caller passes each round's time; no clock, no I/O).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::State;

/// What [`Quality`] acts on: the spec's health fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successful rounds before a down gateway can recover (0 is taken as 1).
    pub up: u32,
    /// Consecutive failed rounds that make a gateway down (0 is taken as 1).
    pub down: u32,
    /// Rounds that loss and latency are measured over (0 is taken as 1).
    pub window: u32,
    /// Percent of failed rounds in the window above which the gateway is down.
    pub max_loss: Option<u8>,
    /// Percent of failed rounds at or below which a down gateway may recover; `None`: within
    /// `max_loss`.
    pub recover_loss: Option<u8>,
    /// Median round-trip time of the window's answered rounds above which the gateway is down.
    pub max_latency: Option<Duration>,
    /// Median round-trip time at or below which a down gateway may recover; `None`: within
    /// `max_latency`.
    pub recover_latency: Option<Duration>,
    /// How long a recovered gateway must stay good before it is reported up.
    pub hold_down: Duration,
}

impl Thresholds {
    /// Only the consecutive-result rule (what [`Tracker`](crate::Tracker) does), with a window
    /// of `window` rounds for the reported loss and latency.
    pub fn consecutive(up: u32, down: u32, window: u32) -> Thresholds {
        Thresholds {
            up,
            down,
            window,
            max_loss: None,
            recover_loss: None,
            max_latency: None,
            recover_latency: None,
            hold_down: Duration::ZERO,
        }
    }

    fn normalized(mut self) -> Thresholds {
        self.up = self.up.max(1);
        self.down = self.down.max(1);
        self.window = self.window.max(1);
        self
    }
}

/// Why [`Quality`] changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `down` consecutive failed rounds (the count).
    Failures(u32),
    /// Loss in the window above `max_loss`: (percent, rounds in the window).
    Loss(u8, u32),
    /// Median round-trip time in the window above `max_latency`.
    Latency(Duration),
    /// `up` consecutive successes (from [`State::Unknown`], or with no hold-down).
    Successes(u32),
    /// Good for `hold_down` after a recovery (how long it has been good).
    HeldDown(Duration),
}

/// A state change reported by [`Quality::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// the state before
    pub from: State,
    /// the state after (never equal to `from`)
    pub to: State,
    /// what caused it
    pub cause: Cause,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} ", self.from, self.to)?;
        match self.cause {
            Cause::Failures(n) => write!(f, "after {n} consecutive failures"),
            Cause::Successes(n) => write!(f, "after {n} consecutive successes"),
            Cause::Loss(p, n) => write!(f, "with {p}% loss over {n} rounds"),
            Cause::Latency(d) => write!(f, "with a median round trip of {} ms", d.as_millis()),
            Cause::HeldDown(d) => write!(f, "after staying good for {} ms", d.as_millis()),
        }
    }
}

/// The health of one gateway from its probe rounds.
///
/// Each round is an answer with its round-trip time or a failure ([`Quality::record`]). The
/// last `window` rounds give the **loss** (failed rounds, percent) and the **latency** (the
/// median round-trip time of the answered rounds; of an even count, the mean of the middle
/// two). The loss and latency thresholds are judged only once the window is full (after a
/// start, `window` rounds): a single failure in the first round is not 100% loss. The
/// consecutive-result rule acts from the first round.
///
/// * **Up or Unknown → Down** when the loss is above `max_loss`, or the latency above
///   `max_latency`, or after `down` consecutive failures.
/// * **Down → Up** when the gateway is *good*: the last `up` rounds succeeded, the loss is at
///   or below `recover_loss` and the latency at or below `recover_latency` (each defaulting to
///   its `max_*`), and it has stayed good for `hold_down`: the hold-down starts at the first
///   good round and is checked at each round; any round that is not good (a failure, loss or
///   latency back above the recovery threshold) stops it, and it starts again at the next good
///   round. Until then the state stays Down: no new connections for a gateway that may flap.
/// * **Unknown → Up** after `up` consecutive successes (no hold-down: Unknown is already
///   usable).
///
/// Without `max_loss`, `max_latency` and `hold_down` these are exactly the transitions of
/// [`Tracker`](crate::Tracker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quality {
    th: Thresholds,
    state: State,
    since: Instant,
    /// The last `window` rounds, oldest first: the round-trip time of an answered round.
    rounds: VecDeque<Option<Duration>>,
    successes: u32,
    failures: u32,
    /// While Down: when the gateway became good, if it is good now.
    good_since: Option<Instant>,
}

impl Quality {
    /// A tracker in [`State::Unknown`] since `now`.
    pub fn new(th: Thresholds, now: Instant) -> Quality {
        Quality::starting_as(State::Unknown, th, now)
    }

    /// Like [`Quality::new`] but starting in `state`.
    pub fn starting_as(state: State, th: Thresholds, now: Instant) -> Quality {
        Quality {
            th: th.normalized(),
            state,
            since: now,
            rounds: VecDeque::new(),
            successes: 0,
            failures: 0,
            good_since: None,
        }
    }

    /// The current state (Down during a hold-down).
    pub fn state(&self) -> State {
        self.state
    }

    /// When the state last changed (or the tracker started).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> &Thresholds {
        &self.th
    }

    /// Changes the thresholds (spec reload) keeping the state, the streaks and the newest
    /// rounds that fit the new window.
    pub fn set_thresholds(&mut self, th: Thresholds) {
        self.th = th.normalized();
        self.trim();
    }

    /// While Down and good: since when (the hold-down runs from there).
    pub fn good_since(&self) -> Option<Instant> {
        self.good_since
    }

    /// Rounds in the window so far (at most `window`).
    pub fn rounds(&self) -> usize {
        self.rounds.len()
    }

    /// Failed rounds in the window, percent rounded down; `None` before the first round.
    pub fn loss_percent(&self) -> Option<u8> {
        let n = self.rounds.len();
        (n > 0).then(|| (self.failed() * 100 / n) as u8)
    }

    /// Median round-trip time of the answered rounds in the window; `None` if none answered.
    pub fn median_rtt(&self) -> Option<Duration> {
        let mut rtts: Vec<Duration> = self.rounds.iter().flatten().copied().collect();
        if rtts.is_empty() {
            return None;
        }
        rtts.sort_unstable();
        let mid = rtts.len() / 2;
        Some(if rtts.len() % 2 == 1 {
            rtts[mid]
        } else {
            (rtts[mid - 1] + rtts[mid]) / 2
        })
    }

    /// Records one round at `now`: `Some(rtt)` if it succeeded, `None` if it failed. Returns
    /// the state change it caused, if any.
    pub fn record(&mut self, answer: Option<Duration>, now: Instant) -> Option<Change> {
        self.rounds.push_back(answer);
        self.trim();
        if answer.is_some() {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let change = match self.state {
            State::Unknown | State::Up => self.judge_down().or_else(|| {
                (self.state == State::Unknown && self.successes >= self.th.up)
                    .then_some(Cause::Successes(self.successes))
                    .map(|c| (State::Up, c))
            }),
            State::Down => self.judge_recovery(now).map(|c| (State::Up, c)),
        };
        let (to, cause) = change?;
        let from = self.state;
        self.state = to;
        self.since = now;
        self.good_since = None;
        Some(Change { from, to, cause })
    }

    fn trim(&mut self) {
        while self.rounds.len() > self.th.window as usize {
            self.rounds.pop_front();
        }
    }

    fn failed(&self) -> usize {
        self.rounds.iter().filter(|r| r.is_none()).count()
    }

    fn window_full(&self) -> bool {
        self.rounds.len() >= self.th.window as usize
    }

    /// Whether the loss is above `pct` (exactly: failed * 100 > pct * rounds).
    fn loss_above(&self, pct: u8) -> bool {
        self.failed() * 100 > usize::from(pct) * self.rounds.len()
    }

    /// A reason to go down, if there is one.
    fn judge_down(&self) -> Option<(State, Cause)> {
        let cause = if self.failures >= self.th.down {
            Cause::Failures(self.failures)
        } else if self.window_full() && self.th.max_loss.is_some_and(|m| self.loss_above(m)) {
            Cause::Loss(self.loss_percent().unwrap_or(0), self.rounds.len() as u32)
        } else {
            match (self.window_full(), self.th.max_latency, self.median_rtt()) {
                (true, Some(max), Some(rtt)) if rtt > max => Cause::Latency(rtt),
                _ => return None,
            }
        };
        Some((State::Down, cause))
    }

    /// While Down: whether the gateway is good now, and the recovery once it has been good
    /// for `hold_down`.
    fn judge_recovery(&mut self, now: Instant) -> Option<Cause> {
        let recover_loss = self.th.recover_loss.or(self.th.max_loss);
        let recover_latency = self.th.recover_latency.or(self.th.max_latency);
        let loss_ok = !self.window_full() || recover_loss.is_none_or(|m| !self.loss_above(m));
        let latency_ok = !self.window_full()
            || match (recover_latency, self.median_rtt()) {
                (Some(max), Some(rtt)) => rtt <= max,
                _ => true,
            };
        let good = self.successes >= self.th.up && loss_ok && latency_ok;
        if !good {
            self.good_since = None;
            return None;
        }
        let since = *self.good_since.get_or_insert(now);
        let held = now.saturating_duration_since(since);
        if held < self.th.hold_down {
            None
        } else if self.th.hold_down.is_zero() {
            Some(Cause::Successes(self.successes))
        } else {
            Some(Cause::HeldDown(held))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tracker;

    const MS: Duration = Duration::from_millis(1);

    /// Rounds from a string: `+` an answer in 10 ms, `m` in 100 ms, `s` in 300 ms (slow), `-`
    /// a failure; one round every 100 ms from `t0`. Returns each round's new state, if any.
    fn run(q: &mut Quality, t0: Instant, from_round: u32, rounds: &str) -> Vec<Option<State>> {
        rounds
            .chars()
            .enumerate()
            .map(|(k, c)| {
                let answer = match c {
                    '+' => Some(10 * MS),
                    'm' => Some(100 * MS),
                    's' => Some(300 * MS),
                    _ => None,
                };
                let now = t0 + 100 * MS * (from_round + k as u32);
                q.record(answer, now).map(|c| c.to)
            })
            .collect()
    }

    fn th(up: u32, down: u32, window: u32) -> Thresholds {
        Thresholds::consecutive(up, down, window)
    }

    /// Where in `rounds` the state changed, and to what: `"3:down 9:up"`.
    fn changes(q: &mut Quality, rounds: &str) -> String {
        let t0 = Instant::now();
        let out = run(q, t0, 0, rounds);
        out.iter()
            .enumerate()
            .filter_map(|(k, s)| s.map(|s| format!("{k}:{s}")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn without_quality_fields_it_is_the_tracker() {
        // every sequence of 10 rounds, for a few thresholds, from each start state
        for (up, down) in [(1, 1), (2, 3), (3, 2), (0, 4)] {
            for start in [State::Unknown, State::Up, State::Down] {
                for bits in 0u32..1024 {
                    let t0 = Instant::now();
                    let mut t = Tracker::starting_as(start, up, down);
                    let mut q = Quality::starting_as(start, th(up, down, 4), t0);
                    for k in 0..10 {
                        let ok = bits >> k & 1 == 1;
                        let now = t0 + 100 * MS * k;
                        let want = t.record(ok).map(|tr| (tr.from, tr.to));
                        let got = q.record(ok.then_some(5 * MS), now).map(|c| (c.from, c.to));
                        assert_eq!(got, want, "{up}/{down} from {start}, {bits:010b} at {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn loss_above_and_at_the_thresholds() {
        // window 10, max_loss 20: 2 failed rounds of 10 are 20% (not above), 3 are 30%
        let loss = |max, recover| Thresholds {
            max_loss: Some(max),
            recover_loss: recover,
            ..th(1, 100, 10)
        };
        let cases: &[(&str, Thresholds, &str, &str)] = &[
            ("20% is not above 20%", loss(20, None), "++-+++-+++", "0:up"),
            ("30% is", loss(20, None), "++-++-++-+", "0:up 9:down"),
            // loss is judged only on a full window: 3 failures in the first 3 rounds wait
            ("window not full yet", loss(20, None), "---", ""),
            (
                "then the full window decides",
                loss(20, None),
                "---+++++++",
                "3:up 9:down",
            ),
            (
                "max_loss 0: any failure",
                loss(0, None),
                "++++++++++-",
                "0:up 10:down",
            ),
        ];
        for (what, t, rounds, want) in cases {
            let mut q = Quality::new(t.clone(), Instant::now());
            assert_eq!(changes(&mut q, rounds), *want, "{what}");
        }
        let mut q = Quality::new(loss(20, None), Instant::now());
        run(&mut q, Instant::now(), 0, "--+-+++-++");
        assert_eq!(q.loss_percent(), Some(40));
        assert_eq!(q.rounds(), 10);
    }

    #[test]
    fn window_slides() {
        let t = Thresholds {
            max_loss: Some(20),
            ..th(1, 100, 5)
        };
        let mut q = Quality::starting_as(State::Up, t, Instant::now());
        // one failure per 5 rounds stays at 20%: never above
        assert_eq!(changes(&mut q, "-++++-++++-++++"), "");
        assert_eq!(q.loss_percent(), Some(20));
        // two failures 5 rounds apart are never in the window together
        assert_eq!(changes(&mut q, "+++-++++-+"), "");
        // two failures 4 rounds apart are
        assert_eq!(changes(&mut q, "+++++"), "");
        assert_eq!(changes(&mut q, "+-+++-"), "5:down");
        assert_eq!(q.loss_percent(), Some(40));
        // one failure slides out: 20% is within max_loss (recover_loss defaults to it)
        assert_eq!(changes(&mut q, "+"), "0:up");
        assert_eq!(q.loss_percent(), Some(20));
    }

    #[test]
    fn latency_is_the_median_of_the_answers() {
        let t = Thresholds {
            max_latency: Some(200 * MS),
            ..th(1, 100, 5)
        };
        let mut q = Quality::starting_as(State::Up, t.clone(), Instant::now());
        // 2 slow of 4 answers: median (10 + 300) / 2 = 155 ms; a failure has no RTT
        assert_eq!(changes(&mut q, "+ss+-"), "");
        assert_eq!(q.median_rtt(), Some(155 * MS));
        // 3 slow of 5: median 300 ms
        assert_eq!(changes(&mut q, "s"), "0:down");
        assert_eq!(q.median_rtt(), Some(300 * MS));
        let mut q = Quality::starting_as(State::Up, t, Instant::now());
        assert_eq!(changes(&mut q, "sssss"), "4:down");
        assert_eq!(q.record(None, Instant::now()), None, "down once");
    }

    #[test]
    fn recovery_is_stricter_than_failure() {
        let t = Thresholds {
            max_loss: Some(20),
            recover_loss: Some(0),
            max_latency: Some(200 * MS),
            recover_latency: Some(50 * MS),
            ..th(2, 100, 5)
        };
        let mut q = Quality::starting_as(State::Up, t, Instant::now());
        assert_eq!(
            changes(&mut q, "++--+"),
            "4:down",
            "40% once the window is full"
        );
        // 20% loss is within max_loss but not within recover_loss 0
        assert_eq!(changes(&mut q, "+++"), "");
        assert_eq!(q.loss_percent(), Some(20));
        assert_eq!(changes(&mut q, "+"), "0:up");
        // latency: a median of 300 ms is down; 100 ms is within max (200) but not within
        // recover (50)
        assert_eq!(changes(&mut q, "sss"), "2:down");
        assert_eq!(changes(&mut q, "mmmmm"), "");
        assert_eq!(q.median_rtt(), Some(100 * MS));
        assert_eq!(changes(&mut q, "+++"), "2:up", "3 of 5 fast: median 10 ms");
    }

    #[test]
    fn hold_down_delays_recovery_and_a_failure_restarts_it() {
        let t = Thresholds {
            hold_down: 500 * MS,
            ..th(2, 1, 5)
        };
        let t0 = Instant::now();
        let mut q = Quality::starting_as(State::Up, t, t0);
        let c = q.record(None, t0).unwrap();
        assert_eq!((c.to, c.cause), (State::Down, Cause::Failures(1)));
        assert_eq!(q.since(), t0);
        // rounds every 100 ms: good from round 2 (up 2) at 200 ms, up at 700 ms (round 7)
        let out = run(&mut q, t0, 1, "+++++++");
        assert_eq!(q.good_since(), None);
        assert_eq!(
            out.iter().position(|s| *s == Some(State::Up)),
            Some(6),
            "{out:?}"
        );
        assert_eq!(q.since(), t0 + 700 * MS);

        let mut q = Quality::starting_as(State::Down, q.thresholds().clone(), t0);
        assert_eq!(run(&mut q, t0, 0, "++++"), [None; 4]);
        assert_eq!(q.good_since(), Some(t0 + 100 * MS));
        // a failure at 400 ms: good again from 600 ms (2 successes), up at 1100 ms
        let out = run(&mut q, t0, 4, "-+++++++");
        assert_eq!(q.state(), State::Up);
        let up_at = out.iter().position(|s| s.is_some()).unwrap() as u32 + 4;
        assert_eq!(up_at, 11, "{out:?}");
        let c = {
            let mut again = Quality::starting_as(State::Down, q.thresholds().clone(), t0);
            run(&mut again, t0, 0, "++++++");
            again.record(Some(MS), t0 + 600 * MS).unwrap()
        };
        assert_eq!(c.cause, Cause::HeldDown(500 * MS));
        assert_eq!(c.to_string(), "down -> up after staying good for 500 ms");
    }

    #[test]
    fn hold_down_applies_to_recovery_only() {
        let t = Thresholds {
            hold_down: Duration::from_secs(60),
            ..th(2, 3, 10)
        };
        let mut q = Quality::new(t, Instant::now());
        assert_eq!(changes(&mut q, "++"), "1:up", "Unknown is usable already");
    }

    #[test]
    fn reload_keeps_state_and_trims_the_window() {
        let mut q = Quality::starting_as(State::Up, th(1, 3, 10), Instant::now());
        changes(&mut q, "--++++++++");
        assert_eq!(q.loss_percent(), Some(20));
        q.set_thresholds(Thresholds {
            max_loss: Some(10),
            ..th(1, 3, 4)
        });
        assert_eq!(
            (q.state(), q.rounds(), q.loss_percent()),
            (State::Up, 4, Some(0))
        );
        assert_eq!(changes(&mut q, "-"), "0:down", "1 of 4 is 25%");
    }

    #[test]
    fn change_messages() {
        let c = |from, to, cause| Change { from, to, cause }.to_string();
        assert_eq!(
            c(State::Up, State::Down, Cause::Loss(30, 10)),
            "up -> down with 30% loss over 10 rounds"
        );
        assert_eq!(
            c(State::Up, State::Down, Cause::Latency(300 * MS)),
            "up -> down with a median round trip of 300 ms"
        );
        assert_eq!(
            c(State::Unknown, State::Down, Cause::Failures(3)),
            "unknown -> down after 3 consecutive failures"
        );
        assert_eq!(
            c(State::Down, State::Up, Cause::Successes(2)),
            "down -> up after 2 consecutive successes"
        );
    }
}
