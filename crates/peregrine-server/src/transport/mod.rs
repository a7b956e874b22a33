//! Transports: how sessions reach clients. WebSocket for now; SSE and long-polling follow.

pub mod websocket;
