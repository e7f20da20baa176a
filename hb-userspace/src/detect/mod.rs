//! From the node table to node states: the [`detector`] (the per-node state
//! machine the sweep runs), [`phi`] (phi-accrual suspicion and the deadlines
//! it implies) and the [`brake`] (holding back `down` actions when much of
//! the cluster goes silent at once).

pub mod brake;
pub mod detector;
pub mod phi;
