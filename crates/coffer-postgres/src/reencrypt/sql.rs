//! The SQL the job runs, and the conversions between rows and canonical bytes.

use std::fmt::Write as _;

use coffer_core::field::text;
use coffer_core::{KeyVersion, ValueType};
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use crate::error::Result;
use crate::schema::{Column, Storage, TableInner, ident};
use crate::value::canonical_json;

/// Which rows a job covers.
#[derive(Clone, Debug)]
pub(super) enum Mode {
    /// A table with a fixed scope: every row.
    Fixed,
    /// A templated table resolved to one scope: the rows whose placeholder columns hold these
    /// values (in the template's placeholder order).
    One(Vec<String>),
    /// A templated table: every scope its rows spell.
    Walk,
}

/// The batch statements of one table.
pub(super) struct Statements {
    /// `$1` version, `$2` limit, `$3..` one `text[]` per placeholder (rows whose placeholder
    /// tuple is among them), no cursor.
    pub select_first: String,
    /// As `select_first`, with the keyset cursor as the last parameter.
    pub select_after: String,
    pub update: String,
    /// Where the SELECT's columns start: placeholders, then the row key, then the columns.
    pub at_placeholders: usize,
    pub at_row_key: usize,
    pub at_columns: usize,
}

/// The placeholder columns, quoted and qualified with `t.`, as text.
pub(super) fn placeholder_exprs(t: &TableInner) -> Result<Vec<String>> {
    t.scope
        .placeholders()
        .into_iter()
        .map(|p| Ok(format!("t.{}::text", ident(p, "scope placeholder")?)))
        .collect()
}

/// `AND <the row's placeholder tuple is among the arrays from $first on>`; empty without
/// placeholders.
pub(super) fn tuple_filter(exprs: &[String], first: usize) -> String {
    match exprs.len() {
        0 => String::new(),
        1 => format!(" AND {} = ANY(${first}::text[])", exprs[0]),
        n => {
            let arrays: Vec<String> = (0..n).map(|i| format!("${}::text[]", first + i)).collect();
            format!(
                " AND ({}) IN (SELECT * FROM unnest({}))",
                exprs.join(", "),
                arrays.join(", ")
            )
        }
    }
}

/// The condition that makes a row pending under the active version `active` (an SQL
/// expression): its version column NULL (not migrated yet) or below. With per-row keys, a row
/// whose key was erased (row key NULL, version set) is never pending: its values are shredded
/// and stay as they are.
pub(super) fn pending_cond(t: &TableInner, active: &str) -> String {
    let v = format!("t.{}", t.version_sql);
    match &t.row_keys {
        None => format!("({v} IS NULL OR {v} < {active})"),
        Some((_, rk)) => format!("({v} IS NULL OR ({v} < {active} AND t.{rk} IS NOT NULL))"),
    }
}

/// The condition of a row whose key was erased (`FALSE` without per-row keys).
pub(super) fn erased_cond(t: &TableInner) -> String {
    match &t.row_keys {
        None => "FALSE".into(),
        Some((_, rk)) => format!("(t.{rk} IS NULL AND t.{} IS NOT NULL)", t.version_sql),
    }
}

pub(super) fn statements(
    t: &TableInner,
    placeholders: &[String],
    row_type: &str,
    clear_plaintext: bool,
) -> Statements {
    // Every reference is qualified with the alias `t`: an unqualified ORDER BY would sort by
    // the text output column of the same name.
    let mut select = format!("SELECT t.{}::text AS coffer_row_id", t.row_id_sql);
    let at_placeholders = 1;
    for p in placeholders {
        let _ = write!(select, ", {p}");
    }
    let at_row_key = at_placeholders + placeholders.len();
    let mut at_columns = at_row_key;
    if let Some((_, rk)) = &t.row_keys {
        let _ = write!(select, ", t.{rk}");
        at_columns += 1;
    }
    for c in &t.columns {
        let _ = write!(select, ", t.{}", c.sql);
        if let Some((_, src)) = &c.migrate_from {
            let _ = write!(
                select,
                ", {}",
                source_expr(&format!("t.{src}"), c.value_type)
            );
        }
    }
    let _ = write!(
        select,
        " FROM {} AS t WHERE {}{}",
        t.sql,
        pending_cond(t, "$1"),
        tuple_filter(placeholders, 3)
    );
    let tail = format!(
        " ORDER BY t.{} LIMIT $2 FOR UPDATE OF t SKIP LOCKED",
        t.row_id_sql
    );
    let select_first = format!("{select}{tail}");
    let select_after = format!(
        "{select} AND t.{} > CAST(${} AS {row_type}){tail}",
        t.row_id_sql,
        3 + placeholders.len()
    );

    let mut sets = Vec::new();
    let mut names = vec!["rid".to_owned()];
    let mut types = vec!["text[]".to_owned()];
    for (i, c) in t.columns.iter().enumerate() {
        sets.push(format!("{} = v.c{i}", c.sql));
        names.push(format!("c{i}"));
        types.push(match c.storage {
            Storage::Bytea => "bytea[]".into(),
            Storage::Text => "text[]".into(),
        });
        if clear_plaintext && let Some((_, src)) = &c.migrate_from {
            sets.push(format!("{src} = NULL"));
        }
    }
    for (i, ix) in t.indexes.iter().enumerate() {
        names.push(format!("i{i}"));
        if ix.prefix.is_some() {
            sets.push(format!("{} = v.i{i}::bytea[]", ix.sql));
            types.push("text[]".into());
        } else {
            sets.push(format!("{} = v.i{i}", ix.sql));
            types.push("bytea[]".into());
        }
    }
    if let Some((_, rk)) = &t.row_keys {
        sets.push(format!("{rk} = v.rk"));
        names.push("rk".into());
        types.push("bytea[]".into());
    }
    sets.push(format!("{} = v.ver", t.version_sql));
    names.push("ver".into());
    types.push("int4[]".into());
    let params: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::{ty}", i + 1))
        .collect();
    let update = format!(
        "UPDATE {table} AS t SET {sets} FROM unnest({params}) AS v({names}) \
         WHERE t.{rid} = CAST(v.rid AS {row_type})",
        table = t.sql,
        sets = sets.join(", "),
        params = params.join(", "),
        names = names.join(", "),
        rid = t.row_id_sql,
    );
    Statements {
        select_first,
        select_after,
        update,
        at_placeholders,
        at_row_key,
        at_columns,
    }
}

pub(super) fn version_i32(v: KeyVersion) -> i32 {
    i32::try_from(v.0).unwrap_or(i32::MAX)
}

/// The SELECT expression that reads a plaintext source column in a form that converts to
/// the canonical encoding without loss.
fn source_expr(src: &str, t: ValueType) -> String {
    match t {
        ValueType::Text | ValueType::Json => format!("{src}::text"),
        ValueType::Int64 => format!("{src}::int8"),
        ValueType::Bool => format!("{src}::bool"),
        ValueType::Date => format!("({src}::date - DATE '1970-01-01')::int4"),
        ValueType::Timestamp => {
            format!("floor(extract(epoch FROM {src}::timestamptz) * 1000000)::int8")
        }
        ValueType::Uuid => format!("{src}::uuid::text"),
        _ => format!("{src}::bytea"),
    }
}

pub(super) fn read_source(row: &PgRow, at: usize, t: ValueType) -> Result<Option<Vec<u8>>, String> {
    let e = |e: sqlx::Error| e.to_string();
    Ok(match t {
        ValueType::Text => row
            .try_get::<Option<String>, _>(at)
            .map_err(e)?
            .map(String::into_bytes),
        ValueType::Json => match row.try_get::<Option<String>, _>(at).map_err(e)? {
            Some(j) => Some(canonical_json(&j).map_err(|v| v.0)?),
            None => None,
        },
        ValueType::Int64 | ValueType::Timestamp => row
            .try_get::<Option<i64>, _>(at)
            .map_err(e)?
            .map(|v| v.to_be_bytes().to_vec()),
        ValueType::Bool => row
            .try_get::<Option<bool>, _>(at)
            .map_err(e)?
            .map(|b| vec![u8::from(b)]),
        ValueType::Date => row
            .try_get::<Option<i32>, _>(at)
            .map_err(e)?
            .map(|d| d.to_be_bytes().to_vec()),
        ValueType::Uuid => match row.try_get::<Option<String>, _>(at).map_err(e)? {
            Some(u) => Some(
                uuid::Uuid::parse_str(&u)
                    .map_err(|_| "not a UUID".to_owned())?
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        },
        _ => row.try_get::<Option<Vec<u8>>, _>(at).map_err(e)?,
    })
}

pub(super) fn read_cipher(row: &PgRow, at: usize, c: &Column) -> Result<Option<Vec<u8>>, String> {
    match c.storage {
        Storage::Bytea => row
            .try_get::<Option<Vec<u8>>, _>(at)
            .map_err(|e| e.to_string()),
        Storage::Text => match row
            .try_get::<Option<String>, _>(at)
            .map_err(|e| e.to_string())?
        {
            Some(s) => text::decode(&s).map(Some).map_err(|_| {
                "not a Coffer ciphertext (a plaintext written into an encrypted column?)".to_owned()
            }),
            None => Ok(None),
        },
    }
}

/// A PostgreSQL array literal of BYTEA values in hex form, cast with `::bytea[]`.
pub(super) fn array_literal(tokens: &[Vec<u8>]) -> String {
    let mut s = String::with_capacity(2 + tokens.len() * 20);
    s.push('{');
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("\"\\\\x");
        for b in t {
            let _ = write!(s, "{b:02x}");
        }
        s.push('"');
    }
    s.push('}');
    s
}
