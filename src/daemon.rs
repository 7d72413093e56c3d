//! `preloadd serve`: the daemon. Loads the config, opens the store, applies declarative jobs,
//! runs the engine, the report deliveries and the API until the shutdown signal, then stops at a safe point.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::engine::{Engine, EngineSettings};
use crate::reports::{Reporter, ReporterSettings};
use crate::store::Store;
use crate::vendor::Vendors;

/// Everything `serve` needs besides the config; tests pass their own.
pub struct ServeOptions {
    pub clock: SharedClock,
    pub settings: EngineSettings,
    /// An already bound listener for `[api.compat]` (tests bind port 0); else its `listen`.
    pub compat_listener: Option<TcpListener>,
    pub reports: ReporterSettings,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            clock: Arc::new(SystemClock),
            settings: EngineSettings::default(),
            reports: ReporterSettings::default(),
            compat_listener: None,
        }
    }
}

/// Runs the daemon on an already bound listener until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    let store = Store::open(&config.daemon.state_dir, config.daemon.database_url.as_deref())
        .await
        .context("opening the state database")?;
    let now = opts.clock.now_ms();
    crate::ingest::apply_config_jobs(&store, &config.jobs, config.api.allow_private_lists, now)
        .await
        .context("applying the config's jobs")?;
    store
        .sync_config_subscriptions(&config.reports, now)
        .await
        .context("applying the config's report subscriptions")?;
    let vendors = Vendors::from_config(&config.vendors, opts.clock.clone())?;
    let cancel = CancellationToken::new();
    let engine = Engine::new(store.clone(), vendors, opts.clock.clone(), opts.settings, cancel.clone());
    let reporter = Reporter::new(store.clone(), opts.clock.clone(), config.smtp.clone(), opts.reports);
    let reports = tokio::spawn(reporter.run(cancel.clone()));

    let app = crate::api::router(crate::api::AppState::new(engine.clone(), &config.api));
    let api_cancel = cancel.clone();
    let addr = listener.local_addr()?;
    let api = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { api_cancel.cancelled().await }).await
    });
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
            let cancel = cancel.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await }).await
            }))
        }
        None => None,
    };
    info!(listen = %addr, state = %store.path().display(), "preloadd is ready");

    let trigger = cancel.clone();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: no new slices; waiting for in-flight vendor calls");
        trigger.cancel();
    });
    engine.clone().run(config.daemon.shutdown_timeout, || {}).await?;
    let _ = api.await;
    if let Some(c) = compat {
        let _ = c.await;
    }
    // A send cut short here stays `sending` and is recorded as failed at the next start.
    let _ = tokio::time::timeout(config.daemon.shutdown_timeout, reports).await;
    store.close().await;
    info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
