//! Recovery: what a subscriber coming back with a `since` position missed (pure functions).
//!
//! The subscribe path is: register the session for live publications (holding them back),
//! read the first page of [`Broker::history`](crate::broker::Broker::history) after `since`,
//! call [`recover`], put what fits of it in the reply ([`take_page`]) and stream the rest;
//! after that, live publications flow directly. See `docs/protocol.md`, "Recovery".

use peregrine_wire::{Encoding, Gap, Publication, StreamPosition, encoded_size};

/// The outcome of a recovery attempt, ready to become a `SubscribeResult`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    /// The stream's current epoch (the new one when `reset`).
    pub epoch: String,
    /// The stream's top offset at the history read: live publications continue after it.
    pub offset: u64,
    /// Nothing is lost: every missed publication is in `publications` or follows it
    /// (when `publications` ends before `offset`, read on from its last one).
    pub recovered: bool,
    /// The first missed publications still available, in offset order, contiguous.
    pub publications: Vec<Publication>,
    /// Missed publications that history no longer holds.
    pub gap: Option<Gap>,
    /// The client's epoch is not the stream's: the stream was reset (or the position is
    /// bogus) and the client must reload its state; no gap can be named.
    pub reset: bool,
}

/// Decides what a subscriber at `since` missed.
///
/// `epoch` and `top` are the stream's current epoch and top offset, and `history` the first
/// page of a forward history read after `since`, in offset order (publications at or before
/// `since.offset` are ignored):
///
/// * another epoch → `reset`, not recovered;
/// * same epoch, `since.offset >= top` → nothing missed, recovered (an offset beyond `top`
///   cannot come from this epoch and is treated as a reset);
/// * history starts at `since.offset + 1` → recovered: `publications` is the contiguous run
///   from there (it ends at a hole, or where the page ends, which may be before `top`);
/// * history starts later → not recovered; `Gap { from: since.offset + 1, to: first - 1 }`
///   and the run from the first available publication.
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
    // Only the contiguous run from the first: after a hole, reading on from the run's end
    // finds the hole and reports it, instead of skipping it here.
    let run = publications
        .windows(2)
        .position(|w| w[1].offset != w[0].offset + 1)
        .map_or(publications.len(), |i| i + 1);
    publications.truncate(run);
    let first_available = publications.first().map_or(top + 1, |p| p.offset);
    if first_available > wanted_from {
        out.gap = Some(Gap { from: wanted_from, to: first_available - 1 });
    }
    out.recovered = out.gap.is_none();
    out.publications = publications;
    out
}

/// Splits off the first publications that fit in `budget` bytes as encoded in `encoding`:
/// returns them and the bytes they take. With `at_least_one`, the first publication is
/// taken whatever its size, so a page always makes progress.
pub fn take_page(
    publications: Vec<Publication>,
    budget: usize,
    at_least_one: bool,
    encoding: Encoding,
) -> (Vec<Publication>, usize) {
    let mut used = 0;
    let mut taken = 0;
    for p in &publications {
        let size = encoded_size(p, encoding);
        if used + size > budget && !(at_least_one && taken == 0) {
            break;
        }
        used += size;
        taken += 1;
    }
    let mut publications = publications;
    publications.truncate(taken);
    (publications, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pubs(offsets: impl IntoIterator<Item = u64>) -> Vec<Publication> {
        offsets
            .into_iter()
            .map(|offset| Publication {
                offset,
                data: serde_json::json!(offset).into(),
                ..Default::default()
            })
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
    fn a_hole_inside_history_ends_the_run_before_it() {
        let mut h = pubs(3..=4);
        h.extend(pubs(6..=7));
        let r = recover(&pos("e", 2), "e", 7, h);
        assert_eq!(r.gap, None);
        assert_eq!(offsets(&r.publications), vec![3, 4], "reading on from 4 finds the hole");
    }

    #[test]
    fn a_page_that_ends_before_top_is_recovered_so_far() {
        let r = recover(&pos("e", 2), "e", 7, pubs(3..=5));
        assert!(r.recovered, "nothing is lost: the rest follows");
        assert_eq!((r.gap, offsets(&r.publications)), (None, vec![3, 4, 5]));
    }

    #[test]
    fn a_page_takes_what_fits_and_at_least_one_when_asked() {
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let size = encoded_size(&pubs([1])[0], encoding);
            let (page, used) = take_page(pubs(1..=9), size * 3 + size / 2, false, encoding);
            assert_eq!((offsets(&page), used), (vec![1, 2, 3], size * 3));
            assert!(take_page(pubs(1..=3), 1, false, encoding).0.is_empty());
            assert_eq!(offsets(&take_page(pubs(1..=3), 1, true, encoding).0), vec![1]);
        }
    }
}
