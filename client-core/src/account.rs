//! Accounts on a Taskflow server, over its REST API: register, sign in, refresh, sign out,
//! who am I, and the workspaces and boards (projects) a user has. The server is named by its
//! sync URL (`ws://host:port/api/v1/sync`); the REST base is the same host over `http`/`https`.
//!
//! The sync socket asks for an access token on every connection: a [`TokenSource`] gives the
//! engine one. [`Session`] is the usual source: signed-in credentials, refreshed when the token
//! is about to expire, with a hook to keep the new ones.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long a REST call may take to connect, and in all.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Refresh an access token this long before it expires.
pub const REFRESH_MARGIN_SECS: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUser {
    pub id: String,
    pub email: String,
    pub name: String,
}

/// What signing in gives: keep it private (the CLI writes it with 0600 permissions).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub access_token: String,
    pub refresh_token: String,
    pub user: AccountUser,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Whether the access token expires within [`REFRESH_MARGIN_SECS`] of `now` (seconds since
    /// the epoch), or cannot be read.
    pub fn needs_refresh(&self, now: i64) -> bool {
        access_token_expiry(&self.access_token).is_none_or(|exp| exp - REFRESH_MARGIN_SECS <= now)
    }
}

/// The `exp` claim of a JWT, read without checking the signature (the server checks it; the
/// client only wants to know when to refresh).
pub fn access_token_expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?["exp"].as_i64()
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid server URL `{0}`")]
    BadUrl(String),
    #[error("not signed in")]
    SignedOut,
    #[error("cannot reach the server: {0}")]
    Network(String),
    /// The server said no; `kind` is its problem `type` (e.g. `/problems/invalid-credentials`).
    #[error("{detail}")]
    Rejected {
        status: u16,
        kind: String,
        detail: String,
    },
}

#[derive(Debug, Clone)]
pub struct AccountClient {
    base: String,
    http: reqwest::Client,
}

impl AccountClient {
    /// The account API of the server whose sync endpoint is `sync_url`.
    pub fn for_sync_url(sync_url: &str) -> Result<AccountClient, AccountError> {
        let bad = || AccountError::BadUrl(sync_url.to_owned());
        let (scheme, rest) = if let Some(rest) = sync_url.strip_prefix("wss://") {
            ("https", rest)
        } else if let Some(rest) = sync_url.strip_prefix("ws://") {
            ("http", rest)
        } else {
            return Err(bad());
        };
        let host = rest
            .split(['/', '?'])
            .next()
            .filter(|h| !h.is_empty())
            .ok_or_else(bad)?;
        Ok(AccountClient {
            base: format!("{scheme}://{host}/api/v1"),
            // Bounded, so that a server that is unreachable (not just refusing) cannot hold a
            // command or a reconnect for ever.
            http: reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .build()
                .map_err(|e| AccountError::Network(e.to_string()))?,
        })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value, AccountError> {
        let mut request = self.http.request(method, format!("{}/{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| AccountError::Network(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| AccountError::Network(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(AccountError::Rejected {
            status: status.as_u16(),
            kind: value["type"].as_str().unwrap_or("about:blank").to_owned(),
            detail: value["detail"]
                .as_str()
                .map_or_else(|| format!("the server answered {status}"), str::to_owned),
        })
    }

    fn credentials(value: Value) -> Result<Credentials, AccountError> {
        serde_json::from_value(value)
            .map_err(|e| AccountError::Network(format!("unexpected answer: {e}")))
    }

    pub async fn register(
        &self,
        email: &str,
        name: &str,
        password: &str,
    ) -> Result<Credentials, AccountError> {
        let body = json!({ "email": email, "name": name, "password": password });
        Self::credentials(
            self.call(reqwest::Method::POST, "auth/register", None, Some(body))
                .await?,
        )
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<Credentials, AccountError> {
        let body = json!({ "email": email, "password": password });
        Self::credentials(
            self.call(reqwest::Method::POST, "auth/login", None, Some(body))
                .await?,
        )
    }

    /// A new pair for a refresh token (each refresh token works once).
    pub async fn refresh(&self, credentials: &Credentials) -> Result<Credentials, AccountError> {
        let body = json!({ "refreshToken": credentials.refresh_token });
        Self::credentials(
            self.call(reqwest::Method::POST, "auth/refresh", None, Some(body))
                .await?,
        )
    }

    /// Refreshes when the access token is about to expire; returns what to use (and keep).
    pub async fn fresh(&self, credentials: Credentials) -> Result<Credentials, AccountError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if credentials.needs_refresh(now) {
            self.refresh(&credentials).await
        } else {
            Ok(credentials)
        }
    }

    pub async fn me(&self, credentials: &Credentials) -> Result<AccountUser, AccountError> {
        let value = self
            .call(
                reqwest::Method::GET,
                "auth/me",
                Some(&credentials.access_token),
                None,
            )
            .await?;
        serde_json::from_value(value)
            .map_err(|e| AccountError::Network(format!("unexpected answer: {e}")))
    }

    pub async fn logout(&self, credentials: &Credentials) -> Result<(), AccountError> {
        self.call(
            reqwest::Method::POST,
            "auth/logout",
            Some(&credentials.access_token),
            None,
        )
        .await
        .map(|_| ())
    }

    /// The workspaces the user belongs to.
    pub async fn workspaces(
        &self,
        credentials: &Credentials,
    ) -> Result<Vec<Workspace>, AccountError> {
        let value = self
            .call(
                reqwest::Method::GET,
                "workspaces",
                Some(&credentials.access_token),
                None,
            )
            .await?;
        unexpected(serde_json::from_value::<Workspaces>(value)).map(|w| w.workspaces)
    }

    pub async fn create_workspace(
        &self,
        credentials: &Credentials,
        name: &str,
    ) -> Result<Workspace, AccountError> {
        let value = self
            .call(
                reqwest::Method::POST,
                "workspaces",
                Some(&credentials.access_token),
                Some(json!({ "name": name })),
            )
            .await?;
        unexpected(serde_json::from_value(value))
    }

    /// The boards (projects, not archived) of a workspace the user belongs to.
    pub async fn projects(
        &self,
        credentials: &Credentials,
        workspace: &str,
    ) -> Result<Vec<Project>, AccountError> {
        let value = self
            .call(
                reqwest::Method::GET,
                &format!("workspaces/{workspace}/projects"),
                Some(&credentials.access_token),
                None,
            )
            .await?;
        unexpected(serde_json::from_value::<Projects>(value)).map(|p| p.projects)
    }

    /// The members of a workspace the user belongs to.
    pub async fn members(
        &self,
        credentials: &Credentials,
        workspace: &str,
    ) -> Result<Vec<Member>, AccountError> {
        let value = self
            .call(
                reqwest::Method::GET,
                &format!("workspaces/{workspace}/members"),
                Some(&credentials.access_token),
                None,
            )
            .await?;
        unexpected(serde_json::from_value::<Members>(value)).map(|m| m.members)
    }

    /// Registers a board made on this device (document `document_id`) as a project in
    /// `workspace`, so that the server accepts it and members can open it.
    pub async fn register_board(
        &self,
        credentials: &Credentials,
        workspace: &str,
        name: &str,
        document_id: &str,
    ) -> Result<Project, AccountError> {
        let body = json!({ "workspaceId": workspace, "name": name, "documentId": document_id });
        let value = self
            .call(
                reqwest::Method::POST,
                "projects",
                Some(&credentials.access_token),
                Some(body),
            )
            .await?;
        unexpected(serde_json::from_value(value))
    }
}

fn unexpected<T>(parsed: Result<T, serde_json::Error>) -> Result<T, AccountError> {
    parsed.map_err(|e| AccountError::Network(format!("unexpected answer: {e}")))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub role: String,
}

#[derive(Debug, Deserialize)]
struct Workspaces {
    workspaces: Vec<Workspace>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
}

#[derive(Debug, Deserialize)]
struct Members {
    members: Vec<Member>,
}

#[derive(Debug, Deserialize)]
struct Projects {
    projects: Vec<Project>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub document_id: String,
}

/// Gives the engine an access token for each connection attempt.
pub trait TokenSource: Send + Sync {
    /// A token good for a while yet; an error says why there is none (the engine retries later).
    fn access_token(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// A fixed token (it stops working when it expires).
#[derive(Clone)]
pub struct StaticToken(pub String);

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(…)")
    }
}

impl TokenSource for StaticToken {
    fn access_token(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// Where signed-in credentials are kept between uses. Each refresh token works once, so
/// whoever refreshes must save the new pair, and whoever refreshes next must start from it.
pub trait CredentialStore: Send + Sync {
    /// The credentials as last saved (by this process or another); `None` when signed out.
    fn load(&self) -> Option<Credentials>;
    fn save(&self, credentials: &Credentials);
}

/// Credentials kept in memory only.
#[derive(Debug, Default)]
pub struct InMemory(std::sync::Mutex<Option<Credentials>>);

impl InMemory {
    pub fn new(credentials: Credentials) -> Self {
        Self(std::sync::Mutex::new(Some(credentials)))
    }
}

impl CredentialStore for InMemory {
    fn load(&self) -> Option<Credentials> {
        self.0.lock().expect("credentials lock").clone()
    }

    fn save(&self, credentials: &Credentials) {
        *self.0.lock().expect("credentials lock") = Some(credentials.clone());
    }
}

/// Credentials kept in one file, readable by the user only (0600, in a 0700 directory), written
/// with temp file + rename. As a [`CredentialStore`] it is re-read before each refresh, so that
/// another process's refresh (the CLI next to the desktop app) is not undone.
#[derive(Debug, Clone)]
pub struct CredentialsFile {
    path: std::path::PathBuf,
}

impl CredentialsFile {
    pub fn new(path: impl Into<std::path::PathBuf>) -> CredentialsFile {
        CredentialsFile { path: path.into() }
    }

    /// The saved credentials; `None` when signed out.
    pub fn read(&self) -> std::io::Result<Option<Credentials>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write(&self, credentials: &Credentials) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

        let dir = self
            .path
            .parent()
            .ok_or_else(|| std::io::Error::other("the credentials file has no directory"))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let text = serde_json::to_string(credentials).map_err(std::io::Error::other)?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Signs out on this device: the file goes.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl CredentialStore for CredentialsFile {
    fn load(&self) -> Option<Credentials> {
        self.read().ok().flatten()
    }

    fn save(&self, credentials: &Credentials) {
        if let Err(e) = self.write(credentials) {
            tracing::warn!(path = %self.path.display(), error = %e, "saving credentials failed");
        }
    }
}

/// Signed-in credentials that refresh themselves when the access token is about to expire.
pub struct Session {
    account: AccountClient,
    kept: Box<dyn CredentialStore>,
    /// One refresh at a time within this process.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    pub fn new(account: AccountClient, kept: impl CredentialStore + 'static) -> Arc<Self> {
        Arc::new(Session {
            account,
            kept: Box::new(kept),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn account(&self) -> &AccountClient {
        &self.account
    }

    /// The credentials, refreshed (and saved) first when their access token is about to expire.
    pub async fn credentials(&self) -> Result<Credentials, AccountError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let held = self.kept.load().ok_or(AccountError::SignedOut)?;
        let fresh = self.account.fresh(held.clone()).await?;
        if fresh != held {
            self.kept.save(&fresh);
        }
        Ok(fresh)
    }
}

impl TokenSource for Session {
    fn access_token(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            self.credentials()
                .await
                .map(|c| c.access_token)
                .map_err(|e| format!("no access token: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt_with_exp(exp: i64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let body = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"u","exp":{exp}}}"#));
        format!("{header}.{body}.signature")
    }

    #[test]
    fn refresh_is_due_shortly_before_expiry() {
        let credentials = |token: String| Credentials {
            access_token: token,
            refresh_token: "r".into(),
            user: AccountUser {
                id: "u".into(),
                email: "ann@example.com".into(),
                name: "Ann".into(),
            },
        };
        let now = 1_800_000_000;
        assert!(!credentials(jwt_with_exp(now + 600)).needs_refresh(now));
        assert!(credentials(jwt_with_exp(now + 30)).needs_refresh(now));
        assert!(credentials("not a jwt".into()).needs_refresh(now));
        assert!(!format!("{:?}", credentials(jwt_with_exp(now))).contains("signature"));
    }

    #[test]
    fn the_rest_base_follows_the_sync_url() {
        let base = |url: &str| AccountClient::for_sync_url(url).map(|c| c.base);
        assert_eq!(
            base("ws://127.0.0.1:8080/api/v1/sync").expect("ws"),
            "http://127.0.0.1:8080/api/v1"
        );
        assert_eq!(
            base("wss://boards.example.com/api/v1/sync?x=1").expect("wss"),
            "https://boards.example.com/api/v1"
        );
        assert!(base("http://example.com").is_err());
        assert!(base("ws:///api").is_err());
    }
}
