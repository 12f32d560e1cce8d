//! The connections being served: a task each, how many every client address
//! holds, and the limits that turn the next one away.
//!
//! A task that panics ends only its own connection; [`Connections::join_next`]
//! says which peer it was serving and why it stopped, so the server can
//! report it like any other failure.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use tokio::task::{Id, JoinError, JoinSet};

/// How many connections may be served at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// In all.
    pub total: usize,
    /// From any one client address; `None` for no limit of its own.
    pub per_ip: Option<usize>,
}

/// Why a new connection was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the server is serving its limit of {0} connections; try again later")]
    Total(usize),
    #[error("this address holds the server's limit of {0} connections per address; close one or try again later")]
    PerIp(usize),
}

/// A connection's task that has ended.
#[derive(Debug)]
pub struct Ended {
    pub peer: SocketAddr,
    /// The panic message, if the task panicked.
    pub panic: Option<String>,
}

/// The connections in flight and their tasks.
pub struct Connections {
    limits: Limits,
    tasks: JoinSet<()>,
    peers: HashMap<Id, SocketAddr>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Connections {
    pub fn new(limits: Limits) -> Self {
        Connections {
            limits,
            tasks: JoinSet::new(),
            peers: HashMap::new(),
            per_ip: HashMap::new(),
        }
    }

    /// Whether one more connection from `ip` is within the limits.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.tasks.len() >= self.limits.total {
            return Err(Refusal::Total(self.limits.total));
        }
        match self.limits.per_ip {
            Some(limit) if self.per_ip.get(&ip).copied().unwrap_or(0) >= limit => {
                Err(Refusal::PerIp(limit))
            }
            _ => Ok(()),
        }
    }

    /// Serves `peer` with `serve` on a task of its own.
    pub fn spawn(&mut self, peer: SocketAddr, serve: impl Future<Output = ()> + Send + 'static) {
        let id = self.tasks.spawn(serve).id();
        self.peers.insert(id, peer);
        *self.per_ip.entry(peer.ip()).or_default() += 1;
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
        let peer = self.forget(id)?;
        Some(Ended { peer, panic })
    }

    /// Cancels every task; [`Connections::join_next`] still collects them.
    pub fn abort_all(&mut self) {
        self.tasks.abort_all();
    }

    fn forget(&mut self, id: Id) -> Option<SocketAddr> {
        let peer = self.peers.remove(&id)?;
        if let Some(count) = self.per_ip.get_mut(&peer.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&peer.ip());
            }
        }
        Some(peer)
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

    fn limits(total: usize, per_ip: Option<usize>) -> Connections {
        Connections::new(Limits { total, per_ip })
    }

    #[tokio::test]
    async fn the_total_limit_turns_away_the_next_connection_until_one_ends() {
        let mut connections = limits(2, None);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        connections.spawn(addr("10.0.0.1:1"), async {
            let _ = released.await;
        });
        connections.spawn(addr("10.0.0.2:1"), std::future::pending());
        let ip = addr("10.0.0.3:1").ip();
        assert_eq!(connections.admit(ip), Err(Refusal::Total(2)));
        release.send(()).unwrap();
        let ended = connections.join_next().await.unwrap();
        assert_eq!(ended.peer, addr("10.0.0.1:1"));
        assert_eq!(connections.admit(ip), Ok(()));
    }

    #[tokio::test]
    async fn the_per_address_limit_counts_each_address_apart() {
        let mut connections = limits(100, Some(2));
        let busy = addr("10.0.0.1:1");
        connections.spawn(busy, std::future::pending());
        connections.spawn(addr("10.0.0.1:2"), async {});
        assert_eq!(connections.admit(busy.ip()), Err(Refusal::PerIp(2)));
        assert_eq!(connections.admit(addr("10.0.0.2:1").ip()), Ok(()));
        connections.join_next().await.unwrap();
        assert_eq!(connections.admit(busy.ip()), Ok(()));
    }

    #[tokio::test]
    async fn a_panicking_task_ends_only_itself_and_says_whom_it_served() {
        let mut connections = limits(10, None);
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
        assert!(connections.per_ip.is_empty());
    }
}
