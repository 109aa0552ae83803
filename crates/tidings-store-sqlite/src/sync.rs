//! Syncs the write-ahead log to disk on a thread of its own, so the writer never waits for the disk.
//!
//! The writer commits without a sync (`synchronous = NORMAL`), hands the answers that promise
//! durable rows to this thread, and goes on with the next jobs. The thread takes every answer
//! waiting, syncs the WAL once, then sends them: one sync covers all commits made before it began,
//! and the next commits' work overlaps it. That is what `synchronous = FULL` does at each commit, on
//! the writer's time.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};

/// Sends a batch of answers with the sync's error, if it failed.
pub type Settle<T> = fn(T, Option<&str>);

/// What the sync thread tells those outside it.
#[derive(Default)]
pub struct SyncState {
    /// Why syncs stopped, once one failed.
    broken: OnceLock<String>,
    /// Syncs done so far.
    #[cfg(test)]
    syncs: AtomicU64,
}

impl SyncState {
    /// Why nothing can be promised durable any more, once a sync failed.
    pub fn broken(&self) -> Option<&str> {
        self.broken.get().map(String::as_str)
    }

    #[cfg(test)]
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Acquire)
    }
}

/// A handle on the syncing thread; dropping it stops the thread once the answers already handed
/// over are sent.
pub struct Syncer<T> {
    queue: mpsc::Sender<Vec<T>>,
    settle: Settle<T>,
    state: Arc<SyncState>,
}

impl<T: Send + 'static> Syncer<T> {
    /// Starts the thread for the database file `database`. Fails when its WAL cannot be opened: the
    /// writer then lets SQLite sync each commit itself.
    pub fn start(database: &Path, settle: Settle<T>) -> io::Result<Self> {
        let mut wal = Wal::open(database)?;
        let (queue, waiting) = mpsc::channel::<Vec<T>>();
        let state = Arc::new(SyncState::default());
        let shared = state.clone();
        std::thread::Builder::new()
            .name("tidings-sync".into())
            .spawn(move || {
                // After a failed sync the kernel may have dropped the pages it could not write, and a
                // later sync would succeed without them: no answer is promised durable again.
                while let Ok(mut batch) = waiting.recv() {
                    while let Ok(more) = waiting.try_recv() {
                        batch.extend(more);
                    }
                    if shared.broken().is_none()
                        && let Err(error) = wal.sync()
                    {
                        tracing::error!(%error, "syncing the write-ahead log failed; events are no longer accepted");
                        let _ = shared.broken.set(format!(
                            "syncing the write-ahead log to disk failed ({error}); restart Tidings once the disk is sound"
                        ));
                    }
                    #[cfg(test)]
                    shared.syncs.fetch_add(1, Ordering::Release);
                    for answer in batch {
                        settle(answer, shared.broken());
                    }
                }
            })?;
        Ok(Self {
            queue,
            settle,
            state,
        })
    }

    /// Sends `answers` once everything committed so far is on disk.
    pub fn after_sync(&self, answers: Vec<T>) {
        if let Err(mpsc::SendError(answers)) = self.queue.send(answers) {
            for answer in answers {
                (self.settle)(answer, Some("the storage sync thread has stopped"));
            }
        }
    }

    pub fn state(&self) -> &Arc<SyncState> {
        &self.state
    }
}

/// The WAL file as last opened, known by its inode: SQLite deletes the WAL when its last
/// connection closes and makes a new one on the next write.
struct Wal {
    path: PathBuf,
    directory: PathBuf,
    file: File,
    inode: u64,
}

impl Wal {
    fn open(database: &Path) -> io::Result<Self> {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        let path = PathBuf::from(path);
        let directory = match database.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let (file, inode) = open_synced(&path, &directory)?;
        Ok(Self {
            path,
            directory,
            file,
            inode,
        })
    }

    /// Makes every commit finished before the call durable.
    ///
    /// Such a commit is in the WAL found at the path now, or in an older one, which SQLite
    /// checkpointed into the database and synced before deleting it.
    fn sync(&mut self) -> io::Result<()> {
        let inode = match std::fs::metadata(&self.path) {
            Ok(found) => found.ino(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        if inode != self.inode {
            (self.file, self.inode) = open_synced(&self.path, &self.directory)?;
        }
        self.file.sync_data()
    }
}

/// Opens a WAL read-only (a sync needs no more) and syncs the directory naming it, which SQLite
/// leaves to its first sync of the file.
fn open_synced(path: &Path, directory: &Path) -> io::Result<(File, u64)> {
    let file = File::open(path)?;
    let inode = file.metadata()?.ino();
    File::open(directory)?.sync_all()?;
    Ok((file, inode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn settle(answer: mpsc::Sender<Option<String>>, error: Option<&str>) {
        drop(answer.send(error.map(str::to_owned)));
    }

    /// A database path in `dir` whose WAL exists; returns the database and WAL paths.
    fn with_wal(dir: &tempfile::TempDir) -> (PathBuf, PathBuf) {
        let wal = dir.path().join("t.db-wal");
        std::fs::write(&wal, b"frames").expect("write a WAL");
        (dir.path().join("t.db"), wal)
    }

    #[test]
    fn a_missing_wal_is_an_error_at_start() {
        let dir = tempfile::tempdir().expect("a temp dir");
        assert!(Syncer::start(&dir.path().join("none.db"), settle).is_err());
    }

    #[test]
    fn answers_follow_a_sync_of_the_wal_at_the_path_now() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (database, wal_path) = with_wal(&dir);
        let mut wal = Wal::open(&database).expect("open the WAL");
        let first = wal.inode;
        wal.sync().expect("sync");
        // The WAL deleted (its last connection closed) and made anew by the next write.
        std::fs::remove_file(&wal_path).expect("delete the WAL");
        wal.sync().expect("no WAL: nothing to sync");
        std::fs::write(&wal_path, b"second").expect("write a new WAL");
        wal.sync().expect("sync the new WAL");
        assert_eq!(wal.inode, std::fs::metadata(&wal_path).expect("stat").ino());
        // The deleted WAL stays open, so its inode number cannot be given to the new one.
        assert_ne!(wal.inode, first, "the new WAL is a new file");

        let syncer = Syncer::start(&database, settle).expect("start");
        let (to, from) = channel();
        syncer.after_sync(vec![to.clone(), to]);
        assert_eq!(from.recv().expect("an answer"), None);
        assert_eq!(from.recv().expect("an answer"), None);
        assert_eq!(syncer.state().syncs(), 1, "one sync for the batch");
    }

    #[test]
    fn after_a_failed_sync_every_answer_fails() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (database, wal_path) = with_wal(&dir);
        let syncer = Syncer::start(&database, settle).expect("start");
        assert_eq!(syncer.state().broken(), None);
        // A path that cannot be resolved (a link to itself) makes the sync fail.
        std::fs::remove_file(&wal_path).expect("delete the WAL");
        std::os::unix::fs::symlink(&wal_path, &wal_path).expect("a link loop");
        let (to, from) = channel();
        syncer.after_sync(vec![to.clone()]);
        let error = from.recv().expect("an answer").expect("the sync failed");
        assert!(error.contains("restart Tidings"), "{error}");
        assert!(syncer.state().broken().is_some());
        // A sound WAL again does not make later answers durable.
        std::fs::remove_file(&wal_path).expect("delete the link");
        std::fs::write(&wal_path, b"frames").expect("write a WAL");
        syncer.after_sync(vec![to]);
        assert!(from.recv().expect("an answer").is_some());
    }
}
