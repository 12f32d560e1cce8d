//! The connections in flight, a task each, and the limits that turn the
//! next one away.
//!
//! A task that panics ends only its own connection; [`Connections::join_next`]
//! says which peer it was serving and why it stopped, so the server can
//! report it like any other failure.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::{Id, JoinError, JoinSet};

use crate::protocol::{ErrorCode, FailureKind};

/// How many connections may be served, and handshaking, at once; and how
/// long an address that fails its handshakes is refused.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served (their token accepted), in all.
    pub total: usize,
    /// Connections served from any one client address; `None` for no
    /// limit of its own.
    pub per_ip: Option<usize>,
    /// Connections in their handshake (TLS and the ferry hello, up to the
    /// token check), in all. More wait in a short line, then are turned
    /// away without any TLS.
    pub handshakes: usize,
    /// Connections in their handshake from any one client address.
    pub handshakes_per_ip: usize,
    /// The longest an address is refused after failed handshakes; the
    /// first failure costs a second, each further one twice the last.
    /// Zero turns penalties off.
    pub max_penalty: Duration,
}

impl Default for Limits {
    /// Why these numbers: README, "Limits and deadlines".
    fn default() -> Self {
        Limits {
            total: 1000,
            // A quarter of the total: one address cannot fill the server,
            // and the benchmark's 200 clients, or an office behind one
            // address, still fit.
            per_ip: Some(256),
            // A handshake takes a few milliseconds of work; 64 at once keep
            // both cores busy, and bound what half-open connections hold.
            handshakes: 64,
            // An eighth of the handshakes: seven other addresses can be
            // shaking hands while one floods.
            handshakes_per_ip: 8,
            max_penalty: Duration::from_secs(60),
        }
    }
}

/// Why a new connection was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the server is serving its limit of {0} connections; try again later")]
    Total(usize),
    #[error("this address holds the server's limit of {0} connections per address; close one or try again later")]
    PerIp(usize),
    #[error("the server has its limit of {0} handshakes in progress; try again in a moment")]
    Handshakes(usize),
    #[error("this address has the server's limit of {0} handshakes in progress per address; try again in a moment")]
    HandshakesPerIp(usize),
    #[error(
        "this address is refused for {} s more after failed handshakes \
         (a token not accepted, bytes that are not ferry, or no handshake in time)",
        whole_seconds(.0)
    )]
    Penalised(Duration),
}

impl Refusal {
    /// The kind of failure a report of it shows.
    pub fn kind(&self) -> FailureKind {
        match self {
            Refusal::Penalised(_) => FailureKind::Penalised,
            Refusal::Total(_)
            | Refusal::PerIp(_)
            | Refusal::Handshakes(_)
            | Refusal::HandshakesPerIp(_) => ErrorCode::Busy.into(),
        }
    }
}

/// A connection's task that has ended.
#[derive(Debug)]
pub struct Ended {
    pub peer: SocketAddr,
    /// The panic message, if the task panicked.
    pub panic: Option<String>,
}

/// The connections in flight and their tasks.
#[derive(Default)]
pub struct Connections {
    tasks: JoinSet<()>,
    peers: HashMap<Id, SocketAddr>,
}

impl Connections {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `peer` with `serve` on a task of its own.
    pub fn spawn(&mut self, peer: SocketAddr, serve: impl Future<Output = ()> + Send + 'static) {
        let id = self.tasks.spawn(serve).id();
        self.peers.insert(id, peer);
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for the next task to end; `None` if there are none. A task
    /// cancelled by [`Connections::abort_all`] ends with no panic.
    pub async fn join_next(&mut self) -> Option<Ended> {
        let (id, panic) = match self.tasks.join_next_with_id().await? {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), panic_message(e)),
        };
        let peer = self.peers.remove(&id)?;
        Some(Ended { peer, panic })
    }

    /// Cancels every task; [`Connections::join_next`] still collects them.
    pub fn abort_all(&mut self) {
        self.tasks.abort_all();
    }
}

/// `duration` in whole seconds, rounded up: a penalty of 0.4 s is "1 s".
fn whole_seconds(duration: &Duration) -> u64 {
    let whole = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    }
}

fn panic_message(error: JoinError) -> Option<String> {
    let payload = error.try_into_panic().ok()?;
    Some(match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "a panic without a message".to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn a_panicking_task_ends_only_itself_and_says_whom_it_served() {
        let mut connections = Connections::new();
        let (done, finished) = tokio::sync::oneshot::channel();
        connections.spawn(addr("10.0.0.1:1"), async {
            panic!("bad frame handling");
        });
        connections.spawn(addr("10.0.0.2:1"), async move {
            tokio::task::yield_now().await;
            done.send("still served").unwrap();
        });
        let mut ended = Vec::new();
        while let Some(end) = connections.join_next().await {
            ended.push((end.peer, end.panic));
        }
        ended.sort();
        assert_eq!(
            ended,
            [
                (addr("10.0.0.1:1"), Some("bad frame handling".to_owned())),
                (addr("10.0.0.2:1"), None),
            ]
        );
        assert_eq!(finished.await, Ok("still served"));
        assert!(connections.is_empty());
        assert!(connections.peers.is_empty());
    }
}
