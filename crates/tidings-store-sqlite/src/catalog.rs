//! Custom event types.

use sqlx::SqlitePool;
use tidings_core::UnixMillis;
use tidings_core::catalog::EventTypeDef;
use tidings_store::StoreResult;

use crate::map_err;

pub async fn list(pool: &SqlitePool) -> StoreResult<Vec<EventTypeDef>> {
    let rows = sqlx::query(
        "SELECT name, description, type_group, schema, example FROM event_types ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    rows.iter().map(crate::rows::event_type).collect()
}

pub async fn put(pool: &SqlitePool, def: &EventTypeDef, at: UnixMillis) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO event_types (name, description, type_group, schema, example, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET description = excluded.description, type_group = excluded.type_group,
             schema = excluded.schema, example = excluded.example, updated_at = excluded.updated_at",
    )
    .bind(&def.name)
    .bind(&def.description)
    .bind(&def.group)
    .bind(def.schema.as_ref().map(|v| v.to_string()))
    .bind(def.example.as_ref().map(|v| v.to_string()))
    .bind(at)
    .bind(at)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}
