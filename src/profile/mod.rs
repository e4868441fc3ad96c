//! User state: attributes, event aggregates, remembered client ids. [`Profiles`] owns the
//! in-memory copy of every user that has a live session or a write in flight, applies
//! each user's mutations one at a time in arrival order (whatever the door), and
//! returns only once they are durable. It must not know about sockets or campaigns.

mod state;

pub use state::{
    activity_at, bump_activity, count_within, record, window_leaves_at, Aggregates, Derivations,
    Filter, Mutation, Outcome, UserState,
};

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::store::{Store, StoreError, WriteOp};

/// One user's slot: the loaded state (None until loaded or after a failed write).
#[derive(Default)]
pub struct UserSlot {
    state: Mutex<Option<UserState>>,
}

/// Profile settings.
#[derive(Debug, Clone)]
pub struct ProfileConfig {
    /// Attribute keys clients may set.
    pub client_writable: HashSet<String>,
    /// Store retention settings.
    pub store: StoreConfig,
    /// Filters and activity weights derived from every event.
    pub derive: Arc<Derivations>,
}

/// The profile service.
pub struct Profiles {
    store: Arc<dyn Store>,
    slots: DashMap<Arc<str>, Arc<UserSlot>, foldhash::fast::RandomState>,
    clock: Clock,
    cfg: ProfileConfig,
}

/// Whether a transaction that writes nothing is still submitted to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barrier {
    /// Always: its [`Durable`] resolves only after every earlier write of the store, so
    /// an answer that waits on it (the `ok` of a duplicate) never overtakes the write
    /// it answers for.
    Always,
    /// Only when it writes: nothing waits on a step without writes (a definition
    /// change's fan-out, where most users often match nothing), and 19,000 empty
    /// submissions cost the writer a commit's bookkeeping and a wake-up each.
    IfWrites,
}

/// A submitted transaction whose durability is still to be awaited
/// ([`Profiles::finish`]); it keeps the user in memory until then.
pub struct Durable {
    user: Arc<str>,
    slot: Arc<UserSlot>,
    ticket: Option<crate::store::CommitTicket>,
}

/// Keeps a user's state in memory while held (a live session holds one).
pub struct UserHandle {
    user: Arc<str>,
    slot: Arc<UserSlot>,
}

impl UserHandle {
    /// The user id.
    pub fn user(&self) -> &Arc<str> {
        &self.user
    }
}

impl Profiles {
    /// Creates the service.
    pub fn new(store: Arc<dyn Store>, clock: Clock, cfg: ProfileConfig) -> Self {
        Profiles {
            store,
            slots: DashMap::default(),
            clock,
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProfileConfig {
        &self.cfg
    }

    fn slot(&self, user: &str) -> (Arc<str>, Arc<UserSlot>) {
        if let Some(e) = self.slots.get(user) {
            return (e.key().clone(), e.value().clone());
        }
        let e = self.slots.entry(Arc::from(user)).or_default();
        (e.key().clone(), e.value().clone())
    }

    /// Pins the user in memory (loading it) for as long as the handle lives.
    pub async fn attach(&self, user: &str) -> Result<UserHandle, StoreError> {
        let (user, slot) = self.slot(user);
        {
            let mut guard = slot.state.lock().await;
            if guard.is_none() {
                *guard = Some(self.load(&user).await?);
            }
        }
        Ok(UserHandle { user, slot })
    }

    /// Releases a handle, dropping the user from memory when nothing else holds it.
    pub fn detach(&self, handle: UserHandle) {
        let UserHandle { user, slot } = handle;
        drop(slot);
        self.evict_if_unused(&user);
    }

    fn evict_if_unused(&self, user: &str) {
        // Cloning an Arc out of the map takes the shard lock, so under `remove_if`
        // a strong count of 1 means no one else holds or can obtain this slot.
        self.slots
            .remove_if(user, |_, slot| Arc::strong_count(slot) == 1);
    }

    async fn load(&self, user: &str) -> Result<UserState, StoreError> {
        let now = self.clock.now_ms();
        let rec = self.store.load_user(user).await?;
        let events = match &rec {
            Some(r) => {
                self.store
                    .events(user, now - self.history_ms(), r.aggregates_seq)
                    .await?
            }
            None => Vec::new(),
        };
        Ok(UserState::from_record(
            rec,
            &events,
            now,
            &self.cfg.store,
            &self.cfg.derive,
        ))
    }

    fn history_ms(&self) -> i64 {
        self.cfg.store.history_days as i64 * 86_400_000
    }

    /// Recomputes every loaded user's derived aggregates (after the set of filters
    /// changed), from their stored history.
    pub async fn refresh_derived(&self) {
        for user in self.loaded() {
            let Some(slot) = self.slots.get(&*user).map(|s| s.value().clone()) else {
                continue;
            };
            let mut guard = slot.state.lock().await;
            if let Some(state) = guard.as_mut() {
                let now = self.clock.now_ms();
                match self
                    .store
                    .events(&user, now - self.history_ms(), u64::MAX)
                    .await
                {
                    Ok(events) => {
                        state.derive_from(&events, now, &self.cfg.store, &self.cfg.derive)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "refreshing derived aggregates failed; reloading later");
                        guard.take();
                    }
                }
            }
        }
    }

    /// Users currently in memory.
    pub fn loaded(&self) -> Vec<Arc<str>> {
        self.slots.iter().map(|e| e.key().clone()).collect()
    }

    /// Runs `f` on the user's state under the user's lock; the writes it appends are
    /// committed in order and awaited. Every door reaches it through `engine::ingest`, so
    /// no change to a user skips campaign evaluation.
    pub async fn transact<T>(
        &self,
        user: &str,
        f: impl FnOnce(&Arc<str>, &mut UserState, &mut Vec<WriteOp>) -> T,
    ) -> Result<T, StoreError> {
        let (out, durable) = self.transact_submit(user, f).await?;
        self.finish(durable).await.map(|()| out)
    }

    /// The first half of [`Profiles::transact`]: runs `f` and submits its writes under
    /// the user's lock (so their order is fixed), without waiting for durability. Pass
    /// the returned [`Durable`] to [`Profiles::finish`].
    pub async fn transact_submit<T>(
        &self,
        user: &str,
        f: impl FnOnce(&Arc<str>, &mut UserState, &mut Vec<WriteOp>) -> T,
    ) -> Result<(T, Durable), StoreError> {
        self.transact_submit_as(user, Barrier::Always, f).await
    }

    /// [`Profiles::transact_submit`], choosing whether a step without writes is still
    /// submitted as a barrier (see [`Barrier`]).
    pub async fn transact_submit_as<T>(
        &self,
        user: &str,
        barrier: Barrier,
        f: impl FnOnce(&Arc<str>, &mut UserState, &mut Vec<WriteOp>) -> T,
    ) -> Result<(T, Durable), StoreError> {
        let (user, slot) = self.slot(user);
        let mut guard = slot.state.lock().await;
        if guard.is_none() {
            match self.load(&user).await {
                Ok(s) => *guard = Some(s),
                Err(e) => {
                    drop(guard);
                    drop(slot);
                    self.evict_if_unused(&user);
                    return Err(e);
                }
            }
        }
        let state = guard.as_mut().expect("loaded above");
        // A step writes a handful of ops (an event: 1–3; a delivery: ~6).
        let mut ops = Vec::with_capacity(8);
        let out = f(&user, state, &mut ops);
        // Submitting under the user's lock fixes the order of this user's writes.
        // Submitted even when empty (unless the caller says no answer waits on it): it
        // is then a barrier that resolves after every earlier write, so e.g. the `ok` of
        // a duplicate never overtakes its original.
        let ticket = match barrier {
            Barrier::IfWrites if ops.is_empty() => None,
            _ => Some(self.store.submit(ops)),
        };
        drop(guard);
        Ok((out, Durable { user, slot, ticket }))
    }

    /// Waits until a submitted transaction is durable; on failure forgets the user's
    /// in-memory state (it ran ahead of the store) so the next access reloads it.
    pub async fn finish(&self, d: Durable) -> Result<(), StoreError> {
        let Durable { user, slot, ticket } = d;
        let result = match ticket {
            Some(t) => t.wait().await,
            None => Ok(()),
        };
        if result.is_err() {
            slot.state.lock().await.take();
        }
        drop(slot);
        self.evict_if_unused(&user);
        result
    }

    /// Reads the user's state (loading it if needed); `None` when the user has no data.
    pub async fn read<T>(
        &self,
        user: &str,
        f: impl FnOnce(&UserState) -> T,
    ) -> Result<Option<T>, StoreError> {
        let (user, slot) = self.slot(user);
        let result = async {
            let mut guard = slot.state.lock().await;
            if guard.is_none() {
                *guard = Some(self.load(&user).await?);
            }
            let state = guard.as_ref().expect("loaded above");
            Ok(state.exists().then(|| f(state)))
        }
        .await;
        drop(slot);
        self.evict_if_unused(&user);
        result
    }
}
