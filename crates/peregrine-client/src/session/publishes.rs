//! Publishes on the wire: the in-flight window, acknowledgement timeouts and resends
//! with the same idempotency key, rate-limit holds.

use peregrine_wire::codes::error as err;
use peregrine_wire::{Command, CommandKind, PublishRequest, ReplyError, ReplyKind};
use tokio::time::Instant;

use super::{Pending, Session, server_error, temporary};
use crate::error::Error;
use crate::queue::Sent;

impl Session {
    /// Sends queued publishes, oldest first, up to the in-flight window.
    pub(super) fn pump_publishes(&mut self) {
        if !self.online {
            return;
        }
        let now = Instant::now();
        let deadline = now + self.settings.ack_timeout;
        let mut in_flight = 0;
        let mut to_send = Vec::new();
        for (index, q) in self.queue.iter().enumerate() {
            if in_flight >= self.settings.max_in_flight {
                break;
            }
            if q.sent.is_some() {
                in_flight += 1;
                continue;
            }
            if q.not_before.is_some_and(|t| t > now) {
                // Held back by a rate limit: later ones wait too, to keep the order.
                break;
            }
            to_send.push(index);
            in_flight += 1;
        }
        for index in to_send {
            self.send_publish(index, deadline);
        }
    }

    pub(super) fn send_publish(&mut self, index: usize, deadline: Instant) {
        let id = self.next_id();
        let Some(q) = self.queue.get_mut(index) else { return };
        if let Some(old) = q.sent.replace(Sent { id, deadline }) {
            self.pending.remove(&old.id);
        }
        q.not_before = None;
        let request = PublishRequest {
            channel: q.channel.clone(),
            data: q.data.clone(),
            idempotency_key: Some(q.key.clone()),
        };
        self.pending.insert(id, Pending::Publish);
        self.outbox.push(Command { id, kind: CommandKind::Publish(request) });
    }

    pub(super) fn publish_timeouts(&mut self, now: Instant) {
        let retries = self.settings.publish_retries;
        let mut index = 0;
        while let Some(q) = self.queue.get_mut(index) {
            let Some(sent) = &q.sent else { break };
            if sent.deadline > now {
                index += 1;
                continue;
            }
            if q.timeouts >= retries {
                let id = sent.id;
                self.pending.remove(&id);
                if let Some(q) = self.queue.finish(index)
                    && let Some(reply) = q.reply
                {
                    let _ = reply.send(Err(Error::Timeout));
                }
                continue;
            }
            q.timeouts += 1;
            tracing::debug!(key = %q.key, attempt = q.timeouts + 1, "publish not acknowledged in time; sending again");
            self.send_publish(index, now + self.settings.ack_timeout);
            index += 1;
        }
    }

    pub(super) fn on_publish_reply(&mut self, id: u64, result: Result<ReplyKind, ReplyError>) {
        let Some(index) = self.queue.position_of_attempt(id) else { return };
        match result {
            Ok(ReplyKind::Publish(ack)) => {
                if let Some(q) = self.queue.finish(index)
                    && let Some(reply) = q.reply
                {
                    let _ = reply.send(Ok(ack));
                }
            }
            Err(e) if temporary(&e) => {
                // Rate limited: send it again a little later, and the later ones after it.
                if let Some(q) = self.queue.get_mut(index) {
                    q.sent = None;
                    q.not_before = Some(Instant::now() + self.settings.backoff.ceiling(0));
                }
            }
            other => {
                let error = match other {
                    Err(e) => server_error(e),
                    Ok(kind) => {
                        Error::Server { code: err::INTERNAL, message: format!("unexpected reply {kind:?}") }
                    }
                };
                if let Some(q) = self.queue.finish(index)
                    && let Some(reply) = q.reply
                {
                    let _ = reply.send(Err(error));
                }
            }
        }
        self.pump = true;
    }
}
