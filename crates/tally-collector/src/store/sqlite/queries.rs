//! Queries on the SQLite store, on the reader connections: the event
//! count of `GET /v1/events/count`, and [`ProductQueries`] (the shared
//! statements of [`crate::store::query`] with `?N` parameters).

use crate::store::query::{
    any_activity_sql, breakdown_rest_sql, breakdown_sql, event_activity_sql, event_idents_sql,
    install_activity_sql, name_idents_sql, push_name_ident, sessions_sql, step_idents_sql,
    BreakdownGroup, CountPeople, ProductQueries, Span, INSTALLS_OF_SQL, SLOT_IDENTS_SQL,
};
use crate::store::{health, identity};
use std::sync::Arc;

use super::{db_error, SqliteStore};
use crate::store::{EventCount, QueryStore, StoreError};
use rusqlite::types::{Type, Value};
use rusqlite::{params, params_from_iter, Connection, Row};

/// SQLite numbers parameters `?N`; the shared statements write `$N`.
fn sql(text: &str) -> String {
    text.replace('$', "?")
}

/// The field at a JSON path as JSON text, NULL when absent or `null`.
fn field(param: &str) -> String {
    format!("CASE WHEN json_type(e.raw, {param}) = 'null' THEN NULL ELSE e.raw -> {param} END")
}

/// SQLite's JSON path for dotted segments: `$."a"."b"` (segments hold no
/// `"`; the HTTP layer refuses those).
fn json_path(path: &[String]) -> String {
    let mut out = String::from("$");
    for segment in path {
        out.push_str(&format!(".\"{segment}\""));
    }
    out
}

fn count_people(r: &Row<'_>, at: usize) -> rusqlite::Result<CountPeople> {
    Ok(CountPeople {
        count: r.get::<_, i64>(at)?.max(0) as u64,
        people: r.get::<_, i64>(at + 1)?.max(0) as u64,
    })
}

fn rows<T>(
    c: &Connection,
    text: &str,
    params: Vec<Value>,
    mut f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = c.prepare_cached(&sql(text)).map_err(db_error)?;
    let mut out = Vec::new();
    let mut cursor = statement
        .query(params_from_iter(params))
        .map_err(db_error)?;
    while let Some(r) = cursor.next().map_err(db_error)? {
        out.push(f(r).map_err(db_error)?);
    }
    Ok(out)
}

fn window(w: Span) -> Vec<Value> {
    vec![Value::Integer(w.from), Value::Integer(w.to)]
}

impl QueryStore for SqliteStore {
    fn count_events(
        &self,
        event: &str,
        from: Option<i64>,
        to: Option<i64>,
        source: Option<&str>,
    ) -> Result<EventCount, StoreError> {
        let sql = identity::count_sql("?2", "?3", "?1", "?4");
        self.readers.with(|c| {
            c.prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            event,
                            from.unwrap_or(i64::MIN),
                            to.unwrap_or(i64::MAX),
                            source
                        ],
                        |r| {
                            Ok(EventCount {
                                count: r.get::<_, i64>(0)? as u64,
                                users: r.get::<_, i64>(1)? as u64,
                            })
                        },
                    )
                })
                .map_err(db_error)
        })
    }
}

/// `params` with the source appended when there is one.
fn with_source(mut params: Vec<Value>, source: Option<&str>) -> Vec<Value> {
    params.extend(source.map(|s| Value::Text(s.to_owned())));
    params
}

impl ProductQueries for SqliteStore {
    fn session_spans(
        &self,
        win: Span,
        source: Option<&str>,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        self.read(|c| {
            rows(
                c,
                &sessions_sql(source.is_some()),
                with_source(window(win), source),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    fn activity(
        &self,
        event: Option<&str>,
        win: Span,
        source: Option<&str>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|c| match event {
            Some(name) => {
                let mut params = window(win);
                params.push(Value::Text(name.to_owned()));
                rows(
                    c,
                    &event_activity_sql(source.is_some()),
                    with_source(params, source),
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            }
            None => rows(
                c,
                &any_activity_sql(win, source.is_some()),
                with_source(Vec::new(), source),
                |r| Ok((r.get(0)?, r.get(1)?)),
            ),
        })
    }

    fn breakdown_groups(
        &self,
        event: &str,
        path: &[String],
        win: Span,
        source: Option<&str>,
    ) -> Result<Vec<BreakdownGroup>, StoreError> {
        let mut params = window(win);
        params.push(Value::Text(event.to_owned()));
        params.push(Value::Text(json_path(path)));
        let params = with_source(params, source);
        self.read(|c| {
            rows(c, &breakdown_sql(field, source.is_some()), params, |r| {
                Ok(BreakdownGroup {
                    value: r.get(0)?,
                    counts: count_people(r, 1)?,
                })
            })
        })
    }

    fn breakdown_rest(
        &self,
        event: &str,
        path: &[String],
        win: Span,
        source: Option<&str>,
        shown: &[Option<String>],
    ) -> Result<CountPeople, StoreError> {
        let mut params = window(win);
        params.push(Value::Text(event.to_owned()));
        params.push(Value::Text(json_path(path)));
        let mut params = with_source(params, source);
        let values: Vec<&String> = shown.iter().flatten().collect();
        params.extend(values.iter().map(|v| Value::Text((*v).clone())));
        let text = breakdown_rest_sql(
            field,
            values.len(),
            shown.iter().any(Option::is_none),
            source.is_some(),
        );
        self.read(|c| {
            Ok(rows(c, &text, params, |r| count_people(r, 0))?
                .pop()
                .unwrap_or_default())
        })
    }

    fn event_idents(
        &self,
        event: Option<&str>,
        win: Span,
        source: Option<&str>,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut params = window(win);
        params.extend(event.map(|e| Value::Text(e.to_owned())));
        let params = with_source(params, source);
        self.read(|c| {
            rows(
                c,
                &event_idents_sql(event.is_some(), source.is_some()),
                params,
                |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0))),
            )
        })
    }

    fn slot_idents(&self, first: i64, end: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        self.read(|c| {
            rows(
                c,
                SLOT_IDENTS_SQL,
                vec![Value::Integer(first), Value::Integer(end)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    fn step_idents(
        &self,
        steps: &[String],
        win: Span,
        source: Option<&str>,
    ) -> Result<Vec<(i64, i64, String)>, StoreError> {
        let mut params = window(win);
        params.extend(steps.iter().map(|s| Value::Text(s.clone())));
        let params = with_source(params, source);
        self.read(|c| {
            rows(
                c,
                &step_idents_sql(steps.len(), source.is_some()),
                params,
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
    }

    fn persons(&self, idents: &[i64]) -> Result<Vec<(i64, Arc<str>)>, StoreError> {
        // The ids travel as one JSON array: no bound on their number.
        let list = serde_json::to_string(idents)
            .map_err(|e| StoreError::Backend(format!("identity list: {e}")))?;
        self.read(|c| {
            rows(
                c,
                "SELECT p.id, p.person FROM json_each($1) j JOIN idents p ON p.id = j.value \
                 WHERE p.person IS NOT NULL",
                vec![Value::Text(list)],
                |r| {
                    let person = r.get_ref(1)?.as_str().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(1, Type::Text, e.into())
                    })?;
                    Ok((r.get(0)?, Arc::from(person)))
                },
            )
        })
    }

    fn install_activity(
        &self,
        from: i64,
        quantum_ms: i64,
        source: Option<&str>,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let params = with_source(
            vec![Value::Integer(from), Value::Integer(quantum_ms.max(1))],
            source,
        );
        self.read(|c| {
            rows(c, &install_activity_sql(source.is_some()), params, |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
    }

    fn installs_with_gaps(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| rows(c, health::GAPS_SQL, Vec::new(), |r| r.get(0)))
    }

    fn installs_of(&self, source: &str) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            rows(
                c,
                INSTALLS_OF_SQL,
                vec![Value::Text(source.to_owned())],
                |r| r.get(0),
            )
        })
    }

    fn name_idents(
        &self,
        win: Span,
        source: Option<&str>,
    ) -> Result<Vec<(String, Vec<i64>)>, StoreError> {
        self.read(|c| {
            let mut groups = Vec::new();
            // Millions of rows: the name is borrowed from the row, not
            // copied, unless it starts a group.
            rows(
                c,
                &name_idents_sql(source.is_some()),
                with_source(window(win), source),
                |r| {
                    let name = r.get_ref(0)?.as_str().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(0, Type::Text, e.into())
                    })?;
                    let ident: Option<i64> = r.get(1)?;
                    push_name_ident(&mut groups, name, ident.unwrap_or(0));
                    Ok(())
                },
            )?;
            Ok(groups)
        })
    }
}
