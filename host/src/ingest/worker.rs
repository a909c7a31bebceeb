//! Partition-parallel workers: each one a thread of its own with a
//! [`Writer`] (its own plugin instance) and the partitions given to it. The
//! coordinator talks to them only through commands on a bounded channel
//! (full channels hold the consumer back: that is the backpressure), and
//! they answer on the reply channel a command carries, or with an
//! [`Event`]. Commands to one worker are handled in the order sent, so a
//! stage asked after some messages covers them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, channel, sync_channel};
use std::thread::JoinHandle;

use super::buffer::RawMessages;
use super::writer::{PartitionKey, Staged, Writer};
use crate::lake::{LakeError, Resume};
use crate::pipeline::Pipeline;
use crate::plugin::PluginRunner;

/// Message runs a worker may have waiting before the consumer waits.
const QUEUE_DEPTH: usize = 4;

/// What the coordinator asks of a worker.
pub(crate) enum Command {
    /// take this partition, resuming at the offset given.
    Assign(PartitionKey, Resume, i64),
    /// give this partition up.
    Remove(PartitionKey),
    /// a run of one partition's messages.
    Messages(PartitionKey, RawMessages),
    /// the consumer was sent back as asked (`true`), or the seek failed.
    Seeked(PartitionKey, bool),
    /// stage these partitions' files.
    Stage(Vec<PartitionKey>, SyncSender<StageReply>),
    /// what this partition staged last is in the tables, which stand here.
    Committed(PartitionKey, Resume),
    /// another writer committed this partition first: drop what it holds,
    /// the tables stand here, go on at the offset.
    Reset(PartitionKey, Resume, i64),
    /// run this plugin instance from now on.
    Swap(Box<PluginRunner>, SyncSender<Result<(), String>>),
}

/// A worker's answer to a stage: what it staged, or why it could not.
pub(crate) type StageReply = Result<Vec<Staged>, LakeError>;

/// What a worker tells the coordinator unasked.
pub(crate) enum Event {
    /// offsets were skipped: send the consumer of this partition back here.
    Reread(PartitionKey, i64),
}

/// The memory one worker holds, in bytes, for the coordinator to count
/// against `ingest.max_buffer_bytes` without asking.
#[derive(Debug, Default)]
struct Holding {
    /// messages sent to the worker and not yet taken: the coordinator adds
    /// a run as it sends it, the worker takes it off once it has taken it.
    queued: AtomicUsize,
    /// what the worker buffers for the next stage ([`Writer::held_bytes`]),
    /// as it stood after the worker's last command.
    buffered: AtomicUsize,
}

/// The workers of one ingest.
pub(crate) struct Workers {
    senders: Vec<SyncSender<Command>>,
    holdings: Vec<Arc<Holding>>,
    threads: Vec<JoinHandle<()>>,
    events: Receiver<Event>,
    /// partitions held by each worker (to place new ones).
    load: Vec<usize>,
}

/// A worker stopped (it panicked): ingest cannot go on.
#[derive(Debug, thiserror::Error)]
#[error("ingest worker {0} stopped")]
pub struct WorkerGone(pub usize);

impl Workers {
    /// Start one worker per writer.
    pub fn start(pipeline: &Pipeline, writers: Vec<Writer>) -> std::io::Result<Self> {
        let (event_tx, events) = channel();
        let mut senders = Vec::with_capacity(writers.len());
        let mut threads = Vec::with_capacity(writers.len());
        let mut holdings = Vec::with_capacity(writers.len());
        for (i, writer) in writers.into_iter().enumerate() {
            let (tx, rx) = sync_channel(QUEUE_DEPTH);
            let (pipeline, event_tx) = (pipeline.clone(), event_tx.clone());
            let holding = Arc::new(Holding::default());
            let held = Arc::clone(&holding);
            let thread = std::thread::Builder::new()
                .name(format!("weir-worker-{i}"))
                .spawn(move || work(writer, &pipeline, &rx, &event_tx, &held))?;
            senders.push(tx);
            threads.push(thread);
            holdings.push(holding);
        }
        Ok(Workers {
            load: vec![0; senders.len()],
            senders,
            holdings,
            threads,
            events,
        })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// The worker a new partition goes to: the one holding fewest.
    pub fn place(&mut self) -> usize {
        let (worker, _) = self
            .load
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| **n)
            .unwrap_or((0, &0));
        self.load[worker] += 1;
        worker
    }

    /// A partition left `worker`.
    pub fn unplace(&mut self, worker: usize) {
        self.load[worker] = self.load[worker].saturating_sub(1);
    }

    /// The memory the workers hold: the messages queued to them, and what
    /// each buffers for its next stage as of its last command.
    pub fn held_bytes(&self) -> usize {
        self.holdings
            .iter()
            .map(|h| h.queued.load(Relaxed) + h.buffered.load(Relaxed))
            .sum()
    }

    /// Send `command` to `worker` (waits while its queue is full).
    pub fn send(&self, worker: usize, command: Command) -> Result<(), WorkerGone> {
        if let Command::Messages(_, run) = &command {
            self.holdings[worker].queued.fetch_add(run.bytes(), Relaxed);
        }
        self.senders[worker]
            .send(command)
            .map_err(|_| WorkerGone(worker))
    }

    /// Ask the workers holding `keys` (each given with its worker) to stage
    /// them, all at once; each stages after the messages sent to it before
    /// (and takes those sent after into the next cycle). The answers come
    /// through the [`StageReplies`].
    pub fn stage(&self, keys: &[(usize, PartitionKey)]) -> Result<StageReplies, WorkerGone> {
        let mut pending = Vec::new();
        for worker in 0..self.senders.len() {
            let mine: Vec<PartitionKey> = keys
                .iter()
                .filter(|(w, _)| *w == worker)
                .map(|(_, k)| k.clone())
                .collect();
            if mine.is_empty() {
                continue;
            }
            let (tx, rx) = sync_channel(1);
            self.send(worker, Command::Stage(mine, tx))?;
            pending.push((worker, rx));
        }
        Ok(StageReplies {
            pending,
            staged: Vec::new(),
            failed: Vec::new(),
        })
    }

    /// Switch every worker to a new plugin version: `runners` holds one
    /// instance per worker. The first refusal is answered.
    pub fn swap(&self, runners: Vec<PluginRunner>) -> Result<(), String> {
        let mut replies = Vec::new();
        for (worker, runner) in runners.into_iter().enumerate() {
            let (tx, rx) = sync_channel(1);
            self.send(worker, Command::Swap(Box::new(runner), tx))
                .map_err(|e| e.to_string())?;
            replies.push(rx);
        }
        let mut outcome = Ok(());
        for rx in replies {
            let reply = rx.recv().unwrap_or_else(|_| Err("a worker stopped".into()));
            if outcome.is_ok() {
                outcome = reply;
            }
        }
        outcome
    }

    /// The next event a worker sent, if any.
    pub fn event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.senders.clear(); // closes the queues: each worker returns
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The answers to a stage asked of several workers, as they come.
pub(crate) struct StageReplies {
    pending: Vec<(usize, Receiver<StageReply>)>,
    /// what the workers that answered staged.
    pub staged: Vec<Staged>,
    /// the workers that could not stage, and why (their rows stay with them).
    pub failed: Vec<(usize, StageError)>,
}

impl StageReplies {
    /// Take the answers given so far, or (`wait`) wait for all of them.
    /// Whether every worker answered.
    pub fn gather(&mut self, wait: bool) -> bool {
        let (staged, failed) = (&mut self.staged, &mut self.failed);
        self.pending.retain(|(worker, rx)| {
            let reply = if wait {
                rx.recv().ok()
            } else {
                match rx.try_recv() {
                    Ok(reply) => Some(reply),
                    Err(TryRecvError::Empty) => return true,
                    Err(TryRecvError::Disconnected) => None,
                }
            };
            match reply {
                Some(Ok(s)) => staged.extend(s),
                Some(Err(e)) => failed.push((*worker, StageError::Lake(e))),
                None => failed.push((*worker, StageError::Gone(WorkerGone(*worker)))),
            }
            false
        });
        self.pending.is_empty()
    }
}

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StageError {
    /// A file could not be encoded.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// A worker stopped.
    #[error(transparent)]
    Gone(#[from] WorkerGone),
}

/// A worker's loop: commands until the coordinator closes the queue. After
/// each, what it holds is published for the coordinator's buffer cap.
fn work(
    mut writer: Writer,
    pipeline: &Pipeline,
    commands: &Receiver<Command>,
    events: &Sender<Event>,
    holding: &Holding,
) {
    while let Ok(command) = commands.recv() {
        match command {
            Command::Assign(key, resume, next) => writer.assign(key, resume, next),
            Command::Remove(key) => writer.remove(&key),
            Command::Messages(key, messages) => {
                let queued = messages.bytes();
                let reread = writer.take(&key, messages);
                holding.queued.fetch_sub(queued, Relaxed);
                if let Some(offset) = reread {
                    let _ = events.send(Event::Reread(key, offset));
                }
            }
            Command::Seeked(key, made) => writer.seeked(&key, made),
            Command::Stage(keys, reply) => {
                let _ = reply.send(writer.stage(&keys));
            }
            Command::Committed(key, resume) => writer.committed(&key, resume),
            Command::Reset(key, resume, next) => writer.reset(&key, resume, next),
            Command::Swap(runner, reply) => {
                let _ = reply.send(writer.replace_runner(pipeline, *runner));
            }
        }
        holding.buffered.store(writer.held_bytes(), Relaxed);
    }
}
