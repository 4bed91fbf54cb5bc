//! The reference backend: plain scalar code, the test oracle.
//!
//! It collects every slot's values and computes each partial from scratch with two-pass formulas
//! ([`ColPartial::from_values`]), a numerical path independent of the streaming `push`/`combine`
//! used by the fast backends.

use super::{AggBackend, BackendKind, Partials, SKIP_SLOT, SlotBatch};
use crate::agg::ColPartial;
use crate::error::Result;

/// The scalar oracle backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackend;

impl AggBackend for ReferenceBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Reference
    }

    fn describe(&self) -> String {
        "reference (scalar oracle)".into()
    }

    fn reduce(&mut self, batch: &SlotBatch<'_>, ncols: usize, out: &mut Partials) -> Result<()> {
        out.reset(batch.num_slots, ncols);
        let mut per_slot: Vec<Vec<Vec<f64>>> = vec![vec![vec![]; ncols]; batch.num_slots];
        for (i, &s) in batch.slots.iter().enumerate() {
            if s == SKIP_SLOT {
                continue;
            }
            out.count[s as usize] += 1;
            for (vals, col) in per_slot[s as usize].iter_mut().zip(batch.values.iter()) {
                vals.push(col[i]);
            }
        }
        for (s, cols) in per_slot.iter().enumerate() {
            for (c, vals) in cols.iter().enumerate() {
                out.cols[s * ncols + c] = ColPartial::from_values(vals);
            }
        }
        Ok(())
    }
}
