//! The TCP clients of one DNS listen address, capped per client address
//! and in total. At the total cap the connection idle longest (no query in
//! flight, no answer owed) is closed to make room, as RFC 7766 advises
//! servers under pressure to do, and the next connection is accepted once
//! its descriptor is closed; when none is idle, new connections wait in
//! the kernel's queue. The table outlives the listener's actor: a killed
//! listener's accepted connections keep being served.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::limits::client_key;
use super::metrics::{DnsMetrics, Dropped};

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its client address holds its share already.
    PerClient,
    /// The total cap is reached (it was not waited for).
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
    /// Closed to make room; its place comes back when its task has ended.
    closing: bool,
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
            .filter(|(_, c)| c.in_flight == 0 && !c.closing)
            .min_by_key(|(_, c)| c.active)
            .map(|(id, _)| *id)
    }

    fn any_closing(&self) -> bool {
        self.conns.values().any(|c| c.closing)
    }
}

/// Every TCP client of one listen address.
pub struct TcpClients {
    table: Mutex<Table>,
    per_client: usize,
    total: usize,
    metrics: Arc<DnsMetrics>,
    /// Woken when a connection's place comes back, or one goes idle.
    freed: Notify,
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
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until one more connection fits. At the cap, the idlest one
    /// is closed (counted as shed) and its place awaited; when every one
    /// is busy, until one ends.
    pub async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a place freed in between
            // still wakes us.
            freed.as_mut().enable();
            {
                let mut table = self.lock();
                if table.conns.len() < self.total {
                    return;
                }
                if !table.any_closing() {
                    if let Some(victim) = table.idlest() {
                        self.shed(&mut table, victim);
                    }
                }
            }
            freed.await;
        }
    }

    fn shed(&self, table: &mut Table, id: u64) {
        if let Some(conn) = table.conns.get_mut(&id) {
            conn.closing = true;
            if let Some(task) = &conn.task {
                task.abort();
            }
            self.metrics.dropped(Dropped::TcpShed);
        }
    }

    /// Admits a connection from `ip` (after [`TcpClients::room`]).
    /// Refusals are counted.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<ClientSlot, Refusal> {
        let ip = client_key(ip);
        let mut table = self.lock();
        if table.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_client {
            self.metrics.dropped(Dropped::TcpClientCap);
            return Err(Refusal::PerClient);
        }
        if table.conns.len() >= self.total {
            self.metrics.dropped(Dropped::TcpFull);
            return Err(Refusal::Full);
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
                closing: false,
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
    /// The connection's task, ended if it is shed.
    pub fn serve_with(&self, task: AbortHandle) {
        if let Some(conn) = self.clients.lock().conns.get_mut(&self.id) {
            conn.task = Some(task);
        }
    }

    /// A query came in: the connection is busy until it is answered.
    pub fn query(&self) {
        self.change(|conn| conn.in_flight += 1);
    }

    /// An answer went out.
    pub fn answered(&self) {
        let idle = self.change(|conn| conn.in_flight = conn.in_flight.saturating_sub(1));
        // Idle now: at the cap, a listener waiting for room may shed it.
        if idle {
            self.clients.freed.notify_waiters();
        }
    }

    /// Changes the connection's entry; true when it is idle afterwards.
    fn change(&self, f: impl FnOnce(&mut Conn)) -> bool {
        let mut table = self.clients.lock();
        let Some(conn) = table.conns.get_mut(&self.id) else {
            return false;
        };
        f(conn);
        conn.active = Instant::now();
        conn.in_flight == 0
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.clients.lock().forget(self.id);
        self.clients.freed.notify_waiters();
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

    #[tokio::test]
    async fn at_the_cap_the_idlest_goes_and_its_place_is_awaited() {
        let c = clients(10, 3);
        let t0 = Instant::now();
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        let old = c.admit(ip(1), t0).unwrap();
        let old_task = tokio::spawn(std::future::pending::<()>());
        old.serve_with(old_task.abort_handle());
        let busy = c.admit(ip(2), t0 - Duration::from_secs(5)).unwrap();
        busy.query();
        let newer = c.admit(ip(3), t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(
            c.admit(ip(4), t0).err(),
            Some(Refusal::Full),
            "not waited for"
        );
        // Full: the idle one active longest ago is closed; its place comes
        // back only once its slot is gone (its descriptor closed).
        let room = c.room();
        tokio::pin!(room);
        assert!(futures::poll!(room.as_mut()).is_pending());
        assert!(
            old_task.await.unwrap_err().is_cancelled(),
            "the idlest was shed"
        );
        drop(old);
        room.await;
        let fresh = c.admit(ip(4), t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(c.len(), 3);
        newer.query();
        fresh.query();
        // Nobody idle: room waits until one ends.
        let room = c.room();
        tokio::pin!(room);
        assert!(futures::poll!(room.as_mut()).is_pending());
        drop(busy);
        room.await;
        // Nobody idle again; one answered and went idle: it is shed.
        let busy = c.admit(ip(5), t0).unwrap();
        busy.query();
        let busy_task = tokio::spawn(std::future::pending::<()>());
        busy.serve_with(busy_task.abort_handle());
        let room = c.room();
        tokio::pin!(room);
        assert!(futures::poll!(room.as_mut()).is_pending());
        busy.answered();
        assert!(
            futures::poll!(room.as_mut()).is_pending(),
            "its slot is not gone yet"
        );
        assert!(
            busy_task.await.unwrap_err().is_cancelled(),
            "shed once idle"
        );
        drop(busy);
        room.await;
    }
}
