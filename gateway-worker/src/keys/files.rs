//! Re-reading the key files: on a timer, and when asked (SIGHUP).
//!
//! Contents are compared, not modification times: a Kubernetes secret mount swaps a
//! symlink to a new directory, which leaves the old file's mtime as it was, and reading
//! a few small files every few seconds costs nothing. A file that cannot be used
//! (missing, unreadable, empty, not a header value) keeps the key in use: a rotation
//! half done must not take a provider down. Logs name the provider and the path, never
//! the key.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::HeaderValue;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ProviderKey;
use crate::config::{ApiKey, Config, KeySource};

/// Every provider key that comes from an `api_key_file`, and where.
#[derive(Debug)]
pub struct KeyFiles {
    files: Vec<KeyFile>,
    /// One reload at a time: two overlapping ones could store the older read last.
    reloading: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct KeyFile {
    provider: String,
    path: PathBuf,
    key: ProviderKey,
    /// Whether the last read could not be used: the timer warns once per failure, not
    /// on every tick.
    failing: AtomicBool,
}

/// Why a reload was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Timer,
    /// SIGHUP or `RunningWorker::reload_keys`: every problem is reported.
    Asked,
}

/// What one reload did, by provider name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyReload {
    /// Providers whose key changed: their next attempts send the new one.
    pub changed: Vec<String>,
    /// Providers whose key file could not be used: they keep the key they had.
    pub kept: Vec<String>,
}

/// Why a key file's content is not taken. No variant holds any of the content.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read it: {0}")]
    Unreadable(std::io::Error),
    #[error("it is empty")]
    Empty,
    /// A line break or control character inside the key: no header could carry it.
    #[error("its content is not a valid key (not a header value)")]
    NotAHeaderValue,
}

impl KeyFiles {
    /// The key files of `config`'s providers, each with the key its calls send
    /// (`key_of(provider name)`, the routes' [`ProviderKey`]).
    pub fn new(config: &Config, key_of: impl Fn(&str) -> Option<ProviderKey>) -> KeyFiles {
        let files = config
            .providers
            .iter()
            .filter_map(|(name, provider)| {
                let KeySource::File(path) = provider.key_source() else {
                    return None;
                };
                Some(KeyFile {
                    provider: name.clone(),
                    path,
                    key: key_of(name)?,
                    failing: AtomicBool::new(false),
                })
            })
            .collect();
        KeyFiles {
            files,
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The key files of `config`'s providers (see [`KeyFiles::new`]), re-read every
    /// `worker.key_reload_interval` by a task in `services` until `stop` (no task when no
    /// provider has a key file).
    pub fn watched(
        config: &Config,
        key_of: impl Fn(&str) -> Option<ProviderKey>,
        services: &TaskTracker,
        stop: CancellationToken,
    ) -> Arc<KeyFiles> {
        let files = Arc::new(KeyFiles::new(config, key_of));
        if !files.files.is_empty() {
            let every = config.worker.key_reload_interval;
            services.spawn(Arc::clone(&files).watch(every, stop));
        }
        files
    }

    /// Re-reads every key file now; a file that cannot be used is warned about every time.
    pub async fn reload_now(&self) -> KeyReload {
        self.reload(Trigger::Asked).await
    }

    /// Re-reads every key file every `every` until `stop`. The first read is one interval
    /// after start: start-up has just read them.
    async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {
                    self.reload(Trigger::Timer).await;
                }
            }
        }
    }

    async fn reload(&self, trigger: Trigger) -> KeyReload {
        let _one_at_a_time = self.reloading.lock().await;
        let mut report = KeyReload::default();
        for file in &self.files {
            let provider = file.provider.clone();
            match file.reload(trigger).await {
                Ok(true) => report.changed.push(provider),
                Ok(false) => {}
                Err(()) => report.kept.push(provider),
            }
        }
        report
    }
}

impl KeyFile {
    /// Reads the file and swaps in a changed key: whether it changed, or `Err` (already
    /// logged) when the file cannot be used.
    async fn reload(&self, trigger: Trigger) -> Result<bool, ()> {
        let key = match self.read().await {
            Ok(key) => key,
            Err(err) => {
                let already = self.failing.swap(true, Ordering::Relaxed);
                if !already || trigger == Trigger::Asked {
                    tracing::warn!(
                        provider = %self.provider,
                        path = %self.path.display(),
                        error = %err,
                        "provider key file not usable; keeping the key in use"
                    );
                }
                return Err(());
            }
        };
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                provider = %self.provider,
                path = %self.path.display(),
                "provider key file usable again"
            );
        }
        if self.key.is(key.expose()) {
            return Ok(false);
        }
        self.key.replace(key);
        tracing::info!(provider = %self.provider, "provider key reloaded");
        Ok(true)
    }

    /// The key in the file, trimmed, if it can be sent.
    async fn read(&self) -> Result<ApiKey, KeyFileError> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(KeyFileError::Unreadable)?;
        let key = ApiKey::new(text.trim());
        drop(text);
        if key.expose().is_empty() {
            return Err(KeyFileError::Empty);
        }
        if HeaderValue::from_str(key.expose()).is_err() {
            return Err(KeyFileError::NotAHeaderValue);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::routing::Router;

    /// Each provider's key as `router`'s calls take it.
    fn key_of(router: &Router) -> impl Fn(&str) -> Option<ProviderKey> + '_ {
        |name| router.provider(name).map(|p| p.key.clone())
    }

    fn config(dir: &Path) -> Config {
        let text = r#"
[providers.filed]
kind = "openai"
api_key_file = "filed.key"
[providers.open]
kind = "openai_compatible"
base_url = "http://127.0.0.1:1/v1"
[models.m]
deployments = [{ provider = "filed", model = "x" }, { provider = "open", model = "y" }]
"#;
        std::fs::write(dir.join("filed.key"), "old-key-1\n").unwrap();
        crate::config::load_str(text, Some(dir)).unwrap()
    }

    fn current(router: &Router) -> String {
        let key = router.provider("filed").unwrap().key.current().unwrap();
        key.expose().to_owned()
    }

    /// Replaces `path` the way a secret mount does: a new file renamed over the old.
    fn replace(path: &Path, text: &str) {
        let next = path.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, path).unwrap();
    }

    #[tokio::test]
    async fn a_changed_file_swaps_the_key_and_an_unchanged_one_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let router = Router::build(&config).unwrap();
        let files = KeyFiles::new(&config, key_of(&router));
        assert_eq!(files.files.len(), 1, "only providers with a key file");

        assert_eq!(files.reload_now().await, KeyReload::default());
        let in_flight = router.provider("filed").unwrap().key.current().unwrap();
        replace(&dir.path().join("filed.key"), "  new-key-2\n");
        let report = files.reload_now().await;
        assert_eq!(report.changed, vec!["filed".to_owned()]);
        assert!(report.kept.is_empty());
        assert_eq!(current(&router), "new-key-2");
        assert_eq!(in_flight.expose(), "old-key-1", "a call keeps its key");
        assert_eq!(files.reload_now().await, KeyReload::default());
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_used_keeps_the_key_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let router = Router::build(&config).unwrap();
        let files = KeyFiles::new(&config, key_of(&router));
        let path = dir.path().join("filed.key");
        for (text, expected) in [(" \n", "it is empty"), ("new\nkey", "not a valid key")] {
            replace(&path, text);
            let err = files.files[0].read().await.unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            let report = files.reload_now().await;
            assert_eq!(report.kept, vec!["filed".to_owned()]);
            assert_eq!(current(&router), "old-key-1");
        }
        std::fs::remove_file(&path).unwrap();
        let err = files.files[0].read().await.unwrap_err();
        assert!(matches!(err, KeyFileError::Unreadable(_)), "{err:?}");
        assert_eq!(files.reload_now().await.kept, vec!["filed".to_owned()]);
        assert_eq!(current(&router), "old-key-1");

        replace(&path, "new-key-2");
        assert_eq!(files.reload_now().await.changed, vec!["filed".to_owned()]);
        assert!(!files.files[0].failing.load(Ordering::Relaxed));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_secret_mount_swapping_its_symlink_is_seen() {
        use std::os::unix::fs::symlink;
        // Kubernetes: key -> ..data/key, ..data -> ..2024_v1; an update writes ..2024_v2
        // and renames a new ..data link over the old one.
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path();
        std::fs::create_dir(mount.join("..v1")).unwrap();
        std::fs::write(mount.join("..v1/key"), "old-key-1").unwrap();
        symlink("..v1", mount.join("..data")).unwrap();
        symlink("..data/key", mount.join("filed.key.link")).unwrap();
        let mut config = config(mount);
        config.providers.get_mut("filed").unwrap().api_key_file =
            Some(mount.join("filed.key.link"));
        let router = Router::build(&config).unwrap();
        let files = KeyFiles::new(&config, key_of(&router));

        std::fs::create_dir(mount.join("..v2")).unwrap();
        std::fs::write(mount.join("..v2/key"), "new-key-2").unwrap();
        symlink("..v2", mount.join("..data_tmp")).unwrap();
        std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
        assert_eq!(files.reload_now().await.changed, vec!["filed".to_owned()]);
        assert_eq!(current(&router), "new-key-2");
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_rereads_on_its_interval_and_stops_with_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let router = Router::build(&config).unwrap();
        let files = Arc::new(KeyFiles::new(&config, key_of(&router)));
        let stop = CancellationToken::new();
        let watch = tokio::spawn(Arc::clone(&files).watch(Duration::from_secs(5), stop.clone()));
        replace(&dir.path().join("filed.key"), "new-key-2");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(current(&router), "old-key-1", "not before the interval");
        // Past the first tick: the reload holds the lock until its file I/O is done.
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(files.reloading.lock().await);
        assert_eq!(current(&router), "new-key-2");
        stop.cancel();
        watch.await.unwrap();
    }
}
