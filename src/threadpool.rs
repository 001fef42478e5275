//! A fixed pool of worker threads for the data-parallel loops of a forward pass.
//!
//! A forward pass runs hundreds of short parallel sections (each matrix product, each
//! attention block), so starting threads for each, or waking them through a condition
//! variable, costs more than the work on small models. Workers here spin briefly on a
//! generation counter before parking, and the caller takes a share of the work itself.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How long an idle worker spins before parking. About 50 us on this class of CPU: longer
/// than the gap between two products in one layer, far shorter than a token's decode.
const SPIN_ROUNDS: u32 = 20_000;

type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// The current job, as a raw pointer to a closure on the caller's stack (see `run`).
    job: Mutex<Option<*const Job>>,
    generation: AtomicU64,
    remaining: AtomicUsize,
    stop: AtomicBool,
    /// Set by a worker whose call panicked, so the caller checks `panic` only then.
    panicked: AtomicBool,
    /// The first panic of the current section's workers, re-raised by `run` on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: the raw job pointer is dereferenced only by workers between a generation bump and
// their decrement of `remaining`, and `run` (through `Section`'s drop, which runs even while the
// caller unwinds) keeps the closure alive until `remaining` is zero; the closure is `Sync`.
// Enforced here: nothing outside this module sees `Shared`.
unsafe impl Send for Shared {}
// SAFETY: as above; every other field is a synchronisation primitive.
unsafe impl Sync for Shared {}

/// A pool of `n - 1` workers plus the calling thread.
pub struct ThreadPool {
    n: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    // One section at a time: `run` takes `&self`, so guard against concurrent callers.
    busy: Mutex<()>,
}

impl ThreadPool {
    /// A pool that runs sections on `n` threads (the caller counts as one).
    pub fn new(n: usize) -> ThreadPool {
        let n = n.max(1);
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            generation: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            panic: Mutex::new(None),
        });
        let workers = (1..n)
            .map(|idx| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("llava-edge-{idx}"))
                    .spawn(move || worker(idx, &s))
                    .expect("spawning a worker thread")
            })
            .collect();
        ThreadPool {
            n,
            shared,
            workers,
            busy: Mutex::new(()),
        }
    }

    /// Threads a section runs on.
    pub fn threads(&self) -> usize {
        self.n
    }

    /// Calls `f(i)` once for each thread index `i` in `0..threads()`, in parallel, and returns
    /// when all calls have returned. The caller runs `f(0)`. As with `std::thread::scope`, a
    /// panic in any call is re-raised here once every call has finished, and the pool stays
    /// usable.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.n == 1 {
            f(0);
            return;
        }
        let _one_at_a_time = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: erasing the closure's lifetime is sound because the workers call it only
        // until `remaining` reaches zero, and `section` below waits for that in its drop, which
        // runs before this function returns or unwinds past `f`'s borrow (this function
        // enforces it; `section` is never leaked).
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f) };
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(ptr);
        self.shared.remaining.store(self.n - 1, Ordering::Release);
        let section = Section(&self.shared);
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        for w in &self.workers {
            w.thread().unpark();
        }
        f(0);
        drop(section);
        // A plain load on the fast path; the flag is only ever set by a panicking worker.
        if self.shared.panicked.load(Ordering::Acquire) {
            self.shared.panicked.store(false, Ordering::Relaxed);
            let payload = self
                .shared
                .panic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(p) = payload {
                resume_unwind(p);
            }
        }
    }

    /// Splits `0..n_items` into one contiguous range per thread (ranges start at multiples of
    /// `align`, so threads do not share cache lines or quant blocks) and calls `f(range)`.
    pub fn for_ranges(
        &self,
        n_items: usize,
        align: usize,
        f: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        let align = align.max(1);
        let units = n_items.div_ceil(align);
        let per = units.div_ceil(self.n).max(1) * align;
        self.run(&|i| {
            let (a, b) = ((i * per).min(n_items), ((i + 1) * per).min(n_items));
            if a < b {
                f(a..b);
            }
        });
    }
}

impl ThreadPool {
    /// Hands out `0..n_items` in chunks of `chunk` items (the last may be shorter) to whichever
    /// thread asks next, calling `f(range)` for each. Unlike [`ThreadPool::for_ranges`] a thread
    /// slowed by the caller's own work or by memory contention simply takes fewer chunks.
    pub fn for_chunks(
        &self,
        n_items: usize,
        chunk: usize,
        f: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        let chunk = chunk.max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        self.run(&|_| loop {
            let a = next.fetch_add(chunk, Ordering::Relaxed);
            if a >= n_items {
                break;
            }
            f(a..(a + chunk).min(n_items));
        });
    }
}

impl ThreadPool {
    /// Like [`ThreadPool::for_ranges`] (ranges start at multiples of `align`), balanced at run
    /// time without giving up long in-order streams: the items are split into one segment per
    /// pair of threads, and in each segment one thread claims runs from the front and the other
    /// from the back until they meet. Runs start at a quarter of what is left and shrink to
    /// `min_run` items, so a pair settles a product in a dozen claims while a thread slowed by
    /// the other's memory traffic, or by a late start, simply ends up with less.
    pub fn for_streams(
        &self,
        n_items: usize,
        align: usize,
        min_run: usize,
        f: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        let align = align.max(1);
        let units = n_items.div_ceil(align);
        if self.n == 1 || units <= 1 {
            self.for_ranges(n_items, align, f);
            return;
        }
        let min_units = (min_run / align).max(1);
        let segments = self.n.div_ceil(2);
        let per = units.div_ceil(segments);
        let pack = |a: usize, b: usize| (a as u64) << 32 | b as u64;
        let state: Vec<AtomicU64> = (0..segments)
            .map(|s| AtomicU64::new(pack((s * per).min(units), ((s + 1) * per).min(units))))
            .collect();
        self.run(&|i| {
            let (seg, from_back) = (&state[i / 2], i % 2 == 1);
            let mut cur = seg.load(Ordering::Acquire);
            loop {
                let (a, b) = ((cur >> 32) as usize, (cur & 0xffff_ffff) as usize);
                if a >= b {
                    break;
                }
                let take = ((b - a) / 4).max(min_units).min(b - a);
                let (next, run) = if from_back {
                    (pack(a, b - take), b - take..b)
                } else {
                    (pack(a + take, b), a..a + take)
                };
                match seg.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        f(run.start * align..(run.end * align).min(n_items));
                        cur = seg.load(Ordering::Acquire);
                    }
                    Err(now) => cur = now,
                }
            }
        });
    }
}

fn worker(idx: usize, s: &Shared) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            if spins < SPIN_ROUNDS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                // `run` unparks after bumping the generation, so a wake-up is never lost;
                // the timeout only bounds a missed one.
                std::thread::park_timeout(std::time::Duration::from_millis(10));
            }
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = job {
            // SAFETY: `run` keeps the closure alive until `remaining` reaches zero, which
            // happens only below, after the call has returned or unwound.
            let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(idx) }));
            if let Err(payload) = result {
                let mut first = s.panic.lock().unwrap_or_else(|e| e.into_inner());
                if first.is_none() {
                    *first = Some(payload);
                }
                s.panicked.store(true, Ordering::Release);
            }
        }
        s.remaining.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One section of [`ThreadPool::run`] in flight: dropping it waits until every worker has
/// finished with the caller's closure, so the closure outlives their calls even when the
/// caller's own share unwinds.
struct Section<'a>(&'a Shared);

impl Drop for Section<'_> {
    fn drop(&mut self) {
        let s = self.0;
        let mut spins = 0u32;
        while s.remaining.load(Ordering::Acquire) != 0 {
            if spins < SPIN_ROUNDS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if std::thread::panicking() {
            // The caller's own panic is the one that propagates (as in `std::thread::scope`);
            // a worker's is dropped here so the next section starts clean.
            s.panicked.store(false, Ordering::Release);
            let stale = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
            // A payload whose drop panics would abort while unwinding: leak it instead.
            std::mem::forget(stale);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for w in self.workers.drain(..) {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

/// A buffer the pool's threads write at disjoint places (rows of an output, runs of
/// activations): the raw pointer every parallel op needs, in one place.
pub struct Disjoint<T>(*mut T);

impl<T> Clone for Disjoint<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Disjoint<T> {}

// SAFETY: sharing the bare pointer is harmless; every use of it is an `unsafe` dereference
// whose SAFETY names the elements its thread alone writes, within a section of the pool, which
// (panic or not) finishes before the buffer's borrow ends. `T: Send` because other threads write
// the elements.
unsafe impl<T: Send> Send for Disjoint<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Disjoint<T> {}

impl<T> Disjoint<T> {
    /// The buffer `x`, to be shared with the pool's threads.
    pub fn new(x: &mut [T]) -> Disjoint<T> {
        Disjoint(x.as_mut_ptr())
    }

    /// The start of the buffer.
    pub fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    #[test]
    fn every_index_runs_once_per_section_across_many_sections() {
        let pool = ThreadPool::new(3);
        let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..2000 {
            pool.run(&|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        for h in &hits {
            assert_eq!(h.load(Ordering::Relaxed), 2000);
        }
    }

    #[test]
    fn ranges_cover_everything_once_and_are_aligned() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            for n in [0, 1, 7, 64, 1000] {
                let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.for_ranges(n, 8, &|r| {
                    assert!(r.start % 8 == 0);
                    for i in r {
                        seen[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(
                    seen.iter().all(|s| s.load(Ordering::Relaxed) == 1),
                    "n {n} t {threads}"
                );
            }
        }
    }

    #[test]
    fn streams_cover_everything_once_and_are_aligned() {
        for threads in [1, 2, 3, 4, 5] {
            let pool = ThreadPool::new(threads);
            for n in [0, 1, 7, 64, 1000, 9728] {
                for min_run in [1, 16, 64] {
                    let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                    pool.for_streams(n, 8, min_run, &|r| {
                        assert!(r.start % 8 == 0 && r.start < r.end && r.end <= n);
                        for i in r {
                            seen[i].fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    assert!(
                        seen.iter().all(|s| s.load(Ordering::Relaxed) == 1),
                        "n {n} t {threads} min_run {min_run}"
                    );
                }
            }
        }
    }

    /// Aborts the test binary unless dropped within `secs` seconds: a pool that hangs would
    /// otherwise stall the whole run instead of failing.
    struct Watchdog(std::sync::Arc<AtomicBool>);

    fn watchdog(what: &'static str, secs: u64) -> Watchdog {
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let seen = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
            while std::time::Instant::now() < end {
                if seen.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            eprintln!("{what}: the pool hung for {secs} s; aborting");
            std::process::abort();
        });
        Watchdog(done)
    }

    impl Drop for Watchdog {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    /// Every index runs exactly once per section, `rounds` times over.
    fn still_works(pool: &ThreadPool, rounds: usize) {
        let hits: Vec<AtomicUsize> = (0..pool.threads()).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..rounds {
            pool.run(&|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == rounds));
    }

    #[test]
    fn a_panicking_caller_waits_for_workers_still_reading_its_stack() {
        static DROPPED: AtomicBool = AtomicBool::new(false);
        static READ_AFTER_DROP: AtomicBool = AtomicBool::new(false);
        static WORKER_DONE: AtomicBool = AtomicBool::new(false);
        struct Buffer(Vec<u64>);
        impl Drop for Buffer {
            fn drop(&mut self) {
                DROPPED.store(true, Ordering::SeqCst);
            }
        }
        let _dog = watchdog("caller panic", 30);
        let pool = ThreadPool::new(2);
        let sum = AtomicU64::new(0);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            let buf = Buffer(vec![3; 1024]);
            pool.run(&|i| {
                if i == 0 {
                    panic!("the caller's share fails");
                }
                // Still reading the caller's buffer well after the caller's share panicked.
                std::thread::sleep(std::time::Duration::from_millis(200));
                if DROPPED.load(Ordering::SeqCst) {
                    READ_AFTER_DROP.store(true, Ordering::SeqCst);
                } else {
                    sum.store(buf.0.iter().sum(), Ordering::SeqCst);
                }
                WORKER_DONE.store(true, Ordering::SeqCst);
            });
        }));
        let payload = caught.expect_err("the caller's panic propagates");
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"the caller's share fails")
        );
        assert!(
            WORKER_DONE.load(Ordering::SeqCst),
            "run unwound while a worker still ran the caller's closure"
        );
        assert!(!READ_AFTER_DROP.load(Ordering::SeqCst));
        assert_eq!(sum.load(Ordering::SeqCst), 3 * 1024);
        still_works(&pool, 200);
    }

    #[test]
    fn a_panicking_worker_reaches_the_caller_and_the_pool_carries_on() {
        let _dog = watchdog("worker panic", 30);
        let pool = ThreadPool::new(3);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i| {
                if i == 2 {
                    panic!("worker 2 fails");
                }
            })
        }));
        let payload = caught.expect_err("the worker's panic reaches the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"worker 2 fails"));
        still_works(&pool, 200);
        // Every thread at once: the caller's own panic wins and no worker's is left over.
        let caught = catch_unwind(AssertUnwindSafe(|| {
            pool.for_chunks(64, 1, &|r| panic!("chunk {} fails", r.start))
        }));
        assert!(caught.is_err());
        still_works(&pool, 200);
        let n = AtomicUsize::new(0);
        pool.for_streams(1000, 8, 16, &|r| {
            n.fetch_add(r.len(), Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn borrows_from_the_callers_stack_safely() {
        let pool = ThreadPool::new(2);
        for round in 0..100 {
            let local = [round; 16];
            let sum = AtomicUsize::new(0);
            pool.run(&|i| {
                sum.fetch_add(local[i], Ordering::Relaxed);
            });
            assert_eq!(sum.load(Ordering::Relaxed), 2 * round);
        }
    }
}
