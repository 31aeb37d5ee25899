//! The SQLite store's data directory and the modes of its files.
//!
//! The database holds every event, so on Unix:
//!
//! - a data directory Tally creates is made `0700`;
//! - the database files (`tally.db`, `-wal`, `-shm`) are `0600`: an
//!   existing one is set so at every start, and `tally.db` is created
//!   `0600` before SQLite opens it, because SQLite gives its `-wal` and
//!   `-shm` files the mode of the database file. Modes are set with
//!   `chmod`, so the process's umask does not matter;
//! - a data directory that already exists is left as it is (it may be a
//!   mounted volume or a directory others share), with a warning when its
//!   group or others may enter it: its database files are `0600` anyway,
//!   so only their names show.

use std::path::{Path, PathBuf};

/// Mode of a data directory Tally creates.
pub const DIR_MODE: u32 = 0o700;

/// Mode of the database files.
pub const FILE_MODE: u32 = 0o600;

/// The database files, by their suffix to the database's name.
const SQLITE_SUFFIXES: [&str; 3] = ["", "-wal", "-shm"];

/// Why the data directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// Creating the directory or the database file, or setting a mode,
    /// failed.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Creates `dir` (`0700`) if needed and makes the database file `db_name`
/// in it and its `-wal` and `-shm` files `0600` (see the module doc).
pub fn prepare(dir: &Path, db_name: &str) -> Result<(), DataDirError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DataDirError::Io { path, source }
    };
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    imp::dir_mode(dir, created).map_err(io(dir))?;
    let db = dir.join(db_name);
    imp::create_private(&db).map_err(io(&db))?;
    for suffix in SQLITE_SUFFIXES {
        let file = dir.join(format!("{db_name}{suffix}"));
        imp::file_mode(&file).map_err(io(&file))?;
    }
    Ok(())
}

#[cfg(unix)]
mod imp {
    use std::fs::{self, OpenOptions, Permissions};
    use std::io;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    use std::path::Path;

    use super::{DIR_MODE, FILE_MODE};

    pub(super) fn dir_mode(dir: &Path, created: bool) -> io::Result<()> {
        if created {
            return fs::set_permissions(dir, Permissions::from_mode(DIR_MODE));
        }
        let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                data_dir = %dir.display(),
                mode = format!("{mode:o}"),
                "the data directory may be entered by others; its database files are 0600, \
                 but chmod 700 it unless it is shared on purpose"
            );
        }
        Ok(())
    }

    pub(super) fn create_private(db: &Path) -> io::Result<()> {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(db)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn file_mode(file: &Path) -> io::Result<()> {
        match fs::metadata(file) {
            Ok(meta) if meta.permissions().mode() & 0o777 != FILE_MODE => {
                fs::set_permissions(file, Permissions::from_mode(FILE_MODE))
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use std::io;
    use std::path::Path;

    pub(super) fn dir_mode(_dir: &Path, _created: bool) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn create_private(_db: &Path) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn file_mode(_file: &Path) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_0700_and_the_database_0600() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        prepare(&dir, "tally.db").unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("tally.db")), 0o600);
        assert_eq!(std::fs::metadata(dir.join("tally.db")).unwrap().len(), 0);
    }

    #[test]
    fn existing_files_are_narrowed_and_an_existing_directory_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for name in ["tally.db", "tally.db-wal", "tally.db-shm", "other"] {
            let p = dir.path().join(name);
            std::fs::write(&p, b"x").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        prepare(dir.path(), "tally.db").unwrap();
        assert_eq!(mode(dir.path()), 0o755);
        for name in ["tally.db", "tally.db-wal", "tally.db-shm"] {
            assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
        }
        assert_eq!(mode(&dir.path().join("other")), 0o644);
        assert_eq!(std::fs::read(dir.path().join("tally.db")).unwrap(), b"x");
    }
}
