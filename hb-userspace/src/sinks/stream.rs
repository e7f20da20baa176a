//! The live event stream: every state change as an [`EventRecord`] with a
//! cursor, kept in a bounded ring of recent events (so a client can resume
//! with `since=CURSOR`, and `GET /api/v1/nodes/{id}` can show a node's
//! recent transitions) and broadcast to the HTTP API's subscribers.
//!
//! The broadcast channel is bounded and shared: a subscriber that falls more
//! than [`LIVE_BUFFER`] events behind loses them (its receiver says how
//! many) instead of slowing the sweep, which never waits on a client.

use std::{collections::VecDeque, sync::Arc};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::sinks::event_log::EventRecord;

/// Recent events kept for resuming and for node details.
pub const RECENT: usize = 4096;
/// Events a subscriber may fall behind before it is dropped.
pub const LIVE_BUFFER: usize = 1024;

/// What the stream carries: a state change, or a periodic summary.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    Event(Arc<CursorEvent>),
    Summary(Arc<Summary>),
}

/// A state change and its position in the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CursorEvent {
    /// Increases by one per event, from 1 at agent start.
    pub cursor: u64,
    #[serde(flatten)]
    pub record: EventRecord,
}

/// Counts by state and the datapath counters, at most once a second.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub unix_ms: u64,
    /// The cursor of the last event before this summary.
    pub cursor: u64,
    pub states: Vec<(String, u64)>,
    pub counters: Vec<(String, u64)>,
}

/// A new subscriber's start: what it missed since its cursor (if the ring
/// still holds it), then the live receiver.
pub struct Subscription {
    pub replay: Vec<Arc<CursorEvent>>,
    /// Events between the requested cursor and the oldest one still kept:
    /// lost to the client (0 when it resumes within the ring).
    pub missed: u64,
    pub live: broadcast::Receiver<StreamItem>,
}

/// The ring of recent events and the broadcast to subscribers.
pub struct EventStream {
    recent: VecDeque<Arc<CursorEvent>>,
    last_cursor: u64,
    live: broadcast::Sender<StreamItem>,
}

impl Default for EventStream {
    fn default() -> Self {
        EventStream {
            recent: VecDeque::with_capacity(RECENT),
            last_cursor: 0,
            live: broadcast::channel(LIVE_BUFFER).0,
        }
    }
}

impl EventStream {
    /// Appends one state change and sends it to the subscribers.
    pub fn publish(&mut self, record: EventRecord) {
        self.last_cursor += 1;
        let event = Arc::new(CursorEvent {
            cursor: self.last_cursor,
            record,
        });
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Arc::clone(&event));
        // No subscriber is not an error.
        let _ = self.live.send(StreamItem::Event(event));
    }

    /// Sends a summary to the subscribers (not kept in the ring).
    pub fn summarize(&self, summary: Summary) {
        let _ = self.live.send(StreamItem::Summary(Arc::new(summary)));
    }

    /// Whether anyone listens (summaries are built only then).
    pub fn has_subscribers(&self) -> bool {
        self.live.receiver_count() > 0
    }

    /// The cursor of the last event so far.
    pub fn last_cursor(&self) -> u64 {
        self.last_cursor
    }

    /// A new subscriber that has seen everything up to `since` (none: only
    /// what comes from now on).
    pub fn subscribe(&self, since: Option<u64>) -> Subscription {
        let live = self.live.subscribe();
        let Some(since) = since else {
            return Subscription {
                replay: Vec::new(),
                missed: 0,
                live,
            };
        };
        let oldest = self
            .recent
            .front()
            .map_or(self.last_cursor + 1, |e| e.cursor);
        Subscription {
            replay: self
                .recent
                .iter()
                .filter(|e| e.cursor > since)
                .cloned()
                .collect(),
            missed: oldest.saturating_sub(since.saturating_add(1)),
            live,
        }
    }

    /// The recent events of one node, oldest first.
    pub fn recent_of(&self, node_id: u32) -> Vec<Arc<CursorEvent>> {
        self.recent
            .iter()
            .filter(|e| e.record.node_id == node_id)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::detector::{NodeState, Transition};

    fn record(node_id: u32, to: NodeState) -> EventRecord {
        EventRecord::new(
            1,
            "n",
            &Transition {
                node_id,
                from: NodeState::Up,
                to,
                since_last_heartbeat_ns: None,
            },
        )
    }

    #[test]
    fn subscribers_resume_from_their_cursor_and_are_told_what_they_lost() {
        let mut stream = EventStream::default();
        for i in 0..(RECENT as u32 + 10) {
            stream.publish(record(i % 3, NodeState::Down));
        }
        assert_eq!(stream.last_cursor(), RECENT as u64 + 10);
        let resumed = stream.subscribe(Some(RECENT as u64 + 7));
        let cursors: Vec<u64> = resumed.replay.iter().map(|e| e.cursor).collect();
        assert_eq!(
            cursors,
            [RECENT as u64 + 8, RECENT as u64 + 9, RECENT as u64 + 10]
        );
        assert_eq!(resumed.missed, 0);
        // The ring holds cursors 11..=RECENT+10: from 0, ten were lost.
        let late = stream.subscribe(Some(0));
        assert_eq!(late.missed, 10);
        assert_eq!(late.replay.len(), RECENT);
        assert!(stream.subscribe(None).replay.is_empty());
        assert_eq!(stream.recent_of(1).len(), RECENT / 3 + 1);
    }

    #[tokio::test]
    async fn live_subscribers_get_events_and_summaries_and_a_slow_one_lags() {
        let mut stream = EventStream::default();
        let mut fast = stream.subscribe(None).live;
        let mut slow = stream.subscribe(None).live;
        assert!(stream.has_subscribers());
        stream.publish(record(1, NodeState::Down));
        let Ok(StreamItem::Event(event)) = fast.recv().await else {
            panic!("no event");
        };
        assert_eq!((event.cursor, event.record.event.as_str()), (1, "down"));
        for _ in 0..LIVE_BUFFER + 5 {
            stream.publish(record(2, NodeState::Up));
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }
}
