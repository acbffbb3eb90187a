//! `certloop`: a TLS-terminating reverse proxy whose certificates come from an ACME CA and
//! never lapse.
//!
//! ```text
//! certloop --config PATH [--log-format text|json] [--log-level FILTER] [--retry-now]
//! certloop check --config PATH
//! certloop status --config PATH [--json]
//! certloop reload --config PATH
//! certloop --version
//! ```
//! Exit codes: 0 after a clean shutdown, 1 when it cannot start or keep running, 2 for a bad
//! command line or configuration.
//!
//! `status` prints every certificate (listener, names, not after, renewal, last error, retry)
//! from the running process's admin endpoint when `[admin]` is configured and answers, else
//! from the cache directories on disk; `--json` prints the rows as JSON.
//!
//! `reload` checks the configuration file and, when it is valid, sends SIGHUP to the running
//! certloop named by the pid file in `state_dir`; the process applies the listeners (see
//! `docs/operating.md`) and logs the outcome. An invalid file exits 2 with file, line and key.
//!
//! `--retry-now` orders at once even where an earlier run's orders were answered by the CA with
//! errors and their persisted backoff forbids ordering yet: for one start after fixing the
//! cause, never in a service file (the backoff keeps a restart loop off the CA's rate limits).

#![forbid(unsafe_code)]

mod access_log;
mod account_command;
mod admin;
mod admission;
mod cert_status;
mod config;
mod connection;
mod counted_body;
mod forwarding;
mod h1;
mod h2_frames;
mod http2;
mod http_date;
mod limits;
mod listen;
mod manual;
mod metrics;
mod observed_io;
mod pid_file;
mod preflight;
mod proxy;
mod reload_plan;
mod server;
mod shards;
mod status_command;
mod status_page;
mod supervisor;
mod tls_stream;
mod tunnel;
mod watchdog;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use certloop_tokio::RevocationReason;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::task::TaskTracker;

use crate::cert_status::CertSources;
use crate::config::Config;
use crate::pid_file::PidFile;
use crate::server::{ListenerContext, TokenLists};
use crate::supervisor::{StartFailure, Supervisor};

/// What to do.
#[derive(Clone, PartialEq, Eq)]
enum Command {
    Run,
    Check,
    Status {
        json: bool,
    },
    Reload,
    /// `account ... show|rollover` and `revoke`, on the listener named here.
    Account {
        listener: String,
        operation: account_command::Operation,
    },
}

struct Args {
    command: Command,
    config: PathBuf,
    json_logs: bool,
    log_level: Option<String>,
    retry_now: bool,
}

const USAGE: &str = "usage: certloop [check | status [--json] | reload] --config PATH \
                     [--log-format text|json] [--log-level FILTER] [--retry-now]\n       \
                     certloop account --config PATH --listener NAME show|rollover\n       \
                     certloop revoke --config PATH --listener NAME [--reason keyCompromise]";

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = std::env::args().skip(1).peekable();
    let subcommands = ["check", "status", "reload", "account", "revoke"];
    let subcommand = args.next_if(|a| subcommands.contains(&a.as_str()));
    let mut command = match subcommand.as_deref() {
        Some("check") => Command::Check,
        Some("status") => Command::Status { json: false },
        Some("reload") => Command::Reload,
        Some("account") => Command::Account {
            listener: String::new(),
            operation: account_command::Operation::Show,
        },
        Some(_) => Command::Account {
            listener: String::new(),
            operation: account_command::Operation::Revoke(RevocationReason::Unspecified),
        },
        None => Command::Run,
    };
    let mut account_operation = None;
    let (mut config, mut json_logs, mut log_level, mut retry_now) = (None, false, None, false);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--version" | "-V" => return Ok(None),
            "--config" | "-c" => config = Some(PathBuf::from(value()?)),
            "--log-format" => {
                json_logs = match value()?.as_str() {
                    "json" => true,
                    "text" => false,
                    other => return Err(format!("--log-format {other:?}: use text or json")),
                }
            }
            "--log-level" => log_level = Some(value()?),
            "--retry-now" => retry_now = true,
            "--json" if matches!(command, Command::Status { .. }) => {
                command = Command::Status { json: true };
            }
            "--listener" if matches!(command, Command::Account { .. }) => {
                let name = value()?;
                if let Command::Account { listener, .. } = &mut command {
                    *listener = name;
                }
            }
            "--reason" if subcommand.as_deref() == Some("revoke") => {
                let reason =
                    RevocationReason::parse(&value()?).map_err(|e| format!("--reason {e}"))?;
                command = match command {
                    Command::Account { listener, .. } => Command::Account {
                        listener,
                        operation: account_command::Operation::Revoke(reason),
                    },
                    other => other,
                };
            }
            "show" | "rollover"
                if subcommand.as_deref() == Some("account") && account_operation.is_none() =>
            {
                account_operation = Some(if arg == "show" {
                    account_command::Operation::Show
                } else {
                    account_command::Operation::Rollover
                });
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let config = config.ok_or_else(|| format!("--config is required\n{USAGE}"))?;
    if let Command::Account {
        listener,
        operation,
    } = &mut command
    {
        if listener.is_empty() {
            return Err(format!("--listener is required\n{USAGE}"));
        }
        if subcommand.as_deref() == Some("account") {
            *operation = account_operation
                .ok_or_else(|| format!("account needs show or rollover\n{USAGE}"))?;
        }
    }
    Ok(Some(Args {
        command,
        config,
        json_logs,
        log_level,
        retry_now,
    }))
}

fn init_logging(args: &Args) -> Result<(), String> {
    let filter = match &args.log_level {
        Some(level) => tracing_subscriber::EnvFilter::try_new(level),
        None => tracing_subscriber::EnvFilter::try_from_env("CERTLOOP_LOG")
            .or_else(|_| tracing_subscriber::EnvFilter::try_new("info")),
    }
    .map_err(|e| format!("invalid log filter: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if args.json_logs {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("certloop {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("certloop: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&args) {
        eprintln!("certloop: {e}");
        return ExitCode::from(2);
    }
    let config = match config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("certloop: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // `check`, and `reload` before it signals: what would stop a start on this machine.
    if matches!(args.command, Command::Check | Command::Reload) {
        let problems = preflight::problems(&config);
        if !problems.is_empty() {
            for problem in problems {
                eprintln!("certloop: {}: {problem}", args.config.display());
            }
            return ExitCode::from(2);
        }
    }
    match args.command {
        Command::Check => {
            println!(
                "{}: configuration is valid ({} listeners)",
                args.config.display(),
                config.listeners.len()
            );
            return ExitCode::SUCCESS;
        }
        Command::Status { json } => return status_command::run(&config, json),
        Command::Account {
            listener,
            operation,
        } => return account_command::run(&config, &listener, operation),
        Command::Reload => {
            return match pid_file::signal_reload(&config.state_dir) {
                Ok(pid) => {
                    println!(
                        "{}: valid; sent SIGHUP to certloop (process {pid}), which logs the outcome",
                        args.config.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("certloop reload: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Command::Run => {}
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certloop: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config, args.config, args.retry_now)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certloop: {}", e.message);
            ExitCode::from(if e.misconfigured { 2 } else { 1 })
        }
    }
}

/// The signals certloop acts on, installed before anything else starts, so that a signal
/// during the first certificate order is handled rather than killing the process.
struct Signals {
    hangup: Signal,
    user1: Signal,
    terminate: Signal,
    interrupt: Signal,
}

enum Received {
    Hangup,
    /// SIGUSR1: reopen the access log file.
    Reopen,
    Stop,
}

impl Signals {
    fn install() -> Result<Self, String> {
        let install =
            |kind| signal(kind).map_err(|e| format!("cannot install signal handlers: {e}"));
        Ok(Self {
            hangup: install(SignalKind::hangup())?,
            user1: install(SignalKind::user_defined1())?,
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.hangup.recv() => Received::Hangup,
            _ = self.user1.recv() => Received::Reopen,
            _ = self.terminate.recv() => Received::Stop,
            _ = self.interrupt.recv() => Received::Stop,
        }
    }
}

/// What an operator does about a start without a certificate.
fn how_to_retry(error: &certloop_tokio::StartError) -> &'static str {
    match error {
        certloop_tokio::StartError::NoCertificate {
            blocked_until: Some(_),
            ..
        } => {
            "The CA answered those orders, so the wait is kept in the cache directory across \
             restarts (a restart loop must not burn its rate limits). After fixing the cause, \
             start once with --retry-now to order at once (a wait the CA set with a rate \
             limit is kept)"
        }
        _ => "Fix the cause and restart",
    }
}

async fn run(config: Config, path: PathBuf, retry_now: bool) -> Result<(), StartFailure> {
    let mut signals = Signals::install()?;
    // Every connection and upgraded tunnel runs in here; shutdown waits for them.
    let tracker = TaskTracker::new();
    // The connections' runtimes, one per core; stopping them drops whatever connection the
    // grace period left (and they stop whenever `run` returns).
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let (shards, stop_shards) = shards::Shards::start(cores)
        .map_err(|e| format!("cannot start the connection runtimes: {e}"))?;
    // Stops the [http] and [admin] listeners; each TLS listener has its own.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut accept_loops = Vec::new();
    // Bound before any ACME order starts, so HTTP-01 validation finds it (connections wait in
    // the backlog until the accept loop below runs).
    let http = match &config.http {
        Some(http) => Some((http.clone(), bind_table("[http]", http.bind)?)),
        None => None,
    };
    let admin = match &config.admin {
        Some(admin) => Some((admin.clone(), bind_table("[admin]", admin.bind)?)),
        None => None,
    };
    let access_log = match &config.access_log {
        Some(log) => Some(access_log::AccessLog::open(log)?),
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let sources: CertSources = Arc::default();
    let tokens: TokenLists = Arc::default();
    let mut supervisor = Supervisor::new(supervisor::Shared {
        tracker: tracker.clone(),
        shards: shards.clone(),
        metrics: metrics.clone(),
        access_log: access_log.clone(),
        sources: sources.clone(),
        tokens: tokens.clone(),
    });
    supervisor
        .start(config.listeners.clone(), retry_now)
        .await?;
    let _pid_file = PidFile::write(&config.state_dir);
    if let Some((http, socket)) = http {
        tracing::info!(bind = %http.bind, "plain HTTP: HTTP-01 answers and redirects to HTTPS");
        let ctx = ListenerContext::new(
            "[http]",
            http.limits,
            tracker.clone(),
            shards.clone(),
            stop_rx.clone(),
            metrics.listener("[http]"),
        );
        let serve = server::serve_http(ctx, socket, tokens, http.https_port);
        accept_loops.push(tokio::spawn(serve));
    }
    metrics.watch_certificates(sources.clone());
    if let Some((admin, socket)) = admin {
        tracing::info!(bind = %admin.bind, "admin: /metrics, /healthz, /readyz, the status page at /");
        let ctx = ListenerContext::new(
            "[admin]",
            admin.limits,
            tracker.clone(),
            shards.clone(),
            stop_rx.clone(),
            metrics.listener("[admin]"),
        );
        let admin = Arc::new(admin::Admin { metrics, sources });
        accept_loops.push(tokio::spawn(admin::serve_admin(ctx, socket, admin)));
    }
    // The failure table: every ACME listener must have a valid certificate before we say
    // ready. Signals are answered meanwhile: SIGTERM stops cleanly, SIGHUP reloads certificate
    // files (the configuration is reloaded once ready).
    let stopped_early = {
        let handles = supervisor.acme_handles();
        let startup = async {
            for (name, handle) in &handles {
                handle
                    .ready()
                    .await
                    .map_err(|e| format!("listener {name}: {e}. {}", how_to_retry(&e)))?;
            }
            Ok::<(), String>(())
        };
        tokio::pin!(startup);
        loop {
            tokio::select! {
                started = &mut startup => {
                    started?;
                    tracing::info!("ready");
                    break false;
                }
                received = signals.next() => match received {
                    Received::Hangup => supervisor.reload_certificate_files(),
                    Received::Reopen => access_log.iter().for_each(access_log::AccessLog::reopen),
                    Received::Stop => {
                        tracing::info!("stopping before every certificate was ready");
                        break true;
                    }
                },
            }
        }
    };
    let mut running = config;
    if !stopped_early {
        loop {
            match signals.next().await {
                Received::Hangup => running = reload(&mut supervisor, running, &path).await,
                Received::Reopen => access_log.iter().for_each(access_log::AccessLog::reopen),
                Received::Stop => break,
            }
        }
    }
    let grace = running.shutdown_grace;
    tracing::info!(
        "shutting down: no new connections, waiting up to {grace:?} for in-flight requests"
    );
    let _ = stop_tx.send(true);
    supervisor.stop_accepting().await;
    for accept_loop in accept_loops {
        let _ = accept_loop.await;
    }
    // Connections still in their TLS handshake and upgraded tunnels count as in flight too.
    tracker.close();
    let second_signal =
        async { while let Received::Hangup | Received::Reopen = signals.next().await {} };
    tokio::select! {
        () = tracker.wait() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over; closing remaining connections");
        }
        () = second_signal => {
            tracing::warn!("second stop signal; closing remaining connections now");
        }
    }
    drop(stop_shards);
    drop(supervisor); // stops certificate management
    if let Some(log) = &access_log {
        log.close();
    }
    Ok(())
}

fn bind_table(table: &str, addr: std::net::SocketAddr) -> Result<listen::ListenSocket, String> {
    listen::ListenSocket::bind(addr).map_err(|e| {
        let key = table.trim_matches(['[', ']']);
        format!("{table}: cannot listen on {addr}: {e}; free the port or change {key}.bind")
    })
}

/// SIGHUP once running: reads the configuration file again and applies its listeners. A file
/// that does not parse or check is refused as a whole (logged with file, line and key) and the
/// running configuration stays. Returns the configuration now running.
async fn reload(supervisor: &mut Supervisor, running: Config, path: &std::path::Path) -> Config {
    supervisor.reload_certificate_files();
    let new = match config::load(path) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!("configuration reload refused, the running one stays: {e}");
            return running;
        }
    };
    if let Some(table) = running.needs_restart_for(&new) {
        tracing::warn!(
            "configuration reload: {table} changed; that takes a restart (the listeners are reloaded)"
        );
    }
    let refusal = if new.http.is_some() != running.http.is_some() {
        Some("[http] was added or removed, which takes a restart".to_owned())
    } else if new.state_dir != running.state_dir {
        Some("state_dir changed, which takes a restart (the listeners' cache directories and the pid file live there)".to_owned())
    } else {
        let problems = preflight::problems(&new);
        (!problems.is_empty()).then(|| problems.join("; "))
    };
    if let Some(why) = refusal {
        tracing::error!(
            "configuration reload refused, the running one stays: {}: {why}",
            path.display()
        );
        return running;
    }
    match supervisor.reload(new.clone()).await {
        Ok(done) => {
            tracing::info!(
                added = ?done.added,
                removed = ?done.removed,
                restarted = ?done.restarted,
                upstream_changed = ?done.proxy_changed,
                unchanged = ?done.unchanged,
                failed = ?done.failed,
                "configuration reloaded"
            );
            // The tables a reload does not apply keep their running values.
            Config {
                listeners: new.listeners,
                ..running
            }
        }
        Err(e) => {
            tracing::error!("configuration reload refused, the running one stays: {e}");
            running
        }
    }
}
