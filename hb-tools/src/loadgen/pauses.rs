//! The pause windows of a run (`--report-pauses`): for every pause, its
//! node and when that node's last heartbeat before it and its first after it
//! were handed to the kernel. From the monitor's side a pause is a crash and
//! a recovery; these are the ground truth a soak checks the monitor's
//! events against.
//!
//! The schedule decides a pause when it meets the node's first heartbeat
//! due inside it; heartbeats due before the pause may still be in the batch
//! then, so a window is only closed by a heartbeat due at or after its
//! start, and its "last before" is the node's last heartbeat handed to the
//! kernel at that moment (or at the end of the run, when none came after).

use std::collections::HashMap;

use super::report::PauseWindow;

/// The windows of a run so far, and what is needed to close them.
pub(super) struct PauseLog {
    first_id: u32,
    /// The schedule's origin (monotonic ns).
    origin: u64,
    windows: Vec<PauseWindow>,
    /// Each slot's last heartbeat handed to the kernel (monotonic ns; 0:
    /// none yet).
    last_sent: Vec<u64>,
    /// The windows not yet closed, by slot: (index in `windows`, start as
    /// an offset from the origin). A node may have several, when a pause
    /// started before the heartbeat that ended the previous one was sent
    /// (it was lost).
    open: HashMap<u32, Vec<(usize, u64)>>,
}

impl PauseLog {
    pub(super) fn new(first_id: u32, nodes: u32, origin: u64) -> Self {
        PauseLog {
            first_id,
            origin,
            windows: Vec::new(),
            last_sent: vec![0; nodes as usize],
            open: HashMap::new(),
        }
    }

    /// A pause of `slot` from `start` to `end` (offsets from the origin).
    pub(super) fn started(&mut self, slot: u32, start: u64, end: u64) {
        self.open
            .entry(slot)
            .or_default()
            .push((self.windows.len(), start));
        self.windows.push(PauseWindow {
            node_id: self.first_id + slot,
            start_mono_ns: self.origin + start,
            end_mono_ns: self.origin + end,
            last_sent_before_mono_ns: None,
            first_sent_after_mono_ns: None,
        });
    }

    /// `slot`'s heartbeat due at `due` (offset from the origin) was handed
    /// to the kernel at `at`: it closes the node's windows that started by
    /// then.
    pub(super) fn sent(&mut self, slot: u32, due: u64, at: u64) {
        let last = &mut self.last_sent[slot as usize];
        if let Some(open) = self.open.get_mut(&slot) {
            let before = (*last != 0).then_some(*last);
            open.retain(|&(index, start)| {
                if start > due {
                    return true;
                }
                let window = &mut self.windows[index];
                window.last_sent_before_mono_ns = before;
                window.first_sent_after_mono_ns = Some(at);
                false
            });
            if open.is_empty() {
                self.open.remove(&slot);
            }
        }
        *last = at;
    }

    /// The windows, in the order the pauses were decided; those still open
    /// get the node's last heartbeat and no first after.
    pub(super) fn finish(mut self) -> Vec<PauseWindow> {
        for (slot, open) in self.open {
            let last = self.last_sent[slot as usize];
            for (index, _) in open {
                self.windows[index].last_sent_before_mono_ns = (last != 0).then_some(last);
            }
        }
        self.windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_close_with_the_first_heartbeat_due_after_their_start() {
        let mut log = PauseLog::new(10, 3, 1_000);
        log.sent(0, 0, 1_001);
        log.sent(1, 5, 1_006);
        // Slot 0 pauses from 100 to 300, decided while its heartbeat due
        // at 90 is still in the batch.
        log.started(0, 100, 300);
        log.sent(0, 90, 1_091);
        // Slot 1 pauses twice in a row (the first pause's resume was lost).
        log.started(1, 50, 150);
        log.started(1, 160, 260);
        // Slot 2 pauses before its first heartbeat, and the run ends first.
        log.started(2, 10, 400);
        log.sent(1, 260, 1_262);
        log.sent(0, 300, 1_303);
        log.sent(0, 400, 1_402);
        // Slot 0 pauses again and the run ends first.
        log.started(0, 450, 650);
        let windows = log.finish();
        let summary: Vec<_> = windows
            .iter()
            .map(|w| {
                (
                    w.node_id,
                    w.start_mono_ns,
                    w.last_sent_before_mono_ns,
                    w.first_sent_after_mono_ns,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (10, 1_100, Some(1_091), Some(1_303)),
                (11, 1_050, Some(1_006), Some(1_262)),
                (11, 1_160, Some(1_006), Some(1_262)),
                (12, 1_010, None, None),
                (10, 1_450, Some(1_402), None),
            ]
        );
        assert_eq!(windows[0].end_mono_ns, 1_300);
    }
}
