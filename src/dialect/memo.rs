//! What a dialect works out from a migration's text (MySQL: its
//! statements and how a kill in each is judged; PostgreSQL: the concurrent
//! indexes the catalogue judges), worked out once per process: every tenant of a
//! fleet runs the same files, and parsing them again per tenant was a
//! measurable part of fleetmig's CPU on a server fleet.

use std::sync::LazyLock;

use dashmap::DashMap;

/// Values keyed by text, up to `cap` keys (past that, computed each time).
pub(crate) struct Memo<V> {
    map: LazyLock<DashMap<String, V>>,
    cap: usize,
}

impl<V: Clone> Memo<V> {
    pub(crate) const fn new(cap: usize) -> Memo<V> {
        Memo {
            map: LazyLock::new(DashMap::new),
            cap,
        }
    }

    /// The value for `key`, made by `make` the first time.
    pub(crate) fn get(&self, key: &str, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.map.get(key) {
            return v.clone();
        }
        let v = make();
        if self.map.len() < self.cap {
            self.map.insert(key.to_string(), v.clone());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::Memo;

    #[test]
    fn a_value_is_made_once_per_key_up_to_the_cap() {
        static M: Memo<usize> = Memo::new(2);
        let mut made = 0;
        for key in ["a", "b", "a", "c", "c", "b"] {
            M.get(key, || {
                made += 1;
                key.len()
            });
        }
        // a and b kept; c past the cap, made each time
        assert_eq!(made, 4);
    }
}
