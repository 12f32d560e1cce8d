//! The server's report lines on their way out: a bounded queue drained by
//! one writer thread of its own, so that a stream nobody reads costs lost
//! lines, counted and said, and never a stalled server (issue 12, item 7:
//! a blocking write to a full stdout pipe froze the whole runtime).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Lines that may wait for the writer. A busy server makes a few thousand
/// reports a second, so this holds a second or more of them: enough to
/// ride out a reader that pauses, small enough that a reader that stopped
/// costs little memory.
pub(super) const MAX_QUEUED_LINES: usize = 4096;

/// Bytes that may wait for the writer, whatever the lines hold: a client
/// chooses the names in its reports, and a line with a long name full of
/// escaped control characters can run to over a hundred KiB.
pub(super) const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;

/// How often, at least, the writer says that lines were dropped while it
/// has nothing else to write.
const NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// Lines gathered into one write when the queue holds many.
const BATCH_BYTES: usize = 64 * 1024;

/// What travels through the queue.
enum Item {
    Line(String),
    /// Nothing to write: wakes the writer to look at `finishing`.
    Wake,
}

/// The sending side, shared by every connection: [`ReportQueue::push`]
/// never waits.
pub(super) struct ReportQueue {
    items: SyncSender<Item>,
    shared: Arc<Shared>,
}

/// The handle that ends the writer at shutdown.
pub(super) struct ReportWriter {
    wake: SyncSender<Item>,
    shared: Arc<Shared>,
    done: Receiver<()>,
}

struct Shared {
    /// Lines lost since the writer last said so.
    dropped: AtomicU64,
    /// Bytes of the lines in the queue.
    queued_bytes: AtomicUsize,
    /// Set at shutdown: the writer ends once the queue is empty.
    finishing: AtomicBool,
}

/// Starts a writer thread writing report lines to `sink`. With
/// `warn_on_drop`, lost lines are also said through `tracing` (on stderr),
/// which is pointless when `sink` is stderr itself. `notice` words the
/// line (without its newline) saying how many lines were lost, in the
/// stream's format.
pub(super) fn start(
    sink: impl Write + Send + 'static,
    warn_on_drop: bool,
    notice: fn(u64) -> String,
) -> std::io::Result<(ReportQueue, ReportWriter)> {
    let (items, queued) = mpsc::sync_channel(MAX_QUEUED_LINES);
    let (finished, done) = mpsc::channel();
    let shared = Arc::new(Shared {
        dropped: AtomicU64::new(0),
        queued_bytes: AtomicUsize::new(0),
        finishing: AtomicBool::new(false),
    });
    let writer = Writer {
        queued,
        sink,
        warn_on_drop,
        notice,
        shared: Arc::clone(&shared),
    };
    std::thread::Builder::new()
        .name("ferry-reports".into())
        .spawn(move || {
            writer.run();
            let _ = finished.send(());
        })?;
    let queue = ReportQueue {
        items: items.clone(),
        shared: Arc::clone(&shared),
    };
    let writer = ReportWriter {
        wake: items,
        shared,
        done,
    };
    Ok((queue, writer))
}

impl ReportQueue {
    /// Queues `line` (ending in a newline) for the writer, or drops and
    /// counts it if the queue is full.
    pub(super) fn push(&self, line: String) {
        let len = line.len();
        let before = self.shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) > MAX_QUEUED_BYTES {
            self.drop_line(len);
            return;
        }
        match self.items.try_send(Item::Line(line)) {
            Ok(()) => {}
            // Disconnected: the writer has finished, at shutdown.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.drop_line(len),
        }
    }

    fn drop_line(&self, len: usize) {
        self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl ReportWriter {
    /// Lets the writer write what is queued, waiting for it at most
    /// `patience`: a stream nobody reads must not keep the process from
    /// exiting, and the thread does not hold it up once `main` returns.
    pub(super) fn finish(self, patience: Duration) {
        self.shared.finishing.store(true, Ordering::Relaxed);
        // If the queue is full the writer is busy, and looks at
        // `finishing` after its write without being woken.
        let _ = self.wake.try_send(Item::Wake);
        if self.done.recv_timeout(patience).is_err() {
            tracing::warn!(
                "report lines still queued after {patience:?}: the report stream is not \
                 being read; exiting without them"
            );
        }
    }
}

struct Writer<W> {
    queued: Receiver<Item>,
    sink: W,
    warn_on_drop: bool,
    notice: fn(u64) -> String,
    shared: Arc<Shared>,
}

impl<W: Write> Writer<W> {
    fn run(mut self) {
        let mut batch = String::new();
        loop {
            let first = if self.shared.finishing.load(Ordering::Relaxed) {
                match self.queued.try_recv() {
                    Ok(item) => Some(item),
                    // All written: one last look for lines dropped meanwhile.
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                        batch.clear();
                        self.note_dropped(&mut batch);
                        self.write(&batch);
                        return;
                    }
                }
            } else {
                match self.queued.recv_timeout(NOTICE_INTERVAL) {
                    Ok(item) => Some(item),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            batch.clear();
            self.note_dropped(&mut batch);
            if let Some(item) = first {
                self.add(&mut batch, item);
                while batch.len() < BATCH_BYTES {
                    let Ok(item) = self.queued.try_recv() else {
                        break;
                    };
                    self.add(&mut batch, item);
                }
            }
            self.write(&batch);
        }
    }

    fn write(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        // A closed stream (EPIPE) loses the lines, as it did when each was
        // written in place; serving goes on.
        let _ = self
            .sink
            .write_all(text.as_bytes())
            .and_then(|()| self.sink.flush());
    }

    fn add(&self, batch: &mut String, item: Item) {
        if let Item::Line(line) = item {
            self.shared
                .queued_bytes
                .fetch_sub(line.len(), Ordering::Relaxed);
            batch.push_str(&line);
        }
    }

    /// Adds to `batch` a line saying how many lines were lost since the
    /// last such line, if any were.
    fn note_dropped(&self, batch: &mut String) {
        let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return;
        }
        if self.warn_on_drop {
            let said = dropped_notice(dropped);
            tracing::warn!("{said}: the report stream is not read fast enough");
        }
        batch.push_str(&(self.notice)(dropped));
        batch.push('\n');
    }
}

/// The text line saying `count` report lines were dropped: the time, then
/// [`dropped_notice`].
pub(super) fn dropped_text_line(count: u64) -> String {
    let time = humantime::format_rfc3339_millis(SystemTime::now());
    format!("{time} {}", dropped_notice(count))
}

/// `N report lines dropped`, its count spelled out.
fn dropped_notice(count: u64) -> String {
    let plural = if count == 1 { "line" } else { "lines" };
    format!("{count} report {plural} dropped")
}

// The binary denies these for code that runs; a test fails by panicking.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    /// A sink that takes nothing until its gate opens, as a pipe whose
    /// reader stopped.
    #[derive(Clone, Default)]
    struct GatedSink {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
    }

    impl GatedSink {
        fn open_gate(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8(self.written.lock().unwrap().clone()).unwrap()
        }

        fn wait_for_writes(&self, count: usize) {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while self.writes.load(Ordering::Relaxed) < count {
                assert!(std::time::Instant::now() < deadline, "no write");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    impl Write for GatedSink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            let (open, changed) = &*self.open;
            let mut is_open = open.lock().unwrap();
            while !*is_open {
                is_open = changed.wait(is_open).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_costs_dropped_lines_that_are_counted_and_said_first() {
        let sink = GatedSink::default();
        let (queue, writer) = start(sink.clone(), false, dropped_text_line).unwrap();
        queue.push("first\n".into());
        // The writer now holds "first" in a write that does not return.
        sink.wait_for_writes(1);
        let extra = 10;
        for n in 0..MAX_QUEUED_LINES + extra {
            queue.push(format!("line {n}\n"));
        }
        sink.open_gate();
        writer.finish(Duration::from_secs(20));
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "first");
        assert!(
            lines[1].ends_with(&format!(" {extra} report lines dropped")),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "line 0");
        assert_eq!(lines.len(), 2 + MAX_QUEUED_LINES, "{text}");
        assert_eq!(
            lines.last(),
            Some(&&*format!("line {}", MAX_QUEUED_LINES - 1))
        );
    }

    #[test]
    fn queued_bytes_are_bounded_whatever_the_line_count() {
        let sink = GatedSink::default();
        let (queue, writer) = start(sink.clone(), false, dropped_text_line).unwrap();
        queue.push("first\n".into());
        sink.wait_for_writes(1);
        let long = format!("{}\n", "x".repeat(1024 * 1024 - 1));
        for _ in 0..6 {
            queue.push(long.clone());
        }
        sink.open_gate();
        writer.finish(Duration::from_secs(20));
        let text = sink.text();
        let kept = text.lines().filter(|line| line.starts_with('x')).count();
        assert_eq!(kept, MAX_QUEUED_BYTES / long.len());
        assert!(text.contains(&format!(" {} report lines dropped", 6 - kept)));
    }

    #[test]
    fn finish_gives_up_on_a_sink_that_never_takes_anything() {
        let sink = GatedSink::default();
        let (queue, writer) = start(sink.clone(), false, dropped_text_line).unwrap();
        queue.push("never written\n".into());
        sink.wait_for_writes(1);
        let started = std::time::Instant::now();
        writer.finish(Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(5));
        // Pushing after the end neither blocks nor fails.
        queue.push("late\n".into());
    }

    #[test]
    fn finish_writes_what_is_queued_and_returns_at_once() {
        let sink = GatedSink::default();
        sink.open_gate();
        let (queue, writer) = start(sink.clone(), false, dropped_text_line).unwrap();
        for n in 0..100 {
            queue.push(format!("line {n}\n"));
        }
        writer.finish(Duration::from_secs(20));
        assert_eq!(sink.text().lines().count(), 100);
        assert!(!sink.text().contains("dropped"));
    }

    #[test]
    fn the_notice_counts_in_words() {
        assert_eq!(dropped_notice(1), "1 report line dropped");
        assert_eq!(dropped_notice(2), "2 report lines dropped");
    }
}
