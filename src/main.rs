//! The `logship` binary: parse the command line, load and validate the configuration (reporting
//! every error at once and exiting 64), then run the agent until SIGTERM or SIGINT, reloading the
//! configuration at SIGHUP or when its file changes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use logship::config::{self, LoadOptions, Loaded};
use logship::reload::{Supervisor, Triggers};

/// Exit code for a configuration that does not validate (EX_USAGE, as linkerd2-proxy does).
const EXIT_CONFIG: u8 = 64;
/// Exit code for a failure to start (data directory, positions file, listen address).
const EXIT_START: u8 = 70;
/// Exit code of `status` when the endpoint cannot be reached (EX_UNAVAILABLE).
const EXIT_UNREACHABLE: u8 = 69;

/// A node log agent: tails container logs, and ships every line exactly once.
#[derive(Debug, Parser)]
#[command(name = "logship", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (TOML, or YAML by extension). Without it, the built-in defaults.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Follow files matching this glob instead of `tail.include` (repeatable).
    #[arg(long, global = true, value_name = "GLOB")]
    include: Vec<String>,
    /// Where positions are kept, instead of `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where records go, instead of `output.type`: elasticsearch, stdout, file or blackhole.
    #[arg(long, global = true, value_name = "TYPE")]
    output: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Validate the configuration, print the effective configuration (secrets masked), and exit
    /// non-zero if anything is wrong.
    Check,
    /// Work with the records Elasticsearch refused for good (`<data_dir>/dead-letter/`).
    #[command(subcommand)]
    DeadLetter(DeadLetterCommand),
    /// Work with the positions file (`<data_dir>/positions.json`).
    #[command(subcommand)]
    Positions(PositionsCommand),
    /// Ask a running agent how it is doing (its /readyz, /healthz and /metrics) and print a
    /// summary. Exits 0 when it is ready and live, 1 when it is not, 69 when it cannot be reached.
    Status {
        /// The agent's endpoint, HOST:PORT. Default: `server.listen` of the configuration, with
        /// 0.0.0.0 (every interface) asked on 127.0.0.1.
        #[arg(long, value_name = "HOST:PORT")]
        server: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// Send every dead letter again (after the cause was fixed). Records now accepted, or
    /// already present, are removed from the store; records still refused stay. Exits 0 when the
    /// store is empty afterwards, 1 when records remain, 70 when it cannot run.
    Replay,
}

#[derive(Debug, Subcommand)]
enum PositionsCommand {
    /// Start from another agent's positions: read them, match each to a file that `tail.include`
    /// finds now (by inode, device, path or content fingerprint, whatever the agent stored),
    /// check each offset against its file (not past the end, just after a newline) and write
    /// logship's positions file. Stop the old agent first. Exits 0 when written (or, with
    /// --dry-run, when it would be), 1 when a positions file exists and neither --force nor
    /// --dry-run is given,
    /// 70 when a source cannot be read or its agent still holds it.
    #[command(after_help = "SOURCE formats:
  fluent-bit:PATH   Fluent Bit's tail input database (its DB option; older manifests: /var/log/flb_kube.db)
  fluentd:PATH      Fluentd's in_tail pos_file (fluentd-kubernetes-daemonset: /var/log/fluentd-containers.log.pos)
  filebeat:DIR      Filebeat's registry directory (<path.data>/registry/filebeat)
  vector:PATH       Vector's file source checkpoints (<data_dir>/<source id>/checkpoints.json)")]
    Import {
        /// Where the old agent kept its positions, as KIND:PATH (see below); several may be given.
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<String>,
        /// Print what would be imported; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replace an existing logship positions file.
        #[arg(long)]
        force: bool,
    },
}

/// With `--features dhat-heap`, every allocation is recorded for a heap profile.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static HEAP: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    allocator::tune();
    // The profile (dhat-heap.json in the working directory) is written when this is dropped, as
    // `main` returns: after a clean stop (SIGTERM), not after kill -9.
    #[cfg(feature = "dhat-heap")]
    let _heap = dhat::Profiler::new_heap();
    let cli = Cli::parse();
    if let Some(Command::Status {
        server: Some(server),
    }) = &cli.command
    {
        // The address is given: the configuration is not needed, nor required to be valid.
        return status(Some(server), "0.0.0.0:0".parse().expect("an address"));
    }
    let options = load_options(&cli);
    let loaded = match config::load(&options) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("logship: invalid configuration:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            print!("{}", loaded.effective_toml());
            eprintln!("logship: configuration is valid.");
            ExitCode::SUCCESS
        }
        Command::Run => run(loaded, options),
        Command::DeadLetter(DeadLetterCommand::Replay) => replay(loaded),
        Command::Positions(PositionsCommand::Import {
            sources,
            dry_run,
            force,
        }) => import_positions(&loaded, &sources, dry_run, force),
        Command::Status { server } => status(server.as_deref(), loaded.settings.server.listen),
    }
}

/// `logship status`.
fn status(server: Option<&str>, listen: std::net::SocketAddr) -> ExitCode {
    use logship::status;
    let report = status::target(server, listen)
        .and_then(|addr| status::fetch(addr).map(|status| (addr, status)));
    match report {
        Ok((addr, report)) => {
            print!("{}", status::render(addr, &report));
            if report.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("logship: cannot reach the agent: {e}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

fn load_options(cli: &Cli) -> LoadOptions {
    let mut overrides = Vec::new();
    if !cli.include.is_empty() {
        overrides.push(("tail.include".to_string(), serde_json::json!(cli.include)));
    }
    if let Some(dir) = &cli.data_dir {
        overrides.push(("data_dir".to_string(), dir.display().to_string().into()));
    }
    if let Some(output) = &cli.output {
        overrides.push(("output.type".to_string(), output.as_str().into()));
    }
    LoadOptions {
        path: cli.config.clone(),
        overrides,
        // `vars()` would panic on a variable that is not UTF-8; such a variable cannot be a
        // setting or a `${VAR}` anyway, so it is left out.
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
    }
}

/// `logship positions import`.
fn import_positions(loaded: &Loaded, sources: &[String], dry_run: bool, force: bool) -> ExitCode {
    use logship::import;
    use logship::tail::positions;
    let settings = &loaded.settings;
    let mut parsed = Vec::new();
    for s in sources {
        match s.parse::<import::Source>() {
            Ok(source) => parsed.push(source),
            Err(why) => {
                eprintln!("logship: {why}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let data_dir = &settings.data_dir;
    match positions::load(data_dir) {
        Ok(positions::Loaded::Missing) => {}
        // A dry run writes nothing: it shows what would be imported all the same.
        Ok(positions::Loaded::Table(_)) | Err(_) if !force && !dry_run => {
            eprintln!(
                "logship: {} exists: logship has positions already; --force replaces them.",
                data_dir.join("positions.json").display()
            );
            return ExitCode::FAILURE;
        }
        _ => {}
    }
    let (table, report) = match import::run(&parsed, &settings.tail, false) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("logship: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    for (path, offset, source) in &report.matched {
        println!("{} at {offset} (from {source})", path.display());
    }
    for (source, what, why) in &report.unmatched {
        println!("not imported: {what} (from {source}): {why}");
    }
    println!("{}.", report.summary());
    if dry_run {
        println!("Dry run: nothing written.");
        return ExitCode::SUCCESS;
    }
    let written = std::fs::create_dir_all(data_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| positions::store(data_dir, &table).map_err(|e| e.to_string()));
    match written {
        Ok(()) => {
            println!(
                "Wrote {} ({} files).",
                data_dir.join("positions.json").display(),
                table.files.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("logship: {e}");
            ExitCode::from(EXIT_START)
        }
    }
}

/// `logship dead-letter replay`.
fn replay(loaded: Loaded) -> ExitCode {
    let settings = loaded.settings;
    logship::telemetry::init_logging(&settings.log);
    let Err(es) = logship::sink::LocalOutput::of(&settings.output) else {
        eprintln!("logship: dead letters exist only with output.type = \"elasticsearch\".");
        return ExitCode::from(EXIT_CONFIG);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logship: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    match runtime.block_on(logship::sink::elasticsearch::replay::replay(es)) {
        Ok(report) => {
            println!(
                "Replayed {} files: {} records delivered, {} already present, {} still refused, {} unreadable lines; {} files skipped (in use by a running agent).",
                report.files,
                report.delivered,
                report.already_present,
                report.remaining,
                report.unreadable,
                report.busy
            );
            if report.remaining + report.unreadable + report.busy as u64 == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("logship: dead-letter replay failed: {e}");
            ExitCode::from(EXIT_START)
        }
    }
}

fn run(loaded: Loaded, options: LoadOptions) -> ExitCode {
    logship::telemetry::init_logging(&loaded.settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("logship")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the runtime.");
            return ExitCode::from(EXIT_START);
        }
    };
    runtime.block_on(async move {
        let shutdown = match logship::shutdown::on_signal() {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error = %e, "Cannot install signal handlers.");
                return ExitCode::from(EXIT_START);
            }
        };
        // Before the pipeline starts: from here on SIGHUP reloads instead of ending the process.
        let triggers = match Triggers::start(options.path.as_deref()) {
            Ok(triggers) => triggers,
            Err(e) => {
                tracing::error!(error = %e, "Cannot install the SIGHUP handler.");
                return ExitCode::from(EXIT_START);
            }
        };
        tracing::info!(version = env!("CARGO_PKG_VERSION"), node = %loaded.settings.node_name, "Starting logship.");
        let supervisor = match Supervisor::start(loaded, options).await {
            Ok(supervisor) => supervisor,
            Err(e) => {
                tracing::error!(error = %e, "Cannot start.");
                return ExitCode::from(EXIT_START);
            }
        };
        match supervisor.run(shutdown, triggers).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "No pipeline can run; exiting.");
                ExitCode::from(EXIT_START)
            }
        }
    })
}

/// The one place the binary uses `unsafe`: a measured memory win (benches/elasticsearch.rs,
/// slow_es_1s scenario: peak RSS 53 MiB -> 42 MiB with a 32 MiB buffer).
mod allocator {
    /// glibc's malloc raises its mmap threshold each time an mmapped block is freed, after which
    /// the reader's 256 KiB batch buffers come from the heap instead, and the heap, fragmented by
    /// batches freed in another order than allocated, keeps the memory of the buffer's peak long
    /// after it was given back. A fixed threshold keeps blocks of 128 KiB and more mmapped, so a
    /// freed batch goes back to the kernel at once, and RSS follows the buffer.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    pub fn tune() {
        // SAFETY: mallopt only changes allocator parameters; it is called first thing in main,
        // before any other thread exists. Its result only says whether the value was accepted.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn tune() {}
}
