//! The threads that decode compressed layer data off the caller's thread: one per core
//! this process may run on, shared by everything in it, so that decoding chunks of a
//! layer being indexed (`pargz`, for each layer a pull indexes at once) and decoding
//! spans ahead of a reader (`data`) together never keep more threads busy than there
//! are cores. Jobs run in the order they were given.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

pub struct Workers {
    limit: usize,
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

/// The cores this process may run on (its CPU affinity, as `taskset` sets it).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The process's workers.
pub fn global() -> &'static Workers {
    static WORKERS: OnceLock<Workers> = OnceLock::new();
    WORKERS.get_or_init(|| Workers { limit: cores(), state: Mutex::default(), ready: Condvar::new() })
}

impl Workers {
    /// How many jobs run at once, at most.
    pub fn size(&self) -> usize {
        self.limit
    }

    /// Runs `job` on a worker once those given before it have started. A thread is
    /// started when the jobs waiting outnumber the idle workers, up to the limit; threads
    /// then stay for later jobs.
    pub fn run(&'static self, job: impl FnOnce() + Send + 'static) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.queue.push_back(Box::new(job));
        // An idle worker already woken for an earlier job (it counts as idle until it
        // runs) will take that one, not this.
        if s.queue.len() > s.idle && s.threads < self.limit {
            s.threads += 1;
            let spawned = std::thread::Builder::new().name("imgfs-decode".into()).spawn(move || self.work());
            if spawned.is_err() {
                // The jobs wait for the threads there are; with none, the caller's own
                // fallback (it decodes what it waits for itself) still makes progress.
                s.threads -= 1;
            }
        }
        self.ready.notify_one();
    }

    fn work(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = s.queue.pop_front() {
                drop(s);
                // A job that panics loses its own result (its owner sees the job gone),
                // not the worker.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s.idle += 1;
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
            s.idle -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Jobs given at once to workers with one thread idle run at once, up to the limit:
    /// each of three jobs here waits for the other two to start.
    #[test]
    fn a_burst_of_jobs_gets_threads_though_one_is_idle() {
        let workers: &'static Workers =
            Box::leak(Box::new(Workers { limit: 3, state: Mutex::default(), ready: Condvar::new() }));
        let (tx, rx) = mpsc::channel();
        workers.run(move || tx.send(()).unwrap());
        rx.recv().unwrap();
        // The first thread has gone idle.
        while workers.state.lock().unwrap().idle == 0 {
            std::thread::yield_now();
        }
        let started = std::sync::Arc::new((Mutex::new(0), Condvar::new()));
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let (started, tx) = (std::sync::Arc::clone(&started), tx.clone());
            workers.run(move || {
                let (count, moved) = &*started;
                let mut n = count.lock().unwrap();
                *n += 1;
                moved.notify_all();
                // Bounded, so that a failure is an answer, not a hang.
                let (n, _) = moved.wait_timeout_while(n, Duration::from_secs(30), |n| *n < 3).unwrap();
                tx.send(*n).unwrap();
            });
        }
        for _ in 0..3 {
            assert_eq!(rx.recv().unwrap(), 3, "the jobs did not all run at once");
        }
    }
}
