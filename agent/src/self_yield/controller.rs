//! The pure core of self-yield: round-trip samples and the agent's byte
//! count in, the rate its transfers may take out. No clock, no socket and
//! no task: time is passed in, so the tests feed it samples and instants.
//!
//! After LEDBAT (RFC 6817) and cake-autorate:
//!
//! - **Base delay**: the lowest RTT seen, kept as one minimum per minute
//!   over the last [`BASE_MINUTES`] minutes (LEDBAT's base history), so a
//!   route that changes is forgotten within that time while one busy minute
//!   does not lift the base.
//! - **Current delay**: the lowest of the last [`CURRENT_SAMPLES`] samples
//!   (LEDBAT's current-delay filter: one late probe is noise, not a queue).
//! - **Queuing delay** = current − base: what the uplink's queue adds.
//! - **Over the target**: the rate is cut multiplicatively, from what was
//!   actually delivered, more the further over (LEDBAT's proportional
//!   response), by at least [`MIN_CUT`] and at most [`MAX_CUT`], never below
//!   the floor; then no further cut for [`CUT_HOLD`], the time the cut
//!   takes to drain the queue it found.
//! - **Under the target**: the rate grows additively, in proportion to how
//!   far under, by a step fixed at the last cut ([`increase_step`]), and
//!   only while the transfers actually run at it (a limit nobody reaches
//!   must not wind up). At the ceiling (the caps that apply anyway) the
//!   limit is lifted.
//!
//! Known cost: in the namespace test (10 Mbit/s, a base RTT of 0.2 ms, a
//! loss-based origin) the queue stays empty but the transfer uses about a
//! quarter of the link: the controller settles well under its target,
//! not at it. Holding the rate through the receiver (reads, so the TCP
//! window) reacts late and in bursts; that is where tuning goes next.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Minutes of base history: LEDBAT's BASE_HISTORY is 10.
pub const BASE_MINUTES: usize = 10;

/// Samples in the current-delay filter: at ten probes a second, the lower
/// of two drops any single late answer and still sees a queue within
/// 200 ms (LEDBAT's filter of a few samples is per packet, far denser).
pub const CURRENT_SAMPLES: usize = 2;

/// How hard a queue over the target cuts: the rate is multiplied by
/// `1 − DECREASE_GAIN × (queue − target) / target` (within [`MAX_CUT`] and
/// [`MIN_CUT`]): a queue at twice the target cuts a quarter.
pub const DECREASE_GAIN: f64 = 0.25;

/// Over how long the delivered rate is measured: a second covers several
/// token-bucket refills and TCP windows, so it is the rate, not a burst.
pub const DELIVERED_WINDOW: Duration = Duration::from_secs(1);

/// The smallest cut (×0.95): a queue just over the target still shrinks.
pub const MIN_CUT: f64 = 0.95;

/// The largest cut (×0.5), for a queue three times the target or more.
pub const MAX_CUT: f64 = 0.5;

/// After a cut, how long before the next: the reduced rate needs this long
/// to drain what the socket buffers and the uplink's queue already hold;
/// cutting again sooner would answer the same queue twice.
pub const CUT_HOLD: Duration = Duration::from_millis(500);

/// Transfers count as running at the limit when they deliver at least
/// this share of it; only then does the limit grow. Half: a sender whose
/// window shrank while it was held back needs a while to fill a raised
/// limit, and must not hold it down meanwhile.
pub const BINDING: f64 = 0.5;

/// The smallest additive step, per second at full distance under the
/// target: 256 KiB/s more each second.
pub const MIN_STEP: f64 = 256.0 * 1024.0;

/// How long after its last cut the agent still says it is backing off:
/// what the commander passes on to the agents sharing its uplink.
pub const BACKING_OFF_FOR: Duration = Duration::from_secs(10);

/// What the controller is set to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The queuing delay the agent may add.
    pub target: Duration,
    /// The lowest rate it cuts to (bytes/s): a lease is never stalled.
    pub floor: u64,
}

/// Where the controller stands after a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// The rate transfers are held to (bytes/s); 0 = none.
    pub rate: u64,
    /// The queuing delay measured: current − base.
    pub queuing: Duration,
    /// The base delay.
    pub base: Duration,
    /// A cut within [`BACKING_OFF_FOR`].
    pub backing_off: bool,
}

/// The delay-based rate controller of one path (one probe target).
#[derive(Debug, Clone)]
pub struct Controller {
    settings: Settings,
    /// One minimum per minute, newest last: (minute start, lowest RTT).
    base: VecDeque<(Instant, Duration)>,
    /// The last few samples, newest last.
    recent: VecDeque<Duration>,
    /// Readings of the agent's byte counter over [`DELIVERED_WINDOW`].
    delivered: VecDeque<(Instant, u64)>,
    /// The limit (bytes/s); None: not limiting.
    rate: Option<f64>,
    /// Additive step per second, set at each cut.
    step: f64,
    last_cut: Option<Instant>,
    last_sample: Option<Instant>,
    reading: Reading,
}

impl Controller {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            base: VecDeque::new(),
            recent: VecDeque::new(),
            delivered: VecDeque::new(),
            rate: None,
            step: MIN_STEP,
            last_cut: None,
            last_sample: None,
            reading: Reading::default(),
        }
    }

    /// The latest reading.
    pub fn reading(&self) -> Reading {
        self.reading
    }

    /// Whether a base delay is known yet.
    pub fn has_base(&self) -> bool {
        !self.base.is_empty()
    }

    /// A sample taken while the path is idle: it teaches the base only.
    pub fn note_idle(&mut self, now: Instant, rtt: Duration) {
        self.note_base(now, rtt);
        self.reading.base = self.base.iter().map(|(_, d)| *d).min().unwrap_or(rtt);
    }

    /// The transfers stopped: the limit goes, the base history stays (the
    /// path is the same when they start again).
    pub fn idle(&mut self) {
        self.rate = None;
        self.recent.clear();
        self.delivered.clear();
        self.last_sample = None;
        self.reading.rate = 0;
        self.reading.queuing = Duration::ZERO;
    }

    /// One sample: `rtt` measured at `now`, the agent's byte counter
    /// (`bytes`, all transfers so far) and the caps that apply anyway
    /// (`ceiling`, bytes/s, 0 = none).
    pub fn sample(&mut self, now: Instant, rtt: Duration, bytes: u64, ceiling: u64) -> Reading {
        self.note_base(now, rtt);
        self.recent.push_back(rtt);
        while self.recent.len() > CURRENT_SAMPLES {
            self.recent.pop_front();
        }
        let delivered = self.note_delivered(now, bytes);
        let base = self.base.iter().map(|(_, d)| *d).min().unwrap_or(rtt);
        let current = self.recent.iter().copied().min().unwrap_or(rtt);
        let queuing = current.saturating_sub(base);
        let target = self.settings.target.as_secs_f64().max(1e-3);
        let off = (target - queuing.as_secs_f64()) / target;
        let dt = self
            .last_sample
            .map(|at| now.saturating_duration_since(at).as_secs_f64().min(0.5))
            .unwrap_or(0.0);
        self.last_sample = Some(now);
        if queuing > self.settings.target {
            self.cut(now, off, delivered);
        } else if let Some(rate) = self.rate {
            let binding = delivered.is_some_and(|d| d >= BINDING * rate);
            let grown = if binding {
                rate + self.step * off * dt
            } else {
                rate
            };
            self.rate = (ceiling == 0 || grown < ceiling as f64).then_some(grown);
        }
        if let (Some(rate), true) = (self.rate, ceiling > 0) {
            self.rate = Some(rate.min(ceiling as f64));
        }
        self.reading = Reading {
            rate: self.rate.map(|r| r as u64).unwrap_or(0),
            queuing,
            base,
            backing_off: self
                .last_cut
                .is_some_and(|at| now.saturating_duration_since(at) < BACKING_OFF_FOR),
        };
        self.reading
    }

    /// Over the target by `-off` of it: cut from what was delivered.
    fn cut(&mut self, now: Instant, off: f64, delivered: Option<f64>) {
        if self
            .last_cut
            .is_some_and(|at| now.saturating_duration_since(at) < CUT_HOLD)
        {
            return;
        }
        let from = match (self.rate, delivered) {
            (Some(rate), Some(d)) => rate.min(d),
            (Some(rate), None) => rate,
            (None, Some(d)) => d,
            // Nothing measured yet to cut from: the next sample will have it.
            (None, None) => return,
        };
        let factor = (1.0 + DECREASE_GAIN * off).clamp(MAX_CUT, MIN_CUT);
        let rate = (from * factor).max(self.settings.floor as f64);
        self.step = increase_step(rate);
        self.rate = Some(rate);
        self.last_cut = Some(now);
    }

    fn note_base(&mut self, now: Instant, rtt: Duration) {
        match self.base.back_mut() {
            Some((start, min)) if now.saturating_duration_since(*start) < MINUTE => {
                *min = (*min).min(rtt);
            }
            _ => self.base.push_back((now, rtt)),
        }
        while self.base.len() > BASE_MINUTES {
            self.base.pop_front();
        }
    }

    /// The delivered rate (bytes/s) over the window, once it spans a
    /// fifth of it.
    fn note_delivered(&mut self, now: Instant, bytes: u64) -> Option<f64> {
        self.delivered.push_back((now, bytes));
        while self.delivered.len() > 2
            && now.saturating_duration_since(self.delivered[1].0) >= DELIVERED_WINDOW
        {
            self.delivered.pop_front();
        }
        let (first, count) = *self.delivered.front()?;
        let span = now.saturating_duration_since(first).as_secs_f64();
        (span >= DELIVERED_WINDOW.as_secs_f64() / 5.0)
            .then(|| bytes.saturating_sub(count) as f64 / span)
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// The additive step after a cut to `rate`: a quarter of it per second
/// (at least [`MIN_STEP`]), so the rate regains a 25 % cut in about a
/// second and a half on any link, a slow DSL line or a fast fibre.
pub fn increase_step(rate: f64) -> f64 {
    (rate / 4.0).max(MIN_STEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const TARGET: Duration = Duration::from_millis(25);
    const FLOOR: u64 = 32 << 10;

    fn controller() -> Controller {
        Controller::new(Settings {
            target: TARGET,
            floor: FLOOR,
        })
    }

    /// A simulated transfer: feeds samples every 100 ms, the byte counter
    /// advancing at `rate` (bytes/s).
    struct Sim {
        c: Controller,
        now: Instant,
        bytes: u64,
    }

    impl Sim {
        fn new() -> Self {
            Self {
                c: controller(),
                now: Instant::now(),
                bytes: 0,
            }
        }
        fn step(&mut self, rtt: Duration, delivering: f64, ceiling: u64) -> Reading {
            self.now += 100 * MS;
            self.bytes += (delivering / 10.0) as u64;
            self.c.sample(self.now, rtt, self.bytes, ceiling)
        }
    }

    #[test]
    fn an_idle_path_is_not_limited_and_its_base_is_the_lowest_rtt() {
        let mut sim = Sim::new();
        for rtt in [30, 20, 24, 22, 21] {
            let r = sim.step(rtt * MS, 5e6, 0);
            assert_eq!(r.rate, 0, "no queue, no limit");
            assert!(!r.backing_off);
        }
        let r = sim.c.reading();
        assert_eq!(r.base, 20 * MS);
        assert_eq!(r.queuing, MS, "the lower of the last two is 21 ms");
    }

    #[test]
    fn one_late_probe_is_filtered_out() {
        let mut sim = Sim::new();
        for _ in 0..5 {
            sim.step(20 * MS, 5e6, 0);
        }
        let r = sim.step(200 * MS, 5e6, 0);
        assert_eq!(r.rate, 0, "one late answer among four is noise: {r:?}");
        assert_eq!(r.queuing, Duration::ZERO);
    }

    #[test]
    fn a_queue_over_the_target_cuts_from_what_was_delivered_in_proportion() {
        // (queuing delay ms, expected factor of the delivered rate)
        let table = [
            (26, MIN_CUT),
            (30, MIN_CUT),
            (40, 0.85),
            (50, 0.75),
            (75, MAX_CUT),
            (500, MAX_CUT),
        ];
        for (queuing, factor) in table {
            let mut sim = Sim::new();
            for _ in 0..10 {
                sim.step(10 * MS, 4e6, 0);
            }
            let mut r = Reading::default();
            for _ in 0..CURRENT_SAMPLES {
                r = sim.step((10 + queuing) * MS, 4e6, 0);
            }
            let expected = 4e6 * factor;
            assert!(
                (r.rate as f64 - expected).abs() < 0.02 * expected,
                "queue {queuing} ms: rate {} expected {expected}",
                r.rate
            );
            assert!(r.backing_off);
            assert_eq!(r.queuing, queuing * MS);
        }
    }

    #[test]
    fn cuts_wait_for_the_last_one_to_drain_and_stop_at_the_floor() {
        let mut sim = Sim::new();
        for _ in 0..10 {
            sim.step(10 * MS, 100e3, 0);
        }
        let mut rates = Vec::new();
        for _ in 0..40 {
            let r = sim.step(300 * MS, 100e3, 0);
            rates.push(r.rate);
        }
        let cuts = rates.windows(2).filter(|w| w[1] < w[0]).count();
        // 4 s of samples, one cut per CUT_HOLD at most.
        assert!(cuts <= 8, "{cuts} cuts in 4 s: {rates:?}");
        assert_eq!(rates.last(), Some(&FLOOR), "held at the floor");
    }

    #[test]
    fn under_the_target_the_rate_grows_additively_only_while_it_binds() {
        let mut sim = Sim::new();
        for _ in 0..10 {
            sim.step(10 * MS, 4e6, 0);
        }
        for _ in 0..CURRENT_SAMPLES {
            sim.step(110 * MS, 4e6, 0);
        }
        let cut = sim.c.reading().rate as f64;
        assert!((cut - 2e6).abs() < 1e5, "{cut}");
        // The queue drains; transfers run at the limit: +1/4 per second
        // at the full distance under the target.
        let mut r = Reading::default();
        for _ in 0..10 {
            let rate = sim.c.reading().rate as f64;
            r = sim.step(10 * MS, rate, 0);
        }
        let grown = r.rate as f64;
        let expected = cut + increase_step(cut);
        assert!(
            (grown - expected).abs() < 0.05 * expected,
            "after 1 s: {grown}, expected {expected}"
        );
        // Transfers slower than the limit (the origin is the bottleneck):
        // once the delivered rate shows it, the limit holds still instead
        // of winding up.
        for _ in 0..15 {
            sim.step(10 * MS, 0.3 * grown, 0);
        }
        let settled = sim.c.reading().rate;
        assert!((settled as f64) < 1.2 * grown, "{settled} after {grown}");
        for _ in 0..50 {
            r = sim.step(10 * MS, 0.3 * grown, 0);
        }
        assert_eq!(r.rate, settled, "wound up: {r:?}");
    }

    #[test]
    fn growth_slows_near_the_target_and_the_ceiling_lifts_the_limit() {
        let mut sim = Sim::new();
        for _ in 0..10 {
            sim.step(10 * MS, 4e6, 0);
        }
        for _ in 0..CURRENT_SAMPLES {
            sim.step(70 * MS, 4e6, 0);
        }
        let cut = sim.c.reading().rate as f64;
        let mut near = sim.clone_with_rtt(30 * MS);
        let mut far = sim.clone_with_rtt(10 * MS);
        assert!(
            far.rate > near.rate && near.rate as f64 > cut,
            "near {near:?} far {far:?}"
        );
        // A ceiling below the limit lifts it: the other caps govern.
        for _ in 0..3 {
            near = sim.step(10 * MS, cut, 1_000_000);
        }
        assert_eq!(near.rate, 0, "{near:?}");
        far = sim.step(10 * MS, 1e6, 1_000_000);
        assert_eq!(far.rate, 0);
    }

    impl Sim {
        /// A second's samples at `rtt` on a copy, running at the limit.
        fn clone_with_rtt(&self, rtt: Duration) -> Reading {
            let mut copy = Sim {
                c: self.c.clone(),
                now: self.now,
                bytes: self.bytes,
            };
            let mut r = copy.c.reading();
            for _ in 0..10 {
                let rate = copy.c.reading().rate as f64;
                r = copy.step(rtt, rate, 0);
            }
            r
        }
    }

    #[test]
    fn the_base_forgets_minutes_older_than_its_history() {
        let mut c = controller();
        let start = Instant::now();
        c.sample(start, 5 * MS, 0, 0);
        for minute in 1..=BASE_MINUTES as u64 {
            let at = start + Duration::from_secs(60 * minute);
            c.sample(at, 40 * MS, 0, 0);
        }
        let r = c.sample(start + Duration::from_secs(60 * 10 + 1), 40 * MS, 0, 0);
        assert_eq!(r.base, 40 * MS, "the 5 ms minute is gone: {r:?}");
    }

    #[test]
    fn going_idle_lifts_the_limit_and_keeps_the_base() {
        let mut sim = Sim::new();
        for _ in 0..10 {
            sim.step(10 * MS, 4e6, 0);
        }
        for _ in 0..CURRENT_SAMPLES {
            sim.step(80 * MS, 4e6, 0);
        }
        assert!(sim.c.reading().rate > 0);
        sim.c.idle();
        assert_eq!(sim.c.reading().rate, 0);
        let r = sim.step(12 * MS, 0.0, 0);
        assert_eq!((r.rate, r.base), (0, 10 * MS));
    }
}
