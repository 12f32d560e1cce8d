//! Syncing a body while it arrives, and vouching for what is synced.
//!
//! Every [`FLUSH_STEP`] written, the sink syncs what it has, so the final
//! sync has only the tail left. Once a sync is done, the sink is told the
//! prefix of the whole steps that sync covered and the hashing has passed
//! ([`BodySink::checkpoint`]), so a body cut off later can go on from
//! there (PROTOCOL.md §5.13). One sync or checkpoint runs at a time, on
//! the blocking pool beside the transfer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::body::FLUSH_STEP;
use super::BodySink;
use crate::protocol::{Prefix, StepHasher, STEP};

/// Syncs a body being received every [`FLUSH_STEP`], and records its
/// checkpoints.
#[derive(Default)]
pub(super) struct Flushing {
    /// Where the bytes the latest sync started covers end.
    flushed: u64,
    /// Where the bytes the latest sync that succeeded covered end: a
    /// checkpoint never claims more. Set by the sync step itself.
    synced: Arc<AtomicU64>,
    /// The sync or checkpoint under way.
    step: Option<JoinHandle<()>>,
    /// `None` for a body no checkpoint is taken of (a stream).
    checkpoints: Option<Checkpoints>,
}

/// The prefixes the hashing has passed, kept until a sync covers them.
/// Prefixes only grow, so two are enough: the largest that the syncs
/// started so far cover, and the largest beyond them.
struct Checkpoints {
    /// The prefix the body is received after.
    from: Prefix,
    /// The body's size: a checkpoint is always shorter.
    size: u64,
    /// Whole steps hashed when a prefix was last taken.
    steps: u64,
    covered: Option<Prefix>,
    beyond: Option<Prefix>,
}

impl Flushing {
    /// Flushing for a body of `size` bytes received after `from`, which is
    /// synced already; its checkpoints are taken.
    pub(super) fn after(from: &Prefix, size: u64) -> Flushing {
        Flushing {
            flushed: from.len,
            synced: Arc::new(AtomicU64::new(from.len)),
            step: None,
            checkpoints: Some(Checkpoints {
                from: from.clone(),
                size,
                steps: from.len / STEP,
                covered: None,
                beyond: None,
            }),
        }
    }

    /// Notes how far `hasher`, the body's, has come: a prefix is taken
    /// each time it passes a step.
    pub(super) fn hashed(&mut self, hasher: &StepHasher) {
        let Some(checkpoints) = &mut self.checkpoints else {
            return;
        };
        let steps = hasher.offset() / STEP;
        if steps <= checkpoints.steps {
            return;
        }
        checkpoints.steps = steps;
        let prefix = hasher.prefix(&checkpoints.from);
        if prefix.len >= checkpoints.size {
            return;
        }
        if prefix.len <= self.flushed {
            checkpoints.covered = Some(prefix);
        } else {
            checkpoints.beyond = Some(prefix);
        }
    }

    /// Starts what is due, unless a step is under way: the checkpoint of a
    /// prefix now synced, else a sync if another [`FLUSH_STEP`] was
    /// `written` since the last. A failed sync is not reported here (the
    /// final sync, before the file takes its name, meets it again), but
    /// vouches for nothing.
    pub(super) fn advance<B: BodySink>(&mut self, sink: &Arc<B>, written: u64) {
        if self.step.as_ref().is_some_and(|step| !step.is_finished()) {
            return;
        }
        if let Some(prefix) = self.due() {
            let sink = Arc::clone(sink);
            self.step = Some(tokio::task::spawn_blocking(move || {
                sink.checkpoint(&prefix)
            }));
            return;
        }
        if written.saturating_sub(self.flushed) >= FLUSH_STEP {
            let (sink, synced) = (Arc::clone(sink), Arc::clone(&self.synced));
            self.step = Some(tokio::task::spawn_blocking(move || {
                if sink.sync_written().is_ok() {
                    synced.fetch_max(written, Ordering::Release);
                }
            }));
            self.flushed = written;
            if let Some(checkpoints) = &mut self.checkpoints {
                if let Some(prefix) = checkpoints.beyond.take_if(|p| p.len <= written) {
                    checkpoints.covered = Some(prefix);
                }
            }
        }
    }

    /// Waits for the step under way, then records the checkpoint it made
    /// due, if any: whether the body is complete or was cut off, no step
    /// outlives the receive.
    pub(super) async fn finish<B: BodySink>(mut self, sink: &Arc<B>) {
        if let Some(step) = self.step.take() {
            let _ = step.await;
        }
        if let Some(prefix) = self.due() {
            let sink = Arc::clone(sink);
            let _ = tokio::task::spawn_blocking(move || sink.checkpoint(&prefix)).await;
        }
    }

    /// The prefix to record next: hashed, and covered by a sync that
    /// succeeded.
    fn due(&mut self) -> Option<Prefix> {
        let synced = self.synced.load(Ordering::Acquire);
        let checkpoints = self.checkpoints.as_mut()?;
        checkpoints.covered.take_if(|p| p.len <= synced)
    }
}
