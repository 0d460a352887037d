//! The receiver's control-plane server: one thread per connection, each request handed to
//! the receive loop (which owns the placement state) and answered with its response.
//!
//! Any host that reaches the port may be hostile. A malformed or oversized message, or a
//! request not whole within the idle limit (silence, or bytes trickled), closes that
//! connection with a logged error; connections beyond the limit are refused (and logged) at once. The server keeps
//! serving the others, and nothing a client sends stops the receiver.

use std::io::{BufReader, BufWriter, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use control::{Request, Response};

/// What connections tell the receive loop.
pub enum Event {
    /// A request of connection `conn`, to be answered on `reply`.
    Request {
        conn: u64,
        request: Request,
        reply: SyncSender<Response>,
    },
    /// Connection `conn` closed (after Bye, an error, a timeout, or EOF).
    Closed { conn: u64 },
}

/// Bounds on what clients may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle: Duration,
}

/// The running server.
pub struct ControlServer {
    /// The address it listens on.
    pub local: SocketAddr,
    refused: Arc<AtomicU64>,
}

impl ControlServer {
    /// Connections refused because too many were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Decrements the open-connection count when a connection's thread ends.
struct OpenSlot(Arc<AtomicUsize>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts listening on `addr`; events arrive on the returned channel.
///
/// # Errors
/// The address cannot be bound.
pub fn start(addr: SocketAddr, events: Sender<Event>, limits: Limits) -> Result<ControlServer> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen for control on {addr}"))?;
    let local = listener.local_addr()?;
    let refused = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&refused);
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for (conn, stream) in (1u64..).zip(listener.incoming()) {
                let Ok(stream) = stream else { continue };
                if open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
                    open.fetch_sub(1, Ordering::AcqRel);
                    counted.fetch_add(1, Ordering::Relaxed);
                    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                    tracing::warn!(
                        "control: refusing connection {conn} from {peer}: {} open (--max-connections)",
                        limits.max_connections
                    );
                    continue;
                }
                let slot = OpenSlot(Arc::clone(&open));
                let events = events.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("control-{conn}"))
                    .spawn(move || {
                        let _slot = slot;
                        if let Err(e) = serve(conn, stream, &events, limits.idle) {
                            tracing::warn!("control connection {conn} closed: {e:#}");
                        }
                        let _ = events.send(Event::Closed { conn });
                    });
                if let Err(e) = spawned {
                    tracing::warn!("control: no thread for connection {conn}: {e}");
                }
            }
        })?;
    Ok(ControlServer { local, refused })
}

/// A stream whose reads fail once `limit` has passed since [`Deadline::restart`]: a
/// request must arrive whole within the limit, so a client cannot hold a connection by
/// trickling a byte per read timeout.
struct Deadline {
    stream: TcpStream,
    limit: Duration,
    until: Instant,
}

impl Deadline {
    fn new(stream: TcpStream, limit: Duration) -> std::io::Result<Self> {
        stream.set_read_timeout(Some(limit))?;
        Ok(Self {
            stream,
            limit,
            until: Instant::now() + limit,
        })
    }

    fn restart(&mut self) {
        self.until = Instant::now() + self.limit;
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let late = || {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no whole request within the idle limit",
            )
        };
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => late(),
            _ => e,
        })
    }
}

fn serve(conn: u64, stream: TcpStream, events: &Sender<Event>, idle: Duration) -> Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(idle))?;
    let mut reader = BufReader::new(Deadline::new(stream.try_clone()?, idle)?);
    let mut writer = BufWriter::new(stream);
    loop {
        reader.get_mut().restart();
        let Some(request) = control::read::<Request>(&mut reader)? else {
            break;
        };
        let bye = request == Request::Bye;
        let (reply, answer): (SyncSender<Response>, Receiver<Response>) = sync_channel(1);
        events
            .send(Event::Request {
                conn,
                request,
                reply,
            })
            .context("receiver stopped")?;
        // A completion may wait for its window; the receive loop always answers (or drops
        // the request when the connection is gone).
        let Ok(response) = answer.recv() else {
            break;
        };
        control::write(&mut writer, &response)?;
        if bye {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// A client that trickles one byte at a time, each well within the read timeout, is
    /// cut off when its request is not whole within the limit.
    #[test]
    fn a_trickling_client_is_cut_off_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let trickle = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            for b in b"{\"type\":\"bye\"" {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        let (stream, _) = listener.accept().unwrap();
        let (events, _rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        let err = serve(1, stream, &events, Duration::from_millis(200)).unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(600), "{err:#}");
        assert!(format!("{err:#}").contains("idle limit"), "{err:#}");
        trickle.join().unwrap();
    }
}
