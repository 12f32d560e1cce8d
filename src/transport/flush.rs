//! Syncing a body while it arrives, and vouching for what is synced.
//!
//! Every [`FLUSH_STEP`] written, the sink syncs what it has, so the final
//! sync has only the tail left. Once a sync is done, the sink is told the
//! longest prefix of whole steps that sync covered and the hashing has
//! passed ([`BodySink::checkpoint`]), so a body cut off later can go on
//! from there (PROTOCOL.md §5.13). One sync or checkpoint runs at a time,
//! on the blocking pool beside the transfer.
//!
//! How far the last checkpoint may lag what was received, for a sink that
//! keeps its checkpoints ([`BodySink::takes_checkpoints`]):
//!
//! - The receive never reads more from the socket while what it wrote
//!   runs [`MAX_AHEAD`] (two steps) or more past the last checkpoint
//!   recorded: it waits for the hashing, sync or checkpoint under way
//!   ([`Flushing::behind`], [`Flushing::wait`]). So a receiver killed
//!   outright, or whose receive is dropped, goes on from a checkpoint
//!   less than two steps plus the piece read last (1 MiB at most: a
//!   pipe's worth, or two chunks) behind every byte it took from the
//!   socket. Only a failed sync lifts the bound, since then nothing can
//!   be vouched for; the final sync meets that failure again.
//! - A receive cut off while the receiver lives (the connection closed or
//!   reset, a stall, a peer too slow, the trailer missing) hashes and
//!   syncs what it wrote and records the longest prefix of whole steps in
//!   it before it returns the error ([`Flushing::bring_up_to_date`]): it
//!   goes on from less than one step behind the last byte it took from
//!   the socket. By the bound above, that costs at most the hashing and a
//!   sync of less than two steps and 1 MiB.
//! - A receive whose sender pauses, sending nothing for [`IDLE`], does the
//!   same, then waits on within the same stall limit: a receiver killed
//!   after its sender paused for longer than that, and that hashing and
//!   sync, goes on from less than one step behind the last byte it took
//!   from the socket.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::body::FLUSH_STEP;
use super::BodySink;
use crate::protocol::{Prefix, StepHasher, STEP};

/// How far the bytes written may run past the last checkpoint recorded
/// before the receive waits for the sync and checkpoint under way.
pub(super) const MAX_AHEAD: u64 = 2 * STEP;

/// How long a receive that takes checkpoints waits for more of the body
/// before it brings its checkpoint up to date, then waits on. Longer than
/// the gaps of a transfer that is moving, even one that lost a packet
/// (Linux retransmits after 200 ms at the soonest). A gap that does last
/// this long costs a sync a step at most, during which what arrives waits
/// in the socket: with no new whole step to vouch for there is nothing to
/// do.
pub(super) const IDLE: Duration = Duration::from_millis(250);

/// The most prefixes kept waiting for a sync to cover them; the oldest
/// goes first, when syncs lag or fail.
const PENDING: usize = 4;

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
    step: Option<(JoinHandle<()>, Step)>,
    /// `None` for a body no checkpoint is taken of (a stream).
    checkpoints: Option<Checkpoints>,
}

/// What a step on the blocking pool does.
#[derive(Clone, Copy)]
enum Step {
    Sync,
    /// Records the checkpoint of a prefix this long.
    Checkpoint(u64),
}

/// The prefixes the hashing has passed, kept until a sync covers them.
struct Checkpoints {
    /// The prefix the body is received after.
    from: Prefix,
    /// The body's size: a checkpoint is always shorter.
    size: u64,
    /// Whole steps hashed when a prefix was last taken.
    steps: u64,
    /// Prefixes hashed and not yet recorded, shortest first, at most
    /// [`PENDING`]: the hashing hands over one at every step it passes.
    /// The receive stays within [`MAX_AHEAD`] of the last recorded, so
    /// there are fewer unless syncs fail.
    pending: VecDeque<Prefix>,
    /// The length of the last prefix recorded: the sink's checkpoint.
    recorded: u64,
}

impl Flushing {
    /// Flushing for a body of `size` bytes received after `from`, which is
    /// synced already; its checkpoints are taken if `checkpoints`.
    pub(super) fn after(from: &Prefix, size: u64, checkpoints: bool) -> Flushing {
        Flushing {
            flushed: from.len,
            synced: Arc::new(AtomicU64::new(from.len)),
            step: None,
            checkpoints: checkpoints.then(|| Checkpoints {
                from: from.clone(),
                size,
                steps: from.len / STEP,
                pending: VecDeque::new(),
                recorded: from.len,
            }),
        }
    }

    /// Notes how far `hasher`, the body's, has come: a prefix is taken
    /// each time it passes a step. The hashing hands over its hasher at
    /// least once within every step, so no step's prefix is missed.
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
        if prefix.len < checkpoints.size {
            if checkpoints.pending.len() == PENDING {
                checkpoints.pending.pop_front();
            }
            checkpoints.pending.push_back(prefix);
        }
    }

    /// Starts what is due, unless a step is under way: the checkpoint of a
    /// prefix now synced, else a sync if another [`FLUSH_STEP`] was
    /// `written` since the last. A failed sync is not reported here (the
    /// final sync, before the file takes its name, meets it again), but
    /// vouches for nothing.
    pub(super) fn advance<B: BodySink>(&mut self, sink: &Arc<B>, written: u64) {
        if !self.settle() {
            return;
        }
        if let Some(prefix) = self.due() {
            self.start_checkpoint(sink, prefix);
            return;
        }
        if written.saturating_sub(self.flushed) >= FLUSH_STEP {
            self.start_sync(sink, written);
        }
    }

    /// Whether the receive, `written` bytes far, must wait before it reads
    /// more: it is [`MAX_AHEAD`] or more past the last checkpoint recorded.
    /// Never for a body without checkpoints.
    pub(super) fn behind(&mut self, written: u64) -> bool {
        self.settle();
        self.checkpoints
            .as_ref()
            .is_some_and(|c| written >= c.recorded.saturating_add(MAX_AHEAD))
    }

    /// Waits for the step under way, then starts what is due, as
    /// [`Flushing::advance`]. Whether there was a step to wait for or one
    /// is started: if neither, no checkpoint can come of waiting (a sync
    /// failed), and the receive goes on without.
    pub(super) async fn wait<B: BodySink>(&mut self, sink: &Arc<B>, written: u64) -> bool {
        let waited = self.join().await;
        self.advance(sink, written);
        waited || self.step.is_some()
    }

    /// Waits for the step under way, then records the checkpoint it made
    /// due, if any: no step outlives the receive.
    pub(super) async fn finish<B: BodySink>(&mut self, sink: &Arc<B>) {
        self.join().await;
        if let Some(prefix) = self.due() {
            self.start_checkpoint(sink, prefix);
            self.join().await;
        }
    }

    /// For a body cut off, or whose sender paused, with `written` bytes
    /// written, all of them hashed and handed to [`Flushing::hashed`]:
    /// syncs them and records the longest prefix of whole steps they hold,
    /// unless it is recorded already, so the body goes on from there if
    /// the receive ends now. `None` if not all that was received was
    /// written (a write failed): then only the step under way is waited
    /// for, as [`Flushing::finish`] does.
    pub(super) async fn bring_up_to_date<B: BodySink>(
        &mut self,
        sink: &Arc<B>,
        written: Option<u64>,
    ) {
        self.join().await;
        let longest = self.checkpoints.as_ref().and_then(|c| {
            c.pending
                .back()
                .map(|p| p.len)
                .filter(|len| *len > c.recorded)
        });
        if let (Some(written), Some(longest)) = (written, longest) {
            if self.synced.load(Ordering::Acquire) < longest {
                self.start_sync(sink, written);
                self.join().await;
            }
        }
        self.finish(sink).await;
    }

    /// Forgets the step under way if it is done; whether none is under
    /// way now.
    fn settle(&mut self) -> bool {
        match &self.step {
            Some((step, _)) if !step.is_finished() => false,
            Some((_, done)) => {
                let done = *done;
                self.step = None;
                self.done(done);
                true
            }
            None => true,
        }
    }

    /// Waits for the step under way; whether there was one.
    async fn join(&mut self) -> bool {
        let Some((step, what)) = self.step.take() else {
            return false;
        };
        let _ = step.await;
        self.done(what);
        true
    }

    /// Notes a step that is over.
    fn done(&mut self, step: Step) {
        if let (Step::Checkpoint(len), Some(checkpoints)) = (step, &mut self.checkpoints) {
            checkpoints.recorded = checkpoints.recorded.max(len);
        }
    }

    fn start_checkpoint<B: BodySink>(&mut self, sink: &Arc<B>, prefix: Prefix) {
        let (sink, len) = (Arc::clone(sink), prefix.len);
        let step = tokio::task::spawn_blocking(move || sink.checkpoint(&prefix));
        self.step = Some((step, Step::Checkpoint(len)));
    }

    /// Syncs the first `written` bytes, which are all written.
    fn start_sync<B: BodySink>(&mut self, sink: &Arc<B>, written: u64) {
        let (sink, synced) = (Arc::clone(sink), Arc::clone(&self.synced));
        let step = tokio::task::spawn_blocking(move || {
            if sink.sync_written().is_ok() {
                synced.fetch_max(written, Ordering::Release);
            }
        });
        self.step = Some((step, Step::Sync));
        self.flushed = self.flushed.max(written);
    }

    /// The prefix to record next: the longest hashed and covered by a sync
    /// that succeeded. Those shorter are passed over.
    fn due(&mut self) -> Option<Prefix> {
        let synced = self.synced.load(Ordering::Acquire);
        let checkpoints = self.checkpoints.as_mut()?;
        let mut due = None;
        while checkpoints.pending.front().is_some_and(|p| p.len <= synced) {
            due = checkpoints.pending.pop_front();
        }
        due.filter(|p| p.len > checkpoints.recorded)
    }
}
