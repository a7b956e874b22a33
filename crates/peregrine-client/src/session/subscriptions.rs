//! Subscriptions across connections: (re)subscribing with the tracked position, and
//! turning replies and pushes into [`SubscriptionEvent`]s.

use std::collections::BTreeMap;

use std::time::Duration;

use peregrine_wire::codes::{disconnect as dc, error as err};
use peregrine_wire::{
    CommandKind, Publication, ReplyError, ReplyKind, SubRefreshRequest, SubscribeRequest, SubscribeResult,
    UnsubscribeRequest,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Ending, Pending, Session, renew_at, temporary};
use crate::error::Error;
use crate::events::SubscriptionEvent;
use crate::subscription::{Jump, SubscribeOptions, Tracker};

/// A subscription token fetched: the channel, the subscription's id, the provider's answer.
pub(super) type FetchedToken = (String, u64, Result<String, String>);

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
    /// The subscription token to send (from the options, then from the provider).
    pub(super) token: Option<String>,
    /// When to ask the provider for the next token (before the current one expires, or
    /// again after the provider failed).
    pub(super) token_at: Option<Instant>,
    /// The provider is being asked.
    pub(super) fetching: bool,
    /// A fresh token was already tried after the server refused one as expired.
    pub(super) token_retried: bool,
}

impl Sub {
    pub(super) fn new(
        id: u64,
        options: SubscribeOptions,
        events: mpsc::UnboundedSender<SubscriptionEvent>,
        first: oneshot::Sender<Result<(), Error>>,
    ) -> Sub {
        Sub {
            id,
            tracker: Tracker::starting_at(options.since.clone()),
            token: options.token.clone(),
            options,
            events,
            first: Some(first),
            phase: Phase::Waiting,
            token_at: None,
            fetching: false,
            token_retried: false,
        }
    }

    /// Whether the provider must be asked before (re)subscribing.
    pub(super) fn needs_token(&self) -> bool {
        self.token.is_none() && self.options.token_provider.is_some()
    }

    /// Schedules the next token ahead of `expires` (unix seconds), when there is a provider.
    fn schedule_token(&mut self, expires: Option<u64>) {
        self.token_at = self.options.token_provider.as_ref().and(expires).map(renew_at);
    }

    pub(super) fn emit(&self, event: SubscriptionEvent) {
        let _ = self.events.send(event);
    }

    /// The server confirmed the subscription: deliver what the reply holds, answer the
    /// waiting `subscribe` call.
    fn subscribed(&mut self, result: SubscribeResult) {
        self.phase = Phase::Active;
        self.token_retried = false;
        self.schedule_token(result.expires);
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
            Err(e)
                if e.code == err::TOKEN_EXPIRED
                    && sub.options.token_provider.is_some()
                    && !sub.token_retried =>
            {
                // Refused as expired: one fresh token from the provider, then subscribe again.
                sub.token_retried = true;
                sub.token = None;
                sub.phase = Phase::Waiting;
                self.subscribe_waiting();
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
            if sub.needs_token() {
                // Subscribed once the provider answers (`on_subscription_token`), unless it
                // failed a moment ago: then when its retry is due.
                if sub.token_at.is_none_or(|t| t <= Instant::now()) {
                    self.fetch_subscription_token(&channel);
                }
                continue;
            }
            let sub = &self.subs[&channel];
            let since = sub.tracker.since();
            let request = SubscribeRequest {
                channel: channel.clone(),
                token: sub.token.clone(),
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

    /// Asks `channel`'s token provider for a token, unless it is being asked already.
    pub(super) fn fetch_subscription_token(&mut self, channel: &str) {
        let Some(sub) = self.subs.get_mut(channel) else { return };
        let Some(provider) = sub.options.token_provider.clone() else { return };
        if sub.fetching {
            return;
        }
        sub.fetching = true;
        sub.token_at = None;
        let (channel, id) = (channel.to_owned(), sub.id);
        let task = self.token_fetches.spawn({
            let channel = channel.clone();
            async move {
                let token = provider.fetch(channel.clone()).await;
                (channel, id, token)
            }
        });
        self.token_fetchers.insert(task.id(), (channel, id));
    }

    /// A token fetch task ended: with the provider's answer, or by panicking (taken as a
    /// failure of the provider, retried like one).
    pub(super) fn on_subscription_token_task(
        &mut self,
        done: Result<(tokio::task::Id, FetchedToken), tokio::task::JoinError>,
    ) {
        match done {
            Ok((task, fetched)) => {
                self.token_fetchers.remove(&task);
                self.on_subscription_token(fetched);
            }
            Err(e) => {
                if let Some((channel, id)) = self.token_fetchers.remove(&e.id()) {
                    self.on_subscription_token((channel, id, Err(format!("the provider panicked: {e}"))));
                }
            }
        }
    }

    /// The provider answered: subscribe with the token, or send it with `sub_refresh` when
    /// the subscription is live.
    pub(super) fn on_subscription_token(&mut self, (channel, id, token): FetchedToken) {
        let Some(sub) = self.subs.get_mut(&channel).filter(|s| s.id == id) else { return };
        sub.fetching = false;
        let token = match token {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(channel, error = %e, "the subscription token provider failed; retrying in 1 s");
                sub.token_at = Some(Instant::now() + Duration::from_secs(1));
                return;
            }
        };
        sub.token = Some(token.clone());
        match sub.phase {
            Phase::Active if self.online => {
                let request = SubRefreshRequest { channel: channel.clone(), token };
                self.command(CommandKind::SubRefresh(request), Pending::SubRefresh { channel, sub: id });
            }
            Phase::Waiting => self.subscribe_waiting(),
            // Subscribing with the previous token: the next reply schedules the next one.
            _ => {}
        }
    }

    /// Subscriptions whose next token is due.
    pub(super) fn subscription_tokens_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.token_at.is_some_and(|t| now >= t))
            .map(|(c, _)| c.clone())
            .collect();
        for channel in due {
            self.fetch_subscription_token(&channel);
        }
    }

    pub(super) fn on_sub_refresh_reply(
        &mut self,
        channel: &str,
        id: u64,
        result: Result<ReplyKind, ReplyError>,
    ) {
        let Some(sub) = self.subs.get_mut(channel).filter(|s| s.id == id) else { return };
        match result {
            Ok(ReplyKind::SubRefresh(r)) => sub.schedule_token(r.expires),
            Ok(other) => tracing::warn!(?other, "unexpected reply to sub_refresh"),
            // The subscription then ends at the old token's expiry (2501) and is subscribed
            // again with a fresh token.
            Err(e) => {
                tracing::warn!(channel, code = e.code, message = %e.message, "subscription token refresh refused")
            }
        }
    }
}
