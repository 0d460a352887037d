//! The control client: one connection per stream, typed requests and responses.

use std::io::{BufReader, BufWriter};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use control::{Request, Response};

/// The control connection of one stream.
pub(crate) struct Control {
    pub(crate) reader: BufReader<TcpStream>,
    pub(crate) writer: BufWriter<TcpStream>,
}

impl Control {
    pub(crate) fn connect(addr: SocketAddr) -> Result<(Self, IpAddr)> {
        let start = Instant::now();
        let stream = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < Duration::from_secs(10) => {
                    tracing::debug!("control connect: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot reach receiver at {addr}"));
                }
            }
        };
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?.ip();
        Ok((
            Self {
                reader: BufReader::new(stream.try_clone()?),
                writer: BufWriter::new(stream),
            },
            local,
        ))
    }

    pub(crate) fn call(&mut self, req: &Request) -> Result<Response> {
        control::write(&mut self.writer, req)?;
        match control::read::<Response>(&mut self.reader)? {
            Some(Response::Error { message }) => bail!("receiver refused {req:?}: {message}"),
            Some(r) => Ok(r),
            None => bail!("receiver closed the control connection"),
        }
    }
}
