//! One integration-test binary (STYLE.md habit 11): real SQLite files, real HTTP on 127.0.0.1.

mod api;
mod common;
mod config_cli;
mod emulator;
mod engine;
mod multivendor;
mod serve;
mod vendors;
