//! Single-flight for expensive reads: identical requests waiting at the same time share one
//! execution, and at most `concurrency` executions run at once.
//!
//! A request joins a group only while the group waits for its turn, before it has read anything,
//! so every answer was read after the request arrived — as if it had run alone (a client that
//! deletes a job and then lists tasks never sees the deleted job's tasks). Once a group starts,
//! identical requests that arrive form the next group. The execution runs in its own task, so a
//! client that hangs up does not cancel it for the others who joined.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Semaphore;

/// `None` when the execution panicked.
type Group<V> = Shared<BoxFuture<'static, Option<V>>>;
/// Groups that have not started yet, by key, with their id.
type Waiting<K, V> = Arc<Mutex<HashMap<K, (u64, Group<V>)>>>;

pub struct Coalesce<K, V> {
    waiting: Waiting<K, V>,
    turns: Arc<Semaphore>,
    next_id: AtomicU64,
}

impl<K, V> Coalesce<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(concurrency: usize) -> Self {
        Coalesce {
            waiting: Arc::default(),
            turns: Arc::new(Semaphore::new(concurrency.max(1))),
            next_id: AtomicU64::new(0),
        }
    }

    /// The result of `work` for `key`: from a waiting group's execution when there is one,
    /// else from a new one. `None` when the execution panicked.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> Option<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        let group = {
            let mut waiting = lock(&self.waiting);
            match waiting.get(&key) {
                Some((_, group)) => group.clone(),
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let (all, turns, k) = (self.waiting.clone(), self.turns.clone(), key.clone());
                    // In the span of the request that started the group, so its logs carry a request id.
                    let span = tracing::Span::current();
                    let task = tokio::spawn(tracing::Instrument::instrument(
                        async move {
                            // The semaphore is never closed.
                            let _turn = turns.acquire_owned().await.ok();
                            // Started: from now on an identical request forms the next group.
                            {
                                let mut waiting = lock(&all);
                                if waiting.get(&k).is_some_and(|(i, _)| *i == id) {
                                    waiting.remove(&k);
                                }
                            }
                            work().await
                        },
                        span,
                    ));
                    let group = async move { task.await.ok() }.boxed().shared();
                    waiting.insert(key, (id, group.clone()));
                    group
                }
            }
        };
        group.await
    }

    /// How many groups wait for their turn.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        lock(&self.waiting).len()
    }
}

/// A poisoned lock only means a panic elsewhere; the map is still consistent (one insert or
/// one remove at a time).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn identical_waiting_requests_share_one_execution() {
        let c = Arc::new(Coalesce::<&str, usize>::new(1));
        let runs = Arc::new(AtomicUsize::new(0));
        // The only turn is held by a slow execution, so the next ones wait for it.
        let gate = Arc::new(tokio::sync::Notify::new());
        let (g, r) = (gate.clone(), runs.clone());
        let blocker = tokio::spawn({
            let c = c.clone();
            async move {
                c.run("slow", move || async move {
                    let n = r.fetch_add(1, Ordering::SeqCst);
                    g.notified().await;
                    n
                })
                .await
            }
        });
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Five identical requests and another one, each polled once: all are waiting now.
        let ask = |key: &'static str, scale: usize| {
            let r = runs.clone();
            Box::pin(c.run(key, move || async move { r.fetch_add(1, Ordering::SeqCst) * scale }))
        };
        let mut same: Vec<_> = (0..5).map(|_| ask("same", 100)).collect();
        let mut other = ask("other", 1);
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        for f in same.iter_mut().chain(std::iter::once(&mut other)) {
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(c.waiting(), 2);
        gate.notify_one();
        assert_eq!(blocker.await.unwrap(), Some(0));
        let answers = futures_util::future::join_all(same).await;
        assert!(answers[0].is_some() && answers.iter().all(|a| *a == answers[0]), "{answers:?}");
        assert!(other.await.is_some());
        assert_eq!(runs.load(Ordering::SeqCst), 3, "the slow one, `same` once, `other` once");
        assert_eq!(c.waiting(), 0);
    }

    #[tokio::test]
    async fn a_started_execution_is_not_joined() {
        let c = Arc::new(Coalesce::<&str, usize>::new(4));
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let (g, r) = (gate.clone(), runs.clone());
        let first = tokio::spawn({
            let c = c.clone();
            async move {
                c.run("k", move || async move {
                    let n = r.fetch_add(1, Ordering::SeqCst);
                    g.notified().await;
                    n
                })
                .await
            }
        });
        // Started (it counted itself) and still running: a new request must not get its answer.
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let r = runs.clone();
        let second = c.run("k", move || async move { r.fetch_add(1, Ordering::SeqCst) }).await;
        assert_eq!(second, Some(1));
        gate.notify_one();
        assert_eq!(first.await.unwrap(), Some(0));
    }

    #[tokio::test]
    async fn a_panicking_execution_answers_none() {
        let c = Coalesce::<u8, u8>::new(1);
        assert_eq!(c.run(1, || async { panic!("boom") }).await, None);
        assert_eq!(c.run(1, || async { 7 }).await, Some(7));
    }
}
