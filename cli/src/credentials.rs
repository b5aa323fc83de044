//! Signed-in sessions per profile: `<home>/credentials/<profile>.json`, kept by client-core's
//! [`CredentialsFile`] (readable by the user only, written with temp file + rename).

use std::path::Path;

use taskflow_client_core::account::{CredentialStore, Credentials, CredentialsFile};

use crate::error::{CliError, Kind};

fn file(home: &Path, profile: &str) -> CredentialsFile {
    CredentialsFile::new(home.join("credentials").join(format!("{profile}.json")))
}

fn failure(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Failure, format!("credentials: {e}"))
}

pub fn load(home: &Path, profile: &str) -> Result<Option<Credentials>, CliError> {
    file(home, profile).read().map_err(failure)
}

pub fn save(home: &Path, profile: &str, credentials: &Credentials) -> Result<(), CliError> {
    file(home, profile).write(credentials).map_err(failure)
}

pub fn forget(home: &Path, profile: &str) -> Result<(), CliError> {
    file(home, profile).remove().map_err(failure)
}

/// A profile's credentials as the client's [`CredentialStore`]: re-read before each refresh, so
/// that another `taskflow` process's refresh is not undone; a failed save is said on stderr.
pub struct ProfileCredentials(CredentialsFile);

impl ProfileCredentials {
    pub fn new(home: &Path, profile: &str) -> Self {
        Self(file(home, profile))
    }
}

impl CredentialStore for ProfileCredentials {
    fn load(&self) -> Option<Credentials> {
        self.0.load()
    }

    fn save(&self, credentials: &Credentials) {
        if let Err(e) = self.0.write(credentials) {
            eprintln!("taskflow: {}", failure(e).message);
        }
    }
}
