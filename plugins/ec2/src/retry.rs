//! Bounded retries with exponential backoff for the upload's data calls.
//!
//! The SDK's own retries are off for PutSnapshotBlock and UploadPart: the plugin retries
//! them here, so every failed try is logged with its reason and counted, and a
//! cancellation stops the waiting at once.

use std::future::Future;
use std::time::Duration;

use crate::error::AwsError;

/// How often and how patiently a data call is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (the first one included), at least 1.
    pub attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub first_delay: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 4, first_delay: Duration::from_millis(500), max_delay: Duration::from_secs(8) }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `try_no` (1-based).
    pub fn delay(&self, try_no: u32) -> Duration {
        let factor = 1u32.checked_shl(try_no.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Why a retried call ended without success.
#[derive(Debug)]
pub enum RetryError {
    /// The last try's failure (not retryable, or no tries left).
    Failed(AwsError),
    Cancelled,
}

/// Runs `call` until it succeeds, fails in a way another try cannot fix, runs out of
/// tries, or `cancelled()` says stop. `on_retry(try_no, attempts, error, delay)` hears of
/// every failure that will be tried again.
pub async fn retry<T, F, Fut>(
    policy: RetryPolicy,
    cancelled: &(dyn Fn() -> bool + Sync),
    on_retry: &(dyn Fn(u32, u32, &AwsError, Duration) + Sync),
    mut call: F,
) -> Result<(T, u32), RetryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let attempts = policy.attempts.max(1);
    let mut try_no = 1;
    loop {
        if cancelled() {
            return Err(RetryError::Cancelled);
        }
        match call().await {
            Ok(v) => return Ok((v, try_no)),
            Err(e) if try_no < attempts && e.retryable() => {
                let delay = policy.delay(try_no);
                on_retry(try_no, attempts, &e, delay);
                // Sleep in short steps so a cancel is seen within a tenth of a second.
                let mut left = delay;
                while !left.is_zero() {
                    if cancelled() {
                        return Err(RetryError::Cancelled);
                    }
                    let step = left.min(Duration::from_millis(100));
                    tokio::time::sleep(step).await;
                    left -= step;
                }
                try_no += 1;
            }
            Err(e) => return Err(RetryError::Failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Failure;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn err(failure: Failure) -> AwsError {
        AwsError { operation: "PutSnapshotBlock", endpoint: "http://e".into(), failure, chain: vec![] }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let d: Vec<u64> = (1..=6).map(|t| p.delay(t).as_millis() as u64).collect();
        assert_eq!(d, vec![500, 1000, 2000, 4000, 8000, 8000]);
    }

    #[test]
    fn retries_transient_failures_then_succeeds() {
        let p = RetryPolicy { attempts: 4, first_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) };
        let calls = AtomicU32::new(0);
        let heard = AtomicU32::new(0);
        let out = rt().block_on(retry(
            p,
            &|| false,
            &|_, _, _, _| {
                heard.fetch_add(1, Ordering::SeqCst);
            },
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(err(Failure::Unreachable("reset".into())))
                    } else {
                        Ok(n)
                    }
                }
            },
        ));
        let (v, tries) = out.unwrap();
        assert_eq!((v, tries, heard.load(Ordering::SeqCst)), (2, 3, 2));
    }

    #[test]
    fn final_errors_and_exhaustion_stop() {
        let p = RetryPolicy { attempts: 3, first_delay: Duration::from_millis(1), max_delay: Duration::from_millis(1) };
        let calls = AtomicU32::new(0);
        let denied = Failure::Service { status: 403, code: "AuthFailure".into(), message: String::new() };
        let r: Result<((), u32), _> = rt().block_on(retry(p, &|| false, &|_, _, _, _| {}, || {
            calls.fetch_add(1, Ordering::SeqCst);
            let f = denied.clone();
            async move { Err(err(f)) }
        }));
        assert!(matches!(r, Err(RetryError::Failed(_))));
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1, "a 403 is not tried again");
        let r: Result<((), u32), _> = rt().block_on(retry(p, &|| false, &|_, _, _, _| {}, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(err(Failure::Timeout)) }
        }));
        assert!(matches!(r, Err(RetryError::Failed(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let r: Result<((), u32), _> =
            rt().block_on(retry(p, &|| true, &|_, _, _, _| {}, || async { Err(err(Failure::Timeout)) }));
        assert!(matches!(r, Err(RetryError::Cancelled)));
    }
}
