//! The command line: parses arguments and calls the library. Exit codes are part of the
//! interface: 0 ok, 1 runtime failure, 2 usage, 3 not found, 78 configuration error.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigError, Overrides};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NOT_FOUND: i32 = 3;
pub const EXIT_CONFIG: i32 = 78;

#[derive(Parser, Debug)]
#[command(name = "preloadd", version, about = "Schedules CDN cache preload and purge across vendors")]
pub struct Cli {
    /// Config file (default /etc/preloadd/preloadd.toml).
    #[arg(long, global = true, env = "PRELOADD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Validate the config and print a summary; exit 78 on error.
    CheckConfig,
    /// Run a real job end to end against the built-in vendor emulator (under a minute).
    Demo,
    /// Serve every emulated vendor API on one listener, for staging a config.
    Emulator {
        #[arg(long, default_value = "127.0.0.1:9900")]
        listen: std::net::SocketAddr,
        /// Append one JSON line per accepted vendor request to this file.
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// ID:SECRET; repeatable. Default demo-ak:demo-sk.
        #[arg(long = "access-key", value_parser = parse_key)]
        access_keys: Vec<(String, String)>,
    },
    /// Print the API's OpenAPI document (the one served at /v1/openapi.json).
    Openapi,
    /// Copy the state database to PATH while the daemon runs (VACUUM INTO).
    Backup { path: PathBuf },
    /// Jobs on a running daemon.
    Job {
        #[command(flatten)]
        conn: crate::client::Conn,
        #[command(subcommand)]
        command: crate::client::JobCommand,
    },
    /// Plans (windows) on a running daemon.
    Plan {
        #[command(flatten)]
        conn: crate::client::Conn,
        #[command(subcommand)]
        command: crate::client::PlanCommand,
    },
    /// Tasks (slices and their per-vendor subtasks) on a running daemon.
    Task {
        #[command(flatten)]
        conn: crate::client::Conn,
        #[command(subcommand)]
        command: crate::client::TaskCommand,
    },
    /// Report subscriptions on a running daemon (scheduled delivery by email or webhook).
    Report {
        #[command(flatten)]
        conn: crate::client::Conn,
        #[command(subcommand)]
        command: crate::client::ReportCommand,
    },
    /// Vendor accounts of a running daemon: capabilities, health, quota.
    Vendor {
        #[command(flatten)]
        conn: crate::client::Conn,
        #[command(subcommand)]
        command: crate::client::VendorCommand,
    },
    /// Live progress of a job until it is done.
    Watch {
        #[command(flatten)]
        conn: crate::client::Conn,
        job: String,
    },
    /// Recurring schedules.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Print the next firings of a cron rule, one RFC 3339 time a line.
    Preview {
        /// 6 fields (with seconds) or 5; `?` and names such as MON, JAN accepted.
        #[arg(long)]
        cron: String,
        /// IANA time zone, e.g. Asia/Shanghai.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Start after this instant (RFC 3339); default now.
        #[arg(long)]
        from: Option<String>,
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
}

impl Cli {
    fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("preloadd: cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    rt.block_on(run(cli))
}

fn load(cli: &Cli) -> Result<Config, ConfigError> {
    config::load(&cli.config_path(), &Overrides::from_env())
}

async fn run(cli: Cli) -> i32 {
    match &cli.command {
        Command::CheckConfig => check_config(&cli).await,
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&crate::api::openapi()).unwrap_or_default());
            EXIT_OK
        }
        Command::Job { conn, command } => crate::client::job(conn, command).await,
        Command::Plan { conn, command } => crate::client::plan(conn, command).await,
        Command::Task { conn, command } => crate::client::task(conn, command).await,
        Command::Report { conn, command } => crate::client::report(conn, command).await,
        Command::Vendor { conn, command } => crate::client::vendor(conn, command).await,
        Command::Watch { conn, job } => crate::client::watch(conn, job).await,
        Command::Demo => {
            if std::env::var_os("RUST_LOG").is_some() {
                crate::logging::init(crate::config::LogFormat::Auto);
            }
            match crate::demo::run().await {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    eprintln!("preloadd demo: {e:#}");
                    EXIT_FAILURE
                }
            }
        }
        Command::Emulator { listen, ledger, access_keys } => {
            crate::logging::init(crate::config::LogFormat::Auto);
            crate::emulator::run_cli(*listen, ledger.clone(), access_keys.clone()).await
        }
        Command::Schedule { command: ScheduleCommand::Preview { cron, timezone, from, count } } => {
            match schedule_preview(cron, timezone, from.as_deref(), *count) {
                Ok(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("preloadd: {e}");
                    EXIT_USAGE
                }
            }
        }
        Command::Serve => {
            // First, so that a SIGHUP during start-up is a reload request, not death.
            let reload = match crate::daemon::reload_signal() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("preloadd: cannot handle SIGHUP: {e}");
                    return EXIT_FAILURE;
                }
            };
            let notifier = crate::notify::Notifier::from_env();
            let cfg = match load(&cli) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("preloadd: {e}");
                    notifier.status(&format!("configuration error: {e}"));
                    return EXIT_CONFIG;
                }
            };
            crate::logging::init(cfg.daemon.log_format);
            // Crash points for recovery tests; a no-op (with a warning if set) without the feature.
            if let Err(e) = crate::failpoint::arm_from_env() {
                eprintln!("preloadd: {e}");
                return EXIT_USAGE;
            }
            let listener = match tokio::net::TcpListener::bind(cfg.api.listen).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("cannot listen on {}: {e}", cfg.api.listen);
                    return EXIT_FAILURE;
                }
            };
            let opts = crate::daemon::ServeOptions {
                notifier,
                reload: Some(reload),
                overrides: Overrides::from_env(),
                ..Default::default()
            };
            match crate::daemon::run(cfg, listener, crate::daemon::shutdown_signal(), opts).await {
                Ok(()) => EXIT_OK,
                // A list the config names but that cannot be used: restarting will not fix it.
                Err(e) if e.downcast_ref::<crate::daemon::ConfigRejected>().is_some() => {
                    tracing::error!("{e:#}");
                    EXIT_CONFIG
                }
                Err(e) => {
                    tracing::error!("{e:#}");
                    EXIT_FAILURE
                }
            }
        }
        Command::Backup { path } => {
            let cfg = match load(&cli) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("preloadd: {e}");
                    return EXIT_CONFIG;
                }
            };
            let store = match crate::store::Store::open(&cfg.daemon.state_dir, cfg.daemon.database_url.as_deref()).await
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("preloadd: {e}");
                    return EXIT_FAILURE;
                }
            };
            match store.backup_to(path).await {
                Ok(()) => {
                    println!("backed up {} to {}", store.path().display(), path.display());
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("preloadd: backup failed: {e}");
                    EXIT_FAILURE
                }
            }
        }
    }
}

async fn check_config(cli: &Cli) -> i32 {
    let cfg = match load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("preloadd: {e}");
            return EXIT_CONFIG;
        }
    };
    match crate::summary::render(&cfg).await {
        Ok(text) => {
            print!("{text}");
            EXIT_OK
        }
        Err(msg) => {
            eprintln!("preloadd: {msg}");
            EXIT_CONFIG
        }
    }
}

/// The next `count` firings of `expr` in `tz` after `from` (default now), as RFC 3339 in the zone.
pub fn schedule_preview(expr: &str, tz: &str, from: Option<&str>, count: usize) -> Result<Vec<String>, String> {
    let schedule = crate::cron::Schedule::parse(expr).map_err(|e| format!("--cron: {e}"))?;
    let zone: chrono_tz::Tz = tz.parse().map_err(|_| format!("--timezone: unknown IANA time zone `{tz}`"))?;
    let after = match from {
        Some(t) => crate::clock::to_datetime(crate::config::parse_time(t).map_err(|e| format!("--from: {e}"))?),
        None => chrono::Utc::now(),
    };
    Ok(schedule
        .upcoming(after, zone, count)
        .into_iter()
        .map(|t| t.with_timezone(&zone).to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
        .collect())
}

fn parse_key(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => Ok((id.to_string(), secret.to_string())),
        _ => Err("expected ID:SECRET".to_string()),
    }
}
