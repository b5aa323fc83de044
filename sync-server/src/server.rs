//! The HTTP surface and the server's lifecycle: routes, shared state, graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use taskflow_proto::{PeerId, StorageId};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use anyhow::Context;

use crate::access::AccessFeed;
use crate::auth::http::ApiError;
use crate::auth::redis_state::RedisState;
use crate::cache::ProjectCache;
use crate::config::{Config, Limits};
use crate::deadlines::{DeadlineConfig, DeadlineConsumer};
use crate::doc::{DocCommand, Open, Registry};
use crate::events::consume::Consumer;
use crate::events::webhooks::WebhookConsumer;
use crate::events::{EventsConfig, Signals};
use crate::fanout::{Fanout, Notice};
use crate::link::{ConnId, PeerLink, close_code};
use crate::notifications::hub::{Hub, HubConfig};
use crate::notifications::mailer::MailConfig;
use crate::notifications::{NotificationConsumer, Notifier};
use crate::store::Store;

/// State every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub registry: Registry,
    pub limits: Limits,
    pub storage_id: StorageId,
    pub identity: crate::auth::Identity,
    /// Membership and session changes, for live connections to act on.
    pub access: AccessFeed,
    /// Project views (`GET /api/v1/projects/{id}`), invalidated when boards change.
    pub cache: ProjectCache,
    /// Notifications: made from the events, read over REST, pushed to sockets.
    pub notifier: Arc<Notifier>,
    /// Deadline defaults, and what wakes the embedded scheduler.
    pub deadlines: DeadlineConfig,
    pub deadlines_wake: Arc<tokio::sync::Notify>,
    /// Wakes the embedded recurrence scheduler when rules change.
    pub recurrences_wake: Arc<tokio::sync::Notify>,
    /// Wakes the outbox relay when something wrote events.
    pub signals: Signals,
    /// What `/readyz` checks besides the database.
    pub dependencies: crate::health::Dependencies,
    /// The REST API's rate limits.
    pub api_limits: crate::ratelimit::ApiLimits,
    pub shutdown: CancellationToken,
    peers: Mutex<HashMap<PeerId, PeerLink>>,
    next_conn: AtomicU64,
    /// Every open socket (sync and notifications), for shutdown to wait for.
    pub(crate) connections: TaskTracker,
}

impl Shared {
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Records a joined peer. A peer id joining again on another socket replaces (and closes)
    /// the older connection, as the JS server does: it is the same peer reconnecting.
    pub fn register_peer(&self, link: &PeerLink) {
        let previous = self
            .peers
            .lock()
            .expect("peer directory lock")
            .insert(link.peer_id.clone(), link.clone());
        if let Some(old) = previous.filter(|old| old.conn != link.conn) {
            old.close(
                close_code::NORMAL,
                Some("the same peer joined on another connection".into()),
            );
        }
    }

    pub fn unregister_peer(&self, link: &PeerLink) {
        let mut peers = self.peers.lock().expect("peer directory lock");
        if peers
            .get(&link.peer_id)
            .is_some_and(|l| l.conn == link.conn)
        {
            peers.remove(&link.peer_id);
        }
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }
}

/// A configured server, ready to serve.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    store: Store,
    events: EventsConfig,
    signals: Signals,
    /// Consumers of the events, fed from the outbox or Kafka once serving.
    consumers: Vec<Arc<dyn Consumer>>,
    /// Wakes webhook deliveries when the webhook consumer queued some.
    webhooks_queued: Arc<tokio::sync::Notify>,
    /// How emails are sent, if they are.
    mail: Option<MailConfig>,
    /// How long stopping waits for the sockets to close, and then for the outbox to drain.
    drain: Duration,
    /// The internal gRPC address, bound, with the token its callers present.
    grpc: Option<(TcpListener, crate::config::Secret)>,
    /// Deadlines and recurrences on Temporal, when configured (the embedded schedulers
    /// otherwise).
    #[cfg(feature = "temporal")]
    temporal: Option<crate::temporal::TemporalSetup>,
}

impl Server {
    /// Opens the store (running migrations) and prepares the shared state.
    pub async fn open(config: &Config) -> anyhow::Result<Server> {
        // Installed first, so everything from here on is counted.
        crate::telemetry::metrics::handle();
        let store = Store::open(config.database_url.as_deref(), &config.data_dir).await?;
        let storage_id = StorageId::new(store.storage_id().await?);
        let server_peer = PeerId::new(format!("taskflow-server-{}", uuid::Uuid::new_v4()));
        let secret = match &config.jwt_secret {
            Some(secret) => secret.0.clone(),
            None => store.token_secret().await?,
        };
        let redis = match &config.redis_url {
            Some(url) => {
                // Keys and the channel are named after the database: nodes sharing one share
                // them; servers on other databases (tests, say) never meet.
                let state = RedisState::connect(url, storage_id.as_str())
                    .await
                    .with_context(|| format!("connecting to Redis at {url}"))?;
                let channel = format!("{}access", state.prefix());
                let feed = AccessFeed::shared(url, channel)
                    .await
                    .with_context(|| format!("subscribing to Redis at {url}"))?;
                Some((state, feed))
            }
            None => None,
        };
        let access = redis
            .as_ref()
            .map_or_else(AccessFeed::default, |(_, feed)| feed.clone());
        let hub = match (&redis, &config.redis_url) {
            (Some((state, _)), Some(url)) => {
                let hub_config = HubConfig {
                    route_ttl: config.notification_route_ttl,
                };
                Hub::shared(
                    url,
                    state.connection(),
                    state.prefix(),
                    hub_config,
                    state.breaker(),
                )
                .await
                .with_context(|| format!("subscribing to Redis at {url}"))?
            }
            _ => Hub::local(),
        };
        let mail = config.mail_config();
        if let Some(mail) = &mail {
            crate::notifications::mailer::check(mail)?;
        }
        let notifier = Arc::new(Notifier::new(
            store.clone(),
            hub,
            mail.is_some(),
            config.public_url(),
        ));
        let cache = redis
            .as_ref()
            .map_or_else(ProjectCache::local, |(state, _)| {
                ProjectCache::redis(state.connection(), state.prefix(), state.breaker())
            });
        let events = config.events_config();
        if events.kafka_brokers.is_some() && !cfg!(feature = "kafka") {
            anyhow::bail!(
                "KAFKA_BROKERS is set but this server was built without Kafka (cargo feature `kafka`)"
            );
        }
        let signals = Signals::default();
        let (fanout, notices) = match (&redis, &config.redis_url) {
            (Some((state, _)), Some(url)) => {
                let (fanout, notices) =
                    Fanout::shared(url, state.connection(), state.prefix(), state.breaker())
                        .await
                        .with_context(|| format!("subscribing to Redis at {url}"))?;
                (fanout, Some(notices))
            }
            _ => (Fanout::local(), None),
        };
        let registry = Registry::new(
            store.clone(),
            cache.clone(),
            signals.clone(),
            fanout,
            config.doc_config(),
            server_peer,
        );
        if let Some(notices) = notices {
            tokio::spawn(deliver_notices(registry.clone(), notices));
        }
        let dependencies = crate::health::Dependencies {
            redis: redis.as_ref().map(|(state, _)| state.connection()),
            kafka: events.kafka_brokers.clone(),
            temporal: config.temporal_address.clone(),
        };
        let mut identity = crate::auth::Identity::new(
            store.clone(),
            secret.as_bytes(),
            access.clone(),
            config.access_token_ttl,
        );
        if let Some((state, _)) = redis {
            identity = identity.with_redis(state);
        }
        let deadlines_wake = Arc::new(tokio::sync::Notify::new());
        let shared = Arc::new(Shared {
            registry,
            limits: config.limits(),
            storage_id,
            identity,
            access,
            cache,
            notifier: notifier.clone(),
            deadlines: DeadlineConfig {
                remind_before: config.reminder_offset,
            },
            deadlines_wake: deadlines_wake.clone(),
            recurrences_wake: Arc::new(tokio::sync::Notify::new()),
            signals: signals.clone(),
            dependencies,
            api_limits: crate::ratelimit::ApiLimits::new(
                (config.api_rate_per_address, config.api_burst_per_address),
                (config.api_rate_per_user, config.api_burst_per_user),
                config.trust_forwarded_for,
            ),
            shutdown: CancellationToken::new(),
            peers: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            connections: TaskTracker::new(),
        });
        if config.temporal_address.is_some() && !cfg!(feature = "temporal") {
            anyhow::bail!(
                "TEMPORAL_ADDRESS is set but this server was built without Temporal (cargo feature `temporal`)"
            );
        }
        #[allow(unused_mut)]
        let mut grpc = match (config.grpc_listen, &config.internal_token) {
            (Some(addr), Some(token)) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the gRPC address {addr}"))?;
                Some((listener, token.clone()))
            }
            (Some(_), None) => anyhow::bail!("--grpc-listen needs --internal-token"),
            (None, _) => None,
        };
        #[cfg(feature = "temporal")]
        let temporal = match &config.temporal_address {
            Some(address) => Some(temporal_setup(config, address, &mut grpc).await?),
            None => None,
        };
        let webhooks_queued = Arc::new(tokio::sync::Notify::new());
        let webhooks = WebhookConsumer::new(store.clone(), webhooks_queued.clone());
        let deadline_consumer = DeadlineConsumer::new(store.clone(), deadlines_wake);
        Ok(Server {
            shared,
            store,
            events,
            signals,
            consumers: vec![
                Arc::new(webhooks),
                Arc::new(NotificationConsumer(notifier)),
                Arc::new(deadline_consumer),
            ],
            webhooks_queued,
            mail,
            drain: config.drain_timeout,
            grpc,
            #[cfg(feature = "temporal")]
            temporal,
        })
    }

    /// Where the internal gRPC services listen, when configured.
    pub fn grpc_addr(&self) -> Option<std::net::SocketAddr> {
        self.grpc.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Adds a consumer of the domain events (before serving): it sees every event published
    /// from then on, and those before it that are still kept.
    pub fn add_consumer(&mut self, consumer: Arc<dyn Consumer>) {
        self.consumers.push(consumer);
    }

    /// Starts the outbox relay, the event consumers, webhook deliveries, the deadline scheduler
    /// and the mailer; each ends when
    /// `stop` is cancelled.
    fn start_events(&self, stop: &CancellationToken) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let mut tasks = Vec::new();
        let store = &self.store;
        let sink: Arc<dyn crate::events::relay::Sink> = match &self.events.kafka_brokers {
            #[cfg(feature = "kafka")]
            Some(brokers) => Arc::new(crate::events::kafka::KafkaSink::new(brokers, &self.events)?),
            _ => Arc::new(crate::events::relay::LocalLog),
        };
        tasks.push(tokio::spawn(crate::events::relay::run(
            store.clone(),
            sink,
            self.signals.clone(),
            self.events.retention,
            self.drain,
            stop.clone(),
        )));
        for consumer in &self.consumers {
            let task = match &self.events.kafka_brokers {
                #[cfg(feature = "kafka")]
                Some(brokers) => tokio::spawn(crate::events::kafka::run_consumer(
                    brokers.clone(),
                    self.events.clone(),
                    consumer.clone(),
                    stop.clone(),
                )),
                _ => tokio::spawn(crate::events::consume::run_local(
                    store.clone(),
                    consumer.clone(),
                    self.events.retry,
                    self.signals.clone(),
                    stop.clone(),
                )),
            };
            tasks.push(task);
        }
        tasks.push(tokio::spawn(crate::events::webhooks::run_deliveries(
            store.clone(),
            self.events.webhooks,
            self.webhooks_queued.clone(),
            stop.clone(),
        )));
        tasks.push(self.start_schedulers(stop));
        if let Some(mail) = &self.mail {
            tasks.push(tokio::spawn(crate::notifications::mailer::run(
                store.clone(),
                mail.clone(),
                self.shared.notifier.emails_queued.clone(),
                stop.clone(),
            )));
        }
        Ok(tasks)
    }

    /// Deadlines and recurrences: on Temporal when configured, otherwise the embedded
    /// schedulers.
    fn start_schedulers(&self, stop: &CancellationToken) -> JoinHandle<()> {
        let shared = &self.shared;
        #[cfg(feature = "temporal")]
        if let Some(setup) = &self.temporal {
            return tokio::spawn(crate::temporal::run(
                self.store.clone(),
                setup.clone(),
                shared.deadlines.remind_before_ms(),
                shared.deadlines_wake.clone(),
                shared.recurrences_wake.clone(),
                stop.clone(),
            ));
        }
        let deadlines = crate::deadlines::run(
            self.store.clone(),
            shared.deadlines,
            shared.deadlines_wake.clone(),
            self.signals.clone(),
            stop.clone(),
        );
        let recurrences = crate::recurrences::run(
            shared.clone(),
            shared.recurrences_wake.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            tokio::join!(deadlines, recurrences);
        })
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(crate::health::healthz))
            .route("/readyz", get(crate::health::readyz))
            .route("/metrics", get(crate::telemetry::metrics::render))
            .route("/api/v1/openapi.json", get(openapi))
            .route("/api/v1/sync", get(sync_socket))
            .merge(crate::auth::http::routes())
            .merge(crate::workspaces::routes())
            .merge(crate::projects::routes())
            .merge(crate::tasks::routes())
            .merge(crate::events::webhooks::routes())
            .merge(crate::notifications::http::routes())
            .merge(crate::deadlines::http::routes())
            .merge(crate::recurrences::http::routes())
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(
                self.shared.clone(),
                crate::idempotency::layer,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.shared.clone(),
                crate::ratelimit::layer,
            ))
            // Nothing carrying a NUL gets further.
            .layer(axum::middleware::from_fn(crate::nul_guard::layer))
            // Outermost: every request is counted, timed and has its span.
            .layer(axum::middleware::from_fn(crate::telemetry::http::observe))
            .with_state(self.shared.clone())
    }

    /// Serves until `stop` resolves, then stops accepting, closes every socket with 1001, lets
    /// document actors finish their in-flight writes, and closes the store.
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let shutdown = self.shared.shutdown.clone();
        let router = self.router();
        let events_stop = CancellationToken::new();
        let event_tasks = self.start_events(&events_stop)?;
        let grpc = self.grpc.map(|(listener, token)| {
            let caller = crate::grpc::InternalToken::new(&token);
            let stopped = shutdown.clone();
            tokio::spawn(crate::grpc::serve(
                listener,
                self.shared.clone(),
                caller,
                async move { stopped.cancelled().await },
            ))
        });
        tokio::spawn(reproject_backlog(self.shared.clone(), self.store.clone()));
        // Client addresses feed the login rate limits.
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                stop.await;
                shutdown.cancel();
            })
            .await?;
        if let Some(grpc) = grpc {
            match grpc.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "the gRPC server failed"),
                Err(e) => tracing::warn!(error = %e, "the gRPC server panicked"),
            }
        }
        self.shared.connections.close();
        if tokio::time::timeout(self.drain, self.shared.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        self.shared.registry.shutdown().await;
        // After the documents: their last commits may have written events, which the relay
        // publishes (for at most `drain`) before it stops.
        events_stop.cancel();
        let mut event_tasks = event_tasks;
        let stopped = futures_util::future::join_all(event_tasks.iter_mut());
        if tokio::time::timeout(self.drain + Duration::from_secs(1), stopped)
            .await
            .is_err()
        {
            // Whatever they were doing is redone after a restart (rows stay pending).
            tracing::warn!("some event tasks did not stop in time; stopping them");
            for task in &event_tasks {
                task.abort();
            }
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// How this server uses Temporal at `address`. An in-process worker calls this server's
/// internal gRPC, which is opened on a loopback port with a token of its own when the
/// deployment configured none.
#[cfg(feature = "temporal")]
async fn temporal_setup(
    config: &Config,
    address: &str,
    grpc: &mut Option<(TcpListener, crate::config::Secret)>,
) -> anyhow::Result<crate::temporal::TemporalSetup> {
    if !config.temporal_worker && grpc.is_none() {
        anyhow::bail!(
            "with --temporal-worker false, workers apart call this server's internal gRPC: \
             set --grpc-listen and --internal-token"
        );
    }
    let worker = if config.temporal_worker {
        if grpc.is_none() {
            let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
            let token = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            *grpc = Some((listener, crate::config::Secret(token)));
        }
        let (listener, token) = grpc.as_ref().context("the internal gRPC address")?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Some(taskflow_workflows::ServerAddress {
            url: format!("http://{addr}"),
            token: token.0.clone(),
        })
    } else {
        None
    };
    Ok(crate::temporal::TemporalSetup {
        config: taskflow_workflows::TemporalConfig {
            address: address.to_owned(),
            namespace: config.temporal_namespace.clone(),
            task_queue: config.temporal_task_queue.clone(),
        },
        worker,
    })
}

/// Hands what other nodes said about documents to those open here (dropped for the others).
/// A notice waits for its document's actor alone, so one busy document holds up no other.
async fn deliver_notices(
    registry: Registry,
    mut notices: tokio::sync::mpsc::Receiver<(taskflow_proto::DocumentId, Notice)>,
) {
    while let Some((id, notice)) = notices.recv().await {
        let registry = registry.clone();
        tokio::spawn(async move {
            registry
                .send(id, DocCommand::Remote(notice), Open::IfRunning)
                .await
        });
    }
}

/// Rebuilds the projection of every board on the backlog (boards stored before the projection
/// existed), one at a time, through each board's actor.
async fn reproject_backlog(shared: Arc<Shared>, store: Store) {
    let backlog = match store.projection_backlog().await {
        Ok(backlog) => backlog,
        Err(e) => {
            tracing::error!(error = %e, "reading the projection backlog failed");
            return;
        }
    };
    if !backlog.is_empty() {
        tracing::info!(boards = backlog.len(), "rebuilding board projections");
    }
    for document in backlog {
        if shared.shutdown.is_cancelled() {
            return;
        }
        match document.parse() {
            Ok(id) => shared.registry.reproject(id).await,
            Err(_) => tracing::warn!(%document, "a stored document id does not parse"),
        }
    }
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

async fn not_found(uri: axum::http::Uri) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Not found",
        &format!(
            "no route for {}; the sync endpoint is /api/v1/sync",
            uri.path()
        ),
    )
}

/// The query of a socket URL: `?token=<access token>` (browsers cannot set headers on a
/// WebSocket). Other parameters are ignored.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct SocketQuery {
    token: Option<String>,
}

/// The upgrade of a socket at `path` and the user it acts for, once the access token checks
/// out; else the problem to answer. `speaks` says what a client must speak there.
pub(crate) async fn socket_user(
    shared: &Shared,
    path: &str,
    speaks: &str,
    query: Result<Query<SocketQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<(WebSocketUpgrade, crate::auth::AuthUser), Response> {
    let upgrade = upgrade.map_err(|rejection| {
        problem(
            rejection.status(),
            "WebSocket upgrade required",
            &format!("{rejection}: connect with a WebSocket client speaking {speaks}"),
        )
    })?;
    let Ok(Query(SocketQuery { token: Some(token) })) = query else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "/problems/unauthenticated",
            "Unauthenticated",
            &format!("this socket needs an access token: connect to {path}?token=<access token>"),
        )
        .into_response());
    };
    match shared.identity.authenticate(&token).await {
        Ok(user) => Ok((upgrade, user)),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// Upgrades to the sync socket once the access token checks out; the connection then acts for
/// that user until the token expires.
async fn sync_socket(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<SocketQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let speaks = "the automerge-repo protocol";
    let (upgrade, user) = match socket_user(&shared, "/api/v1/sync", speaks, query, upgrade).await {
        Ok(found) => found,
        Err(problem) => return problem,
    };
    let tracker = shared.connections.clone();
    upgrade
        .max_message_size(shared.limits.max_frame_bytes)
        .max_frame_size(shared.limits.max_frame_bytes)
        .on_upgrade(move |socket| {
            tracker.track_future(crate::connection::serve(socket, shared, user))
        })
}

/// An `application/problem+json` response (RFC 9457).
pub fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    typed_problem(status, "about:blank", title, detail)
}

/// A problem with a stable `type` URI that clients can match on (e.g.
/// `/problems/invalid-credentials`).
pub fn typed_problem(
    status: StatusCode,
    r#type: &'static str,
    title: &str,
    detail: &str,
) -> Response {
    let body = body::Problem {
        r#type,
        title,
        status: status.as_u16(),
        detail,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        Json(body),
    )
        .into_response()
}

/// Response bodies, serialised with serde.
mod body {
    #[derive(Debug, serde::Serialize)]
    pub struct Problem<'a> {
        pub r#type: &'static str,
        pub title: &'a str,
        pub status: u16,
        pub detail: &'a str,
    }
}
