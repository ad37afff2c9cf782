//! The `shipper` binary: flags → config → run. Errors are printed with their causes.

use clap::Parser;
use shipper::{config, Args, Command};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

fn main() -> ExitCode {
    shipper::memory::limit_arenas();
    let args = Args::parse();
    init_logging(&args);
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shipper: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        Some(Command::Manifests(opts)) => {
            return match shipper::manifests::run(opts, &mut std::io::stdout().lock()) {
                Err(e) if !is_broken_pipe(&e) => Err(e),
                _ => Ok(ExitCode::SUCCESS),
            };
        }
        Some(Command::Retention(opts)) => {
            let today = chrono::Utc::now().date_naive();
            shipper::retention::run(opts, today, &mut std::io::stdout().lock())?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Sizing(opts)) => {
            shipper::sizing::run(opts, &mut std::io::stdout().lock())?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::CheckConfig { file }) => {
            return Ok(match config::check_file(file) {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            });
        }
        None => {}
    }
    let source = shipper::ConfigSource {
        file: args.config.clone(),
        env: std::env::vars().collect(),
        flags: args.overrides(),
    };
    let cfg = config::load(
        source.file.as_deref(),
        source.env.iter().cloned(),
        source.flags.clone(),
    )?;
    if !args.dry_run {
        let stats = shipper::agent(&cfg, source)?;
        tracing::info!(%stats, "stopped");
        return Ok(ExitCode::SUCCESS);
    }
    let opts = shipper::DryRun {
        pods: args.pods.clone(),
        follow: args.follow,
        explain: args.explain,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stop = AtomicBool::new(false);
    match shipper::dry_run(&cfg, &opts, &mut out, &stop) {
        Ok(stats) => {
            eprintln!("shipper dry-run: {stats}");
            Ok(ExitCode::SUCCESS)
        }
        // `shipper --dry-run | head` closing the pipe is not an error.
        Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(args: &Args) {
    // The dry-run's stdout is data: its own logs stay quiet unless asked.
    let default = if args.dry_run { "warn" } else { "info" };
    let level = args.log_level.as_deref().unwrap_or(default);
    shipper::init_logging(args.log_format, level, args.dry_run);
}
