//! The group-commit writer: publishes, claims and outcomes queue here and are committed together.
//!
//! Each job runs inside its own savepoint so one failing job does not undo the others; replies are
//! sent only after the enclosing transaction has committed, and those that promise durable rows
//! (publishes, test sends) only once the commit is on disk, so a caller that hears "ok" knows its
//! rows are durable.

use foldhash::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tidings_core::UnixMillis;
use tidings_store::*;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::claims::{Claims, Held};
use crate::dispatch::Claimed;
use crate::rows::execute;
use crate::sync::{SyncState, Syncer};
use crate::{dispatch, events};

/// Most jobs folded into one transaction.
const MAX_JOBS_PER_COMMIT: usize = 256;

enum Job {
    Publish(Vec<NewEvent>, oneshot::Sender<StoreResult<Vec<Published>>>),
    Claim(Claim, oneshot::Sender<StoreResult<Vec<Claimed>>>),
    Record(
        String,
        Arc<[Outcome]>,
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
        oneshot::Sender<StoreResult<Vec<Claimed>>>,
        StoreResult<Vec<Claimed>>,
    ),
    Record(oneshot::Sender<StoreResult<()>>, StoreResult<()>),
    /// A test send's answer.
    Durable(oneshot::Sender<StoreResult<()>>, StoreResult<()>),
}

impl Reply {
    /// Whether the caller is promised its rows are on disk.
    fn durable(&self) -> bool {
        matches!(self, Reply::Publish(..) | Reply::Durable(..))
    }

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
            Reply::Record(to, result) | Reply::Durable(to, result) => {
                drop(to.send(settle(result, commit_error)))
            }
        }
    }
}

#[derive(Clone)]
pub struct JobSender {
    jobs: mpsc::Sender<Job>,
    /// The sync thread's state, when there is one.
    sync: Option<Arc<SyncState>>,
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the storage writer has stopped".into())
}

impl JobSender {
    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Job,
    ) -> StoreResult<T> {
        let (to, from) = oneshot::channel();
        self.jobs.send(job(to)).await.map_err(|_| writer_gone())?;
        from.await.map_err(|_| writer_gone())?
    }

    pub async fn publish(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Published>> {
        self.submit(|to| Job::Publish(events, to)).await
    }

    pub async fn claim(&self, claim: Claim) -> StoreResult<Vec<Claimed>> {
        self.submit(|to| Job::Claim(claim, to)).await
    }

    pub async fn record(
        &self,
        node: String,
        outcomes: Arc<[Outcome]>,
        policy: HealthPolicy,
    ) -> StoreResult<()> {
        self.submit(|to| Job::Record(node, outcomes, policy, to))
            .await
    }

    /// Why publishes are refused, when a sync of the WAL failed.
    pub fn broken(&self) -> Option<String> {
        self.sync
            .as_ref()
            .and_then(|sync| sync.broken())
            .map(str::to_owned)
    }

    /// How many times the WAL was synced off the writer, if it is.
    #[cfg(test)]
    pub fn syncs(&self) -> Option<u64> {
        self.sync.as_ref().map(|sync| sync.syncs())
    }

    pub async fn test_send(&self, event: NewEvent, outcome: Outcome) -> StoreResult<()> {
        self.submit(|to| Job::TestSend(Box::new((event, outcome)), to))
            .await
    }
}

/// Longest an empty claim's answer is trusted, a bound on how late work could be seen if some
/// write that makes deliveries due were missed below.
const QUIET_MS: UnixMillis = 1000;

/// What a claim that found nothing taught: no delivery of an active webhook outside `excluded` is
/// due before `until`. Finding that out means reading past every due delivery of the excluded
/// (full) lanes, which grows with their backlog; while the answer cannot have changed, claims with
/// the same or more exclusions are answered without reading.
struct Quiet {
    excluded: HashSet<String>,
    from: UnixMillis,
    until: UnixMillis,
    generation: u64,
}

impl Quiet {
    fn answers(&self, claim: &Claim, generation: u64) -> bool {
        self.generation == generation
            && (self.from..self.until).contains(&claim.now)
            && self
                .excluded
                .iter()
                .all(|id| claim.exclude_webhooks.contains(id))
    }
}

/// Counts writes outside the writer task that can make deliveries due (resume, retry, release...):
/// each one ends what earlier empty claims learned.
#[derive(Clone, Default)]
pub struct Changes(Arc<AtomicU64>);

impl Changes {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
    fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Starts the writer on a thread of its own, with a connection of its own that runs SQLite on that
/// thread: through sqlx, every statement was a round trip to SQLite's worker thread, and the one
/// serial path of the process spent its time waiting for those switches. Other writes take the
/// pool's connection; SQLite serializes the two, and their transactions begin `IMMEDIATE` so that
/// one that reads first is never refused for a commit of the writer's in between.
pub fn spawn(
    database: &std::path::Path,
    work: Arc<Notify>,
    changes: Changes,
    claims: Claims,
    synchronous_full: bool,
) -> StoreResult<JobSender> {
    let unavailable = |e: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!("cannot start the storage writer: {e}"))
    };
    let (sender, receiver) = mpsc::channel(4096);
    let syncer = if synchronous_full {
        Syncer::start(database, Reply::send)
            .inspect_err(|error| {
                tracing::warn!(%error, database = %database.display(), "cannot sync the write-ahead log off the writer; SQLite syncs each commit instead");
            })
            .ok()
    } else {
        None
    };
    let conn = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| unavailable(&e))?;
    // The WAL's sync is the syncer's (or SQLite's, per commit, see `commit`); other writes use
    // their own connection with every commit synced.
    //
    // The page cache is kept small because every commit walks all of it: rebalancing a b-tree
    // parks a page under the lock-byte page's number (page 262,145), and each commit then drops
    // the cached pages past the end of the database by scanning the whole page hash. With 16 MiB
    // that scan was 2.6 % of the process's CPU under load; 4 MiB cost less overall (BENCHMARKS.md).
    //
    // Foreign keys are not checked on this connection: every row it inserts names rows that the
    // same transaction has just written or joined (a delivery its event and webhook, an attempt
    // the delivery its update returned), except an event's workspace and a test send's webhook,
    // which `events` checks once per job. The checks cost a parent lookup per row, 6 % of the
    // writer's instructions. It deletes nothing, so no cascade is skipped; the other connections
    // keep foreign keys on.
    conn.execute_batch(
        "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = OFF; PRAGMA temp_store = memory;
         PRAGMA cache_size = -4000; PRAGMA synchronous = NORMAL",
    )
    .map_err(|e| unavailable(&e))?;
    // SQLite otherwise plans around some bound values (a `LIMIT ?`, for one) and prepares such a
    // statement again whenever they change: the claim's limit changes with every claim.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(|e| unavailable(&e))?;
    // The multi-row statements are kept in up to seven sizes each (`bind::Rows`).
    conn.set_prepared_statement_cache_capacity(128);
    let writer = Writer {
        conn,
        changes,
        claims,
        undo: Vec::new(),
        quiet: None,
        synchronous_full,
        synced: false,
        syncer,
    };
    let sync = writer.syncer.as_ref().map(|syncer| syncer.state().clone());
    std::thread::Builder::new()
        .name("tidings-writer".into())
        .spawn(move || writer.run(receiver, &work))
        .map_err(|e| unavailable(&e))?;
    Ok(JobSender { jobs: sender, sync })
}

struct Writer {
    conn: Connection,
    changes: Changes,
    claims: Claims,
    /// How to put the claims back as they were if the open transaction fails.
    undo: Vec<Undo>,
    quiet: Option<Quiet>,
    /// Rows promised durable are synced to disk before the answer.
    synchronous_full: bool,
    /// Whether the connection's commits are synced (`synchronous = FULL`) now.
    synced: bool,
    /// Syncs in the writer's place when the WAL could be opened.
    syncer: Option<Syncer<Reply>>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Job>, work: &Notify) {
        let mut jobs = Vec::with_capacity(MAX_JOBS_PER_COMMIT);
        while receiver.blocking_recv_many(&mut jobs, MAX_JOBS_PER_COMMIT) > 0 {
            // New events are due at once, and recorded outcomes free claims a full lane was waiting on.
            let wakes = jobs
                .iter()
                .any(|job| matches!(job, Job::Publish(..) | Job::Record(..)));
            self.commit(std::mem::take(&mut jobs));
            if wakes {
                work.notify_one();
            }
        }
    }

    /// Forgets an empty claim's answer when a job can make work due outside its exclusions before
    /// the answer ends: a publish to another webhook, or a retry.
    fn notice(&mut self, job: &Job) {
        let Some(quiet) = &self.quiet else { return };
        let stale = match job {
            Job::Publish(events, _) => events
                .iter()
                .flat_map(|e| &e.deliveries)
                .any(|d| !quiet.excluded.contains(&d.webhook_id)),
            Job::Record(_, outcomes, _, _) => outcomes
                .iter()
                .any(|o| matches!(o.next, NextState::RetryAt(at) if at < quiet.until)),
            Job::Claim(..) | Job::TestSend(..) => false,
        };
        if stale {
            self.quiet = None;
        }
    }

    fn claim(&mut self, claim: Claim) -> StoreResult<Vec<Claimed>> {
        let generation = self.changes.current();
        if self
            .quiet
            .as_ref()
            .is_some_and(|quiet| quiet.answers(&claim, generation))
        {
            return Ok(Vec::new());
        }
        // Claims are held in memory (`claims.rs`): a claim only reads, so it needs no savepoint.
        // Its claims are undone if the transaction fails, which the dispatcher hears as a failed
        // claim.
        self.claims
            .lock()
            .sweep(claim.now, claim.lease_ms.max(QUIET_MS));
        // Past every active webhook's full lane, nothing is claimable or due: neither read runs.
        let outside = dispatch::any_active_outside(&self.conn, &claim.exclude_webhooks)?;
        let claimed = if outside {
            dispatch::claim(&self.conn, &self.claims, &claim)?
        } else {
            Vec::new()
        };
        self.undo
            .extend(claimed.iter().map(|row| Undo::Claimed(row.rowid())));
        if !claimed.is_empty() || claim.exclude_webhooks.is_empty() {
            return Ok(claimed);
        }
        // Nothing claimed may also mean lanes capped by unrecorded attempts: only an empty claim
        // with nothing due outside its exclusions is worth remembering.
        let next = if outside {
            dispatch::next_due_outside(&self.conn, &self.claims, &claim)?
        } else {
            None
        };
        if next.is_none_or(|at| at > claim.now) {
            self.quiet = Some(Quiet {
                until: next
                    .map_or(UnixMillis::MAX, |at| at)
                    .min(claim.now + QUIET_MS),
                excluded: claim.exclude_webhooks.into_iter().collect(),
                from: claim.now,
                generation,
            });
        }
        Ok(claimed)
    }

    /// Runs the jobs in one transaction, then answers them.
    ///
    /// Only publishes and test sends promise their caller durable rows. With a syncer, no commit
    /// waits for the disk: durable answers wait in the syncer instead. Without one, a commit that
    /// holds such rows is synced by SQLite, and one of claims and outcomes alone is not: a process
    /// crash loses nothing (the WAL is written), and what power loss takes back is a claim or a
    /// record, so the delivery is sent again, as at-least-once allows.
    fn commit(&mut self, jobs: Vec<Job>) {
        // A transaction left open by a commit that failed, and whose rollback failed too, would
        // make every later `BEGIN` fail.
        if !self.conn.is_autocommit()
            && let Err(error) = run(&self.conn, "ROLLBACK")
        {
            return fail_all(jobs.into_iter(), &error.to_string());
        }
        let synced = self.synchronous_full
            && self.syncer.is_none()
            && jobs
                .iter()
                .any(|job| matches!(job, Job::Publish(..) | Job::TestSend(..)));
        if synced != self.synced {
            let mode = if synced {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            if let Err(error) = self.conn.execute_batch(mode) {
                return fail_all(jobs.into_iter(), &error.to_string());
            }
            self.synced = synced;
        }
        if let Err(error) = run(&self.conn, "BEGIN IMMEDIATE") {
            return fail_all(jobs.into_iter(), &error.to_string());
        }
        // Once a sync failed, rows promised durable are refused before they are written: an answer
        // could not be trusted, and the caller, told of the failure, would send them again.
        let refused = self
            .syncer
            .as_ref()
            .and_then(|syncer| syncer.state().broken())
            .map(str::to_owned);
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            self.notice(&job);
            let reply = match job {
                Job::Publish(_, to) if let Some(why) = &refused => {
                    Reply::Publish(to, Err(StoreError::Unavailable(why.clone())))
                }
                Job::TestSend(_, to) if let Some(why) = &refused => {
                    Reply::Durable(to, Err(StoreError::Unavailable(why.clone())))
                }
                Job::Publish(events, to) => {
                    Reply::Publish(to, in_savepoint(&self.conn, |c| events::insert(c, events)))
                }
                Job::Claim(claim, to) => Reply::Claim(to, self.claim(claim)),
                Job::Record(node, outcomes, policy, to) => {
                    let claims = &self.claims;
                    let result = in_savepoint(&self.conn, |c| {
                        dispatch::record(c, claims, node, &outcomes, policy)
                    });
                    Reply::Record(
                        to,
                        result.map(|settled| {
                            self.undo.extend(
                                settled
                                    .into_iter()
                                    .map(|(rowid, held)| Undo::Settled(rowid, held)),
                            );
                        }),
                    )
                }
                Job::TestSend(send, to) => {
                    let (event, outcome) = *send;
                    Reply::Durable(
                        to,
                        in_savepoint(&self.conn, |c| events::insert_test_send(c, event, outcome)),
                    )
                }
            };
            replies.push(reply);
        }
        let commit_error = run(&self.conn, "COMMIT").err().map(|e| {
            tracing::error!(error = %e, "storage commit failed");
            if !self.conn.is_autocommit()
                && let Err(rollback) = run(&self.conn, "ROLLBACK")
            {
                tracing::error!(error = %rollback, "rolling back a failed commit failed");
            }
            e.to_string()
        });
        let undo = std::mem::take(&mut self.undo);
        if commit_error.is_some() {
            self.quiet = None;
            let mut claims = self.claims.lock();
            for step in undo.into_iter().rev() {
                match step {
                    Undo::Claimed(rowid) => drop(claims.drop_claim(rowid)),
                    Undo::Settled(rowid, held) => claims.restore(rowid, held),
                }
            }
        }
        match &self.syncer {
            Some(syncer) if commit_error.is_none() => {
                let mut durable = Vec::new();
                for reply in replies {
                    if reply.durable() {
                        durable.push(reply);
                    } else {
                        reply.send(None);
                    }
                }
                if !durable.is_empty() {
                    syncer.after_sync(durable);
                }
            }
            _ => {
                for reply in replies {
                    reply.send(commit_error.as_deref());
                }
            }
        }
    }
}

/// A change to the claims made by the open transaction.
enum Undo {
    /// A claim taken on a rowid.
    Claimed(i64),
    /// A claim given up by a recorded outcome.
    Settled(i64, Held),
}

/// Runs a statement without parameters or rows, kept prepared.
fn run(conn: &Connection, sql: &str) -> StoreResult<()> {
    execute(conn, sql, []).map(drop)
}

/// Answers jobs that could not run with the storage error that stopped them.
fn fail_all(jobs: impl Iterator<Item = Job>, message: &str) {
    tracing::error!(%message, "cannot start a storage transaction");
    for job in jobs {
        let reply = match job {
            Job::Publish(_, to) => Reply::Publish(to, Ok(Vec::new())),
            Job::Claim(_, to) => Reply::Claim(to, Ok(Vec::new())),
            Job::Record(_, _, _, to) | Job::TestSend(_, to) => Reply::Record(to, Ok(())),
        };
        reply.send(Some(message));
    }
}

/// Runs one job in a savepoint of its own, so its failure undoes its writes alone.
fn in_savepoint<T>(
    conn: &Connection,
    job: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    run(conn, "SAVEPOINT job")?;
    match job(conn) {
        Ok(value) => {
            run(conn, "RELEASE job")?;
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) =
                run(conn, "ROLLBACK TO job").and_then(|()| run(conn, "RELEASE job"))
            {
                tracing::error!(error = %rollback, "rolling back a savepoint failed");
            }
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SqliteOptions, SqliteStore};

    async fn synchronous(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.writer)
            .await
            .expect("read the sync mode")
    }

    async fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&SqliteOptions {
            url: dir.path().join("t.db").display().to_string(),
            synchronous_full: true,
            readers: 1,
        })
        .await
        .expect("open the store")
    }

    fn claim() -> Claim {
        Claim {
            node: "node-a".into(),
            now: tidings_core::now_millis(),
            limit: 10,
            lease_ms: 30_000,
            exclude_webhooks: Vec::new(),
            per_webhook_claims: 4,
            alone_claims: 0,
            settled: Vec::new(),
        }
    }

    /// Publishes an event without deliveries in a new workspace; returns its workspace and id.
    async fn publish_one(store: &SqliteStore) -> (String, String) {
        let workspace = workspace(store).await;
        let published = publish(store, &workspace).await.expect("publish");
        (workspace, published[0].event_id.clone())
    }

    async fn workspace(store: &SqliteStore) -> String {
        let now = tidings_core::now_millis();
        let workspace = Workspace {
            id: tidings_core::ids::new_id(tidings_core::ids::IdKind::Workspace),
            name: "w".into(),
            level_precedence: Default::default(),
            created_at: now,
            updated_at: now,
        };
        store
            .create_workspace(&workspace)
            .await
            .expect("a workspace");
        workspace.id
    }

    async fn publish(store: &SqliteStore, workspace: &str) -> StoreResult<Vec<Published>> {
        publish_to(store, workspace, Vec::new()).await
    }

    async fn publish_to(
        store: &SqliteStore,
        workspace: &str,
        deliveries: Vec<NewDelivery>,
    ) -> StoreResult<Vec<Published>> {
        let now = tidings_core::now_millis();
        let event = NewEvent {
            id: tidings_core::ids::new_id(tidings_core::ids::IdKind::Event),
            workspace_id: workspace.to_owned(),
            event_type: "email.sent".into(),
            occurred_at: now,
            received_at: now,
            data: "{}".into(),
            scope: Default::default(),
            idempotency_key: None,
            idempotency_until: now,
            deliveries,
        };
        store.jobs.publish(vec![event]).await
    }

    fn syncs(store: &SqliteStore) -> u64 {
        store
            .jobs
            .syncs()
            .expect("the WAL is synced off the writer")
    }

    #[tokio::test]
    async fn other_writes_stay_synced_beside_the_unsynced_writer() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = open(&dir).await;
        // 2 is FULL.
        assert_eq!(synchronous(&store).await, 2);
        // The writer's commits of claims and outcomes run unsynced on its own connection.
        assert!(store.jobs.claim(claim()).await.expect("claim").is_empty());
        store
            .jobs
            .record("node-a".into(), Arc::from([]), HealthPolicy::default())
            .await
            .expect("record");
        assert_eq!(synchronous(&store).await, 2);
        // So do its publishes, synced off the writer.
        publish_one(&store).await;
        assert_eq!(synchronous(&store).await, 2);
    }

    #[tokio::test]
    async fn an_in_memory_database_is_refused() {
        for url in ["sqlite::memory:", "sqlite://t.db?mode=memory"] {
            let Err(error) = SqliteStore::open(&SqliteOptions {
                url: url.into(),
                synchronous_full: true,
                readers: 1,
            })
            .await
            else {
                panic!("{url} was opened");
            };
            assert!(error.to_string().contains("in-memory"), "{error}");
        }
    }

    #[tokio::test]
    async fn a_publish_is_answered_after_a_sync_and_a_claim_without_one() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = open(&dir).await;
        let before = syncs(&store);
        assert!(store.jobs.claim(claim()).await.expect("claim").is_empty());
        assert_eq!(syncs(&store), before, "a claim promises nothing durable");
        let (workspace, event) = publish_one(&store).await;
        assert!(
            syncs(&store) > before,
            "the publish was answered before a sync"
        );
        store
            .get_event(&workspace, &event)
            .await
            .expect("the event reads back");
    }

    #[tokio::test]
    async fn a_record_whose_savepoint_fails_keeps_its_claims_for_the_retry() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = open(&dir).await;
        let workspace = workspace(&store).await;
        let now = tidings_core::now_millis();
        let webhook = tidings_core::ids::new_id(tidings_core::ids::IdKind::Webhook);
        sqlx::query(
            "INSERT INTO webhooks (id, workspace_id, spec, secret, state, created_at, updated_at)
             VALUES (?, ?, '{}', 's', 'active', ?, ?)",
        )
        .bind(&webhook)
        .bind(&workspace)
        .bind(now)
        .bind(now)
        .execute(&store.writer)
        .await
        .expect("a webhook");
        let delivery = tidings_core::ids::new_id(tidings_core::ids::IdKind::Delivery);
        publish_to(
            &store,
            &workspace,
            vec![NewDelivery {
                id: delivery.clone(),
                webhook_id: webhook.clone(),
                status: DeliveryStatus::Pending,
            }],
        )
        .await
        .expect("publish");
        let claimed = store.jobs.claim(claim()).await.expect("claim");
        assert_eq!(claimed.len(), 1);
        let outcome: Arc<[Outcome]> = Arc::from([Outcome {
            delivery_id: delivery.clone(),
            webhook_id: webhook,
            attempt: AttemptRecord {
                started_at: now,
                duration_ms: 3,
                status_code: Some(200),
                error_kind: None,
                error_message: None,
                response_excerpt: None,
                request_headers: Default::default(),
                response_headers: Default::default(),
            },
            next: NextState::Delivered,
            disable_webhook: None,
        }]);
        let record = || {
            store
                .jobs
                .record("node-a".into(), outcome.clone(), HealthPolicy::default())
        };
        // The attempt cannot be stored, so the job's savepoint rolls back its delivery's move.
        let pool = &store.writer;
        let rename = |sql: &'static str| async move {
            sqlx::query(sql)
                .execute(pool)
                .await
                .expect("rename the attempts table");
        };
        rename("ALTER TABLE attempts RENAME TO attempts_away").await;
        assert!(record().await.is_err(), "the record went through");
        rename("ALTER TABLE attempts_away RENAME TO attempts").await;
        record().await.expect("the record, again");
        let (status, attempts): (String, i64) = sqlx::query_as(
            "SELECT status, (SELECT COUNT(*) FROM attempts WHERE delivery_id = d.id)
             FROM deliveries d WHERE id = ?",
        )
        .bind(&delivery)
        .fetch_one(&store.writer)
        .await
        .expect("read the delivery");
        assert_eq!((status.as_str(), attempts), ("delivered", 1));
        assert!(
            store.jobs.claim(claim()).await.expect("claim").is_empty(),
            "a recorded delivery was claimed again"
        );
    }

    #[tokio::test]
    async fn claims_written_by_an_earlier_version_are_given_back_by_the_migration() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("open the database");
        // The schema before claims were held in memory.
        let mut earlier = sqlx::migrate!("./migrations");
        earlier.migrations = earlier.migrations[..5].to_vec().into();
        earlier.run(&pool).await.expect("the earlier migrations");
        let now = tidings_core::now_millis();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO workspaces VALUES ('ws_1', 'w', '[]', {now}, {now});
             INSERT INTO webhooks (id, workspace_id, spec, secret, state, created_at, updated_at)
                 VALUES ('wh_1', 'ws_1', '{{}}', 's', 'active', {now}, {now});
             INSERT INTO events (id, workspace_id, event_type, occurred_at, received_at, data)
                 VALUES ('evt_1', 'ws_1', 'email.sent', {now}, {now}, '{{}}');
             INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status,
                                     next_attempt_at, claimed_by, created_at, updated_at)
                 VALUES ('dlv_1', 'ws_1', 'evt_1', 'wh_1', 'email.sent', 'pending', {}, 'node-old',
                         {now}, {now});",
            now + 30_000
        )))
        .execute(&pool)
        .await
        .expect("a delivery claimed until its lease ends");
        pool.close().await;

        let store = open(&dir).await;
        let claimed = store.jobs.claim(claim()).await.expect("claim");
        assert_eq!(claimed.len(), 1, "the earlier claim was not given back");
    }

    #[tokio::test]
    async fn one_store_at_a_time_claims_from_a_file() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let first = open(&dir).await;
        let second = open(&dir).await;
        first.release_all_claims().await.expect("the first claimer");
        // Taken already: again at once.
        first.release_all_claims().await.expect("the first claimer");
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(600),
            second.release_all_claims(),
        )
        .await;
        assert!(waiting.is_err(), "two stores claim from one file");
        first.close().await;
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            second.release_all_claims(),
        )
        .await
        .expect("the second store still waits after the first closed")
        .expect("the second claimer");
    }

    #[tokio::test]
    async fn after_a_failed_sync_publishes_are_refused_before_they_are_written() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = open(&dir).await;
        let workspace = workspace(&store).await;
        publish(&store, &workspace).await.expect("publish");
        // A WAL path that cannot be resolved (a link to itself) makes the next sync fail; SQLite
        // keeps writing through the file it has open.
        let wal = dir.path().join("t.db-wal");
        std::fs::remove_file(&wal).expect("delete the WAL path");
        std::os::unix::fs::symlink(&wal, &wal).expect("a link loop");
        let events = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events")
                .fetch_one(&store.writer)
                .await
                .expect("count events")
        };
        // Committed, then its sync failed: the caller hears of the failure.
        assert!(publish(&store, &workspace).await.is_err());
        let written = events().await;
        let Err(error) = publish(&store, &workspace).await else {
            panic!("a publish was accepted after a failed sync");
        };
        assert!(error.to_string().contains("restart Tidings"), "{error}");
        assert_eq!(events().await, written, "a refused publish was written");
        // Claims promise nothing durable and go on; the store reports itself unhealthy.
        store.jobs.claim(claim()).await.expect("claim");
        assert!(store.ping().await.is_err());
    }
}
