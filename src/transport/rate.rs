//! A cap on how fast bodies move (`--limit-rate`): a token bucket that the
//! send and receive loops ask before each piece how much may move now.
//!
//! The bucket holds at most a tenth of a second's worth, so a limited
//! transfer moves in pieces of that size, ten a second, and never bursts
//! past the rate after an idle spell. It is kept as the time at which
//! everything granted so far would have moved at exactly the rate (the
//! "theoretical arrival time" of GCRA): bytes may move while that time is
//! less than a bucket's worth ahead of now. The clock is passed in, so the
//! logic is tested without waiting.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// The most a bucket holds, as time at the rate: smooth enough that a
/// limited transfer reads as steady, coarse enough for few wake-ups.
const BUCKET: Duration = Duration::from_millis(100);

/// A token bucket of `bytes_per_second`, holding [`BUCKET`]'s worth.
#[derive(Debug, Clone)]
pub struct RateLimit {
    bytes_per_second: NonZeroU64,
    /// The most bytes granted at once: a bucket's worth, at least one.
    burst: u64,
    /// When all the bytes moved so far would have moved at the rate.
    paid_until: Instant,
}

/// What [`RateLimit::grant`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This many bytes (at least one) may move now.
    Now(u64),
    /// Nothing yet: ask again after this long.
    After(Duration),
}

impl RateLimit {
    /// A full bucket at `now`.
    pub fn new(bytes_per_second: NonZeroU64, now: Instant) -> RateLimit {
        let mut limit = RateLimit {
            bytes_per_second,
            burst: 0,
            paid_until: now,
        };
        limit.burst = limit.bytes_in(BUCKET).max(1);
        limit
    }

    /// How many of `want` bytes may move at `now`: as many as the bucket
    /// holds, once it holds a whole piece (`want`, or a bucket's worth if
    /// less), so that pieces do not shrink to a byte each.
    pub fn grant(&self, want: u64, now: Instant) -> Grant {
        let piece = want.clamp(1, self.burst);
        let ahead = self.paid_until.saturating_duration_since(now);
        let bucket = self.time_for(self.burst);
        let allowed = self.bytes_in(bucket.saturating_sub(ahead));
        if allowed >= piece {
            Grant::Now(allowed.min(want.max(1)))
        } else {
            // Until what was paid for ahead leaves room for the piece.
            let wait = (ahead + self.time_for(piece)).saturating_sub(bucket);
            Grant::After(wait.max(Duration::from_nanos(1)))
        }
    }

    /// Counts `bytes` moved at `now`, granted or not (a read may bring
    /// fewer than asked for, bytes already buffered none asked for).
    pub fn moved(&mut self, bytes: u64, now: Instant) {
        self.paid_until = self.paid_until.max(now) + self.time_for(bytes);
    }

    /// How long `bytes` take at the rate, rounded up.
    fn time_for(&self, bytes: u64) -> Duration {
        let nanos =
            (u128::from(bytes) * 1_000_000_000).div_ceil(u128::from(self.bytes_per_second.get()));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many whole bytes move in `time` at the rate.
    fn bytes_in(&self, time: Duration) -> u64 {
        let bytes = time.as_nanos() * u128::from(self.bytes_per_second.get()) / 1_000_000_000;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

/// A connection's optional [`RateLimit`], on tokio's clock: with none, it
/// grants everything at once and never touches the clock.
#[derive(Debug, Default)]
pub struct Throttle(Option<RateLimit>);

impl Throttle {
    /// A throttle to `bytes_per_second`; 0 for none.
    pub fn new(bytes_per_second: u64) -> Throttle {
        Throttle(NonZeroU64::new(bytes_per_second).map(|rate| RateLimit::new(rate, now())))
    }

    /// How many of `want` bytes to move in the next piece: all of them
    /// unless limited, otherwise what the bucket holds, once it holds a
    /// piece, sleeping (never blocking a thread) until then.
    pub async fn piece(&self, want: usize) -> usize {
        let Some(limit) = &self.0 else {
            return want;
        };
        loop {
            match limit.grant(want as u64, now()) {
                Grant::Now(bytes) => return usize::try_from(bytes).unwrap_or(want).min(want),
                Grant::After(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Counts `bytes` moved.
    pub fn moved(&mut self, bytes: u64) {
        if let Some(limit) = &mut self.0 {
            limit.moved(bytes, now());
        }
    }
}

/// Now on tokio's clock, which tests may pause.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: u64, now: Instant) -> RateLimit {
        RateLimit::new(NonZeroU64::new(rate).unwrap(), now)
    }

    #[test]
    fn a_full_bucket_grants_a_tenth_of_a_second_at_most() {
        let start = Instant::now();
        let bucket = limit(1_000_000, start);
        for (want, granted) in [
            (1, 1),
            (50_000, 50_000),
            (100_000, 100_000),
            (5_000_000, 100_000),
        ] {
            assert_eq!(
                bucket.grant(want, start),
                Grant::Now(granted),
                "want {want}"
            );
        }
    }

    #[test]
    fn an_empty_bucket_waits_for_a_whole_piece() {
        let start = Instant::now();
        let mut bucket = limit(1_000_000, start);
        bucket.moved(100_000, start);
        // A whole bucket's worth: 100 ms; a smaller piece, its own time.
        assert_eq!(
            bucket.grant(1 << 20, start),
            Grant::After(Duration::from_millis(100))
        );
        assert_eq!(
            bucket.grant(10_000, start),
            Grant::After(Duration::from_millis(10))
        );
        let later = start + Duration::from_millis(40);
        assert_eq!(
            bucket.grant(1 << 20, later),
            Grant::After(Duration::from_millis(60))
        );
        let refilled = start + Duration::from_millis(100);
        assert_eq!(bucket.grant(1 << 20, refilled), Grant::Now(100_000));
    }

    #[test]
    fn moving_more_than_granted_is_paid_for_by_waiting_longer() {
        let start = Instant::now();
        let mut bucket = limit(1_000, start);
        bucket.moved(1_100, start);
        assert_eq!(
            bucket.grant(100, start),
            Grant::After(Duration::from_millis(1_100))
        );
    }

    #[test]
    fn an_idle_spell_fills_the_bucket_and_no_more() {
        let start = Instant::now();
        let mut bucket = limit(1_000_000, start);
        bucket.moved(100_000, start);
        let hour_later = start + Duration::from_secs(3600);
        assert_eq!(bucket.grant(u64::MAX, hour_later), Grant::Now(100_000));
    }

    #[test]
    fn over_many_pieces_the_rate_is_kept_exactly() {
        // 3 MB at 1 MB/s, each piece taken as soon as it is granted: 3 s,
        // less the full bucket the transfer starts with.
        let start = Instant::now();
        let mut bucket = limit(1_000_000, start);
        let (mut now, mut left) = (start, 3_000_000_u64);
        while left > 0 {
            match bucket.grant(left, now) {
                Grant::Now(bytes) => {
                    assert!(bytes <= 100_000);
                    bucket.moved(bytes, now);
                    left -= bytes;
                }
                Grant::After(wait) => now += wait,
            }
        }
        assert_eq!(now - start, Duration::from_millis(2_900));
    }

    #[test]
    fn a_rate_below_ten_bytes_a_second_still_moves_a_byte_at_a_time() {
        let start = Instant::now();
        let mut bucket = limit(2, start);
        assert_eq!(bucket.grant(10, start), Grant::Now(1));
        bucket.moved(1, start);
        assert_eq!(
            bucket.grant(10, start),
            Grant::After(Duration::from_millis(500))
        );
    }
}
