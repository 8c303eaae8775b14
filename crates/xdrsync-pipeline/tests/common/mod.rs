//! Shared by the sync scenario tests of this crate.

use xdrsync_emulator::Emulator;
use xdrsync_pipeline::Pipeline;
use xdrsync_test_utils::truth::Poll;

/// Pulls `steps` times, the emulator clock moving `step` before each pull but the first; every
/// (tenant, stream) must succeed. Returns the polls.
pub(crate) async fn run(
    emu: &Emulator,
    pipeline: &Pipeline,
    steps: usize,
    step: chrono::Duration,
) -> Vec<Poll> {
    let mut polls = Vec::new();
    for i in 0..steps {
        if i > 0 {
            emu.state().clock().advance(step);
        }
        let start = emu.state().clock().now();
        let reports = pipeline.pull_all().await;
        let end = emu.state().clock().now();
        for r in &reports {
            assert!(
                r.error.is_none(),
                "step {i}, {} {}: {:?}",
                r.name,
                r.stream,
                r.error
            );
        }
        polls.push((start, end));
    }
    polls
}
