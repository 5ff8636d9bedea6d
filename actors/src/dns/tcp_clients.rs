//! The TCP clients of one DNS listen address, capped per client address
//! and in total. Past the total cap the connection idle longest (no query
//! in flight, no answer owed) is closed to make room, as RFC 7766 advises
//! servers under pressure to do; when none is idle the new one is refused.
//! The table outlives the listener's actor: a killed listener's accepted
//! connections keep being served.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::task::AbortHandle;

use super::limits::client_key;
use super::metrics::{DnsMetrics, Dropped};

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its client address holds its share already.
    PerClient,
    /// Every connection is busy and the total cap is reached.
    Full,
}

struct Conn {
    ip: IpAddr,
    /// Queries read and not yet answered.
    in_flight: u32,
    /// When it last read a query or wrote an answer.
    active: Instant,
    /// Its task, once spawned.
    task: Option<AbortHandle>,
}

#[derive(Default)]
struct Table {
    conns: HashMap<u64, Conn>,
    per_ip: HashMap<IpAddr, usize>,
    next: u64,
}

impl Table {
    fn forget(&mut self, id: u64) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if let Some(count) = self.per_ip.get_mut(&conn.ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&conn.ip);
            }
        }
        Some(conn)
    }

    /// The connection idle longest, if any is idle.
    fn idlest(&self) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| c.in_flight == 0)
            .min_by_key(|(_, c)| c.active)
            .map(|(id, _)| *id)
    }
}

/// Every TCP client of one listen address.
pub struct TcpClients {
    table: Mutex<Table>,
    per_client: usize,
    total: usize,
    metrics: Arc<DnsMetrics>,
}

/// One admitted connection; dropping it gives its place back.
pub struct ClientSlot {
    clients: Arc<TcpClients>,
    id: u64,
}

impl TcpClients {
    pub fn new(per_client: usize, total: usize, metrics: Arc<DnsMetrics>) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(Table::default()),
            per_client,
            total,
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `ip`, closing the idlest one when the total
    /// cap is reached. Refusals and closings are counted.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<ClientSlot, Refusal> {
        let ip = client_key(ip);
        let mut table = self.lock();
        if table.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_client {
            self.metrics.dropped(Dropped::TcpClientCap);
            return Err(Refusal::PerClient);
        }
        if table.conns.len() >= self.total {
            let Some(victim) = table.idlest().and_then(|id| table.forget(id)) else {
                self.metrics.dropped(Dropped::TcpFull);
                return Err(Refusal::Full);
            };
            if let Some(task) = victim.task {
                task.abort();
            }
            self.metrics.dropped(Dropped::TcpShed);
        }
        let id = table.next;
        table.next += 1;
        table.conns.insert(
            id,
            Conn {
                ip,
                in_flight: 0,
                active: now,
                task: None,
            },
        );
        *table.per_ip.entry(ip).or_insert(0) += 1;
        Ok(ClientSlot {
            clients: self.clone(),
            id,
        })
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ClientSlot {
    /// The connection's task, closed if it is shed.
    pub fn serve_with(&self, task: AbortHandle) {
        match self.clients.lock().conns.get_mut(&self.id) {
            Some(conn) => conn.task = Some(task),
            // Shed before its task was known: end it now.
            None => task.abort(),
        }
    }

    /// A query came in: the connection is busy until it is answered.
    pub fn query(&self) {
        self.change(|conn| conn.in_flight += 1);
    }

    /// An answer went out.
    pub fn answered(&self) {
        self.change(|conn| conn.in_flight = conn.in_flight.saturating_sub(1));
    }

    fn change(&self, f: impl FnOnce(&mut Conn)) {
        if let Some(conn) = self.clients.lock().conns.get_mut(&self.id) {
            f(conn);
            conn.active = Instant::now();
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.clients.lock().forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn clients(per_client: usize, total: usize) -> Arc<TcpClients> {
        let mut registry = prometheus_client::registry::Registry::default();
        TcpClients::new(per_client, total, DnsMetrics::register(&mut registry))
    }

    #[test]
    fn each_address_gets_its_share() {
        let c = clients(2, 100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        let a = c.admit(ip, now).unwrap();
        let _b = c.admit(ip, now).unwrap();
        assert_eq!(c.admit(ip, now).err(), Some(Refusal::PerClient));
        drop(a);
        assert!(c.admit(ip, now).is_ok());
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        let _x = c.admit(v6a, now).unwrap();
        let _y = c.admit(v6b, now).unwrap();
        assert_eq!(c.admit(v6a, now).err(), Some(Refusal::PerClient), "one /64");
    }

    #[test]
    fn past_the_total_the_idlest_goes_and_busy_ones_stay() {
        let c = clients(10, 3);
        let t0 = Instant::now();
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        let old = c.admit(ip(1), t0).unwrap();
        let busy = c.admit(ip(2), t0 - Duration::from_secs(5)).unwrap();
        busy.query();
        let newer = c.admit(ip(3), t0 + Duration::from_secs(1)).unwrap();
        // Full: the idle one that was active longest ago is closed.
        let fresh = c.admit(ip(4), t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(c.len(), 3);
        let table = c.lock();
        assert!(!table.conns.contains_key(&old.id), "the idlest was shed");
        assert!(table.conns.contains_key(&busy.id));
        assert!(table.conns.contains_key(&newer.id));
        drop(table);
        newer.query();
        fresh.query();
        // Nobody idle: the next is refused.
        assert_eq!(c.admit(ip(5), t0).err(), Some(Refusal::Full));
        drop(old); // its place was given back already
        assert_eq!(c.len(), 3);
    }
}
