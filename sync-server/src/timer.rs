//! The embedded schedulers' wait (deadlines, recurrences): their timers are rows with a due
//! time, so between rounds they sleep until the earliest one, or until woken because a row
//! changed, or stopped.

use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::now_ms;
use crate::store::StoreError;

/// The longest sleep: a missed wake-up costs at most this.
const LONGEST_SLEEP: Duration = Duration::from_secs(30);
/// The pause after a failed round (the rows that failed are still due).
const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Waits until the earliest timer `next` (milliseconds; `None`: no timer pending), a wake-up or
/// `stop`; answers `false` when stopped. After a failed round it pauses instead.
pub async fn wait_for_next(
    next: Result<Option<i64>, StoreError>,
    failed: bool,
    wake: &Notify,
    stop: &CancellationToken,
) -> bool {
    let sleep = match next {
        _ if failed => AFTER_FAILURE,
        Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
        Ok(None) => LONGEST_SLEEP,
        Err(e) => {
            tracing::warn!(error = %e, "reading the next timer failed");
            AFTER_FAILURE
        }
    };
    tokio::select! {
        () = tokio::time::sleep(sleep.min(LONGEST_SLEEP)) => true,
        () = wake.notified() => true,
        () = stop.cancelled() => false,
    }
}
