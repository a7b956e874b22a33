//! One connected visit of `peregrine bench soak`: the commands it sends and the checks of
//! everything the server sends back (replies, recovered and pushed publications).

use std::collections::HashMap;

use peregrine::Message;
use peregrine_wire::{
    Command, CommandKind, ConnectRequest, Encoding, HistoryRequest, Payload, Publication, PublishRequest,
    ReplyKind, ServerMessage, StreamPosition, SubscribeRequest, SubscribeResult, decode_server_messages,
    encode_commands,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Counters, REPLY_TIMEOUT, Rng, Shared, Socket, add};

/// What a publication's data carries: its publisher (a visit) and that publisher's sequence
/// number in the live channel, to check order and loss where there are no offsets.
#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    p: u64,
    s: u64,
}

/// One subscription of a visit, and where its stream stands.
struct Subscription {
    channel: String,
    /// A history channel (offsets, recovery); else a live one (publishers' sequence numbers).
    history: bool,
    /// The position asked to recover from.
    since: Option<StreamPosition>,
    /// The subscribe reply arrived.
    ready: bool,
    epoch: String,
    last_offset: u64,
    /// Live channel: the last sequence number seen from each publisher.
    last_seq: HashMap<u64, u64>,
}

/// A command waiting for its reply.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Connect,
    Subscribe(usize),
    /// A publish to subscription `sub`, with its live sequence number.
    Publish {
        sub: usize,
        seq: u64,
    },
    History(usize),
}

/// How the active part of a visit ended.
pub(super) enum Ended {
    /// Its time was up: the client leaves its chosen way.
    Leaving,
    /// The server closed the connection (code, or `eof`).
    ByServer(String),
}

impl Subscription {
    fn new(channel: &str, history: bool, since: Option<StreamPosition>) -> Self {
        Subscription {
            channel: channel.to_owned(),
            history,
            since,
            ready: false,
            epoch: String::new(),
            last_offset: 0,
            last_seq: HashMap::new(),
        }
    }
}

/// The state of one connected visit.
pub(super) struct Visit<'a> {
    shared: &'a Shared,
    id: u64,
    subs: Vec<Subscription>,
    pending: HashMap<u64, (Pending, Instant)>,
    next_id: u64,
    /// The sequence number of this visit's next publication in its live channel.
    live_seq: u64,
    /// A publish awaits its reply (one at a time, so sequence numbers stay in order).
    publishing: bool,
}

impl<'a> Visit<'a> {
    /// A visit subscribing to `history` channels (recovering from `positions`, the slot's
    /// previous visit's) and to the `live` one.
    pub(super) fn new(
        shared: &'a Shared,
        id: u64,
        history: &[String],
        positions: &[Option<StreamPosition>],
        live: &str,
    ) -> Self {
        let mut subs: Vec<Subscription> = history
            .iter()
            .zip(positions)
            .map(|(channel, since)| Subscription::new(channel, true, since.clone()))
            .collect();
        subs.push(Subscription::new(live, false, None));
        Visit { shared, id, subs, pending: HashMap::new(), next_id: 1, live_seq: 0, publishing: false }
    }

    /// Where each history subscription stopped, for the slot's next visit to recover from.
    pub(super) fn save_positions(&self, positions: &mut [Option<StreamPosition>]) {
        for (position, sub) in positions.iter_mut().zip(&self.subs) {
            if sub.ready {
                *position = Some(StreamPosition { epoch: sub.epoch.clone(), offset: sub.last_offset });
            }
        }
    }

    /// Connects, subscribes, then publishes and reads history at random until `leave_at`
    /// or until the server closes the connection.
    pub(super) async fn run(&mut self, ws: &mut Socket, leave_at: Instant, rng: &mut Rng) -> Ended {
        let args = &self.shared.args;
        let mut commands =
            vec![self.command(Pending::Connect, CommandKind::Connect(ConnectRequest::default()))];
        for i in 0..self.subs.len() {
            let sub = &self.subs[i];
            let request = SubscribeRequest {
                channel: sub.channel.clone(),
                recover: sub.history,
                since: sub.since.clone(),
                ..Default::default()
            };
            commands.push(self.command(Pending::Subscribe(i), CommandKind::Subscribe(request)));
        }
        if let Err(e) = send(ws, &commands).await {
            return Ended::ByServer(format!("send: {e}"));
        }
        let mut next_publish = Instant::now() + rng.exponential(args.publish_interval);
        let mut next_history = Instant::now() + rng.exponential(args.history_interval);
        let mut tick = tokio::time::interval(REPLY_TIMEOUT / 2);
        loop {
            let command = tokio::select! {
                message = ws.recv() => match message {
                    Some(Ok(Message::Text(text))) => {
                        self.handle(text.as_bytes());
                        None
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Ended::ByServer(frame.map_or("no code".into(), |f| f.code.as_u16().to_string()));
                    }
                    Some(Ok(_)) => None,
                    Some(Err(e)) => return Ended::ByServer(format!("error: {e}")),
                    None => return Ended::ByServer("eof".into()),
                },
                _ = tokio::time::sleep_until(next_publish) => {
                    next_publish = Instant::now() + rng.exponential(args.publish_interval);
                    self.publish(rng)
                }
                _ = tokio::time::sleep_until(next_history) => {
                    next_history = Instant::now() + rng.exponential(args.history_interval);
                    self.read_history(rng)
                }
                _ = tick.tick() => {
                    self.expire();
                    None
                }
                _ = tokio::time::sleep_until(leave_at) => return Ended::Leaving,
            };
            if let Some(command) = command
                && let Err(e) = send(ws, &[command]).await
            {
                return Ended::ByServer(format!("send: {e}"));
            }
        }
    }

    fn command(&mut self, pending: Pending, kind: CommandKind) -> Command {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, (pending, Instant::now()));
        Command { id, kind }
    }

    /// A publish to one of the subscribed channels, unless one is still unanswered.
    fn publish(&mut self, rng: &mut Rng) -> Option<Command> {
        let ready: Vec<usize> = (0..self.subs.len()).filter(|&i| self.subs[i].ready).collect();
        if self.publishing || ready.is_empty() {
            return None;
        }
        let i = ready[rng.below(ready.len())];
        // Each attempt its own number: a publish whose reply came too late may still have
        // been delivered, and must not look repeated when the next one goes out.
        let seq = self.live_seq;
        let data = Payload::json_of(&Stamp { p: self.id, s: seq }).ok()?;
        if !self.subs[i].history {
            self.live_seq += 1;
        }
        self.publishing = true;
        let request = PublishRequest { channel: self.subs[i].channel.clone(), data, idempotency_key: None };
        Some(self.command(Pending::Publish { sub: i, seq }, CommandKind::Publish(request)))
    }

    /// A history read of one of the history channels.
    fn read_history(&mut self, rng: &mut Rng) -> Option<Command> {
        let ready: Vec<usize> =
            (0..self.subs.len()).filter(|&i| self.subs[i].ready && self.subs[i].history).collect();
        let i = *ready.get(rng.below(ready.len().max(1)))?;
        let request =
            HistoryRequest { channel: self.subs[i].channel.clone(), limit: Some(10), ..Default::default() };
        Some(self.command(Pending::History(i), CommandKind::History(request)))
    }

    /// Counts the commands unanswered for too long, and forgets them.
    fn expire(&mut self) {
        let now = Instant::now();
        let before = self.pending.len();
        let mut expired = Vec::new();
        self.pending.retain(|_, (what, sent)| {
            let keep = now.duration_since(*sent) < REPLY_TIMEOUT;
            if !keep {
                expired.push(*what);
            }
            keep
        });
        for what in expired {
            if let Pending::Publish { sub, seq } = what {
                self.publishing = false;
                self.unconfirmed(sub, seq);
            }
        }
        add(&self.shared.counters.unanswered, (before - self.pending.len()) as u64);
    }

    /// Handles one frame from the server: replies and pushes.
    fn handle(&mut self, frame: &[u8]) {
        let c = &self.shared.counters;
        let Ok(messages) = decode_server_messages(frame, Encoding::Json) else {
            return add(&c.undecodable, 1);
        };
        for message in messages {
            match message {
                ServerMessage::Reply(reply) => {
                    let Some((what, _)) = self.pending.remove(&reply.id) else { continue };
                    self.answered(what, reply.result);
                }
                ServerMessage::Push(peregrine_wire::Push::Publication { channel, publication }) => {
                    match self.subs.iter().position(|s| s.channel == channel) {
                        Some(i) => self.deliver(i, &publication),
                        None => add(&c.deliveries_out_of_order, 1),
                    }
                }
                ServerMessage::Push(_) => {}
            }
        }
    }

    /// Remembers a live publish that failed or went unanswered: subscribers may never see it.
    fn unconfirmed(&self, sub: usize, seq: u64) {
        if !self.subs[sub].history {
            self.shared.counters.unconfirmed.borrow_mut().insert((self.id, seq));
        }
    }

    fn answered(&mut self, what: Pending, result: Result<ReplyKind, peregrine_wire::ReplyError>) {
        let c = &self.shared.counters;
        match (what, result) {
            (Pending::Connect, Ok(_)) => {}
            (Pending::Connect, Err(error)) => c.connect_failed(format!("connect refused: {}", error.code)),
            (Pending::Subscribe(i), Ok(ReplyKind::Subscribe(result))) => self.subscribed(i, result),
            (Pending::Subscribe(_), _) => add(&c.subscribe_errors, 1),
            (Pending::Publish { sub, seq }, result) => {
                self.publishing = false;
                if result.is_ok() {
                    add(&c.publishes_acked, 1);
                } else {
                    add(&c.publish_errors, 1);
                    self.unconfirmed(sub, seq);
                }
            }
            (Pending::History(i), Ok(ReplyKind::History(history))) => {
                let sub = &self.subs[i];
                let consecutive = history.publications.windows(2).all(|w| w[1].offset == w[0].offset + 1);
                let within = history.publications.last().is_none_or(|p| p.offset <= history.offset);
                let same_epoch = history.epoch == sub.epoch;
                add(
                    if consecutive && within && same_epoch { &c.history_reads } else { &c.history_errors },
                    1,
                );
            }
            (Pending::History(_), _) => add(&c.history_errors, 1),
        }
    }

    /// A subscribe reply: the recovery outcome, the recovered publications checked, and the
    /// position the live stream continues from.
    fn subscribed(&mut self, i: usize, result: SubscribeResult) {
        let c = &self.shared.counters;
        add(&c.subscriptions, 1);
        let sub = &mut self.subs[i];
        sub.ready = true;
        if !sub.history {
            return;
        }
        let mut expected = None;
        if let Some(since) = &sub.since {
            if result.recovered {
                add(&c.recovered, 1);
                expected = Some(since.offset + 1);
            } else if result.gap.is_some() {
                add(&c.recovery_gaps, 1);
            } else {
                add(&c.recovery_resets, 1);
            }
        }
        sub.epoch = result.epoch;
        for publication in &result.publications {
            add(&c.deliveries, 1);
            let want = expected.unwrap_or(publication.offset);
            count_order(c, want, publication.offset);
            expected = Some(publication.offset + 1);
        }
        sub.last_offset = match (result.more, result.publications.last()) {
            (true, Some(last)) => last.offset,
            (true, None) => sub.since.as_ref().map_or(result.offset, |s| s.offset),
            (false, _) => {
                if result.recovered
                    && let Some(next) = expected
                {
                    count_order(c, next, result.offset + 1);
                }
                result.offset
            }
        };
    }

    /// A pushed publication: next in its subscription's stream, or counted as missing
    /// (skipped ahead) or out of order (repeated or behind).
    fn deliver(&mut self, i: usize, publication: &Publication) {
        let c = &self.shared.counters;
        add(&c.deliveries, 1);
        let sub = &mut self.subs[i];
        if sub.history {
            if !sub.ready || publication.epoch.as_ref().is_some_and(|e| *e != sub.epoch) {
                return add(&c.deliveries_out_of_order, 1);
            }
            count_order(c, sub.last_offset + 1, publication.offset);
            sub.last_offset = sub.last_offset.max(publication.offset);
            return;
        }
        let Ok(stamp) = serde_json::from_slice::<Stamp>(publication.data.as_bytes()) else {
            return add(&c.undecodable, 1);
        };
        match sub.last_seq.get_mut(&stamp.p) {
            Some(last) if stamp.s > *last + 1 => {
                // Skipped numbers are missing unless their publish failed or went unanswered.
                let unconfirmed = c.unconfirmed.borrow();
                let missing = (*last + 1..stamp.s).filter(|&s| !unconfirmed.contains(&(stamp.p, s))).count();
                add(&c.deliveries_missing, missing as u64);
                *last = stamp.s;
            }
            Some(last) => {
                count_order(c, *last + 1, stamp.s);
                *last = (*last).max(stamp.s);
            }
            None => {
                sub.last_seq.insert(stamp.p, stamp.s);
            }
        }
    }
}

/// Compares a stream's next number with the one expected: ahead means missing ones, behind
/// means a repeat or reorder.
fn count_order(c: &Counters, expected: u64, got: u64) {
    if got > expected {
        add(&c.deliveries_missing, got - expected);
    } else if got < expected {
        add(&c.deliveries_out_of_order, 1);
    }
}

async fn send(ws: &mut Socket, commands: &[Command]) -> anyhow::Result<()> {
    let text = String::from_utf8(encode_commands(commands, Encoding::Json))?;
    ws.send(Message::text(text)).await?;
    Ok(())
}
