//! Bytes on disk of the SQLite store after `tally bench collector`: the
//! database file once its WAL is checkpointed into it, and each B-tree's
//! share (SQLite's `dbstat` table: the events' rows, each index), per
//! stored event.

use std::path::Path;

use rusqlite::Connection;

/// The file's size and each B-tree's, in bytes.
pub(super) struct DiskUse {
    pub(super) file: u64,
    /// Table or index name and its pages' bytes, largest first.
    pub(super) trees: Vec<(String, u64)>,
}

impl DiskUse {
    /// Reads the database at `path`, after every connection of the store
    /// closed: its WAL is checkpointed and truncated first, so the file
    /// holds everything.
    pub(super) fn of(path: &Path) -> anyhow::Result<DiskUse> {
        let conn = Connection::open(path)?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let file = std::fs::metadata(path)?.len();
        let mut statement =
            conn.prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")?;
        let trees = statement
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
            .collect::<Result<_, _>>()?;
        Ok(DiskUse { file, trees })
    }

    /// `file` and the B-trees of at least 1 byte per event, per stored
    /// event.
    pub(super) fn per_event(&self, stored: u64) -> String {
        let n = stored.max(1) as f64;
        let trees: Vec<String> = self
            .trees
            .iter()
            .filter(|(_, bytes)| *bytes as f64 >= n)
            .map(|(name, bytes)| format!("{name} {:.0}", *bytes as f64 / n))
            .collect();
        format!(
            "{:.0} bytes per stored event ({:.1} MB for {stored}); B-trees: {}",
            self.file as f64 / n,
            self.file as f64 / 1e6,
            trees.join(", ")
        )
    }
}
