//! One single-threaded runtime per core, each connection kept on one of them.
//!
//! A connection's pumps and its tracker then always run on the same thread: a wake-up never
//! crosses cores, and no task is stolen by an idle worker in the middle of a round trip. With
//! tokio's work-stealing runtime, each recorded command woke a writer task on the other worker
//! and back (docs/performance.md, "Issue 14, second steps", has the A/B numbers). A new
//! connection goes to the lane with the fewest open connections, so long IDLE sessions do not
//! pile up on one core.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// The lanes: started together, stopped together.
pub struct Lanes {
    lanes: Vec<Lane>,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

struct Lane {
    handle: Handle,
    open: Arc<AtomicUsize>,
}

/// Counts a connection on its lane while it lives.
pub struct Seat {
    open: Arc<AtomicUsize>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lanes {
    /// `count` lanes (at least one), each a thread named `imapscope-lane-N`.
    pub fn start(count: usize) -> io::Result<Lanes> {
        let stop = CancellationToken::new();
        let mut lanes = Vec::new();
        let mut threads = Vec::new();
        for n in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let stopped = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("imapscope-lane-{n}"))
                // Tasks run only while the thread is inside `block_on`.
                .spawn(move || runtime.block_on(stopped.cancelled()))?;
            threads.push(thread);
            lanes.push(Lane {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Lanes {
            lanes,
            stop,
            threads,
        })
    }

    /// One lane per core the process may use.
    pub fn per_core() -> io::Result<Lanes> {
        Lanes::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The lane with the fewest open connections, and a seat on it.
    pub fn choose(&self) -> (Handle, Seat) {
        let lane = self
            .lanes
            .iter()
            .min_by_key(|l| l.open.load(Ordering::Relaxed))
            .unwrap_or_else(|| unreachable!("there is always at least one lane"));
        lane.open.fetch_add(1, Ordering::Relaxed);
        (
            lane.handle.clone(),
            Seat {
                open: lane.open.clone(),
            },
        )
    }

    /// Stops every lane (tasks still on them are dropped) and waits for their threads.
    pub async fn stop(self) {
        self.stop.cancel();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name of the thread that runs work spawned on `lane`.
    async fn thread_of(lane: &Handle) -> String {
        lane.spawn(async { std::thread::current().name().map(String::from) })
            .await
            .unwrap()
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn connections_go_to_the_emptiest_lane_and_leave_it() {
        let lanes = Lanes::start(2).unwrap();
        let (first, a) = lanes.choose();
        let (second, b) = lanes.choose();
        let first = thread_of(&first).await;
        assert!(first.starts_with("imapscope-lane-"), "{first}");
        assert_ne!(
            first,
            thread_of(&second).await,
            "two lanes, one connection each"
        );
        drop(a);
        let (third, _c) = lanes.choose();
        assert_eq!(
            thread_of(&third).await,
            first,
            "the lane that emptied is chosen"
        );
        drop(b);
        lanes.stop().await;
    }
}
