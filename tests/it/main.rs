//! One integration-test binary (STYLE.md habit 11): real SQLite files, real HTTP on 127.0.0.1.

mod abuse;
mod api;
mod bad_input;
mod cli;
mod common;
mod compat;
mod config_cli;
mod disk;
mod dispatch;
mod emulator;
mod engine;
mod failpoints;
mod multivendor;
mod reports;
mod secrets;
mod serve;
mod service;
mod soak;
mod vendors;
