//! User state: attributes, event aggregates, remembered client ids. [`Profiles`] owns the
//! in-memory copy of every user that has a live session or a write in flight, applies
//! each user's mutations one at a time in arrival order (whatever the door), and
//! returns only once they are durable. It must not know about sockets or campaigns.

mod state;

pub use state::{count_within, record, Mutation, Outcome, UserState};

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
}

/// The profile service.
pub struct Profiles {
    store: Arc<dyn Store>,
    slots: DashMap<Arc<str>, Arc<UserSlot>>,
    clock: Clock,
    cfg: ProfileConfig,
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
            slots: DashMap::new(),
            clock,
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProfileConfig {
        &self.cfg
    }

    /// Users currently held in memory.
    pub fn loaded_users(&self) -> usize {
        self.slots.len()
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
        let rec = self.store.load_user(user).await?;
        Ok(UserState::from_record(
            rec,
            self.clock.now_ms(),
            &self.cfg.store,
        ))
    }

    /// Applies `mutations` (plus `extra` writes committed with them) for `user`, in
    /// order, and waits until they are durable. Returns one outcome per mutation.
    pub async fn apply(
        &self,
        user: &str,
        mutations: Vec<Mutation>,
        extra: Vec<WriteOp>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let (user, slot) = self.slot(user);
        let (outcomes, ticket) = {
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
            let now = self.clock.now_ms();
            let mut ops = extra;
            let outcomes = mutations
                .into_iter()
                .map(|m| state.apply(&user, m, now, &self.cfg, &mut ops))
                .collect::<Vec<_>>();
            // Submitting under the user's lock fixes the order of this user's writes.
            (outcomes, self.store.submit(ops))
        };
        let result = ticket.wait().await;
        if result.is_err() {
            // Memory ran ahead of the store: forget it, the next access reloads.
            slot.state.lock().await.take();
        }
        drop(slot);
        self.evict_if_unused(&user);
        result.map(|()| outcomes)
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
