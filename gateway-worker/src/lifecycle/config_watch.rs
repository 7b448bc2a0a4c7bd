//! `--watch-config`: a config file re-read on a timer, for mounts that change files in
//! place (a Kubernetes ConfigMap), where no one sends SIGHUP.
//!
//! Contents are compared, not modification times: a mount that swaps a symlink keeps the
//! old file's mtime.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `--watch-config`: the config file's content, compared every interval (a mount that
/// swaps a symlink keeps the old mtime, so times are not compared).
#[derive(Debug)]
pub struct ConfigWatch {
    path: PathBuf,
    every: Option<tokio::time::Interval>,
    content: Option<Vec<u8>>,
}

impl ConfigWatch {
    /// Watches `path` every `every` (never with `None` or zero), from its content now.
    pub fn new(path: &Path, every: Option<Duration>) -> ConfigWatch {
        let every = every.filter(|every| !every.is_zero()).map(|every| {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        ConfigWatch {
            path: path.to_owned(),
            every,
            content: std::fs::read(path).ok(),
        }
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns once the file's content differs from the last seen; never without
    /// `--watch-config`. A file that cannot be read is not a change.
    pub async fn changed(&mut self) {
        let Some(every) = &mut self.every else {
            return std::future::pending().await;
        };
        loop {
            every.tick().await;
            let now = tokio::fs::read(&self.path).await.ok();
            if now.is_some() && now != self.content {
                self.content = now;
                return;
            }
        }
    }

    /// The content now is the one applied (SIGHUP re-read it).
    pub fn seen(&mut self) {
        if let Ok(content) = std::fs::read(&self.path) {
            self.content = Some(content);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_millis(10);

    /// Waits for the watch to see a change; panics after 10 s.
    async fn changed(watch: &mut ConfigWatch) {
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("the watch saw the change");
    }

    #[tokio::test]
    async fn a_changed_content_is_seen_once_and_an_applied_one_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("llmq.toml");
        std::fs::write(&path, "a = 1").unwrap();
        let mut watch = ConfigWatch::new(&path, Some(EVERY));
        assert_eq!(watch.path(), path);

        std::fs::write(&path, "a = 2").unwrap();
        changed(&mut watch).await;

        // SIGHUP applied this content already: not a change.
        std::fs::write(&path, "a = 3").unwrap();
        watch.seen();
        let quiet = tokio::time::timeout(EVERY * 10, watch.changed()).await;
        assert!(quiet.is_err(), "no change after seen()");

        // A file that cannot be read is not a change; it coming back changed is.
        std::fs::remove_file(&path).unwrap();
        let quiet = tokio::time::timeout(EVERY * 10, watch.changed()).await;
        assert!(quiet.is_err(), "a missing file is not a change");
        std::fs::write(&path, "a = 4").unwrap();
        changed(&mut watch).await;
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_interval_nothing_is_ever_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("llmq.toml");
        for every in [None, Some(Duration::ZERO)] {
            let mut watch = ConfigWatch::new(&path, every);
            let never = tokio::time::timeout(Duration::from_secs(3600), watch.changed()).await;
            assert!(never.is_err());
        }
    }
}
