//! TLS plaintext that arrives before its socket is known.
//!
//! A TLS library that encrypts into a memory BIO (node's OpenSSL) makes no syscall inside
//! SSL_write, so the probes cannot tell which socket a write belongs to until the thread sends
//! the ciphertext, right after. They send the plaintext record with an unknown fd, then a
//! `TlsSocket` record naming the socket of that thread's write. This holds the first kind
//! per thread until the second arrives.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A write whose socket is not named within this time is dropped (and counted).
const HOLD_FOR: Duration = Duration::from_secs(1);
/// Bounds: records per thread, threads.
const PER_THREAD: usize = 16;
const THREADS: usize = 1024;

/// One held plaintext record.
pub struct Held {
    pub ingress: bool,
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
    pub total: u64,
    pub payload: Vec<u8>,
    /// The event-loop callback the SSL call was made in.
    pub cause: crate::events::Cause,
    at: Instant,
}

impl Held {
    pub fn new(ingress: bool, ts_enter_ns: u64, ts_exit_ns: u64, total: u64, payload: &[u8], cause: crate::events::Cause) -> Self {
        Held { ingress, ts_enter_ns, ts_exit_ns, total, payload: payload.to_vec(), cause, at: Instant::now() }
    }
}

#[derive(Default)]
pub struct MemoryBioHold {
    /// By (tgid, tid).
    held: HashMap<(u32, u32), Vec<Held>>,
}

impl MemoryBioHold {
    /// Keeps a record; returns false (the caller counts it lost) when the bounds are reached.
    pub fn hold(&mut self, tgid: u32, tid: u32, record: Held) -> bool {
        if self.held.len() >= THREADS && !self.held.contains_key(&(tgid, tid)) {
            return false;
        }
        let records = self.held.entry((tgid, tid)).or_default();
        if records.len() >= PER_THREAD {
            return false;
        }
        records.push(record);
        true
    }

    /// The records thread `tid` of `tgid` holds, now that their socket is known.
    pub fn release(&mut self, tgid: u32, tid: u32) -> Vec<Held> {
        self.held.remove(&(tgid, tid)).unwrap_or_default()
    }

    /// Drops records held too long; returns how many.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut dropped = 0;
        self.held.retain(|_, records| {
            let before = records.len();
            records.retain(|r| now.duration_since(r.at) < HOLD_FOR);
            dropped += (before - records.len()) as u64;
            !records.is_empty()
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_until_released_by_the_same_thread() {
        let mut hold = MemoryBioHold::default();
        assert!(hold.hold(10, 11, Held::new(false, 1, 2, 5, b"GET /", Default::default())));
        assert!(hold.release(10, 12).is_empty(), "another thread's socket says nothing");
        let released = hold.release(10, 11);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].payload, b"GET /");
        assert!(hold.release(10, 11).is_empty());
    }

    #[test]
    fn bounded_and_expiring() {
        let mut hold = MemoryBioHold::default();
        for _ in 0..PER_THREAD {
            assert!(hold.hold(1, 1, Held::new(false, 0, 0, 1, b"x", Default::default())));
        }
        assert!(!hold.hold(1, 1, Held::new(false, 0, 0, 1, b"x", Default::default())));
        assert_eq!(hold.expire(Instant::now()), 0);
        assert_eq!(hold.expire(Instant::now() + HOLD_FOR), PER_THREAD as u64);
        assert!(hold.release(1, 1).is_empty());
    }
}
