//! `tally backup`: a consistent copy of the SQLite store, taken while
//! `tally serve` runs.
//!
//! The store is in WAL mode, so copying `tally.db` file by file while the
//! collector writes can miss commits that are still in `tally.db-wal`, or
//! catch pages mid-checkpoint. SQLite's online backup API copies the
//! database as one read transaction sees it, from a read-only connection of
//! its own: in WAL mode a reader never blocks the collector's writer, and
//! the writer never disturbs the reader's snapshot, so the copy is every
//! commit up to the moment the backup began, and nothing after.
//!
//! The copy is written as `FILE.partial` (mode 0600: it holds every event),
//! checked with `PRAGMA quick_check`, switched out of WAL mode so it is one
//! self-contained file, synced, and only then renamed to `FILE`. `--out -`
//! writes the finished file to stdout instead. Restoring is replacing the
//! store's file while the collector is stopped (docs/operating.md).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use tally_collector::config::DEFAULT_DATA_DIR;
use tally_collector::store::SQLITE_FILE_NAME;

/// How long the backup's reader waits for a lock the collector holds (a
/// checkpoint that truncates the WAL, at most a few seconds).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before retrying a step SQLite answered busy or locked.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Attempts of a step answered busy or locked before giving up.
const MAX_RETRIES: u32 = 200;

/// Arguments of `tally backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Data directory of the SQLite store to copy (the collector may be
    /// running on it)
    #[arg(long, env = "TALLY_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The copy: a SQLite file, written as FILE.partial and renamed when
    /// complete; `-` writes it to stdout
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn run(args: BackupArgs) -> anyhow::Result<()> {
    let source = args.data_dir.join(SQLITE_FILE_NAME);
    if !source.is_file() {
        bail!(
            "no store at {} (for PostgreSQL use pg_dump: docs/operating.md)",
            source.display()
        );
    }
    let started = Instant::now();
    let to_stdout = args.out.as_os_str() == "-";
    // For stdout the copy is made in a private temporary directory first:
    // SQLite writes a database file, not a stream.
    let scratch = if to_stdout {
        Some(
            tempfile::Builder::new()
                .prefix("tally-backup-")
                .tempdir()
                .context("cannot create a temporary directory for the copy")?,
        )
    } else {
        None
    };
    let target = match &scratch {
        Some(dir) => dir.path().join(SQLITE_FILE_NAME),
        None => args.out.clone(),
    };
    let partial = partial_path(&target);
    let pages = copy(&source, &partial).inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    std::fs::rename(&partial, &target).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            target.display()
        )
    })?;
    sync_parent(&target);
    let bytes = std::fs::metadata(&target)
        .with_context(|| format!("cannot read {}", target.display()))?
        .len();
    if to_stdout {
        let mut file =
            File::open(&target).with_context(|| format!("cannot open {}", target.display()))?;
        let mut stdout = std::io::stdout().lock();
        std::io::copy(&mut file, &mut stdout).context("cannot write the copy to stdout")?;
        stdout.flush().context("cannot write the copy to stdout")?;
    }
    eprintln!(
        "backed up {} ({pages} pages, {bytes} bytes) to {} in {:.1} s",
        source.display(),
        if to_stdout {
            "stdout".to_owned()
        } else {
            args.out.display().to_string()
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Copies the database at `source` into a new file at `target` with the
/// online backup API; returns the pages copied.
fn copy(source: &Path, target: &Path) -> anyhow::Result<i32> {
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {} read-only", source.display()))?;
    from.busy_timeout(BUSY_TIMEOUT)?;
    create_private(target)?;
    let mut to =
        Connection::open(target).with_context(|| format!("cannot open {}", target.display()))?;
    let pages = {
        let backup = Backup::new(&from, &mut to).context("cannot start the backup")?;
        let mut retries = 0;
        loop {
            // Every page in one step: one read transaction, so the copy is
            // one snapshot, and a commit of the collector meanwhile does not
            // restart it (it would between steps).
            match backup.step(-1).context("the backup failed")? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    retries += 1;
                    if retries > MAX_RETRIES {
                        bail!("the store stayed locked; nothing was kept");
                    }
                    std::thread::sleep(RETRY_PAUSE);
                }
                _ => bail!("the backup stopped for an unknown reason; nothing was kept"),
            }
        }
        backup.progress().pagecount
    };
    drop(from);
    let check: String = to
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .context("cannot check the copy")?;
    if check != "ok" {
        bail!("the copy failed its integrity check: {check}");
    }
    // One self-contained file: no -wal or -shm to carry along. The
    // collector turns WAL back on when it opens a restored copy.
    let _: String = to
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .context("cannot take the copy out of WAL mode")?;
    to.close()
        .map_err(|(_, e)| e)
        .context("cannot close the copy")?;
    File::open(target)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", target.display()))?;
    Ok(pages)
}

/// `FILE.partial` beside `FILE`.
fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Creates `path` empty with mode 0600 (the copy holds every event);
/// replaces a partial file a failed run left.
fn create_private(path: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .map(drop)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Syncs the directory holding `path`, so the rename survives a power cut
/// (best effort: not every platform syncs directories).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}
