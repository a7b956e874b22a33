//! The application behind `peregrine serve`: configuration, router, HTTP API, run loop.

pub mod api;
pub mod router;
mod serve;

pub use serve::{ServeError, Server, run};
