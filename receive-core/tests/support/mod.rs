//! A receiver driven through the kernel model, and senders that speak to it through the
//! control plane and build sealed frames, all in plain memory: no root, no kernel.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use control::{Granted, Request, Response};
use copy_fallback::cpu::CpuEngine;
use copy_fallback::decider::Decider;
use copy_fallback::pipeline::CopyPipeline;
use copy_fallback::{Completion, CopyEngine, CopyTarget, Descriptor, Health, Refused};
use psp::{
    DerivedKey, FlowTemplate, FrameBuilder, Hint, IpEndpoints, MasterKey, MasterKeys, Sa,
    SegmentSpec, Version,
};
use receive_core::grant_table::WholeFrame;
use receive_core::kernel_model::{KernelModel, ModelLanding};
use receive_core::{
    ConnId, Limits, Output, Payload, Receiver, ReceiverConfig, RegionSpec, Report, RunFacts,
    Timestamp, UmemTarget,
};
use std::sync::atomic::{AtomicBool, Ordering};
use umem::{Layout, Order, UmemMemory};

/// Receiver's MSS in these tests.
pub const MSS: u32 = 1400;

/// Bytes before the payload in the frames these tests build: Ethernet 14, IPv4 20, UDP 8,
/// PSP 16, hint 16, TCP 20.
pub const FRAME_HEADER_LEN: u32 = 94;

/// The copy engine of most tests: copies on the calling thread.
pub type CpuCopies = CpuEngine<UmemTarget, Payload>;

/// The receiver under test (copying through `E`), the kernel model, and the clock.
pub struct Harness<E: CopyEngine<Payload> = CpuCopies> {
    pub memory: &'static Arc<UmemMemory>,
    pub layout: Layout,
    pub rx: Receiver<'static, UmemTarget, E>,
    pub kernel: KernelModel,
    pub now: Timestamp,
    out: Vec<Output>,
    /// Answers that came from polls, not yet taken.
    pub replies: Vec<(ConnId, Response)>,
    /// What grant requests declare as their frames' header length (whole-frame landing).
    pub frame_header_len: Option<u32>,
    /// The MSS grant requests ask for: [`MSS`], or what fills the frame cap.
    pub mss: u32,
}

/// A region of the harness: id, bytes, late (activates `activation_delay` after its
/// first grant).
#[derive(Debug, Clone, Copy)]
pub struct RegionDef {
    pub id: u32,
    pub len: u64,
    pub late: bool,
}

/// Knobs of a harness.
#[derive(Debug, Clone)]
pub struct Setup {
    pub regions: Vec<RegionDef>,
    pub queues: usize,
    pub window: u32,
    pub bounce_frames: u32,
    pub bounce_depth: u32,
    pub max_staged_bytes: usize,
    /// Whole frames land, back to front: with their ICV (trailer 16, a zero-copy NIC) or
    /// without (trailer 0, the PSP-offload model).
    pub whole_frame: Option<WholeFrame>,
    /// Predict slots (false: copy everything).
    pub predict: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            regions: vec![RegionDef {
                id: 1,
                len: 4 << 20,
                late: false,
            }],
            queues: 1,
            window: 64,
            bounce_frames: 1024,
            bounce_depth: 16,
            max_staged_bytes: 64 << 20,
            whole_frame: None,
            predict: true,
        }
    }
}

impl Harness {
    /// Copies on the CPU.
    pub fn new(setup: &Setup) -> Self {
        Self::with_engine(setup, Decider::CPU_ONLY, CpuEngine::new)
    }
}

impl<E: CopyEngine<Payload>> Harness<E> {
    /// Copies through the engine `make` builds, as `decider` says.
    pub fn with_engine(
        setup: &Setup,
        decider: Decider,
        make: impl FnOnce(Arc<UmemTarget>) -> E,
    ) -> Self {
        let ids: Vec<(u32, u64)> = setup.regions.iter().map(|r| (r.id, r.len)).collect();
        let layout = Layout::new(&ids, setup.bounce_frames, 2048).expect("layout");
        // Leaked: the receiver borrows the memory for the whole test.
        let memory: &'static Arc<UmemMemory> = Box::leak(Box::new(Arc::new(
            UmemMemory::with_layout(&layout).expect("UMEM in plain memory"),
        )));
        let regions = setup
            .regions
            .iter()
            .map(|r| RegionSpec {
                id: r.id,
                base: layout.region(r.id).expect("laid out").base,
                len: r.len,
                late: r.late,
            })
            .collect();
        let config = ReceiverConfig {
            regions,
            queues: setup.queues,
            window: setup.window,
            bounce_depth: setup.bounce_depth,
            predict: setup.predict,
            limits: Limits {
                grant_timeout: Duration::from_secs(60),
                activation_delay: Duration::from_millis(200),
                whole_frame: setup.whole_frame,
                ..Limits::default()
            },
            max_staged_bytes: setup.max_staged_bytes,
            mac: "02:00:00:00:00:01".into(),
        };
        let target = Arc::new(UmemTarget(Arc::clone(memory)));
        let pipeline = CopyPipeline::new(Arc::clone(&target), make(target), decider);
        let keys = MasterKeys::new(MasterKey([7; 32]), MasterKey([9; 32]));
        let rx = Receiver::new(config, memory, layout.clone(), keys, pipeline).expect("receiver");
        let ring = (setup.window.max(setup.bounce_depth) * 2).next_power_of_two();
        let mut kernel = KernelModel::new(setup.queues, ring.max(256), &layout);
        if let Some(w) = setup.whole_frame {
            kernel.set_landing(if w.trailer > 0 {
                ModelLanding::Whole {
                    frame_cap: w.frame_cap,
                }
            } else {
                ModelLanding::WholeWithoutIcv {
                    frame_cap: w.frame_cap,
                }
            });
        }
        let mut h = Self {
            memory,
            layout,
            rx,
            kernel,
            now: Timestamp::START,
            out: Vec::new(),
            replies: Vec::new(),
            frame_header_len: setup.whole_frame.map(|_| FRAME_HEADER_LEN),
            mss: setup
                .whole_frame
                .map_or(MSS, |w| w.frame_cap - FRAME_HEADER_LEN - w.trailer),
        };
        h.turn();
        h
    }

    /// One turn of the receiver's loop without packets: poll, then refill.
    pub fn turn(&mut self) {
        self.poll();
        self.kernel.refill(&mut self.rx);
    }

    fn poll(&mut self) {
        self.rx.poll(self.now, &mut self.out);
        let outputs: Vec<Output> = self.out.drain(..).collect();
        for o in outputs {
            match o {
                Output::Reply { conn, response } => self.replies.push((conn, response)),
                Output::CheckDigest(c) => {
                    let mut bytes = vec![0u8; usize::try_from(c.len).expect("len")];
                    self.memory
                        .read(c.addr, &mut bytes)
                        .expect("window in UMEM");
                    let matches = sha256_hex(&bytes) == c.expected;
                    self.rx.digest_checked(c.grant, matches, &mut self.out);
                    let more: Vec<Output> = self.out.drain(..).collect();
                    for m in more {
                        if let Output::Reply { conn, response } = m {
                            self.replies.push((conn, response));
                        }
                    }
                }
            }
        }
    }

    /// Time passes.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.turn();
    }

    /// A control request; the answer, now or after the receiver's polls.
    pub fn request(&mut self, conn: ConnId, req: &Request) -> Response {
        if let Some(r) = self.rx.handle_control(conn, req, self.now) {
            return r;
        }
        for _ in 0..100 {
            self.advance(Duration::from_millis(10));
            if let Some(i) = self.replies.iter().position(|(c, _)| *c == conn) {
                return self.replies.swap_remove(i).1;
            }
        }
        panic!("no answer to {req:?} within 1 s");
    }

    /// A session of connection `conn`, and its SA.
    pub fn open_session_only(&mut self, conn: u64) -> Sa {
        let Response::Session { spi, key, .. } = self.request(
            ConnId(conn),
            &Request::Session {
                version: 0,
                crypto: control::Crypto::Software,
            },
        ) else {
            panic!("no session");
        };
        let key: [u8; 16] = hex::decode(key).expect("hex").try_into().expect("128-bit");
        Sa::new(spi, Version::AesGcm128, &DerivedKey::Aes128(key)).expect("SA")
    }

    /// A session and one grant of `len` bytes on `queue` (region `region`, or any).
    pub fn open_stream(&mut self, conn: u64, len: u64, queue: u32, region: Option<u32>) -> Stream {
        let sa = self.open_session_only(conn);
        let spi = sa.spi();
        let conn = ConnId(conn);
        let response = self.request(
            conn,
            &Request::Grant {
                spi,
                len,
                base_seq: 1000,
                mss: self.mss,
                queue,
                region,
                frame_header_len: self.frame_header_len,
            },
        );
        let Response::Granted(granted) = response else {
            panic!("grant refused: {response:?}");
        };
        let message = (0..len)
            .map(|i| (i * 7 + i / 251).to_le_bytes()[0])
            .collect();
        Stream {
            conn,
            sa,
            granted,
            message,
            queue: queue as usize,
        }
    }

    /// Frames arrive on `queue` in one batch; the receiver then runs one turn.
    pub fn arrive(&mut self, queue: usize, frames: &[Vec<u8>]) {
        self.kernel.receive(self.memory, queue, frames);
        self.kernel.deliver(&mut self.rx, self.now);
        self.turn();
    }

    /// Sends `frames` in batches of at most `batch`, a turn between batches.
    pub fn arrive_in_batches(&mut self, queue: usize, frames: &[Vec<u8>], batch: usize) {
        for chunk in frames.chunks(batch) {
            self.arrive(queue, chunk);
        }
    }

    /// Completes `stream`: asks, and resends what the receiver says is missing until it
    /// answers complete (at most 20 rounds). Returns the final status.
    pub fn complete(&mut self, stream: &Stream) -> Response {
        for _ in 0..20 {
            let r = self.request(
                stream.conn,
                &Request::Complete {
                    grant: stream.granted.grant,
                    sha256: sha256_hex(&stream.message),
                },
            );
            let Response::Status {
                complete: false,
                missing,
                ..
            } = &r
            else {
                return r;
            };
            let frames: Vec<Vec<u8>> = missing
                .iter()
                .flat_map(|(s, e)| stream.segments_covering(*s, *e))
                .map(|i| stream.frame(i))
                .collect();
            self.arrive_in_batches(stream.queue, &frames, 32);
        }
        panic!("not complete after 20 rounds");
    }

    /// The region's bytes of `stream`'s window.
    pub fn window_bytes(&self, stream: &Stream) -> Vec<u8> {
        let base = self
            .layout
            .region(stream.granted.region)
            .expect("region")
            .base;
        let mut out = vec![0u8; stream.message.len()];
        self.memory
            .read(base + stream.granted.offset, &mut out)
            .expect("window");
        out
    }

    /// The run's report.
    pub fn report(mut self) -> Report {
        self.rx.finish().expect("copies finish");
        self.rx.report(RunFacts {
            calibration: None,
            backend: "cpu",
            cpu_seconds: 0.0,
            refused_connections: 0,
            goal_reached: true,
            queues: Default::default(),
            xdp_mode: "model",
            xdp_counters: Default::default(),
            accounting: None,
        })
    }
}

/// One sender's session and grant, and the message it sends.
pub struct Stream {
    pub conn: ConnId,
    pub sa: Sa,
    pub granted: Granted,
    pub message: Vec<u8>,
    pub queue: usize,
}

impl Stream {
    /// Segments in the message.
    pub fn segments(&self) -> u64 {
        (self.message.len() as u64).div_ceil(u64::from(self.granted.mss))
    }

    /// The hint every segment of the grant carries.
    pub fn hint(&self) -> Hint {
        Hint {
            region_id: self.granted.region,
            generation: self.granted.generation,
            offset: self.granted.offset,
            base_tcp_seq: self.granted.base_seq,
        }
    }

    /// Segment `i`'s frame, sealed.
    pub fn frame(&self, i: u64) -> Vec<u8> {
        self.frame_with(i, Some(self.hint()), &self.sa)
    }

    /// Segment `i`'s frame with another hint or SA (lying senders).
    pub fn frame_with(&self, i: u64, hint: Option<Hint>, sa: &Sa) -> Vec<u8> {
        let mss = u64::from(self.granted.mss);
        let start = usize::try_from(i * mss).expect("index");
        let end = (start + usize::try_from(mss).expect("mss")).min(self.message.len());
        let seq = self
            .granted
            .base_seq
            .wrapping_add(u32::try_from(i * mss).expect("seq"));
        build_frame(sa, hint, seq, i + 1, &self.message[start..end])
    }

    /// Every frame, in the order the grant asks for (back to front within runs when
    /// whole frames land).
    pub fn frames(&self) -> Vec<Vec<u8>> {
        let order = match self.granted.descending_run {
            Some(run) => Order::Descending { run },
            None => Order::Ascending,
        };
        let n = self.segments();
        (0..n)
            .map(|pos| self.frame(order.index_at(pos, n)))
            .collect()
    }

    /// Segments holding window bytes `start..end`.
    pub fn segments_covering(&self, start: u64, end: u64) -> impl Iterator<Item = u64> {
        let mss = u64::from(self.granted.mss);
        start / mss..end.div_ceil(mss)
    }
}

/// A sealed IPv4 frame carrying `payload` at TCP sequence `seq`.
pub fn build_frame(sa: &Sa, hint: Option<Hint>, seq: u32, iv: u64, payload: &[u8]) -> Vec<u8> {
    let flow = FlowTemplate {
        eth_src: [2, 0, 0, 0, 0, 2],
        eth_dst: [2, 0, 0, 0, 0, 1],
        ip: IpEndpoints::V4 {
            src: [10, 0, 0, 2],
            dst: [10, 0, 0, 1],
        },
        udp_src_port: 4242,
        tcp_src_port: 40000,
        tcp_dst_port: 5001,
        vc: None,
        ttl: 64,
    };
    let builder = FrameBuilder::new(flow, sa);
    let mut buf = vec![0u8; builder.frame_len(hint.is_some(), payload.len())];
    let spec = SegmentSpec {
        iv,
        hint,
        seq,
        ack: 0,
        psh: false,
    };
    let n = builder.build(&mut buf, &spec, payload).expect("frame");
    buf.truncate(n);
    buf
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Whether a response says complete and verified.
pub fn verified(r: &Response) -> bool {
    matches!(
        r,
        Response::Status {
            complete: true,
            verified: true,
            ..
        }
    )
}

/// A copy engine that holds every copy until released: a slow DMA engine whose copies
/// stay in flight as long as a test needs (the copies are real once released).
pub struct HeldEngine {
    target: Arc<UmemTarget>,
    held: Vec<Descriptor<Payload>>,
    pub release: Arc<AtomicBool>,
}

impl HeldEngine {
    pub fn new(target: Arc<UmemTarget>, release: Arc<AtomicBool>) -> Self {
        Self {
            target,
            held: Vec::new(),
            release,
        }
    }
}

impl CopyEngine<Payload> for HeldEngine {
    fn submit(&mut self, descriptor: Descriptor<Payload>) -> Result<(), Refused<Payload>> {
        self.held.push(descriptor);
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion<Payload>>) -> usize {
        if !self.release.load(Ordering::Relaxed) {
            return 0;
        }
        let n = self.held.len();
        for descriptor in self.held.drain(..) {
            let result = self.target.write(descriptor.dst, descriptor.src.as_ref());
            out.push(Completion { descriptor, result });
        }
        n
    }

    fn health(&self) -> Health {
        Health::Healthy
    }

    fn outstanding(&self) -> usize {
        self.held.len()
    }
}
