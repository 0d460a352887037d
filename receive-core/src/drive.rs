//! Plays arbitrary sequences of control-plane events against a [`GrantTable`] and a real
//! placement engine, checking the table's invariants after every step. Shared by the
//! property test (`tests/control_sequences.rs`) and the cargo-fuzz target `control_plane`.

use std::time::Duration;

use control::Request;
use placement::{GrantId, PlacementEngine, Policy};

use crate::grant_table::{Action, ConnId, GrantTable, Limits, RegionSpec};
use crate::time::Timestamp;

/// One event.
#[derive(Debug, Clone)]
pub enum Op {
    /// Connection `conn` sends `request`.
    Request {
        /// Connection.
        conn: u8,
        /// The request.
        request: Request,
    },
    /// Connection `conn` closes.
    Close {
        /// Connection.
        conn: u8,
    },
    /// Time passes: `ms` milliseconds; grants past their timeout are revoked.
    Wait {
        /// Milliseconds.
        ms: u16,
    },
    /// The `pick`th grant the table holds finishes (its window filled).
    Finish {
        /// Which grant (modulo the number held).
        pick: u8,
    },
    /// The `pick`th draining grant's copies have landed: release its window.
    Release {
        /// Which grant (modulo the number held).
        pick: u8,
    },
}

/// Two regions, one late; a short grant timeout.
fn setup() -> (PlacementEngine, GrantTable) {
    let mut engine = PlacementEngine::new(Policy::default());
    let regions = [
        RegionSpec {
            id: 1,
            base: 1 << 20,
            len: 1 << 20,
            late: false,
        },
        RegionSpec {
            id: 2,
            base: 4 << 20,
            len: 300_000,
            late: true,
        },
    ];
    let limits = Limits {
        queues: 2,
        grant_timeout: Duration::from_millis(5000),
        ..Limits::default()
    };
    let table = GrantTable::new(&mut engine, &regions, limits).unwrap_or_else(|e| {
        unreachable!("fixed regions are valid: {e}");
    });
    (engine, table)
}

fn pick(table: &GrantTable, n: u8) -> Option<GrantId> {
    let mut ids: Vec<GrantId> = table.grants().map(|(id, _)| id).collect();
    ids.sort_unstable();
    (!ids.is_empty()).then(|| ids[usize::from(n) % ids.len()])
}

/// Plays `ops`; the error names the first step after which an invariant broke.
///
/// # Errors
/// The broken invariant.
pub fn play(ops: &[Op]) -> Result<(), String> {
    let (mut engine, mut table) = setup();
    let mut now = Timestamp::START;
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Request { conn, request } => {
                let action = table.handle(&mut engine, ConnId(u64::from(*conn)), request, now);
                if let Action::Granted { grant, .. } = action {
                    let g = table.grant(grant).ok_or("granted but not held")?;
                    if g.owner != ConnId(u64::from(*conn)) {
                        return Err(format!("step {step}: grant owned by another"));
                    }
                }
            }
            Op::Close { conn } => {
                table.close(&mut engine, ConnId(u64::from(*conn)));
            }
            Op::Wait { ms } => {
                now = now + Duration::from_millis(u64::from(*ms));
                table.expire(&mut engine, now);
            }
            Op::Finish { pick: n } => {
                if let Some(id) = pick(&table, *n) {
                    table.finish(&mut engine, id);
                }
            }
            Op::Release { pick: n } => {
                if let Some(id) = pick(&table, *n) {
                    table.release(id);
                }
            }
        }
        table
            .check_invariants(&engine)
            .map_err(|e| format!("after step {step} ({op:?}): {e}"))?;
    }
    Ok(())
}
