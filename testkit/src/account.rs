//! A registered user with a workspace of their own, for tests and benchmarks that need the
//! server's REST side: sign-up, boards (projects), invitations and roles, and the token the sync
//! socket wants.

use std::fmt::Display;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use taskflow_proto::DocumentId;

/// The password every test account uses.
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Account {
    /// `http://host:port`
    pub base: String,
    pub user_id: String,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
    /// The workspace made for this account at sign-up (it is its owner).
    pub workspace_id: String,
    #[serde(skip)]
    http: reqwest::Client,
}

impl Account {
    /// Registers `name` (with a unique email) on the server at `addr` and makes them a workspace.
    pub async fn register(addr: impl Display, name: &str) -> anyhow::Result<Account> {
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        // Lowercase, as the server keeps addresses.
        let email = format!(
            "{}-{}@example.test",
            name.replace(' ', "."),
            DocumentId::random()
        )
        .to_lowercase();
        let body = json!({ "email": email, "name": name, "password": PASSWORD });
        let tokens = call(
            http.post(format!("{base}/api/v1/auth/register"))
                .json(&body),
        )
        .await?;
        let mut account = Account {
            base,
            user_id: text(&tokens["user"]["id"])?,
            email,
            access_token: text(&tokens["accessToken"])?,
            refresh_token: text(&tokens["refreshToken"])?,
            workspace_id: String::new(),
            http,
        };
        let workspace = account
            .post(
                "/api/v1/workspaces",
                json!({ "name": format!("{name}'s workspace") }),
            )
            .await?;
        account.workspace_id = text(&workspace["id"])?;
        Ok(account)
    }

    /// An account signed in elsewhere (e.g. by the CLI), with its first workspace (made now
    /// if it has none).
    pub async fn from_tokens(
        addr: impl Display,
        user_id: &str,
        email: &str,
        access_token: &str,
        refresh_token: &str,
    ) -> anyhow::Result<Account> {
        let mut account = Account {
            base: format!("http://{addr}"),
            user_id: user_id.to_owned(),
            email: email.to_owned(),
            access_token: access_token.to_owned(),
            refresh_token: refresh_token.to_owned(),
            workspace_id: String::new(),
            http: reqwest::Client::new(),
        };
        let request = account.authorized(account.http.get(account.url("/api/v1/workspaces")));
        let listed = call(request).await?;
        account.workspace_id = match listed["workspaces"].as_array().and_then(|w| w.first()) {
            Some(first) => text(&first["id"])?,
            None => {
                let made = account
                    .post("/api/v1/workspaces", json!({ "name": "Shared" }))
                    .await?;
                text(&made["id"])?
            }
        };
        Ok(account)
    }

    /// The same account at a server now listening on `addr` (after a restart on the same
    /// database: tokens outlive restarts).
    pub fn at(&self, addr: impl Display) -> Account {
        Account {
            base: format!("http://{addr}"),
            ..self.clone()
        }
    }

    /// `ws://host:port/api/v1/sync?token=…`
    pub fn sync_url(&self) -> String {
        format!(
            "{}/api/v1/sync?token={}",
            self.base.replacen("http", "ws", 1),
            self.access_token
        )
    }

    /// A new project in this account's workspace; its board document id.
    pub async fn board(&self, name: &str) -> anyhow::Result<DocumentId> {
        self.board_in(&self.workspace_id, name).await
    }

    pub async fn board_in(&self, workspace: &str, name: &str) -> anyhow::Result<DocumentId> {
        let project = self
            .post(
                "/api/v1/projects",
                json!({ "workspaceId": workspace, "name": name }),
            )
            .await?;
        text(&project["documentId"])?
            .parse()
            .context("documentId of the new project")
    }

    /// A new project in this account's workspace: its id and its board document id.
    pub async fn project(&self, name: &str) -> anyhow::Result<(String, DocumentId)> {
        let project = self
            .post(
                "/api/v1/projects",
                json!({ "workspaceId": self.workspace_id, "name": name }),
            )
            .await?;
        let document = text(&project["documentId"])?
            .parse()
            .context("documentId of the new project")?;
        Ok((text(&project["id"])?, document))
    }

    /// A request to `path` with this account's token, to finish and send (for tests that look
    /// at statuses and headers).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.request(method, self.url(path)))
    }

    /// A GET with this account's token; the JSON answer.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        call(self.authorized(self.http.get(self.url(path)))).await
    }

    /// Registers a document made on the client as a project's board (uploaded over sync).
    pub async fn register_document(&self, id: DocumentId, name: &str) -> anyhow::Result<()> {
        let body =
            json!({ "workspaceId": self.workspace_id, "name": name, "documentId": id.to_string() });
        self.post("/api/v1/projects", body).await.map(drop)
    }

    /// Invites `other` into this account's workspace with `role` and has them accept.
    pub async fn add_member(&self, other: &Account, role: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/workspaces/{}/invitations", self.workspace_id);
        let invitation = self
            .post(&path, json!({ "email": other.email, "role": role }))
            .await?;
        let token = text(&invitation["token"])?;
        other
            .post("/api/v1/invitations/accept", json!({ "token": token }))
            .await
            .map(drop)
    }

    /// Changes a member's role in this account's workspace.
    pub async fn set_role(&self, member: &Account, role: &str) -> anyhow::Result<()> {
        let path = format!(
            "/api/v1/workspaces/{}/members/{}",
            self.workspace_id, member.user_id
        );
        let request = self
            .authorized(self.http.patch(self.url(&path)))
            .json(&json!({ "role": role }));
        call(request).await.map(drop)
    }

    /// Removes a member from this account's workspace.
    pub async fn remove_member(&self, member: &Account) -> anyhow::Result<()> {
        let path = format!(
            "/api/v1/workspaces/{}/members/{}",
            self.workspace_id, member.user_id
        );
        let request = self.authorized(self.http.delete(self.url(&path)));
        call(request).await.map(drop)
    }

    /// Signs this session out (its access token stops working at once).
    pub async fn logout(&self) -> anyhow::Result<()> {
        self.post("/api/v1/auth/logout", json!({})).await.map(drop)
    }

    /// A POST with this account's token; the JSON answer (`null` for 204).
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let request = self.authorized(self.http.post(self.url(path))).json(&body);
        call(request).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.bearer_auth(&self.access_token)
    }
}

async fn call(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    if body.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_str(&body)?)
}

fn text(value: &Value) -> anyhow::Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("expected a string, got {value}"))
}
