//! Background jobs beside the dispatcher: retention, and sending operator notifications.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidings_core::{now_millis, signing};
use tidings_store::{Notification, Store};
use tokio_util::sync::CancellationToken;

use crate::client::DeliveryClient;
use crate::request::{SignedRequest, envelope};

/// Deliveries deleted per retention batch: small, so the writer is never held for long.
const RETENTION_BATCH: u32 = 500;

/// Deletes finished deliveries older than `retention` every `interval`, in small batches.
pub async fn run_retention(
    store: Arc<dyn Store>,
    retention: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        let before = now_millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let mut purged = 0u64;
        loop {
            match store.purge_finished(before, RETENTION_BATCH).await {
                Ok(count) => {
                    purged += count;
                    if count < u64::from(RETENTION_BATCH) || shutdown.is_cancelled() {
                        break;
                    }
                    // Let publishes and outcomes through between batches.
                    tokio::task::yield_now().await;
                }
                Err(error) => {
                    tracing::error!(%error, "retention failed; trying again at the next interval");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "retention deleted finished deliveries");
            metrics::counter!("tidings_deliveries_purged_total").increment(purged);
        }
    }
}

/// Where operator notifications go and how they are signed.
#[derive(Debug, Clone)]
pub struct OperatorEndpoint {
    pub url: String,
    pub secret: String,
    pub user_agent: String,
}

/// Delays before the next try of a notification; after the last it is dropped with an error log.
const NOTIFICATION_RETRY_SECS: [i64; 6] = [10, 60, 300, 1800, 7200, 21600];

/// The signed request of one notification (Standard Webhooks, keyed with the operator secret).
pub fn notification_request(
    endpoint: &OperatorEndpoint,
    notification: &Notification,
    now_secs: i64,
) -> SignedRequest {
    let body = Bytes::from(envelope(
        &notification.id,
        &notification.event_type,
        notification.created_at,
        &notification.payload,
    ));
    let signature =
        signing::standard_signature(&endpoint.secret, &notification.id, now_secs, &body);
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("user-agent".to_owned(), endpoint.user_agent.clone()),
        ("webhook-id".to_owned(), notification.id.clone()),
        ("webhook-timestamp".to_owned(), now_secs.to_string()),
        ("webhook-signature".to_owned(), signature),
        (
            "webhook-key-id".to_owned(),
            signing::key_id(&endpoint.secret),
        ),
    ];
    let logged_headers = headers.iter().cloned().collect();
    SignedRequest {
        body,
        headers,
        logged_headers,
    }
}

/// Sends queued operator notifications until shutdown.
pub async fn run_notifier(
    store: Arc<dyn Store>,
    client: DeliveryClient,
    endpoint: OperatorEndpoint,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let due = match store.claim_notifications(now_millis(), 50, 60_000).await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "claiming operator notifications failed");
                Vec::new()
            }
        };
        for notification in &due {
            let request = notification_request(&endpoint, notification, now_millis() / 1000);
            let report = client
                .send(&endpoint.url, &request, Duration::from_secs(10))
                .await;
            let delivered = matches!(report.result, tidings_core::outcome::AttemptResult::Responded { status, .. } if (200..300).contains(&status));
            let retry_at = match (
                delivered,
                NOTIFICATION_RETRY_SECS.get(notification.attempts as usize),
            ) {
                (true, _) => None,
                (false, Some(delay)) => Some(now_millis() + delay * 1000),
                (false, None) => {
                    tracing::error!(id = %notification.id, kind = %notification.event_type, "an operator notification could not be sent and is dropped");
                    None
                }
            };
            if let Err(error) = store.finish_notification(&notification.id, retry_at).await {
                tracing::error!(%error, "recording an operator notification failed");
            }
        }
        if due.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
}
