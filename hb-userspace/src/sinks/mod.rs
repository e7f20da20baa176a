//! What consumes a sweep's outcome: the [`event_log`] (JSON lines of state
//! changes), the [`actions`] (failover commands, bounded and timed out) and
//! the [`state_file`] (node states kept across restarts).

pub mod actions;
pub mod event_log;
pub mod state_file;
