//! Failures of connections that never got past their handshake, reported
//! in moderation: anyone who can reach the port can cause them by the
//! thousand, and a line for each would bury the lines that matter (and
//! cost more than the connection did).
//!
//! The first failure of a kind is reported at once; further ones of that
//! kind within the window are only counted, and when the window ends one
//! line says how many there were: `N more like this in the last 10 s`.
//! So each kind costs at most two lines per window.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::FailureKind;
use crate::report::{Outcome, Report, Reporter, Subject};

/// How many distinct addresses a window names before it says "over".
const ADDRESSES_TOLD: usize = 64;

/// Counts repeated failures of unauthenticated connections, and reports
/// the first of each kind and a summary of the rest.
pub struct Tally {
    reporter: Reporter,
    window: Duration,
    open: Mutex<Vec<Window>>,
}

/// The failures of one kind since the first was reported.
struct Window {
    kind: FailureKind,
    opened: Instant,
    /// Failures counted since, not reported.
    more: u64,
    /// The addresses they came from, up to [`ADDRESSES_TOLD`].
    addresses: Vec<IpAddr>,
    /// Whether more addresses than that were seen.
    overflowed: bool,
}

impl Window {
    fn opened(kind: FailureKind, now: Instant) -> Window {
        Window {
            kind,
            opened: now,
            more: 0,
            addresses: Vec::new(),
            overflowed: false,
        }
    }

    fn count(&mut self, ip: IpAddr) {
        self.more += 1;
        if self.addresses.contains(&ip) {
            return;
        }
        if self.addresses.len() < ADDRESSES_TOLD {
            self.addresses.push(ip);
        } else {
            self.overflowed = true;
        }
    }

    /// The summary of the failures counted, if any were.
    fn summary(&self, window: Duration) -> Option<Report> {
        if self.more == 0 {
            return None;
        }
        let from = match (self.addresses.as_slice(), self.overflowed) {
            ([one], false) => one.to_string(),
            (many, false) => format!("{} addresses", many.len()),
            (_, true) => format!("over {ADDRESSES_TOLD} addresses"),
        };
        let message = format!(
            "{} more like this in the last {} s",
            self.more,
            window.as_secs()
        );
        let outcome = Outcome::failed(self.kind, message);
        Some(Report::now(from, Subject::Connection, None, outcome))
    }
}

impl Tally {
    /// Reports through `reporter`, one line per kind per `window` at most
    /// and a summary.
    pub fn new(reporter: Reporter, window: Duration) -> Tally {
        Tally {
            reporter,
            window,
            open: Mutex::new(Vec::new()),
        }
    }

    /// A connection from `peer` failed before it was authenticated.
    pub fn fail(&self, peer: SocketAddr, kind: FailureKind, message: String) {
        self.fail_at(Instant::now(), peer, kind, message);
    }

    fn fail_at(&self, now: Instant, peer: SocketAddr, kind: FailureKind, message: String) {
        let mut said = Vec::new();
        {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            match open.iter_mut().find(|window| window.kind == kind) {
                Some(window) if now < window.opened + self.window => {
                    window.count(peer.ip());
                    return;
                }
                Some(window) => {
                    said.extend(window.summary(self.window));
                    *window = Window::opened(kind, now);
                }
                None => open.push(Window::opened(kind, now)),
            }
        }
        let outcome = Outcome::failed(kind, message);
        said.push(Report::now(
            peer.to_string(),
            Subject::Connection,
            None,
            outcome,
        ));
        // Reported outside the lock: the reporter may take its time.
        for report in &said {
            (self.reporter)(report);
        }
    }

    /// Reports the summaries of the windows that have ended, and closes
    /// them. Call it at least once a second.
    pub fn flush(&self) {
        self.flush_at(Instant::now());
    }

    fn flush_at(&self, now: Instant) {
        let said = self.close_windows(|window| now >= window.opened + self.window);
        for report in &said {
            (self.reporter)(report);
        }
    }

    /// Reports every summary there is, ended or not: the server is
    /// stopping.
    pub fn flush_all(&self) {
        for report in &self.close_windows(|_| true) {
            (self.reporter)(report);
        }
    }

    fn close_windows(&self, ended: impl Fn(&Window) -> bool) -> Vec<Report> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mut said = Vec::new();
        open.retain(|window| {
            if !ended(window) {
                return true;
            }
            said.extend(window.summary(self.window));
            false
        });
        said
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::ErrorCode;

    const WINDOW: Duration = Duration::from_secs(10);

    fn collecting() -> (Tally, Arc<Mutex<Vec<String>>>) {
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&lines);
        let reporter: Reporter = Arc::new(move |report: &Report| {
            // Without the time stamp: peer onwards.
            let line = report.to_string();
            let (_, rest) = line.split_once(' ').unwrap();
            sink.lock().unwrap().push(rest.to_owned());
        });
        (Tally::new(reporter, WINDOW), lines)
    }

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    fn taken(lines: &Mutex<Vec<String>>) -> Vec<String> {
        std::mem::take(&mut *lines.lock().unwrap())
    }

    #[test]
    fn the_first_failure_of_a_kind_is_told_and_the_rest_summed_up_when_the_window_ends() {
        let (tally, lines) = collecting();
        let start = Instant::now();
        let busy = FailureKind::Code(ErrorCode::Busy);
        for n in 0..200 {
            tally.fail_at(start, peer(1, n), busy, "over the limit".into());
        }
        assert_eq!(
            taken(&lines),
            ["10.0.0.1:0 connection failed busy: over the limit"]
        );
        tally.flush_at(start + WINDOW - Duration::from_millis(1));
        assert!(taken(&lines).is_empty());
        tally.flush_at(start + WINDOW);
        assert_eq!(
            taken(&lines),
            ["10.0.0.1 connection failed busy: 199 more like this in the last 10 s"]
        );
        // The window is closed: the next failure is told again.
        tally.fail_at(start + WINDOW, peer(1, 7), busy, "again".into());
        assert_eq!(taken(&lines), ["10.0.0.1:7 connection failed busy: again"]);
    }

    #[test]
    fn each_kind_has_a_window_of_its_own() {
        let (tally, lines) = collecting();
        let now = Instant::now();
        for _ in 0..3 {
            tally.fail_at(now, peer(1, 1), FailureKind::TlsError, "bad tls".into());
            tally.fail_at(now, peer(2, 1), FailureKind::NotFerry, "not ferry".into());
        }
        assert_eq!(
            taken(&lines),
            [
                "10.0.0.1:1 connection failed tls-error: bad tls",
                "10.0.0.2:1 connection failed not-ferry: not ferry",
            ]
        );
        tally.flush_all();
        assert_eq!(
            taken(&lines),
            [
                "10.0.0.1 connection failed tls-error: 2 more like this in the last 10 s",
                "10.0.0.2 connection failed not-ferry: 2 more like this in the last 10 s",
            ]
        );
    }

    #[test]
    fn a_failure_after_the_window_tells_the_summary_first() {
        let (tally, lines) = collecting();
        let start = Instant::now();
        let kind = FailureKind::ConnectionLost;
        for last in 1..=3 {
            tally.fail_at(start, peer(last, 1), kind, "gone".into());
        }
        tally.fail_at(start + WINDOW, peer(9, 1), kind, "gone".into());
        assert_eq!(
            taken(&lines),
            [
                "10.0.0.1:1 connection failed connection-lost: gone",
                "2 addresses connection failed connection-lost: 2 more like this in the last 10 s",
                "10.0.0.9:1 connection failed connection-lost: gone",
            ]
        );
    }

    #[test]
    fn a_window_with_nothing_counted_closes_without_a_word() {
        let (tally, lines) = collecting();
        let start = Instant::now();
        tally.fail_at(start, peer(1, 1), FailureKind::TlsError, "once".into());
        taken(&lines);
        tally.flush_at(start + WINDOW);
        assert!(taken(&lines).is_empty());
        assert!(tally.open.lock().unwrap().is_empty());
    }

    #[test]
    fn the_addresses_a_summary_names_are_bounded() {
        let (tally, lines) = collecting();
        let now = Instant::now();
        for n in 0..1000u16 {
            let ip = IpAddr::from([10, 0, (n >> 8) as u8, n as u8]);
            tally.fail_at(
                now,
                SocketAddr::new(ip, 1),
                FailureKind::TlsError,
                "x".into(),
            );
        }
        assert!(tally.open.lock().unwrap()[0].addresses.len() <= ADDRESSES_TOLD);
        taken(&lines);
        tally.flush_all();
        assert_eq!(
            taken(&lines),
            ["over 64 addresses connection failed tls-error: 999 more like this in the last 10 s"]
        );
    }
}
