//! How peerdex opens its SQLite files (the index server's database, the agent's catalog): the
//! schema version lives in SQLite's `user_version`, and numbered migrations bring a file forward
//! on open, each in its own transaction. A file from a newer peerdex is refused before anything
//! is written to it. Before a migration that rewrites data, a copy of the file is taken beside it.
//!
//! Version 0 is a file from before versions were recorded (or a new, empty file); migration 1 of
//! each database adopts the schema of that time as it is, so no row is lost.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tracing::info;

/// One step of a database's schema history.
#[derive(Clone, Copy)]
pub struct Migration {
    /// The version the step leads to (1, 2, …, in order).
    pub version: u32,
    /// What it does, for the log.
    pub description: &'static str,
    /// Whether it changes existing rows (not only adds tables, columns or indexes): the file is
    /// copied before it runs.
    pub rewrites_data: bool,
    /// The step itself, inside the migration's transaction.
    pub apply: fn(&Transaction<'_>) -> rusqlite::Result<()>,
}

/// Why a database could not be brought to the current schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file was written by a newer version: it is left exactly as it is.
    #[error(
        "{} has schema version {found}, newer than this build knows ({known}): it was written by \
         a newer peerdex; refusing to open it, and leaving it unchanged",
        path.display()
    )]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The newest this build knows.
        known: u32,
    },
    /// A migration failed; the file is at the version before it (its transaction rolled back).
    #[error("{}: migrating to schema version {version} ({description}) failed: {source}", path.display())]
    Migration {
        /// The file.
        path: PathBuf,
        /// The version it was migrating to.
        version: u32,
        /// That migration.
        description: &'static str,
        /// What failed.
        source: rusqlite::Error,
    },
    /// The copy before a data-rewriting migration could not be made; nothing was migrated.
    #[error("{}: backing up to {} before migrating failed: {source}", path.display(), backup.display())]
    Backup {
        /// The file.
        path: PathBuf,
        /// The copy.
        backup: PathBuf,
        /// What failed.
        source: rusqlite::Error,
    },
    /// Reading the version failed.
    #[error("{}: {source}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: rusqlite::Error,
    },
}

/// What opening did to the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The version found (0: none recorded, or a new file).
    pub from: u32,
    /// The version now.
    pub to: u32,
    /// Copies taken before data-rewriting migrations.
    pub backups: Vec<PathBuf>,
}

/// The newest version of `migrations`.
pub fn latest(migrations: &[Migration]) -> u32 {
    migrations.last().map_or(0, |m| m.version)
}

/// The schema version of the file at `path`, read without writing anything (0 when it does not
/// exist yet).
pub fn version_of(path: &Path) -> Result<u32, SchemaError> {
    if !path.exists() {
        return Ok(0);
    }
    let sqlite = |source| SchemaError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite)?;
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite)
}

/// Refuses a file of a newer schema than `migrations` know, before anything opens it for
/// writing (setting the journal mode alone can rewrite the file's header).
pub fn refuse_newer(path: &Path, migrations: &[Migration]) -> Result<u32, SchemaError> {
    let found = version_of(path)?;
    let known = latest(migrations);
    if found > known {
        return Err(SchemaError::Newer {
            path: path.to_owned(),
            found,
            known,
        });
    }
    Ok(found)
}

/// The copy of `path` taken before migrating to `version`.
pub fn backup_path(path: &Path, version: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".before-v{version}.bak"));
    PathBuf::from(name)
}

/// Brings the database open on `conn` (the file `path`) to the newest version of `migrations`,
/// one migration per transaction. Call [`refuse_newer`] before opening `conn`.
pub fn migrate(
    path: &Path,
    conn: &mut Connection,
    migrations: &[Migration],
) -> Result<Migrated, SchemaError> {
    let sqlite = |source| SchemaError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let from: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite)?;
    let known = latest(migrations);
    if from > known {
        return Err(SchemaError::Newer {
            path: path.to_owned(),
            found: from,
            known,
        });
    }
    // A file with no table holds no data to protect.
    let empty = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sqlite)?
        == 0;
    let mut backups = Vec::new();
    for migration in migrations.iter().filter(|m| m.version > from) {
        if migration.rewrites_data && !empty {
            let backup = backup_path(path, migration.version);
            let _ = std::fs::remove_file(&backup);
            conn.execute("VACUUM INTO ?1", [backup.to_string_lossy().as_ref()])
                .map_err(|source| SchemaError::Backup {
                    path: path.to_owned(),
                    backup: backup.clone(),
                    source,
                })?;
            backups.push(backup);
        }
        let failed = |source| SchemaError::Migration {
            path: path.to_owned(),
            version: migration.version,
            description: migration.description,
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        (migration.apply)(&tx).map_err(failed)?;
        tx.pragma_update(None, "user_version", migration.version)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        if !empty {
            info!(file = %path.display(), version = migration.version,
                what = migration.description, "schema migrated");
        }
    }
    Ok(Migrated {
        from,
        to: known.max(from),
        backups,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const MIGRATIONS: &[Migration] = &[
        Migration {
            version: 1,
            description: "the first tables",
            rewrites_data: false,
            apply: |tx| tx.execute_batch("CREATE TABLE IF NOT EXISTS t (x INTEGER);"),
        },
        Migration {
            version: 2,
            description: "doubles every x",
            rewrites_data: true,
            apply: |tx| tx.execute_batch("UPDATE t SET x = x * 2;"),
        },
    ];

    #[test]
    fn new_files_are_created_at_the_latest_version_without_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        assert_eq!(refuse_newer(&path, MIGRATIONS).unwrap(), 0);
        let mut conn = Connection::open(&path).unwrap();
        let done = migrate(&path, &mut conn, MIGRATIONS).unwrap();
        assert_eq!((done.from, done.to), (0, 2));
        assert!(done.backups.is_empty());
        assert_eq!(version_of(&path).unwrap(), 2);
    }

    #[test]
    fn old_files_migrate_forward_with_a_copy_before_data_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let mut conn = Connection::open(&path).unwrap();
        // Version 0: made before versions were recorded.
        conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (21);")
            .unwrap();
        let done = migrate(&path, &mut conn, MIGRATIONS).unwrap();
        assert_eq!((done.from, done.to), (0, 2));
        let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 42);
        // The copy holds the data as it was before the rewrite.
        assert_eq!(done.backups, [backup_path(&path, 2)]);
        let copy = Connection::open(&done.backups[0]).unwrap();
        let old: i64 = copy.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(old, 21);
        // Opening again does nothing.
        let again = migrate(&path, &mut conn, MIGRATIONS).unwrap();
        assert_eq!((again.from, again.to), (2, 2));
        assert!(again.backups.is_empty());
    }

    #[test]
    fn a_failed_migration_leaves_the_file_at_the_version_before() {
        const BROKEN: &[Migration] = &[
            MIGRATIONS[0],
            Migration {
                version: 2,
                description: "breaks",
                rewrites_data: false,
                apply: |tx| tx.execute_batch("UPDATE t SET x = 1; SELECT * FROM missing;"),
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (5);")
            .unwrap();
        let error = migrate(&path, &mut conn, BROKEN).unwrap_err();
        assert!(
            error.to_string().contains("schema version 2 (breaks)"),
            "{error}"
        );
        assert_eq!(version_of(&path).unwrap(), 1);
        let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 5, "the failed step rolled back");
    }

    #[test]
    fn a_newer_file_is_refused_and_not_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE t (x INTEGER); PRAGMA user_version = 9;")
                .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let error = refuse_newer(&path, MIGRATIONS).unwrap_err();
        assert!(matches!(
            error,
            SchemaError::Newer {
                found: 9,
                known: 2,
                ..
            }
        ));
        assert!(error.to_string().contains("newer peerdex"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
