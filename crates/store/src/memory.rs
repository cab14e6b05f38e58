//! In-memory stores: the map [`crate::CachedStore`] keeps in front of a backend, and the
//! `memory:` backend (tests, throwaway runs) built on the same map.

use crate::{
    Binding, Change, Forwarding, Ha1Set, ImportReport, LocationStore, StoreError, User, UserStore,
};
use std::collections::{BTreeMap, HashMap};

/// Bindings by AOR, held compactly: each AOR's vector is kept at its exact length (a
/// `Vec` grown by `push` would reserve room for four bindings), because at 100,000
/// registrations that slack would be most of the memory.
#[derive(Debug, Default)]
pub(crate) struct BindingMap {
    by_aor: HashMap<Box<str>, Vec<Binding>>,
    len: usize,
}

impl BindingMap {
    pub(crate) fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Upsert(b) => {
                    let list = self.by_aor.entry(b.aor.as_str().into()).or_default();
                    match list.iter_mut().find(|x| x.contact == b.contact) {
                        Some(slot) => *slot = b.clone(),
                        None => {
                            list.push(b.clone());
                            list.shrink_to_fit();
                            self.len += 1;
                        }
                    }
                }
                Change::Remove { aor, contact } => {
                    if let Some(list) = self.by_aor.get_mut(aor.as_str()) {
                        let before = list.len();
                        list.retain(|x| x.contact != *contact);
                        self.len -= before - list.len();
                        if list.is_empty() {
                            self.by_aor.remove(aor.as_str());
                        } else {
                            list.shrink_to_fit();
                        }
                    }
                }
                Change::RemoveAll { aor } => {
                    if let Some(list) = self.by_aor.remove(aor.as_str()) {
                        self.len -= list.len();
                    }
                }
            }
        }
    }

    pub(crate) fn lookup(&self, aor: &str, now: u64) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .by_aor
            .get(aor)
            .map(|list| {
                list.iter()
                    .filter(|b| !b.is_expired(now))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(Binding::priority_cmp);
        v
    }

    /// Every binding of an AOR, expired or not, unsorted.
    pub(crate) fn bindings_of(&self, aor: &str) -> &[Binding] {
        self.by_aor.get(aor).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn list_all(&self, now: u64) -> Vec<Binding> {
        let mut out = Vec::with_capacity(self.len);
        for list in self.by_aor.values() {
            let start = out.len();
            out.extend(list.iter().filter(|b| !b.is_expired(now)).cloned());
            out[start..].sort_by(Binding::priority_cmp);
        }
        out
    }

    /// A removal for every binding expired at `now`.
    pub(crate) fn expired(&self, now: u64) -> Vec<Change> {
        self.by_aor
            .values()
            .flatten()
            .filter(|b| b.is_expired(now))
            .map(|b| Change::Remove {
                aor: b.aor.clone(),
                contact: b.contact.clone(),
            })
            .collect()
    }

    pub(crate) fn sweep(&mut self, now: u64) -> usize {
        let before = self.len;
        self.by_aor.retain(|_, list| {
            if list.iter().any(|b| b.is_expired(now)) {
                list.retain(|b| !b.is_expired(now));
                list.shrink_to_fit();
            }
            !list.is_empty()
        });
        self.len = self.by_aor.values().map(Vec::len).sum();
        before - self.len
    }

    /// Bindings held, expired or not.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// AORs held.
    pub(crate) fn aors(&self) -> usize {
        self.by_aor.len()
    }

    /// An estimate of the heap bytes held: the table, the vectors and every string's
    /// capacity. Allocator overhead (rounding, headers) comes on top.
    pub(crate) fn approx_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(Box<str>, Vec<Binding>)>() + 1;
        let table = self.by_aor.capacity() * entry;
        let mut heap = 0;
        for (aor, list) in &self.by_aor {
            heap += aor.len() + list.capacity() * std::mem::size_of::<Binding>();
            for b in list {
                heap += b.aor.capacity()
                    + b.contact.capacity()
                    + b.call_id.capacity()
                    + b.path.capacity() * std::mem::size_of::<String>()
                    + b.path.iter().map(String::capacity).sum::<usize>()
                    + b.instance_id.as_ref().map_or(0, String::capacity)
                    + b.user_agent.as_ref().map_or(0, String::capacity);
            }
        }
        table + heap
    }
}

/// The `memory:` location backend: a [`BindingMap`] and nothing on disk.
#[derive(Debug, Default)]
pub struct MemoryLocationStore {
    map: BindingMap,
}

impl LocationStore for MemoryLocationStore {
    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        self.map.apply(changes);
        Ok(())
    }
    fn lookup(&self, aor: &str, now: u64) -> Result<Vec<Binding>, StoreError> {
        Ok(self.map.lookup(aor, now))
    }
    fn list_all(&self, now: u64) -> Result<Vec<Binding>, StoreError> {
        Ok(self.map.list_all(now))
    }
    fn sweep(&mut self, now: u64) -> Result<usize, StoreError> {
        Ok(self.map.sweep(now))
    }
}

/// The `memory:` user backend, also handy in tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryUserStore {
    users: BTreeMap<String, User>,
    /// Bumped by every change, for [`UserStore::version`].
    version: u64,
}

impl MemoryUserStore {
    /// Who other than `except` already has `value` as name or extension.
    fn taken(&self, what: &'static str, value: &str, except: &str) -> Result<(), StoreError> {
        match self.users.values().find(|u| {
            u.name != except && (u.name == value || u.extension.as_deref() == Some(value))
        }) {
            Some(u) => Err(StoreError::ExtensionTaken {
                what,
                value: value.to_owned(),
                by: u.name.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl UserStore for MemoryUserStore {
    fn get(&self, name: &str) -> Result<Option<User>, StoreError> {
        Ok(self.users.get(name).cloned())
    }
    fn list(&self) -> Result<Vec<User>, StoreError> {
        Ok(self.users.values().cloned().collect())
    }
    fn add(&mut self, user: &User) -> Result<(), StoreError> {
        if self.users.contains_key(&user.name) {
            return Err(StoreError::UserExists(user.name.clone()));
        }
        self.taken("name", &user.name, &user.name)?;
        if let Some(ext) = &user.extension {
            crate::check_extension(ext)?;
            self.taken("extension", ext, &user.name)?;
        }
        self.users.insert(user.name.clone(), user.clone());
        self.version += 1;
        Ok(())
    }
    fn set_ha1(&mut self, name: &str, realm: &str, ha1: &Ha1Set) -> Result<(), StoreError> {
        let u = self
            .users
            .get_mut(name)
            .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?;
        u.realm = realm.to_owned();
        u.ha1 = ha1.clone();
        self.version += 1;
        Ok(())
    }
    fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        self.users
            .remove(name)
            .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?;
        self.version += 1;
        Ok(())
    }
    fn set_extension(&mut self, name: &str, extension: Option<&str>) -> Result<(), StoreError> {
        if !self.users.contains_key(name) {
            return Err(StoreError::NoSuchUser(name.to_owned()));
        }
        if let Some(ext) = extension {
            crate::check_extension(ext)?;
            self.taken("extension", ext, name)?;
        }
        if let Some(u) = self.users.get_mut(name) {
            u.extension = extension.map(str::to_owned);
        }
        self.version += 1;
        Ok(())
    }
    fn set_forwarding(&mut self, name: &str, forwarding: &Forwarding) -> Result<(), StoreError> {
        let u = self
            .users
            .get_mut(name)
            .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?;
        crate::user::check_forwarding_of(u, forwarding)?;
        u.forwarding = forwarding.clone();
        self.version += 1;
        Ok(())
    }
    fn import(&mut self, users: &[User]) -> Result<ImportReport, StoreError> {
        let extensions: BTreeMap<&str, &str> = self
            .users
            .values()
            .filter_map(|u| Some((u.extension.as_deref()?, u.name.as_str())))
            .collect();
        if let Some((ext, by)) = users
            .iter()
            .find_map(|u| extensions.get_key_value(u.name.as_str()))
        {
            return Err(StoreError::ExtensionTaken {
                what: "name",
                value: (*ext).to_owned(),
                by: (*by).to_owned(),
            });
        }
        let mut report = ImportReport::default();
        for u in users {
            match self.users.get_mut(&u.name) {
                Some(existing) => {
                    existing.realm = u.realm.clone();
                    existing.ha1 = u.ha1.clone();
                    report.updated += 1;
                }
                None => {
                    self.users.insert(u.name.clone(), u.clone());
                    report.added += 1;
                }
            }
        }
        self.version += 1;
        Ok(report)
    }
    fn version(&self) -> Result<u64, StoreError> {
        Ok(self.version)
    }
}
