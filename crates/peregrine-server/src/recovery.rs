//! Recovery: what a subscriber coming back with a `since` position missed (pure functions).
//!
//! The subscribe path is: register the session for live publications (buffering them),
//! read [`Broker::history`](crate::broker::Broker::history) after `since`, call [`recover`],
//! then [`merge`] the result with the buffered live publications and send the reply; after
//! that, live publications flow directly. See `docs/protocol.md`, "Recovery".

use peregrine_wire::{Gap, Publication, StreamPosition};

/// The outcome of a recovery attempt, ready to become a `SubscribeResult`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    /// The stream's current epoch (the new one when `reset`).
    pub epoch: String,
    /// The stream's top offset at the history read: live publications continue after it.
    pub offset: u64,
    /// Every missed publication is in `publications`: no gap, no reset.
    pub recovered: bool,
    /// The missed publications still available, in offset order.
    pub publications: Vec<Publication>,
    /// Missed publications that history no longer holds.
    pub gap: Option<Gap>,
    /// The client's epoch is not the stream's: the stream was reset (or the position is
    /// bogus) and the client must reload its state; no gap can be named.
    pub reset: bool,
}

/// Decides what a subscriber at `since` missed.
///
/// `epoch` and `top` are the stream's current epoch and top offset, and `history` the
/// publications still in history in offset order, as returned by an unlimited, forward
/// history read (publications at or before `since.offset` are ignored):
///
/// * another epoch → `reset`, not recovered;
/// * same epoch, `since.offset >= top` → nothing missed, recovered (an offset beyond `top`
///   cannot come from this epoch and is treated as a reset);
/// * history holds `since.offset + 1 ..= top` → recovered with exactly those;
/// * history starts later → not recovered; what is there, plus
///   `Gap { from: since.offset + 1, to: first_available - 1 }`.
pub fn recover(since: &StreamPosition, epoch: &str, top: u64, history: Vec<Publication>) -> Recovered {
    let mut out = Recovered {
        epoch: epoch.to_owned(),
        offset: top,
        recovered: false,
        publications: Vec::new(),
        gap: None,
        reset: false,
    };
    if since.epoch != epoch || since.offset > top {
        out.reset = true;
        return out;
    }
    if since.offset == top {
        out.recovered = true;
        return out;
    }
    let wanted_from = since.offset + 1;
    let mut publications: Vec<Publication> =
        history.into_iter().filter(|p| p.offset >= wanted_from && p.offset <= top).collect();
    // Keep only the contiguous run that ends at the newest available offset, so that a
    // hole inside what we got is reported as part of the gap instead of being skipped.
    let mut start = publications.len();
    while start > 0 {
        let p = &publications[start - 1];
        let expected_next = publications.get(start).map_or(p.offset, |n| n.offset - 1);
        if p.offset != expected_next {
            break;
        }
        start -= 1;
    }
    publications.drain(..start);
    let first_available = publications.first().map_or(top + 1, |p| p.offset);
    let last_available = publications.last().map_or(top, |p| p.offset);
    if first_available > wanted_from {
        out.gap = Some(Gap { from: wanted_from, to: first_available - 1 });
    }
    // History ending before `top` (a limited read) cannot be fully recovered either.
    out.recovered = out.gap.is_none() && last_available == top;
    out.publications = publications;
    out
}

/// History replay joined with live publications.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// Publications to deliver, in offset order, each once.
    pub publications: Vec<Publication>,
    /// The offset of the last publication delivered (or the starting offset).
    pub offset: u64,
    /// Holes between consecutive publications, in order (empty when continuous).
    pub gaps: Vec<Gap>,
}

/// Joins a history replay with the publications buffered live during the history read.
///
/// `recovered` are the replayed publications and `top` the stream's top offset at the read
/// ([`Recovered::offset`]); `live` are the buffered publications in arrival order. Live
/// publications at or before the last delivered offset are dropped (they are in the replay,
/// or were seen before), so the seam has no duplicate; a live publication that starts after
/// `last + 1` is kept and the hole is reported in [`Merged::gaps`].
pub fn merge(recovered: Vec<Publication>, top: u64, live: Vec<Publication>) -> Merged {
    let mut last = recovered.last().map_or(top, |p| p.offset.max(top));
    let mut publications = recovered;
    let mut gaps = Vec::new();
    for p in live {
        if p.offset <= last {
            continue;
        }
        if p.offset > last + 1 {
            gaps.push(Gap { from: last + 1, to: p.offset - 1 });
        }
        last = p.offset;
        publications.push(p);
    }
    Merged { publications, offset: last, gaps }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pubs(offsets: impl IntoIterator<Item = u64>) -> Vec<Publication> {
        offsets
            .into_iter()
            .map(|offset| Publication { offset, data: serde_json::json!(offset), ..Default::default() })
            .collect()
    }

    fn offsets(p: &[Publication]) -> Vec<u64> {
        p.iter().map(|p| p.offset).collect()
    }

    fn pos(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition { epoch: epoch.into(), offset }
    }

    #[test]
    fn exact_recovery_returns_exactly_the_missed_publications() {
        let r = recover(&pos("e", 3), "e", 6, pubs(1..=6));
        assert!(r.recovered && !r.reset);
        assert_eq!(offsets(&r.publications), vec![4, 5, 6]);
        assert_eq!((r.gap, r.offset), (None, 6));
    }

    #[test]
    fn nothing_missed_is_recovered_and_empty() {
        let r = recover(&pos("e", 6), "e", 6, pubs(1..=6));
        assert!(r.recovered);
        assert!(r.publications.is_empty());
        assert_eq!(r.gap, None);
    }

    #[test]
    fn partial_recovery_names_the_exact_gap() {
        let r = recover(&pos("e", 2), "e", 10, pubs(7..=10));
        assert!(!r.recovered && !r.reset);
        assert_eq!(r.gap, Some(Gap { from: 3, to: 6 }));
        assert_eq!(offsets(&r.publications), vec![7, 8, 9, 10]);
    }

    #[test]
    fn empty_history_means_everything_after_since_is_missing() {
        let r = recover(&pos("e", 2), "e", 5, Vec::new());
        assert_eq!(r.gap, Some(Gap { from: 3, to: 5 }));
        assert!(!r.recovered && r.publications.is_empty());
    }

    #[test]
    fn epoch_change_is_a_reset_with_the_new_position() {
        let r = recover(&pos("old", 3), "new", 8, pubs(1..=8));
        assert!(r.reset && !r.recovered);
        assert_eq!((r.epoch.as_str(), r.offset, r.gap), ("new", 8, None));
        assert!(r.publications.is_empty());
    }

    #[test]
    fn offset_beyond_top_is_a_reset() {
        let r = recover(&pos("e", 9), "e", 5, pubs(1..=5));
        assert!(r.reset && !r.recovered);
    }

    #[test]
    fn hole_inside_history_widens_the_gap() {
        let mut h = pubs(3..=4);
        h.extend(pubs(6..=7));
        let r = recover(&pos("e", 2), "e", 7, h);
        assert_eq!(r.gap, Some(Gap { from: 3, to: 5 }));
        assert_eq!(offsets(&r.publications), vec![6, 7]);
    }

    #[test]
    fn truncated_history_is_not_recovered() {
        let r = recover(&pos("e", 2), "e", 7, pubs(3..=5));
        assert!(!r.recovered);
        assert_eq!(r.gap, None);
    }

    #[test]
    fn merge_drops_the_seam_duplicates_and_keeps_order() {
        let m = merge(pubs(4..=6), 6, pubs(5..=9));
        assert_eq!(offsets(&m.publications), vec![4, 5, 6, 7, 8, 9]);
        assert_eq!(m.offset, 9);
        assert!(m.gaps.is_empty());
    }

    #[test]
    fn merge_with_nothing_recovered_starts_after_top() {
        let m = merge(Vec::new(), 6, pubs(3..=8));
        assert_eq!(offsets(&m.publications), vec![7, 8]);
        assert!(m.gaps.is_empty());
    }

    #[test]
    fn merge_reports_a_gap_after_the_seam() {
        let m = merge(pubs(4..=6), 6, pubs(9..=10));
        assert_eq!(offsets(&m.publications), vec![4, 5, 6, 9, 10]);
        assert_eq!(m.gaps, vec![Gap { from: 7, to: 8 }]);
    }

    #[test]
    fn merge_ignores_repeated_live_publications() {
        let mut live = pubs(7..=8);
        live.extend(pubs(8..=9));
        let m = merge(pubs(5..=6), 6, live);
        assert_eq!(offsets(&m.publications), vec![5, 6, 7, 8, 9]);
    }
}
