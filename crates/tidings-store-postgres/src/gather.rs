//! Publishes without idempotency keys that arrive while others are being written share one
//! statement: runner tasks (the store starts one) each take every publish waiting when they come
//! free and insert them all at once. Each statement is a round trip, an executor start and a
//! commit that waits for its WAL flush; under load, single publishes were mostly that. One that
//! arrives to an idle runner is written at once, alone, as before.

use std::sync::Arc;

use sqlx::PgPool;
use tidings_store::{NewEvent, Published, StoreError, StoreResult};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::errors::retrying;
use crate::events;
use crate::held::Held;

/// A statement takes whole publishes until it holds at least this many events (a publish holds at
/// most the API's batch limit, so a statement stays within twice this).
const FILL_TO_EVENTS: usize = 1000;

type Answer = StoreResult<(Vec<Published>, bool)>;

struct Request {
    events: Vec<NewEvent>,
    /// The events go back with the answer, for the caller to wake whom they concern.
    reply: oneshot::Sender<(Vec<NewEvent>, Answer)>,
}

/// The queue of keyless publishes and the runners that write them.
pub struct Gather {
    queue: mpsc::UnboundedSender<Request>,
    runners: Vec<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Gather {
    /// Starts `runners` runners on `pool`: at most that many publishing statements run at once.
    /// Each keeps its connection between statements if `keep`.
    pub fn start(pool: PgPool, runners: usize, keep: bool) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(waiting));
        let runners = (0..runners.max(1))
            .map(|_| {
                let runner = tokio::spawn(run(pool.clone(), Held::new(keep), waiting.clone()));
                std::sync::Mutex::new(Some(runner))
            })
            .collect();
        Self { queue, runners }
    }

    /// Stores `events` (none with an idempotency key) and their deliveries, in a statement that may
    /// also hold other publishes; gives the events back with what was published and whether any
    /// delivery is due.
    pub async fn publish(&self, events: Vec<NewEvent>) -> (Vec<NewEvent>, Answer) {
        let (reply, answer) = oneshot::channel();
        if let Err(refused) = self.queue.send(Request { events, reply }) {
            let closed = StoreError::Unavailable("the store is closed".to_owned());
            return (refused.0.events, Err(closed));
        }
        answer.await.unwrap_or_else(|_| {
            let stopped = "the store closed before the events were stored".to_owned();
            (Vec::new(), Err(StoreError::Unavailable(stopped)))
        })
    }

    /// Stops the runners; publishes still waiting are answered "unavailable".
    pub async fn stop(&self) {
        for runner in &self.runners {
            crate::stop_task(runner).await;
        }
    }
}

async fn run(pool: PgPool, held: Held, waiting: Arc<Mutex<mpsc::UnboundedReceiver<Request>>>) {
    loop {
        let requests = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            let mut events = first.events.len();
            let mut requests = vec![first];
            while events < FILL_TO_EVENTS {
                let Ok(next) = waiting.try_recv() else {
                    break;
                };
                events += next.events.len();
                requests.push(next);
            }
            requests
        };
        if let Some(unavailable) = write(&pool, &held, requests).await {
            // The publishes that queued meanwhile would each wait as long to learn the same (a
            // full connect or acquire timeout, one runner after another): they are answered now.
            // A runner holding the queue is either idle (nothing is queued) or taking it.
            if let Ok(mut waiting) = waiting.try_lock() {
                while let Ok(request) = waiting.try_recv() {
                    request.answer(Err(StoreError::Unavailable(unavailable.clone())));
                }
            }
        }
    }
}

/// Writes `requests` in one statement and answers each. When that fails and there was more than
/// one, each is written again on its own, so one publish the database refuses (its workspace was
/// deleted meanwhile) fails alone; when the database cannot be reached, each gets that answer, and
/// so does the caller (the message).
async fn write(pool: &PgPool, held: &Held, requests: Vec<Request>) -> Option<String> {
    let together = retrying("publishing events", || {
        let all: Vec<&[NewEvent]> = requests.iter().map(|r| r.events.as_slice()).collect();
        async move {
            held.run(pool, async |conn| events::insert_requests(conn, &all).await)
                .await
        }
    })
    .await;
    match together {
        Ok(answers) => {
            for (request, answer) in requests.into_iter().zip(answers) {
                request.answer(Ok(answer));
            }
        }
        Err(StoreError::Unavailable(message)) => {
            for request in requests {
                request.answer(Err(StoreError::Unavailable(message.clone())));
            }
            return Some(message);
        }
        Err(error) if requests.len() == 1 => {
            if let Some(request) = requests.into_iter().next() {
                request.answer(Err(error));
            }
        }
        Err(error) => {
            tracing::debug!(%error, publishes = requests.len(), "publishes written together failed; writing each on its own");
            for request in requests {
                let answer = events::publish(pool, &request.events).await;
                request.answer(answer);
            }
        }
    }
    None
}

impl Request {
    fn answer(self, answer: Answer) {
        // A caller that stopped waiting (its client went away) needs no answer.
        let _ = self.reply.send((self.events, answer));
    }
}
