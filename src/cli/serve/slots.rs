//! Slots and the queue: `--parallel N` sessions (a KV cache each) over the one shared
//! [`Engine`](chatglm::Engine), run by one scheduler thread (generation never runs on the
//! async executor), and a bounded queue of the requests waiting for a slot.
//!
//! A request goes to the free slot whose cached tokens share the longest prefix with its
//! prompt (the session then reuses those keys and values: a conversation that goes on where
//! it left off reads only its new messages). The choice is made in [`Scheduler::next_job`].
//!
//! The scheduler loop ([`spawn_scheduler`]) takes every job the queue hands out and, on each
//! turn, reads one part (`-b` tokens) of the prompt of every job still reading one, draws the
//! next token of every generating job, and advances all of those together with one batched
//! decode step ([`Session::decode_batch`]: one pass over the weights for all of them). A long
//! prompt therefore delays the others by one part per turn, never wholly. Each session has
//! its own sampler and seed, and a batched step gives each sequence the logits it would get
//! alone, so a request's text does not depend on what else runs. A client that leaves (or a
//! shutdown) ends its job at the next turn, whether it is reading its prompt or generating.

use super::error::ApiError;
use super::prompt::Prepared;
use super::stop::StopFilter;
use super::tools::{ReplyEnd, ReplyFilter, ToolCall};
use super::types::Usage;
use chatglm::model::DecodeBatch;
use chatglm::{Generation, Piece, Session, StopReason};
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

    /// The oldest waiting job and the free slot it goes to: the one whose cache shares the
    /// longest prefix with its prompt (the lowest index on a tie); the slot is marked busy.
    /// With `wait`, blocks until there is one or the scheduler is closed and drained
    /// ([`Next::Closed`]); without, answers [`Next::Empty`] at once.
    fn next_job(&self, wait: bool) -> Next {
        let mut s = self.lock();
        loop {
            // A job whose client has left (or any, once shutdown cancels) is dropped here;
            // dropping its sender ends the client's wait.
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
                if let Some(slot) = best {
                    s.free[slot] = None;
                    if let Some(job) = s.queue.pop_front() {
                        return Next::Job(slot, job);
                    }
                }
            } else if s.closed {
                return Next::Closed;
            }
            if !wait {
                return Next::Empty;
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

/// What [`Scheduler::next_job`] found.
enum Next {
    /// A job and the slot it goes to.
    Job(usize, Job),
    /// Nothing to start now.
    Empty,
    /// Closed, and the queue is empty.
    Closed,
}

/// How the scheduler advances the generating jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// All together, one pass over the weights per step.
    Batched,
    /// One after the other, a pass each (for measuring what batching gains).
    OneByOne,
}

/// Starts the scheduler thread over `sessions` (the slots); it serves jobs until the
/// scheduler is closed and every job is done. `batch` holds the batched step's buffers (for
/// `sessions.len()` sequences); `part` is the most prompt tokens a job reads per turn.
pub fn spawn_scheduler(
    sessions: Vec<Session>,
    batch: DecodeBatch,
    part: usize,
    decode: Decode,
    scheduler: &Arc<Scheduler>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let scheduler = Arc::clone(scheduler);
    std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || Loop::new(sessions, batch, part, decode).run(&scheduler))
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading its prompt.
    Prompt,
    /// Its logits are ready: the next token is to be drawn.
    Draw,
    /// A token was drawn: it is to be run (the decode step).
    Step,
}

/// A job on a slot.
struct Run {
    events: UnboundedSender<Event>,
    stop: StopFilter,
    reply: ReplyFilter,
    phase: Phase,
}

impl Run {
    /// Passes `piece` through the stop and reply filters to the client; whether to go on.
    fn on_text(&mut self, piece: &str, scheduler: &Scheduler) -> bool {
        let text = self.stop.push(piece);
        let text = self.reply.push(&text);
        let open = text.is_empty() || self.events.send(Event::Delta(text)).is_ok();
        open && !self.stop.hit() && !self.gone(scheduler)
    }

    /// Whether the client has left or the server cancels every generation.
    fn gone(&self, scheduler: &Scheduler) -> bool {
        self.events.is_closed() || scheduler.cancelled()
    }
}

/// The scheduler thread's state: the slots' sessions and jobs.
struct Loop {
    sessions: Vec<Session>,
    runs: Vec<Option<Run>>,
    batch: DecodeBatch,
    part: usize,
    decode: Decode,
}

impl Loop {
    fn new(sessions: Vec<Session>, batch: DecodeBatch, part: usize, decode: Decode) -> Self {
        let runs = sessions.iter().map(|_| None).collect();
        Self {
            sessions,
            runs,
            batch,
            part,
            decode,
        }
    }

    /// Serves until closed and drained.
    fn run(mut self, scheduler: &Scheduler) {
        loop {
            // Take every job there is a slot for; wait only when nothing runs.
            loop {
                let idle = self.runs.iter().all(Option::is_none);
                match scheduler.next_job(idle) {
                    Next::Job(slot, job) => self.start(slot, job, scheduler),
                    Next::Empty => break,
                    Next::Closed => return,
                }
            }
            self.turn(scheduler);
        }
    }

    /// Begins `job` on `slot` (a bad job ends at once).
    fn start(&mut self, slot: usize, job: Job, scheduler: &Scheduler) {
        let Job { prepared, events } = job;
        if let Err(e) = self.sessions[slot].begin(&prepared.prompt, &prepared.options) {
            eprintln!("chatglm serve: generation failed: {e}");
            let failed = ApiError::internal(format!("generation failed: {e}"));
            scheduler.release(slot, Vec::new());
            let _ = events.send(Event::Failed(failed));
            return;
        }
        self.runs[slot] = Some(Run {
            events,
            stop: StopFilter::new(&prepared.stops),
            reply: ReplyFilter::new(prepared.tools),
            phase: Phase::Prompt,
        });
    }

    /// One turn: ends the jobs whose clients left, reads a part of each prompt, draws a
    /// token for each job with fresh logits, and runs the drawn tokens.
    fn turn(&mut self, scheduler: &Scheduler) {
        for slot in 0..self.runs.len() {
            let Some(run) = &self.runs[slot] else {
                continue;
            };
            if run.gone(scheduler) {
                self.end(slot, Ok(StopReason::Cancelled), scheduler);
                continue;
            }
            if run.phase == Phase::Prompt {
                match self.sessions[slot].prefill(self.part) {
                    Ok(true) => self.set_phase(slot, Phase::Draw),
                    Ok(false) => {}
                    Err(e) => self.end(slot, Err(e.to_string()), scheduler),
                }
            }
        }
        for slot in 0..self.runs.len() {
            if self.phase(slot) == Some(Phase::Draw) {
                match self.draw(slot, scheduler) {
                    Ok(None) => self.set_phase(slot, Phase::Step),
                    Ok(Some(reason)) => self.end(slot, Ok(reason), scheduler),
                    Err(e) => self.end(slot, Err(e.to_string()), scheduler),
                }
            }
        }
        let stepping: Vec<usize> = (0..self.runs.len())
            .filter(|&slot| self.phase(slot) == Some(Phase::Step))
            .collect();
        if stepping.is_empty() {
            return;
        }
        let result = match self.decode {
            Decode::Batched => {
                let mut sessions: Vec<&mut Session> = self
                    .sessions
                    .iter_mut()
                    .enumerate()
                    .filter(|(slot, _)| stepping.contains(slot))
                    .map(|(_, s)| s)
                    .collect();
                Session::decode_batch(&mut self.batch, &mut sessions)
            }
            Decode::OneByOne => stepping
                .iter()
                .try_for_each(|&slot| self.sessions[slot].advance().map(|_| ())),
        };
        let result = result.map_err(|e| e.to_string());
        for slot in stepping {
            match &result {
                Ok(()) => self.set_phase(slot, Phase::Draw),
                Err(e) => self.end(slot, Err(e.clone()), scheduler),
            }
        }
    }

    fn phase(&self, slot: usize) -> Option<Phase> {
        self.runs[slot].as_ref().map(|r| r.phase)
    }

    fn set_phase(&mut self, slot: usize, phase: Phase) {
        if let Some(run) = self.runs[slot].as_mut() {
            run.phase = phase;
        }
    }

    /// Draws the next token of `slot` and passes its text on; the reason to stop, if any.
    fn draw(&mut self, slot: usize, scheduler: &Scheduler) -> chatglm::Result<Option<StopReason>> {
        let session = &mut self.sessions[slot];
        let Some(run) = self.runs[slot].as_mut() else {
            return Ok(None);
        };
        match session.next_piece()? {
            Piece::Stop(reason) => return Ok(Some(reason)),
            Piece::Text(piece) => {
                if !piece.is_empty() && !run.on_text(&piece, scheduler) {
                    return Ok(Some(StopReason::Cancelled));
                }
            }
        }
        session.limit()
    }

    /// Ends the job of `slot` (`Ok` with why it stopped, or what failed), frees the slot and
    /// sends the last event.
    fn end(&mut self, slot: usize, how: Result<StopReason, String>, scheduler: &Scheduler) {
        let Some(mut run) = self.runs[slot].take() else {
            return;
        };
        let session = &mut self.sessions[slot];
        let finished = how.and_then(|stop| {
            session
                .finish(stop, &mut |piece| run.on_text(piece, scheduler))
                .map_err(|e| e.to_string())
        });
        let last = match finished {
            Ok(generation) => done(&run.events, run.stop, run.reply, generation),
            Err(e) => {
                eprintln!("chatglm serve: generation failed: {e}");
                Event::Failed(ApiError::internal(format!("generation failed: {e}")))
            }
        };
        // Free before answering: a client that has its reply finds the slot free (and the
        // queue place given back).
        scheduler.release(slot, session.cached().to_vec());
        let _ = run.events.send(last);
    }
}

/// The last event of a finished generation: the rest of the filtered text goes to the
/// client, then the finish reason, the tool call and the counts.
fn done(
    events: &UnboundedSender<Event>,
    mut stop: StopFilter,
    mut reply: ReplyFilter,
    generation: Generation,
) -> Event {
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
    let send = |text: String| {
        if !text.is_empty() {
            let _ = events.send(Event::Delta(text));
        }
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
    Event::Done {
        finish,
        tool_call,
        usage: Usage {
            prompt_tokens: generation.prompt_ids.len(),
            completion_tokens: generation.ids.len(),
            cached_tokens: generation.timings.reused_tokens,
        },
    }
}
