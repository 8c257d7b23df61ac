//! Choosing slots for an attempt and placing its tasks in them.

use crate::runtime::engine::TaskSpec;

/// Picks `needed` slots among workers' free slots, spread evenly over the workers (Flink's
/// `cluster.evenly-spread-out-slots`): round-robin in worker order. Returns the worker of each
/// slot, or `None` if there are not enough free slots.
pub(crate) fn pick_slots(free: &[(String, u32)], needed: u32) -> Option<Vec<String>> {
    let total: u64 = free.iter().map(|(_, n)| u64::from(*n)).sum();
    if total < u64::from(needed) {
        return None;
    }
    let mut left: Vec<u32> = free.iter().map(|(_, n)| *n).collect();
    let mut slots = Vec::with_capacity(needed as usize);
    while slots.len() < needed as usize {
        for (i, (worker, _)) in free.iter().enumerate() {
            if slots.len() == needed as usize {
                break;
            }
            if left[i] > 0 {
                left[i] -= 1;
                slots.push(worker.clone());
            }
        }
    }
    Some(slots)
}

/// Slots an attempt needs: one slot runs one subtask of every chain (slot sharing), so as many
/// as the highest parallelism.
pub(crate) fn slots_needed(specs: &[TaskSpec]) -> u32 {
    specs.iter().map(|s| s.subtask + 1).max().unwrap_or(0)
}

/// The worker of every task: subtask `i` of each chain runs in slot `i`.
pub(crate) fn place_tasks(specs: &[TaskSpec], slots: &[String]) -> Vec<String> {
    specs.iter().map(|s| slots[s.subtask as usize].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(v: &[(&str, u32)]) -> Vec<(String, u32)> {
        v.iter().map(|(w, n)| (w.to_string(), *n)).collect()
    }

    #[test]
    fn spreads_slots_evenly_over_workers() {
        assert_eq!(
            pick_slots(&free(&[("a", 2), ("b", 2)]), 4).unwrap(),
            ["a", "b", "a", "b"]
        );
        assert_eq!(
            pick_slots(&free(&[("a", 3), ("b", 1)]), 4).unwrap(),
            ["a", "b", "a", "a"]
        );
        assert_eq!(pick_slots(&free(&[("a", 0), ("b", 2)]), 2).unwrap(), ["b", "b"]);
        assert_eq!(pick_slots(&free(&[("a", 2), ("b", 1)]), 4), None);
        assert_eq!(pick_slots(&free(&[]), 1), None);
    }

    #[test]
    fn subtask_i_of_every_chain_shares_slot_i() {
        let spec = |subtask| TaskSpec {
            chain: vec![0],
            subtask,
            is_source: false,
        };
        let specs = vec![spec(0), spec(1), spec(0), spec(1), spec(2)];
        assert_eq!(slots_needed(&specs), 3);
        let slots: Vec<String> = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(place_tasks(&specs, &slots), ["a", "b", "a", "b", "a"]);
    }
}
