//! Penalties per client address, as OpenSSH's `PerSourcePenalties`: an
//! address whose handshake fails in a way no working client's does (a
//! token not accepted, bytes that are neither ferry nor TLS, a TLS
//! handshake abandoned, the handshake deadline run out) has its new
//! connections refused for a while, before any TLS work.
//!
//! The first offence costs [`FIRST_PENALTY`], each further one twice the
//! one before, up to the maximum; one offence is forgiven for every
//! maximum penalty's worth of time without one. So a user who mistypes a
//! token waits a second, while a guesser gets a handful of tries a minute.
//! The table is bounded: past [`CAPACITY`] addresses, the one whose last
//! offence is oldest is forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// What the first offence costs.
pub const FIRST_PENALTY: Duration = Duration::from_secs(1);

/// How many addresses the table remembers at most: about 200 KiB.
pub const CAPACITY: usize = 4096;

/// The addresses that offended lately.
#[derive(Debug)]
pub struct Penalties {
    /// The longest penalty; zero turns penalties off.
    max: Duration,
    capacity: usize,
    records: HashMap<IpAddr, Record>,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    /// Offences not yet forgiven, counting the last.
    offences: u32,
    last: Instant,
    /// Until when new connections are refused.
    until: Instant,
}

impl Record {
    /// The offences left once those forgiven by `now` are taken off.
    fn offences_at(&self, now: Instant, max: Duration) -> u32 {
        let quiet = now.saturating_duration_since(self.last);
        let forgiven = quiet.as_nanos() / max.as_nanos().max(1);
        let forgiven = u32::try_from(forgiven).unwrap_or(u32::MAX);
        self.offences.saturating_sub(forgiven)
    }

    /// Whether the record says nothing any more: no penalty running and
    /// every offence forgiven.
    fn is_spent(&self, now: Instant, max: Duration) -> bool {
        self.until <= now && self.offences_at(now, max) == 0
    }
}

impl Penalties {
    /// A table whose penalties grow up to `max`; zero for none at all.
    pub fn new(max: Duration) -> Penalties {
        Self::with_capacity(max, CAPACITY)
    }

    fn with_capacity(max: Duration, capacity: usize) -> Penalties {
        Penalties {
            max,
            capacity,
            records: HashMap::new(),
        }
    }

    /// How long `ip` is still refused, if it is.
    pub fn refusing(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let record = self.records.get(&ip)?;
        if record.until > now {
            return Some(record.until - now);
        }
        if record.is_spent(now, self.max) {
            self.records.remove(&ip);
        }
        None
    }

    /// Records an offence by `ip` and returns the penalty it earned, if
    /// penalties are on.
    pub fn offend(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.max.is_zero() {
            return None;
        }
        if !self.records.contains_key(&ip) && self.records.len() >= self.capacity {
            self.make_room(now);
        }
        let max = self.max;
        let record = self.records.entry(ip).or_insert(Record {
            offences: 0,
            last: now,
            until: now,
        });
        record.offences = record.offences_at(now, max).saturating_add(1);
        record.last = now;
        // 1 s, 2 s, 4 s, ...: the exponent is capped well before the
        // multiplication could overflow, and the result capped at `max`.
        let doublings = (record.offences - 1).min(30);
        let penalty = FIRST_PENALTY.saturating_mul(1 << doublings).min(max);
        record.until = record.until.max(now + penalty);
        Some(penalty)
    }

    /// Forgets spent records, or else the one whose last offence is oldest.
    fn make_room(&mut self, now: Instant) {
        let max = self.max;
        self.records.retain(|_, record| !record.is_spent(now, max));
        if self.records.len() < self.capacity {
            return;
        }
        let oldest = self
            .records
            .iter()
            .min_by_key(|(_, record)| record.last)
            .map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            self.records.remove(&ip);
        }
    }

    /// How many addresses the table holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn penalties_double_from_a_second_up_to_the_maximum() {
        let mut table = Penalties::new(MAX);
        let now = Instant::now();
        let earned: Vec<u64> = (0..9)
            .map(|_| table.offend(ip(1), now).unwrap().as_secs())
            .collect();
        assert_eq!(earned, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn an_address_is_refused_until_its_penalty_runs_out_and_no_other_is() {
        let mut table = Penalties::new(MAX);
        let now = Instant::now();
        assert_eq!(table.refusing(ip(1), now), None);
        table.offend(ip(1), now);
        table.offend(ip(1), now);
        assert_eq!(table.refusing(ip(1), now), Some(secs(2)));
        assert_eq!(table.refusing(ip(1), now + secs(1)), Some(secs(1)));
        assert_eq!(table.refusing(ip(2), now), None);
        assert_eq!(table.refusing(ip(1), now + secs(2)), None);
    }

    #[test]
    fn offences_are_forgiven_one_per_maximum_penalty_of_good_behaviour() {
        let mut table = Penalties::new(MAX);
        let start = Instant::now();
        for _ in 0..4 {
            table.offend(ip(1), start);
        }
        // Four offences, two forgiven: the next is the third, 4 s.
        let later = start + 2 * MAX;
        assert_eq!(table.offend(ip(1), later), Some(secs(4)));
        // All forgiven: the record goes, and the next offence is a first.
        let much_later = later + 10 * MAX;
        assert_eq!(table.refusing(ip(1), much_later), None);
        assert_eq!(table.len(), 0);
        assert_eq!(table.offend(ip(1), much_later), Some(secs(1)));
    }

    #[test]
    fn a_zero_maximum_turns_penalties_off() {
        let mut table = Penalties::new(Duration::ZERO);
        let now = Instant::now();
        assert_eq!(table.offend(ip(1), now), None);
        assert_eq!(table.refusing(ip(1), now), None);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_full_table_forgets_the_address_whose_last_offence_is_oldest() {
        let mut table = Penalties::with_capacity(MAX, 3);
        let start = Instant::now();
        for n in 1..=3 {
            table.offend(ip(n), start + secs(u64::from(n)));
        }
        table.offend(ip(4), start + secs(4));
        assert_eq!(table.len(), 3);
        // Address 1 offended first and is gone; the others remain.
        assert!(!table.records.contains_key(&ip(1)));
        for n in 2..=4 {
            assert!(table.records.contains_key(&ip(n)), "address {n}");
        }
    }

    #[test]
    fn a_full_table_drops_spent_records_before_any_live_one() {
        let mut table = Penalties::with_capacity(MAX, 2);
        let start = Instant::now();
        table.offend(ip(1), start);
        table.offend(ip(2), start + 2 * MAX);
        // Address 1 is spent by now, address 2 not: 1 goes, 2 stays.
        let now = start + 2 * MAX + secs(1);
        table.offend(ip(3), now);
        assert_eq!(table.len(), 2);
        assert!(table.records.contains_key(&ip(2)));
        assert!(table.records.contains_key(&ip(3)));
    }
}
