//! Signed in: a refreshing session feeds the sync socket its tokens, and an expired token is
//! refreshed and the connection re-established without the caller noticing.

use std::net::SocketAddr;
use std::time::Duration;

use taskflow_client_core::account::{
    AccountClient, AccountUser, CredentialStore, Credentials, InMemory, Session,
};
use taskflow_client_core::{
    Client, ClientConfig, ClientEvent, ConnectionState, DocumentId, ServerConfig,
};
use taskflow_testkit::server::TestServer;

use crate::support::{add_task, next_event, synced};

/// A store that tells the test what the session saved.
struct Shared(std::sync::Arc<InMemory>);

impl CredentialStore for Shared {
    fn load(&self) -> Option<Credentials> {
        self.0.load()
    }

    fn save(&self, credentials: &Credentials) {
        self.0.save(credentials);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_and_the_connection_comes_back_by_itself() {
    let server_dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start_configured(
        server_dir.path(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        |config| config.access_token_ttl = Duration::from_secs(2),
    )
    .await;
    let account = &server.account;
    let signed_in = Credentials {
        access_token: account.access_token.clone(),
        refresh_token: account.refresh_token.clone(),
        user: AccountUser {
            id: account.user_id.clone(),
            email: account.email.clone(),
            name: "Tess Tester".into(),
        },
    };
    let kept = std::sync::Arc::new(InMemory::new(signed_in.clone()));
    let accounts = AccountClient::for_sync_url(&server.bare_url()).expect("url");
    let session = Session::new(accounts.clone(), Shared(kept.clone()));

    let dir = tempfile::tempdir().expect("dir");
    let client = Client::open(ClientConfig {
        data_dir: dir.path().to_owned(),
        user: "tess".into(),
        server: Some(
            ServerConfig::new(&server.bare_url())
                .expect("url")
                .with_tokens(session.clone()),
        ),
    })
    .await
    .expect("opens");
    let mut events = client.subscribe();

    let id = DocumentId::random();
    let credentials = session.credentials().await.expect("signed in");
    accounts
        .register_board(
            &credentials,
            &account.workspace_id,
            "Long day",
            &id.to_string(),
        )
        .await
        .expect("register");
    let board = client
        .create_board_as(id, "Long day")
        .await
        .expect("create");
    add_task(&client, board, "before expiry").await;
    synced(&client, board).await;

    // The server ends the connection when the token expires; the client comes back at once
    // with a refreshed one.
    let offline = next_event(&mut events, |e| {
        matches!(e, ClientEvent::Connection(ConnectionState::Offline { .. }))
    })
    .await;
    let ClientEvent::Connection(ConnectionState::Offline { error, .. }) = offline else {
        unreachable!()
    };
    assert!(error.contains("4001"), "{error}");
    next_event(&mut events, |e| {
        matches!(e, ClientEvent::Connection(ConnectionState::Online { .. }))
    })
    .await;
    add_task(&client, board, "after expiry").await;
    synced(&client, board).await;

    let now_kept = kept.load().expect("still signed in");
    assert_ne!(now_kept.access_token, signed_in.access_token, "refreshed");
    assert_ne!(
        now_kept.refresh_token, signed_in.refresh_token,
        "rotated and kept"
    );
    client.shutdown().await;
}
