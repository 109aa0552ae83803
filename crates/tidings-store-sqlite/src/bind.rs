//! Rows and lists bound to the hot path's statements as JSON (with long texts packed beside them),
//! and rows SQLite hands back folded into one JSON value.

use tidings_store::{StoreError, StoreResult};

fn encoding(error: serde_json::Error) -> StoreError {
    StoreError::Internal(format!("encoding rows: {error}"))
}

/// Rows bound as one JSON array, unpacked in SQL with `jsonb_each` (its rows come out as JSONB,
/// which `->>` reads without parsing text again).
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(rows: &T) -> StoreResult<String> {
    serde_json::to_string(rows).map_err(encoding)
}

/// Texts bound back to back as one BLOB beside a statement's JSON rows, instead of escaped inside
/// them (escaping by serde, then parsing and unescaping by SQLite, cost more than storing them).
/// A row names its text by where it starts (1-based, as `substr` counts) and its length in bytes;
/// the statement reads it with `CAST(substr(?, start, length) AS TEXT)`, which keeps the bytes (the
/// database is UTF-8, and so is every text).
pub(crate) struct Packed(Vec<u8>);

impl Packed {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self(Vec::with_capacity(bytes))
    }

    pub(crate) fn push(&mut self, text: &str) -> (usize, usize) {
        let start = self.0.len() + 1;
        self.0.extend_from_slice(text.as_bytes());
        (start, text.len())
    }

    /// Writes a value's JSON straight into the pack.
    pub(crate) fn push_json<T: serde::Serialize>(
        &mut self,
        value: &T,
    ) -> StoreResult<(usize, usize)> {
        let start = self.0.len() + 1;
        serde_json::to_writer(&mut self.0, value).map_err(encoding)?;
        Ok((start, self.0.len() + 1 - start))
    }

    pub(crate) fn into_blob(self) -> Vec<u8> {
        self.0
    }
}

/// Reads rows SQLite handed back folded into one JSON value (`json_group_array`).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(json: &str) -> StoreResult<T> {
    serde_json::from_str(json).map_err(|e| StoreError::Internal(format!("decoding rows: {e}")))
}
