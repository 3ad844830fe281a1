//! A token-bucket rate limiter shared by the upload workers, so that a backup of a production
//! server never sends faster than its cap (default 300 Mbit/s, [`crate::source_load`]).
//!
//! The bucket fills at `rate` bytes per second up to `burst` bytes. [`Throttle::acquire`] takes
//! `n` tokens; when the bucket holds fewer it goes into debt and the caller sleeps until the debt
//! is paid back, so a request larger than the burst (one chunk frame can be several MiB) still
//! passes, just later. Waiting callers do not spin: each computes its wake-up time once and
//! sleeps until then. Over any interval the bytes let through are at most
//! `burst + rate * seconds` — the accounting is exact (integer nanoseconds and bytes), and the
//! unit tests check it with a fake clock.
//!
//! The core ([`Bucket`]) is pure: it takes "now" as an argument and answers how long to wait.
//! [`Throttle`] adds the lock, the monotonic clock ([`Instant`]) and the sleep.

use std::sync::Mutex;
use std::time::{Duration, Instant};

const NANOS_PER_SEC: u128 = 1_000_000_000;
/// Burst when the caller gives none: 100 ms worth of the rate, so a pause does not buy a
/// multi-second burst, and at least 64 KiB so tiny rates still pass whole requests soon.
const DEFAULT_BURST_TIME: Duration = Duration::from_millis(100);
const MIN_BURST: u64 = 64 << 10;

/// Token-bucket arithmetic on a caller-supplied clock (nanoseconds since any fixed origin).
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: u64,
    burst: u64,
    /// Tokens held at `last`, in byte-nanoseconds per second units: `tokens * 1e9`, so that
    /// refills of less than one byte are not lost. Negative is debt.
    level: i128,
    last: u128,
}

impl Bucket {
    /// A full bucket of `burst` bytes filling at `rate` bytes/s (`rate` > 0).
    pub fn new(rate: u64, burst: u64, now_ns: u128) -> Self {
        let burst = burst.max(1);
        Bucket {
            rate: rate.max(1),
            burst,
            level: i128::from(burst) * NANOS_PER_SEC as i128,
            last: now_ns,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Take `n` bytes at `now_ns`; returns how long the caller must wait before sending them
    /// (zero when the bucket held them). A clock that goes backwards refills nothing.
    pub fn take(&mut self, n: u64, now_ns: u128) -> Duration {
        let cap = i128::from(self.burst) * NANOS_PER_SEC as i128;
        if now_ns > self.last {
            let elapsed = (now_ns - self.last).min(u128::from(u64::MAX)) as i128;
            // elapsed ≤ 2^64 and rate ≤ 2^64: the product fits in i128.
            self.level = (self.level + elapsed * i128::from(self.rate)).min(cap);
            self.last = now_ns;
        }
        self.level -= i128::from(n) * NANOS_PER_SEC as i128;
        if self.level >= 0 {
            return Duration::ZERO;
        }
        // Debt d (in byte·ns/s) is paid back in d / rate nanoseconds; round up.
        let debt = self.level.unsigned_abs();
        let rate = u128::from(self.rate);
        let ns = debt.div_ceil(rate);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// A thread-safe limiter; `None` rate means unlimited (acquire returns at once).
#[derive(Debug)]
pub struct Throttle {
    bucket: Option<Mutex<Bucket>>,
    origin: Instant,
}

impl Throttle {
    /// Limit to `rate` bytes/s (`None` or `Some(0)`: unlimited) with a burst of 100 ms of the
    /// rate, at least 64 KiB.
    pub fn new(rate: Option<u64>) -> Self {
        let burst = rate.map_or(0, |r| {
            let b = u128::from(r) * DEFAULT_BURST_TIME.as_nanos() / NANOS_PER_SEC;
            u64::try_from(b).unwrap_or(u64::MAX).max(MIN_BURST)
        });
        Self::with_burst(rate, burst)
    }

    pub fn with_burst(rate: Option<u64>, burst: u64) -> Self {
        let origin = Instant::now();
        Throttle {
            bucket: rate
                .filter(|&r| r > 0)
                .map(|r| Mutex::new(Bucket::new(r, burst, 0))),
            origin,
        }
    }

    pub fn unlimited() -> Self {
        Self::new(None)
    }

    /// The cap in bytes/s, `None` when unlimited.
    pub fn rate(&self) -> Option<u64> {
        self.bucket.as_ref().map(|b| lock(b).rate())
    }

    /// Account for `n` bytes about to be sent, sleeping as long as the cap requires.
    pub fn acquire(&self, n: u64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Account for `n` bytes and return how long to wait before sending them.
    pub fn reserve(&self, n: u64) -> Duration {
        match &self.bucket {
            None => Duration::ZERO,
            Some(b) => {
                let now = self.origin.elapsed().as_nanos();
                lock(b).take(n, now)
            }
        }
    }
}

/// The bucket's state is consistent after every statement of `take`; a poisoned lock (a panic
/// elsewhere while holding it cannot happen inside `take`) is taken over.
fn lock(m: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const S: u128 = NANOS_PER_SEC;

    #[test]
    fn a_full_bucket_lets_the_burst_through_then_waits_exactly() {
        // 1000 B/s, burst 100 B.
        let mut b = Bucket::new(1000, 100, 0);
        assert_eq!(b.take(100, 0), Duration::ZERO);
        // Empty: 50 more bytes cost 50 ms.
        assert_eq!(b.take(50, 0), Duration::from_millis(50));
        // A second caller at the same instant queues behind the first: 50 + 10 ms.
        assert_eq!(b.take(10, 0), Duration::from_millis(60));
        // After the debt is paid (60 ms), the bucket is empty but not in debt.
        assert_eq!(b.take(0, 60 * S / 1000), Duration::ZERO);
        assert_eq!(b.take(1, 60 * S / 1000), Duration::from_millis(1));
    }

    #[test]
    fn idle_time_refills_no_more_than_the_burst() {
        let mut b = Bucket::new(1000, 100, 0);
        assert_eq!(b.take(100, 0), Duration::ZERO);
        // An hour idle: still only 100 bytes of credit.
        let t = 3600 * S;
        assert_eq!(b.take(100, t), Duration::ZERO);
        assert_eq!(b.take(100, t), Duration::from_millis(100));
    }

    #[test]
    fn a_request_larger_than_the_burst_passes_after_its_debt() {
        let mut b = Bucket::new(1_000_000, 1000, 0);
        // 4 MiB at 1 MB/s with 1000 B in the bucket.
        let n = 4 << 20;
        let want = Duration::from_nanos(((n - 1000) as u128 * S / 1_000_000) as u64);
        assert_eq!(b.take(n, 0), want);
    }

    #[test]
    fn bytes_let_through_never_exceed_burst_plus_rate_times_time() {
        // Simulate callers that send as soon as allowed: the total over T is burst + rate*T.
        for &(rate, burst, size) in &[
            (37_500_000u64, 3_750_000u64, 4u64 << 20),
            (1000, 100, 7),
            (1, 1, 1),
            (123_457, 64 << 10, 1500),
        ] {
            let mut b = Bucket::new(rate, burst, 0);
            let mut now: u128 = 0;
            let mut sent: u128 = 0;
            let horizon = 10 * S;
            while now < horizon {
                let wait = b.take(size, now);
                now += wait.as_nanos();
                // Sent at `now`: check the bound at that instant.
                sent += u128::from(size);
                let allowed = u128::from(burst) + u128::from(rate) * now / S;
                assert!(
                    sent <= allowed + 1,
                    "rate {rate} burst {burst}: {sent} > {allowed} at {now} ns"
                );
            }
            // And the limiter is not stingy: within one request of the bound.
            let allowed = u128::from(burst) + u128::from(rate) * now / S;
            assert!(
                sent + u128::from(size) + 1 >= allowed,
                "rate {rate}: sent {sent}, allowed {allowed}"
            );
        }
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let mut b = Bucket::new(1000, 100, 5 * S);
        assert_eq!(b.take(100, 5 * S), Duration::ZERO);
        assert_eq!(b.take(10, S), Duration::from_millis(10));
    }

    #[test]
    fn unlimited_and_zero_never_wait() {
        for t in [Throttle::unlimited(), Throttle::new(Some(0))] {
            assert_eq!(t.rate(), None);
            assert_eq!(t.reserve(u64::MAX), Duration::ZERO);
        }
    }

    #[test]
    fn default_burst_is_100ms_of_the_rate_at_least_64k() {
        let t = Throttle::new(Some(37_500_000));
        let b = t.bucket.as_ref().map(|b| lock(b).burst());
        assert_eq!(b, Some(3_750_000));
        let t = Throttle::new(Some(1000));
        assert_eq!(t.bucket.as_ref().map(|b| lock(b).burst()), Some(64 << 10));
    }

    /// Real time, several threads: 4 workers push 256 KiB pieces through a 20 MB/s cap for
    /// about 6 s; the measured rate must be within 10% of the cap.
    #[test]
    fn real_time_rate_holds_within_ten_percent_across_threads() {
        let rate = 20_000_000u64;
        let t = Arc::new(Throttle::new(Some(rate)));
        let piece = 256u64 << 10;
        let per_thread = 30u64 * (1 << 20); // 4 × 30 MiB = 126 MB ≈ 6.3 s at 20 MB/s
        let start = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let mut sent = 0;
                    while sent < per_thread {
                        t.acquire(piece);
                        sent += piece;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("worker");
        }
        let secs = start.elapsed().as_secs_f64();
        let burst = rate / 10;
        // The first `burst` bytes went through at once; measure the rest.
        let measured = (4 * per_thread - burst) as f64 / secs;
        let err = (measured - rate as f64).abs() / rate as f64;
        eprintln!(
            "throttle: {:.2} MB/s against a cap of {:.2} MB/s over {secs:.2} s ({:.2}% off)",
            measured / 1e6,
            rate as f64 / 1e6,
            err * 100.0
        );
        assert!(err < 0.10, "measured {measured} B/s against {rate} B/s");
    }
}
