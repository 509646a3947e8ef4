//! CLI dispatch only: `serve` (the default), `check`, `flags eval`. A bad config exits 64 (EX_USAGE)
//! after listing every problem.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard::config::{self, LogFormat};

const EXIT_CONFIG: u8 = 64;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "LLM gateway routed by PostHog feature flags")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Config file (TOML).
    #[arg(long, global = true, default_value = "config/switchyard.toml")]
    config: PathBuf,
    /// Listen address; overrides the config's `listen`.
    #[arg(long)]
    listen: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Validate the config and the flags it points at; list every problem.
    Check,
    /// Flag tools.
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
    },
}

#[derive(Subcommand)]
enum FlagsCommand {
    /// Evaluate flags locally exactly as posthog-python does.
    Eval(switchyard::flags::cli::EvalArgs),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => {
            serve(&ServeArgs { config: cli.serve.config, listen: args.listen.or(cli.serve.listen) })
        }
        Some(Command::Check) => match config::load(&cli.serve.config, &env).and_then(|cfg| {
            let problems = switchyard::sources::check_flags(&cfg);
            if problems.is_empty() {
                Ok(cfg)
            } else {
                Err(config::ConfigErrors(problems))
            }
        }) {
            Ok(cfg) => {
                eprintln!(
                    "{}: ok: {} backends, {} routes, listen {}",
                    cli.serve.config.display(),
                    cfg.backends.len(),
                    cfg.routes.len(),
                    cfg.listen
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} problem(s) found", errors.0.len());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Some(Command::Flags { command: FlagsCommand::Eval(args) }) => {
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout().lock();
            match switchyard::flags::cli::run(&args, stdin, stdout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard flags eval: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let cfg = match config::load(&args.config, &env) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} problem(s) found; not starting", errors.0.len());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(cfg.server.log_format);
    let listen = args.listen.clone().unwrap_or_else(|| cfg.listen.clone());
    // Worker 0 and the background tasks (flag sources, exporter, reloads) run on this thread; the
    // server starts `[server] workers - 1` more single-threaded runtimes (thread per core).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let running = match switchyard::start(cfg, &listen).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, %listen, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(addr = %running.addr, "switchyard listening");
        wait_for_signal().await;
        running.shutdown.cancel();
        let _ = running.task.await;
        if let Some(exporter) = &running.state.exporter {
            exporter.finished().await;
        }
        ExitCode::SUCCESS
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: escape codes are noise in a log file or collector, and styling
    // every field name was about 40 % of the access log line's cost (callgrind, ~17k instructions).
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    // Uncoloured lines (always so in JSON) are the production case: the access line, one a
    // request, is then written by `access` itself, in the same shape, at a sixth of the cost.
    match format {
        LogFormat::Json => {
            builder.json().flatten_event(true).init();
            switchyard::access::write_directly(switchyard::access::Shape::Json);
        }
        LogFormat::Text => {
            builder.init();
            if !colour {
                switchyard::access::write_directly(switchyard::access::Shape::Text);
            }
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
