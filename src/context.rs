//! What the service-level actors (admin, telemetry) share: the root of the
//! tree, the metrics, and facts about this run. Built once by `app` before
//! the tree starts; read-mostly.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ward_actors::dialer::Dialers;
use ward_actors::dns::resolver::Resolver;
use ward_actors::udp::Relay;
use ward_supervision::{SupervisorView, TreeNode};

use crate::reload::{ReloadError, ReloadReport, Reloader};
use crate::telemetry::process::NofileLimit;
use crate::telemetry::Metrics;

/// Shared facts and handles of one running service.
pub struct ServiceContext {
    /// The root supervisor's view, for tree snapshots and kills by path.
    pub root: SupervisorView,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    /// The open-files limit after startup raised it.
    pub nofile: NofileLimit,
    /// Where the configuration came from.
    pub config_source: String,
    /// Every dialer and group.
    pub dialers: Arc<Dialers>,
    /// The DNS forwarder's query path, when DNS is configured.
    pub dns: Option<Arc<Resolver>>,
    /// The UDP relay, when configured.
    pub udp: Option<Arc<Relay>>,
    /// The runtime the tree runs on (the API serves from a thread of its
    /// own and runs what may start actors here).
    pub runtime: tokio::runtime::Handle,
    /// The address `/metrics` is served on, once bound.
    metrics_addr: Mutex<Option<SocketAddr>>,
    /// Applies reloads; set once the tree has started.
    reloader: OnceLock<Arc<Reloader>>,
}

impl ServiceContext {
    pub fn new(
        root: SupervisorView,
        metrics: Arc<Metrics>,
        nofile: NofileLimit,
        config_source: String,
        dialers: Arc<Dialers>,
        dns: Option<Arc<Resolver>>,
        udp: Option<Arc<Relay>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            root,
            metrics,
            started: Instant::now(),
            nofile,
            config_source,
            dialers,
            dns,
            udp,
            runtime: tokio::runtime::Handle::current(),
            metrics_addr: Mutex::new(None),
            reloader: OnceLock::new(),
        })
    }

    /// The whole tree as it is now; the root says which configuration
    /// generation runs.
    pub fn tree(&self) -> TreeNode {
        let mut tree = self.root.snapshot("", "supervisor");
        tree.detail = Some(format!("config generation {}", self.generation()));
        tree
    }

    pub(crate) fn set_reloader(&self, reloader: Arc<Reloader>) {
        let _ = self.reloader.set(reloader);
    }

    /// The configuration generation running (1 until a reload).
    pub fn generation(&self) -> u64 {
        self.reloader.get().map_or(1, |r| r.generation())
    }

    /// Reads the configuration file again and applies what changed.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        match self.reloader.get() {
            Some(reloader) => reloader.reload(self).await,
            None => Ok(ReloadReport::default()),
        }
    }

    pub fn set_metrics_addr(&self, addr: Option<SocketAddr>) {
        *self.metrics_addr.lock().unwrap_or_else(|e| e.into_inner()) = addr;
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        *self.metrics_addr.lock().unwrap_or_else(|e| e.into_inner())
    }
}
