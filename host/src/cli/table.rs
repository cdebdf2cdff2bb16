//! Output for people: aligned tables ([`Table`]), aligned `key: value` lines
//! ([`print_fields`]), and the text of JSON values ([`text`], [`time`]).
//!
//! A small formatter rather than a table crate: the output is plain columns separated
//! by two spaces, with no borders, colours or wrapping to the terminal's width, so it
//! reads the same on a terminal, in a pipe (`| grep`, `| awk '{print $1}'`) and in a
//! test, and the last column (often free text) is never padded.

use std::io;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::output::{errln, outln};

/// An aligned table: a header row, then one row per item.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as the header has titles).
    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.header.len());
        self.rows.push(row);
    }

    /// Prints the table on stdout; with no rows, prints `empty` on stderr instead, so
    /// a script counting lines counts none.
    pub fn print(&self, empty: &str) -> io::Result<()> {
        if self.rows.is_empty() {
            errln!("{empty}");
            return Ok(());
        }
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = width - cell.chars().count();
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            outln!("{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Prints `key: value` lines with the values aligned; a value of several lines stays
/// in the value column.
pub fn print_fields(lines: &[(&str, String)]) -> io::Result<()> {
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    for (key, value) in lines {
        let value = value.replace('\n', &format!("\n{:width$} ", ""));
        outln!("{:<width$} {value}", format!("{key}:"))?;
    }
    Ok(())
}

/// A JSON string's text, `-` for null, or any other value as JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A time to the second (`2026-01-31T09:00:00Z`), `-` for null.
pub fn time(value: &Value) -> String {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(
            || text(value),
            |t| {
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::Secs, true)
            },
        )
}

/// The items of a page (`{"items": [...]}`).
pub fn items(page: &Value) -> &[Value] {
    page["items"].as_array().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_shows_strings_bare_and_null_as_a_dash() {
        assert_eq!(text(&json!("a b")), "a b");
        assert_eq!(text(&Value::Null), "-");
        assert_eq!(text(&json!(12)), "12");
        assert_eq!(text(&json!({"a": 1})), r#"{"a":1}"#);
    }

    #[test]
    fn a_time_is_shown_to_the_second_in_utc() {
        assert_eq!(
            time(&json!("2026-01-31T10:00:00.123456+01:00")),
            "2026-01-31T09:00:00Z"
        );
        assert_eq!(time(&Value::Null), "-");
    }
}
