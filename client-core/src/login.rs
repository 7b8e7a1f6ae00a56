//! The account this device is signed in to: `peerdex login` keeps its token in the state
//! directory (`account.json`, owner-only), every command that asks the index server for
//! results sends it, and `peerdex logout` revokes and forgets it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the sign-in in the state directory.
pub const LOGIN_FILE: &str = "account.json";

/// A sign-in kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLogin {
    /// The index server it is valid on (its base URL).
    pub server: String,
    /// The account name.
    pub name: String,
    /// The bearer token (revocable with `peerdex logout`).
    pub token: String,
}

/// Why a saved sign-in could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LoginFileError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a saved sign-in.
    #[error("{path} is damaged ({reason}); run peerdex login again")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What does not parse.
        reason: String,
    },
}

fn same_server(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

impl SavedLogin {
    /// The sign-in saved in `state`, if any.
    pub fn load(state: &Path) -> Result<Option<SavedLogin>, LoginFileError> {
        let path = state.join(LOGIN_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| LoginFileError::Damaged {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LoginFileError::Io { path, source }),
        }
    }

    /// The token saved in `state` for `server` (none for another server, or none saved).
    pub fn token_for(state: &Path, server: &str) -> Result<Option<String>, LoginFileError> {
        Ok(SavedLogin::load(state)?
            .filter(|l| same_server(&l.server, server))
            .map(|l| l.token))
    }

    /// Saves it in `state`, readable by the owner only, replacing any earlier one atomically.
    pub fn save(&self, state: &Path) -> Result<(), LoginFileError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = state.join(LOGIN_FILE);
        let temp = state.join(format!("{LOGIN_FILE}.tmp"));
        let io = |source| LoginFileError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io)?;
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temp, &path).map_err(io)
    }

    /// Forgets the sign-in saved in `state`. Returns whether there was one.
    pub fn remove(state: &Path) -> Result<bool, LoginFileError> {
        let path = state.join(LOGIN_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(LoginFileError::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_login_is_private_and_only_for_its_server() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SavedLogin::load(dir.path()).unwrap(), None);
        let login = SavedLogin {
            server: "http://127.0.0.1:7700/".into(),
            name: "alice".into(),
            token: "pdxs_x".into(),
        };
        login.save(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(LOGIN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            SavedLogin::token_for(dir.path(), "http://127.0.0.1:7700").unwrap(),
            Some("pdxs_x".into())
        );
        assert_eq!(
            SavedLogin::token_for(dir.path(), "http://other:7700").unwrap(),
            None
        );
        assert!(SavedLogin::remove(dir.path()).unwrap());
        assert!(!SavedLogin::remove(dir.path()).unwrap());
    }

    #[test]
    fn a_damaged_file_says_how_to_mend_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOGIN_FILE), b"{").unwrap();
        let error = SavedLogin::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("peerdex login again"), "{error}");
    }
}
