//! The opening handshake (placeholder until the module lands).
