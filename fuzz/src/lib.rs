//! What the realtime fuzz targets share: commands built from fuzzer bytes.

pub mod commands;
