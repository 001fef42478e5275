//! A fixed pool of worker threads for the data-parallel loops of a forward pass.
//!
//! A forward pass runs hundreds of short parallel sections (each matrix product, each
//! attention block), so starting threads for each, or waking them through a condition
//! variable, costs more than the work on small models. Workers here spin briefly on a
//! generation counter before parking, and the caller takes a share of the work itself.

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
}

// SAFETY: the raw job pointer is only dereferenced while `run` keeps the closure alive and
// blocks; the closure itself is `Sync`.
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
    /// when all calls have returned. The caller runs `f(0)`.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.n == 1 {
            f(0);
            return;
        }
        let _one_at_a_time = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: erasing the closure's lifetime is sound because this function does not
        // return until every worker has finished calling it (`remaining` reaches zero), and
        // the pointer is cleared before returning.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f) };
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(ptr);
        self.shared.remaining.store(self.n - 1, Ordering::Release);
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        for w in &self.workers {
            w.thread().unpark();
        }
        f(0);
        let mut spins = 0u32;
        while self.shared.remaining.load(Ordering::Acquire) != 0 {
            if spins < SPIN_ROUNDS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
            // SAFETY: `run` keeps the closure alive until `remaining` reaches zero.
            unsafe { (*job)(idx) };
        }
        s.remaining.fetch_sub(1, Ordering::AcqRel);
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

// SAFETY: only used for writes to disjoint elements by threads the pool joins before the
// buffer's borrow ends (each user states which elements its thread owns).
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
