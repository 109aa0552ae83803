//! The store conformance suite: every story runs against each backend with the same assertions, so
//! SQLite and PostgreSQL keep one contract (the `Store` trait's doc comments).
//!
//! A story is an `async fn(Backend)`; it opens a store on the backend's fresh database (or several,
//! for the stories about nodes sharing one PostgreSQL database) and uses the trait only.
//! `sqlite::<story>` and `postgres::<story>` are the generated tests.

mod backends;
mod claims;
mod fixtures;
mod nodes;
mod ops;
mod outcomes;
mod publish;
mod reads;
mod tenants;

/// Generates one test per story and backend: `sqlite::<story>` for the stories of every backend,
/// `postgres::<story>` for those and the PostgreSQL-only ones.
macro_rules! stories {
    (
        every_backend: [$($module:ident :: $story:ident),* $(,)?],
        postgres_only: [$($pg_module:ident :: $pg_story:ident),* $(,)?],
    ) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    crate::$module::$story(crate::backends::Backend::sqlite()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    crate::$module::$story(crate::backends::Backend::postgres().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $pg_story() {
                    crate::$pg_module::$pg_story(crate::backends::Backend::postgres().await).await;
                }
            )*
        }
    };
}

stories! {
    every_backend: [
        tenants::workspaces_round_trip_page_update_and_delete,
        tenants::api_keys_create_list_and_revoke,
        tenants::custom_event_types_put_replace_and_list,
        tenants::webhooks_round_trip_page_update_and_delete,
        tenants::enable_webhook_resets_health_and_state,
        tenants::configuration_writes_go_through_while_publishes_stream,
        publish::publish_stores_event_and_deliveries_in_one_call,
        publish::publish_skips_deliveries_of_deleted_webhooks,
        publish::publish_into_a_deleted_workspace_fails_and_stores_nothing,
        publish::publish_with_idempotency_key_returns_the_first_event,
        publish::concurrent_publishes_with_one_key_store_one_event,
        publish::batch_publish_answers_each_event_in_order,
        publish::a_batch_keeps_each_body_byte_for_byte,
        publish::paused_webhook_holds_deliveries_until_resumed,
        publish::disabled_webhook_skips_new_deliveries_and_enable_releases_held_ones,
        publish::disabling_by_hand_holds_waiting_deliveries_until_enabled,
        claims::claim_due_respects_limit_exclusions_and_due_time,
        claims::claimed_delivery_carries_event_and_webhook,
        claims::deliveries_of_one_event_share_its_data_in_a_claim,
        claims::lease_expiry_hands_the_delivery_to_another_node,
        claims::a_lapsed_claim_of_a_paused_webhook_waits_for_its_resume,
        claims::renew_claims_pushes_the_lease_end,
        claims::release_makes_a_claimed_delivery_due_at_once,
        claims::release_all_claims_depends_on_who_owns_the_store,
        claims::claim_due_caps_live_claims_per_webhook,
        claims::settled_claims_do_not_count_against_the_cap,
        claims::a_lone_node_holds_more_and_a_second_shares_the_cap,
        claims::publish_and_release_wake_the_work_signal,
        claims::work_due_outside_full_lanes_is_claimed_at_once,
        claims::a_claim_past_every_active_webhook_finds_nothing,
        outcomes::record_outcomes_moves_deliveries_and_lists_attempts,
        outcomes::health_counts_failures_until_a_success,
        outcomes::auto_disable_follows_the_policy_and_notifies_once,
        outcomes::gone_disables_the_webhook_at_once,
        outcomes::failed_delivery_notifies_the_operator,
        outcomes::test_send_is_stored_finished_and_leaves_health_alone,
        outcomes::a_test_send_for_a_deleted_webhook_stores_nothing,
        outcomes::outcomes_of_deleted_webhooks_and_repeated_deliveries_are_dropped,
        outcomes::retry_recorded_after_a_pause_is_held,
        reads::list_deliveries_filters_and_pages_newest_first,
        reads::reads_stop_at_the_workspace_boundary,
        ops::next_due_at_and_count_pending_follow_the_queue,
        ops::retry_delivery_queues_a_finished_delivery_again,
        ops::retrigger_requeues_only_finished_matching_deliveries,
        ops::webhook_summary_counts_statuses_types_and_latency,
        ops::purge_finished_deletes_old_finished_deliveries_in_batches,
        ops::notifications_are_held_then_deleted_or_rescheduled,
        ops::server_value_keeps_the_first_value,
    ],
    postgres_only: [
        nodes::nodes_never_share_a_delivery,
        nodes::per_webhook_concurrency_holds_across_nodes,
        nodes::rate_limit_is_shared_across_nodes,
        nodes::rate_limit_follows_webhook_updates,
        nodes::concurrent_retrigger_requeues_each_delivery_once,
        nodes::concurrent_purge_counts_each_delivery_once,
        nodes::concurrent_failures_keep_one_count_and_one_notification,
        nodes::concurrent_notification_claims_never_share_one,
        nodes::publish_on_one_node_wakes_another,
        nodes::work_from_another_node_is_claimed_past_full_lanes,
        nodes::released_claims_give_their_rate_tokens_back,
    ],
}
