//! The session loop every transport adapts to ([`run`]).
//!
//! Two tasks per connection. The **reader** (the connection's own task) feeds the client's
//! messages to the [`Session`]; it also enforces the connect timeout and credential expiry,
//! applies server-side unsubscribes and streams big recoveries as the outbox drains. The
//! **writer** drains the session's outbox, a batch at a time; when the node asks the session
//! to disconnect (slow consumer, shutdown, API), it sends a `disconnect` push and the
//! transport's close with the code, or, for a slow consumer whose connection is clogged
//! anyway, just the close.

use std::sync::Arc;
use std::time::Duration;

use peregrine_wire::Encoding;
use peregrine_wire::codes::disconnect as dc;
use tokio::time::Instant;

use super::{Identity, Session};
use crate::admission::Ticket;
use crate::disconnect::Disconnect;
use crate::node::{Node, SessionControl};
use crate::outbox::Queued;
use crate::transport::{Inbound, Outbound, Received, Transport};

/// Most bytes taken from the outbox for one write.
const WRITE_BATCH: usize = 256 << 10;

/// How long a closing connection may take to answer the close before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Serves one client over a transport until it goes away or is disconnected. `ticket` is
/// its admission: its handshake slot is given back once `connect` is answered, its address
/// slot when the connection ends.
pub fn run<I: Inbound, O: Outbound>(
    node: Arc<Node>,
    inbound: I,
    outbound: O,
    encoding: Encoding,
    identity: Option<Identity>,
    ticket: Ticket,
    transport: Transport,
) -> impl Future<Output = ()> + Send {
    // An async fn keeps its arguments in its future for its whole life, beside the locals
    // they move to: boxed, the identity (moved into the session) costs a pointer there.
    serve(node, inbound, outbound, encoding, identity.map(Box::new), ticket, transport)
}

async fn serve<I: Inbound, O: Outbound>(
    node: Arc<Node>,
    mut inbound: I,
    mut outbound: O,
    encoding: Encoding,
    identity: Option<Box<Identity>>,
    mut ticket: Ticket,
    transport: Transport,
) {
    let (id, control) = match node.register() {
        Ok(registered) => registered,
        Err(d) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, Box::pin(outbound.close(&d, true))).await;
            return;
        }
    };
    let transport_gauge = node.metrics().transport_connections(transport.as_str());
    transport_gauge.inc();
    let metrics_node = Arc::clone(&node);
    let writer_control = Arc::clone(&control);
    let writer_task = tokio::spawn(write_loop(outbound, writer_control, metrics_node));
    let mut session = Session::new(Arc::clone(&node), id, Arc::clone(&control), encoding, identity);
    read_loop(&mut inbound, &mut session, &control, &node, &mut ticket).await;
    // The writer ends once the outbox is closed and drained, or after its close.
    control.outbox.close();
    let deadline = if control.requested_disconnect().is_some() { CLOSE_GRACE * 2 } else { CLOSE_GRACE };
    let writer_task_abort = writer_task.abort_handle();
    if Box::pin(tokio::time::timeout(deadline, writer_task)).await.is_err() {
        writer_task_abort.abort();
    }
    match control.requested_disconnect() {
        Some(d) if d.code == dc::SLOW => {
            tracing::info!(client = session.client_id(), "slow consumer disconnected: outbound queue full");
            node.metrics().slow_disconnects.inc();
            node.metrics().count_disconnect(d.code);
        }
        Some(d) => {
            tracing::debug!(client = session.client_id(), code = d.code, reason = %d.reason, "disconnected");
            node.metrics().count_disconnect(d.code);
        }
        None => tracing::debug!(client = session.client_id(), "connection ended by the client"),
    }
    // Boxed, like every rarely taken await here: a future is as large as its largest
    // state, and this one stays alive for every idle connection.
    Box::pin(session.close()).await;
    transport_gauge.dec();
}

async fn read_loop<I: Inbound>(
    inbound: &mut I,
    session: &mut Session,
    control: &SessionControl,
    node: &Node,
    ticket: &mut Ticket,
) {
    let metrics = node.metrics();
    let connect_by = Instant::now() + node.config().client.connect_timeout;
    let mut disconnecting: Option<Instant> = None;
    let mut told_connected = false;
    // One timer for every deadline (connect, credentials and subscription tokens, close
    // grace), reset to the next one: a timer is about 100 bytes, and this future lives as
    // long as the connection.
    let timer = tokio::time::sleep_until(connect_by);
    tokio::pin!(timer);
    loop {
        let deadline = match disconnecting {
            Some(at) => Some(at),
            None => {
                let connect = (!session.is_connected()).then_some(connect_by);
                let expiry = session.expires_in().map(|left| Instant::now() + left);
                connect.into_iter().chain(expiry).min()
            }
        };
        if let Some(at) = deadline
            && timer.deadline() != at
        {
            timer.as_mut().reset(at);
        }
        tokio::select! {
            received = inbound.recv() => {
                let payload = match received {
                    Received::Message(payload) => payload,
                    Received::Dead(d) => {
                        // Reading is over; the writer still sends the push and the close.
                        control.disconnect(d);
                        return;
                    }
                    Received::Gone => return,
                };
                if disconnecting.is_some() {
                    continue;
                }
                metrics.messages_in.inc();
                metrics.bytes_in.inc_by(payload.len() as u64);
                // Boxed: the command futures are large and only live while a message is
                // handled, so an idle connection's task stays small.
                if let Err(d) = Box::pin(session.handle_frame(&payload)).await {
                    control.disconnect(d);
                }
                if let Some(user) = session.user()
                    && !told_connected
                {
                    ticket.connected();
                    inbound.connected(user);
                    told_connected = true;
                }
            }
            _ = &mut timer, if deadline.is_some() => {
                if disconnecting.is_some() {
                    return;
                }
                if !session.is_connected() {
                    if Instant::now() >= connect_by {
                        control.disconnect(Disconnect::new(dc::STALE, "no connect command in time"));
                    }
                } else if session.expires_in().is_some()
                    && let Err(d) = Box::pin(session.expire()).await
                {
                    control.disconnect(d);
                }
            }
            // A recovery too big for its reply goes out a page at a time, as the client
            // takes it.
            _ = control.outbox.drained_to(session.stream_low_water()), if session.is_streaming() && disconnecting.is_none() => {
                if let Err(d) = Box::pin(session.stream_recovery()).await {
                    control.disconnect(d);
                }
            }
            _ = control.notified(), if disconnecting.is_none() => {
                if let Err(d) = Box::pin(session.apply_unsubscribes()).await {
                    control.disconnect(d);
                }
            }
        }
        if disconnecting.is_none() && control.requested_disconnect().is_some() {
            // Keep reading (the peer's close reply ends the loop), but not forever.
            disconnecting = Some(Instant::now() + CLOSE_GRACE);
        }
    }
}

/// Stops pushes from writing directly into the connection when dropped.
struct StopDirect<'a>(&'a crate::outbox::Outbox);

impl Drop for StopDirect<'_> {
    fn drop(&mut self) {
        self.0.set_direct(None);
    }
}

/// The size of the writer task's future (for the memory tests).
#[cfg(test)]
pub(crate) fn writer_future_size<O: Outbound>(
    outbound: O,
    control: Arc<SessionControl>,
    node: Arc<Node>,
) -> usize {
    std::mem::size_of_val(&write_loop(outbound, control, node))
}

async fn write_loop<O: Outbound>(mut outbound: O, control: Arc<SessionControl>, node: Arc<Node>) {
    let metrics = node.metrics();
    let outbox = &control.outbox;
    // Pushes write directly only on a single-threaded node (`workers = 1`, e.g. a node per
    // core): there every write runs on the one thread anyway, and a broadcast saves a task
    // wake-up per subscriber. With more workers, the writer tasks spread one big broadcast's
    // writes over every core, which a fan-out writing itself would serialize.
    if node.config().workers == 1 {
        outbox.set_direct(outbound.direct());
    }
    // However this task ends (its loop, or aborted), pushes stop writing directly: the
    // handle holds the connection open.
    let _direct = StopDirect(outbox);
    let mut batch: Vec<Queued> = Vec::new();
    loop {
        if control.requested_disconnect().is_some() {
            break;
        }
        if batch.capacity() > 0 && outbox.queued_frames() == 0 {
            // Going idle, maybe for long: an idle connection keeps no batch.
            batch = Vec::new();
        }
        tokio::select! {
            biased;
            _ = control.writer_notified() => continue,
            _ = outbox.ready() => {}
        }
        if outbox.is_overflowed() {
            control.disconnect(Disconnect::slow());
            break;
        }
        batch.clear();
        let unflushed = outbox.take_unflushed();
        outbox.drain_queued(&mut batch, WRITE_BATCH);
        if batch.is_empty() && !unflushed {
            if outbox.is_closed() {
                return;
            }
            continue;
        }
        tokio::select! {
            biased;
            // A clogged connection must not keep a disconnect (slow consumer, shutdown)
            // waiting.
            _ = control.writer_notified() => if control.requested_disconnect().is_some() { break },
            // Boxed: the write's state lives only while writing, and the idle writer's
            // task stays small.
            result = Box::pin(outbound.send(&batch)) => {
                if result.is_err() {
                    return;
                }
                let now = std::time::Instant::now();
                for queued in &batch {
                    metrics.messages_out.inc();
                    metrics.bytes_out.inc_by(queued.frame.len() as u64);
                    if let Some(published) = queued.published {
                        metrics.observe_delivery(now.duration_since(published));
                    }
                }
            }
        }
    }
    // The disconnect push and the close go out alone.
    outbox.set_direct(None);
    if let Some(d) = control.requested_disconnect() {
        let clogged = d.code == dc::SLOW;
        let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, outbound.close(&d, !clogged))).await;
    }
}
