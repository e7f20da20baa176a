//! What the kernel tests (`xdp_*.rs`) share: loading the datapath, running
//! one frame through `BPF_PROG_TEST_RUN`, and reading the counters and the
//! node table around it.
//!
//! Each test binary declares this module `pub`: they use different parts of
//! it, and `pub` items of a test binary's root module are not dead code.

use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use hb::datapath::xdp::{LoadOptions, XdpDatapath};
use hb_common::{counters::Counter, table::NodeRecord};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Heartbeat port the tests load with: not the default, so the load-time
/// override is exercised too.
pub const PORT: u16 = 9797;

/// Bytes of XDP metadata put in front of a frame by [`test_run`].
pub const META_LEN: usize = 16;

/// Every counter, indexed by [`Counter`].
pub type Counters = [u64; Counter::COUNT as usize];

/// Loads the XDP program, or fails the test.
pub fn load(options: LoadOptions) -> XdpDatapath {
    XdpDatapath::load(options)
        .unwrap_or_else(|e| panic!("loading the XDP program (are we root?): {e}"))
}

/// Runs one frame through `BPF_PROG_TEST_RUN`, optionally behind
/// [`META_LEN`] bytes of XDP metadata; returns the XDP action.
pub fn test_run(program: &mut Xdp, frame: &[u8], metadata: bool) -> Result<u32, ProgramError> {
    if !metadata {
        let options = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        };
        return program.test_run(options).map(|result| result.return_value);
    }
    let mut data = vec![0u8; META_LEN];
    data.extend_from_slice(frame);
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex }: offsets into data_in.
    let xdp_md = [META_LEN as u32, data.len() as u32, 0, 0, 0, 0];
    let ctx: Vec<u8> = xdp_md.iter().flat_map(|word| word.to_ne_bytes()).collect();
    let options = TestRunOptions {
        data_in: Some(&data),
        ctx_in: Some(&ctx),
        repeat: 1,
        ..Default::default()
    };
    program.test_run(options).map(|result| result.return_value)
}

/// Runs one frame (no metadata) and returns the XDP action, or fails the
/// test.
pub fn run(dp: &mut XdpDatapath, frame: &[u8]) -> u32 {
    let program = dp.program().unwrap_or_else(|e| panic!("the program: {e}"));
    test_run(program, frame, false)
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {} bytes failed: {e:?}", frame.len()))
}

/// The counters, or fails the test.
pub fn counters(dp: &XdpDatapath) -> Counters {
    dp.counters()
        .unwrap_or_else(|e| panic!("reading counters: {e}"))
}

/// The cold record of every slot.
pub fn records(dp: &XdpDatapath) -> Vec<NodeRecord> {
    (0..dp.table().len())
        .map(|id| dp.table().records.get(id))
        .collect()
}

/// The seen word of every slot.
pub fn seen_words(dp: &XdpDatapath) -> Vec<u64> {
    (0..dp.table().len())
        .map(|id| dp.table().seen.get(id))
        .collect()
}

/// The sum of the outcome counters and `passed + dropped`: each run moves
/// exactly one of each, so both must equal the number of frames run.
pub fn outcomes_and_verdicts(counters: &Counters) -> (u64, u64) {
    let outcomes = Counter::ALL
        .iter()
        .filter(|counter| counter.is_outcome())
        .map(|counter| counters[*counter as usize])
        .sum();
    let verdicts = counters[Counter::Passed as usize] + counters[Counter::Dropped as usize];
    (outcomes, verdicts)
}
