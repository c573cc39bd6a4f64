//! `ballots`: Coffer's private-voting reference application.
//!
//! `ballots serve` runs the web application (README: apps/ballots/README.md); `ballots load`
//! is its load generator (10 000 simulated voters, one connection each).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::routing::{get, post};
use clap::{Parser, Subcommand};
use coffer_keys::Keyring;

use coffer_ballots::app::App;
use coffer_ballots::config::{self, Settings, Source};
use coffer_ballots::crypto::Keys;
use coffer_ballots::db::Db;
use coffer_ballots::{api, load, pages, raise_fd_limit, runtime};

const SERVE_HELP: &str = "\
With no ballots.toml (and no --config), Ballots runs on embedded defaults: ballots in
sqlite:ballots.db, ballot keys in the key store sqlite:ballots-keys.db, in-process key cache, and
the KEK main/v1 from COFFER_MASTER_KEY (base64, 256 bits). --dev generates ./ballots-dev.key
(mode 0600) instead: for trying it out only. GET /metrics then takes the bearer token in
BALLOTS_METRICS_TOKEN, when that is set.

A ballots.toml is a coffer.toml (its [store], [[kek]] and [cache] tables, so `coffer keys` works
on it) with an [app] table: listen, database_url, retention, shred_interval, key_cache_ttl,
max_batch, database_connections, environment, metrics_token (the bearer token GET /metrics
requires, env:VAR or file:PATH; without it /metrics refuses every request).
apps/ballots/README.md shows one.

Examples:
  ballots serve --dev                      # then open http://127.0.0.1:8080
  COFFER_MASTER_KEY=$(coffer keygen) ballots serve --listen 127.0.0.1:9000
  ballots serve --config ballots.toml      # PostgreSQL + Redis";

const LOAD_HELP: &str = "\
Each connection is a voter who loads a ballot (GET /api/ballots/{id}), votes on it
(POST …/votes, 10 % write-ins from a small pool, so equal write-ins share an option), and starts
over as a new voter, until the duration is up. Every acknowledged vote is recorded; with
--verify the generator then closes every ballot (open ballots publish only their totals), reads
every tally and checks that each option has exactly the votes it acknowledged. Exit status 1 on
any error or mismatch.

Examples:
  ballots load --url http://127.0.0.1:8080 --connections 10000 --ballots 100 --duration 60s --verify
  ballots load --create-only --ballots 100 --state ballots.json
  ballots load --state ballots.json --duration 60s --json";

#[derive(Debug, Parser)]
#[command(
    name = "ballots",
    version,
    about = "Ballots: private voting on Coffer (reference application)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the web application
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Drive a running instance with simulated voters and check every acknowledged vote
    #[command(after_help = LOAD_HELP)]
    Load(load::LoadArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The configuration file (default: ./ballots.toml if it exists, else the embedded defaults)
    #[arg(long, value_name = "FILE", env = "BALLOTS_CONFIG")]
    config: Option<PathBuf>,
    /// Development mode: embedded defaults with a generated ./ballots-dev.key. Never in production.
    #[arg(long)]
    dev: bool,
    /// Listen on this address (overrides `listen` of the `[app]` table), e.g. 127.0.0.1:8080
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => serve(a),
        Command::Load(a) => load::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ballots: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BALLOTS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    raise_fd_limit();
    let mut settings = Settings::resolve(&Source {
        file: a.config,
        dev: a.dev,
    })?;
    if let Some(listen) = a.listen {
        settings.app.listen = listen;
    }
    runtime()?.block_on(serve_async(settings))
}

/// The keyring of the `[store]`/`[[kek]]`/`[cache]` sections (every KEK source coffer-assembly
/// has in this build), its KEKs proved against the key store and new ones registered.
async fn keyring(settings: &Settings) -> Result<Keyring> {
    let cfg = &settings.coffer;
    let mut kc = cfg.keyring_config()?;
    kc.actor = "ballots".to_owned();
    coffer_assembly::start_with(cfg, kc)
        .await
        .context("the configured KEK does not match the key store, or cannot be opened")
}

async fn serve_async(settings: Settings) -> Result<ExitCode> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full("ballots_vote_batch_size".to_owned()),
            &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0],
        )?
        .install_recorder()?;
    let keys = if settings.app.encryption {
        let keyring = keyring(&settings).await?;
        Keys::new(Some(Arc::new(keyring)))
    } else {
        tracing::warn!(
            "encryption = false: ballot texts are stored IN PLAINTEXT (benchmark mode, development only)"
        );
        Keys::new(None)
    };
    let db = Db::connect(
        &settings.app.database_url,
        settings.app.database_connections,
    )
    .await?;
    let listen = settings.app.listen;
    if settings.app.environment == config::Environment::Development {
        tracing::warn!("environment = development: not for production");
    }
    let app = App::start(db, keys, settings.app, metrics);
    let router = router(app);
    let socket = match listen {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    // A deep accept queue: 10 000 voters connect within seconds.
    let listener = socket.listen(8192)?;
    tracing::info!(address = %listener.local_addr()?, "ballots listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown() {
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/ballots", post(pages::create))
        .route("/b/{id}", get(pages::ballot))
        .route("/b/{id}/vote", post(pages::vote))
        .route("/b/{id}/tally", get(pages::tally_page))
        .route("/b/{id}/close", post(pages::close))
        .route("/api/ballots", post(api::create_json))
        .route("/api/ballots/{id}", get(api::view_json))
        .route("/api/ballots/{id}/votes", post(api::vote_json))
        .route("/api/ballots/{id}/tally", get(api::tally_json))
        .route("/api/ballots/{id}/close", post(api::close_json))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .layer(axum::middleware::from_fn(pages::same_origin))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            pages::secure_cookies,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(app)
}
