//! Listening, TLS, graceful shutdown and process hardening.

use std::net::SocketAddr;
use std::path::Path;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use axum_server::Handle;

use crate::App;

/// Where the service listens, passed to the caller once the socket is bound.
#[derive(Clone, Copy, Debug)]
pub struct Listening {
    /// The bound address (the real port when the configured one was 0).
    pub addr: SocketAddr,
    /// Whether connections use TLS.
    pub tls: bool,
}

/// Turns core dumps off (RLIMIT_CORE = 0) and makes the process non-dumpable, so keys in
/// memory do not end up in a core file or readable through /proc by other processes of the
/// same user (docs/DESIGN.md §S3).
pub fn disable_core_dumps() -> Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).context("setrlimit(RLIMIT_CORE, 0)")?;
    nix::sys::prctl::set_dumpable(false).context("prctl(PR_SET_DUMPABLE, 0)")?;
    Ok(())
}

#[cfg(feature = "tls")]
type TlsConfig = rustls::ServerConfig;
#[cfg(not(feature = "tls"))]
type TlsConfig = std::convert::Infallible;

#[cfg(not(feature = "tls"))]
fn tls_config(_cert: &Path, _key: &Path) -> Result<TlsConfig> {
    bail!(
        "this build of coffer terminates no TLS (the FIPS build: rustls would link a second, \
         uncertified AWS-LC beside the FIPS module). Remove tls_cert and tls_key, listen on \
         127.0.0.1 and put a FIPS-validated TLS proxy in front (docs/SERVICE.md)"
    )
}

#[cfg(feature = "tls")]
fn tls_config(cert: &Path, key: &Path) -> Result<TlsConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the TLS private key {}", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match or are unsupported")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Installs the SIGTERM and SIGINT handlers now (a signal that arrives before they exist kills
/// the process with no graceful shutdown, so they must be in place before the service says it
/// is listening); the returned future ends at the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move { wait_for(handlers).await }
}

async fn wait_for(
    handlers: (
        std::io::Result<tokio::signal::unix::Signal>,
        std::io::Result<tokio::signal::unix::Signal>,
    ),
) {
    match handlers {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers the service can only be killed; say so and wait forever.
            tracing::error!("cannot install SIGTERM/SIGINT handlers; graceful shutdown is off");
            std::future::pending::<()>().await;
        }
    }
}

/// Connections the kernel may hold for the service before it accepts them (it caps this at
/// `net.core.somaxconn`, 4 096 by default). The standard library's `TcpListener::bind` asks for
/// 128: when 1 000 clients connected at once the queue overflowed and the clients it dropped
/// waited for SYN retransmissions (1 s, then 3 s) before they got in (docs/BENCHMARKS.md).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (with SO_REUSEADDR, as `std::net::TcpListener::bind` does) and listens with
/// [`LISTEN_BACKLOG`].
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

/// Serves until SIGTERM or SIGINT, then stops accepting connections, lets requests in flight
/// finish (up to `[service] shutdown_timeout`), writes the pending audit records and returns.
///
/// Without TLS the service binds only a loopback address unless `insecure_no_tls` (docs/DESIGN.md
/// §S2): tokens and plaintexts must not cross a network in the clear.
pub async fn serve(
    app: App,
    insecure_no_tls: bool,
    on_listen: impl FnOnce(Listening),
) -> Result<()> {
    let cfg = app.config().clone();
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(tls_config(cert, key)?),
        None => None,
    };
    if tls.is_none() && !cfg.listen.ip().is_loopback() && !insecure_no_tls {
        bail!(
            "refusing to listen on {} without TLS: tokens and plaintexts would cross the network \
             in the clear. Set [service] tls_cert and tls_key, listen on 127.0.0.1 behind a \
             TLS-terminating proxy, or pass --insecure-no-tls if the network is trusted",
            cfg.listen
        );
    }
    let listener = bind(cfg.listen).with_context(|| format!("cannot listen on {}", cfg.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (router, _) = crate::router(app.clone());

    let handle = Handle::new();
    let h = handle.clone();
    let grace = cfg.shutdown_timeout;
    let signalled = shutdown_signal();
    tokio::spawn(async move {
        signalled.await;
        tracing::info!(
            grace_s = grace.as_secs(),
            "shutting down: no new connections; waiting for requests in flight"
        );
        h.graceful_shutdown(Some(grace));
    });

    let flusher = app.clone();
    let interval = cfg.audit_interval;
    let background = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            flusher.flush_audit(false).await;
            flusher.trim_limiter();
            flusher.refresh_key_count().await;
        }
    });

    let is_tls = tls.is_some();
    if !is_tls && !addr.ip().is_loopback() {
        tracing::warn!(address = %addr, "serving plain HTTP on a non-loopback address (--insecure-no-tls): tokens and plaintexts cross the network unencrypted");
    }
    tracing::info!(address = %addr, tls = is_tls, "coffer serve listening");
    on_listen(Listening { addr, tls: is_tls });
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let served = match tls {
        #[cfg(feature = "tls")]
        Some(tls) => {
            let rustls =
                axum_server::tls_rustls::RustlsConfig::from_config(std::sync::Arc::new(tls));
            axum_server::from_tcp_rustls(listener, rustls)
                .handle(handle)
                .serve(service)
                .await
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match never {},
        None => {
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(service)
                .await
        }
    };
    background.abort();
    // Requests that answered 503 `timeout` may still be running: let them finish their
    // key-store work before the runtime is dropped.
    let left = app.wait_detached(grace).await;
    if left > 0 {
        tracing::error!(
            requests = left,
            "shutdown: requests still running after the grace period are abandoned"
        );
    }
    app.flush_audit(true).await;
    served.context("the HTTP server failed")?;
    tracing::info!("stopped");
    // Let the last log lines reach stderr before the process exits.
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
