//! Hub fan-out and outbox behaviour.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;

use peregrine_server::broker::{Broker, MemoryBroker, PublishOptions};
use peregrine_server::hub::{Hub, SessionId, publications_frame};
use peregrine_server::outbox::{Direct, DirectWrite, Frame, Outbox, PushError};
use peregrine_wire::{Encoding, Publication, Push, ServerMessage, StreamPosition, decode_server_messages};
use serde_json::json;

fn publication(offset: u64) -> Publication {
    Publication { offset, data: json!({ "n": offset }).into(), ..Default::default() }
}

/// (channel, offset) of every publication push queued in `outbox`.
fn received(outbox: &Outbox, encoding: Encoding) -> Vec<(String, u64)> {
    outbox
        .drain_batch(usize::MAX)
        .iter()
        .flat_map(|f| decode_server_messages(f, encoding).unwrap())
        .map(|m| match m {
            ServerMessage::Push(Push::Publication { channel, publication }) => (channel, publication.offset),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn broadcast_reaches_exactly_the_subscribers_in_order() {
    let hub = Hub::new();
    let channels: Vec<String> = (0..20).map(|c| format!("ch{c}")).collect();
    // Session s subscribes to channels c with (s + c) % 3 == 0; odd sessions use MessagePack.
    let sessions: Vec<(SessionId, Arc<Outbox>, Encoding)> = (0..50u64)
        .map(|s| {
            (s, Outbox::new(1 << 20), if s.is_multiple_of(2) { Encoding::Json } else { Encoding::MsgPack })
        })
        .collect();
    let subscribed = |s: u64, c: usize| (s as usize + c).is_multiple_of(3);
    for (s, outbox, enc) in &sessions {
        for (c, name) in channels.iter().enumerate() {
            if subscribed(*s, c) {
                hub.subscribe(name, *s, outbox.clone(), *enc);
            }
        }
    }
    for offset in 1..=10 {
        for name in &channels {
            assert!(hub.broadcast(name, &publication(offset)).is_empty());
        }
    }
    assert!(hub.broadcast("nobody", &publication(1)).is_empty());
    for (s, outbox, enc) in &sessions {
        let got = received(outbox, *enc);
        let mut want = Vec::new();
        for offset in 1..=10 {
            for (c, name) in channels.iter().enumerate() {
                if subscribed(*s, c) {
                    want.push((name.clone(), offset));
                }
            }
        }
        assert_eq!(got, want, "session {s}");
    }
    assert_eq!(hub.channels().len(), 20);
    assert_eq!(hub.slow_disconnects(), 0);
}

#[test]
fn encodes_once_per_encoding() {
    let hub = Hub::new();
    let boxes: Vec<Arc<Outbox>> = (0..4).map(|_| Outbox::new(4096)).collect();
    let encs = [Encoding::Json, Encoding::Json, Encoding::MsgPack, Encoding::MsgPack];
    for (i, (b, e)) in boxes.iter().zip(encs).enumerate() {
        hub.subscribe("c", i as SessionId, b.clone(), e);
    }
    hub.broadcast("c", &publication(1));
    let frames: Vec<Frame> = boxes.iter().map(|b| b.drain_batch(usize::MAX).remove(0)).collect();
    assert_eq!(frames[0].as_ptr(), frames[1].as_ptr());
    assert_eq!(frames[2].as_ptr(), frames[3].as_ptr());
    assert_ne!(frames[0].as_ptr(), frames[2].as_ptr());
    assert_ne!(frames[0], frames[2]);
}

#[test]
fn slow_subscriber_is_reported_once_and_others_keep_receiving() {
    let hub = Hub::new();
    let fast = Outbox::new(1 << 20);
    let slow = Outbox::new(100);
    hub.subscribe("c", 1, fast.clone(), Encoding::Json);
    hub.subscribe("c", 2, slow.clone(), Encoding::Json);
    let mut reported = Vec::new();
    for offset in 1..=20 {
        reported.extend(hub.broadcast("c", &publication(offset)));
    }
    assert_eq!(reported, vec![2]);
    assert_eq!(hub.slow_disconnects(), 1);
    assert!(slow.is_overflowed());
    assert!(slow.queued_bytes() <= 100);
    assert_eq!(slow.push(Frame::from(&b"x"[..])), Err(PushError::Overflowed));
    let got: Vec<u64> = received(&fast, Encoding::Json).into_iter().map(|(_, o)| o).collect();
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
}

#[test]
fn unsubscribe_all_removes_session_everywhere() {
    let hub = Hub::new();
    let a = Outbox::new(4096);
    let b = Outbox::new(4096);
    assert!(hub.subscribe("x", 1, a.clone(), Encoding::Json));
    assert!(hub.subscribe("y", 1, a.clone(), Encoding::Json));
    assert!(!hub.subscribe("y", 2, b.clone(), Encoding::Json));
    let mut emptied = hub.unsubscribe_all(1);
    emptied.sort();
    assert_eq!(emptied, vec!["x".to_owned()]);
    assert_eq!(hub.subscriber_count("x"), 0);
    assert_eq!(hub.subscriber_count("y"), 1);
    assert_eq!(hub.channels(), vec!["y".to_owned()]);
    hub.broadcast("y", &publication(1));
    assert_eq!(a.queued_frames(), 0);
    assert_eq!(b.queued_frames(), 1);
    assert!(hub.unsubscribe("y", 2));
    assert!(hub.channels().is_empty());
}

#[test]
fn outbox_drains_in_batches_and_counts() {
    let outbox = Outbox::new(100);
    for _ in 0..5 {
        outbox.push(Frame::from(&[0u8; 10][..])).unwrap();
    }
    assert_eq!(outbox.queued_bytes(), 50);
    assert_eq!(outbox.drain_batch(25).len(), 2);
    assert_eq!(outbox.queued_bytes(), 30);
    let mut buf = Vec::new();
    assert_eq!(outbox.drain_into(&mut buf, 1000), 30);
    assert_eq!(buf.len(), 3);
    assert_eq!(outbox.high_water(), 50);
    // A frame bigger than the batch size still goes out alone.
    outbox.push(Frame::from(&[0u8; 60][..])).unwrap();
    assert_eq!(outbox.drain_batch(10).len(), 1);
    assert_eq!(outbox.push(Frame::from(&[0u8; 101][..])), Err(PushError::Full));
    outbox.close();
}

#[tokio::test]
async fn ready_wakes_a_waiting_writer() {
    let outbox = Outbox::new(1024);
    let writer = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                outbox.ready().await;
                let batch = outbox.drain_batch(usize::MAX);
                if batch.is_empty() && outbox.is_closed() {
                    return got;
                }
                got.extend(batch.iter().map(|f| f[0]));
            }
        })
    };
    for i in 0..5u8 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        outbox.push(Frame::from(&[i][..])).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    outbox.close();
    let got = tokio::time::timeout(Duration::from_secs(5), writer).await.unwrap().unwrap();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn broker_handler_fans_out_and_reports_slow() {
    let hub = Arc::new(Hub::new());
    let slow_seen = Arc::new(Mutex::new(Vec::new()));
    let broker = MemoryBroker::new();
    let seen = slow_seen.clone();
    broker.set_handler(hub.handler(move |s| seen.lock().unwrap().extend_from_slice(s), |_, _| {}));
    let ok = Outbox::new(1 << 20);
    let tiny = Outbox::new(10);
    hub.subscribe("c", 1, ok.clone(), Encoding::MsgPack);
    hub.subscribe("c", 2, tiny.clone(), Encoding::MsgPack);
    broker.subscribe_node("c").await.unwrap();
    for _ in 0..3 {
        broker
            .publish("c", json!("hello").into(), PublishOptions { history_size: 10, ..Default::default() })
            .await
            .unwrap();
    }
    let offsets: Vec<u64> = received(&ok, Encoding::MsgPack).into_iter().map(|(_, o)| o).collect();
    assert_eq!(offsets, vec![1, 2, 3]);
    assert_eq!(*slow_seen.lock().unwrap(), vec![2]);
}

#[test]
fn a_lost_channel_stops_delivery_to_its_subscribers_and_names_them_once() {
    let hub = Arc::new(Hub::new());
    let (a, b, later) = (Outbox::new(1 << 20), Outbox::new(1 << 20), Outbox::new(1 << 20));
    hub.subscribe("chat", 1, a.clone(), Encoding::Json);
    hub.subscribe_pending("chat", 2, b.clone(), Encoding::Json);
    hub.subscribe("other", 1, a.clone(), Encoding::Json);
    let lost = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&lost);
    let handler = hub.handler(
        |_| {},
        move |channel, sessions| seen.lock().unwrap().push((channel.to_owned(), sessions.to_vec())),
    );
    handler("chat", peregrine_server::broker::ChannelEvent::Publication(&publication(1)));
    handler("chat", peregrine_server::broker::ChannelEvent::Lost);
    handler("chat", peregrine_server::broker::ChannelEvent::Lost);
    let mut reported = lost.lock().unwrap().clone();
    reported[0].1.sort_unstable();
    // Live and pending subscribers alike, each reported once.
    assert_eq!(reported, vec![("chat".to_owned(), vec![1, 2])]);
    // A subscriber that arrives after the loss read history after it: it is not lost.
    hub.subscribe("chat", 3, later.clone(), Encoding::Json);
    handler("chat", peregrine_server::broker::ChannelEvent::Publication(&publication(2)));
    handler("other", peregrine_server::broker::ChannelEvent::Publication(&publication(7)));
    assert_eq!(received(&a, Encoding::Json), vec![("chat".into(), 1), ("other".into(), 7)]);
    assert_eq!(received(&later, Encoding::Json), vec![("chat".into(), 2)]);
    let mut held = Vec::new();
    hub.go_live("chat", 2, None, true, |pending| {
        held = pending;
        Vec::new()
    })
    .unwrap();
    assert_eq!(held.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![1], "nothing held after the loss");
}

fn in_epoch(epoch: &str, offset: u64) -> Publication {
    Publication { epoch: Some(epoch.into()), ..publication(offset) }
}

/// Takes a pending subscription live at `seam` (publications covered by it may still be on
/// their way), queueing the held publications it is given; returns their offsets.
fn go_live_at(hub: &Hub, channel: &str, session: SessionId, seam: Option<StreamPosition>) -> Vec<u64> {
    let mut held = Vec::new();
    hub.go_live(channel, session, seam, true, |pending| {
        held = pending.iter().map(|p| p.offset).collect();
        publications_frame(channel, pending, Encoding::Json).into_iter().collect()
    })
    .unwrap();
    held
}

fn seam(epoch: &str, offset: u64) -> Option<StreamPosition> {
    Some(StreamPosition { epoch: epoch.into(), offset })
}

/// What `outbox` holds, a word each: a publication's offset, or `join`.
fn pushed(outbox: &Outbox) -> Vec<String> {
    outbox
        .drain_batch(usize::MAX)
        .iter()
        .flat_map(|f| decode_server_messages(f, Encoding::Json).unwrap())
        .map(|m| match m {
            ServerMessage::Push(Push::Publication { publication, .. }) => publication.offset.to_string(),
            ServerMessage::Push(Push::Join { .. }) => "join".into(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// With Redis, a publication can be in the stream a subscriber read while its Pub/Sub
/// message is still on its way to the node: the subscribe reply holds it, and the fan-out
/// must not deliver it again when it arrives (CI saw an SSE client get 28, 29, 28, 29).
#[test]
fn publications_the_reply_holds_are_not_delivered_again_when_they_arrive_late() {
    let hub = Hub::new();
    let (early, late, other) = (Outbox::new(1 << 20), Outbox::new(1 << 20), Outbox::new(1 << 20));
    hub.subscribe("feed", 1, early.clone(), Encoding::Json);
    hub.broadcast("feed", &in_epoch("e", 27));

    // Session 2 read the stream up to 29 (28 and 29 in its reply), then went live; 28 was
    // held while it set up, 29 had not reached this node yet. Session 3 read it up to 27 at
    // the same time: it needs everything after.
    hub.subscribe_pending("feed", 2, late.clone(), Encoding::Json);
    hub.subscribe_pending("feed", 3, other.clone(), Encoding::Json);
    hub.broadcast("feed", &in_epoch("e", 28));
    assert_eq!(go_live_at(&hub, "feed", 2, seam("e", 29)), Vec::<u64>::new(), "28 is in the reply");
    assert_eq!(go_live_at(&hub, "feed", 3, seam("e", 27)), vec![28]);
    // A join while session 2 skips goes out; skipping goes on.
    let join = Push::Join { channel: "feed".into(), info: Default::default() };
    hub.broadcast_push("feed", &join);
    for offset in 29..=31 {
        hub.broadcast("feed", &in_epoch("e", offset));
    }
    assert_eq!(pushed(&early), ["27", "28", "join", "29", "30", "31"]);
    assert_eq!(pushed(&late), ["join", "30", "31"], "each publication once");
    assert_eq!(pushed(&other), ["28", "join", "29", "30", "31"]);

    // Held publications past the seam go out with the reply, those it covers do not; one
    // of another epoch (the stream lost and started again) is not covered.
    let (held, fresh) = (Outbox::new(1 << 20), Outbox::new(1 << 20));
    hub.subscribe_pending("feed", 4, held.clone(), Encoding::Json);
    hub.broadcast("feed", &in_epoch("e", 32));
    hub.broadcast("feed", &in_epoch("e", 33));
    hub.broadcast("feed", &in_epoch("f", 1));
    assert_eq!(go_live_at(&hub, "feed", 4, seam("e", 32)), vec![33, 1]);
    // Skipping ends with the first publication the seam does not cover: a new epoch
    // restarts its offsets, and the subscriber gets them all.
    hub.subscribe_pending("feed", 5, fresh.clone(), Encoding::Json);
    assert_eq!(go_live_at(&hub, "feed", 5, seam("e", 40)), Vec::<u64>::new());
    hub.broadcast("feed", &in_epoch("f", 2));
    hub.broadcast("feed", &in_epoch("f", 3));
    assert_eq!(pushed(&held), ["33", "1", "2", "3"]);
    assert_eq!(pushed(&fresh), ["2", "3"], "a new epoch is not covered by the old seam");

    // Without a seam (a channel without history: its reply has no position), everything
    // held goes out and nothing is skipped.
    let (pending, live) = (Outbox::new(1 << 20), Outbox::new(1 << 20));
    hub.subscribe_pending("plain", 6, pending.clone(), Encoding::Json);
    hub.broadcast("plain", &in_epoch("p", 1));
    assert_eq!(go_live_at(&hub, "plain", 6, None), vec![1]);
    hub.subscribe("plain", 7, live.clone(), Encoding::Json);
    hub.broadcast("plain", &in_epoch("p", 2));
    assert_eq!(pushed(&pending), ["1", "2"]);
    assert_eq!(pushed(&live), ["2"]);
}

/// A transport that writes at once, recording what it wrote; `answer` says how it went.
#[derive(Debug)]
struct Recorder {
    written: Mutex<Vec<u8>>,
    answer: Mutex<Direct>,
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder { written: Mutex::default(), answer: Mutex::new(Direct::Written) })
    }
    fn answer(&self, answer: Direct) {
        *self.answer.lock().unwrap() = answer;
    }
    fn written(&self) -> Vec<u8> {
        self.written.lock().unwrap().clone()
    }
}

impl DirectWrite for Recorder {
    fn write_now(&self, frame: &Frame, _published: Option<std::time::Instant>) -> Direct {
        let answer = *self.answer.lock().unwrap();
        if answer != Direct::Refused {
            self.written.lock().unwrap().push(frame[0]);
        }
        answer
    }
}

/// Polls the writer's wait once: `true` when it has something to do.
fn writer_ready(outbox: &Outbox) -> bool {
    let ready = std::pin::pin!(outbox.ready());
    ready.poll(&mut Context::from_waker(Waker::noop())).is_ready()
}

#[test]
fn pushes_write_directly_only_while_the_writer_is_idle_and_keep_their_order() {
    let outbox = Outbox::new(1024);
    let recorder = Recorder::new();
    outbox.set_direct(Some(recorder.clone()));
    let frame = |i: u8| Frame::from(&[i][..]);

    // The writer has not waited yet (it may be writing): queued.
    outbox.push(frame(0)).unwrap();
    assert!(writer_ready(&outbox));
    assert_eq!(outbox.drain_batch(usize::MAX), vec![frame(0)]);
    // Idle: written at once, nothing queued, the writer stays asleep.
    assert!(!writer_ready(&outbox));
    outbox.push(frame(1)).unwrap();
    outbox.push(frame(2)).unwrap();
    assert_eq!((recorder.written(), outbox.queued_frames()), (vec![1, 2], 0));
    assert!(!writer_ready(&outbox));

    // Taken but not all out: the writer must flush before anything else is written, so the
    // next push queues behind it even though the transport would take it.
    recorder.answer(Direct::Taken);
    outbox.push(frame(3)).unwrap();
    recorder.answer(Direct::Written);
    outbox.push(frame(4)).unwrap();
    assert_eq!((recorder.written(), outbox.queued_frames()), (vec![1, 2, 3], 1));
    assert!(writer_ready(&outbox));
    assert!(outbox.take_unflushed());
    assert!(!outbox.take_unflushed());
    assert_eq!(outbox.drain_batch(usize::MAX), vec![frame(4)]);

    // The transport refuses (other output waits): queued, and the writer is woken.
    assert!(!writer_ready(&outbox));
    recorder.answer(Direct::Refused);
    outbox.push(frame(5)).unwrap();
    assert!(writer_ready(&outbox));
    assert_eq!(outbox.drain_batch(usize::MAX), vec![frame(5)]);

    // No direct writes once the writer says so, idle or not; a closed outbox refuses first.
    recorder.answer(Direct::Written);
    assert!(!writer_ready(&outbox));
    outbox.set_direct(None);
    outbox.push(frame(6)).unwrap();
    assert_eq!(outbox.drain_batch(usize::MAX), vec![frame(6)]);
    outbox.set_direct(Some(recorder.clone()));
    assert!(!writer_ready(&outbox));
    outbox.close();
    assert_eq!(outbox.push(frame(7)), Err(PushError::Closed));
    assert_eq!(recorder.written(), vec![1, 2, 3]);
}
