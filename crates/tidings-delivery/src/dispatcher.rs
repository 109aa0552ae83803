//! The dispatcher: claims due deliveries in batches, runs their attempts with per-webhook limits, and
//! hands outcomes to the recorder.
//!
//! Isolation: each webhook has its own lane (a concurrency limit, an optional rate limit, and a cap on
//! how many of its deliveries may wait in memory). A lane that is full is left out of the next claim,
//! so a slow endpoint's backlog stays in storage instead of taking the slots of healthy endpoints.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tidings_core::now_millis;
use tidings_core::outcome::Verdict;
use tidings_core::retry::{DEFAULT_SCHEDULE_SECS, next_attempt_at, random_jitter};
use tidings_store::{
    AttemptRecord, Claim, ClaimedDelivery, HealthPolicy, NextState, Outcome, Store, Webhook,
};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::DeliveryClient;
use crate::recorder::Recorder;
use crate::request::build_request;

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Names this process's claims.
    pub node: String,
    /// Most deliveries claimed per query.
    pub claim_batch: u32,
    /// Most attempts in flight (or waiting for their lane) at once.
    pub max_in_flight: usize,
    /// Most concurrent attempts to one webhook.
    pub per_webhook_concurrency: usize,
    /// Most deliveries of one webhook held claimed at once (waiting in its lane or in flight) while
    /// no other node holds any: many rounds of `per_webhook_concurrency`, so a busy lane is topped
    /// up by few large claims and never runs dry between them (only while half the slots are
    /// free: see `lane_capacity`). While other nodes hold claims of the webhook too, all of them
    /// together hold at most `per_webhook_concurrency` (see `Claim::alone_claims`).
    pub per_webhook_claims: usize,
    /// How long a claim holds before another node may take the delivery over; renewed every third
    /// of it while the attempt runs, so only a node that stopped loses its claims.
    pub lease_ms: i64,
    /// Server-wide retry schedule (seconds after each failed attempt).
    pub retry_schedule: Vec<u32>,
    pub user_agent: String,
    pub allow_private_targets: bool,
    /// Longest sleep between checks for due work when nothing wakes the dispatcher.
    pub idle_poll: Duration,
    /// How long shutdown waits for attempts in flight before giving them back.
    pub shutdown_grace: Duration,
    /// When failing webhooks are disabled, and whether the operator is told.
    pub health: HealthPolicy,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            node: "node".into(),
            claim_batch: 256,
            max_in_flight: 1024,
            per_webhook_concurrency: 16,
            per_webhook_claims: 64,
            lease_ms: 30_000,
            retry_schedule: DEFAULT_SCHEDULE_SECS.to_vec(),
            user_agent: format!("Tidings/{}", env!("CARGO_PKG_VERSION")),
            allow_private_targets: false,
            idle_poll: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(31),
            health: HealthPolicy::default(),
        }
    }
}

/// One webhook's share of the dispatcher.
struct Lane {
    concurrency: Semaphore,
    /// Claimed deliveries of this webhook not yet finished (waiting or in flight).
    queued: AtomicUsize,
    limiter: Mutex<Option<(u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl Lane {
    fn limiter(&self, rate: Option<u32>) -> Option<Arc<DefaultDirectRateLimiter>> {
        let mut slot = self
            .limiter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match (rate.and_then(NonZeroU32::new), slot.as_ref()) {
            (None, _) => {
                *slot = None;
                None
            }
            (Some(rate), Some((current, limiter))) if *current == rate.get() => {
                Some(limiter.clone())
            }
            (Some(rate), _) => {
                let limiter = Arc::new(RateLimiter::direct(Quota::per_second(rate)));
                *slot = Some((rate.get(), limiter.clone()));
                Some(limiter)
            }
        }
    }
}

struct Inner {
    store: Arc<dyn Store>,
    client: DeliveryClient,
    config: DispatcherConfig,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    slots: Arc<Semaphore>,
    wake: Notify,
    /// Claimed deliveries this node holds (waiting in a lane or in flight), whose leases it renews.
    held: Mutex<HashSet<String>>,
}

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, config: DispatcherConfig) -> Result<Self, String> {
        let client = DeliveryClient::new(config.allow_private_targets)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                client,
                slots: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
                config,
                lanes: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                held: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The client attempts are sent with.
    pub fn client(&self) -> &DeliveryClient {
        &self.inner.client
    }

    fn lane(&self, webhook_id: &str) -> Arc<Lane> {
        let mut lanes = self
            .inner
            .lanes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        lanes
            .entry(webhook_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Lane {
                    concurrency: Semaphore::new(self.inner.config.per_webhook_concurrency.max(1)),
                    queued: AtomicUsize::new(0),
                    limiter: Mutex::new(None),
                })
            })
            .clone()
    }

    /// How many claimed deliveries of one webhook may wait in memory now: `per_webhook_claims`
    /// while at least half the slots are free, otherwise at most four rounds of the concurrency
    /// limit, so deep lanes (few, large claims for a busy webhook) never take the slots that other
    /// webhooks' work needs.
    fn lane_capacity(&self) -> usize {
        let config = &self.inner.config;
        let deep = config.per_webhook_claims.max(1);
        if self.inner.slots.available_permits() * 2 >= config.max_in_flight {
            deep
        } else {
            deep.min(config.per_webhook_concurrency.saturating_mul(4).max(1))
        }
    }

    /// Webhooks left out of the next claim: lanes more than half full are topped up only once they
    /// drain below half, so a busy webhook is claimed for in batches rather than one delivery per
    /// finished attempt.
    fn saturated_webhooks(&self) -> Vec<String> {
        let capacity = self.lane_capacity().div_ceil(2);
        let mut lanes = self
            .inner
            .lanes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Idle lanes are forgotten so the map tracks only webhooks with work.
        lanes.retain(|_, lane| {
            lane.queued.load(Ordering::Acquire) > 0 || lane.concurrency.available_permits() == 0
        });
        lanes
            .iter()
            .filter(|(_, lane)| lane.queued.load(Ordering::Acquire) >= capacity)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Renews the leases of every delivery this node holds, every third of a lease, until stopped.
    async fn renew_leases(self, stop: CancellationToken) {
        let config = &self.inner.config;
        let every =
            Duration::from_millis(u64::try_from(config.lease_ms / 3).unwrap_or(1000).max(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            let ids: Vec<String> = self.held().iter().cloned().collect();
            if ids.is_empty() {
                continue;
            }
            let until = now_millis() + config.lease_ms;
            if let Err(error) = self
                .inner
                .store
                .renew_claims(&config.node, &ids, until)
                .await
            {
                tracing::error!(%error, held = ids.len(), "renewing delivery claims failed; another node may take them over when they run out");
            }
        }
    }

    /// Claims and delivers until `shutdown` is cancelled, then stops claiming, lets attempts in flight
    /// finish within the grace period, gives back the rest, and records every outcome.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = &self.inner.config;
        let store = self.inner.store.clone();
        // On SQLite this waits while another process delivers from the same file.
        let released = tokio::select! {
            released = store.release_all_claims() => released,
            _ = shutdown.cancelled() => return,
        };
        match released {
            Ok(0) => {}
            Ok(released) => {
                tracing::info!(released, "resuming deliveries claimed before the last stop")
            }
            Err(error) => tracing::error!(%error, "cannot release earlier claims"),
        }
        let recorder = Recorder::spawn(store.clone(), config.node.clone(), config.health.clone());
        let tracker = TaskTracker::new();
        let abort = CancellationToken::new();
        let (given_back, mut given_back_rx) = mpsc::unbounded_channel::<String>();
        let work = store.work_signal();
        let stop_renewing = CancellationToken::new();
        let renewer = tokio::spawn(self.clone().renew_leases(stop_renewing.clone()));

        while !shutdown.is_cancelled() {
            let free = self.inner.slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = self.inner.wake.notified() => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            let now = now_millis();
            let claim = Claim {
                node: config.node.clone(),
                now,
                limit: u32::try_from(free)
                    .unwrap_or(u32::MAX)
                    .min(config.claim_batch),
                lease_ms: config.lease_ms,
                exclude_webhooks: self.saturated_webhooks(),
                per_webhook_claims: u32::try_from(config.per_webhook_concurrency)
                    .unwrap_or(u32::MAX),
                alone_claims: u32::try_from(self.lane_capacity()).unwrap_or(u32::MAX),
                settled: recorder.settled(),
            };
            let claimed = match store.claim_due(&claim).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::error!(%error, "claiming due deliveries failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    continue;
                }
            };
            if claimed.is_empty() {
                // With full lanes, a lane draining below half wakes the loop, and so does new work;
                // claiming again meanwhile would only make storage look past the full lanes'
                // backlog for nothing. Without full lanes, the loop sleeps until the next due time,
                // with a short floor that catches other work falling due.
                let wait = if claim.exclude_webhooks.is_empty() {
                    match store.next_due_at().await {
                        Ok(Some(due)) => {
                            Duration::from_millis(u64::try_from(due - now).unwrap_or(0))
                                .min(config.idle_poll)
                        }
                        _ => config.idle_poll,
                    }
                    .max(Duration::from_millis(50))
                } else {
                    config.idle_poll
                };
                tokio::select! {
                    _ = work.notified() => {}
                    _ = self.inner.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            let mut release = Vec::new();
            for delivery in claimed {
                let lane = self.lane(&delivery.webhook.id);
                let capacity = self.lane_capacity();
                let permit = match self.inner.slots.clone().try_acquire_owned() {
                    Ok(permit) if lane.queued.load(Ordering::Acquire) < capacity => permit,
                    _ => {
                        release.push(delivery.delivery_id);
                        continue;
                    }
                };
                lane.queued.fetch_add(1, Ordering::AcqRel);
                self.held().insert(delivery.delivery_id.clone());
                let this = self.clone();
                let outcomes = recorder.sender();
                let given_back = given_back.clone();
                let abort = abort.clone();
                tracker.spawn(async move {
                    let id = delivery.delivery_id.clone();
                    tokio::select! {
                        outcome = this.attempt(&lane, delivery) => outcomes.send(outcome),
                        _ = abort.cancelled() => {
                            let _ = given_back.send(id.clone());
                        }
                    }
                    let left = lane.queued.fetch_sub(1, Ordering::AcqRel) - 1;
                    this.held().remove(&id);
                    let last_slot = this.inner.slots.available_permits() == 0;
                    drop(permit);
                    // The claim loop only needs waking when this lane can take more again (it fell
                    // below half) or when every slot was taken.
                    if left < this.lane_capacity().div_ceil(2) || last_slot {
                        this.inner.wake.notify_one();
                    }
                });
            }
            if !release.is_empty()
                && let Err(error) = store.release(&config.node, &release).await
            {
                tracing::error!(%error, "giving back deliveries failed; they become due when their claim ends");
            }
        }

        tracker.close();
        if tokio::time::timeout(config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "attempts still in flight at the end of the shutdown grace period are given back"
            );
            abort.cancel();
            tracker.wait().await;
        }
        drop(given_back);
        recorder.finish().await;
        stop_renewing.cancel();
        if let Err(error) = renewer.await {
            tracing::error!(%error, "the lease renewer stopped abnormally");
        }
        let mut release = Vec::new();
        while let Some(id) = given_back_rx.recv().await {
            release.push(id);
        }
        if !release.is_empty()
            && let Err(error) = store.release(&config.node, &release).await
        {
            tracing::error!(%error, "giving back deliveries at shutdown failed; they become due when their claim ends");
        }
        tracing::info!("dispatcher stopped");
    }

    /// Makes one attempt of a claimed delivery and decides what comes next.
    async fn attempt(&self, lane: &Lane, delivery: ClaimedDelivery) -> Outcome {
        let _turn = lane.concurrency.acquire().await;
        if let Some(limiter) = lane.limiter(delivery.webhook.spec.rate_limit_per_s) {
            limiter.until_ready().await;
        }
        self.send_now(delivery).await
    }

    /// Makes one attempt at once, outside the queue and the webhook's lane (test sends use this):
    /// the same request, client and outcome rules as queued deliveries.
    pub async fn send_now(&self, delivery: ClaimedDelivery) -> Outcome {
        let webhook: &Webhook = &delivery.webhook;
        let span = tracing::debug_span!("attempt", delivery_id = %delivery.delivery_id, event_id = %delivery.event_id, webhook_id = %webhook.id);
        let _entered = span.enter();
        let started_at = now_millis();
        let request = build_request(
            webhook,
            &delivery.event_id,
            &delivery.event_type,
            delivery.occurred_at,
            &delivery.data,
            started_at / 1000,
            &self.inner.config.user_agent,
        );
        drop(_entered);
        let timeout = Duration::from_millis(u64::from(webhook.spec.timeout_ms));
        let report = self
            .inner
            .client
            .send(&webhook.spec.url, &request, timeout)
            .await;
        metrics::histogram!("tidings_attempt_duration_seconds")
            .record(report.duration.as_secs_f64());
        let attempts_made = delivery.attempts + 1;
        let schedule = webhook
            .spec
            .retry_schedule
            .as_deref()
            .unwrap_or(&self.inner.config.retry_schedule);
        let (next, disable_webhook) = match report.result.verdict() {
            Verdict::Delivered => (NextState::Delivered, None),
            Verdict::Gone => (NextState::Failed, Some("gone".to_owned())),
            Verdict::Failed => (NextState::Failed, None),
            Verdict::Retry { retry_after_secs } => {
                match next_attempt_at(
                    schedule,
                    attempts_made,
                    retry_after_secs,
                    now_millis(),
                    random_jitter(),
                ) {
                    Some(at) => (NextState::RetryAt(at), None),
                    None => (NextState::Failed, None),
                }
            }
        };
        let status_code = match report.result {
            tidings_core::outcome::AttemptResult::Responded { status, .. } => Some(status),
            tidings_core::outcome::AttemptResult::Failed(_) => None,
        };
        tracing::debug!(delivery_id = %delivery.delivery_id, ?status_code, ?next, "attempt finished");
        Outcome {
            delivery_id: delivery.delivery_id,
            webhook_id: webhook.id.clone(),
            attempt: AttemptRecord {
                started_at,
                duration_ms: i64::try_from(report.duration.as_millis()).unwrap_or(i64::MAX),
                status_code,
                error_kind: report.result.error_kind(),
                error_message: report.error_message,
                response_excerpt: report.response_excerpt,
                request_headers: request.logged_headers,
                response_headers: report.response_headers,
            },
            next,
            disable_webhook,
        }
    }
}
