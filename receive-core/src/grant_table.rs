//! The grant table: the single owner of sessions, their SAs, grants and windows, from the
//! session's first request to the window's release.
//!
//! Every request comes from a control-plane client that may be hostile. The table binds
//! each SPI and each grant to the connection whose session created it and refuses requests
//! that name anything else; it checks every length and index before using it; it reserves
//! a window only for a grant the placement engine accepted; it revokes what a closed
//! connection leaves behind and what outlives the grant timeout.
//!
//! A grant's life:
//!
//! ```text
//! request ──grant()──▶ Open ──finish()──▶ Draining ──release()──▶ gone (window free)
//!                       │                    ▲
//!                       └─close()/expire()───┘  (revoked: engine forgets it at once)
//! ```
//!
//! A draining grant is gone from the placement engine (no segment is placed for it any
//! more) but keeps its window until the I/O layer says no copy or digest reads or writes
//! it any more ([`GrantTable::release`]): only then can another grant get those bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use control::{Request, Response};
use placement::{Grant, GrantId, PlacementEngine};
use psp::Version;

use crate::error::{RequestError, SetupError};
use crate::time::Timestamp;
use crate::windows::RegionWindows;

/// A control-plane connection, as the I/O layer numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A region the receiver offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSpec {
    /// Region id, as hints name it.
    pub id: u32,
    /// Where its first byte is (placement address).
    pub base: u64,
    /// Bytes.
    pub len: u64,
    /// Its generation becomes active only `activation_delay` after its first grant.
    pub late: bool,
}

/// Limits on what clients may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Queues served (0..queues).
    pub queues: u32,
    /// Smallest MSS: a grant of tiny segments would post a slot per few bytes and take a
    /// queue's prediction over (and its byte ranges grow with every gap).
    pub min_mss: u32,
    /// Largest MSS (a segment's payload must fit one frame).
    pub max_mss: u32,
    /// A grant not finished this long after it was granted is revoked.
    pub grant_timeout: Duration,
    /// How long after its first grant a late region activates.
    pub activation_delay: Duration,
    /// Sessions one connection may open.
    pub sessions_per_connection: usize,
    /// Whole frames land in the UMEM (`None`: payloads only).
    pub whole_frame: Option<WholeFrame>,
    /// Sessions may agree on inline crypto (the model of a NIC with inline PSP: nothing
    /// is encrypted or verified in software). Off by default; refused anyway with
    /// region-bound keys, whose point is authentication.
    pub allow_inline_crypto: bool,
}

/// Whole frames land: grants must declare their frames' header length and fit the frame
/// cap (a frame of exactly the cap is placed; a shorter one leaves room for a longer
/// foreign frame to reach the next slot, so it is copied), and are sent back to front, so
/// that each frame's headers land in the slot of the segment that arrives next and covers
/// them (docs/design.md, "Whole-frame landing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeFrame {
    /// Most bytes a landing frame writes (the XDP program passes longer frames on).
    pub frame_cap: u32,
    /// Segments per back-to-front run.
    pub descending_run: u64,
    /// Bytes landing after each payload: the ICV ([`xdp_common::ICV_LEN`]) as a zero-copy
    /// NIC DMAs it, or 0 in the PSP-offload model. They cover the first bytes of the slot
    /// above; the receiver restores those from the header record.
    pub trailer: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            queues: 1,
            min_mss: 256,
            max_mss: 1792,
            grant_timeout: Duration::from_secs(60),
            activation_delay: Duration::from_millis(200),
            sessions_per_connection: 4,
            whole_frame: None,
            allow_inline_crypto: false,
        }
    }
}

/// Where a grant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    /// Segments are placed for it.
    Open,
    /// Finished or revoked: the engine forgot it; its window waits for [`GrantTable::release`].
    Draining,
}

/// Why a grant left the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Its window filled and is being checked.
    Finished,
    /// Its connection closed first.
    Closed,
    /// It outlived the grant timeout.
    TimedOut,
}

/// A grant, as the table keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantEntry {
    /// The connection whose session asked for it.
    pub owner: ConnId,
    /// What the engine holds (SPI, region, generation, offset, length, base sequence).
    pub grant: Grant,
    /// rx queue its segments arrive on.
    pub queue: u32,
    /// Payload bytes per segment.
    pub mss: u32,
    /// With whole-frame landing: header bytes of each frame before its payload.
    pub frame_prefix: Option<u32>,
    /// When it was granted.
    pub created: Timestamp,
    /// Where it is in its life.
    pub state: GrantState,
    /// Why it left the engine, once it did.
    pub revoked: Option<Revoked>,
    /// Its owner asked to complete it at least once.
    pub completion_asked: bool,
}

#[derive(Debug)]
struct RegionEntry {
    windows: RegionWindows,
    late: bool,
    scheduled: bool,
    generation: u16,
}

#[derive(Debug, Default)]
struct Session {
    spis: Vec<u32>,
    grants: BTreeSet<GrantId>,
    /// Its windows that matched their digest.
    verified: u64,
}

/// What the table counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Sessions opened.
    pub sessions: u64,
    /// Sessions that said goodbye after at least one window of theirs matched its digest.
    pub completed_sessions: u64,
    /// Requests refused with an error response.
    pub refused_requests: u64,
    /// Grants revoked because their connection closed.
    pub revoked_on_close: u64,
    /// Grants revoked because they outlived the grant timeout.
    pub timed_out: u64,
    /// Grants revoked (closed, timed out) after their owner had asked to complete them:
    /// transfers that were attempted and did not finish.
    pub abandoned_completions: u64,
}

/// What the I/O layer must do with a request's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this response.
    Reply(Response),
    /// A session was opened for `spi`: send the session response (the I/O layer derives
    /// the key and knows the MAC address).
    SessionOpened {
        /// The session's SPI.
        spi: u32,
        /// Its PSP version.
        version: Version,
        /// Who does its crypto.
        crypto: control::Crypto,
    },
    /// A grant was made: start predicting its slots, then send `reply`.
    Granted {
        /// The grant.
        grant: GrantId,
        /// The response.
        reply: Response,
    },
    /// The owner says the whole message was sent: check the window when it is complete.
    Complete {
        /// The grant.
        grant: GrantId,
        /// The message's SHA-256 (64 hex digits, checked).
        sha256: String,
    },
}

/// Sessions, SAs, grants and windows.
#[derive(Debug)]
pub struct GrantTable {
    regions: BTreeMap<u32, RegionEntry>,
    sessions: HashMap<ConnId, Session>,
    spi_owner: HashMap<u32, ConnId>,
    grants: HashMap<GrantId, GrantEntry>,
    next_spi: u32,
    limits: Limits,
    stats: TableStats,
}

impl GrantTable {
    /// Adds `regions` to `engine` (generation 1, active at once unless late) and hands out
    /// SPIs from the engine's direct-write range.
    ///
    /// # Errors
    /// [`SetupError`] when the engine refuses a region or one has no bytes.
    pub fn new(
        engine: &mut PlacementEngine,
        regions: &[RegionSpec],
        limits: Limits,
    ) -> Result<Self, SetupError> {
        let mut table = BTreeMap::new();
        for r in regions {
            if r.len == 0 {
                return Err(SetupError::EmptyRegion(r.id));
            }
            engine.add_region(r.id, r.base, r.len)?;
            engine.configure_generation(r.id, 1, if r.late { u64::MAX } else { 0 })?;
            table.insert(
                r.id,
                RegionEntry {
                    windows: RegionWindows::new(r.len),
                    late: r.late,
                    scheduled: !r.late,
                    generation: 1,
                },
            );
        }
        engine.advance(0, |_| {});
        Ok(Self {
            regions: table,
            sessions: HashMap::new(),
            spi_owner: HashMap::new(),
            grants: HashMap::new(),
            next_spi: engine.policy().direct_spi_min | 1,
            limits,
            stats: TableStats::default(),
        })
    }

    /// Counters.
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Grant `id`, open or draining.
    pub fn grant(&self, id: GrantId) -> Option<&GrantEntry> {
        self.grants.get(&id)
    }

    /// Every grant the table holds, open or draining.
    pub fn grants(&self) -> impl Iterator<Item = (GrantId, &GrantEntry)> {
        self.grants.iter().map(|(id, g)| (*id, g))
    }

    /// Open grants of region `region`.
    pub fn open_grants_of(&self, region: u32) -> impl Iterator<Item = (GrantId, &GrantEntry)> {
        self.grants()
            .filter(move |(_, g)| g.state == GrantState::Open && g.grant.region_id == region)
    }

    /// Live windows of region `region` (offset, len).
    pub fn windows(&self, region: u32) -> Option<&RegionWindows> {
        self.regions.get(&region).map(|r| &r.windows)
    }

    /// Region ids, ascending.
    pub fn region_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.regions.keys().copied()
    }

    /// Connections with a session.
    pub fn connections(&self) -> usize {
        self.sessions.len()
    }

    /// Serves one request of connection `conn` at `now` (time since the receiver
    /// started). Refusals come back as [`Action::Reply`] with an error response and are
    /// counted; nothing a client sends can change another connection's state.
    pub fn handle(
        &mut self,
        engine: &mut PlacementEngine,
        conn: ConnId,
        request: &Request,
        now: Timestamp,
    ) -> Action {
        let outcome = match request {
            Request::Session { version, crypto } => {
                self.open_session(engine, conn, *version, *crypto)
            }
            Request::Grant {
                spi,
                len,
                base_seq,
                mss,
                queue,
                region,
                frame_header_len,
            } => {
                let ask = GrantAsk {
                    spi: *spi,
                    len: *len,
                    base_seq: *base_seq,
                    mss: *mss,
                    queue: *queue,
                    region: *region,
                    frame_header_len: *frame_header_len,
                };
                self.make_grant(engine, conn, &ask, now)
            }
            Request::Complete { grant, sha256 } => self.complete(conn, *grant, sha256),
            Request::Bye => Ok(self.bye(conn)),
        };
        outcome.unwrap_or_else(|e| {
            self.stats.refused_requests += 1;
            tracing::warn!("control connection {}: refused: {e}", conn.0);
            Action::Reply(Response::Error {
                message: e.to_string(),
            })
        })
    }

    fn open_session(
        &mut self,
        engine: &mut PlacementEngine,
        conn: ConnId,
        version: u8,
        crypto: control::Crypto,
    ) -> Result<Action, RequestError> {
        let version = Version::from_wire(version).map_err(|_| RequestError::BadVersion(version))?;
        if crypto == control::Crypto::Inline {
            if !self.limits.allow_inline_crypto {
                return Err(RequestError::InlineCryptoNotAllowed);
            }
            if engine.policy().access == placement::AccessControl::RegionBoundKeys {
                return Err(RequestError::InlineCryptoWithRegionBoundKeys);
            }
        }
        let open = self.sessions.get(&conn).map_or(0, |s| s.spis.len());
        if open >= self.limits.sessions_per_connection {
            return Err(RequestError::TooManySessions(
                self.limits.sessions_per_connection,
            ));
        }
        let spi = self.next_spi;
        // SPIs never repeat within a run: a closed session's SPI stays dead.
        self.next_spi = spi.checked_add(1).ok_or(RequestError::SpisExhausted)?;
        engine.add_sa(spi)?;
        self.spi_owner.insert(spi, conn);
        self.sessions.entry(conn).or_default().spis.push(spi);
        self.stats.sessions += 1;
        Ok(Action::SessionOpened {
            spi,
            version,
            crypto,
        })
    }

    fn make_grant(
        &mut self,
        engine: &mut PlacementEngine,
        conn: ConnId,
        ask: &GrantAsk,
        now: Timestamp,
    ) -> Result<Action, RequestError> {
        if self.spi_owner.get(&ask.spi) != Some(&conn) {
            return Err(RequestError::NotYourSpi(ask.spi));
        }
        let ask = &self.frame_fit(ask)?;
        if ask.mss < self.limits.min_mss || ask.mss > self.limits.max_mss {
            return Err(RequestError::BadMss {
                mss: ask.mss,
                min: self.limits.min_mss,
                max: self.limits.max_mss,
            });
        }
        if ask.queue >= self.limits.queues {
            return Err(RequestError::BadQueue {
                queue: ask.queue,
                queues: self.limits.queues,
            });
        }
        let candidates: Vec<u32> = match ask.region {
            Some(r) if self.regions.contains_key(&r) => vec![r],
            Some(r) => return Err(RequestError::UnknownRegion(r)),
            None => self.regions.keys().copied().collect(),
        };
        let mut why = Vec::new();
        for region in candidates {
            match self.grant_in(engine, conn, ask, region, now) {
                Ok(action) => return Ok(action),
                Err(e) => why.push(e),
            }
        }
        match why.len() {
            1 => Err(why.remove(0)),
            _ => Err(RequestError::NoRoom {
                len: ask.len,
                why: why
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        }
    }

    /// With whole-frame landing, the ask if its frames (declared headers + MSS) fit the
    /// frame cap; without, the ask with no header length.
    fn frame_fit(&self, ask: &GrantAsk) -> Result<GrantAsk, RequestError> {
        let Some(whole) = self.limits.whole_frame else {
            return Ok(GrantAsk {
                frame_header_len: None,
                ..*ask
            });
        };
        let header = ask
            .frame_header_len
            .ok_or(RequestError::FrameHeaderLenMissing)?;
        let fits = u64::from(header) <= umem::plan::MAX_FRAME_PREFIX
            && header
                .checked_add(ask.mss)
                .and_then(|f| f.checked_add(whole.trailer))
                .is_some_and(|f| f <= whole.frame_cap);
        if !fits {
            return Err(RequestError::FrameTooLong {
                header,
                mss: ask.mss,
                trailer: whole.trailer,
                frame_cap: whole.frame_cap,
            });
        }
        Ok(*ask)
    }

    /// Reserves a window in `region` and grants it; on any refusal nothing stays reserved.
    fn grant_in(
        &mut self,
        engine: &mut PlacementEngine,
        conn: ConnId,
        ask: &GrantAsk,
        region: u32,
        now: Timestamp,
    ) -> Result<Action, RequestError> {
        let entry = self
            .regions
            .get_mut(&region)
            .ok_or(RequestError::UnknownRegion(region))?;
        let offset = entry
            .windows
            .allocate(ask.len)
            .map_err(|why| RequestError::Window { region, why })?;
        let grant = Grant {
            spi: ask.spi,
            region_id: region,
            generation: entry.generation,
            offset,
            len: ask.len,
            base_seq: ask.base_seq,
        };
        let id = match engine.add_grant(grant) {
            Ok(id) => id,
            Err(e) => {
                entry.windows.free(offset);
                return Err(e.into());
            }
        };
        if entry.late && !entry.scheduled {
            entry.scheduled = true;
            let at = (now + self.limits.activation_delay).engine_nanos();
            engine.configure_generation(region, entry.generation, at)?;
        }
        self.grants.insert(
            id,
            GrantEntry {
                owner: conn,
                grant,
                queue: ask.queue,
                mss: ask.mss,
                frame_prefix: ask.frame_header_len,
                created: now,
                state: GrantState::Open,
                revoked: None,
                completion_asked: false,
            },
        );
        self.sessions.entry(conn).or_default().grants.insert(id);
        let reply = Response::Granted(control::Granted {
            grant: id.to_wire(),
            region,
            generation: grant.generation,
            offset,
            len: ask.len,
            base_seq: ask.base_seq,
            mss: ask.mss,
            descending_run: self.limits.whole_frame.map(|w| w.descending_run),
        });
        Ok(Action::Granted { grant: id, reply })
    }

    fn complete(&mut self, conn: ConnId, grant: u64, sha256: &str) -> Result<Action, RequestError> {
        let id = GrantId::from_wire(grant);
        let open = self
            .grants
            .get(&id)
            .is_some_and(|g| g.owner == conn && g.state == GrantState::Open);
        if !open {
            return Err(RequestError::NotYourGrant(grant));
        }
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RequestError::BadDigest);
        }
        if let Some(g) = self.grants.get_mut(&id) {
            g.completion_asked = true;
        }
        Ok(Action::Complete {
            grant: id,
            sha256: sha256.to_ascii_lowercase(),
        })
    }

    fn bye(&mut self, conn: ConnId) -> Action {
        if self.sessions.get(&conn).is_some_and(|s| s.verified > 0) {
            self.stats.completed_sessions += 1;
        }
        Action::Reply(Response::Bye)
    }

    /// True when grant `id` is open and belongs to `conn`.
    pub fn is_open_grant_of(&self, conn: ConnId, id: GrantId) -> bool {
        self.grants
            .get(&id)
            .is_some_and(|g| g.owner == conn && g.state == GrantState::Open)
    }

    /// The window of grant `id` filled: the engine forgets the grant (nothing is placed for
    /// it any more) and its window drains until [`release`](Self::release).
    pub fn finish(&mut self, engine: &mut PlacementEngine, id: GrantId) -> Option<GrantEntry> {
        self.revoke(engine, id, Revoked::Finished)
    }

    fn revoke(
        &mut self,
        engine: &mut PlacementEngine,
        id: GrantId,
        why: Revoked,
    ) -> Option<GrantEntry> {
        let g = self.grants.get_mut(&id)?;
        if g.state != GrantState::Open {
            return None;
        }
        // The SA may be gone already (closed session): then so is the engine's grant.
        let _ = engine.revoke_grant(id);
        g.state = GrantState::Draining;
        g.revoked = Some(why);
        if why != Revoked::Finished && g.completion_asked {
            self.stats.abandoned_completions += 1;
        }
        Some(*g)
    }

    /// Grant `id`'s window matched its owner's digest.
    pub fn verified(&mut self, id: GrantId) {
        let owner = self.grants.get(&id).map(|g| g.owner);
        if let Some(s) = owner.and_then(|o| self.sessions.get_mut(&o)) {
            s.verified += 1;
        }
    }

    /// Nothing reads or writes grant `id`'s window any more: free it.
    pub fn release(&mut self, id: GrantId) -> Option<GrantEntry> {
        if self.grants.get(&id)?.state != GrantState::Draining {
            return None;
        }
        let g = self.grants.remove(&id)?;
        if let Some(r) = self.regions.get_mut(&g.grant.region_id) {
            r.windows.free(g.grant.offset);
        }
        if let Some(s) = self.sessions.get_mut(&g.owner) {
            s.grants.remove(&id);
        }
        Some(g)
    }

    /// Connection `conn` closed: its SAs leave the engine, and its open grants are revoked
    /// (returned, so the I/O layer stops predicting them and drops their queued copies).
    pub fn close(&mut self, engine: &mut PlacementEngine, conn: ConnId) -> Vec<GrantId> {
        let Some(session) = self.sessions.remove(&conn) else {
            return Vec::new();
        };
        let mut revoked = Vec::new();
        for id in &session.grants {
            if self.revoke(engine, *id, Revoked::Closed).is_some() {
                self.stats.revoked_on_close += 1;
                revoked.push(*id);
            }
        }
        for spi in session.spis {
            self.spi_owner.remove(&spi);
            let _ = engine.remove_sa(spi);
        }
        revoked
    }

    /// Revokes every open grant older than the grant timeout at `now`.
    pub fn expire(&mut self, engine: &mut PlacementEngine, now: Timestamp) -> Vec<GrantId> {
        let timeout = self.limits.grant_timeout;
        let old: Vec<GrantId> = self
            .grants
            .iter()
            .filter(|(_, g)| {
                g.state == GrantState::Open && now.saturating_since(g.created) >= timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            self.revoke(engine, *id, Revoked::TimedOut);
            self.stats.timed_out += 1;
            tracing::warn!("grant {id} timed out after {timeout:?}: revoked");
        }
        old
    }

    /// Checks the table's invariants (for tests and fuzzing): live windows never overlap
    /// and lie in their regions; every grant's window is live; every open grant is in the
    /// engine with the same window, and no draining one is.
    pub fn check_invariants(&self, engine: &PlacementEngine) -> Result<(), String> {
        for (id, r) in &self.regions {
            if !r.windows.disjoint() {
                return Err(format!("region {id}: windows overlap"));
            }
        }
        for (id, g) in &self.grants {
            let w = &g.grant;
            let live = self
                .regions
                .get(&w.region_id)
                .is_some_and(|r| r.windows.live().any(|(o, l)| o == w.offset && l == w.len));
            if !live {
                return Err(format!("grant {id}: its window is not live"));
            }
            let in_engine = engine.grant(*id).copied();
            match g.state {
                GrantState::Open if in_engine != Some(*w) => {
                    return Err(format!("open grant {id} is not the engine's"));
                }
                GrantState::Draining if in_engine.is_some() => {
                    return Err(format!("draining grant {id} is still in the engine"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The fields of a grant request.
#[derive(Clone, Copy)]
struct GrantAsk {
    spi: u32,
    len: u64,
    base_seq: u32,
    mss: u32,
    queue: u32,
    region: Option<u32>,
    frame_header_len: Option<u32>,
}
