//! The control plane: which configuration every replica serves, and who may change it.
//!
//! Single node: the YAML file, reloaded on SIGHUP or when it changes on disk. Fleet (etcd): the
//! replicas elect a leader on an etcd lease; the config is a versioned document in etcd that only
//! the leader writes (fenced on its leader key, so a deposed leader cannot), and every replica
//! watches it. Either way a new config is validated whole and swapped in with one pointer swap
//! (requests in flight finish on the config they started with); an invalid one is rejected, logged,
//! counted, shown in the admin status, and the old one keeps serving.

mod etcd;
mod mask;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;

pub use etcd::Leadership;
pub use mask::mask_secrets;

use crate::config::{Config, ConfigError, EtcdSettings};

/// Applies a validated config to the running gateway (routing table, master key, ...).
pub type Applier = Box<dyn Fn(&Config) + Send + Sync>;

/// Environment lookup for `os.environ/` references.
pub type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// One version of the configuration. Its Debug output leaves out the YAML (it may hold keys).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Version {
    /// 1, 2, ... in etcd; 0 for the file a single node started with.
    pub version: u64,
    pub yaml: String,
    /// Who wrote it (`file`, `seed`, `admin via <replica>`, `rollback to N`).
    pub author: String,
    pub at_ms: i64,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("version", &self.version)
            .field("author", &self.author)
            .field("at_ms", &self.at_ms)
            .field("yaml_bytes", &self.yaml.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// This replica is not the leader; the write belongs there.
    #[error("this replica is not the config leader")]
    NotLeader { leader_address: Option<String> },
    /// The store cannot be reached or refused a fenced write; nothing changed.
    #[error("config store unavailable: {0}")]
    Unavailable(String),
    #[error("config version {0} not found")]
    NoSuchVersion(u64),
}

/// What the admin status shows.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub version: u64,
    /// The last config this replica refused, and why.
    pub last_rejection: Option<String>,
}

pub struct ControlPlane {
    current: ArcSwap<Version>,
    apply: Applier,
    lookup: Lookup,
    rejection: Mutex<Option<String>>,
    /// Single node: versions applied since start (the fleet keeps its history in etcd).
    history: Mutex<Vec<Version>>,
    file: Option<PathBuf>,
    pub leadership: Option<Arc<Leadership>>,
}

fn now_ms() -> i64 {
    crate::limits::now_ms()
}

impl ControlPlane {
    /// Starts the control plane around the config the process booted with (`yaml` read from
    /// `file`). With etcd, joins the election and follows the config document (which wins over
    /// the file once it exists).
    pub async fn start(
        yaml: String,
        file: Option<PathBuf>,
        etcd: Option<(EtcdSettings, String, String)>,
        lookup: Lookup,
        apply: Applier,
    ) -> Arc<Self> {
        let boot = Version {
            version: 0,
            yaml,
            author: "file".into(),
            at_ms: now_ms(),
        };
        let plane = Arc::new_cyclic(|weak| {
            let leadership = etcd.map(|(settings, replica, address)| {
                Leadership::start(settings, replica, address, weak.clone())
            });
            ControlPlane {
                history: Mutex::new(vec![boot.clone()]),
                current: ArcSwap::from_pointee(boot),
                apply,
                lookup,
                rejection: Mutex::new(None),
                file,
                leadership,
            }
        });
        if let Some(l) = &plane.leadership {
            // Serve etcd's config from the start when it has one (bounded: etcd may be down).
            l.wait_loaded(Duration::from_secs(3)).await;
        }
        plane
    }

    pub fn current(&self) -> Arc<Version> {
        self.current.load_full()
    }

    pub fn status(&self) -> Status {
        Status {
            version: self.current().version,
            last_rejection: self.rejection.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    fn parse(&self, yaml: &str) -> Result<Config, ConfigError> {
        let lookup = self.lookup.clone();
        Config::parse(yaml, &move |name| lookup(name))
    }

    /// Validates and applies `v` (from the file, etcd or an admin call). An invalid config changes
    /// nothing; the rejection is logged, counted and kept for the admin status.
    fn adopt(&self, v: Version) -> Result<(), ConfigError> {
        match self.parse(&v.yaml) {
            Ok(config) => {
                (self.apply)(&config);
                tracing::info!(version = v.version, author = %v.author, "config applied");
                metrics::gauge!("switchboard_config_version").set(v.version as f64);
                *self.rejection.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.current.store(Arc::new(v));
                Ok(())
            }
            Err(e) => {
                tracing::error!(version = v.version, error = %e, "config rejected; the previous one keeps serving");
                metrics::counter!("switchboard_config_rejections_total").increment(1);
                *self.rejection.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("version {}: {e}", v.version));
                Err(e)
            }
        }
    }

    /// A new config as YAML text. Validated whole first; in a fleet, written by the leader only.
    pub async fn put(&self, yaml: String, author: String) -> Result<u64, ControlError> {
        self.parse(&yaml)?;
        match &self.leadership {
            Some(l) => l.write(yaml, author).await,
            None => {
                let version = self.current().version.max(self.history_max()) + 1;
                let v = Version {
                    version,
                    yaml,
                    author,
                    at_ms: now_ms(),
                };
                self.adopt(v.clone())?;
                self.history.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                Ok(version)
            }
        }
    }

    fn history_max(&self) -> u64 {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
    }

    /// Every version, newest first.
    pub async fn history(&self) -> Result<Vec<Version>, ControlError> {
        match &self.leadership {
            Some(l) => l.history().await,
            None => {
                let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner()).clone();
                h.reverse();
                Ok(h)
            }
        }
    }

    /// Puts an earlier version again (as a new version).
    pub async fn rollback(&self, version: u64, author: String) -> Result<u64, ControlError> {
        let old = self
            .history()
            .await?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or(ControlError::NoSuchVersion(version))?;
        self.put(old.yaml, format!("{author} (rollback to {version})"))
            .await
    }

    /// Single node: re-reads the file (SIGHUP, or a change on disk). In a fleet the file is only a
    /// seed, so this does nothing there.
    pub fn reload_file(&self) {
        let (Some(path), None) = (&self.file, &self.leadership) else {
            return;
        };
        match std::fs::read_to_string(path) {
            Ok(yaml) if yaml == self.current().yaml => {}
            Ok(yaml) => {
                let version = self.current().version.max(self.history_max()) + 1;
                let v = Version {
                    version,
                    yaml,
                    author: "file".into(),
                    at_ms: now_ms(),
                };
                if self.adopt(v.clone()).is_ok() {
                    self.history.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                }
            }
            Err(e) => tracing::error!(path = %path.display(), error = %e, "cannot re-read the config file"),
        }
    }

    /// Single node: reload on SIGHUP and when the file changes (polled every second).
    pub fn watch_file(self: &Arc<Self>) {
        if self.file.is_none() || self.leadership.is_some() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut modified = None;
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<()>();
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    () = hangup => true,
                };
                let Some(plane) = weak.upgrade() else { return };
                let Some(path) = plane.file.clone() else { return };
                let m = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                if forced || (modified.is_some() && m != modified) {
                    if forced {
                        tracing::info!("SIGHUP: reloading the config file");
                    }
                    plane.reload_file();
                }
                modified = m;
            }
        });
    }
}
