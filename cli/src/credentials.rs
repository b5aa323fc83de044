//! Signed-in sessions per profile: `<home>/credentials/<profile>.json`, readable by the user
//! only (0600, in a 0700 directory), written with temp file + rename.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use taskflow_client_core::account::{CredentialStore, Credentials};

use crate::error::{CliError, Kind};

fn path(home: &Path, profile: &str) -> PathBuf {
    home.join("credentials").join(format!("{profile}.json"))
}

fn failure(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Failure, format!("credentials: {e}"))
}

pub fn load(home: &Path, profile: &str) -> Result<Option<Credentials>, CliError> {
    match std::fs::read_to_string(path(home, profile)) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(failure),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failure(e)),
    }
}

pub fn save(home: &Path, profile: &str, credentials: &Credentials) -> Result<(), CliError> {
    let file = path(home, profile);
    let dir = file.parent().expect("credentials live in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failure)?;
    let tmp = dir.join(format!(".{profile}.json.tmp"));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(failure)?;
    let text = serde_json::to_string(credentials).map_err(failure)?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(failure)?;
    std::fs::rename(&tmp, &file).map_err(failure)
}

pub fn forget(home: &Path, profile: &str) -> Result<(), CliError> {
    match std::fs::remove_file(path(home, profile)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failure(e)),
    }
}

/// A profile's credentials file as the client's [`CredentialStore`]: re-read before each
/// refresh, so that another `taskflow` process's refresh is not undone.
pub struct ProfileCredentials {
    home: PathBuf,
    profile: String,
}

impl ProfileCredentials {
    pub fn new(home: &Path, profile: &str) -> Self {
        Self {
            home: home.to_owned(),
            profile: profile.to_owned(),
        }
    }
}

impl CredentialStore for ProfileCredentials {
    fn load(&self) -> Option<Credentials> {
        load(&self.home, &self.profile).ok().flatten()
    }

    fn save(&self, credentials: &Credentials) {
        if let Err(e) = save(&self.home, &self.profile, credentials) {
            eprintln!("taskflow: {}", e.message);
        }
    }
}
