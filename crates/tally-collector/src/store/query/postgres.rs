//! [`ProductQueries`] on the PostgreSQL store: the shared statements,
//! run on a pooled connection.

use std::collections::HashSet;

use super::{
    any_activity_sql, breakdown_rest_sql, breakdown_sql, event_activity_sql, event_idents_sql,
    name_idents_sql, push_name_ident, sessions_sql, step_idents_sql, BreakdownGroup, CountPeople,
    ProductQueries, Span, SLOT_IDENTS_SQL,
};
use crate::store::postgres::{pg_error, PostgresStore};
use crate::store::StoreError;
use ::postgres::types::ToSql;
use ::postgres::Row;

/// Fewest ids [`ProductQueries::persons`] reads as a range: below it the
/// probes are cheap whatever the range.
const DENSE_MIN: usize = 1_000;

/// The field at a JSON path as JSON text, NULL when absent or `null`.
fn field(param: &str) -> String {
    format!("NULLIF(e.raw::jsonb #> {param}::text[], 'null'::jsonb)::text")
}

fn count_people(r: &Row, at: usize) -> Result<CountPeople, ::postgres::Error> {
    Ok(CountPeople {
        count: r.try_get::<_, i64>(at)?.max(0) as u64,
        people: r.try_get::<_, i64>(at + 1)?.max(0) as u64,
    })
}

impl PostgresStore {
    fn rows<T>(
        &self,
        text: &str,
        params: &[&(dyn ToSql + Sync)],
        f: impl Fn(&Row) -> Result<T, ::postgres::Error>,
    ) -> Result<Vec<T>, StoreError> {
        let mut conn = self.client()?;
        conn.client
            .query(text, params)
            .and_then(|rows| rows.iter().map(&f).collect())
            .map_err(pg_error)
    }
}

impl ProductQueries for PostgresStore {
    fn session_spans(&self, win: Span) -> Result<Vec<(i64, i64)>, StoreError> {
        self.rows(&sessions_sql(), &[&win.from, &win.to], |r| {
            Ok((r.try_get(0)?, r.try_get(1)?))
        })
    }

    fn activity(&self, event: Option<&str>, win: Span) -> Result<Vec<(String, i64)>, StoreError> {
        match event {
            Some(name) => self.rows(&event_activity_sql(), &[&win.from, &win.to, &name], |r| {
                Ok((r.try_get(0)?, r.try_get(1)?))
            }),
            None => self.rows(&any_activity_sql(win), &[], |r| {
                Ok((r.try_get(0)?, r.try_get(1)?))
            }),
        }
    }

    fn breakdown_groups(
        &self,
        event: &str,
        path: &[String],
        win: Span,
    ) -> Result<Vec<BreakdownGroup>, StoreError> {
        self.rows(
            &breakdown_sql(field),
            &[&win.from, &win.to, &event, &path],
            |r| {
                Ok(BreakdownGroup {
                    value: r.try_get(0)?,
                    counts: count_people(r, 1)?,
                })
            },
        )
    }

    fn breakdown_rest(
        &self,
        event: &str,
        path: &[String],
        win: Span,
        shown: &[Option<String>],
    ) -> Result<CountPeople, StoreError> {
        let values: Vec<&String> = shown.iter().flatten().collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&win.from, &win.to, &event, &path];
        params.extend(values.iter().map(|v| *v as &(dyn ToSql + Sync)));
        let text = breakdown_rest_sql(field, values.len(), shown.iter().any(Option::is_none));
        Ok(self
            .rows(&text, &params, |r| count_people(r, 0))?
            .pop()
            .unwrap_or_default())
    }

    fn event_idents(&self, event: Option<&str>, win: Span) -> Result<Vec<(i64, i64)>, StoreError> {
        let text = event_idents_sql(event.is_some());
        let row = |r: &Row| Ok((r.try_get(0)?, r.try_get::<_, Option<i64>>(1)?.unwrap_or(0)));
        match event {
            Some(name) => self.rows(&text, &[&win.from, &win.to, &name], row),
            None => self.rows(&text, &[&win.from, &win.to], row),
        }
    }

    fn slot_idents(&self, first: i64, end: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        self.rows(SLOT_IDENTS_SQL, &[&first, &end], |r| {
            Ok((r.try_get(0)?, r.try_get(1)?))
        })
    }

    fn step_idents(
        &self,
        steps: &[String],
        win: Span,
    ) -> Result<Vec<(i64, i64, String)>, StoreError> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&win.from, &win.to];
        params.extend(steps.iter().map(|s| s as &(dyn ToSql + Sync)));
        self.rows(&step_idents_sql(steps.len()), &params, |r| {
            Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
        })
    }

    /// Dense ids (at least half of their range asked for, as a busy
    /// window's are) are read as one range of the primary key and filtered
    /// here: a probe per id cost five times as long for 100,000 ids.
    fn persons(&self, idents: &[i64]) -> Result<Vec<(i64, String)>, StoreError> {
        let row = |r: &Row| Ok((r.try_get(0)?, r.try_get(1)?));
        let (Some(&min), Some(&max)) = (idents.iter().min(), idents.iter().max()) else {
            return Ok(Vec::new());
        };
        let span = u64::try_from(max - min)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        if idents.len() < DENSE_MIN || span > 2 * idents.len() as u64 {
            return self.rows(
                "SELECT id, person FROM idents WHERE id = ANY($1) AND person IS NOT NULL",
                &[&idents],
                row,
            );
        }
        let wanted: HashSet<i64> = idents.iter().copied().collect();
        let mut found = self.rows(
            "SELECT id, person FROM idents WHERE id BETWEEN $1 AND $2 AND person IS NOT NULL",
            &[&min, &max],
            row,
        )?;
        found.retain(|(id, _)| wanted.contains(id));
        Ok(found)
    }

    fn name_idents(&self, win: Span) -> Result<Vec<(String, Vec<i64>)>, StoreError> {
        let mut conn = self.client()?;
        let rows = conn
            .client
            .query(&name_idents_sql(), &[&win.from, &win.to])
            .map_err(pg_error)?;
        let mut groups = Vec::new();
        for r in &rows {
            let name: &str = r.try_get(0).map_err(pg_error)?;
            let ident: Option<i64> = r.try_get(1).map_err(pg_error)?;
            push_name_ident(&mut groups, name, ident.unwrap_or(0));
        }
        Ok(groups)
    }
}
