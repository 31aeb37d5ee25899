//! Distinct people over rows of identities: the store returns integer
//! identity ids straight from its indexes (no join per row), and each
//! distinct identity is resolved to its person once, interned as a small
//! integer, so counting distinct people is integer hashing in memory.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt as _};

use crate::store::{Store, StoreError};

/// Identities resolved per store call: bounds one statement's size.
const RESOLVE_CHUNK: usize = 50_000;

/// Identity id → interned person (identities without a person, which have
/// no id of any kind, are absent).
pub fn resolve(
    store: &dyn Store,
    idents: impl IntoIterator<Item = i64>,
) -> Result<HashMap<i64, u32>, StoreError> {
    let mut distinct: Vec<i64> = idents.into_iter().collect();
    distinct.sort_unstable();
    distinct.dedup();
    let mut interned: HashMap<Arc<str>, u32> = HashMap::new();
    let mut out = HashMap::with_capacity(distinct.len());
    for chunk in distinct.chunks(RESOLVE_CHUNK) {
        for (ident, person) in store.persons(chunk)? {
            let next = interned.len() as u32;
            let id = *interned.entry(person).or_insert(next);
            out.insert(ident, id);
        }
    }
    Ok(out)
}
