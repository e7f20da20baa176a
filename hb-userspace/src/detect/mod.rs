//! From the node table to node states: the [`detector`] (the per-node state
//! machine the sweep runs, whose fast pass over every node is `scan.rs`), [`phi`] (phi-accrual suspicion and the deadlines
//! it implies), the [`brake`] (holding back `down` actions when much of the
//! cluster goes silent at once), and the [`sweep`] that runs them together
//! once per sweep period into a [`sweep::SweepOutcome`].

pub mod brake;
pub mod detector;
pub mod phi;
mod scan;
pub mod sweep;

pub use self::scan::kernel as fast_pass_kernel;
