//! A TCP proxy that a test can take down and bring back: what a server
//! sees when the service behind it goes away (every connection cut, new
//! ones refused) and comes back, with nothing the service held lost.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Forwards connections on a port of 127.0.0.1 to `target`, until dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    down: AtomicBool,
    /// Both ends of every connection open now, to cut them all at once.
    open: Mutex<Vec<TcpStream>>,
    stopped: AtomicBool,
}

impl Proxy {
    /// Starts forwarding to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            down: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        let serving = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if serving.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if serving.down.load(Ordering::SeqCst) {
                    // Accepted only to be closed at once.
                    drop(client);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                forward(&serving, client, upstream);
            }
        });
        Proxy { addr, shared }
    }

    /// The URL to give an S3 client in place of the service's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection and refuses new ones, as a service that
    /// stopped.
    pub fn take_down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        for stream in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn bring_back(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.take_down();
        // Wakes the accepting thread so that it sees the stop.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies both ways between `client` and `upstream` on threads of their
/// own, keeping clones of both so that `take_down` can cut them.
fn forward(shared: &Shared, client: TcpStream, upstream: TcpStream) {
    let (Ok(client_copy), Ok(upstream_copy)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    {
        let mut open = shared.open.lock().unwrap();
        open.retain(|stream| stream.peer_addr().is_ok());
        for stream in [&client, &upstream] {
            if let Ok(clone) = stream.try_clone() {
                open.push(clone);
            }
        }
    }
    std::thread::spawn(move || pipe(client, upstream_copy));
    std::thread::spawn(move || pipe(upstream, client_copy));
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
