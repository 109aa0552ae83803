//! Records finished attempts in batches, so many outcomes share one commit.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tidings_store::{HealthPolicy, NextState, Outcome, Store};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const MAX_OUTCOMES_PER_COMMIT: usize = 512;
/// Outcomes that arrive within this long of the previous commit's start wait for one another: a
/// commit writes every page it touches in full (the attempts table's last page, the deliveries'
/// pages and index pages), so twenty outcomes a commit wrote several times the pages per outcome
/// that a hundred do. Attempts are not delayed, only their recording.
const GATHER: Duration = Duration::from_millis(5);

/// Deliveries whose outcome was handed to the recorder and is not committed yet.
#[derive(Clone, Default)]
struct Settled(Arc<Mutex<HashSet<String>>>);

impl Settled {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct Recorder {
    sender: OutcomeSender,
    task: JoinHandle<()>,
}

/// Hands finished attempts to the recorder.
#[derive(Clone)]
pub struct OutcomeSender {
    outcomes: mpsc::UnboundedSender<Outcome>,
    settled: Settled,
}

impl OutcomeSender {
    pub fn send(&self, outcome: Outcome) {
        self.settled.lock().insert(outcome.delivery_id.clone());
        // The recorder task only ends once every sender is dropped, so this cannot fail.
        let _ = self.outcomes.send(outcome);
    }
}

impl Recorder {
    pub fn spawn(store: Arc<dyn Store>, node: String, policy: HealthPolicy) -> Self {
        let (outcomes, receiver) = mpsc::unbounded_channel();
        let settled = Settled::default();
        let task = tokio::spawn(run(store, node, policy, receiver, settled.clone()));
        Self {
            sender: OutcomeSender { outcomes, settled },
            task,
        }
    }

    pub fn sender(&self) -> OutcomeSender {
        self.sender.clone()
    }

    /// The deliveries whose attempt is over but whose outcome is not committed yet.
    pub fn settled(&self) -> Vec<String> {
        self.sender.settled.lock().iter().cloned().collect()
    }

    /// Waits until every outcome sent so far is committed (all senders must be dropped).
    pub async fn finish(self) {
        drop(self.sender);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the outcome recorder stopped abnormally");
        }
    }
}

async fn run(
    store: Arc<dyn Store>,
    node: String,
    policy: HealthPolicy,
    mut receiver: mpsc::UnboundedReceiver<Outcome>,
    settled: Settled,
) {
    let mut received = Vec::with_capacity(MAX_OUTCOMES_PER_COMMIT);
    let mut last = Instant::now();
    while receiver
        .recv_many(&mut received, MAX_OUTCOMES_PER_COMMIT)
        .await
        > 0
    {
        let until = last + GATHER;
        if received.len() < MAX_OUTCOMES_PER_COMMIT && Instant::now() < until {
            tokio::time::sleep_until(until).await;
            while received.len() < MAX_OUTCOMES_PER_COMMIT
                && let Ok(outcome) = receiver.try_recv()
            {
                received.push(outcome);
            }
        }
        last = Instant::now();
        let batch: Arc<[Outcome]> = received.drain(..).collect();
        let mut delay = Duration::from_millis(100);
        // An outcome that cannot be stored yet is kept and retried: dropping it would send the
        // delivery again after its claim expires, which is allowed but wasteful.
        loop {
            match store.record_outcomes(&node, batch.clone(), &policy).await {
                Ok(()) => {
                    let mut settled = settled.lock();
                    for outcome in batch.iter() {
                        settled.remove(&outcome.delivery_id);
                    }
                    break;
                }
                Err(error) => {
                    tracing::error!(%error, outcomes = batch.len(), "recording delivery outcomes failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        let (mut delivered, mut failed, mut retried) = (0, 0, 0);
        for outcome in batch.iter() {
            match outcome.next {
                NextState::Delivered => delivered += 1,
                NextState::Failed => failed += 1,
                NextState::RetryAt(_) => retried += 1,
            }
        }
        metrics::counter!("tidings_deliveries_delivered_total").increment(delivered);
        metrics::counter!("tidings_deliveries_failed_total").increment(failed);
        metrics::counter!("tidings_deliveries_retried_total").increment(retried);
    }
}
