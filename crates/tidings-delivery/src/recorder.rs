//! Records finished attempts in batches, so many outcomes share one commit.

use std::sync::Arc;
use std::time::Duration;

use tidings_store::{HealthPolicy, NextState, Outcome, Store};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const MAX_OUTCOMES_PER_COMMIT: usize = 512;

pub struct Recorder {
    sender: mpsc::UnboundedSender<Outcome>,
    task: JoinHandle<()>,
}

impl Recorder {
    pub fn spawn(store: Arc<dyn Store>, node: String, policy: HealthPolicy) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(store, node, policy, receiver));
        Self { sender, task }
    }

    pub fn sender(&self) -> mpsc::UnboundedSender<Outcome> {
        self.sender.clone()
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
) {
    let mut batch = Vec::with_capacity(MAX_OUTCOMES_PER_COMMIT);
    while receiver
        .recv_many(&mut batch, MAX_OUTCOMES_PER_COMMIT)
        .await
        > 0
    {
        let mut delay = Duration::from_millis(100);
        // An outcome that cannot be stored yet is kept and retried: dropping it would send the
        // delivery again after its claim expires, which is allowed but wasteful.
        loop {
            match store.record_outcomes(&node, batch.clone(), &policy).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::error!(%error, outcomes = batch.len(), "recording delivery outcomes failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        for outcome in batch.drain(..) {
            let name = match outcome.next {
                NextState::Delivered => "tidings_deliveries_delivered_total",
                NextState::Failed => "tidings_deliveries_failed_total",
                NextState::RetryAt(_) => "tidings_deliveries_retried_total",
            };
            metrics::counter!(name).increment(1);
        }
    }
}
