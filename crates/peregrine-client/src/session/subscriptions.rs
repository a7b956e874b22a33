//! Subscriptions across connections: (re)subscribing with the tracked position, and
//! turning replies and pushes into [`SubscriptionEvent`]s.

use std::collections::BTreeMap;

use peregrine_wire::codes::{disconnect as dc, error as err};
use peregrine_wire::{
    CommandKind, Publication, ReplyError, ReplyKind, SubscribeRequest, SubscribeResult, UnsubscribeRequest,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Ending, Pending, Session, temporary};
use crate::error::Error;
use crate::events::SubscriptionEvent;
use crate::subscription::{Jump, SubscribeOptions, Tracker};

/// Where a subscription is with respect to the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// To be subscribed once connected (again).
    Waiting,
    /// Subscribe sent (or included in `connect`) with this command id.
    Subscribing(u64),
    /// Subscribed on this connection.
    Active,
}

#[derive(Debug)]
pub(super) struct Sub {
    pub(super) id: u64,
    pub(super) options: SubscribeOptions,
    pub(super) tracker: Tracker,
    pub(super) events: mpsc::UnboundedSender<SubscriptionEvent>,
    /// The `subscribe` call waiting for its first answer.
    pub(super) first: Option<oneshot::Sender<Result<(), Error>>>,
    pub(super) phase: Phase,
}

impl Sub {
    pub(super) fn emit(&self, event: SubscriptionEvent) {
        let _ = self.events.send(event);
    }

    /// The server confirmed the subscription: deliver what the reply holds, answer the
    /// waiting `subscribe` call.
    fn subscribed(&mut self, result: SubscribeResult) {
        self.phase = Phase::Active;
        for event in self.tracker.on_subscribed(result) {
            self.emit(event);
        }
        if let Some(first) = self.first.take() {
            let _ = first.send(Ok(()));
        }
    }

    pub(super) fn fail(mut self, code: Option<u32>, reason: String) {
        match self.first.take() {
            Some(first) => {
                let error = match code {
                    Some(code) => Error::Server { code, message: reason },
                    None => Error::Closed { reason },
                };
                let _ = first.send(Err(error));
            }
            None => self.emit(SubscriptionEvent::Unsubscribed { code, reason }),
        }
    }
}

impl Session {
    pub(super) fn on_publication(&mut self, channel: &str, publication: Publication) {
        let Some(sub) = self.subs.get_mut(channel) else { return };
        match sub.tracker.on_publication(publication) {
            Ok(events) => events.into_iter().for_each(|e| sub.emit(e)),
            Err(Jump) => {
                // Something was lost on the way (the server dropped part of our queue):
                // reconnecting with `since` recovers it.
                let reason = format!("publications missing in {channel}; reconnecting to recover them");
                self.ending = Some(Ending::retry(Some(dc::INSUFFICIENT_STATE), reason));
            }
        }
    }

    pub(super) fn on_connect_subs(&mut self, mut results: BTreeMap<String, SubscribeResult>) {
        let connect_id = self.connect_id;
        for (channel, sub) in &mut self.subs {
            if sub.phase != Phase::Subscribing(connect_id) {
                continue;
            }
            match results.remove(channel) {
                Some(r) => sub.subscribed(r),
                // Refused: an `unsubscribe` push says why; subscribing again gets the error.
                None => sub.phase = Phase::Waiting,
            }
        }
        // Subscribed server-side although nobody wants it any more.
        for channel in results.into_keys() {
            self.command(CommandKind::Unsubscribe(UnsubscribeRequest { channel }), Pending::Other);
        }
    }

    pub(super) fn on_subscribe_reply(
        &mut self,
        channel: &str,
        sub_id: u64,
        result: Result<ReplyKind, ReplyError>,
    ) {
        let Some(sub) = self.subs.get_mut(channel).filter(|s| s.id == sub_id) else {
            if result.is_ok() {
                let channel = channel.to_owned();
                self.command(CommandKind::Unsubscribe(UnsubscribeRequest { channel }), Pending::Other);
            }
            return;
        };
        match result {
            Ok(ReplyKind::Subscribe(r)) => sub.subscribed(r),
            Err(e) if temporary(&e) => {
                sub.phase = Phase::Waiting;
                self.resubscribe_at = Some(Instant::now() + self.settings.backoff.ceiling(1));
            }
            Err(e) if e.code == err::UNRECOVERABLE_POSITION => {
                sub.tracker.forget();
                sub.phase = Phase::Waiting;
                self.subscribe_waiting();
            }
            Err(e) => {
                if let Some(sub) = self.subs.remove(channel) {
                    sub.fail(Some(e.code), e.message);
                }
            }
            Ok(other) => tracing::warn!(?other, "unexpected reply to subscribe"),
        }
    }

    pub(super) fn subscribe_waiting(&mut self) {
        if !self.online {
            return;
        }
        let waiting: Vec<String> =
            self.subs.iter().filter(|(_, s)| s.phase == Phase::Waiting).map(|(c, _)| c.clone()).collect();
        for channel in waiting {
            let sub = &self.subs[&channel];
            let since = sub.tracker.since();
            let request = SubscribeRequest {
                channel: channel.clone(),
                token: sub.options.token.clone(),
                recover: since.is_some(),
                since,
                join_leave: sub.options.join_leave,
            };
            let sub_id = sub.id;
            let id = self.command(
                CommandKind::Subscribe(request),
                Pending::Subscribe { channel: channel.clone(), sub: sub_id },
            );
            if let Some(sub) = self.subs.get_mut(&channel) {
                sub.phase = Phase::Subscribing(id);
            }
        }
    }
}
