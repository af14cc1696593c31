//! Fetching a key's newest state before a write runs on it.

use super::*;

/// Brings keys here from the members named with them (the previous owner
/// of an importing slot, or every co-owner of an unsettled one), all asked
/// at once, and marks a key fetched, found or not, once every member named
/// for it answered: the newest state may be on any of them.
pub(super) async fn fetch_moving_keys(shared: &Shared, keys: Vec<(Arc<str>, Vec<u8>)>, deadline: Instant) {
    let mut waits = Vec::with_capacity(keys.len());
    let mut missing: HashMap<Vec<u8>, usize> = HashMap::new();
    for (from, key) in keys {
        let req = Request::Read { key: &key }.to_bytes();
        let rx = shared.links.get(&from).and_then(|l| l.try_call(req, 1, false).ok());
        *missing.entry(key.clone()).or_default() += 1;
        waits.push((key, rx));
    }
    for (key, rx) in waits {
        let Some(rx) = rx else { continue };
        let Ok(Ok(Ok(replies))) = timeout_at(deadline, rx).await else { continue };
        let Some(state) = replies.first().and_then(|raw| ReadState::parse(raw)) else { continue };
        let now_ms = crate::process::unix_ms();
        if shared.version_ok(state.version(), now_ms) {
            shared.store.with_key(&key, now_ms, |k| state.apply_to(k));
        }
        if let Some(n) = missing.get_mut(&key) {
            *n -= 1;
        }
    }
    for (key, n) in missing {
        if n == 0 {
            shared.rebalance.mark_checked(key);
        }
    }
}
