//! The bounded table of server transactions (RFC 3261 §17.2) and their timer queue.
//!
//! RFC 3261 puts no bound on how many transactions a UAS keeps; an endpoint on the internet
//! must. The table holds at most `max` entries, and at most `max_per_source` opened by one
//! source IP; [`Table::admit`] says which bound a new one would break ([`Overload`]) so the
//! caller can answer without state. What the caller does about it is the endpoint's choice (see
//! its module doc).
//!
//! Timers: each entry's next deadline (its `poll_timeout`) sits in a binary heap of
//! `(deadline, generation, key)`. A change of deadline pushes a new item and bumps the entry's
//! generation, leaving the old item stale (lazy deletion); stale items are popped whenever they
//! reach the top, so the top is always live and [`Table::next_deadline`] is O(1), and the heap
//! is rebuilt when stale items outnumber live ones. Each loop of the driver thus costs
//! O(log n) per timer that fires, not a scan of every transaction.

use std::cmp::{Ordering, Reverse};
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

/// Something with a next deadline (a transaction's armed timers).
pub trait Timed {
    fn poll_timeout(&self) -> Option<Instant>;
}

/// Which bound a new transaction would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// Its source already holds `max_per_source` transactions.
    PerSource,
    /// The table holds `max` transactions.
    Global,
}

#[derive(Debug)]
struct Slot<T> {
    value: T,
    source: IpAddr,
    /// The generation of this entry's live heap item, if it has one.
    generation: u64,
    scheduled: Option<Instant>,
}

#[derive(Debug)]
struct Item<K> {
    at: Instant,
    generation: u64,
    key: K,
}

impl<K> PartialEq for Item<K> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.generation) == (other.at, other.generation)
    }
}
impl<K> Eq for Item<K> {}
impl<K> PartialOrd for Item<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Item<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.generation).cmp(&(other.at, other.generation))
    }
}

/// Bounded map of transactions by key, with per-source counts and a timer heap.
#[derive(Debug)]
pub struct Table<K, T> {
    entries: HashMap<K, Slot<T>>,
    per_source: HashMap<IpAddr, usize>,
    heap: BinaryHeap<Reverse<Item<K>>>,
    next_generation: u64,
    max: usize,
    max_per_source: usize,
}

impl<K: Hash + Eq + Clone, T: Timed> Table<K, T> {
    pub fn new(max: usize, max_per_source: usize) -> Self {
        Self {
            entries: HashMap::new(),
            per_source: HashMap::new(),
            heap: BinaryHeap::new(),
            next_generation: 0,
            max: max.max(1),
            max_per_source: max_per_source.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Transactions held for `source`.
    pub fn source_len(&self, source: IpAddr) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }

    /// Whether a new transaction from `source` fits; the per-source bound is checked first.
    pub fn admit(&self, source: IpAddr) -> Result<(), Overload> {
        if self.source_len(source) >= self.max_per_source {
            Err(Overload::PerSource)
        } else if self.entries.len() >= self.max {
            Err(Overload::Global)
        } else {
            Ok(())
        }
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    pub fn get(&self, key: &K) -> Option<&T> {
        self.entries.get(key).map(|s| &s.value)
    }

    /// Adds a transaction (replacing one with the same key, which keeps its source), unless a
    /// bound forbids it.
    pub fn insert(&mut self, key: K, source: IpAddr, value: T) -> Result<(), Overload> {
        if let Some(slot) = self.entries.get_mut(&key) {
            slot.value = value;
        } else {
            self.admit(source)?;
            *self.per_source.entry(source).or_default() += 1;
            self.entries.insert(
                key.clone(),
                Slot {
                    value,
                    source,
                    generation: 0,
                    scheduled: None,
                },
            );
        }
        self.reschedule(&key);
        Ok(())
    }

    /// Changes a transaction through `f`, then files its new deadline.
    pub fn update<R>(&mut self, key: &K, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let out = f(&mut self.entries.get_mut(key)?.value);
        self.reschedule(key);
        Some(out)
    }

    pub fn remove(&mut self, key: &K) -> Option<T> {
        let slot = self.entries.remove(key)?;
        if let Entry::Occupied(mut count) = self.per_source.entry(slot.source) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
        self.prune();
        Some(slot.value)
    }

    /// The earliest deadline of any transaction.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(item)| item.at)
    }

    /// The key of a transaction whose deadline is due at `now`, taken off the queue: the caller
    /// runs its timers through [`Table::update`] (which files the next deadline) or removes it.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        if self.next_deadline()? > now {
            return None;
        }
        let Reverse(item) = self.heap.pop()?;
        if let Some(slot) = self.entries.get_mut(&item.key) {
            slot.scheduled = None;
        }
        self.prune();
        Some(item.key)
    }

    /// Files the entry's current deadline, if it changed.
    fn reschedule(&mut self, key: &K) {
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        let at = slot.value.poll_timeout();
        if at != slot.scheduled {
            self.next_generation += 1;
            slot.generation = self.next_generation;
            slot.scheduled = at;
            if let Some(at) = at {
                self.heap.push(Reverse(Item {
                    at,
                    generation: slot.generation,
                    key: key.clone(),
                }));
            }
        }
        self.prune();
    }

    fn is_live(&self, item: &Item<K>) -> bool {
        self.entries
            .get(&item.key)
            .is_some_and(|s| s.generation == item.generation && s.scheduled == Some(item.at))
    }

    /// Keeps the top of the heap live, and the heap at most about twice the live entries.
    fn prune(&mut self) {
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.is_live(top) {
                break;
            }
            self.heap.pop();
        }
        if self.heap.len() > 2 * self.entries.len() + 64 {
            let heap = std::mem::take(&mut self.heap);
            self.heap = heap
                .into_iter()
                .filter(|Reverse(item)| self.is_live(item))
                .collect();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    #[derive(Debug)]
    struct Tx(Option<Instant>);
    impl Timed for Tx {
        fn poll_timeout(&self) -> Option<Instant> {
            self.0
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn bounds_per_source_then_global() {
        let t0 = Instant::now();
        let mut table = Table::new(5, 3);
        for k in 0..3 {
            table.insert(k, ip(1), Tx(Some(t0))).unwrap();
        }
        assert_eq!(table.admit(ip(1)), Err(Overload::PerSource));
        assert_eq!(table.insert(99, ip(1), Tx(None)), Err(Overload::PerSource));
        table.insert(3, ip(2), Tx(None)).unwrap();
        table.insert(4, ip(3), Tx(None)).unwrap();
        assert_eq!(table.insert(5, ip(4), Tx(None)), Err(Overload::Global));
        // Replacing an existing key is always allowed.
        table.insert(4, ip(3), Tx(None)).unwrap();
        assert_eq!(table.len(), 5);
        table.remove(&0);
        assert_eq!(table.source_len(ip(1)), 2);
        assert_eq!(table.admit(ip(1)), Ok(()));
    }

    #[test]
    fn deadlines_come_out_in_order_and_stale_ones_are_skipped() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut table = Table::new(100, 100);
        for k in 0..10u64 {
            table.insert(k, ip(1), Tx(Some(t0 + s(10 - k)))).unwrap();
        }
        assert_eq!(table.next_deadline(), Some(t0 + s(1)));
        // Move key 9 (due at 1 s) to 20 s, and remove key 8 (due at 2 s).
        table.update(&9, |tx| tx.0 = Some(t0 + s(20)));
        table.remove(&8);
        assert_eq!(table.next_deadline(), Some(t0 + s(3)));
        assert_eq!(table.pop_due(t0 + s(2)), None);
        let mut due = vec![];
        while let Some(k) = table.pop_due(t0 + s(5)) {
            due.push(k);
            table.update(&k, |tx| tx.0 = None);
        }
        assert_eq!(due, [7, 6, 5]);
        assert_eq!(table.next_deadline(), Some(t0 + s(6)));
    }

    #[test]
    fn heap_stays_bounded_under_rescheduling() {
        let t0 = Instant::now();
        let mut table = Table::new(100, 100);
        for k in 0..10u64 {
            table.insert(k, ip(1), Tx(Some(t0))).unwrap();
        }
        for round in 1..10_000u64 {
            let k = round % 10;
            table.update(&k, |tx| tx.0 = Some(t0 + Duration::from_millis(round)));
            assert!(table.heap.len() <= 2 * 10 + 64 + 1);
        }
    }
}
