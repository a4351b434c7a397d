//! The placement choice, a pure function: which fresh `SERVING` node should get the next session.
//!
//! Power of two choices (Mitzenmacher): two distinct eligible nodes drawn at random, the one with the larger free
//! share of its capacity first. Reservations count against headroom, so a burst of creations placed from
//! slightly stale records does not pack one node (the stale-stats failure Jitsi's Jicofo corrects for with its
//! recently-added endpoints); and two random candidates rather than the single best keeps concurrent placers that
//! read the same snapshot from all herding onto the same node. The rest follow by free share, as fallbacks for
//! when the atomic reservation refuses (the node filled up or began draining since the snapshot).

use crate::node::{NodeState, NodeView};

/// What makes a node eligible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eligibility {
    /// A record older than this (ms) is stale: its node may be dead, it gets nothing.
    pub stale_after_ms: u64,
    /// Worker load at or above which a node gets nothing (LiveKit's default limit is 0.9).
    pub load_limit: f64,
}

impl Default for Eligibility {
    fn default() -> Self {
        Eligibility {
            stale_after_ms: 5_000,
            load_limit: 0.9,
        }
    }
}

/// True when `node` may get a new session at `now_unix_ms`.
pub fn eligible(node: &NodeView, now_unix_ms: u64, rules: &Eligibility) -> bool {
    node.record.state == NodeState::Serving
        && now_unix_ms.saturating_sub(node.record.updated_unix_ms) < rules.stale_after_ms
        && node.record.load < rules.load_limit
        && node.headroom() > 0
}

/// The order in which to try nodes for one session: the better of two random eligible candidates first, then
/// every other eligible node by free share (largest first). `random` is any two random numbers (the caller's
/// RNG; tests pass fixed ones). Empty when no node is eligible.
pub fn candidates<'a>(
    nodes: &'a [NodeView],
    now_unix_ms: u64,
    rules: &Eligibility,
    random: (u64, u64),
) -> Vec<&'a NodeView> {
    let mut pool: Vec<&NodeView> = nodes
        .iter()
        .filter(|node| eligible(node, now_unix_ms, rules))
        .collect();
    // By free share, then id, so the fallbacks are deterministic.
    pool.sort_by(|a, b| {
        b.free_share()
            .total_cmp(&a.free_share())
            .then_with(|| a.record.id.cmp(&b.record.id))
    });
    if pool.len() >= 2 {
        let n = pool.len() as u64;
        let first = (random.0 % n) as usize;
        // A second index distinct from the first.
        let second = ((first as u64 + 1 + random.1 % (n - 1)) % n) as usize;
        // The pool is sorted, so the lower index is the better of the two.
        let best = first.min(second);
        let chosen = pool.remove(best);
        pool.insert(0, chosen);
    }
    pool
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeRecord;

    fn node(id: &str, capacity: u64, active: u64, reserved: u64) -> NodeView {
        NodeView {
            record: NodeRecord {
                id: id.to_owned(),
                api_url: format!("http://{id}"),
                mp_uri: format!("quic://{id}:4433/MediaProcessor"),
                state: NodeState::Serving,
                capacity,
                active,
                load: 0.1,
                version: "test".to_owned(),
                updated_unix_ms: 1_000,
            },
            reserved,
        }
    }

    #[test]
    fn stale_draining_full_and_loaded_nodes_get_nothing() {
        let rules = Eligibility::default();
        let mut draining = node("d", 10, 0, 0);
        draining.record.state = NodeState::Draining;
        let mut loaded = node("l", 10, 0, 0);
        loaded.record.load = 0.95;
        let nodes = vec![
            draining,
            loaded,
            node("full", 10, 6, 4),
            node("ok", 10, 9, 0),
        ];
        let order = candidates(&nodes, 1_500, &rules, (0, 0));
        assert_eq!(order.len(), 1);
        assert_eq!(order[0].record.id, "ok");
        // The same records 5 s later: stale, nobody.
        assert!(candidates(&nodes, 6_000, &rules, (0, 0)).is_empty());
    }

    #[test]
    fn the_better_of_two_comes_first_and_reservations_count() {
        let rules = Eligibility::default();
        // b has the most free by `active`, but its reservations make it the fullest (3 free; a 5, c 8).
        let nodes = vec![
            node("a", 10, 5, 0),
            node("b", 10, 1, 6),
            node("c", 10, 2, 0),
        ];
        for r0 in 0..6 {
            for r1 in 0..6 {
                let order = candidates(&nodes, 1_000, &rules, (r0, r1));
                assert_eq!(order.len(), 3);
                // Never the worst of the three first: two distinct candidates, the better wins.
                assert_ne!(order[0].record.id, "b", "random ({r0},{r1})");
            }
        }
        let order = candidates(&nodes, 1_000, &rules, (0, 1));
        assert_eq!(order[0].record.id, "c");
    }

    #[test]
    fn a_simulated_burst_spreads_by_capacity_share() {
        // 300 placements onto capacities 100/100/200, each taking a reservation as the script would.
        let rules = Eligibility::default();
        let mut nodes = vec![
            node("a", 100, 0, 0),
            node("b", 100, 0, 0),
            node("c", 200, 0, 0),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..300 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let id = candidates(&nodes, 1_000, &rules, (seed, seed >> 32))[0]
                .record
                .id
                .clone();
            nodes
                .iter_mut()
                .find(|n| n.record.id == id)
                .unwrap()
                .reserved += 1;
        }
        let share: Vec<u64> = nodes.iter().map(|n| n.reserved).collect();
        for (got, want) in share.iter().zip([75.0, 75.0, 150.0]) {
            assert!((*got as f64 - want).abs() <= want * 0.1, "{share:?}");
        }
    }
}
