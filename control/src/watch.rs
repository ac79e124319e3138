//! The manifests directory, loaded once and then watched.
//!
//! A notify watcher (inotify on Linux) feeds raw events to a thread that
//! debounces them itself: after the first event it waits until the directory
//! has been quiet for the debounce interval (at most [`MAX_BATCH_WAIT`]), then
//! re-reads the files named in the batch, skips the ones whose bytes did not
//! change, and hands the rest to [`Controller::apply_files`]. An event on
//! anything that is not a manifest file (a directory, the `..data` symlink swap
//! of a ConfigMap volume, an overflow) rescans the whole tree. The sync
//! latency recorded is from the first event of the batch to the publish, so
//! it includes the debounce wait.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use crate::controller::{Controller, SyncOutcome};
use crate::error::LoadError;
use crate::manifest::{self, ParsedFile};

/// The longest a busy directory can delay a sync.
pub const MAX_BATCH_WAIT: Duration = Duration::from_millis(500);
/// The default quiet interval that ends a batch.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(20);

/// Errors starting the watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The directory cannot be watched.
    #[error("{dir}: cannot watch the manifests directory: {source}")]
    Watch {
        /// The directory.
        dir: String,
        /// notify's error.
        #[source]
        source: notify::Error,
    },
    /// The directory cannot be read.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// A running watcher; dropping it stops watching (the thread ends).
#[derive(Debug)]
pub struct WatchHandle {
    watcher: Option<notify::RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl WatchHandle {
    /// Stops watching and waits for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.watcher.take()); // closes the event channel
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Re-reads `candidates` and returns the changes against `known`.
fn collect_changes(
    candidates: BTreeSet<PathBuf>,
    known: &mut BTreeMap<PathBuf, u64>,
) -> BTreeMap<PathBuf, Option<ParsedFile>> {
    let mut changes = BTreeMap::new();
    for path in candidates {
        if !manifest::is_manifest_file(&path) {
            continue;
        }
        // Gone (or never there): its objects go. Present but unusable (no
        // permission, a symlink loop, a FIFO, too large): an error, and the
        // file's last good objects keep serving (`Controller::apply_files`).
        let gone = matches!(std::fs::symlink_metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            || matches!(std::fs::metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if gone {
            if known.remove(&path).is_some() {
                changes.insert(path, None);
            }
            continue;
        }
        let parsed = match manifest::read_manifest(&path) {
            Ok(bytes) => {
                let h = content_hash(&bytes);
                if known.get(&path) == Some(&h) {
                    continue;
                }
                known.insert(path.clone(), h);
                match String::from_utf8(bytes) {
                    Ok(text) => manifest::parse_str(&path, &text),
                    Err(_) => manifest::load_file(&path), // reports the UTF-8 error
                }
            }
            Err(e) => {
                // Known by the hash of its error: the next event re-reads
                // it, and an unchanged failure is not a change.
                let msg = e.to_string();
                let h = content_hash(msg.as_bytes());
                if known.get(&path) == Some(&h) {
                    continue;
                }
                known.insert(path.clone(), h);
                ParsedFile { errors: vec![e], ..ParsedFile::default() }
            }
        };
        changes.insert(path, Some(parsed));
    }
    changes
}

/// Walks the tree: the manifest files, plus what the walk could not use.
/// Entries named like manifests that cannot be read (no permission, a
/// dangling or looping symlink, a FIFO) join the files, so that reading
/// them reports the error and keeps their last good objects. Directories
/// the walk left out (a symlink loop back into the tree, an unreadable
/// directory) are reported to the controller as files of their own, with
/// just the error: they show in the status and clear when fixed
/// (`problems` holds the last walk's).
fn walk(
    root: &Path,
    problems: &mut BTreeMap<PathBuf, String>,
    changes: &mut BTreeMap<PathBuf, Option<ParsedFile>>,
) -> Result<BTreeSet<PathBuf>, LoadError> {
    let (files, found) = manifest::manifest_files_checked(root)?;
    let mut files: BTreeSet<PathBuf> = files.into_iter().collect();
    let mut now = BTreeMap::new();
    for (path, e) in found {
        if manifest::is_manifest_file(&path) && !matches!(e, LoadError::Loop { .. }) {
            files.insert(path);
            continue;
        }
        let msg = e.to_string();
        if problems.get(&path) != Some(&msg) {
            tracing::warn!("{msg}");
            changes.insert(path.clone(), Some(ParsedFile { errors: vec![e], ..ParsedFile::default() }));
        }
        now.insert(path, msg);
    }
    for gone in problems.keys().filter(|p| !now.contains_key(*p)) {
        changes.insert(gone.clone(), None);
    }
    *problems = now;
    Ok(files)
}

/// Loads `dir` into the controller, marks it ready, and watches it.
pub fn watch_dir(controller: Arc<Controller>, dir: &Path, debounce: Duration) -> Result<WatchHandle, WatchError> {
    // notify reports absolute paths; load through the same spelling, or a
    // relative `dir` makes every file count twice (and clash with itself)
    // at the first change.
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let dir = canonical.as_path();
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |ev| {
        let _ = tx.send(ev);
    })
    .map_err(|source| WatchError::Watch { dir: dir.display().to_string(), source })?;
    watcher
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|source| WatchError::Watch { dir: dir.display().to_string(), source })?;

    // Initial full load (events already queue up, so nothing is missed).
    let t0 = Instant::now();
    let mut known = BTreeMap::new();
    let mut problems = BTreeMap::new();
    let mut changes = BTreeMap::new();
    let all = walk(dir, &mut problems, &mut changes)?;
    changes.extend(collect_changes(all, &mut known));
    let outcome = controller.apply_files(changes);
    controller.observe_sync(t0);
    controller.set_ready();
    tracing::info!(dir = %dir.display(), files = known.len(), ?outcome, "manifests loaded; watching for changes");

    let root = dir.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("svcgate-watch".into())
        .spawn(move || watch_loop(&controller, &root, &rx, debounce, known, problems))
        .map_err(|e| WatchError::Load(LoadError::read(dir, e)))?;
    Ok(WatchHandle { watcher: Some(watcher), thread: Some(thread) })
}

fn watch_loop(
    controller: &Controller,
    root: &Path,
    rx: &mpsc::Receiver<notify::Result<notify::Event>>,
    debounce: Duration,
    mut known: BTreeMap<PathBuf, u64>,
    mut problems: BTreeMap<PathBuf, String>,
) {
    while let Ok(first) = rx.recv() {
        let t0 = Instant::now();
        let mut paths = BTreeSet::new();
        let mut rescan = false;
        let take = |ev: notify::Result<notify::Event>, paths: &mut BTreeSet<PathBuf>, rescan: &mut bool| match ev {
            Ok(ev) => {
                if ev.need_rescan() || ev.paths.is_empty() {
                    *rescan = true;
                }
                for p in ev.paths {
                    if !manifest::is_manifest_file(&p) || p.is_dir() {
                        *rescan = true;
                    }
                    paths.insert(p);
                }
            }
            Err(e) => {
                tracing::warn!("watch error: {e}; rescanning");
                *rescan = true;
            }
        };
        take(first, &mut paths, &mut rescan);
        loop {
            match rx.recv_timeout(debounce) {
                Ok(ev) => take(ev, &mut paths, &mut rescan),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if t0.elapsed() >= MAX_BATCH_WAIT {
                break;
            }
        }
        let mut candidates: BTreeSet<PathBuf> = paths.into_iter().filter(|p| manifest::is_manifest_file(p)).collect();
        let mut changes = BTreeMap::new();
        if rescan {
            match walk(root, &mut problems, &mut changes) {
                Ok(list) => candidates.extend(list),
                Err(e) => tracing::warn!("{e}"),
            }
            candidates.extend(known.keys().cloned());
        }
        changes.extend(collect_changes(candidates, &mut known));
        if changes.is_empty() {
            continue;
        }
        let files = changes.len();
        let outcome = controller.apply_files(changes);
        if outcome != SyncOutcome::Unchanged {
            controller.observe_sync(t0);
        }
        tracing::debug!(files, ?outcome, elapsed_us = t0.elapsed().as_micros() as u64, "manifests changed");
    }
}
