//! The receiver's control-plane server: one thread per connection, each request handed to
//! the receive loop (which owns the placement state) and answered with its response.
//! A malformed or oversized message closes that connection with a logged error; the
//! server keeps serving the others.

use std::io::{BufReader, BufWriter};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};

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
    /// Connection `conn` closed (after Bye, an error, or EOF).
    Closed { conn: u64 },
}

/// Starts listening on `addr`; events arrive on the returned channel.
///
/// # Errors
/// The address cannot be bound.
pub fn start(addr: SocketAddr, events: Sender<Event>) -> Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen for control on {addr}"))?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for (conn, stream) in (1u64..).zip(listener.incoming()) {
                let Ok(stream) = stream else { continue };
                let events = events.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("control-{conn}"))
                    .spawn(move || {
                        if let Err(e) = serve(conn, stream, &events) {
                            tracing::error!("control connection {conn}: {e:#}");
                        }
                        let _ = events.send(Event::Closed { conn });
                    });
            }
        })?;
    Ok(local)
}

fn serve(conn: u64, stream: TcpStream, events: &Sender<Event>) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    while let Some(request) = control::read::<Request>(&mut reader)? {
        let bye = request == Request::Bye;
        let (reply, answer): (SyncSender<Response>, Receiver<Response>) = sync_channel(1);
        events
            .send(Event::Request {
                conn,
                request,
                reply,
            })
            .context("receiver stopped")?;
        let response = answer.recv().context("receiver stopped")?;
        control::write(&mut writer, &response)?;
        if bye {
            break;
        }
    }
    Ok(())
}
