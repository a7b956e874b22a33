//! Subscriptions: the handle the application reads, and the stream-position tracking that
//! turns reconnects into "every publication once, in order, or an explicit gap".

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use peregrine_wire::{Publication, StreamPosition, SubscribeResult};
use tokio::sync::mpsc;

use crate::events::SubscriptionEvent;
use crate::session::Request;

/// A fetch of one subscription token.
pub(crate) type SubscriptionTokenFetch = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Where a private channel's subscription tokens come from: called with the channel's name.
/// An `Err` is logged and the call retried after a second.
///
/// ```
/// use peregrine_client::{SubscribeOptions, SubscriptionTokenProvider};
/// let options = SubscribeOptions {
///     token_provider: Some(SubscriptionTokenProvider::new(|channel: String| async move {
///         // Ask your backend for a token for `channel`.
///         Ok::<_, String>(format!("token-for-{channel}"))
///     })),
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct SubscriptionTokenProvider(Arc<dyn Fn(String) -> SubscriptionTokenFetch + Send + Sync>);

impl SubscriptionTokenProvider {
    /// A provider calling `fetch` with the channel's name.
    pub fn new<F, Fut>(fetch: F) -> SubscriptionTokenProvider
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        SubscriptionTokenProvider(Arc::new(move |channel| Box::pin(fetch(channel))))
    }

    pub(crate) fn fetch(&self, channel: String) -> SubscriptionTokenFetch {
        (self.0)(channel)
    }
}

impl std::fmt::Debug for SubscriptionTokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubscriptionTokenProvider")
    }
}

/// Two providers are equal when they are the same one (clones of each other).
impl PartialEq for SubscriptionTokenProvider {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SubscriptionTokenProvider {}

/// Options of [`Client::subscribe_with`](crate::Client::subscribe_with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Subscription token, for channels in `private` namespaces.
    pub token: Option<String>,
    /// Where fresh subscription tokens come from, for private channels whose tokens expire:
    /// asked before subscribing when `token` is `None`, before the token expires (the new
    /// one is sent with `sub_refresh`, the subscription goes on), and when the server ended
    /// the subscription because its token expired or refused it as expired (the client then
    /// subscribes again from its position, so nothing is missed).
    pub token_provider: Option<SubscriptionTokenProvider>,
    /// Ask for join/leave events (`None`: the namespace's default).
    pub join_leave: Option<bool>,
    /// Start from this position instead of "now": what came after it is replayed first
    /// (for example a position saved by a previous run of the program).
    pub since: Option<StreamPosition>,
}

/// A subscribed channel: a stream of [`SubscriptionEvent`]s.
///
/// Events queue up in memory until read, so keep reading. Dropping the handle
/// unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) channel: String,
    pub(crate) id: u64,
    pub(crate) events: mpsc::UnboundedReceiver<SubscriptionEvent>,
    pub(crate) requests: mpsc::UnboundedSender<Request>,
}

impl Subscription {
    /// The channel's name.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next event; `None` after [`SubscriptionEvent::Unsubscribed`] or once the client
    /// is closed.
    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        self.events.recv().await
    }

    /// The next publication, skipping other events except the ones that say something was
    /// lost ([`Gap`](SubscriptionEvent::Gap), [`Reset`](SubscriptionEvent::Reset)) or that
    /// the subscription ended, which are returned as `Err`.
    pub async fn next_publication(&mut self) -> Option<Result<Publication, SubscriptionEvent>> {
        loop {
            match self.events.recv().await? {
                SubscriptionEvent::Publication(p) => return Some(Ok(p)),
                e @ (SubscriptionEvent::Gap { .. }
                | SubscriptionEvent::Reset { .. }
                | SubscriptionEvent::Unsubscribed { .. }) => return Some(Err(e)),
                _ => continue,
            }
        }
    }

    /// Unsubscribes (the same as dropping the handle).
    pub fn unsubscribe(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Unsubscribe { channel: self.channel.clone(), id: self.id });
    }
}

/// A publication arrived whose offset skips ahead of the last one seen on a live
/// connection: some were lost in between, and reconnecting with `since` recovers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Jump;

/// Where a subscription is in its channel's stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tracker {
    /// The last position delivered; `None` before the first subscribe reply, and for
    /// channels without history.
    position: Option<StreamPosition>,
    /// The epoch of a position the server refused (error 112): the next subscribe reply is
    /// reported as a reset from it.
    lost_epoch: Option<String>,
}

impl Tracker {
    pub(crate) fn starting_at(since: Option<StreamPosition>) -> Tracker {
        Tracker { position: since, lost_epoch: None }
    }

    /// The server does not know our position any more: subscribe afresh, and report it.
    pub(crate) fn forget(&mut self) {
        if let Some(position) = self.position.take() {
            self.lost_epoch = Some(position.epoch);
        }
    }

    /// The position to resubscribe from.
    pub(crate) fn since(&self) -> Option<StreamPosition> {
        self.position.clone()
    }

    /// A subscribe reply (first subscribe, or resubscribe after a reconnect): the events to
    /// deliver, in order.
    pub(crate) fn on_subscribed(&mut self, r: SubscribeResult) -> Vec<SubscriptionEvent> {
        let mut events = Vec::with_capacity(r.publications.len() + 2);
        events.push(SubscriptionEvent::Subscribed {
            epoch: r.epoch.clone(),
            offset: r.offset,
            recovered: r.recovered,
        });
        if !r.positioned {
            self.position = None;
            events.extend(r.publications.into_iter().map(SubscriptionEvent::Publication));
            return events;
        }
        let Some(position) = &mut self.position else {
            if let Some(previous_epoch) = self.lost_epoch.take() {
                events.push(SubscriptionEvent::Reset {
                    previous_epoch,
                    epoch: r.epoch.clone(),
                    offset: r.offset,
                });
            }
            // First subscribe: live publications start after the top.
            self.position = Some(StreamPosition { epoch: r.epoch, offset: r.offset });
            return events;
        };
        if position.epoch != r.epoch {
            events.push(SubscriptionEvent::Reset {
                previous_epoch: std::mem::take(&mut position.epoch),
                epoch: r.epoch.clone(),
                offset: r.offset,
            });
            *position = StreamPosition { epoch: r.epoch, offset: r.offset };
            return events;
        }
        if let Some(gap) = r.gap {
            events.push(SubscriptionEvent::Gap { from: gap.from, to: gap.to });
            position.offset = position.offset.max(gap.to);
        }
        for p in r.publications {
            if p.offset > position.offset + 1 {
                events.push(SubscriptionEvent::Gap { from: position.offset + 1, to: p.offset - 1 });
            }
            if p.offset > position.offset {
                position.offset = p.offset;
                events.push(SubscriptionEvent::Publication(p));
            }
        }
        // Whatever the reply did not cover up to the top is missing, unless the server says
        // the rest follows as publications (`more`): say so rather than let it vanish.
        if r.offset > position.offset && !r.more {
            events.push(SubscriptionEvent::Gap { from: position.offset + 1, to: r.offset });
            position.offset = r.offset;
        }
        events
    }

    /// A live publication: `Ok(Some(event))` to deliver it, `Ok(None)` for a duplicate
    /// (already delivered, e.g. both replayed and pushed), `Err(Jump)` when publications
    /// are missing before it.
    pub(crate) fn on_publication(&mut self, p: Publication) -> Result<Vec<SubscriptionEvent>, Jump> {
        let Some(position) = &mut self.position else {
            return Ok(vec![SubscriptionEvent::Publication(p)]);
        };
        if p.offset == 0 {
            return Ok(vec![SubscriptionEvent::Publication(p)]);
        }
        if let Some(epoch) = p.epoch.as_ref().filter(|e| **e != position.epoch) {
            let reset = SubscriptionEvent::Reset {
                previous_epoch: std::mem::replace(&mut position.epoch, epoch.clone()),
                epoch: epoch.clone(),
                offset: p.offset,
            };
            position.offset = p.offset;
            return Ok(vec![reset, SubscriptionEvent::Publication(p)]);
        }
        if p.offset <= position.offset {
            return Ok(Vec::new());
        }
        if p.offset > position.offset + 1 {
            return Err(Jump);
        }
        position.offset = p.offset;
        Ok(vec![SubscriptionEvent::Publication(p)])
    }
}

#[cfg(test)]
mod tests {
    use peregrine_wire::Gap;

    use super::*;

    fn publication(offset: u64) -> Publication {
        Publication { offset, data: serde_json::json!(offset).into(), ..Default::default() }
    }

    fn offsets(events: &[SubscriptionEvent]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                SubscriptionEvent::Publication(p) => Some(p.offset),
                _ => None,
            })
            .collect()
    }

    fn reply(epoch: &str, offset: u64, publications: Vec<u64>, gap: Option<Gap>) -> SubscribeResult {
        SubscribeResult {
            epoch: epoch.into(),
            offset,
            recovered: gap.is_none(),
            publications: publications.into_iter().map(publication).collect(),
            gap,
            positioned: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_recovery_that_goes_on_in_pushes_is_not_a_gap() {
        let mut t = Tracker::starting_at(Some(StreamPosition { epoch: "e".into(), offset: 3 }));
        let events = t.on_subscribed(SubscribeResult { more: true, ..reply("e", 9, vec![4, 5], None) });
        assert_eq!(events.len(), 3, "subscribed and two publications, no gap: {events:?}");
        for offset in 6..=10 {
            assert_eq!(offsets(&t.on_publication(publication(offset)).unwrap()), [offset]);
        }
        assert_eq!(t.on_publication(publication(12)), Err(Jump), "a hole in the stream is still caught");
    }

    #[test]
    fn replay_and_live_overlap_is_delivered_once() {
        let mut t = Tracker::default();
        t.on_subscribed(reply("e", 5, vec![], None));
        assert_eq!(offsets(&t.on_publication(publication(6)).unwrap()), [6]);
        // Reconnect: the replay holds 7..=9; a live push of 9 and 10 follows.
        let events = t.on_subscribed(reply("e", 9, vec![7, 8, 9], None));
        assert_eq!(offsets(&events), [7, 8, 9]);
        assert!(t.on_publication(publication(9)).unwrap().is_empty(), "duplicate dropped");
        assert_eq!(offsets(&t.on_publication(publication(10)).unwrap()), [10]);
        assert_eq!(t.since(), Some(StreamPosition { epoch: "e".into(), offset: 10 }));
    }

    #[test]
    fn a_gap_in_history_is_reported_with_its_range() {
        let mut t = Tracker::starting_at(Some(StreamPosition { epoch: "e".into(), offset: 3 }));
        let events = t.on_subscribed(reply("e", 20, vec![11, 12, 20], Some(Gap { from: 4, to: 10 })));
        assert_eq!(events[1], SubscriptionEvent::Gap { from: 4, to: 10 });
        assert_eq!(offsets(&events), [11, 12, 20]);
        // 13..=19 were neither replayed nor in the gap: reported too, never silent.
        assert_eq!(events[4], SubscriptionEvent::Gap { from: 13, to: 19 });
        assert_eq!(t.since().unwrap().offset, 20);
    }

    #[test]
    fn a_new_epoch_is_a_reset() {
        let mut t = Tracker::starting_at(Some(StreamPosition { epoch: "old".into(), offset: 40 }));
        let events = t.on_subscribed(reply("new", 2, vec![], None));
        assert!(matches!(&events[1], SubscriptionEvent::Reset { previous_epoch, epoch, offset: 2 }
            if previous_epoch == "old" && epoch == "new"));
        assert_eq!(offsets(&t.on_publication(publication(3)).unwrap()), [3]);
    }

    #[test]
    fn a_skipped_offset_on_a_live_connection_asks_for_recovery() {
        let mut t = Tracker::default();
        t.on_subscribed(reply("e", 5, vec![], None));
        assert_eq!(t.on_publication(publication(7)), Err(Jump));
        assert_eq!(t.since().unwrap().offset, 5, "position kept for the recovery");
    }

    #[test]
    fn channels_without_history_deliver_everything() {
        let mut t = Tracker::default();
        let r = SubscribeResult { positioned: false, ..Default::default() };
        t.on_subscribed(r);
        assert_eq!(t.since(), None);
        assert_eq!(t.on_publication(publication(0)).unwrap().len(), 1);
    }
}
