//! CPU deadlines of plugin calls.
//!
//! The engine's epoch advances every [`EPOCH_TICK`] of wall-clock time; a
//! call is armed to reach its epoch deadline after its limit in ticks. When
//! it does, [`CpuDeadline::on_epoch`] reads the calling thread's CPU time:
//! only a call that has *run* for its limit is interrupted, and one that was
//! merely waiting for a core on a busy host gets the ticks it still has
//! coming. So a healthy event is never rejected as an endless loop because
//! other work held the machine, and a looping one still stops after its
//! limit of CPU time (plus at most one tick).

use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

use super::engine::EPOCH_TICK;

/// The CPU time the calling thread has used, or `None` where the clock
/// cannot be read (then deadlines fall back to wall-clock time).
pub(crate) fn thread_cpu_time() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through a pointer to a
    // live, properly aligned local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    ))
}

/// Measures the CPU time the calling thread uses from its start (the
/// wall-clock time where the CPU clock cannot be read).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuStopwatch {
    cpu: Option<Duration>,
    wall: Instant,
}

impl CpuStopwatch {
    /// A stopwatch started now, on the calling thread.
    pub(crate) fn start() -> Self {
        CpuStopwatch {
            cpu: thread_cpu_time(),
            wall: Instant::now(),
        }
    }

    /// The CPU time used since the start (call it on the same thread).
    pub(crate) fn elapsed(&self) -> Duration {
        match (self.cpu, thread_cpu_time()) {
            (Some(started), Some(now)) => now.saturating_sub(started),
            _ => self.wall.elapsed(),
        }
    }
}

/// Epoch ticks that cover `time`, plus one for the tick in progress.
pub(crate) fn ticks_for(time: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    u64::try_from(time.as_nanos().div_ceil(tick))
        .unwrap_or(u64::MAX - 1)
        .max(1)
        + 1
}

/// The CPU limit of the call in progress, on the thread that runs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuDeadline {
    /// started when the call was armed.
    started: CpuStopwatch,
    /// CPU time the call may use.
    limit: Duration,
}

impl CpuDeadline {
    /// A deadline of `limit` CPU time from now, on the calling thread.
    pub(crate) fn arm(limit: Duration) -> Self {
        CpuDeadline {
            started: CpuStopwatch::start(),
            limit,
        }
    }

    /// Called when the call reaches its epoch deadline: interrupt it when it
    /// has used its CPU time, or extend it by the ticks that time still
    /// covers.
    pub(crate) fn on_epoch(&self) -> UpdateDeadline {
        match self.limit.checked_sub(self.started.elapsed()) {
            Some(left) if !left.is_zero() => UpdateDeadline::Continue(ticks_for(left)),
            _ => UpdateDeadline::Interrupt,
        }
    }
}

impl Default for CpuDeadline {
    /// Spent: a call that was never armed is interrupted at its first check.
    fn default() -> Self {
        CpuDeadline::arm(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_has_not_run_its_limit_is_extended_by_what_is_left() {
        let deadline = CpuDeadline::arm(Duration::from_secs(60));
        match deadline.on_epoch() {
            UpdateDeadline::Continue(ticks) => {
                // 60 s at 10 ms a tick, less the little CPU this test used
                assert!((5_900..=6_001).contains(&ticks), "{ticks}");
            }
            _ => panic!("interrupted a call that barely ran"),
        }
    }

    #[test]
    fn a_call_that_ran_its_limit_is_interrupted() {
        let deadline = CpuDeadline::arm(Duration::from_millis(5));
        let started = thread_cpu_time().unwrap();
        // burn CPU (not sleep: sleeping uses no CPU time)
        let mut x = 0u64;
        while thread_cpu_time().unwrap() - started < Duration::from_millis(6) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(matches!(deadline.on_epoch(), UpdateDeadline::Interrupt));
    }

    #[test]
    fn waiting_is_not_running() {
        let deadline = CpuDeadline::arm(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(deadline.on_epoch(), UpdateDeadline::Continue(_)));
    }

    #[test]
    fn ticks_cover_the_time_and_the_tick_in_progress() {
        assert_eq!(ticks_for(Duration::from_millis(100)), 11);
        assert_eq!(ticks_for(Duration::from_millis(101)), 12);
        assert_eq!(ticks_for(Duration::ZERO), 2);
    }
}
