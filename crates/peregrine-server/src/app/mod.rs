//! The application behind `peregrine serve`: configuration, router, HTTP API, run loop.

pub mod config;
