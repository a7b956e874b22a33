//! A terminal chat client: every line you type is published to the room, everything
//! published there is printed, across disconnects and server restarts.
//!
//! ```text
//! peregrine serve &                       # development mode on 127.0.0.1:8080
//! cargo run -p peregrine-client --example chat -- lobby ann
//! cargo run -p peregrine-client --example chat -- lobby bob     # in another terminal
//! ```
//!
//! Arguments: ROOM NICK [URL]. Stop the server and start it again: the clients reconnect
//! by themselves, and lines typed meanwhile are sent once it is back.

use peregrine_client::{Client, State, SubscriptionEvent};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let room = format!("chat:{}", args.next().unwrap_or_else(|| "lobby".into()));
    let nick = args.next().unwrap_or_else(|| "anonymous".into());
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/connection/websocket".into());

    let client = Client::builder(url).name("chat-example").build()?;
    let mut states = client.events();
    tokio::spawn(async move {
        while let Ok(state) = states.recv().await {
            match state {
                State::Connected { .. } => eprintln!("* connected"),
                State::Disconnected { reason, retry_in, .. } => {
                    eprintln!("* disconnected ({reason}); retrying in {retry_in:?}")
                }
                State::Closed { reason, .. } => eprintln!("* closed: {reason}"),
                State::Connecting { .. } => {}
            }
        }
    });

    let mut messages = client.subscribe(&room).await?;
    eprintln!("* joined {room} as {nick}; type a line to send it");
    tokio::spawn(async move {
        while let Some(event) = messages.next().await {
            match event {
                SubscriptionEvent::Publication(p) => match p.data_json::<Line>() {
                    Ok(line) => println!("<{}> {}", line.nick, line.text),
                    Err(e) => eprintln!("* an unreadable message ({e})"),
                },
                SubscriptionEvent::Join(who) => eprintln!("* {} joined", who.client),
                SubscriptionEvent::Leave(who) => eprintln!("* {} left", who.client),
                SubscriptionEvent::Gap { from, to } => eprintln!("* {} messages were lost", to - from + 1),
                SubscriptionEvent::Reset { .. } => eprintln!("* the room's history was reset"),
                SubscriptionEvent::Unsubscribed { reason, .. } => {
                    eprintln!("* left the room: {reason}");
                    break;
                }
                SubscriptionEvent::Subscribed { .. } => {}
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        // Waits for the acknowledgement; while disconnected the line waits in the
        // offline queue and goes out after the reconnect.
        if let Err(e) = client.publish(&room, json!({ "nick": nick, "text": line })).await {
            eprintln!("* not sent: {e}");
        }
    }
    client.close().await;
    Ok(())
}

/// One chat line, as published.
#[derive(serde::Deserialize)]
struct Line {
    nick: String,
    text: String,
}
