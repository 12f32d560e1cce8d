//! Where connections arrive: the gate decides, a short line holds those
//! it cannot let in yet, and those it refuses are turned away, all at a
//! bounded, small cost: no task of their own, no TLS, one report line per
//! kind per window.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::connections::{Limits, Refusal};
use super::gate::{Admission, Gate, Pass};
use super::tally::Tally;
use crate::protocol::{encode, ErrorCode, Message, Preamble};

/// The longest a connection waits in line for a handshake place before it
/// is turned away: less than a client's default timeout (10 s), so a
/// client that waited still has time for its handshake.
const LINE_WAIT: Duration = Duration::from_secs(5);

/// How many connections may wait in line per handshake place, in all; any
/// one address may take half of the line. A waiting connection costs a
/// descriptor and a few words; with the default 64 handshakes, 256 from
/// one address may wait: 200 clients started at once from one address
/// all get in (with no line, 70 to 150 of them were turned away).
const LINE_PER_HANDSHAKE: usize = 8;

/// How many turned-away connections may linger at once, their answer sent
/// and their input read and dropped until they close: a clean end, so the
/// answer is not lost to a reset. Past this many, they are closed at once.
const MAX_LINGERING: usize = 16;

/// How long a turned-away connection may linger.
const LINGER_TIME: Duration = Duration::from_secs(1);

/// A connection waiting for a handshake place: a socket and a few words,
/// no task and no TLS.
#[derive(Debug)]
pub struct Waiting {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub arrived: Instant,
    /// Turned away once this passes.
    pub until: Instant,
    /// Why, if it is turned away.
    pub refusal: Refusal,
}

/// Connections waiting, first come first served, for a handshake place;
/// bounded in all and per address.
#[derive(Debug)]
pub struct Line {
    waiting: VecDeque<Waiting>,
    per_ip: HashMap<IpAddr, usize>,
    capacity: usize,
    capacity_per_ip: usize,
}

impl Line {
    /// A line of at most `capacity` connections, `capacity_per_ip` of
    /// them from any one address.
    pub fn new(capacity: usize, capacity_per_ip: usize) -> Line {
        Line {
            waiting: VecDeque::new(),
            per_ip: HashMap::new(),
            capacity,
            capacity_per_ip,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Puts `waiting` at the end of the line, or gives it back if there is
    /// no room for it.
    pub fn join(&mut self, waiting: Waiting) -> Result<(), Waiting> {
        let ip = waiting.peer.ip();
        let ahead = self.per_ip.get(&ip).copied().unwrap_or(0);
        if self.waiting.len() >= self.capacity || ahead >= self.capacity_per_ip {
            return Err(waiting);
        }
        self.per_ip.insert(ip, ahead + 1);
        self.waiting.push_back(waiting);
        Ok(())
    }

    /// When the first connection in line is to be turned away.
    pub fn next_deadline(&self) -> Option<Instant> {
        // Every connection waits as long, so the first is due first.
        self.waiting.front().map(|waiting| waiting.until)
    }

    /// Takes out, in order, the connections `decide` does not keep in
    /// line, with what it decided; stops asking once it says `Stop`.
    pub fn take<T>(&mut self, mut decide: impl FnMut(&Waiting) -> Turn<T>) -> Vec<(Waiting, T)> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        while let Some(waiting) = self.waiting.pop_front() {
            match decide(&waiting) {
                Turn::Keep => kept.push_back(waiting),
                Turn::Take(decision) => {
                    self.forget(waiting.peer.ip());
                    taken.push((waiting, decision));
                }
                Turn::Stop => {
                    kept.push_back(waiting);
                    kept.extend(self.waiting.drain(..));
                }
            }
        }
        self.waiting = kept;
        taken
    }

    fn forget(&mut self, ip: IpAddr) {
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// What [`Line::take`] does with one connection in line.
pub enum Turn<T> {
    /// Leave it in line.
    Keep,
    /// Take it out.
    Take(T),
    /// Leave it and every one after it.
    Stop,
}

/// Where connections arrive: the gate, the line before it, and turning
/// away, all without a task or any TLS of their own.
pub struct Door {
    gate: Arc<Gate>,
    line: Line,
    /// Connections turned away, ending cleanly; at most [`MAX_LINGERING`].
    lingering: JoinSet<()>,
    tally: Arc<Tally>,
    /// Whether the server speaks plain ferry, so a turned-away client can
    /// be told why in a frame it reads.
    plain: bool,
    line_wait: Duration,
}

impl Door {
    /// A door enforcing `limits`, reporting failures to `tally`; `plain`
    /// if the server speaks plain ferry. No connection waits in line
    /// longer than its handshake may take.
    pub fn new(limits: Limits, tally: Arc<Tally>, plain: bool, header_timeout: Duration) -> Door {
        let line = limits.handshakes.saturating_mul(LINE_PER_HANDSHAKE);
        Door {
            gate: Gate::new(limits),
            line: Line::new(line, line / 2),
            lingering: JoinSet::new(),
            tally,
            plain,
            line_wait: LINE_WAIT.min(header_timeout),
        }
    }

    /// The gate, whose [`Gate::freed`] says when to call [`Door::let_in`].
    pub fn gate(&self) -> Arc<Gate> {
        Arc::clone(&self.gate)
    }

    /// When to call [`Door::send_away_overdue`] next, if anyone waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.line.next_deadline()
    }

    /// Completes when a lingering connection has ended; never, if none
    /// lingers.
    pub async fn reap_lingering(&mut self) {
        if self.lingering.join_next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Lets a connection that just arrived in, into the line, or turns it
    /// away.
    pub fn arrive(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        mut start: impl FnMut(TcpStream, SocketAddr, Pass),
    ) {
        // Those waiting go first, as far as their addresses' limits allow.
        self.let_in(&mut start);
        let arrived = Instant::now();
        match self.gate.admit(peer.ip(), arrived) {
            Admission::Start(pass) => start(stream, peer, pass),
            Admission::Refuse(refusal) => self.turn_away(stream, peer, refusal),
            Admission::Wait(refusal) => {
                let waiting = Waiting {
                    stream,
                    peer,
                    arrived,
                    until: arrived + self.line_wait,
                    refusal,
                };
                if let Err(waiting) = self.line.join(waiting) {
                    self.turn_away(waiting.stream, waiting.peer, waiting.refusal);
                }
            }
        }
    }

    /// Lets in, first come first served, those waiting whom the gate now
    /// admits, and turns away those it now refuses.
    pub fn let_in(&mut self, mut start: impl FnMut(TcpStream, SocketAddr, Pass)) {
        if self.line.is_empty() {
            return;
        }
        let gate = Arc::clone(&self.gate);
        // Addresses found at their own limit in this pass: the rest of
        // their connections stay in line without asking the gate again, so
        // a line full of one flooding address costs one question a pass.
        let mut at_their_limit: Vec<IpAddr> = Vec::new();
        let decided = self.line.take(|waiting| {
            let ip = waiting.peer.ip();
            if at_their_limit.contains(&ip) {
                return Turn::Keep;
            }
            match gate.admit(ip, waiting.arrived) {
                // No place for anyone: the rest of the line waits too.
                Admission::Wait(Refusal::Handshakes(_)) => Turn::Stop,
                Admission::Wait(_) => {
                    at_their_limit.push(ip);
                    Turn::Keep
                }
                admission => Turn::Take(admission),
            }
        });
        for (waiting, admission) in decided {
            match admission {
                Admission::Start(pass) => start(waiting.stream, waiting.peer, pass),
                Admission::Refuse(refusal) | Admission::Wait(refusal) => {
                    self.turn_away(waiting.stream, waiting.peer, refusal)
                }
            }
        }
    }

    /// Turns away those who waited in line as long as they may.
    pub fn send_away_overdue(&mut self) {
        let now = Instant::now();
        let overdue = self.line.take(|waiting| {
            if waiting.until <= now {
                Turn::Take(())
            } else {
                // The rest came later and are due later.
                Turn::Stop
            }
        });
        for (waiting, ()) in overdue {
            self.turn_away(waiting.stream, waiting.peer, waiting.refusal);
        }
    }

    /// Turns a connection away at a bounded, small cost: no TLS; on a
    /// plain server the preamble and `Error{busy}` in one write that does
    /// not wait; one line per kind per window. A few linger to end cleanly;
    /// the rest are closed at once.
    fn turn_away(&mut self, stream: TcpStream, peer: SocketAddr, refusal: Refusal) {
        let reason = refusal.to_string();
        if self.plain {
            // What does not fit in the socket's buffer at once is not sent.
            let _ = stream.try_write(&busy_answer(&reason));
        }
        self.tally.fail(peer, refusal.kind(), reason);
        if self.lingering.len() < MAX_LINGERING {
            self.lingering.spawn(linger(stream));
        } else {
            // Reading what already arrived spares the client a reset that
            // could cost it the answer, if the answer is all there is.
            let mut arrived = [0u8; 512];
            let _ = stream.try_read(&mut arrived);
        }
    }
}

/// The preamble and an `Error{busy}` saying `reason`: all a plain client
/// turned away needs to read.
fn busy_answer(reason: &str) -> Vec<u8> {
    let mut answer = Preamble::OURS.to_bytes().to_vec();
    let error = Message::Error {
        code: ErrorCode::Busy,
        message: reason.to_owned(),
    };
    if encode(&error, &mut answer).is_err() {
        // A refusal's words are far below the frame limit; the preamble
        // alone still says the connection is over.
        answer.truncate(Preamble::OURS.to_bytes().len());
    }
    answer
}

/// Ends a turned-away connection cleanly: says no more, and reads and
/// drops what the client still sends, until it closes or
/// [`LINGER_TIME`] is up.
async fn linger(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let _ = stream.shutdown().await;
        let mut dropped = [0u8; 1024];
        while let Ok(1..) = stream.read(&mut dropped).await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// A connection to a listener of this test for each of `peers`, each
    /// from that peer as far as the line is concerned.
    async fn waiting(peers: &[&str]) -> (tokio::net::TcpListener, Vec<Waiting>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let mut all = Vec::new();
        for peer in peers {
            let stream = TcpStream::connect(target).await.unwrap();
            let now = Instant::now();
            all.push(Waiting {
                stream,
                peer: addr(peer),
                arrived: now,
                until: now + Duration::from_secs(5),
                refusal: Refusal::Handshakes(1),
            });
        }
        (listener, all)
    }

    #[tokio::test]
    async fn the_line_is_bounded_in_all_and_per_address() {
        let (_listener, all) = waiting(&[
            "10.0.0.1:1",
            "10.0.0.1:2",
            "10.0.0.1:3",
            "10.0.0.2:1",
            "10.0.0.3:1",
        ])
        .await;
        let mut line = Line::new(3, 2);
        let joined: Vec<bool> = all.into_iter().map(|w| line.join(w).is_ok()).collect();
        assert_eq!(joined, [true, true, false, true, false]);
        assert_eq!(line.len(), 3);
    }

    #[tokio::test]
    async fn the_line_gives_out_connections_in_order_skipping_those_kept() {
        let (_listener, all) =
            waiting(&["10.0.0.1:1", "10.0.0.2:1", "10.0.0.1:2", "10.0.0.3:1"]).await;
        let mut line = Line::new(10, 10);
        for w in all {
            line.join(w).unwrap();
        }
        let taken = line.take(|w| {
            if w.peer.ip() == addr("10.0.0.1:0").ip() {
                Turn::Keep
            } else {
                Turn::Take(w.peer.port())
            }
        });
        let peers: Vec<String> = taken.iter().map(|(w, _)| w.peer.to_string()).collect();
        assert_eq!(peers, ["10.0.0.2:1", "10.0.0.3:1"]);
        assert_eq!(line.len(), 2);
        let first = line.take(|_| Turn::Stop::<()>);
        assert!(first.is_empty());
        let rest: Vec<String> = line
            .take(|_| Turn::Take(()))
            .iter()
            .map(|(w, _)| w.peer.to_string())
            .collect();
        assert_eq!(rest, ["10.0.0.1:1", "10.0.0.1:2"]);
        assert!(line.is_empty() && line.per_ip.is_empty());
    }
}
