//! Prefixed, time-sortable identifiers (`ws_`, `wh_`, `evt_`, `dlv_`, `tdk_`).
//!
//! An id is the prefix followed by the 32 lowercase hex digits of a UUIDv7, so ids of one kind sort
//! by creation time as plain strings, in SQL and in cursors alike.

use std::fmt;

/// The kinds of object that carry an id, each with its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Workspace,
    Webhook,
    Event,
    Delivery,
    ApiKey,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Workspace => "ws_",
            IdKind::Webhook => "wh_",
            IdKind::Event => "evt_",
            IdKind::Delivery => "dlv_",
            IdKind::ApiKey => "tdk_",
        }
    }
}

/// Makes a new id of the given kind.
pub fn new_id(kind: IdKind) -> String {
    // Two per published event: written into one allocation of the right size, not through `format!`.
    let mut hex = [0u8; uuid::fmt::Simple::LENGTH];
    let hex = uuid::Uuid::now_v7().simple().encode_lower(&mut hex);
    let mut id = String::with_capacity(kind.prefix().len() + hex.len());
    id.push_str(kind.prefix());
    id.push_str(hex);
    id
}

/// Whether `text` has the shape of an id of `kind`; used to reject garbage before it reaches storage.
pub fn is_id(kind: IdKind, text: &str) -> bool {
    text.strip_prefix(kind.prefix()).is_some_and(|rest| {
        rest.len() == 32
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A workspace id that has been checked for shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkspaceId(String);

impl WorkspaceId {
    pub fn parse(text: &str) -> Option<Self> {
        is_id(IdKind::Workspace, text).then(|| Self(text.to_owned()))
    }
    pub fn new() -> Self {
        Self(new_id(IdKind::Workspace))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for WorkspaceId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_prefix_and_sort_by_creation() {
        let first = new_id(IdKind::Event);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_id(IdKind::Event);
        assert!(is_id(IdKind::Event, &first));
        assert!(!is_id(IdKind::Webhook, &first));
        assert!(first < second);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "ws_",
            "ws_xyz",
            "wh_0123456789abcdef0123456789abcdef",
            "ws_0123456789ABCDEF0123456789abcdef",
        ] {
            assert!(WorkspaceId::parse(bad).is_none(), "{bad}");
        }
        assert!(WorkspaceId::parse("ws_0123456789abcdef0123456789abcdef").is_some());
    }
}
