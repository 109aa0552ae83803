//! Shapes shared by several resources: pages and times.

use serde::{Deserialize, Serialize};
use tidings_core::UnixMillis;
use tidings_store::Page;

use crate::error::{ApiError, ApiResult};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// `?limit=&cursor=` on list endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The store page, asking one extra item to learn whether another page follows.
    pub fn page(&self) -> ApiResult<(Page, u32)> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("The limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        if let Some(cursor) = &self.cursor
            && (cursor.len() > 64
                || !cursor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(ApiError::bad_request(
                "invalid_query",
                "cursor is not one this API returned",
            ));
        }
        Ok((
            Page {
                limit: limit + 1,
                after: self.cursor.clone(),
            },
            limit,
        ))
    }
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ListResponse<T> {
    /// Builds a page from `limit + 1` fetched items; `id` names the cursor of an item.
    pub fn from_fetched<S>(
        mut items: Vec<S>,
        limit: u32,
        id: impl Fn(&S) -> String,
        view: impl Fn(S) -> T,
    ) -> Self {
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = if more { items.last().map(&id) } else { None };
        Self {
            data: items.into_iter().map(view).collect(),
            next_cursor,
        }
    }
}

pub fn time(millis: UnixMillis) -> String {
    tidings_core::format_rfc3339(millis)
}

pub fn parse_time(field: &str, text: &str) -> ApiResult<UnixMillis> {
    tidings_core::parse_rfc3339(text).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("`{field}` must be an RFC 3339 time like 2026-11-22T10:00:00Z"),
        )
    })
}
