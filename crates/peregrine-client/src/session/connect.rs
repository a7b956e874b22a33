//! Opening a connection: the WebSocket handshake and the `connect` command, and what a
//! connection's end means for the next step.

use peregrine::proto::handshake::HandshakeError;
use peregrine::{CloseFrame, Message};
use peregrine_wire::codes::{disconnect as dc, error as err};
use peregrine_wire::{
    Command, CommandKind, ConnectRequest, ConnectResult, Push, ReplyKind, ServerMessage, codes,
};

use super::{Socket, encode_frames, temporary};
use crate::client::Settings;

/// Why a connection ended, and what to do next.
#[derive(Debug)]
pub(super) struct Ending {
    pub(super) code: Option<u16>,
    pub(super) reason: String,
    pub(super) reconnect: bool,
    /// The token was refused as expired or invalid: get a fresh one first.
    pub(super) new_token: bool,
    /// The server asked to wait this long before trying again (`Retry-After` on a refused
    /// handshake: it is busy, or this address is over its rate).
    pub(super) retry_after: Option<std::time::Duration>,
}

impl Ending {
    pub(super) fn retry(code: Option<u16>, reason: impl Into<String>) -> Ending {
        Ending { code, reason: reason.into(), reconnect: true, new_token: false, retry_after: None }
    }

    pub(super) fn closed() -> Ending {
        Ending {
            code: None,
            reason: "closed by the application".into(),
            reconnect: false,
            new_token: false,
            retry_after: None,
        }
    }

    /// The server's verdict, from a disconnect push or a close frame.
    pub(super) fn from_code(code: u16, reason: String) -> Ending {
        let reconnect = codes::reconnect(code);
        let new_token = matches!(code, dc::EXPIRED | dc::INVALID_TOKEN);
        Ending { code: Some(code), reason, reconnect, new_token, retry_after: None }
    }

    /// A disconnect push: its code, and the server's reconnect advice as given.
    pub(super) fn from_push(code: u16, reason: String, reconnect: bool) -> Ending {
        Ending { reconnect, ..Ending::from_code(code, reason) }
    }

    /// The WebSocket could not be opened; a `Retry-After` the server sent is kept.
    pub(super) fn refused(error: peregrine::Error) -> Ending {
        let retry_after = match &error {
            peregrine::Error::Handshake(HandshakeError::UnexpectedStatus { headers, .. }) => headers
                .get("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(std::time::Duration::from_secs),
            _ => None,
        };
        Ending { retry_after, ..Ending::retry(None, format!("cannot connect: {error}")) }
    }

    pub(super) fn from_close(frame: Option<CloseFrame>) -> Ending {
        match frame {
            Some(f) => Ending::from_code(u16::from(f.code), f.reason.to_string()),
            None => Ending::retry(Some(1005), "closed by the server without a status code"),
        }
    }
}

/// An open connection whose `connect` was accepted.
pub(super) struct Connected {
    pub(super) ws: Socket,
    pub(super) result: ConnectResult,
    /// Messages that came with or after the connect reply.
    pub(super) rest: Vec<ServerMessage>,
}

/// Opens the WebSocket and performs `connect`, within the connect timeout.
pub(super) async fn open(settings: Settings, request: ConnectRequest, id: u64) -> Result<Connected, Ending> {
    let opening = async {
        let mut builder = peregrine::ClientBuilder::new(settings.url.clone())
            .protocol(settings.encoding.subprotocol())
            .config(settings.websocket.clone());
        for (name, value) in &settings.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        if let Some(tls) = settings.tls.clone() {
            builder = builder.tls(tls);
        }
        let (mut ws, _) = builder.connect().await.map_err(Ending::refused)?;
        let connect = Command { id, kind: CommandKind::Connect(request) };
        for frame in encode_frames(&[connect], settings.encoding, usize::MAX) {
            ws.send(frame).await.map_err(|e| Ending::retry(None, format!("cannot send connect: {e}")))?;
        }
        loop {
            let decode = |frame: &[u8]| peregrine_wire::decode_server_messages(frame, settings.encoding);
            let decoded = match ws.recv().await {
                Some(Ok(Message::Text(text))) => decode(text.as_bytes()),
                Some(Ok(Message::Binary(bytes))) => decode(&bytes),
                Some(Ok(Message::Close(frame))) => return Err(Ending::from_close(frame)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return Err(Ending::retry(None, format!("connection failed during connect: {e}")));
                }
                None => return Err(Ending::retry(None, "the connection ended before the connect reply")),
            };
            let messages =
                decoded.map_err(|e| Ending::retry(None, format!("undecodable connect reply: {e}")))?;
            let mut messages = messages.into_iter();
            while let Some(message) = messages.next() {
                match message {
                    ServerMessage::Reply(reply) if reply.id == id => {
                        return match reply.result {
                            Ok(ReplyKind::Connect(result)) => {
                                Ok(Connected { ws, result, rest: messages.collect() })
                            }
                            Ok(other) => {
                                Err(Ending::retry(None, format!("unexpected connect reply {other:?}")))
                            }
                            Err(e) if temporary(&e) => {
                                Err(Ending::retry(None, format!("connect refused for now: {}", e.message)))
                            }
                            Err(e) => Err(Ending {
                                code: None,
                                new_token: matches!(e.code, err::TOKEN_EXPIRED | err::UNAUTHORIZED),
                                reason: format!("connect refused ({}): {}", e.code, e.message),
                                reconnect: false,
                                retry_after: None,
                            }),
                        };
                    }
                    ServerMessage::Push(Push::Disconnect { code, reason, reconnect }) => {
                        return Err(Ending::from_push(code, reason, reconnect));
                    }
                    _ => {}
                }
            }
        }
    };
    match tokio::time::timeout(settings.connect_timeout, opening).await {
        Ok(result) => result,
        Err(_) => Err(Ending::retry(None, format!("no connect reply within {:?}", settings.connect_timeout))),
    }
}
