//! Who may begin a handshake and who may be served, as OpenSSH's
//! `MaxStartups`, `PerSourceMaxStartups` and `PerSourcePenalties` decide.
//!
//! A connection passes the gate twice. On arrival, before any TLS work:
//! refused at once if its address is serving a penalty or the server is
//! serving its limit of authenticated connections, made to wait if the
//! handshakes in progress are at their limit (in all, or from its address),
//! else let in to its handshake. Once its token is accepted, it is
//! promoted: it stops counting as a handshake and counts against the
//! limits on connections served. So connections that never authenticate
//! hold only handshake places, which are few, bounded per address and
//! short-lived, and never the places of those being served.
//!
//! A [`Pass`] is a connection's place; dropping it gives the place back,
//! however the connection ends (a panic included).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::connections::{Limits, Refusal};
use super::penalties::Penalties;

/// The counts behind the limits, shared by the accept loop and the
/// connections' tasks.
pub struct Gate {
    limits: Limits,
    state: Mutex<State>,
    /// Woken when a handshake place is given back.
    freed: Notify,
}

struct State {
    handshaking: Counts,
    served: Counts,
    penalties: Penalties,
}

/// Connections in one stage, in all and per address.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Counts {
    fn of(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }

    fn add(&mut self, ip: IpAddr) {
        self.total += 1;
        *self.per_ip.entry(ip).or_default() += 1;
    }

    fn remove(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// What to do with a connection that arrived.
#[derive(Debug)]
pub enum Admission {
    /// Begin its handshake now.
    Start(Pass),
    /// Handshakes are at their limit: let it wait for a place, or turn it
    /// away with this if it cannot.
    Wait(Refusal),
    /// Turn it away now, without any TLS.
    Refuse(Refusal),
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            state: Mutex::new(State {
                handshaking: Counts::default(),
                served: Counts::default(),
                penalties: Penalties::new(limits.max_penalty),
            }),
            freed: Notify::new(),
        })
    }

    /// Decides on a connection from `ip` that arrived at `arrived`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, arrived: Instant) -> Admission {
        let limits = &self.limits;
        let mut state = self.lock();
        if let Some(left) = state.penalties.refusing(ip, Instant::now()) {
            return Admission::Refuse(Refusal::Penalised(left));
        }
        if let Err(full) = limits.check_served(&state.served, ip) {
            return Admission::Refuse(full);
        }
        if state.handshaking.total >= limits.handshakes {
            return Admission::Wait(Refusal::Handshakes(limits.handshakes));
        }
        if state.handshaking.of(ip) >= limits.handshakes_per_ip {
            return Admission::Wait(Refusal::HandshakesPerIp(limits.handshakes_per_ip));
        }
        state.handshaking.add(ip);
        Admission::Start(Pass {
            gate: Arc::clone(self),
            ip,
            arrived,
            served: false,
        })
    }

    /// Completes when a handshake place may have been given back since the
    /// last call.
    pub async fn freed(&self) {
        self.freed.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The counts are updated in single steps; a panic cannot leave
        // them half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Limits {
    /// Whether one more authenticated connection from `ip` is within the
    /// limits.
    fn check_served(&self, served: &Counts, ip: IpAddr) -> Result<(), Refusal> {
        if served.total >= self.total {
            return Err(Refusal::Total(self.total));
        }
        match self.per_ip {
            Some(limit) if served.of(ip) >= limit => Err(Refusal::PerIp(limit)),
            _ => Ok(()),
        }
    }
}

/// A connection's place: a handshake's, then once promoted a served
/// connection's. Given back when dropped.
pub struct Pass {
    gate: Arc<Gate>,
    ip: IpAddr,
    arrived: Instant,
    served: bool,
}

impl std::fmt::Debug for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass")
            .field("ip", &self.ip)
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

impl Pass {
    /// When the connection arrived: its handshake deadline runs from here.
    pub fn arrived(&self) -> Instant {
        self.arrived
    }

    /// Moves a connection whose token was accepted from the handshakes to
    /// the connections served, if they have room for it.
    pub fn promote(&mut self) -> Result<(), Refusal> {
        if self.served {
            return Ok(());
        }
        {
            let mut state = self.gate.lock();
            self.gate.limits.check_served(&state.served, self.ip)?;
            state.handshaking.remove(self.ip);
            state.served.add(self.ip);
        }
        self.served = true;
        self.gate.freed.notify_one();
        Ok(())
    }

    /// Records that the connection's handshake failed as no working
    /// client's does; returns the penalty its address earned, if any.
    pub fn offend(&self) -> Option<Duration> {
        self.gate.lock().penalties.offend(self.ip, Instant::now())
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        {
            let mut state = self.gate.lock();
            if self.served {
                state.served.remove(self.ip);
            } else {
                state.handshaking.remove(self.ip);
            }
        }
        if !self.served {
            self.gate.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn gate(total: usize, per_ip: Option<usize>, handshakes: usize, per_ip_hs: usize) -> Arc<Gate> {
        Gate::new(Limits {
            total,
            per_ip,
            handshakes,
            handshakes_per_ip: per_ip_hs,
            max_penalty: Duration::from_secs(60),
        })
    }

    fn start(gate: &Arc<Gate>, from: IpAddr) -> Pass {
        match gate.admit(from, Instant::now()) {
            Admission::Start(pass) => pass,
            other => panic!("expected a start, got {other:?}"),
        }
    }

    fn admitted(gate: &Arc<Gate>, from: IpAddr) -> Result<(), Refusal> {
        match gate.admit(from, Instant::now()) {
            Admission::Start(_) => Ok(()),
            Admission::Wait(why) | Admission::Refuse(why) => Err(why),
        }
    }

    #[test]
    fn handshakes_are_capped_per_address_and_in_all() {
        let gate = gate(100, None, 3, 2);
        let _a = start(&gate, ip(1));
        let b = start(&gate, ip(1));
        assert!(matches!(
            gate.admit(ip(1), Instant::now()),
            Admission::Wait(Refusal::HandshakesPerIp(2))
        ));
        let _c = start(&gate, ip(2));
        assert!(matches!(
            gate.admit(ip(3), Instant::now()),
            Admission::Wait(Refusal::Handshakes(3))
        ));
        drop(b);
        let _d = start(&gate, ip(1));
    }

    #[test]
    fn a_promoted_connection_frees_its_handshake_place_and_counts_as_served() {
        let gate = gate(1, None, 1, 1);
        let mut first = start(&gate, ip(1));
        first.promote().unwrap();
        // The handshake place is free again, but the one served place is
        // taken: the next arrival is refused before its handshake.
        assert_eq!(admitted(&gate, ip(2)), Err(Refusal::Total(1)));
        drop(first);
        let mut second = start(&gate, ip(2));
        second.promote().unwrap();
    }

    #[test]
    fn promotion_fails_when_the_served_places_filled_during_the_handshake() {
        let gate = gate(1, None, 4, 4);
        let mut first = start(&gate, ip(1));
        let mut second = start(&gate, ip(2));
        first.promote().unwrap();
        assert_eq!(second.promote(), Err(Refusal::Total(1)));
        drop(second);
        // The failed promotion kept the handshake place until the drop.
        assert!(gate.lock().handshaking.per_ip.is_empty());
    }

    #[test]
    fn the_per_address_limit_on_served_connections_counts_each_address_apart() {
        let gate = gate(100, Some(2), 10, 10);
        let mut one = start(&gate, ip(1));
        let mut two = start(&gate, ip(1));
        one.promote().unwrap();
        two.promote().unwrap();
        assert_eq!(admitted(&gate, ip(1)), Err(Refusal::PerIp(2)));
        assert_eq!(admitted(&gate, ip(2)), Ok(()));
        drop(one);
        assert_eq!(admitted(&gate, ip(1)), Ok(()));
    }

    #[test]
    fn an_offending_address_is_refused_and_no_other() {
        let gate = gate(100, None, 10, 10);
        let pass = start(&gate, ip(1));
        assert_eq!(pass.offend(), Some(Duration::from_secs(1)));
        drop(pass);
        assert!(matches!(
            admitted(&gate, ip(1)),
            Err(Refusal::Penalised(left)) if left <= Duration::from_secs(1)
        ));
        assert_eq!(admitted(&gate, ip(2)), Ok(()));
    }

    #[test]
    fn every_place_is_given_back() {
        let gate = gate(10, Some(10), 10, 10);
        let passes: Vec<Pass> = (0..5).map(|n| start(&gate, ip(n % 2))).collect();
        for (n, mut pass) in passes.into_iter().enumerate() {
            if n % 2 == 0 {
                pass.promote().unwrap();
            }
        }
        let state = gate.lock();
        assert_eq!((state.handshaking.total, state.served.total), (0, 0));
        assert!(state.handshaking.per_ip.is_empty() && state.served.per_ip.is_empty());
    }
}
