//! preloadd: warms (preloads) and purges (refreshes) CDN caches on a schedule, across vendors,
//! durably, within every vendor's rate limits and quotas.
//!
//! # Layout
//! - [`config`]: the typed TOML configuration and its validation.
//! - [`model`]: the domain words (task types, statuses, vendor kinds).
//! - [`urls`], [`ingest`]: URL validation, streaming lists into jobs.
//! - [`store`]: SQLite, migrations, and every SQL statement.
//! - [`engine`]: plans → slices → subtasks, retries, polling, crash reconciliation.
//! - [`vendor`]: the vendor trait, per-account limiters, and each vendor client.
//! - [`api`]: the HTTP API; [`metrics`]: `/metrics`; [`daemon`]: `serve` (reload, sd_notify via
//!   [`notify`]); [`cli`]: the command line; [`client`]: the client commands that talk to the API.
//! - [`cron`]: cron rules and DST-correct firing times; [`sign`]: vendor request signatures.
//! - [`compat`]: ESA's scheduled-preload OpenAPI served over the same engine (drop-in).
//! - [`emulator`]: Alibaba Cloud CDN and ESA emulated over loopback HTTP (`preloadd emulator`).
//! - [`reports`]: report subscriptions and their scheduled delivery (email, webhooks).
//! - [`clock`], [`quota`], [`logging`], [`summary`]: small helpers; [`failpoint`]: crash points
//!   for recovery tests (the `failpoints` feature).

pub mod api;
pub mod cli;
pub mod client;
pub mod clock;
pub mod compat;
pub mod config;
pub mod cron;
pub mod daemon;
pub mod demo;
pub mod emulator;
pub mod engine;
pub mod failpoint;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod quota;
pub mod remote;
pub mod reports;
pub mod sign;
pub mod store;
pub mod summary;
pub mod urls;
pub mod vendor;
