//! CLI failures and the exit code each maps to (documented in `taskflow --help`).

use std::process::ExitCode;

use taskflow_client_core::ClientError;
use taskflow_client_core::board::SchemaError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 1: the command could not be carried out (local store trouble, a damaged board).
    Failure,
    /// 2: the command line or its values are wrong (clap uses 2 for usage errors too).
    BadInput,
    /// 3: a board, task or column named on the command line does not exist.
    NotFound,
    /// 4: the server could not be reached, or did not finish syncing in time.
    Network,
    /// 5: signing in failed, or the session has ended (run `taskflow login`).
    Auth,
}

impl Kind {
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Kind::Failure => 1,
            Kind::BadInput => 2,
            Kind::NotFound => 3,
            Kind::Network => 4,
            Kind::Auth => 5,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Failure => "failure",
            Kind::BadInput => "bad_input",
            Kind::NotFound => "not_found",
            Kind::Network => "network",
            Kind::Auth => "auth",
        }
    }
}

#[derive(Debug)]
pub struct CliError {
    pub kind: Kind,
    pub message: String,
}

impl CliError {
    pub fn new(kind: Kind, message: impl Into<String>) -> CliError {
        CliError {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_input(message: impl Into<String>) -> CliError {
        CliError::new(Kind::BadInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> CliError {
        CliError::new(Kind::NotFound, message)
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        let kind = match &e {
            ClientError::UnknownBoard(_) | ClientError::Unavailable(_) => Kind::NotFound,
            ClientError::Schema(SchemaError::NoSuchTask(_) | SchemaError::NoSuchColumn(_)) => {
                Kind::NotFound
            }
            ClientError::NotYetReceived(_) => Kind::Network,
            ClientError::BadServerUrl { .. } | ClientError::AlreadyExists(_) => Kind::BadInput,
            ClientError::Store(_)
            | ClientError::Schema(_)
            | ClientError::Corrupt { .. }
            | ClientError::Closed => Kind::Failure,
        };
        let message = match &e {
            ClientError::NotYetReceived(id) => {
                format!("board {id} has not arrived from the server yet; run `taskflow sync`")
            }
            _ => e.to_string(),
        };
        CliError { kind, message }
    }
}

impl From<taskflow_client_core::account::AccountError> for CliError {
    fn from(e: taskflow_client_core::account::AccountError) -> Self {
        use taskflow_client_core::account::AccountError;
        let kind = match &e {
            AccountError::BadUrl(_) => Kind::BadInput,
            AccountError::SignedOut => Kind::Auth,
            AccountError::Network(_) => Kind::Network,
            AccountError::Rejected {
                status: 401 | 403 | 429,
                ..
            } => Kind::Auth,
            AccountError::Rejected { status: 404, .. } => Kind::NotFound,
            AccountError::Rejected { .. } => Kind::BadInput,
        };
        CliError::new(kind, e.to_string())
    }
}
