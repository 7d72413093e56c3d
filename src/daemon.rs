//! `preloadd serve`: the daemon. Loads the config, opens the store, applies declarative jobs,
//! runs the engine, the report deliveries and the API until the shutdown signal, then stops at a safe point.
//! Speaks sd_notify to systemd (READY, WATCHDOG from the engine loop, RELOADING/READY around a
//! reload, STOPPING, STATUS) and reloads the config on request (SIGHUP in `cli`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{Access, AppState};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, Overrides};
use crate::engine::{Engine, EngineSettings};
use crate::notify::Notifier;
use crate::reports::{Reporter, ReporterSettings};
use crate::store::Store;
use crate::vendor::Vendors;

/// The config names a job list that cannot be used (no valid URL, a name taken by an API job):
/// a configuration error (exit 78), not a runtime failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigRejected(pub String);

/// Everything `serve` needs besides the config; tests pass their own.
pub struct ServeOptions {
    pub clock: SharedClock,
    pub settings: EngineSettings,
    /// An already bound listener for `[api.compat]` (tests bind port 0); else its `listen`.
    pub compat_listener: Option<TcpListener>,
    pub reports: ReporterSettings,
    /// systemd notifications; disabled by default (the CLI reads `$NOTIFY_SOCKET`).
    pub notifier: Notifier,
    /// Each message asks for a config reload (the CLI sends one per SIGHUP).
    pub reload: Option<mpsc::UnboundedReceiver<()>>,
    /// Environment overrides, applied again to a reloaded config.
    pub overrides: Overrides,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            clock: Arc::new(SystemClock),
            settings: EngineSettings::default(),
            reports: ReporterSettings::default(),
            compat_listener: None,
            notifier: Notifier::disabled(),
            reload: None,
            overrides: Overrides::default(),
        }
    }
}

/// Runs the daemon on an already bound listener until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut opts: ServeOptions,
) -> anyhow::Result<()> {
    let notifier = opts.notifier.clone();
    // Migrations and big declarative lists may outlast TimeoutStartSec=: while start-up makes
    // progress, ask systemd for more time, a minute at a time.
    let starting = tokio::spawn({
        let notifier = notifier.clone();
        async move {
            notifier.status("starting: migrating the database, loading declarative job lists");
            loop {
                notifier.notify("EXTEND_TIMEOUT_USEC=60000000");
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
        }
    });
    let store = Store::open(&config.daemon.state_dir, config.daemon.database_url.as_deref())
        .await
        .context("opening the state database");
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            starting.abort();
            return Err(e);
        }
    };
    let now = opts.clock.now_ms();
    let applied = crate::ingest::apply_config_jobs(&store, &config.jobs, config.api.allow_private_lists, now)
        .await
        .map_err(|e| match e {
            crate::ingest::IngestError::Store(e) => anyhow::Error::new(e),
            other => anyhow::Error::new(ConfigRejected(other.to_string())),
        });
    starting.abort();
    if let Err(e) = applied {
        notifier.status(&format!("cannot start: {e}"));
        store.close().await;
        return Err(e.context("applying the config's jobs"));
    }
    store
        .sync_config_subscriptions(&config.reports, now)
        .await
        .context("applying the config's report subscriptions")?;
    let vendors = Vendors::from_config(&config.vendors, opts.clock.clone())?;
    let cancel = CancellationToken::new();
    // The loop must turn (and feed the watchdog) at least every WatchdogSec/4.
    opts.settings.max_idle = opts.settings.max_idle.min(notifier.loop_period());
    let engine = Engine::new(store.clone(), vendors, opts.clock.clone(), opts.settings, cancel.clone());
    let reporter = Reporter::new(store.clone(), opts.clock.clone(), config.smtp.clone(), opts.reports);
    let reports = tokio::spawn(reporter.run(cancel.clone()));

    let state = AppState::new(engine.clone(), &config.api);
    state.stats.config_loaded_at_ms.store(now, Ordering::Relaxed);
    let app = crate::api::router(state.clone());
    let addr = listener.local_addr()?;
    let limits = config.api.limits;
    let grace = config.daemon.shutdown_timeout;
    let api = tokio::spawn(crate::api::server::serve(
        listener,
        app,
        limits,
        crate::api::body_timeout_response,
        cancel.clone(),
        grace,
    ));
    let compat = match &config.api.compat {
        Some(c) => {
            let listener = match opts.compat_listener {
                Some(l) => l,
                None => TcpListener::bind(c.listen)
                    .await
                    .with_context(|| format!("binding [api.compat] listen {}", c.listen))?,
            };
            info!(listen = %listener.local_addr()?, "ESA-compatible API listening");
            let app = crate::compat::router(engine.clone(), c.clone());
            let on_timeout = crate::compat::body_timeout_response;
            Some(tokio::spawn(crate::api::server::serve(listener, app, limits, on_timeout, cancel.clone(), grace)))
        }
        None => None,
    };
    info!(listen = %addr, state = %store.path().display(), "preloadd is ready");
    // Migrations ran (Store::open), declarative jobs are in, the API listens: ready.
    notifier.ready();
    let status = StatusLine { notifier: notifier.clone(), engine: engine.clone(), addr, note: Arc::default() };
    status.send().await;

    let trigger = cancel.clone();
    let stop_notifier = notifier.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop_notifier.stopping();
        info!("shutting down: no new slices; waiting for in-flight vendor calls");
        trigger.cancel();
    });
    tokio::spawn(status.clone().every(Duration::from_secs(10), cancel.clone()));
    // How long SIGTERM waits for in-flight vendor calls (and API requests); a reload does not change it.
    if let Some(mut requests) = opts.reload.take() {
        let reloader = Reloader { config, overrides: opts.overrides, clock: opts.clock.clone(), state, status };
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut reloader = reloader;
            loop {
                tokio::select! {
                    r = requests.recv() => match r {
                        Some(()) => reloader.reload().await,
                        None => break,
                    },
                    _ = cancel.cancelled() => break,
                }
            }
        });
    }
    engine.clone().run(grace, notifier.watchdog_pinger()).await?;
    let _ = api.await;
    if let Some(c) = compat {
        let _ = c.await;
    }
    // A send cut short here stays `sending` and is recorded as failed at the next start.
    let _ = tokio::time::timeout(grace, reports).await;
    store.close().await;
    info!("stopped");
    Ok(())
}

/// The one-line `STATUS=` for `systemctl status`.
#[derive(Clone)]
struct StatusLine {
    notifier: Notifier,
    engine: Arc<Engine>,
    addr: SocketAddr,
    /// A note that stays on the line until replaced (a rejected reload).
    note: Arc<std::sync::Mutex<Option<String>>>,
}

impl StatusLine {
    fn set_note(&self, note: Option<&str>) {
        *self.note.lock().expect("status lock") = note.map(str::to_string);
    }

    async fn send(&self) {
        if !self.notifier.enabled() {
            return;
        }
        let note = self.note.lock().expect("status lock").clone();
        match self.engine.store().status_summary(self.engine.now()).await {
            Ok(s) => {
                let mut line = format!(
                    "listening on {}; {} plans running, {} slices due, {} slices waiting for quota",
                    self.addr, s.plans_running, s.slices_due, s.quota_waits
                );
                if let Some(n) = note {
                    line.push_str("; ");
                    line.push_str(&n);
                }
                self.notifier.status(&line);
            }
            Err(e) => self.notifier.status(&format!("listening on {}; database error: {e}", self.addr)),
        }
    }

    async fn every(self, period: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => self.send().await,
                _ = cancel.cancelled() => return,
            }
        }
    }
}

/// Applies a re-read config to the running daemon.
struct Reloader {
    config: Config,
    overrides: Overrides,
    clock: SharedClock,
    state: AppState,
    status: StatusLine,
}

impl Reloader {
    /// Re-reads and validates the config file; a valid one is applied (vendor accounts, API
    /// access, declarative jobs), an invalid one is logged and the running config kept.
    async fn reload(&mut self) {
        let notifier = self.status.notifier.clone();
        notifier.reloading();
        info!(config = %self.config.path.display(), "reloading the config");
        match self.try_reload().await {
            Ok(()) => {
                self.state.stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.state.stats.config_loaded_at_ms.store(self.clock.now_ms(), Ordering::Relaxed);
                info!("config reloaded");
                notifier.ready();
                self.status.set_note(None);
                self.status.send().await;
            }
            Err(e) => {
                self.state.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                error!("config reload rejected, the running config is kept: {e:#}");
                notifier.ready();
                self.status.set_note(Some("last reload rejected, running the previous config (see the log)"));
                self.status.send().await;
            }
        }
    }

    async fn try_reload(&mut self) -> anyhow::Result<()> {
        let new = crate::config::load(&self.config.path, &self.overrides)?;
        let engine = &self.state.engine;
        let store = engine.store();
        // Validate everything before changing anything.
        let vendors = engine.vendors().reconfigure(&new.vendors, self.clock.clone())?;
        for (job, names) in store.job_vendors().await? {
            if new.jobs.iter().any(|j| j.name == job) {
                continue; // a declarative job gets its vendors from the new config
            }
            if let Some(gone) = names.iter().find(|v| vendors.get(v).is_none()) {
                anyhow::bail!("vendor account `{gone}` is removed, but job `{job}` still targets it");
            }
        }
        crate::ingest::check_config_jobs(store, &new.jobs).await?;

        engine.set_vendors(vendors);
        *self.state.access.write().expect("access lock") =
            Access { token: new.api.token.clone(), metrics_public: new.api.metrics_public };
        crate::ingest::apply_config_jobs(store, &new.jobs, new.api.allow_private_lists, self.clock.now_ms())
            .await
            .context("applying the config's jobs")?;
        store
            .sync_config_subscriptions(&new.reports, self.clock.now_ms())
            .await
            .context("applying the config's report subscriptions")?;
        engine.nudge();
        let old = &self.config;
        let restart_only = [
            ("[api] listen", old.api.listen != new.api.listen),
            (
                "[api] header_timeout, body_idle_timeout, body_min_rate or max_connections",
                old.api.limits != new.api.limits,
            ),
            ("[daemon] state_dir", old.daemon.state_dir != new.daemon.state_dir),
            ("[daemon] database_url", old.daemon.database_url != new.daemon.database_url),
            ("[daemon] log_format", old.daemon.log_format != new.daemon.log_format),
            ("[daemon] shutdown_timeout", old.daemon.shutdown_timeout != new.daemon.shutdown_timeout),
        ];
        for (key, changed) in restart_only {
            if changed {
                warn!("{key} changed; it takes effect at the next restart");
            }
        }
        let mut new = new;
        // Keep what is in force until a restart, so the next reload compares against it.
        new.api.listen = old.api.listen;
        new.api.limits = old.api.limits;
        new.daemon = old.daemon.clone();
        self.config = new;
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed at the call, not at the first
/// poll, so a SIGTERM during start-up (a long list load) is a clean shutdown request.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

/// Turns SIGHUP into reload requests. Installed before anything else in `serve`, so an early
/// SIGHUP cannot kill the daemon (its default action).
pub fn reload_signal() -> std::io::Result<mpsc::UnboundedReceiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
