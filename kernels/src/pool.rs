//! A persistent pool of worker threads for the matrix products.
//!
//! Decoding one token runs about 115 matrix products of a few milliseconds or less, so the
//! cost of handing out a product matters. The workers stay alive between products: after a
//! job they watch for the next one for a short while ([`WAIT`]: spinning, then yielding the
//! CPU), then park on a condition variable. The calling thread takes part as thread 0 and returns when every
//! thread has finished, so a job may borrow from the caller's stack.
//!
//! `unsafe` here: the job is a borrowed `&dyn Fn`, whose lifetime is erased to hand it to
//! the workers; [`Pool::run`] does not return (nor unwind) before every worker is done with
//! it. [`Pool::run_split`] hands every thread its own `&mut` piece of the caller's data
//! (as rayon's `par_chunks_mut` does): the pieces come from one raw pointer, cut along the
//! disjoint shares of [`share`]. These are the only `unsafe` outside the per-ISA kernel
//! modules.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a waiting thread (an idle worker, or the caller waiting for the workers) spins on
/// the CPU before it starts yielding it.
pub const SPIN: Duration = Duration::from_micros(10);

/// How long a waiting thread keeps checking (spinning, then yielding the CPU to any other
/// runnable thread) before it parks. Between the products of one token the gaps are
/// microseconds; between tokens a parked worker costs one wake-up (tens of microseconds).
/// Yielding matters when the machine is busier than the pool: a thread that only spun would
/// keep the CPU from the very thread it waits for.
pub const WAIT: Duration = Duration::from_micros(300);

/// Waits until `done()` or [`WAIT`] has passed: spins for [`SPIN`], then yields between
/// checks. Returns whether `done()` became true.
fn wait_briefly(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        let waited = start.elapsed();
        if waited >= WAIT {
            return done();
        }
        if waited >= SPIN {
            std::thread::yield_now();
        }
    }
}

/// Most threads a pool may have.
pub const MAX_THREADS: usize = 256;

/// The thread count to use for `threads`: itself, or one per CPU (at most [`MAX_THREADS`])
/// when it is 0. The one place a thread count is resolved; values above [`MAX_THREADS`] are
/// returned as they are, for [`Pool::new`] to refuse by name.
pub fn resolve_threads(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS),
        n => n,
    }
}

/// Errors creating a pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The thread count is 0 or above [`MAX_THREADS`].
    #[error("thread count {0} is outside 1..={MAX_THREADS}")]
    Threads(usize),
    /// The operating system refused a thread.
    #[error("cannot spawn a worker thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// A job with its lifetime erased (see the module docs).
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync`, so sharing the pointer with other threads to call it through
// `&` is sound; the lifetime is guarded by `Pool::run` (module docs).
unsafe impl Send for JobPtr {}

struct Slot {
    job: Option<JobPtr>,
    shutdown: bool,
    /// A worker's job panicked.
    panicked: bool,
}

struct Shared {
    /// Incremented once per job, under `slot`'s lock.
    epoch: AtomicU64,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    slot: Mutex<Slot>,
    /// Workers wait here for a new epoch.
    work: Condvar,
    /// The caller waits here for `pending == 0`.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic never happens while the lock is held (jobs run outside it).
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fixed set of threads that run jobs together: [`Pool::run`] calls `job(i)` once for each
/// `i` in `0..threads()`, `job(0)` on the calling thread.
pub struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One job at a time.
    run_lock: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of `threads` threads in all: the caller and `threads - 1` workers.
    pub fn new(threads: usize) -> Result<Self, PoolError> {
        if threads == 0 || threads > MAX_THREADS {
            return Err(PoolError::Threads(threads));
        }
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            slot: Mutex::new(Slot {
                job: None,
                shutdown: false,
                panicked: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let mut pool = Self {
            threads,
            shared,
            workers: Vec::with_capacity(threads - 1),
            run_lock: Mutex::new(()),
        };
        for index in 1..threads {
            let shared = Arc::clone(&pool.shared);
            let handle = std::thread::Builder::new()
                .name(format!("chatglm-worker-{index}"))
                .spawn(move || worker(&shared, index))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// Number of threads, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `job(i)` for every `i` in `0..threads()`, each on its own thread (`job(0)` on
    /// this one), and returns when all are done. Calls from several threads are serialized.
    ///
    /// # Panics
    ///
    /// If `job` panics on any thread: the panic is re-raised here once every thread has
    /// stopped using `job`.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 {
            job(0);
            return;
        }
        let _serial = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        let ptr: *const (dyn Fn(usize) + Sync + '_) = job;
        // SAFETY: only the trait object's lifetime bound changes (same layout). The erased
        // reference is used by the workers only between reading it from the slot and
        // decrementing `pending`, and this function does not return or unwind before
        // `pending` is back to 0 (below), so `job` outlives every use.
        let ptr: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(ptr) };
        shared.pending.store(self.threads - 1, Ordering::Release);
        {
            let mut slot = shared.lock();
            slot.job = Some(JobPtr(ptr));
            shared.epoch.fetch_add(1, Ordering::AcqRel);
        }
        shared.work.notify_all();

        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));

        // Wait for the workers: spin, yield, then sleep.
        wait_briefly(|| shared.pending.load(Ordering::Acquire) == 0);
        let mut slot = shared.lock();
        while shared.pending.load(Ordering::Acquire) != 0 {
            slot = shared.done.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
        slot.job = None;
        let worker_panicked = std::mem::replace(&mut slot.panicked, false);
        drop(slot);

        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if worker_panicked {
            panic!("a pool worker's job panicked");
        }
    }

    /// Cuts `data` ([`Split::units`] units) into [`share`]s, one per thread, and calls
    /// `job(t, units, piece)` on thread `t` with its units and its own `&mut` piece of the
    /// data (an empty one when there are fewer units than threads). Returns when all are
    /// done; panics as [`Pool::run`].
    pub fn run_split<'a, S: Split<'a>>(
        &self,
        data: S,
        job: impl Fn(usize, Range<usize>, S::Piece) + Sync,
    ) {
        let (units, threads) = (data.units(), self.threads);
        self.run(&|t| {
            let range = share(units, threads, t);
            // SAFETY: `run` calls this closure once for each `t`, and `share` gives distinct
            // `t` disjoint ranges inside `0..units`, so no two pieces overlap; `data` is
            // consumed here, so nothing else reaches the borrowed elements while the pieces
            // (which keep the original borrow `'a`) live.
            let piece = unsafe { data.piece(range.clone()) };
            job(t, range, piece);
        });
    }
}

/// Data that [`Pool::run_split`] cuts into disjoint `&mut` pieces: [`ChunksMut`], or a pair
/// of them cut along the same units.
pub trait Split<'a>: Sync {
    /// What one thread gets (borrowing for `'a`, like [`slice::split_at_mut`]'s halves).
    type Piece;

    /// How many units the data has.
    fn units(&self) -> usize;

    /// The piece that holds `units`.
    ///
    /// # Safety
    ///
    /// `units` lies inside `0..self.units()`, and no two pieces alive at the same time
    /// overlap.
    unsafe fn piece(&self, units: Range<usize>) -> Self::Piece;
}

/// A mutable slice seen as consecutive chunks of `chunk` elements (its units) for
/// [`Pool::run_split`]; a shorter tail is not part of any unit.
pub struct ChunksMut<'a, T> {
    ptr: *mut T,
    chunks: usize,
    chunk: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

impl<'a, T> ChunksMut<'a, T> {
    /// `data` in chunks of `chunk` elements (no units if `chunk` is 0).
    pub fn new(data: &'a mut [T], chunk: usize) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            chunks: data.len().checked_div(chunk).unwrap_or(0),
            chunk,
            _borrow: PhantomData,
        }
    }
}

// SAFETY: a `ChunksMut` is an exclusive borrow of a `[T]`; sending it, or sharing it so that
// threads take disjoint `&mut [T]` pieces of it (`Split::piece`), moves `T`s between threads
// as `&mut [T]` would, which `T: Send` allows.
unsafe impl<T: Send> Send for ChunksMut<'_, T> {}
// SAFETY: as above; through `&ChunksMut` only `Split::piece` reaches the elements, and its
// contract keeps the pieces disjoint.
unsafe impl<T: Send> Sync for ChunksMut<'_, T> {}

impl<'a, T: Send> Split<'a> for ChunksMut<'a, T> {
    type Piece = &'a mut [T];

    fn units(&self) -> usize {
        self.chunks
    }

    unsafe fn piece(&self, units: Range<usize>) -> &'a mut [T] {
        debug_assert!(units.start <= units.end && units.end <= self.chunks);
        // SAFETY: `units` lies inside `0..chunks` (the caller's contract), so the elements
        // `units.start * chunk..units.end * chunk` are inside the borrowed slice; no other
        // live piece overlaps them (contract), so this `&mut` is exclusive for `'a`, the
        // borrow `ChunksMut::new` took.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.add(units.start * self.chunk),
                units.len() * self.chunk,
            )
        }
    }
}

impl<'a, A: Split<'a>, B: Split<'a>> Split<'a> for (A, B) {
    type Piece = (A::Piece, B::Piece);

    /// The units both have.
    fn units(&self) -> usize {
        self.0.units().min(self.1.units())
    }

    unsafe fn piece(&self, units: Range<usize>) -> Self::Piece {
        // SAFETY: `units` lies inside both parts' units (the minimum), and pieces disjoint
        // in units are disjoint in each part.
        unsafe { (self.0.piece(units.clone()), self.1.piece(units)) }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        for handle in self.workers.drain(..) {
            // A worker never panics outside a job (jobs are caught), so join cannot fail in
            // practice; nothing useful to do if it does.
            let _ = handle.join();
        }
    }
}

/// A worker's loop: wait for a new epoch, run the job with `index`, report, repeat.
fn worker(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        // Watch briefly for the next job, then park.
        wait_briefly(|| shared.epoch.load(Ordering::Acquire) != seen);
        let job = {
            let mut slot = shared.lock();
            while shared.epoch.load(Ordering::Acquire) == seen && !slot.shutdown {
                slot = shared.work.wait(slot).unwrap_or_else(|e| e.into_inner());
            }
            if slot.shutdown {
                return;
            }
            seen = shared.epoch.load(Ordering::Acquire);
            slot.job
        };
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `Pool::run` keeps the job alive until `pending` reaches 0, which
            // cannot happen before this worker's decrement below.
            let f = unsafe { &*ptr };
            if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
                shared.lock().panicked = true;
            }
        }
        if shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Take the lock so the caller cannot miss the notification between its check of
            // `pending` and its wait.
            let _slot = shared.lock();
            shared.done.notify_all();
        }
    }
}

/// The range of `units` that thread `i` of `threads` takes: contiguous shares differing by at
/// most one unit, the larger ones first.
pub fn share(units: usize, threads: usize, i: usize) -> std::ops::Range<usize> {
    let threads = threads.max(1);
    let (base, extra) = (units / threads, units % threads);
    let start = i * base + i.min(extra);
    let len = base + usize::from(i < extra);
    start.min(units)..(start + len).min(units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_index_runs_once_per_job() {
        for threads in [1, 2, 3, 8] {
            let pool = Pool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            for round in 0..200 {
                let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|i| {
                    hits[i].fetch_add(round + 1, Ordering::Relaxed);
                });
                for h in &hits {
                    assert_eq!(h.load(Ordering::Relaxed), round + 1);
                }
            }
        }
    }

    #[test]
    fn jobs_borrow_the_callers_data_and_write_disjoint_parts() {
        let pool = Pool::new(3).unwrap();
        let mut out = vec![0usize; 10];
        pool.run_split(ChunksMut::new(&mut out, 1), |t, units, piece| {
            assert_eq!(units, share(10, 3, t));
            assert_eq!(piece.len(), units.len());
            for (k, v) in piece.iter_mut().enumerate() {
                *v = (units.start + k) * 10 + t;
            }
        });
        assert_eq!(out, [0, 10, 20, 30, 41, 51, 61, 72, 82, 92]);
    }

    #[test]
    fn run_split_cuts_pairs_along_the_same_units_and_leaves_tails() {
        for threads in [1, 2, 3, 8] {
            let pool = Pool::new(threads).unwrap();
            // 5 units: chunks of 2 in `a` (plus a tail of 1 left alone), of 3 in `b`
            // (6 units, the extra one outside the pair).
            let (mut a, mut b) = (vec![0usize; 11], vec![0usize; 18]);
            let calls = AtomicUsize::new(0);
            pool.run_split(
                (ChunksMut::new(&mut a, 2), ChunksMut::new(&mut b, 3)),
                |t, units, (pa, pb)| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(units, share(5, threads, t));
                    assert_eq!((pa.len(), pb.len()), (2 * units.len(), 3 * units.len()));
                    pa.fill(t + 1);
                    pb.fill(units.start + 1);
                },
            );
            assert_eq!(calls.load(Ordering::Relaxed), threads);
            for u in 0..5 {
                let t = (0..threads)
                    .find(|&t| share(5, threads, t).contains(&u))
                    .unwrap();
                assert_eq!(a[2 * u..2 * u + 2], [t + 1; 2]);
                assert_eq!(b[3 * u..3 * u + 3], [share(5, threads, t).start + 1; 3]);
            }
            assert_eq!((a[10], &b[15..]), (0, &[0usize; 3][..]));
            // No units: every thread gets an empty piece.
            let mut none: [u8; 3] = [7; 3];
            pool.run_split(ChunksMut::new(&mut none, 0), |_, units, piece| {
                assert!(units.is_empty() && piece.is_empty());
            });
        }
    }

    #[test]
    fn shares_cover_the_range() {
        for units in [0, 1, 5, 17, 3424] {
            for threads in 1..6 {
                let mut next = 0;
                for i in 0..threads {
                    let r = share(units, threads, i);
                    assert_eq!(r.start, next);
                    assert!(r.len() == units / threads || r.len() == units / threads + 1);
                    next = r.end;
                }
                assert_eq!(next, units);
            }
        }
    }

    #[test]
    fn panics_propagate_after_all_threads_stop() {
        let pool = Pool::new(2).unwrap();
        for bad in [0, 1] {
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.run(&|i| {
                    if i == bad {
                        panic!("job {i} fails");
                    }
                })
            }));
            assert!(r.is_err(), "thread {bad}");
            // The pool still works.
            let n = AtomicUsize::new(0);
            pool.run(&|_| {
                n.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(n.load(Ordering::Relaxed), 2);
        }
    }

    #[test]
    fn bad_sizes_and_idle_workers() {
        assert!(matches!(Pool::new(0), Err(PoolError::Threads(0))));
        assert!(Pool::new(MAX_THREADS + 1).is_err());
        let pool = Pool::new(2).unwrap();
        // Workers park after WAIT; a job after that still runs.
        std::thread::sleep(WAIT * 3);
        let n = AtomicUsize::new(0);
        pool.run(&|i| {
            n.fetch_add(i + 1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 3);
        drop(pool);
    }
}
