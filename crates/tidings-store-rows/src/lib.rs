//! Reading store records out of database rows. Both backends store times as unix milliseconds,
//! counts as integers and structured values as JSON text under the same column names, so one
//! decoding serves both; each backend's row type reads its typed columns through `Columns`.

use sqlx::{ColumnIndex, Decode, Row, Type};
use tidings_core::catalog::EventTypeDef;
use tidings_core::matching::{EventScope, LevelPrecedence};
use tidings_core::outcome::ErrorKind;
use tidings_core::webhook::WebhookState;
use tidings_store::*;

/// A row's columns by name, with the few types records are stored as.
pub trait Columns {
    fn text(&self, name: &str) -> StoreResult<String>;
    fn maybe_text(&self, name: &str) -> StoreResult<Option<String>>;
    fn int(&self, name: &str) -> StoreResult<i64>;
    fn maybe_int(&self, name: &str) -> StoreResult<Option<i64>>;
    fn flag(&self, name: &str) -> StoreResult<bool>;
    fn bytes(&self, name: &str) -> StoreResult<Vec<u8>>;
}

impl<R> Columns for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, name: &str) -> StoreResult<String> {
        self.try_get(name).map_err(unreadable)
    }
    fn maybe_text(&self, name: &str) -> StoreResult<Option<String>> {
        self.try_get(name).map_err(unreadable)
    }
    fn int(&self, name: &str) -> StoreResult<i64> {
        self.try_get(name).map_err(unreadable)
    }
    fn maybe_int(&self, name: &str) -> StoreResult<Option<i64>> {
        self.try_get(name).map_err(unreadable)
    }
    fn flag(&self, name: &str) -> StoreResult<bool> {
        self.try_get(name).map_err(unreadable)
    }
    fn bytes(&self, name: &str) -> StoreResult<Vec<u8>> {
        self.try_get(name).map_err(unreadable)
    }
}

/// A column missing or of another type: the schema and the code disagree.
fn unreadable(error: sqlx::Error) -> StoreError {
    StoreError::Internal(error.to_string())
}

pub fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Internal(format!("stored {what} `{value}` is not valid"))
}

pub fn workspace(row: &impl Columns) -> StoreResult<Workspace> {
    let precedence = row.text("level_precedence")?;
    Ok(Workspace {
        id: row.text("id")?,
        name: row.text("name")?,
        level_precedence: LevelPrecedence::parse(&precedence)
            .ok_or_else(|| corrupt("level precedence", &precedence))?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

pub fn api_key(row: &impl Columns) -> StoreResult<ApiKey> {
    let scope = row.text("scope")?;
    Ok(ApiKey {
        id: row.text("id")?,
        scope: match scope.as_str() {
            "operator" => KeyScope::Operator,
            "workspace" => KeyScope::Workspace,
            _ => return Err(corrupt("key scope", &scope)),
        },
        workspace_id: row.maybe_text("workspace_id")?,
        name: row.text("name")?,
        secret_hash: row.bytes("secret_hash")?,
        created_at: row.int("created_at")?,
        revoked_at: row.maybe_int("revoked_at")?,
    })
}

pub fn webhook(row: &impl Columns) -> StoreResult<Webhook> {
    let spec = row.text("spec")?;
    let state = row.text("state")?;
    Ok(Webhook {
        id: row.text("id")?,
        workspace_id: row.text("workspace_id")?,
        spec: serde_json::from_str(&spec)
            .map_err(|e| StoreError::Internal(format!("stored webhook is not valid: {e}")))?,
        secret: row.text("secret")?,
        previous_secret: {
            let secret = row.maybe_text("previous_secret")?;
            let until = row.maybe_int("previous_secret_until")?;
            secret.zip(until)
        },
        state: WebhookState::parse(&state).ok_or_else(|| corrupt("webhook state", &state))?,
        disabled_reason: row.maybe_text("disabled_reason")?,
        health: WebhookHealth {
            failing_since: row.maybe_int("failing_since")?,
            failures_since_success: {
                let count = row.int("failures_since_success")?;
                u32::try_from(count).unwrap_or(u32::MAX)
            },
            last_success_at: row.maybe_int("last_success_at")?,
            last_failure_at: row.maybe_int("last_failure_at")?,
            last_failure_reason: row.maybe_text("last_failure_reason")?,
        },
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

pub fn event(row: &impl Columns) -> StoreResult<Event> {
    Ok(Event {
        id: row.text("id")?,
        workspace_id: row.text("workspace_id")?,
        event_type: row.text("event_type")?,
        occurred_at: row.int("occurred_at")?,
        received_at: row.int("received_at")?,
        data: row.text("data")?,
        scope: EventScope {
            campaign_id: row.maybe_text("campaign_id")?,
            client_id: row.maybe_text("client_id")?,
            agent_id: row.maybe_text("agent_id")?,
            category_id: row.maybe_text("category_id")?,
        },
        idempotency_key: row.maybe_text("idempotency_key")?,
    })
}

fn error_kind(row: &impl Columns, column: &str) -> StoreResult<Option<ErrorKind>> {
    let text = row.maybe_text(column)?;
    text.map(|t| ErrorKind::parse(&t).ok_or_else(|| corrupt("error kind", &t)))
        .transpose()
}

fn status_code(row: &impl Columns, column: &str) -> StoreResult<Option<u16>> {
    let code = row.maybe_int(column)?;
    Ok(code.and_then(|c| u16::try_from(c).ok()))
}

pub fn delivery(row: &impl Columns) -> StoreResult<Delivery> {
    let status = row.text("status")?;
    let status =
        DeliveryStatus::parse(&status).ok_or_else(|| corrupt("delivery status", &status))?;
    let attempts = row.int("attempts")?;
    let next = row.maybe_int("next_attempt_at")?;
    Ok(Delivery {
        id: row.text("id")?,
        workspace_id: row.text("workspace_id")?,
        event_id: row.text("event_id")?,
        webhook_id: row.text("webhook_id")?,
        event_type: row.text("event_type")?,
        status,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: if status == DeliveryStatus::Pending {
            next
        } else {
            None
        },
        last_status_code: status_code(row, "last_status_code")?,
        last_error_kind: error_kind(row, "last_error_kind")?,
        is_test: row.flag("is_test")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

pub fn attempt(row: &impl Columns) -> StoreResult<Attempt> {
    let number = row.int("number")?;
    let request_headers = row.text("request_headers")?;
    let response_headers = row.text("response_headers")?;
    Ok(Attempt {
        number: u32::try_from(number).unwrap_or(0),
        record: AttemptRecord {
            started_at: row.int("started_at")?,
            duration_ms: row.int("duration_ms")?,
            status_code: status_code(row, "status_code")?,
            error_kind: error_kind(row, "error_kind")?,
            error_message: row.maybe_text("error_message")?,
            response_excerpt: row.maybe_text("response_excerpt")?,
            request_headers: serde_json::from_str(&request_headers).unwrap_or_default(),
            response_headers: serde_json::from_str(&response_headers).unwrap_or_default(),
        },
    })
}

pub fn event_type(row: &impl Columns) -> StoreResult<EventTypeDef> {
    let parse = |column: &str| -> StoreResult<Option<serde_json::Value>> {
        row.maybe_text(column)?
            .map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Internal(e.to_string())))
            .transpose()
    };
    Ok(EventTypeDef {
        name: row.text("name")?,
        description: row.text("description")?,
        group: row.text("type_group")?,
        schema: parse("schema")?,
        example: parse("example")?,
    })
}
