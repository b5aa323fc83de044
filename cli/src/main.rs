//! `taskflow`: the command-line client. Every edit is saved to the profile's local store first
//! and then offered to the server, so everything works offline and syncs when it can.

mod credentials;
mod error;
mod profile;
mod render;
mod resolve;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::tz::TimeZone;
use serde_json::json;
use taskflow_client_core::account::{
    AccountClient, AccountError, Credentials, Session as SignedIn,
};
use taskflow_client_core::board::ops::{NewTask, Position, TaskEdit};
use taskflow_client_core::board::{Priority, TaskId};
use taskflow_client_core::{
    BoardSummary, Client, ClientConfig, ClientEvent, ConnectionState, DocumentId, Edit, Edited,
    Origin, ServerConfig, SyncStatus,
};
use tokio::sync::broadcast;

use crate::credentials::ProfileCredentials;
use crate::error::{CliError, Kind};
use crate::profile::{DEFAULT_PROFILE, Profile, Profiles};

/// How long an edit or a read waits for the server before settling for the local copy.
const QUICK_SYNC: Duration = Duration::from_secs(5);

const AFTER_HELP: &str = "\
Exit codes: 0 success · 1 failure (local store, damaged board) · 2 bad input ·
3 unknown board, task, column or profile · 4 server unreachable or sync not finished in time ·
5 sign-in failed or the session ended.

Edits are saved locally first; with a server configured they are then sent (waiting at most a
few seconds). `--offline` never touches the network.";

#[derive(Debug, Parser)]
#[command(name = "taskflow", version, about = "Offline-first Taskflow boards from the command line", after_help = AFTER_HELP)]
struct Cli {
    /// The profile to use (see `taskflow profile`).
    #[arg(long, global = true, env = "TASKFLOW_PROFILE", default_value = DEFAULT_PROFILE)]
    profile: String,
    /// Work on the local store only; never connect.
    #[arg(long, global = true)]
    offline: bool,
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage profiles (server, user, token, data directory).
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Create, list, show and fetch boards.
    #[command(subcommand)]
    Board(BoardCommand),
    /// Add and change tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Sync every board with the server once, then exit.
    Sync {
        /// Give up (exit 4) if not everything is in sync by then.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Stay connected and print changes as they arrive (Ctrl-C to stop).
    Watch {
        /// Only this board (default: every board in the store).
        board: Option<String>,
    },
    /// Create an account on the profile's server and sign in.
    Register {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
    },
    /// Sign in to the profile's server (password from TASKFLOW_PASSWORD, a prompt, or stdin).
    Login {
        #[arg(long)]
        email: String,
    },
    /// Sign out: end the session on the server and forget it here.
    Logout,
    /// Who this profile is signed in as.
    Whoami,
    /// Your notifications, newest first; or mark them read.
    Notifications {
        /// Only unread ones.
        #[arg(long)]
        unread: bool,
        /// Mark this notification read (its id, as listed).
        #[arg(long, value_name = "ID", conflicts_with_all = ["read_all", "unread"])]
        read: Option<String>,
        /// Mark every notification read.
        #[arg(long, conflicts_with = "unread")]
        read_all: bool,
        /// How many to list (1 to 200).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum ProfileCommand {
    /// Create or update a profile.
    Set {
        name: String,
        /// Sync server URL, e.g. ws://127.0.0.1:3030/api/v1/sync (`none` to remove).
        #[arg(long)]
        server: Option<String>,
        /// The user recorded as author of your tasks and comments.
        #[arg(long)]
        user: Option<String>,
        /// Access token sent to the server.
        #[arg(long)]
        token: Option<String>,
        /// Where this profile's boards are stored.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// List profiles.
    List,
}

#[derive(Debug, Subcommand)]
enum BoardCommand {
    /// Create a board (signed in: in a workspace on the server, which needs the network).
    Create {
        /// The board's name.
        name: String,
        /// The workspace (id or name) to create it in; defaults to your only workspace, or a new
        /// personal one when you have none.
        #[arg(long)]
        workspace: Option<String>,
    },
    /// List the boards in the local store.
    List,
    /// Show a board as columns of cards (or one task in detail).
    Show {
        /// Board id, automerge: URL or name.
        board: String,
        /// Show this task's details and comments instead.
        #[arg(long)]
        task: Option<String>,
    },
    /// Add a board someone shared (by id or automerge: URL) and fetch it from the server.
    Fetch {
        /// Board id or automerge: URL.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// Add a task (at the bottom of its column).
    Add {
        /// Board id, automerge: URL or name.
        board: String,
        /// The task's title.
        title: String,
        #[command(flatten)]
        fields: TaskFields,
        /// Column id or name (default: the first column).
        #[arg(long)]
        column: Option<String>,
    },
    /// Change a task's fields.
    Edit {
        /// Board id, automerge: URL or name.
        board: String,
        /// Task id, id prefix (4+ characters) or exact title.
        task: String,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        #[command(flatten)]
        fields: TaskFields,
        /// Remove the due date.
        #[arg(long, conflicts_with = "due")]
        no_due: bool,
    },
    /// Move a task to a column (at the bottom unless told otherwise).
    Move {
        /// Board id, automerge: URL or name.
        board: String,
        /// Task id, id prefix (4+ characters) or exact title.
        task: String,
        /// Column id or name.
        column: String,
        /// Put it first in the column.
        #[arg(long, conflicts_with_all = ["before", "after"])]
        top: bool,
        /// Put it just before this task.
        #[arg(long, conflicts_with = "after")]
        before: Option<String>,
        /// Put it just after this task.
        #[arg(long)]
        after: Option<String>,
    },
    /// Move a task to the done column.
    Done {
        /// Board id, automerge: URL or name.
        board: String,
        /// Task id, id prefix (4+ characters) or exact title.
        task: String,
    },
    /// Archive a task (or bring it back with --restore).
    Archive {
        /// Board id, automerge: URL or name.
        board: String,
        /// Task id, id prefix (4+ characters) or exact title.
        task: String,
        #[arg(long)]
        restore: bool,
    },
    /// Comment on a task.
    Comment {
        /// Board id, automerge: URL or name.
        board: String,
        /// Task id, id prefix (4+ characters) or exact title.
        task: String,
        /// The comment's text.
        body: String,
    },
    /// Add one task per line read from stdin; each is reported as it is saved.
    Import {
        /// Board id, automerge: URL or name.
        board: String,
        #[arg(long)]
        column: Option<String>,
    },
}

#[derive(Debug, Args)]
struct TaskFields {
    /// Longer text for the task.
    #[arg(long)]
    description: Option<String>,
    /// Assign a user (repeatable). On `edit` this replaces the assignees.
    #[arg(long = "assignee")]
    assignees: Vec<String>,
    /// Add a label (repeatable). On `edit` this replaces the labels.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// none, low, medium, high or urgent.
    #[arg(long, value_parser = parse_priority)]
    priority: Option<Priority>,
    /// YYYY-MM-DD (end of that day), YYYY-MM-DDTHH:MM (local time) or RFC 3339.
    #[arg(long)]
    due: Option<String>,
}

fn parse_priority(text: &str) -> Result<Priority, String> {
    Priority::parse(text).ok_or_else(|| "expected none, low, medium, high or urgent".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("taskflow: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                let error = json!({ "error": { "kind": e.kind.name(), "message": e.message } });
                eprintln!("{error}");
            } else {
                eprintln!("taskflow: {}", e.message);
            }
            e.kind.exit_code()
        }
    }
}

/// Everything a command needs: the open client and how to print.
struct Session {
    client: Client,
    /// The signed-in account, when the profile has one.
    account: Option<Arc<SignedIn>>,
    /// Recorded as the creator of tasks (the engine records comment authors itself).
    user: String,
    json: bool,
    online: bool,
    tz: TimeZone,
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let home = profile::home()?;
    if let Command::Profile(command) = cli.command {
        return profile_command(command, &home, cli.json);
    }
    let profiles = Profiles::load(&home)?;
    let profile = profiles.get(&cli.profile)?;
    if matches!(
        cli.command,
        Command::Register { .. }
            | Command::Login { .. }
            | Command::Logout
            | Command::Whoami
            | Command::Notifications { .. }
    ) {
        return account_command(cli.command, &home, &cli.profile, &profile, cli.json).await;
    }
    let mut account = None;
    let server = match (&profile.server, cli.offline) {
        (Some(url), false) => {
            let server = ServerConfig::new(url)?;
            account = signed_in(&home, &cli.profile, url).await;
            Some(match (&account, &profile.token) {
                (Some(account), _) => server.with_tokens(account.clone()),
                (None, Some(token)) => server.with_token(token.clone()),
                (None, None) => server,
            })
        }
        _ => None,
    };
    if matches!(cli.command, Command::Sync { .. } | Command::Watch { .. }) && server.is_none() {
        return Err(CliError::bad_input(if cli.offline {
            "`sync` and `watch` need the network; drop --offline".to_owned()
        } else {
            format!(
                "profile `{}` has no server; set one with `taskflow profile set {} --server URL`",
                cli.profile, cli.profile
            )
        }));
    }
    let online = server.is_some();
    let user = profile.user();
    let client = Client::open(ClientConfig {
        data_dir: profile.data_dir(&home, &cli.profile),
        user: user.clone(),
        server,
    })
    .await?;
    let session = Session {
        client,
        account,
        user,
        json: cli.json,
        online,
        tz: TimeZone::system(),
    };
    let result = match cli.command {
        Command::Profile(_) => unreachable!("handled above"),
        Command::Board(command) => board_command(&session, command).await,
        Command::Task(command) => task_command(&session, command).await,
        Command::Sync { timeout } => sync(&session, timeout).await,
        Command::Watch { board } => watch(&session, board).await,
        Command::Register { .. }
        | Command::Login { .. }
        | Command::Logout
        | Command::Whoami
        | Command::Notifications { .. } => unreachable!("handled above"),
    };
    session.client.shutdown().await;
    result
}

// ---------------------------------------------------------------- accounts

/// The profile's signed-in session (its tokens refreshed when about to expire and saved back).
/// A session that has ended is reported once and forgotten; the command goes on without it.
async fn signed_in(home: &std::path::Path, profile: &str, url: &str) -> Option<Arc<SignedIn>> {
    credentials::load(home, profile).ok()??;
    let accounts = AccountClient::for_sync_url(url).ok()?;
    let session = SignedIn::new(accounts, ProfileCredentials::new(home, profile));
    match session.credentials().await {
        Err(AccountError::Rejected { .. }) => {
            eprintln!("taskflow: the session has ended; sign in again with `taskflow login`");
            let _ = credentials::forget(home, profile);
            None
        }
        // Offline too: the engine asks again when it connects.
        _ => Some(session),
    }
}

fn read_password() -> Result<String, CliError> {
    if let Ok(password) = std::env::var("TASKFLOW_PASSWORD") {
        return Ok(password);
    }
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ")
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    }
    .map_err(|e| CliError::new(Kind::Failure, format!("reading the password: {e}")))?;
    Ok(password.trim_end_matches(['\r', '\n']).to_owned())
}

async fn account_command(
    command: Command,
    home: &std::path::Path,
    profile_name: &str,
    profile: &Profile,
    json: bool,
) -> Result<(), CliError> {
    let url = profile.server.as_deref().ok_or_else(|| {
        CliError::bad_input(format!(
            "profile `{profile_name}` has no server; set one with `taskflow profile set {profile_name} --server URL`"
        ))
    })?;
    let accounts = AccountClient::for_sync_url(url)?;
    let signed_in = |credentials: &Credentials| {
        if json {
            println!("{}", json!({ "user": credentials.user }));
        } else {
            println!(
                "Signed in as {} <{}>",
                credentials.user.name, credentials.user.email
            );
        }
    };
    match command {
        Command::Register { email, name } => {
            let credentials = accounts.register(&email, &name, &read_password()?).await?;
            credentials::save(home, profile_name, &credentials)?;
            signed_in(&credentials);
        }
        Command::Login { email } => {
            let credentials = accounts.login(&email, &read_password()?).await?;
            credentials::save(home, profile_name, &credentials)?;
            signed_in(&credentials);
        }
        Command::Logout => {
            if let Some(credentials) = credentials::load(home, profile_name)? {
                // Forget locally whatever the server says: signing out must always work here.
                if let Ok(fresh) = accounts.fresh(credentials).await {
                    let _ = accounts.logout(&fresh).await;
                }
                credentials::forget(home, profile_name)?;
            }
            if !json {
                println!("Signed out.");
            }
        }
        Command::Whoami => {
            let fresh = fresh_credentials(&accounts, home, profile_name).await?;
            let user = accounts.me(&fresh).await?;
            if json {
                println!("{}", json!({ "user": user }));
            } else {
                println!("{} <{}> on {url}", user.name, user.email);
            }
        }
        Command::Notifications {
            unread,
            read,
            read_all,
            limit,
        } => {
            let fresh = fresh_credentials(&accounts, home, profile_name).await?;
            if let Some(id) = read {
                let notification = accounts.mark_read(&fresh, &id).await?;
                if json {
                    println!("{}", json!({ "notification": notification }));
                } else {
                    println!("Read: {}", notification.title);
                }
            } else if read_all {
                let marked = accounts.mark_all_read(&fresh).await?;
                if json {
                    println!("{}", json!({ "marked": marked }));
                } else {
                    println!("Marked {marked} read.");
                }
            } else {
                let page = accounts.notifications(&fresh, unread, None, limit).await?;
                if json {
                    let body = json!({
                        "notifications": page.notifications,
                        "unreadCount": page.unread_count,
                    });
                    println!("{body}");
                } else {
                    print!(
                        "{}",
                        render::notification_list(
                            &page.notifications,
                            page.unread_count,
                            &TimeZone::system()
                        )
                    );
                }
            }
        }
        _ => unreachable!("only account commands come here"),
    }
    Ok(())
}

/// The profile's signed-in credentials, refreshed (and saved) when about to expire.
async fn fresh_credentials(
    accounts: &AccountClient,
    home: &std::path::Path,
    profile_name: &str,
) -> Result<Credentials, CliError> {
    let stored = credentials::load(home, profile_name)?.ok_or_else(|| {
        CliError::new(Kind::Auth, "not signed in; run `taskflow login --email …`")
    })?;
    let fresh = accounts.fresh(stored.clone()).await?;
    if fresh != stored {
        credentials::save(home, profile_name, &fresh)?;
    }
    Ok(fresh)
}

fn profile_command(
    command: ProfileCommand,
    home: &std::path::Path,
    json: bool,
) -> Result<(), CliError> {
    let mut profiles = Profiles::load(home)?;
    match command {
        ProfileCommand::Set {
            name,
            server,
            user,
            token,
            data_dir,
        } => {
            let mut profile = profiles.profiles.get(&name).cloned().unwrap_or_default();
            if let Some(server) = server {
                if server == "none" {
                    profile.server = None;
                } else {
                    ServerConfig::new(&server)?;
                    profile.server = Some(server);
                }
            }
            profile.user = user.or(profile.user);
            profile.token = token.or(profile.token);
            profile.data_dir = data_dir.or(profile.data_dir);
            profiles.profiles.insert(name.clone(), profile.clone());
            profiles.save(home)?;
            print_profile(&name, &profile, home, json);
        }
        ProfileCommand::List => {
            if profiles.profiles.is_empty() && !json {
                println!(
                    "No profiles yet; the `default` profile works offline in {}.",
                    Profile::default().data_dir(home, DEFAULT_PROFILE).display()
                );
            }
            for (name, profile) in &profiles.profiles {
                print_profile(name, profile, home, json);
            }
        }
    }
    Ok(())
}

fn print_profile(name: &str, profile: &Profile, home: &std::path::Path, json: bool) {
    let data_dir = profile.data_dir(home, name);
    if json {
        println!(
            "{}",
            json!({
                "name": name,
                "server": profile.server,
                "user": profile.user(),
                "dataDir": data_dir,
                "token": profile.token.is_some(),
            })
        );
    } else {
        println!(
            "{name}: {} as {} · boards in {}",
            profile.server.as_deref().unwrap_or("offline only"),
            profile.user(),
            data_dir.display()
        );
    }
}

// ---------------------------------------------------------------- boards

/// Registers a new board with the server as a project of `workspace` (id or name; by default
/// the user's only workspace, or a new personal one); the id to create it under.
async fn register_board(
    account: &SignedIn,
    workspace: Option<&str>,
    name: &str,
) -> Result<DocumentId, CliError> {
    let credentials = account.credentials().await?;
    let accounts = account.account();
    let workspaces = accounts.workspaces(&credentials).await?;
    let workspace = match workspace {
        Some(wanted) => workspaces
            .into_iter()
            .find(|w| w.id == wanted || w.name == wanted)
            .ok_or_else(|| CliError::not_found(format!("you have no workspace `{wanted}`")))?,
        None => match <[_; 1]>::try_from(workspaces) {
            Ok([only]) => only,
            Err(none) if none.is_empty() => {
                let personal = format!("{}'s workspace", credentials.user.name);
                accounts.create_workspace(&credentials, &personal).await?
            }
            Err(several) => {
                let names: Vec<&str> = several.iter().map(|w| w.name.as_str()).collect();
                return Err(CliError::bad_input(format!(
                    "you are in several workspaces ({}); pick one with --workspace",
                    names.join(", ")
                )));
            }
        },
    };
    let id = DocumentId::random();
    accounts
        .register_board(&credentials, &workspace.id, name, &id.to_string())
        .await?;
    Ok(id)
}

async fn board_command(session: &Session, command: BoardCommand) -> Result<(), CliError> {
    let client = &session.client;
    match command {
        BoardCommand::Create { name, workspace } => {
            if name.trim().is_empty() {
                return Err(CliError::bad_input("a board needs a name"));
            }
            let id = match &session.account {
                Some(account) => {
                    let id = register_board(account, workspace.as_deref(), &name).await?;
                    client.create_board_as(id, &name).await?
                }
                None if workspace.is_some() => {
                    return Err(CliError::new(
                        Kind::Auth,
                        "--workspace needs a signed-in profile; run `taskflow login --email …`",
                    ));
                }
                None => client.create_board(&name).await?,
            };
            let status = push(session, id).await;
            if session.json {
                println!(
                    "{}",
                    json!({ "id": id.to_string(), "url": id.url().to_string(), "name": name, "status": render::status_json(status) })
                );
            } else {
                println!(
                    "Created board \"{name}\" ({}) — {}",
                    id,
                    render::status_text(status)
                );
            }
        }
        BoardCommand::List => {
            let boards = client.boards().await?;
            let ids: Vec<DocumentId> = boards.iter().map(|b| b.id).collect();
            let boards = if session.online {
                quick_sync(session, &ids).await;
                client.boards().await?
            } else {
                boards
            };
            if session.json {
                for board in &boards {
                    println!("{}", render::summary_json(board));
                }
            } else {
                println!("{}", render::board_list(&boards));
            }
        }
        BoardCommand::Show { board, task } => {
            let id = find_board(session, &board).await?;
            quick_sync(session, &[id]).await;
            let read = client.board(id).await?;
            let status = client.status(id).await?;
            match task {
                Some(task) => {
                    let task = &read.tasks[&resolve::task(&task, &read)?];
                    if session.json {
                        println!("{}", render::task_json(task));
                    } else {
                        println!("{}", render::task_detail(task, &session.tz));
                    }
                }
                None if session.json => println!("{}", render::board_json(id, &read, status)),
                None => {
                    let viewers = client.viewers(id).await?;
                    println!(
                        "{}",
                        render::board_table(&read, status, &viewers, &session.tz)
                    );
                }
            }
        }
        BoardCommand::Fetch { id } => {
            let id = resolve::document_id(&id)?;
            if !session.online {
                return Err(CliError::bad_input(
                    "fetching a board needs a server (and no --offline)",
                ));
            }
            client.fetch(id).await?;
            let status = wait_with_progress(session, &[id], Duration::from_secs(60)).await?[0];
            match status {
                SyncStatus::InSync => {}
                SyncStatus::Unavailable => {
                    // Nothing of it arrived, so nothing is lost by not keeping an empty entry.
                    client.forget(id).await?;
                    return Err(CliError::not_found(format!("the server has no board {id}")));
                }
                _ => {
                    return Err(CliError::new(
                        Kind::Network,
                        format!("board {id} did not arrive; it will on the next `taskflow sync`"),
                    ));
                }
            }
            let read = client.board(id).await?;
            if session.json {
                println!("{}", render::board_json(id, &read, status));
            } else {
                println!(
                    "Fetched board \"{}\" ({} tasks)",
                    read.name,
                    read.tasks.len()
                );
            }
        }
    }
    Ok(())
}

async fn find_board(session: &Session, reference: &str) -> Result<DocumentId, CliError> {
    // An id names one board: no need to open every board in the store to find it.
    if let Ok(id) = resolve::document_id(reference) {
        return match session.client.status(id).await {
            Ok(_) => Ok(id),
            Err(taskflow_client_core::ClientError::UnknownBoard(_)) => {
                Err(resolve::not_in_store(id))
            }
            Err(e) => Err(e.into()),
        };
    }
    let boards: Vec<BoardSummary> = session.client.boards().await?;
    resolve::board(reference, &boards)
}

// ---------------------------------------------------------------- tasks

async fn task_command(session: &Session, command: TaskCommand) -> Result<(), CliError> {
    let client = &session.client;
    let board_ref = match &command {
        TaskCommand::Add { board, .. }
        | TaskCommand::Edit { board, .. }
        | TaskCommand::Move { board, .. }
        | TaskCommand::Done { board, .. }
        | TaskCommand::Archive { board, .. }
        | TaskCommand::Comment { board, .. }
        | TaskCommand::Import { board, .. } => board.clone(),
    };
    let id = find_board(session, &board_ref).await?;
    let board = client.board(id).await?;
    let (task, edit) = match command {
        TaskCommand::Add {
            title,
            fields,
            column,
            ..
        } => {
            let mut task = NewTask::titled(check_title(&title)?, session.user.clone());
            task.column = column.map(|c| resolve::column(&c, &board)).transpose()?;
            task.description = fields.description.unwrap_or_default();
            task.assignees = fields.assignees.into_iter().collect();
            task.labels = fields.labels.into_iter().collect();
            task.priority = fields.priority.unwrap_or_default();
            task.due = fields
                .due
                .map(|d| resolve::due(&d, &session.tz))
                .transpose()?;
            (None, Edit::AddTask(task))
        }
        TaskCommand::Edit {
            task,
            title,
            fields,
            no_due,
            ..
        } => {
            let task = resolve::task(&task, &board)?;
            let edit = TaskEdit {
                title: title
                    .map(|t| check_title(&t).map(str::to_owned))
                    .transpose()?,
                description: fields.description,
                assignees: (!fields.assignees.is_empty())
                    .then(|| fields.assignees.into_iter().collect::<BTreeSet<_>>()),
                labels: (!fields.labels.is_empty())
                    .then(|| fields.labels.into_iter().collect::<BTreeSet<_>>()),
                priority: fields.priority,
                due: match (fields.due, no_due) {
                    (Some(due), _) => Some(Some(resolve::due(&due, &session.tz)?)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
            };
            if edit == TaskEdit::default() {
                return Err(CliError::bad_input(
                    "nothing to change: give at least one field",
                ));
            }
            (Some(task.clone()), Edit::EditTask { task, edit })
        }
        TaskCommand::Move {
            task,
            column,
            top,
            before,
            after,
            ..
        } => {
            let task = resolve::task(&task, &board)?;
            let column = resolve::column(&column, &board)?;
            let position = match (top, before, after) {
                (true, _, _) => Position::Top,
                (_, Some(other), _) => Position::Before(resolve::task(&other, &board)?),
                (_, _, Some(other)) => Position::After(resolve::task(&other, &board)?),
                _ => Position::Bottom,
            };
            (
                Some(task.clone()),
                Edit::MoveTask {
                    task,
                    column,
                    position,
                },
            )
        }
        TaskCommand::Done { task, .. } => {
            let task = resolve::task(&task, &board)?;
            let column = resolve::done_column(&board)?;
            (
                Some(task.clone()),
                Edit::MoveTask {
                    task,
                    column,
                    position: Position::Bottom,
                },
            )
        }
        TaskCommand::Archive { task, restore, .. } => {
            let task = resolve::task(&task, &board)?;
            (
                Some(task.clone()),
                Edit::SetArchived {
                    task,
                    archived: !restore,
                },
            )
        }
        TaskCommand::Comment { task, body, .. } => {
            if body.trim().is_empty() {
                return Err(CliError::bad_input("a comment needs a body"));
            }
            let task = resolve::task(&task, &board)?;
            (Some(task.clone()), Edit::AddComment { task, body })
        }
        TaskCommand::Import { column, .. } => {
            let column = column.map(|c| resolve::column(&c, &board)).transpose()?;
            return import(session, id, column).await;
        }
    };
    let edited = client.edit(id, edit).await?;
    let task = match (&edited, task) {
        (Edited::Task(new), _) => new.clone(),
        (_, Some(task)) => task,
        (_, None) => unreachable!("every edit but add names its task"),
    };
    let status = push(session, id).await;
    let read = client.board(id).await?;
    let saved = &read.tasks[&task];
    if session.json {
        let mut out = render::task_json(saved);
        out["status"] = render::status_json(status);
        if let Edited::Comment(comment) = &edited {
            out["commentId"] = json!(comment.as_str());
        }
        println!("{out}");
    } else {
        let verb = match edited {
            Edited::Task(_) => "Added",
            Edited::Comment(_) => "Commented on",
            Edited::Updated => "Updated",
        };
        println!(
            "{verb} \"{}\" #{} in {} — {}",
            saved.title,
            render::short(saved.id.as_str()),
            saved.column,
            render::status_text(status)
        );
    }
    Ok(())
}

fn check_title(title: &str) -> Result<&str, CliError> {
    if title.trim().is_empty() {
        return Err(CliError::bad_input("a task needs a title"));
    }
    Ok(title)
}

async fn import(
    session: &Session,
    id: DocumentId,
    column: Option<taskflow_client_core::board::ColumnId>,
) -> Result<(), CliError> {
    let user = session.user.clone();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut count = 0usize;
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| CliError::new(Kind::Failure, format!("reading stdin: {e}")))?;
        let title = line.trim();
        if title.is_empty() {
            continue;
        }
        let mut task = NewTask::titled(title, user.clone());
        task.column = column.clone();
        let Edited::Task(task_id) = session.client.edit(id, Edit::AddTask(task)).await? else {
            unreachable!("adding a task creates one");
        };
        count += 1;
        // Reported only once stored: a line printed here survives a crash of this process.
        let line = if session.json {
            json!({ "saved": task_id.as_str(), "title": title }).to_string()
        } else {
            format!("saved #{} {title}", render::short(task_id.as_str()))
        };
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .map_err(|e| CliError::new(Kind::Failure, format!("writing: {e}")))?;
    }
    let status = push(session, id).await;
    if !session.json {
        println!("{count} tasks added — {}", render::status_text(status));
    }
    Ok(())
}

// ---------------------------------------------------------------- syncing

/// After an edit: give the server a few seconds to take it; never fails the command.
async fn push(session: &Session, id: DocumentId) -> SyncStatus {
    quick_sync(session, &[id]).await;
    session
        .client
        .status(id)
        .await
        .unwrap_or(SyncStatus::Offline { pending: 0 })
}

/// Waits briefly for the boards to sync, stopping early if the server is unreachable.
async fn quick_sync(session: &Session, ids: &[DocumentId]) {
    if !session.online || ids.is_empty() {
        return;
    }
    let mut events = session.client.subscribe();
    let deadline = tokio::time::Instant::now() + QUICK_SYNC;
    loop {
        let mut settled = true;
        for id in ids {
            match session.client.status(*id).await {
                Ok(SyncStatus::InSync | SyncStatus::Unavailable) => {}
                _ => settled = false,
            }
        }
        if settled {
            return;
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) | Ok(Err(broadcast::error::RecvError::Closed)) => return,
            Ok(Ok(ClientEvent::Connection(ConnectionState::Offline { error, .. }))) => {
                if !session.json {
                    eprintln!("taskflow: working offline ({error})");
                }
                return;
            }
            Ok(_) => {}
        }
    }
}

async fn sync(session: &Session, timeout: Duration) -> Result<(), CliError> {
    let boards = session.client.boards().await?;
    let ids: Vec<DocumentId> = boards.iter().map(|b| b.id).collect();
    let statuses = wait_with_progress(session, &ids, timeout).await?;
    let behind: Vec<String> = ids
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| !matches!(s, SyncStatus::InSync | SyncStatus::Unavailable))
        .map(|(id, s)| format!("{id} ({})", render::status_text(*s)))
        .collect();
    let summaries = session.client.boards().await?;
    if session.json {
        for board in &summaries {
            println!("{}", render::summary_json(board));
        }
    } else {
        println!("{}", render::board_list(&summaries));
    }
    if behind.is_empty() {
        return Ok(());
    }
    let why = match session.client.connection().await? {
        ConnectionState::Online { .. } => "the server did not finish in time".to_owned(),
        other => format!("{other:?}"),
    };
    Err(CliError::new(
        Kind::Network,
        format!(
            "not in sync after {}: {} — {why}",
            humantime::format_duration(timeout),
            behind.join(", ")
        ),
    ))
}

/// Waits until the boards are in sync (through reconnects), with a progress bar on a terminal.
async fn wait_with_progress(
    session: &Session,
    ids: &[DocumentId],
    timeout: Duration,
) -> Result<Vec<SyncStatus>, CliError> {
    let bar = if session.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar =
            ProgressBar::with_draw_target(Some(ids.len() as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {pos}/{len} boards in sync {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    };
    let mut events = session.client.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut received = 0usize;
    let mut last_error = None;
    loop {
        let mut statuses = Vec::with_capacity(ids.len());
        for id in ids {
            statuses.push(session.client.status(*id).await?);
        }
        let done = statuses
            .iter()
            .filter(|s| matches!(s, SyncStatus::InSync | SyncStatus::Unavailable))
            .count();
        bar.set_position(done as u64);
        if done == ids.len() {
            bar.finish_and_clear();
            return Ok(statuses);
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => {
                bar.finish_and_clear();
                if let Some(error) = last_error
                    && !session.json
                {
                    eprintln!("taskflow: {error}");
                }
                return Ok(statuses);
            }
            Ok(Ok(ClientEvent::Received { bytes, .. })) => {
                received += bytes;
                bar.set_message(format!("· {} received", human_bytes(received)));
            }
            Ok(Ok(ClientEvent::Connection(ConnectionState::Offline { error, retry_in }))) => {
                bar.set_message(format!(
                    "· {error}; retrying in {:.1}s",
                    retry_in.as_secs_f64()
                ));
                last_error = Some(error);
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err(CliError::new(Kind::Failure, "the client stopped"));
            }
            Ok(_) => {}
        }
    }
}

fn human_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / f64::from(1 << 10)),
        n => format!("{n} B"),
    }
}

async fn watch(session: &Session, board: Option<String>) -> Result<(), CliError> {
    let client = &session.client;
    let boards = client.boards().await?;
    let ids: Vec<DocumentId> = match board {
        Some(reference) => vec![resolve::board(&reference, &boards)?],
        None => boards.iter().map(|b| b.id).collect(),
    };
    let names: BTreeMap<DocumentId, String> = boards
        .iter()
        .map(|b| (b.id, b.name.clone().unwrap_or_else(|| b.id.to_string())))
        .collect();
    for id in &ids {
        client.set_viewing(*id, None).await?;
    }
    let mut events = client.subscribe();
    if session.json {
        println!(
            "{}",
            json!({ "event": "watching", "boards": ids.iter().map(ToString::to_string).collect::<Vec<_>>() })
        );
    } else {
        println!("Watching {} board(s); Ctrl-C to stop.", ids.len());
    }
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            _ = &mut stop => break,
            event = events.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                eprintln!("taskflow: missed {n} events");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        print_event(session, &ids, &names, event).await;
    }
    for id in &ids {
        let _ = client.stop_viewing(*id).await;
    }
    Ok(())
}

async fn print_event(
    session: &Session,
    ids: &[DocumentId],
    names: &BTreeMap<DocumentId, String>,
    event: ClientEvent,
) {
    let mut out = std::io::stdout();
    let lines: Vec<String> = match event {
        ClientEvent::Board(change)
            if change.origin == Origin::Remote && ids.contains(&change.document_id) =>
        {
            if session.json {
                vec![render::change_json(&change).to_string()]
            } else {
                // Only the tasks named: re-reading a large board per change would be slow.
                let mut titles = BTreeMap::new();
                for id in change.tasks.keys() {
                    if let Ok(Some(task)) =
                        session.client.task(change.document_id, id.clone()).await
                    {
                        titles.insert(id.clone(), task.title);
                    }
                }
                let name = names.get(&change.document_id).map_or("?", String::as_str);
                render::change_lines(&change, name, &titles)
            }
        }
        ClientEvent::Presence {
            document_id,
            viewers,
        } if ids.contains(&document_id) => {
            let users: Vec<&str> = viewers.iter().map(|v| v.user.as_str()).collect();
            if session.json {
                vec![json!({ "event": "presence", "board": document_id.to_string(), "viewers": viewers.iter().map(|v| json!({ "user": v.user, "task": v.task.as_ref().map(TaskId::as_str) })).collect::<Vec<_>>() }).to_string()]
            } else if users.is_empty() {
                vec!["nobody else is viewing".into()]
            } else {
                vec![format!("viewing now: {}", users.join(", "))]
            }
        }
        ClientEvent::Connection(state) => {
            let (state_name, detail) = match &state {
                ConnectionState::Online { .. } => ("online", String::new()),
                ConnectionState::Offline { error, retry_in } => (
                    "offline",
                    format!("{error}; retrying in {:.1}s", retry_in.as_secs_f64()),
                ),
                ConnectionState::Connecting | ConnectionState::Disabled => return,
            };
            if session.json {
                vec![
                    json!({ "event": "connection", "state": state_name, "detail": detail })
                        .to_string(),
                ]
            } else if detail.is_empty() {
                vec![format!("[{state_name}]")]
            } else {
                vec![format!("[{state_name}] {detail}")]
            }
        }
        _ => return,
    };
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}
