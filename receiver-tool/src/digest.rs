//! Completion digests off the receive loop: SHA-256 of a whole window (up to the message
//! size, e.g. 64 MiB, ~30 ms) would stall the loop and let the fill rings run dry. A
//! worker thread hashes windows that are complete and revoked (so nothing writes them
//! any more) and hands the verdicts back; the loop frees a window only after its verdict.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;

use umem::UmemMemory;

/// A window to check.
#[derive(Debug)]
pub struct DigestJob<T> {
    /// UMEM offset of the window's first byte.
    pub addr: u64,
    /// Bytes in the window.
    pub len: u64,
    /// The sender's digest, hex.
    pub expected: String,
    /// Whatever the caller needs back with the verdict.
    pub context: T,
}

/// A checked window.
#[derive(Debug)]
pub struct DigestVerdict<T> {
    /// The job as it was submitted.
    pub job: DigestJob<T>,
    /// True when the window's SHA-256 equals the expected digest.
    pub matches: bool,
}

/// One worker thread and its queues.
pub struct DigestWorker<T> {
    jobs: Option<Sender<DigestJob<T>>>,
    verdicts: Receiver<DigestVerdict<T>>,
    thread: Option<JoinHandle<()>>,
    in_flight: usize,
}

impl<T: Send + 'static> DigestWorker<T> {
    /// Starts the worker over `memory`.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(memory: Arc<UmemMemory>) -> std::io::Result<Self> {
        let (jobs, job_rx) = channel::<DigestJob<T>>();
        let (verdict_tx, verdicts) = channel();
        let thread = std::thread::Builder::new()
            .name("zc-recv-digest".into())
            .spawn(move || {
                for job in job_rx {
                    let matches = window_matches(&memory, job.addr, job.len, &job.expected);
                    if verdict_tx.send(DigestVerdict { job, matches }).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            verdicts,
            thread: Some(thread),
            in_flight: 0,
        })
    }

    /// Queues a window. Its memory must stay unwritten until its verdict comes back.
    pub fn submit(&mut self, job: DigestJob<T>) {
        if let Some(jobs) = &self.jobs
            && jobs.send(job).is_ok()
        {
            self.in_flight += 1;
        }
    }

    /// A verdict, if one is ready.
    pub fn try_verdict(&mut self) -> Option<DigestVerdict<T>> {
        match self.verdicts.try_recv() {
            Ok(v) => {
                self.in_flight -= 1;
                Some(v)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// Windows submitted and not yet returned.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl<T> Drop for DigestWorker<T> {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SHA-256 of `len` bytes at `addr`, compared with `expected` (hex, any case). Reads in
/// cache-sized pieces; a window outside the memory never matches.
fn window_matches(memory: &UmemMemory, addr: u64, len: u64, expected: &str) -> bool {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 256 << 10];
    let mut at = 0;
    while at < len {
        let n = usize::try_from(len - at).map_or(buf.len(), |left| left.min(buf.len()));
        if memory.read(addr + at, &mut buf[..n]).is_err() {
            return false;
        }
        ctx.update(&buf[..n]);
        at += n as u64;
    }
    hex::encode(ctx.finish().as_ref()) == expected.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_hex(data: &[u8]) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
    }

    fn wait<T: Send + 'static>(w: &mut DigestWorker<T>) -> DigestVerdict<T> {
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = w.try_verdict() {
                return v;
            }
            assert!(start.elapsed().as_secs() < 30, "no verdict");
            std::thread::yield_now();
        }
    }

    #[test]
    fn verdicts_match_the_bytes_in_memory() {
        let memory = Arc::new(UmemMemory::new(4 << 20).unwrap());
        let data: Vec<u8> = (0..700_001u32).map(|i| (i * 7 % 251) as u8).collect();
        memory.write(12_345, &data).unwrap();
        let mut w = DigestWorker::start(Arc::clone(&memory)).unwrap();
        let good = sha_hex(&data).to_uppercase();
        w.submit(DigestJob {
            addr: 12_345,
            len: data.len() as u64,
            expected: good.clone(),
            context: 1,
        });
        // One byte off the window: a different digest.
        w.submit(DigestJob {
            addr: 12_346,
            len: data.len() as u64,
            expected: good.clone(),
            context: 2,
        });
        // Past the end of the memory: never matches.
        w.submit(DigestJob {
            addr: 4 << 20,
            len: 10,
            expected: sha_hex(&[0; 10]),
            context: 3,
        });
        assert_eq!(w.in_flight(), 3);
        let verdicts: Vec<(i32, bool)> = (0..3)
            .map(|_| wait(&mut w))
            .map(|v| (v.job.context, v.matches))
            .collect();
        assert_eq!(verdicts, vec![(1, true), (2, false), (3, false)]);
        assert_eq!(w.in_flight(), 0);
    }
}
