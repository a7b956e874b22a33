//! Streaming a recovery too big for its subscribe reply.
//!
//! A client that comes back far behind may have missed more than one reply can carry: more
//! than the outbound queue holds, or than the client accepts in one message. Its reply
//! carries the first page and `more: true`; the rest is read from history a page at a time,
//! each page queued only once the outbox has drained to a quarter of its limit, so the
//! recovery goes at the pace of the client's socket and is never counted as a slow consumer.
//! Once the stream reaches the seam (the reply's `offset`) the subscription goes live, with
//! the publications held back meanwhile (see [`activate`](Session::activate)).
//!
//! If history moved on while streaming (trimmed by size or age past the next offset, or
//! given a new epoch), the rest cannot be sent in order: the subscription ends with an
//! `unsubscribe` push `2500` (insufficient state), and the client's resubscribe from its
//! last offset gets a reply that names the exact gap.

use peregrine_wire::codes::unsubscribe as unsub;
use peregrine_wire::{Push, ServerMessage, StreamPosition};

use super::subscribe::Prepared;
use super::{Session, Subscription};
use crate::broker::HistoryQuery;
use crate::disconnect::Disconnect;
use crate::hub::publications_frame;
use crate::recovery;

/// How many publications one history read asks for (pages are then cut by size).
pub(crate) const PAGE_READ: usize = 256;

/// A subscription whose recovery is being streamed.
#[derive(Debug)]
pub(super) struct Streaming {
    prepared: Prepared,
    /// The offset of the last publication sent (or given up as the gap).
    sent: u64,
}

impl Streaming {
    pub(super) fn new(prepared: Prepared) -> Streaming {
        let sent = prepared.delivered;
        Streaming { prepared, sent }
    }

    pub(super) fn channel(&self) -> &str {
        &self.prepared.channel
    }

    pub(super) fn subscription(&self) -> &Subscription {
        &self.prepared.subscription
    }

    pub(super) fn subscription_mut(&mut self) -> &mut Subscription {
        &mut self.prepared.subscription
    }
}

impl Session {
    /// Whether a recovery is being streamed: the transport then calls
    /// [`stream_recovery`](Session::stream_recovery) each time the outbox has drained to
    /// [`stream_low_water`](Session::stream_low_water).
    pub fn is_streaming(&self) -> bool {
        !self.streams.is_empty()
    }

    /// The queued bytes at or below which the next page of a streamed recovery goes out.
    pub fn stream_low_water(&self) -> usize {
        self.page_bytes()
    }

    /// Queues the next page of the oldest streamed recovery; activates its subscription
    /// when the recovery is complete. An error means the session must end with it.
    pub async fn stream_recovery(&mut self) -> Result<(), Disconnect> {
        let Some(stream) = self.streams.front() else { return Ok(()) };
        let channel = stream.channel().to_owned();
        let (epoch, seam, sent) =
            (stream.prepared.result.epoch.clone(), stream.prepared.result.offset, stream.sent);
        let since = StreamPosition { epoch: epoch.clone(), offset: sent };
        let query = HistoryQuery { since: Some(since), limit: Some(PAGE_READ), reverse: false };
        let read = self.node.broker().history(&channel, query).await;
        let page = match read {
            Ok(h) if h.epoch == epoch => {
                let next: Vec<_> = h.publications.into_iter().take_while(|p| p.offset <= seam).collect();
                // Only what continues exactly after `sent`: the stream never skips.
                let run = next.iter().zip(sent + 1..).take_while(|(p, offset)| p.offset == *offset).count();
                let (page, _) = recovery::take_page(
                    next.into_iter().take(run).collect(),
                    self.page_bytes(),
                    true,
                    self.encoding,
                );
                page
            }
            _ => Vec::new(),
        };
        let Some(last) = page.last().map(|p| p.offset) else {
            return self.end_stream(&channel, "history moved on while the recovery was sent").await;
        };
        let streamed = page.len() as u64;
        if let Some(frame) = publications_frame(&channel, page, self.encoding) {
            self.push_frame(frame)?;
        }
        self.metrics().recovery_streamed.inc_by(streamed);
        if let Some(stream) = self.streams.front_mut() {
            stream.sent = last;
        }
        if last >= seam
            && let Some(done) = self.streams.pop_front()
        {
            self.activate(done.prepared).await?;
        }
        Ok(())
    }

    /// The recovery cannot continue in order: end the subscription and ask the client to
    /// subscribe again from where it is, which names the gap.
    async fn end_stream(&mut self, channel: &str, why: &str) -> Result<(), Disconnect> {
        self.streams.retain(|s| s.channel() != channel);
        self.leave_hub(channel).await;
        self.metrics().count_recovery("interrupted");
        let reason = format!("{why}: subscribe again with `since` to learn what is missing");
        self.replies.push(ServerMessage::Push(Push::Unsubscribe {
            channel: channel.to_owned(),
            code: unsub::INSUFFICIENT_STATE,
            reason,
        }));
        self.flush_replies()
    }
}
