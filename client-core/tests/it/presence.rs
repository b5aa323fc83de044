//! Presence through our server: who views which board and task, and expiry when a viewer goes
//! quiet.

use std::time::Instant;
use taskflow_client_core::ClientEvent;

use taskflow_client_core::presence::{PRESENCE_HEARTBEAT, PRESENCE_TTL};

use crate::support::{SharedBoard, next_event, shared_board};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_each_other_and_quiet_ones_expire() {
    let SharedBoard {
        ann: a,
        bob: b,
        board,
        task,
        server: _server,
        server_dir: _server_dir,
        client_dirs: _dirs,
    } = shared_board("Team", "review").await;

    let mut b_events = b.subscribe();
    a.set_viewing(board, Some(task.clone()))
        .await
        .expect("view");
    let ClientEvent::Presence { viewers, .. } = next_event(
        &mut b_events,
        |e| matches!(e, ClientEvent::Presence { viewers, .. } if !viewers.is_empty()),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(viewers.len(), 1);
    assert_eq!(viewers[0].user, "ann");
    assert_eq!(viewers[0].task.as_ref(), Some(&task));

    a.set_viewing(board, None).await.expect("back to the board");
    next_event(&mut b_events, |e| {
        matches!(e, ClientEvent::Presence { viewers, .. } if viewers.len() == 1 && viewers[0].task.is_none())
    })
    .await;
    a.stop_viewing(board).await.expect("leave");
    next_event(
        &mut b_events,
        |e| matches!(e, ClientEvent::Presence { viewers, .. } if viewers.is_empty()),
    )
    .await;
    assert!(b.viewers(board).await.expect("viewers").is_empty());

    // B views, then vanishes without a goodbye: A forgets B once B has been quiet for the TTL.
    let mut a_events = a.subscribe();
    b.set_viewing(board, None).await.expect("view");
    next_event(
        &mut a_events,
        |e| matches!(e, ClientEvent::Presence { viewers, .. } if viewers.len() == 1),
    )
    .await;
    // Dropping the last handle ends B's engine: its socket goes with no `left` message (only an
    // explicit shutdown says goodbye), as with a crashed or suspended laptop.
    drop(b_events);
    drop(b);
    let gone_at = Instant::now();
    next_event(
        &mut a_events,
        |e| matches!(e, ClientEvent::Presence { viewers, .. } if viewers.is_empty()),
    )
    .await;
    // B's last heartbeat was at most one interval before it vanished.
    assert!(
        gone_at.elapsed() >= PRESENCE_TTL - PRESENCE_HEARTBEAT,
        "expired after {:?}",
        gone_at.elapsed()
    );
}
