//! The live flows, as the API's `/connections` lists them: one
//! [`FlowInfo`] per endpoint from the moment the relay counts it until the
//! flow ends, with byte counters its endpoint and its inbound's direct
//! sends add to. The table holds no more entries than live endpoints,
//! which `max_endpoints` caps. It lists and counts; ending a flow is its
//! endpoint's business (kill it in the tree).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::flow::FlowKey;

/// One live flow.
#[derive(Debug)]
pub struct FlowInfo {
    pub id: u64,
    pub key: FlowKey,
    /// Its first datagram's destination.
    pub first: SocketAddr,
    /// The route's target (a dialer or group) and the dialer it went through.
    pub route: String,
    pub dialer: String,
    /// The endpoint's name under `udp/endpoints`.
    pub name: String,
    /// When it started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// The kind of inbound it came through (`forward`, `tproxy`,
    /// `socks5`).
    pub inbound: &'static str,
    /// Bytes sent towards the destination and received from it.
    upload: AtomicU64,
    download: AtomicU64,
}

impl FlowInfo {
    pub fn new(id: u64, key: FlowKey, first: SocketAddr, route: &str, dialer: &str) -> Self {
        Self {
            id,
            key,
            first,
            route: route.to_string(),
            dialer: dialer.to_string(),
            name: key.name(id),
            started_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            inbound: "forward",
            upload: AtomicU64::new(0),
            download: AtomicU64::new(0),
        }
    }

    /// The same flow, come through an inbound of kind `inbound`.
    pub fn came_through(mut self, inbound: &'static str) -> Self {
        self.inbound = inbound;
        self
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.upload.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.download.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn upload(&self) -> u64 {
        self.upload.load(Ordering::Relaxed)
    }

    pub fn download(&self) -> u64 {
        self.download.load(Ordering::Relaxed)
    }
}

/// Every live flow by id, and the bytes of flows that ended.
#[derive(Default)]
pub struct LiveFlows {
    flows: Mutex<BTreeMap<u64, Arc<FlowInfo>>>,
    ended_upload: AtomicU64,
    ended_download: AtomicU64,
}

impl LiveFlows {
    pub(crate) fn add(&self, flow: Arc<FlowInfo>) {
        self.lock().insert(flow.id, flow);
    }

    pub(crate) fn remove(&self, id: u64) {
        if let Some(flow) = self.lock().remove(&id) {
            self.ended_upload
                .fetch_add(flow.upload(), Ordering::Relaxed);
            self.ended_download
                .fetch_add(flow.download(), Ordering::Relaxed);
        }
    }

    /// The live flows, oldest first.
    pub fn list(&self) -> Vec<Arc<FlowInfo>> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Arc<FlowInfo>> {
        self.lock().get(&id).cloned()
    }

    /// Bytes sent and received by every flow since start, live ones included.
    pub fn totals(&self) -> (u64, u64) {
        let live = self.list();
        let up: u64 = live.iter().map(|f| f.upload()).sum();
        let down: u64 = live.iter().map(|f| f.download()).sum();
        (
            up + self.ended_upload.load(Ordering::Relaxed),
            down + self.ended_download.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<FlowInfo>>> {
        self.flows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_flow_leaves_the_list_and_its_bytes_stay_in_the_totals() {
        let flows = LiveFlows::default();
        let key = FlowKey {
            client: "127.0.0.1:5000".parse().unwrap(),
            dst: None,
        };
        let flow = Arc::new(FlowInfo::new(
            7,
            key,
            "127.0.0.1:53".parse().unwrap(),
            "g",
            "a",
        ));
        flows.add(flow.clone());
        flow.sent(10);
        flow.received(30);
        assert_eq!(flows.list().len(), 1);
        assert_eq!(flows.get(7).unwrap().name, "127.0.0.1:5000#7");
        flows.remove(7);
        flows.remove(7);
        assert!(flows.list().is_empty());
        assert_eq!(flows.totals(), (10, 30));
    }
}
