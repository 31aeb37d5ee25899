//! Multi-row statements: a batch's rows bound as the parameters of one
//! statement per [`CHUNK`] rows instead of one statement per row, so
//! SQLite steps (and rusqlite binds and resets) a statement a few times
//! per batch rather than hundreds.
//!
//! Every chunk binds exactly `CHUNK` rows, so each statement has one text
//! and stays in the statement cache; the last chunk is padded with rows of
//! NULLs. Statements are written so that a NULL row matches nothing: an
//! `IN` list or a join on it finds no row, and an insert from it filters
//! it out (`WHERE column1 IS NOT NULL`).

use rusqlite::types::Null;
use rusqlite::ToSql;

/// Rows bound per execution.
pub(super) const CHUNK: usize = 64;

/// `(?, ?), (?, ?), …`: [`CHUNK`] rows of `width` parameters, for a
/// `VALUES` list (`width` 1 makes a plain list, for `IN (…)`).
pub(super) fn placeholders(width: usize) -> String {
    let row = if width == 1 {
        "?".to_owned()
    } else {
        format!("({})", vec!["?"; width].join(", "))
    };
    vec![row; CHUNK].join(", ")
}

/// Runs `run` once per [`CHUNK`] of `rows`, with the chunk's parameters
/// flattened and padded with NULL rows to a full chunk.
pub(super) fn for_chunks<const W: usize>(
    rows: &[[&dyn ToSql; W]],
    mut run: impl FnMut(&[&dyn ToSql]) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(CHUNK * W);
    for chunk in rows.chunks(CHUNK) {
        params.clear();
        for row in chunk {
            params.extend_from_slice(row);
        }
        params.resize(CHUNK * W, &Null);
        run(&params)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

    use super::*;
    use rusqlite::Connection;

    #[test]
    fn a_padded_chunk_inserts_and_matches_only_the_given_rows() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            .unwrap();
        let keys: Vec<String> = (0..CHUNK + 3).map(|i| format!("k{i}")).collect();
        let ns: Vec<i64> = (0..CHUNK as i64 + 3).collect();
        let rows: Vec<[&dyn ToSql; 2]> = keys
            .iter()
            .zip(&ns)
            .map(|(k, n)| [k as _, n as _])
            .collect();
        let insert = format!(
            "INSERT INTO t (k, n) SELECT column1, column2 FROM (VALUES {}) WHERE column1 IS NOT NULL",
            placeholders(2)
        );
        let mut runs = 0;
        for_chunks(&rows, |p| {
            runs += 1;
            conn.execute(&insert, p).map(|_| ())
        })
        .unwrap();
        assert_eq!(runs, 2);
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, CHUNK as i64 + 3);
        // Three keys asked, one of them absent: the NULL padding matches
        // nothing.
        let asked = ["k0".to_owned(), "k65".to_owned(), "nope".to_owned()];
        let rows: Vec<[&dyn ToSql; 1]> = asked.iter().map(|k| [k as _]).collect();
        let select = format!(
            "SELECT k FROM t WHERE k IN ({}) ORDER BY k",
            placeholders(1)
        );
        let mut found: Vec<String> = Vec::new();
        for_chunks(&rows, |p| {
            let mut s = conn.prepare(&select)?;
            let mut r = s.query(p)?;
            while let Some(row) = r.next()? {
                found.push(row.get(0)?);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(found, ["k0", "k65"]);
    }
}
