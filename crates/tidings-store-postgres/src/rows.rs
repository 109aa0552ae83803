//! Conversions between PostgreSQL rows and store records.

use sqlx::Row;
use sqlx::postgres::PgRow;
use tidings_core::matching::{EventScope, LevelPrecedence};
use tidings_core::outcome::ErrorKind;
use tidings_core::webhook::WebhookState;
use tidings_store::*;

use crate::map_err;

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Internal(format!("stored {what} `{value}` is not valid"))
}

pub fn workspace(row: &PgRow) -> StoreResult<Workspace> {
    let precedence: String = row.try_get("level_precedence").map_err(map_err)?;
    Ok(Workspace {
        id: row.try_get("id").map_err(map_err)?,
        name: row.try_get("name").map_err(map_err)?,
        level_precedence: LevelPrecedence::parse(&precedence)
            .ok_or_else(|| corrupt("level precedence", &precedence))?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
    })
}

pub fn api_key(row: &PgRow) -> StoreResult<ApiKey> {
    let scope: String = row.try_get("scope").map_err(map_err)?;
    Ok(ApiKey {
        id: row.try_get("id").map_err(map_err)?,
        scope: match scope.as_str() {
            "operator" => KeyScope::Operator,
            "workspace" => KeyScope::Workspace,
            _ => return Err(corrupt("key scope", &scope)),
        },
        workspace_id: row.try_get("workspace_id").map_err(map_err)?,
        name: row.try_get("name").map_err(map_err)?,
        secret_hash: row.try_get("secret_hash").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        revoked_at: row.try_get("revoked_at").map_err(map_err)?,
    })
}

pub fn webhook(row: &PgRow) -> StoreResult<Webhook> {
    let spec: String = row.try_get("spec").map_err(map_err)?;
    let state: String = row.try_get("state").map_err(map_err)?;
    Ok(Webhook {
        id: row.try_get("id").map_err(map_err)?,
        workspace_id: row.try_get("workspace_id").map_err(map_err)?,
        spec: serde_json::from_str(&spec)
            .map_err(|e| StoreError::Internal(format!("stored webhook is not valid: {e}")))?,
        secret: row.try_get("secret").map_err(map_err)?,
        previous_secret: {
            let secret: Option<String> = row.try_get("previous_secret").map_err(map_err)?;
            let until: Option<i64> = row.try_get("previous_secret_until").map_err(map_err)?;
            secret.zip(until)
        },
        state: WebhookState::parse(&state).ok_or_else(|| corrupt("webhook state", &state))?,
        disabled_reason: row.try_get("disabled_reason").map_err(map_err)?,
        health: WebhookHealth {
            failing_since: row.try_get("failing_since").map_err(map_err)?,
            failures_since_success: {
                let count: i64 = row.try_get("failures_since_success").map_err(map_err)?;
                u32::try_from(count).unwrap_or(u32::MAX)
            },
            last_success_at: row.try_get("last_success_at").map_err(map_err)?,
            last_failure_at: row.try_get("last_failure_at").map_err(map_err)?,
            last_failure_reason: row.try_get("last_failure_reason").map_err(map_err)?,
        },
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
    })
}

pub fn event(row: &PgRow) -> StoreResult<Event> {
    Ok(Event {
        id: row.try_get("id").map_err(map_err)?,
        workspace_id: row.try_get("workspace_id").map_err(map_err)?,
        event_type: row.try_get("event_type").map_err(map_err)?,
        occurred_at: row.try_get("occurred_at").map_err(map_err)?,
        received_at: row.try_get("received_at").map_err(map_err)?,
        data: row.try_get("data").map_err(map_err)?,
        scope: EventScope {
            campaign_id: row.try_get("campaign_id").map_err(map_err)?,
            client_id: row.try_get("client_id").map_err(map_err)?,
            agent_id: row.try_get("agent_id").map_err(map_err)?,
            category_id: row.try_get("category_id").map_err(map_err)?,
        },
        idempotency_key: row.try_get("idempotency_key").map_err(map_err)?,
    })
}

fn error_kind(row: &PgRow, column: &str) -> StoreResult<Option<ErrorKind>> {
    let text: Option<String> = row.try_get(column).map_err(map_err)?;
    text.map(|t| ErrorKind::parse(&t).ok_or_else(|| corrupt("error kind", &t)))
        .transpose()
}

fn status_code(row: &PgRow, column: &str) -> StoreResult<Option<u16>> {
    let code: Option<i64> = row.try_get(column).map_err(map_err)?;
    Ok(code.and_then(|c| u16::try_from(c).ok()))
}

pub fn delivery(row: &PgRow) -> StoreResult<Delivery> {
    let status: String = row.try_get("status").map_err(map_err)?;
    let status =
        DeliveryStatus::parse(&status).ok_or_else(|| corrupt("delivery status", &status))?;
    let attempts: i64 = row.try_get("attempts").map_err(map_err)?;
    let next: Option<i64> = row.try_get("next_attempt_at").map_err(map_err)?;
    Ok(Delivery {
        id: row.try_get("id").map_err(map_err)?,
        workspace_id: row.try_get("workspace_id").map_err(map_err)?,
        event_id: row.try_get("event_id").map_err(map_err)?,
        webhook_id: row.try_get("webhook_id").map_err(map_err)?,
        event_type: row.try_get("event_type").map_err(map_err)?,
        status,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: if status == DeliveryStatus::Pending {
            next
        } else {
            None
        },
        last_status_code: status_code(row, "last_status_code")?,
        last_error_kind: error_kind(row, "last_error_kind")?,
        is_test: row.try_get("is_test").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
    })
}

pub fn attempt(row: &PgRow) -> StoreResult<Attempt> {
    let number: i64 = row.try_get("number").map_err(map_err)?;
    let request_headers: String = row.try_get("request_headers").map_err(map_err)?;
    let response_headers: String = row.try_get("response_headers").map_err(map_err)?;
    Ok(Attempt {
        number: u32::try_from(number).unwrap_or(0),
        record: AttemptRecord {
            started_at: row.try_get("started_at").map_err(map_err)?,
            duration_ms: row.try_get("duration_ms").map_err(map_err)?,
            status_code: status_code(row, "status_code")?,
            error_kind: error_kind(row, "error_kind")?,
            error_message: row.try_get("error_message").map_err(map_err)?,
            response_excerpt: row.try_get("response_excerpt").map_err(map_err)?,
            request_headers: serde_json::from_str(&request_headers).unwrap_or_default(),
            response_headers: serde_json::from_str(&response_headers).unwrap_or_default(),
        },
    })
}
