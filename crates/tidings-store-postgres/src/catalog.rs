//! Custom event types.

use sqlx::PgPool;
use tidings_core::UnixMillis;
use tidings_core::catalog::EventTypeDef;
use tidings_store::StoreResult;

use crate::map_err;

pub async fn list(pool: &PgPool) -> StoreResult<Vec<EventTypeDef>> {
    let rows = sqlx::query(
        "SELECT name, description, type_group, schema, example FROM event_types ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    rows.iter().map(crate::rows::event_type).collect()
}

pub async fn put(pool: &PgPool, def: &EventTypeDef, at: UnixMillis) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO event_types (name, description, type_group, schema, example, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, type_group = EXCLUDED.type_group,
             schema = EXCLUDED.schema, example = EXCLUDED.example, updated_at = EXCLUDED.updated_at",
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
