//! Slots and the queue: `--parallel N` sessions (a KV cache each) over the one shared
//! [`Engine`], each run by a dedicated worker thread (generation never runs on the async
//! executor), and a bounded queue of the requests waiting for a slot.
//!
//! A request goes to the free slot whose cached tokens share the longest prefix with its
//! prompt (the session then reuses those keys and values: a conversation that goes on where
//! it left off reads only its new messages). The choice is made in [`Scheduler::take`]; the
//! work of a slot is [`run_job`].
//!
//! Batched decode (one pass over the weights per step for all generating slots) replaces the
//! N worker loops by one loop that takes every job [`Scheduler::take`] hands out and advances
//! them together; jobs, events, the queue and the admission rule stay as they are.

use super::error::ApiError;
use super::prompt::Prepared;
use super::stop::StopFilter;
use super::tools::{ReplyEnd, ReplyFilter, ToolCall};
use super::types::Usage;
use chatglm::{Session, StopReason};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tokio::sync::mpsc::UnboundedSender;

/// Why a reply ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end token or a stop sequence.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
    /// The reply is a tool call.
    ToolCalls,
    /// The server is shutting down.
    Cancelled,
}

impl Finish {
    /// `stop`, `length`, `tool_calls`; a shut-down generation reports `stop`.
    pub fn name(self) -> &'static str {
        match self {
            Finish::Stop | Finish::Cancelled => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
        }
    }
}

/// What a slot sends back while it works on a request.
#[derive(Debug)]
pub enum Event {
    /// More reply text.
    Delta(String),
    /// The reply is complete.
    Done {
        /// Why it ended.
        finish: Finish,
        /// The tool call, when the reply is one.
        tool_call: Option<ToolCall>,
        /// Token counts.
        usage: Usage,
    },
    /// Generation failed.
    Failed(ApiError),
}

/// A request for a slot.
#[derive(Debug)]
pub struct Job {
    /// What to generate.
    pub prepared: Prepared,
    /// Where the reply goes; when the receiver is gone (the client left), generation stops.
    pub events: UnboundedSender<Event>,
}

/// A job refused: every slot busy and the queue full, or the server closing.
#[derive(Debug)]
pub struct Busy;

/// Admission and dispatch of jobs to slots.
pub struct Scheduler {
    state: Mutex<State>,
    changed: Condvar,
    /// Slots plus queue places: the most requests accepted at once.
    capacity: usize,
    /// Set at shutdown's deadline: every generation stops.
    cancel: AtomicBool,
}

struct State {
    /// Jobs waiting for a slot, oldest first.
    queue: VecDeque<Job>,
    /// For each slot: `None` while busy; when free, the tokens its cache holds.
    free: Vec<Option<Vec<u32>>>,
    /// Requests accepted and not finished (queued or running).
    in_flight: usize,
    /// No more jobs: workers exit when the queue is empty.
    closed: bool,
}

/// Tokens `a` and `b` start with in common.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Scheduler {
    /// A scheduler for `slots` slots and a queue of `queue` places.
    pub fn new(slots: usize, queue: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                free: vec![Some(Vec::new()); slots],
                in_flight: 0,
                closed: false,
            }),
            changed: Condvar::new(),
            capacity: slots + queue,
            cancel: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked left the state consistent (every change is one statement).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts `job`, or refuses it (dropping it) when every slot is busy and the queue is
    /// full, or the server is closing.
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        let mut s = self.lock();
        if s.in_flight >= self.capacity || s.closed {
            return Err(Busy);
        }
        s.in_flight += 1;
        s.queue.push_back(job);
        drop(s);
        self.changed.notify_all();
        Ok(())
    }

    /// (free slots, slots, queued requests).
    pub fn load(&self) -> (usize, usize, usize) {
        let s = self.lock();
        let free = s.free.iter().filter(|f| f.is_some()).count();
        (free, s.free.len(), s.queue.len())
    }

    /// Stops every generation at its next token.
    pub fn cancel_all(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Whether generations are to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// No more jobs: the workers finish the queue and exit.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Blocks until the oldest waiting job is for `slot`: the free slot whose cache shares
    /// the longest prefix with its prompt (the lowest index on a tie). `None` once closed and
    /// drained.
    fn take(&self, slot: usize) -> Option<Job> {
        let mut s = self.lock();
        loop {
            // A job whose client has left (or any, once shutdown cancels) is dropped here,
            // whichever slot looks; dropping its sender ends the client's wait.
            while s
                .queue
                .front()
                .is_some_and(|j| j.events.is_closed() || self.cancelled())
            {
                s.queue.pop_front();
                s.in_flight -= 1;
            }
            if let Some(job) = s.queue.front() {
                let prompt = &job.prepared.prompt;
                let best = s
                    .free
                    .iter()
                    .enumerate()
                    .filter_map(|(i, f)| f.as_ref().map(|t| (i, common_prefix(t, prompt))))
                    .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                    .map(|(i, _)| i);
                if best == Some(slot) {
                    s.free[slot] = None;
                    return s.queue.pop_front();
                }
            } else if s.closed {
                return None;
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Marks `slot` free, its cache holding `tokens`, and the job done.
    fn release(&self, slot: usize, tokens: Vec<u32>) {
        let mut s = self.lock();
        s.free[slot] = Some(tokens);
        s.in_flight -= 1;
        drop(s);
        self.changed.notify_all();
    }
}

/// Starts one worker thread per session; each serves jobs until the scheduler is closed.
pub fn spawn_workers(
    sessions: Vec<Session>,
    scheduler: &Arc<Scheduler>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    sessions
        .into_iter()
        .enumerate()
        .map(|(slot, mut session)| {
            let scheduler = Arc::clone(scheduler);
            std::thread::Builder::new()
                .name(format!("slot-{slot}"))
                .spawn(move || {
                    while let Some(job) = scheduler.take(slot) {
                        let events = job.events.clone();
                        let (tokens, last) = run_job(&mut session, job, &scheduler);
                        // Free before answering: a client that has its reply finds the
                        // slot free (and the queue place given back).
                        scheduler.release(slot, tokens);
                        let _ = events.send(last);
                    }
                })
        })
        .collect()
}

/// Generates the reply to `job` on `session`, sending its text as it comes; returns the
/// tokens the session's cache then holds (empty if unknown) and the last event to send
/// ([`Event::Done`] or [`Event::Failed`]).
fn run_job(session: &mut Session, job: Job, scheduler: &Scheduler) -> (Vec<u32>, Event) {
    let Job { prepared, events } = job;
    let mut stop = StopFilter::new(&prepared.stops);
    let mut reply = ReplyFilter::new(prepared.tools.clone());
    let send = |text: String| text.is_empty() || events.send(Event::Delta(text)).is_ok();
    let result = session.generate(&prepared.prompt, &prepared.options, &mut |piece| {
        let text = stop.push(piece);
        let open = send(reply.push(&text));
        open && !stop.hit() && !events.is_closed() && !scheduler.cancelled()
    });
    let generation = match result {
        Ok(g) => g,
        Err(e) => {
            eprintln!("chatglm serve: generation failed: {e}");
            let failed = ApiError::internal(format!("generation failed: {e}"));
            return (Vec::new(), Event::Failed(failed));
        }
    };
    if events.is_closed() {
        eprintln!(
            "chatglm serve: client gone after {} tokens; generation stopped",
            generation.ids.len()
        );
    }
    let finish = match generation.stop {
        _ if stop.hit() => Finish::Stop,
        StopReason::Eos => Finish::Stop,
        StopReason::MaxTokens | StopReason::ContextFull => Finish::Length,
        StopReason::Cancelled => Finish::Cancelled,
    };
    if !stop.hit() {
        send(reply.push(&stop.finish()));
    }
    let (finish, tool_call) = match reply.finish() {
        ReplyEnd::Call(call) => (Finish::ToolCalls, Some(call)),
        ReplyEnd::Content(rest) => {
            send(rest);
            (finish, None)
        }
    };
    let usage = Usage {
        prompt_tokens: generation.prompt_ids.len(),
        completion_tokens: generation.ids.len(),
        cached_tokens: generation.timings.reused_tokens,
    };
    let mut tokens = generation.prompt_ids;
    tokens.extend_from_slice(&generation.ids);
    let done = Event::Done {
        finish,
        tool_call,
        usage,
    };
    (tokens, done)
}
