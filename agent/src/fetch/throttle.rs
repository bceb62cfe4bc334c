//! The agent's bandwidth cap: one token bucket shared by every job, under
//! the lowest of the limits set on it (the caps, self-yield).

use std::sync::Arc;
use std::time::{Duration, Instant};

/// A token bucket shared by every job of one agent: the agent's whole
/// download rate stays under the cap, however many jobs run. The bucket holds
/// at most one second of credit, so an idle hour buys no burst. The cap can
/// change while jobs run ([`Throttle::set_rate`]: the operator's `agent set
/// --bandwidth` arrives with a heartbeat). Each [`Limit`] is set on its
/// own; the bucket runs at the lowest of them, so self-yield composes with
/// the caps and the household floor without either knowing the other.
#[derive(Debug, Clone)]
pub struct Throttle {
    inner: Arc<std::sync::Mutex<Bucket>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(0)
    }
}

/// Who limits a throttle; the lowest limit set wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The caps: the agent's own, the operator's, a run's, the household
    /// floor, a hot device's (the session and the commander combine them).
    Cap = 0,
    /// What self-yield allows now ([`crate::self_yield`]).
    SelfYield = 1,
}

#[derive(Debug)]
struct Bucket {
    /// Each [`Limit`]'s bytes/s; 0 = none.
    limits: [u64; 2],
    /// The lowest limit in bytes/s; 0 = uncapped.
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Throttle {
    /// `bytes_per_second` = 0 means uncapped.
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            inner: Arc::new(std::sync::Mutex::new(Bucket {
                limits: [bytes_per_second, 0],
                rate: bytes_per_second as f64,
                tokens: 0.0,
                last: Instant::now(),
            })),
        }
    }

    /// Changes the cap for every holder (0 = uncapped).
    pub fn set_rate(&self, bytes_per_second: u64) {
        self.set_limit(Limit::Cap, bytes_per_second);
    }

    /// Sets one limit (0 = none); the bucket runs at the lowest.
    pub fn set_limit(&self, which: Limit, bytes_per_second: u64) {
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        b.limits[which as usize] = bytes_per_second;
        let rate = b.limits.iter().copied().fold(0, lower_cap) as f64;
        if b.rate != rate {
            b.rate = rate;
            b.tokens = b.tokens.min(b.rate);
            b.last = Instant::now();
        }
    }

    /// One limit as set (0 = none).
    pub fn limit(&self, which: Limit) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).limits[which as usize]
    }

    /// The rate the bucket runs at: the lowest limit (0 = uncapped).
    pub fn rate(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).rate as u64
    }

    /// Accounts for `n` bytes, waiting as long as the cap requires. The wait
    /// is taken in short steps at whatever the cap is by then, so a cap
    /// lifted (or raised) mid-wait frees the job at once: dropping to a
    /// yield floor of a few KiB/s must not leave a job asleep for a minute
    /// after the household is done.
    pub async fn take(&self, n: u64) {
        let mut debt = n as f64;
        loop {
            let wait = {
                let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                if b.rate <= 0.0 {
                    b.tokens = b.tokens.max(0.0);
                    return;
                }
                let now = Instant::now();
                let refill = now.duration_since(b.last).as_secs_f64() * b.rate;
                b.tokens = (b.tokens + refill).min(b.rate) - debt;
                b.last = now;
                debt = 0.0;
                if b.tokens >= 0.0 {
                    return;
                }
                Duration::from_secs_f64(-b.tokens / b.rate)
            };
            tokio::time::sleep(wait.min(MAX_STEP)).await;
        }
    }
}

/// The lower of two rates where 0 means none.
pub fn lower_cap(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, c) | (c, 0) => c,
        (a, b) => a.min(b),
    }
}

/// Longest single sleep of a throttled job before it looks at the cap again.
const MAX_STEP: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_throttle_holds_all_takers_together_under_the_cap() {
        let throttle = Throttle::new(400_000);
        let started = Instant::now();
        // Two "jobs" of 100 kB each in 10 kB chunks: 200 kB at 400 kB/s.
        let job = |t: Throttle| async move {
            for _ in 0..10 {
                t.take(10_000).await;
            }
        };
        tokio::join!(job(throttle.clone()), job(throttle.clone()));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(450),
            "200 kB at 400 kB/s took only {elapsed:?}"
        );
        // Lifting the cap while jobs hold the throttle frees them at once;
        // setting one again holds them again.
        throttle.set_rate(0);
        let started = Instant::now();
        tokio::join!(job(throttle.clone()), job(throttle.clone()));
        assert_eq!(throttle.rate(), 0);
        let uncapped = started.elapsed();
        throttle.set_rate(100_000);
        let started = Instant::now();
        job(throttle.clone()).await;
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "100 kB at a new cap of 100 kB/s took only {:?} (uncapped: {uncapped:?})",
            started.elapsed()
        );
    }

    #[test]
    fn the_lowest_limit_wins_and_each_is_kept_apart() {
        let throttle = Throttle::new(0);
        throttle.set_limit(Limit::SelfYield, 500);
        assert_eq!(throttle.rate(), 500);
        throttle.set_rate(1000);
        assert_eq!((throttle.rate(), throttle.limit(Limit::Cap)), (500, 1000));
        throttle.set_rate(200);
        assert_eq!(throttle.rate(), 200);
        throttle.set_limit(Limit::SelfYield, 0);
        throttle.set_rate(0);
        assert_eq!(throttle.rate(), 0);
        assert_eq!(lower_cap(0, 7), 7);
        assert_eq!(lower_cap(9, 7), 7);
    }

    #[tokio::test]
    async fn lifting_the_cap_frees_a_waiting_job_at_once() {
        let throttle = Throttle::new(1024);
        throttle.take(1024).await;
        let waiter = throttle.clone();
        let started = Instant::now();
        let job = tokio::spawn(async move { waiter.take(60 * 1024).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        throttle.set_rate(0);
        job.await.expect("join");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a job stayed asleep {:?} after the cap was lifted",
            started.elapsed()
        );
    }
}
