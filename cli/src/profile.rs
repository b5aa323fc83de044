//! Profiles: named setups (server, user, token, data directory) kept in `profiles.toml` under the
//! Taskflow home (`$TASKFLOW_HOME`, else `$XDG_CONFIG_HOME/taskflow`, else
//! `~/.config/taskflow`). A profile's boards live in its own data directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, Kind};

pub const DEFAULT_PROFILE: &str = "default";
const PROFILES_FILE: &str = "profiles.toml";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `ws://` or `wss://` sync endpoint; none means this profile works offline only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The user recorded as author of tasks and comments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Where the boards are stored; defaults to `<home>/profiles/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

pub fn home() -> Result<PathBuf, CliError> {
    if let Some(home) = std::env::var_os("TASKFLOW_HOME") {
        return Ok(PathBuf::from(home));
    }
    if let Some(config) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(config).join("taskflow"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("taskflow")),
        None => Err(CliError::bad_input(
            "cannot find a home for profiles: set TASKFLOW_HOME",
        )),
    }
}

impl Profiles {
    pub fn load(home: &Path) -> Result<Profiles, CliError> {
        let path = home.join(PROFILES_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                CliError::bad_input(format!(
                    "{} is not a valid profiles file: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::default()),
            Err(e) => Err(CliError::new(
                Kind::Failure,
                format!("reading {}: {e}", path.display()),
            )),
        }
    }

    /// Writes the file atomically (temp file + rename), so a crash never leaves half of it.
    pub fn save(&self, home: &Path) -> Result<(), CliError> {
        let fail =
            |e: std::io::Error| CliError::new(Kind::Failure, format!("saving profiles: {e}"));
        std::fs::create_dir_all(home).map_err(fail)?;
        let text = toml::to_string_pretty(self)
            .map_err(|e| CliError::new(Kind::Failure, format!("encoding profiles: {e}")))?;
        let tmp = home.join(format!("{PROFILES_FILE}.tmp"));
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, home.join(PROFILES_FILE)).map_err(fail)
    }

    /// The named profile; the default one exists even when never configured.
    pub fn get(&self, name: &str) -> Result<Profile, CliError> {
        match self.profiles.get(name) {
            Some(profile) => Ok(profile.clone()),
            None if name == DEFAULT_PROFILE => Ok(Profile::default()),
            None => Err(CliError::not_found(format!(
                "no profile `{name}`; create it with `taskflow profile set {name} --server …`"
            ))),
        }
    }
}

impl Profile {
    pub fn data_dir(&self, home: &Path, name: &str) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| home.join("profiles").join(name))
    }

    pub fn user(&self) -> String {
        self.user
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "me".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_through_the_file() {
        let home = tempfile::tempdir().expect("dir");
        let mut profiles = Profiles::load(home.path()).expect("empty is fine");
        assert_eq!(
            profiles.get(DEFAULT_PROFILE).expect("default"),
            Profile::default()
        );
        assert_eq!(
            profiles.get("work").expect_err("missing").kind,
            Kind::NotFound
        );
        profiles.profiles.insert(
            "work".into(),
            Profile {
                server: Some("ws://127.0.0.1:3030/api/v1/sync".into()),
                user: Some("ann".into()),
                ..Profile::default()
            },
        );
        profiles.save(home.path()).expect("save");
        let again = Profiles::load(home.path()).expect("load");
        assert_eq!(again.get("work").expect("there"), profiles.profiles["work"]);
    }

    #[test]
    fn a_damaged_profiles_file_is_a_clear_error() {
        let home = tempfile::tempdir().expect("dir");
        std::fs::write(
            home.path().join(PROFILES_FILE),
            "[profiles.x]\nsrever = 1\n",
        )
        .expect("write");
        let err = Profiles::load(home.path()).expect_err("invalid");
        assert_eq!(err.kind, Kind::BadInput);
        assert!(err.message.contains("srever"), "{}", err.message);
    }
}
