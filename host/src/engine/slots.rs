//! The concurrency limit on local builds (`max_concurrent_local_sessions`).

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A counting semaphore whose waiters can give up (a cancelled build stops waiting).
pub struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A held slot; dropping it frees the slot.
pub struct SlotGuard<'a> {
    slots: &'a Slots,
}

impl Slots {
    pub fn new(count: usize) -> Slots {
        Slots { free: Mutex::new(count.max(1)), freed: Condvar::new() }
    }

    /// Takes a slot at once, if one is free.
    pub fn try_acquire(&self) -> Option<SlotGuard<'_>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if *free > 0 {
            *free -= 1;
            Some(SlotGuard { slots: self })
        } else {
            None
        }
    }

    /// Waits up to `timeout` for a slot.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SlotGuard<'_>> {
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let (mut free, _) =
            self.freed.wait_timeout_while(free, timeout, |f| *f == 0).unwrap_or_else(|p| p.into_inner());
        if *free > 0 {
            *free -= 1;
            Some(SlotGuard { slots: self })
        } else {
            None
        }
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut free = self.slots.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.slots.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_limit_and_free() {
        let s = Slots::new(1);
        let a = s.try_acquire().unwrap();
        assert!(s.try_acquire().is_none());
        assert!(s.acquire_timeout(Duration::from_millis(10)).is_none());
        drop(a);
        assert!(s.acquire_timeout(Duration::from_millis(10)).is_some());
    }
}
