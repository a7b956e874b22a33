//! Subscribing, with recovery, and unsubscribing.
//!
//! A subscription is set up in steps so that nothing is lost or duplicated at the seam
//! between history and live publications:
//!
//! 1. [`prepare`](Session::prepare): checks, then registers the session in the hub as
//!    *pending* (live publications are held back), then reads the first page of history and
//!    decides what the client missed ([`recovery::recover`]). The stream's top offset at that
//!    read is the seam.
//! 2. The reply is queued with as much of the recovery as fits in a page
//!    ([`Session::page_bytes`]).
//! 3. When the reply holds all of it, [`activate`](Session::activate) switches the
//!    subscription to live atomically with queueing the held-back publications that came
//!    after the seam. Otherwise the reply says `more` and the rest is streamed up to the seam
//!    ([`stream`](super::stream)) before the subscription is activated the same way.
//!
//! `connect.subs` prepares every channel first, so that the connect reply can carry every
//! subscription's result before any of their publications; its subscriptions share one
//! page of reply.

use peregrine_wire::codes::{error as err, unsubscribe as unsub};
use peregrine_wire::{
    ClientInfo, ConnectResult, Push, ReplyError, ReplyKind, ServerMessage, StreamPosition, SubscribeOptions,
    SubscribeRequest, SubscribeResult,
};

use super::stream::{PAGE_READ, Streaming};
use super::{Session, Subscription};
use crate::broker::HistoryQuery;
use crate::disconnect::Disconnect;
use crate::hub::{GoLiveError, publications_frame};
use crate::node::reply_error;
use crate::outbox::PushError;
use crate::recovery;

/// A subscription registered as pending, with its reply computed.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) channel: String,
    pub(super) result: SubscribeResult,
    pub(super) subscription: Subscription,
    /// With `result.more`: the offset up to which the client has the recovery (in the reply
    /// or as the gap); the stream continues after it.
    pub(super) delivered: u64,
}

/// The `unsubscribe` push code for a subscription of `connect.subs` the server refused: ask
/// the client to subscribe again when that can work (a fresh token, another position, later).
fn refusal_code(e: &ReplyError) -> u32 {
    match e.code {
        err::TOKEN_EXPIRED => unsub::EXPIRED,
        err::UNRECOVERABLE_POSITION => unsub::INSUFFICIENT_STATE,
        _ if e.temporary => unsub::INSUFFICIENT_STATE,
        _ => unsub::SERVER,
    }
}

impl Session {
    /// `subscribe`: reply, then live publications.
    pub(super) async fn subscribe(&mut self, id: u64, req: SubscribeRequest) -> Result<(), Disconnect> {
        let opts = SubscribeOptions {
            token: req.token,
            since: req.since,
            recover: req.recover,
            join_leave: req.join_leave,
        };
        let mut page = self.page_left;
        let prepared = self.prepare(req.channel, opts, 0, &mut page).await;
        self.page_left = page;
        match prepared {
            Err(e) => {
                self.metrics().count_command(format!("error_{}", e.code));
                self.reply(id, Err(e));
                Ok(())
            }
            Ok(prepared) => {
                self.reply(id, Ok(ReplyKind::Subscribe(prepared.result.clone())));
                self.flush_replies()?;
                self.activate_or_stream(prepared).await
            }
        }
    }

    /// Prepares the subscriptions of `connect.subs` and of the token's channels, queues the
    /// connect reply with their results, then activates them.
    pub(super) async fn connect_subscriptions(
        &mut self,
        id: u64,
        mut result: ConnectResult,
        wanted: Vec<(String, SubscribeOptions)>,
    ) -> Result<(), Disconnect> {
        let mut prepared = Vec::new();
        let mut refused = Vec::new();
        // One page for the whole reply: what does not fit is streamed after it.
        let mut page = self.page_left;
        for (channel, opts) in wanted {
            if self.is_subscribed(&channel) || prepared.iter().any(|p: &Prepared| p.channel == channel) {
                continue;
            }
            match self.prepare(channel.clone(), opts, prepared.len(), &mut page).await {
                Ok(p) => {
                    result.subs.insert(channel, p.result.clone());
                    prepared.push(p);
                }
                Err(e) => {
                    refused.push(Push::Unsubscribe { channel, code: refusal_code(&e), reason: e.message })
                }
            }
        }
        self.reply(id, Ok(ReplyKind::Connect(result)));
        self.replies.extend(refused.into_iter().map(ServerMessage::Push));
        self.flush_replies()?;
        for p in prepared {
            self.activate_or_stream(p).await?;
        }
        self.page_left = page;
        Ok(())
    }

    /// Whether the session is subscribed to `channel`, or setting the subscription up.
    pub(super) fn is_subscribed(&self, channel: &str) -> bool {
        self.subscriptions.contains_key(channel) || self.streams.iter().any(|s| s.channel() == channel)
    }

    /// `page` is what is left of the reply's page, in bytes of publications: the recovery
    /// takes from it, and what does not fit is streamed. `also_prepared` counts the
    /// subscriptions prepared before this one and not active yet (those of one `connect`):
    /// they count against `client.max_subscriptions` too.
    async fn prepare(
        &mut self,
        channel: String,
        req: SubscribeOptions,
        also_prepared: usize,
        page: &mut usize,
    ) -> Result<Prepared, ReplyError> {
        let opts = self.node.channel_options(&channel)?;
        if self.is_subscribed(&channel) {
            return Err(reply_error(err::ALREADY_SUBSCRIBED, format!("already subscribed to {channel}")));
        }
        let max = self.node.config().client.max_subscriptions;
        if self.subscriptions.len() + self.streams.len() + also_prepared >= max {
            return Err(reply_error(
                err::LIMIT_EXCEEDED,
                format!("at most {max} subscriptions per connection"),
            ));
        }
        let (mut chan_info, mut expires) = (None, None);
        if opts.private {
            let user = self.identity.as_ref().map(|i| i.user.clone()).unwrap_or_default();
            let claims = self.node.authorize_subscription(req.token.as_deref(), &user, &channel)?;
            (chan_info, expires) = (claims.info.map(Box::new), claims.expires);
        }
        let hub = self.node.hub();
        if opts.max_subscribers > 0 && hub.subscriber_count(&channel) >= opts.max_subscribers {
            return Err(reply_error(
                err::LIMIT_EXCEEDED,
                format!("channel {channel} has its maximum of {} subscribers", opts.max_subscribers),
            ));
        }
        let outbox = self.control.outbox.clone();
        hub.subscribe_pending(&channel, self.id, outbox, self.encoding);
        // Every new subscriber waits for the node's subscription, not only the first: it may
        // still be on its way for the one before, and history must be read only after it.
        if let Err(e) = self.node.broker().subscribe_node(&channel).await {
            self.leave_hub(&channel).await;
            return Err(ReplyError { code: err::INTERNAL, message: e.to_string(), temporary: true });
        }
        let (mut result, delivered) = match self.position(&channel, opts.has_history(), &req, page).await {
            Ok(position) => position,
            Err(e) => {
                self.leave_hub(&channel).await;
                return Err(e);
            }
        };
        result.expires = expires;
        let join_leave = opts.presence && req.join_leave.unwrap_or(opts.join_leave);
        let subscription = Subscription { presence: opts.presence, join_leave, chan_info, expires };
        Ok(Prepared { channel, result, subscription, delivered })
    }

    /// The subscribe reply: the stream position and, with `recover`, what was missed (as
    /// much as fits in `page`), and the offset the client has up to.
    async fn position(
        &self,
        channel: &str,
        has_history: bool,
        req: &SubscribeOptions,
        page: &mut usize,
    ) -> Result<(SubscribeResult, u64), ReplyError> {
        if !has_history {
            return Ok((SubscribeResult::default(), 0));
        }
        let since = req.since.as_ref().filter(|_| req.recover);
        // Without recovery only the position is needed: read no publication.
        let limit = if since.is_some() { PAGE_READ } else { 0 };
        let query = HistoryQuery { since: since.cloned(), limit: Some(limit), reverse: false };
        let history = self.node.broker().history(channel, query).await.map_err(|e| ReplyError {
            code: err::INTERNAL,
            message: e.to_string(),
            temporary: true,
        })?;
        let Some(since) = since else {
            let result = SubscribeResult {
                epoch: history.epoch,
                offset: history.offset,
                positioned: true,
                ..Default::default()
            };
            return Ok((result, history.offset));
        };
        if since.epoch == history.epoch && since.offset > history.offset {
            return Err(reply_error(
                err::UNRECOVERABLE_POSITION,
                format!(
                    "since.offset {} is beyond the top of {channel} ({} in epoch {}): that position \
                     does not come from this stream; subscribe without `since`",
                    since.offset, history.offset, history.epoch
                ),
            ));
        }
        let r = recovery::recover(since, &history.epoch, history.offset, history.publications);
        let outcome = match (r.reset, r.gap.is_some()) {
            (true, _) => "reset",
            (false, true) => "gap",
            (false, false) => "recovered",
        };
        self.metrics().count_recovery(outcome);
        let (publications, used) = recovery::take_page(r.publications, *page, false, self.encoding);
        *page = page.saturating_sub(used);
        let delivered = publications.last().map(|p| p.offset).or(r.gap.map(|g| g.to)).unwrap_or(since.offset);
        let more = !r.reset && delivered < r.offset;
        let result = SubscribeResult {
            epoch: r.epoch,
            offset: r.offset,
            recovered: r.recovered,
            publications,
            gap: r.gap,
            positioned: true,
            more,
            expires: None,
        };
        Ok((result, delivered))
    }

    /// After the reply is queued: live at once, or once the rest of the recovery is sent.
    async fn activate_or_stream(&mut self, p: Prepared) -> Result<(), Disconnect> {
        if p.result.more {
            self.streams.push_back(Streaming::new(p));
            return Ok(());
        }
        self.activate(p).await
    }

    /// Switches a prepared subscription to live (the reply, and any streamed recovery, must
    /// be queued already): the publications held back since `prepare` that came after the
    /// seam go out first, and none the client has (the hub skips those still on their way).
    pub(super) async fn activate(&mut self, p: Prepared) -> Result<(), Disconnect> {
        let seam = p
            .result
            .positioned
            .then(|| StreamPosition { epoch: p.result.epoch.clone(), offset: p.result.offset });
        let in_flight = self.node.broker().history_may_lead_delivery();
        let encoding = self.encoding;
        let channel = p.channel.clone();
        let live = self.node.hub().go_live(&channel, self.id, seam, in_flight, |held| {
            publications_frame(&channel, held, encoding).into_iter().collect()
        });
        match live {
            Ok(()) => {}
            // Unsubscribed (server-side) while preparing: nothing to activate.
            Err(GoLiveError::NotSubscribed) => return Ok(()),
            Err(GoLiveError::Outbox(PushError::Closed)) => {
                return Err(Disconnect::new(3000, "session closed"));
            }
            Err(GoLiveError::Outbox(_)) => return Err(Disconnect::slow()),
        }
        // Recorded before any `.await`, so that a session cancelled from here on still
        // clears it (presence, count) when it ends.
        self.metrics().subscriptions.inc();
        let info = ClientInfo { chan_info: p.subscription.chan_info.as_deref().cloned(), ..self.info() };
        let (presence, join_leave) = (p.subscription.presence, p.subscription.join_leave);
        self.subscriptions.insert(p.channel.clone(), p.subscription);
        if presence {
            let _ = self.node.presence_store().add(&p.channel, info.clone()).await;
        }
        if join_leave {
            let _ = self.node.broker().publish_join_leave(&p.channel, info, true).await;
        }
        Ok(())
    }

    /// Leaves `channel`: hub, node-level broker subscription, presence, leave event; or
    /// drops a recovery still being streamed for it.
    pub(super) async fn unsubscribe(&mut self, channel: &str) {
        if let Some(i) = self.streams.iter().position(|s| s.channel() == channel) {
            self.streams.remove(i);
            self.leave_hub(channel).await;
            return;
        }
        let Some(sub) = self.subscriptions.remove(channel) else { return };
        self.metrics().subscriptions.dec();
        self.leave_hub(channel).await;
        let info = ClientInfo { chan_info: sub.chan_info.as_deref().cloned(), ..self.info() };
        if sub.presence {
            let _ = self.node.presence_store().remove(channel, &self.client_id).await;
        }
        if sub.join_leave {
            let _ = self.node.broker().publish_join_leave(channel, info, false).await;
        }
    }

    pub(super) async fn leave_hub(&self, channel: &str) {
        if self.node.hub().unsubscribe(channel, self.id) {
            let _ = self.node.broker().unsubscribe_node(channel).await;
        }
    }
}
