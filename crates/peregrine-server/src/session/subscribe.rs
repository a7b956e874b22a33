//! Subscribing, with recovery, and unsubscribing.
//!
//! A subscription is set up in two steps so that nothing is lost or duplicated at the seam
//! between history and live publications:
//!
//! 1. [`prepare`](Session::prepare): checks, then registers the session in the hub as
//!    *pending* (live publications are held back), then reads history and decides what the
//!    client missed ([`recovery::recover`]). The stream's top offset at that read is the seam.
//! 2. The reply is queued, then [`activate`](Session::activate) switches the subscription
//!    to live atomically with queueing the held-back publications that came after the seam.
//!
//! `connect.subs` prepares every channel first, so that the connect reply can carry every
//! subscription's result before any of their publications.

use peregrine_wire::codes::{error as err, unsubscribe as unsub};
use peregrine_wire::{
    ClientInfo, ConnectResult, Push, ReplyError, ReplyKind, ServerMessage, SubscribeOptions,
    SubscribeRequest, SubscribeResult, encode_server_messages,
};

use super::{Session, Subscription};
use crate::broker::HistoryQuery;
use crate::disconnect::Disconnect;
use crate::hub::GoLiveError;
use crate::node::reply_error;
use crate::outbox::{Frame, PushError};
use crate::recovery;

/// A subscription registered as pending, with its reply computed.
#[derive(Debug)]
pub(super) struct Prepared {
    channel: String,
    result: SubscribeResult,
    subscription: Subscription,
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
        match self.prepare(req.channel, opts).await {
            Err(e) => {
                self.metrics().count_command(format!("error_{}", e.code));
                self.reply(id, Err(e));
                Ok(())
            }
            Ok(prepared) => {
                self.reply(id, Ok(ReplyKind::Subscribe(prepared.result.clone())));
                self.flush_replies()?;
                self.activate(prepared).await
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
        for (channel, opts) in wanted {
            if self.subscriptions.contains_key(&channel)
                || prepared.iter().any(|p: &Prepared| p.channel == channel)
            {
                continue;
            }
            match self.prepare(channel.clone(), opts).await {
                Ok(p) => {
                    result.subs.insert(channel, p.result.clone());
                    prepared.push(p);
                }
                Err(e) => refused.push(Push::Unsubscribe { channel, code: unsub::SERVER, reason: e.message }),
            }
        }
        self.reply(id, Ok(ReplyKind::Connect(result)));
        self.replies.extend(refused.into_iter().map(ServerMessage::Push));
        self.flush_replies()?;
        for p in prepared {
            self.activate(p).await?;
        }
        Ok(())
    }

    async fn prepare(&mut self, channel: String, req: SubscribeOptions) -> Result<Prepared, ReplyError> {
        let opts = self.node.channel_options(&channel)?;
        if self.subscriptions.contains_key(&channel) {
            return Err(reply_error(err::ALREADY_SUBSCRIBED, format!("already subscribed to {channel}")));
        }
        let max = self.node.config().client.max_subscriptions;
        if self.subscriptions.len() >= max {
            return Err(reply_error(
                err::LIMIT_EXCEEDED,
                format!("at most {max} subscriptions per connection"),
            ));
        }
        let mut chan_info = None;
        if opts.private {
            let user = self.identity.as_ref().map(|i| i.user.clone()).unwrap_or_default();
            chan_info = self.node.authorize_subscription(req.token.as_deref(), &user, &channel)?;
        }
        let hub = self.node.hub();
        if opts.max_subscribers > 0 && hub.subscriber_count(&channel) >= opts.max_subscribers {
            return Err(reply_error(
                err::LIMIT_EXCEEDED,
                format!("channel {channel} has its maximum of {} subscribers", opts.max_subscribers),
            ));
        }
        let outbox = self.control.outbox.clone();
        if hub.subscribe_pending(&channel, self.id, outbox, self.encoding)
            && let Err(e) = self.node.broker().subscribe_node(&channel).await
        {
            self.leave_hub(&channel).await;
            return Err(ReplyError { code: err::INTERNAL, message: e.to_string(), temporary: true });
        }
        let result = match self.position(&channel, opts.has_history(), &req).await {
            Ok(result) => result,
            Err(e) => {
                self.leave_hub(&channel).await;
                return Err(e);
            }
        };
        let join_leave = opts.presence && req.join_leave.unwrap_or(opts.join_leave);
        let subscription = Subscription { presence: opts.presence, join_leave, chan_info };
        Ok(Prepared { channel, result, subscription })
    }

    /// The subscribe reply: the stream position and, with `recover`, what was missed.
    async fn position(
        &self,
        channel: &str,
        has_history: bool,
        req: &SubscribeOptions,
    ) -> Result<SubscribeResult, ReplyError> {
        if !has_history {
            return Ok(SubscribeResult::default());
        }
        let since = req.since.as_ref().filter(|_| req.recover);
        // Without recovery only the position is needed: read no publication.
        let query =
            HistoryQuery { since: since.cloned(), limit: since.is_none().then_some(0), reverse: false };
        let history = self.node.broker().history(channel, query).await.map_err(|e| ReplyError {
            code: err::INTERNAL,
            message: e.to_string(),
            temporary: true,
        })?;
        let Some(since) = since else {
            return Ok(SubscribeResult {
                epoch: history.epoch,
                offset: history.offset,
                positioned: true,
                ..Default::default()
            });
        };
        let r = recovery::recover(since, &history.epoch, history.offset, history.publications);
        let outcome = if r.reset {
            "reset"
        } else if r.gap.is_some() {
            "gap"
        } else {
            "recovered"
        };
        self.metrics().count_recovery(outcome);
        Ok(SubscribeResult {
            epoch: r.epoch,
            offset: r.offset,
            recovered: r.recovered,
            publications: r.publications,
            gap: r.gap,
            positioned: true,
        })
    }

    /// Switches a prepared subscription to live (the reply must be queued already): the
    /// publications held back since `prepare` that the reply does not cover go out first.
    async fn activate(&mut self, p: Prepared) -> Result<(), Disconnect> {
        let seam = p.result.offset;
        let positioned = p.result.positioned;
        let encoding = self.encoding;
        let channel = p.channel.clone();
        let live = self.node.hub().go_live(&channel, self.id, |held| {
            let pushes: Vec<ServerMessage> = held
                .into_iter()
                .filter(|publication| !positioned || publication.offset > seam)
                .map(|publication| {
                    ServerMessage::Push(Push::Publication { channel: channel.clone(), publication })
                })
                .collect();
            if pushes.is_empty() {
                Vec::new()
            } else {
                vec![Frame::from(encode_server_messages(&pushes, encoding))]
            }
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
        self.metrics().subscriptions.inc();
        let info = ClientInfo { chan_info: p.subscription.chan_info.clone(), ..self.info() };
        if p.subscription.presence {
            let _ = self.node.presence_store().add(&p.channel, info.clone()).await;
        }
        if p.subscription.join_leave {
            let _ = self.node.broker().publish_join_leave(&p.channel, info, true).await;
        }
        self.subscriptions.insert(p.channel, p.subscription);
        Ok(())
    }

    /// Leaves `channel`: hub, node-level broker subscription, presence, leave event.
    pub(super) async fn unsubscribe(&mut self, channel: &str) {
        let Some(sub) = self.subscriptions.remove(channel) else { return };
        self.metrics().subscriptions.dec();
        self.leave_hub(channel).await;
        let info = ClientInfo { chan_info: sub.chan_info.clone(), ..self.info() };
        if sub.presence {
            let _ = self.node.presence_store().remove(channel, &self.client_id).await;
        }
        if sub.join_leave {
            let _ = self.node.broker().publish_join_leave(channel, info, false).await;
        }
    }

    async fn leave_hub(&self, channel: &str) {
        if self.node.hub().unsubscribe(channel, self.id) {
            let _ = self.node.broker().unsubscribe_node(channel).await;
        }
    }
}
