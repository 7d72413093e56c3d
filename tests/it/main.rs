//! One integration-test binary (STYLE.md habit 11): real SQLite files, real HTTP on 127.0.0.1.

mod api;
mod cli;
mod common;
mod config_cli;
mod emulator;
mod engine;
mod reports;
mod serve;
mod vendors;
