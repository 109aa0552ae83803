//! The group-commit writer: publishes, claims and outcomes queue here and are committed together.
//!
//! Each job runs inside its own savepoint so one failing job does not undo the others; replies are
//! sent only after the enclosing transaction has committed, so a caller that hears "ok" knows its
//! rows are durable.

use std::sync::Arc;

use sqlx::SqlitePool;
use tidings_store::*;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{dispatch, events, map_err};

/// Most jobs folded into one transaction.
const MAX_JOBS_PER_COMMIT: usize = 256;

enum Job {
    Publish(Vec<NewEvent>, oneshot::Sender<StoreResult<Vec<Published>>>),
    Claim(Claim, oneshot::Sender<StoreResult<Vec<String>>>),
    Record(
        String,
        Vec<Outcome>,
        HealthPolicy,
        oneshot::Sender<StoreResult<()>>,
    ),
    TestSend(Box<(NewEvent, Outcome)>, oneshot::Sender<StoreResult<()>>),
}

enum Reply {
    Publish(
        oneshot::Sender<StoreResult<Vec<Published>>>,
        StoreResult<Vec<Published>>,
    ),
    Claim(
        oneshot::Sender<StoreResult<Vec<String>>>,
        StoreResult<Vec<String>>,
    ),
    Record(oneshot::Sender<StoreResult<()>>, StoreResult<()>),
}

impl Reply {
    fn send(self, commit_error: Option<&str>) {
        fn settle<T>(result: StoreResult<T>, commit_error: Option<&str>) -> StoreResult<T> {
            match commit_error {
                Some(message) => Err(StoreError::Unavailable(format!("commit failed: {message}"))),
                None => result,
            }
        }
        // A caller that went away (request cancelled) no longer needs its answer.
        match self {
            Reply::Publish(to, result) => drop(to.send(settle(result, commit_error))),
            Reply::Claim(to, result) => drop(to.send(settle(result, commit_error))),
            Reply::Record(to, result) => drop(to.send(settle(result, commit_error))),
        }
    }
}

#[derive(Clone)]
pub struct JobSender(mpsc::Sender<Job>);

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the storage writer has stopped".into())
}

impl JobSender {
    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Job,
    ) -> StoreResult<T> {
        let (to, from) = oneshot::channel();
        self.0.send(job(to)).await.map_err(|_| writer_gone())?;
        from.await.map_err(|_| writer_gone())?
    }

    pub async fn publish(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Published>> {
        self.submit(|to| Job::Publish(events, to)).await
    }

    pub async fn claim(&self, claim: Claim) -> StoreResult<Vec<String>> {
        self.submit(|to| Job::Claim(claim, to)).await
    }

    pub async fn record(
        &self,
        node: String,
        outcomes: Vec<Outcome>,
        policy: HealthPolicy,
    ) -> StoreResult<()> {
        self.submit(|to| Job::Record(node, outcomes, policy, to))
            .await
    }

    pub async fn test_send(&self, event: NewEvent, outcome: Outcome) -> StoreResult<()> {
        self.submit(|to| Job::TestSend(Box::new((event, outcome)), to))
            .await
    }
}

pub fn spawn(pool: SqlitePool, work: Arc<Notify>) -> JobSender {
    let (sender, receiver) = mpsc::channel(4096);
    tokio::spawn(run(pool, receiver, work));
    JobSender(sender)
}

async fn run(pool: SqlitePool, mut receiver: mpsc::Receiver<Job>, work: Arc<Notify>) {
    let mut jobs = Vec::with_capacity(MAX_JOBS_PER_COMMIT);
    while receiver.recv_many(&mut jobs, MAX_JOBS_PER_COMMIT).await > 0 {
        // New events are due at once, and recorded outcomes free claims a full lane was waiting on.
        let wakes = jobs
            .iter()
            .any(|job| matches!(job, Job::Publish(..) | Job::Record(..)));
        commit(&pool, jobs.drain(..)).await;
        if wakes {
            work.notify_one();
        }
    }
}

/// Runs the jobs in one transaction, then answers them.
async fn commit(pool: &SqlitePool, jobs: impl Iterator<Item = Job>) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(error) => {
            let message = error.to_string();
            tracing::error!(%message, "cannot start a storage transaction");
            for job in jobs {
                let reply = match job {
                    Job::Publish(_, to) => Reply::Publish(to, Ok(Vec::new())),
                    Job::Claim(_, to) => Reply::Claim(to, Ok(Vec::new())),
                    Job::Record(_, _, _, to) | Job::TestSend(_, to) => Reply::Record(to, Ok(())),
                };
                reply.send(Some(&message));
            }
            return;
        }
    };
    let mut replies = Vec::new();
    for job in jobs {
        let reply = match job {
            Job::Publish(events, to) => Reply::Publish(
                to,
                in_savepoint(&mut tx, |c| Box::pin(events::insert(c, events))).await,
            ),
            Job::Claim(claim, to) => Reply::Claim(
                to,
                in_savepoint(&mut tx, |c| Box::pin(dispatch::claim(c, claim))).await,
            ),
            Job::Record(node, outcomes, policy, to) => Reply::Record(
                to,
                in_savepoint(&mut tx, |c| {
                    Box::pin(dispatch::record(c, node, outcomes, policy))
                })
                .await,
            ),
            Job::TestSend(send, to) => {
                let (event, outcome) = *send;
                Reply::Record(
                    to,
                    in_savepoint(&mut tx, |c| {
                        Box::pin(events::insert_test_send(c, event, outcome))
                    })
                    .await,
                )
            }
        };
        replies.push(reply);
    }
    let commit_error = tx.commit().await.err().map(|e| {
        tracing::error!(error = %e, "storage commit failed");
        e.to_string()
    });
    for reply in replies {
        reply.send(commit_error.as_deref());
    }
}

type JobFuture<'c, T> = std::pin::Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'c>>;

async fn in_savepoint<T>(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    job: impl for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> JobFuture<'c, T>,
) -> StoreResult<T> {
    let mut savepoint = sqlx::Connection::begin(&mut **tx).await.map_err(map_err)?;
    match job(&mut savepoint).await {
        Ok(value) => {
            savepoint.commit().await.map_err(map_err)?;
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = savepoint.rollback().await {
                tracing::error!(error = %rollback, "rolling back a savepoint failed");
            }
            Err(error)
        }
    }
}
