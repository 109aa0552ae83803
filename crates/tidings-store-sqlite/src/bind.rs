//! Rows bound to the hot path's statements as the parameters of multi-row statements, lists bound
//! as JSON, and rows SQLite hands back folded into one JSON value.

use foldhash::{HashMap, HashMapExt};
use std::cell::RefCell;
use std::rc::Rc;

use rusqlite::Connection;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use tidings_store::{StoreError, StoreResult};

use crate::map_sql;

fn encoding(error: serde_json::Error) -> StoreError {
    StoreError::Internal(format!("encoding rows: {error}"))
}

/// Rows bound as one JSON array, unpacked in SQL with `jsonb_each` (its rows come out as JSONB,
/// which `->>` reads without parsing text again).
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(rows: &T) -> StoreResult<String> {
    serde_json::to_string(rows).map_err(encoding)
}

/// JSON texts written back to back into one buffer (one allocation for a batch's texts, not one
/// each); each is named by where it starts and its length in bytes.
pub(crate) struct Packed(Vec<u8>);

impl Packed {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self(Vec::with_capacity(bytes))
    }

    /// Writes a value's JSON into the buffer.
    pub(crate) fn push_json<T: serde::Serialize>(
        &mut self,
        value: &T,
    ) -> StoreResult<(usize, usize)> {
        let start = self.0.len();
        serde_json::to_writer(&mut self.0, value).map_err(encoding)?;
        Ok((start, self.0.len() - start))
    }

    /// A text written before, bound as it is (JSON is UTF-8).
    pub(crate) fn text(&self, (start, length): (usize, usize)) -> ToSqlOutput<'_> {
        self.0
            .get(start..start + length)
            .map_or(NULL, |bytes| ToSqlOutput::Borrowed(ValueRef::Text(bytes)))
    }
}

/// Reads rows SQLite handed back folded into one JSON value (`json_group_array`).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(json: &str) -> StoreResult<T> {
    serde_json::from_str(json).map_err(|e| StoreError::Internal(format!("decoding rows: {e}")))
}

/// Rows bound as parameters of one multi-row statement (`VALUES (?5, ?6), (?7, ?8), …`), run in
/// chunks: SQLite reads bound values as they are, where rows bound as JSON were parsed, converted
/// to JSONB and then searched once per field (about a thousand instructions per field), and one
/// statement per row opened the table and every index again for each row.
pub(crate) struct Rows<'a, const W: usize> {
    rows: Vec<[ToSqlOutput<'a>; W]>,
}

/// Most rows one statement carries; a batch is cut into chunks of powers of two up to this, so
/// that each statement is prepared in at most seven sizes.
const CHUNK: usize = 64;

/// The address and length of a statement's head and tail (static texts), its rows, and its fixed
/// parameters.
type StatementKey = [usize; 6];

thread_local! {
    /// Statement texts by where their head and tail are, how many rows and fixed parameters they
    /// have, built once: a chunk's statement is looked up, not formatted again with hundreds of
    /// parameters.
    static STATEMENTS: RefCell<HashMap<StatementKey, Rc<str>>> = RefCell::new(HashMap::new());
}

impl<'a, const W: usize> Rows<'a, W> {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        Self {
            rows: Vec::with_capacity(rows),
        }
    }

    pub(crate) fn push(&mut self, row: [ToSqlOutput<'a>; W]) {
        self.rows.push(row);
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// [`Rows::run`] for statements that return nothing.
    pub(crate) fn execute(
        &self,
        conn: &Connection,
        fixed: &[&dyn ToSql],
        statement: (&'static str, &'static str),
    ) -> StoreResult<usize> {
        self.run(conn, fixed, statement, |_| Ok(()), &mut ())
    }

    /// Runs `head` + a chunk's `VALUES` list + `tail` over every chunk of rows; the list's
    /// parameters are numbered after the `fixed` ones (`?1` to `?n` in the statement). Adds what
    /// `row` reads of each row the statements return to `out`; returns the rows they changed.
    pub(crate) fn run<T>(
        &self,
        conn: &Connection,
        fixed: &[&dyn ToSql],
        (head, tail): (&'static str, &'static str),
        mut row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
        out: &mut impl Extend<T>,
    ) -> StoreResult<usize> {
        let mut changed = 0;
        let mut rest = &self.rows[..];
        while !rest.is_empty() {
            let take = if rest.len() >= CHUNK {
                CHUNK
            } else {
                1 << rest.len().ilog2()
            };
            let (chunk, after) = rest.split_at(take);
            rest = after;
            let sql = STATEMENTS.with_borrow_mut(|statements| {
                statements
                    .entry([
                        head.as_ptr() as usize,
                        head.len(),
                        tail.as_ptr() as usize,
                        tail.len(),
                        take,
                        fixed.len(),
                    ])
                    .or_insert_with(|| {
                        let values = values(W, take, fixed.len() + 1);
                        Rc::from(format!("{head}{values}{tail}"))
                    })
                    .clone()
            });
            let mut prepared = conn.prepare_cached(&sql).map_err(map_sql)?;
            let values = chunk.iter().flatten().map(|cell| cell as &dyn ToSql);
            for (index, value) in fixed.iter().copied().chain(values).enumerate() {
                prepared
                    .raw_bind_parameter(index + 1, value)
                    .map_err(map_sql)?;
            }
            let mut returned = prepared.raw_query();
            while let Some(found) = returned.next().map_err(map_sql)? {
                out.extend([row(found).map_err(map_sql)?]);
            }
            changed += usize::try_from(conn.changes()).unwrap_or(0);
        }
        Ok(changed)
    }
}

pub(crate) fn text(value: &str) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(ValueRef::Text(value.as_bytes()))
}

pub(crate) fn opt_text(value: Option<&str>) -> ToSqlOutput<'_> {
    value.map_or(NULL, text)
}

pub(crate) fn int(value: i64) -> ToSqlOutput<'static> {
    ToSqlOutput::Borrowed(ValueRef::Integer(value))
}

pub(crate) fn opt_int(value: Option<i64>) -> ToSqlOutput<'static> {
    value.map_or(NULL, int)
}

pub(crate) const NULL: ToSqlOutput<'static> = ToSqlOutput::Borrowed(ValueRef::Null);

/// `(?first, …), (…)`: `rows` rows of `width` parameters.
fn values(width: usize, rows: usize, first: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 6);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", first + r * width + c));
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    static HEAD: &str =
        "INSERT INTO t (n, label, note, tag) SELECT column1, column2, column3, ?1 FROM (VALUES ";

    /// Every row of a batch goes in once, in order, whatever its size against the chunks
    /// (powers of two up to 64), and what the statements return is collected from every chunk.
    #[test]
    fn rows_run_in_chunks_of_every_size() {
        let conn = Connection::open_in_memory().expect("in-memory database");
        conn.execute_batch("CREATE TABLE t (n INTEGER, label TEXT, note TEXT, tag TEXT)")
            .expect("table");
        for count in [1usize, 2, 3, 7, 63, 64, 65, 127, 128, 130, 200] {
            conn.execute("DELETE FROM t", []).expect("emptied");
            let labels: Vec<String> = (0..count).map(|n| format!("row {n}")).collect();
            let mut rows = Rows::with_capacity(count);
            for (n, label) in labels.iter().enumerate() {
                let note = (n % 2 == 0).then_some("even");
                rows.push([int(n as i64), text(label), opt_text(note)]);
            }
            assert_eq!(rows.len(), count);
            let mut returned = Vec::new();
            let changed = rows
                .run(
                    &conn,
                    &[&"fixed"],
                    (HEAD, ") RETURNING n"),
                    |row| row.get::<_, i64>(0),
                    &mut returned,
                )
                .expect("inserted");
            assert_eq!(changed, count, "rows changed for {count}");
            assert_eq!(returned, (0..count as i64).collect::<Vec<_>>());
            let stored: Vec<(i64, String, Option<String>, String)> = conn
                .prepare("SELECT n, label, note, tag FROM t ORDER BY rowid")
                .expect("query")
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("read");
            let expected: Vec<(i64, String, Option<String>, String)> = (0..count)
                .map(|n| {
                    let note = (n % 2 == 0).then(|| "even".to_owned());
                    (n as i64, format!("row {n}"), note, "fixed".to_owned())
                })
                .collect();
            assert_eq!(stored, expected, "stored rows for {count}");
        }

        // The same head with another tail is another statement.
        let mut rows = Rows::with_capacity(2);
        rows.push([int(1), text("a"), NULL]);
        rows.push([int(2), text("b"), NULL]);
        let mut returned: Vec<i64> = Vec::new();
        let changed = rows
            .run(
                &conn,
                &[&"other"],
                (HEAD, ")"),
                |row| row.get::<_, i64>(0),
                &mut returned,
            )
            .expect("inserted");
        assert_eq!((changed, returned), (2, Vec::new()));
    }

    #[test]
    fn packed_texts_are_bound_as_written() {
        let mut packed = Packed::with_capacity(16);
        let first = packed.push_json(&["a", "b"]).expect("json");
        let second = packed
            .push_json(&serde_json::json!({"k": 1}))
            .expect("json");
        let as_text = |span| match packed.text(span) {
            ToSqlOutput::Borrowed(ValueRef::Text(bytes)) => String::from_utf8(bytes.to_vec()).ok(),
            _ => None,
        };
        assert_eq!(as_text(first).as_deref(), Some(r#"["a","b"]"#));
        assert_eq!(as_text(second).as_deref(), Some(r#"{"k":1}"#));
    }
}
