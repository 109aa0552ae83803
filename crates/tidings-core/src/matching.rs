//! Which webhooks receive an event: event types, scope filters and the workspace's level precedence.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{self, Data};
use crate::webhook::Filters;

/// The event type whose `category_ids` filter applies (SPEC section 2).
pub const CATEGORY_EVENT_TYPE: &str = "lead.category_updated.v1";

/// The scope attributes an event carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventScope {
    pub campaign_id: Option<String>,
    pub client_id: Option<String>,
    pub agent_id: Option<String>,
    pub category_id: Option<String>,
}

impl EventScope {
    /// Fills attributes the publisher left out from top-level fields of `data` of the same name, so
    /// that `{"data": {"campaign_id": "c1", ...}}` is scoped like an explicit `campaign_id`.
    pub fn completed_from(self, data: &Value) -> Self {
        self.completed_with(|key| match data.get(key) {
            Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        })
    }

    /// [`EventScope::completed_from`] for data as the publish path parses it.
    pub fn completed_from_data(self, data: &Data<'_>) -> Self {
        self.completed_with(|key| match data::member(data, key) {
            Some(Data::Str(text)) if !text.is_empty() => Some(text.to_string()),
            Some(Data::Number(number)) => Some(data::number_text(number)),
            _ => None,
        })
    }

    fn completed_with(mut self, from_data: impl Fn(&str) -> Option<String>) -> Self {
        self.campaign_id = self.campaign_id.or_else(|| from_data("campaign_id"));
        self.client_id = self.client_id.or_else(|| from_data("client_id"));
        self.agent_id = self.agent_id.or_else(|| from_data("agent_id"));
        self.category_id = self.category_id.or_else(|| from_data("category_id"));
        self
    }
}

/// How broad a webhook's subscription is; broader levels order first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Workspace,
    Client,
    Campaign,
}

/// A webhook's level: `campaign` if it filters on campaigns, else `client` if on clients, else `workspace`.
pub fn level(filters: &Filters) -> Level {
    if !filters.campaign_ids.is_empty() {
        Level::Campaign
    } else if !filters.client_ids.is_empty() {
        Level::Client
    } else {
        Level::Workspace
    }
}

/// The workspace setting that decides whether narrower webhooks also receive an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LevelPrecedence {
    /// Every matching webhook receives the event.
    #[default]
    All,
    /// When a matching webhook exists at a broader level, narrower ones are skipped for that event.
    Broadest,
}

impl LevelPrecedence {
    pub fn as_str(self) -> &'static str {
        match self {
            LevelPrecedence::All => "all",
            LevelPrecedence::Broadest => "broadest",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "all" => Some(LevelPrecedence::All),
            "broadest" => Some(LevelPrecedence::Broadest),
            _ => None,
        }
    }
}

/// An empty list matches everything; otherwise the event must carry a listed value.
fn list_matches(list: &[String], value: Option<&String>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.contains(v))
}

/// Whether a webhook with these event types and filters wants this event.
/// `category_ids` only constrains `lead.category_updated.v1`; `agent_ids` only constrains events that
/// carry an `agent_id`; campaign and client filters do not match events lacking the attribute.
pub fn matches(
    event_types: &[String],
    filters: &Filters,
    event_type: &str,
    scope: &EventScope,
) -> bool {
    event_types.iter().any(|t| t == event_type)
        && list_matches(&filters.campaign_ids, scope.campaign_id.as_ref())
        && list_matches(&filters.client_ids, scope.client_id.as_ref())
        && (scope.agent_id.is_none() || list_matches(&filters.agent_ids, scope.agent_id.as_ref()))
        && (event_type != CATEGORY_EVENT_TYPE
            || list_matches(&filters.category_ids, scope.category_id.as_ref()))
}

/// Of the webhooks that match an event, the ones that receive it under `precedence`.
/// `matching` holds each matching webhook's level; returns a keep/skip flag per entry.
pub fn apply_precedence(matching: &[Level], precedence: LevelPrecedence) -> Vec<bool> {
    match precedence {
        LevelPrecedence::All => vec![true; matching.len()],
        LevelPrecedence::Broadest => {
            let broadest = matching.iter().min().copied();
            matching
                .iter()
                .map(|level| Some(*level) == broadest)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn scope(
        campaign: Option<&str>,
        client: Option<&str>,
        agent: Option<&str>,
        category: Option<&str>,
    ) -> EventScope {
        EventScope {
            campaign_id: campaign.map(Into::into),
            client_id: client.map(Into::into),
            agent_id: agent.map(Into::into),
            category_id: category.map(Into::into),
        }
    }

    fn check(filters: Filters, event_type: &str, scope: EventScope, expected: bool) {
        let types = ids(&[
            "email.sent.v1",
            CATEGORY_EVENT_TYPE,
            "linkedin.invitation_sent.v1",
        ]);
        assert_eq!(
            matches(&types, &filters, event_type, &scope),
            expected,
            "{filters:?} {event_type} {scope:?}"
        );
    }

    #[test]
    fn event_type_must_be_subscribed() {
        check(
            Filters::default(),
            "email.sent.v1",
            EventScope::default(),
            true,
        );
        check(
            Filters::default(),
            "email.opened.v1",
            EventScope::default(),
            false,
        );
    }

    #[test]
    fn campaign_and_client_filters() {
        let campaigns = Filters {
            campaign_ids: ids(&["c1", "c2"]),
            ..Filters::default()
        };
        check(
            campaigns.clone(),
            "email.sent.v1",
            scope(Some("c2"), None, None, None),
            true,
        );
        check(
            campaigns.clone(),
            "email.sent.v1",
            scope(Some("c3"), None, None, None),
            false,
        );
        check(
            campaigns,
            "email.sent.v1",
            scope(None, None, None, None),
            false,
        );
        let clients = Filters {
            client_ids: ids(&["k1"]),
            ..Filters::default()
        };
        check(
            clients.clone(),
            "email.sent.v1",
            scope(None, Some("k1"), None, None),
            true,
        );
        check(
            clients,
            "email.sent.v1",
            scope(None, None, None, None),
            false,
        );
    }

    #[test]
    fn agent_filter_applies_only_to_events_with_an_agent() {
        let agents = Filters {
            agent_ids: ids(&["a1"]),
            ..Filters::default()
        };
        check(
            agents.clone(),
            "linkedin.invitation_sent.v1",
            scope(None, None, Some("a1"), None),
            true,
        );
        check(
            agents.clone(),
            "linkedin.invitation_sent.v1",
            scope(None, None, Some("a2"), None),
            false,
        );
        check(agents, "email.sent.v1", scope(None, None, None, None), true);
    }

    #[test]
    fn category_filter_applies_only_to_category_updates() {
        let categories = Filters {
            category_ids: ids(&["interested"]),
            ..Filters::default()
        };
        check(
            categories.clone(),
            CATEGORY_EVENT_TYPE,
            scope(None, None, None, Some("interested")),
            true,
        );
        check(
            categories.clone(),
            CATEGORY_EVENT_TYPE,
            scope(None, None, None, Some("not_interested")),
            false,
        );
        check(
            categories.clone(),
            CATEGORY_EVENT_TYPE,
            scope(None, None, None, None),
            false,
        );
        check(
            categories,
            "email.sent.v1",
            scope(None, None, None, Some("other")),
            true,
        );
    }

    #[test]
    fn scope_is_completed_from_data() {
        let data = serde_json::json!({"campaign_id": "c9", "client_id": 42, "agent_id": ""});
        let completed = scope(None, Some("k1"), None, None).completed_from(&data);
        assert_eq!(completed, scope(Some("c9"), Some("k1"), None, None));
    }

    #[test]
    fn scope_is_completed_alike_from_parsed_data() {
        let text = r#"{"campaign_id": "c9", "client_id": 42, "agent_id": "", "category_id": 1.5}"#;
        let value: Value = serde_json::from_str(text).expect("json");
        let parsed = crate::data::parse(text).expect("json");
        let from_value = scope(None, None, None, None).completed_from(&value);
        let from_parsed = scope(None, None, None, None).completed_from_data(&parsed);
        assert_eq!(from_parsed, from_value);
        assert_eq!(
            from_parsed,
            scope(Some("c9"), Some("42"), None, Some("1.5"))
        );
        let repeated =
            crate::data::parse(r#"{"campaign_id": "a", "campaign_id": "b"}"#).expect("json");
        assert_eq!(
            scope(None, None, None, None).completed_from_data(&repeated),
            scope(Some("b"), None, None, None)
        );
    }

    #[test]
    fn levels_and_precedence() {
        assert_eq!(level(&Filters::default()), Level::Workspace);
        assert_eq!(
            level(&Filters {
                client_ids: ids(&["k"]),
                ..Filters::default()
            }),
            Level::Client
        );
        assert_eq!(
            level(&Filters {
                client_ids: ids(&["k"]),
                campaign_ids: ids(&["c"]),
                ..Filters::default()
            }),
            Level::Campaign
        );
        let found = [Level::Campaign, Level::Client, Level::Client];
        assert_eq!(
            apply_precedence(&found, LevelPrecedence::All),
            vec![true, true, true]
        );
        assert_eq!(
            apply_precedence(&found, LevelPrecedence::Broadest),
            vec![false, true, true]
        );
        assert_eq!(
            apply_precedence(&[Level::Campaign], LevelPrecedence::Broadest),
            vec![true]
        );
        assert_eq!(
            apply_precedence(&[], LevelPrecedence::Broadest),
            Vec::<bool>::new()
        );
    }
}
