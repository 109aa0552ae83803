//! Remembering claims that found nothing outside full lanes.
//!
//! A claim that leaves out full lanes reads past every due delivery of theirs in the due index,
//! which grows with their backlog (~6 ms a claim at 50k due); the dispatcher makes such a claim
//! after every claim that filled a lane. When one finds nothing and nothing outside those lanes is
//! due before some time (at most `QUIET_MS` ahead), the answer is kept for the next claims with
//! the same exclusions, until something that can make other work due happens: a publish to a
//! webhook not left out, a recorded retry, any other write that makes work due on this node, or a
//! notification from another node. Retries recorded by other nodes send no notification: they
//! are seen at most `QUIET_MS` late, as the dispatcher's idle poll would see them.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use tidings_core::UnixMillis;
use tidings_store::{Claim, NextState, Outcome};

/// Longest an empty claim's answer is trusted.
pub const QUIET_MS: UnixMillis = 1000;

#[derive(Default)]
pub struct Quiet(Mutex<State>);

#[derive(Default)]
struct State {
    /// Bumped by anything that can make work due outside `watching`; an answer learned by a claim
    /// that started under an older generation is not kept.
    generation: u64,
    /// The exclusions of the latest claim that had any: publishes to these webhooks change nothing
    /// such a claim could have found.
    watching: BTreeSet<String>,
    /// Nothing outside `watching` is due in `from..until`. Learned under the current generation:
    /// every bump forgets it.
    answer: Option<(UnixMillis, UnixMillis)>,
}

impl State {
    /// Something may have made work due: answers learned so far, or being learned, no longer hold.
    fn bump(&mut self) {
        self.generation += 1;
        self.answer = None;
    }
}

/// What a claim should do.
pub enum Ask {
    /// Nothing it could take is due: answer empty without reading.
    Empty,
    /// Read; if nothing is found, `learn` with this generation (if any).
    Read(Option<u64>),
}

impl Quiet {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn ask(&self, claim: &Claim) -> Ask {
        if claim.exclude_webhooks.is_empty() {
            return Ask::Read(None);
        }
        let mut state = self.state();
        let same = state.watching.len() == claim.exclude_webhooks.len()
            && claim
                .exclude_webhooks
                .iter()
                .all(|id| state.watching.contains(id));
        if !same {
            state.watching = claim.exclude_webhooks.iter().cloned().collect();
            state.bump();
        }
        match state.answer {
            Some((from, until)) if (from..until).contains(&claim.now) => Ask::Empty,
            _ => Ask::Read(Some(state.generation)),
        }
    }

    /// After a claim asked under `generation` found nothing, and nothing outside its exclusions is
    /// due before `next_due` (if anything is due at all).
    pub fn learn(&self, generation: u64, now: UnixMillis, next_due: Option<UnixMillis>) {
        if next_due.is_some_and(|at| at <= now) {
            return;
        }
        let until = next_due
            .map_or(UnixMillis::MAX, |at| at)
            .min(now + QUIET_MS);
        let mut state = self.state();
        if state.generation == generation {
            state.answer = Some((now, until));
        }
    }

    /// Something may have made work due anywhere.
    pub fn changed(&self) {
        self.state().bump();
    }

    /// Deliveries were stored for these webhooks.
    pub fn published<'a>(&self, webhook_ids: impl IntoIterator<Item = &'a str>) {
        let outside = {
            let state = self.state();
            webhook_ids
                .into_iter()
                .any(|id| !state.watching.contains(id))
        };
        if outside {
            self.changed();
        }
    }

    /// Outcomes were recorded: a retry due within `QUIET_MS` of `now` may fall inside an answer.
    pub fn recorded(&self, outcomes: &[Outcome], now: UnixMillis) {
        if outcomes
            .iter()
            .any(|o| matches!(o.next, NextState::RetryAt(at) if at < now + QUIET_MS))
        {
            self.changed();
        }
    }
}
