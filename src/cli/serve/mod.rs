//! `chatglm serve`: an OpenAI-compatible HTTP server.
//!
//! The HTTP stack is axum on tokio and hyper: hyper is the most used and most audited HTTP
//! implementation in Rust, tokio its runtime, and axum a thin, well-kept router over both
//! (by the tokio team) with streaming bodies for Server-Sent Events and a body-size limit;
//! built with HTTP/1 only and no TLS (put a reverse proxy in front for either). The async
//! side only parses, queues and streams: generation runs on one dedicated scheduler thread
//! that advances every slot together ([`slots`]), never on the executor.
//!
//! Files: [`routes`] (endpoints, key check, log), [`types`] (the OpenAI request bodies),
//! [`prompt`] (a request to prompt ids and settings, per family), [`tools`] (tool-call
//! formats), [`stop`] (stop sequences), [`slots`] (slots, queue, workers), [`error`] (error
//! objects).

pub mod error;
pub mod prompt;
pub mod routes;
pub mod slots;
pub mod stop;
pub mod tools;
pub mod types;

use super::common::open_engine;
use super::CliError;
use chatglm::model::{KvCache, KvType};
use chatglm::{Session, SessionOptions};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long in-flight requests may go on after SIGTERM/SIGINT before they are cancelled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Arguments of `chatglm serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The GGUF model file.
    #[arg(short, long, value_name = "FILE")]
    model: PathBuf,
    /// Address to listen on (loopback by default; any other needs thought, see --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests served at once, each in its own slot (a KV cache of -c positions each).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallel: u16,
    /// Requests that may wait for a slot; past that the server answers 503
    /// [default: 4 x --parallel].
    #[arg(long, value_name = "N")]
    queue: Option<usize>,
    /// Context of each slot, in tokens [default: 2048, at most the model's].
    #[arg(
        short = 'c',
        long = "ctx-size",
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true
    )]
    ctx_size: usize,
    /// Threads of the matrix products (all slots are advanced together on them) [default:
    /// one per core].
    #[arg(
        short = 't',
        long,
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true
    )]
    threads: usize,
    /// Prompt tokens per pass over the weights; also the most prompt tokens a request reads
    /// between two decode steps of the others.
    #[arg(short = 'b', long = "batch", value_name = "N", default_value_t = chatglm::model::DEFAULT_BATCH)]
    batch: usize,
    /// How the generating slots advance: `batched` (one pass over the weights per step for
    /// all of them) or `one-by-one` (a pass each; for measuring what batching gains).
    #[arg(long, value_name = "HOW", default_value = "batched", hide = true)]
    decode: DecodeArg,
    /// Every request (but /health) must send `Authorization: Bearer KEY`.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Read the whole model file into memory instead of mapping it.
    #[arg(long)]
    no_mmap: bool,
}

/// `--decode`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DecodeArg {
    /// One pass over the weights per step for all generating slots.
    Batched,
    /// A pass per slot.
    OneByOne,
}

/// Runs `chatglm serve` until SIGTERM or SIGINT.
pub fn run(args: &ServeArgs) -> Result<(), CliError> {
    if args.api_key.as_deref().is_some_and(str::is_empty) {
        return Err(CliError::Input("--api-key must not be empty".into()));
    }
    let engine = Arc::new(open_engine(&args.model, args.no_mmap)?);
    let slots = usize::from(args.parallel);
    let threads = chatglm::resolve_threads(args.threads);
    let options = SessionOptions {
        context: args.ctx_size,
        threads,
        batch: args.batch.max(1),
        ..SessionOptions::default()
    };
    let sessions = (0..slots)
        .map(|_| Session::new(Arc::clone(&engine), options))
        .collect::<Result<Vec<_>, _>>()?;
    let context = sessions[0].context();
    let config = engine.config();
    let kv_bytes = KvCache::bytes_for(
        KvType::F16,
        config.num_layers,
        context,
        config.num_kv_groups,
        config.head_dim,
    )
    .unwrap_or(0);
    eprintln!(
        "chatglm serve: {} ({}), {slots} slot(s) of {context} tokens, {threads} thread(s), \
         {} decode; KV caches {:.1} MiB ({:.1} MiB per slot)",
        engine.path().display(),
        engine.tokenizer().family(),
        match args.decode {
            DecodeArg::Batched => "batched",
            DecodeArg::OneByOne => "one-by-one",
        },
        (kv_bytes * slots) as f64 / (1 << 20) as f64,
        kv_bytes as f64 / (1 << 20) as f64,
    );
    let queue = args.queue.unwrap_or(4 * slots);
    let scheduler = Arc::new(slots::Scheduler::new(slots, queue));
    let batch = Session::new_decode_batch(&engine, slots, threads)?;
    let decode = match args.decode {
        DecodeArg::Batched => slots::Decode::Batched,
        DecodeArg::OneByOne => slots::Decode::OneByOne,
    };
    let worker = slots::spawn_scheduler(sessions, batch, args.batch.max(1), decode, &scheduler)?;

    let model_id = engine
        .path()
        .file_stem()
        .map_or("chatglm".into(), |s| s.to_string_lossy().into_owned());
    let app = Arc::new(routes::App {
        engine,
        scheduler: Arc::clone(&scheduler),
        context,
        model_id,
        api_key: args.api_key.clone(),
        next_id: Default::default(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    if !args.host.is_loopback() && args.api_key.is_none() {
        eprintln!(
            "chatglm serve: warning: listening on {} without --api-key: anyone who can reach \
             this address can use the model",
            args.host
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(serve(
        SocketAddr::new(args.host, args.port),
        app,
        &scheduler,
    ))?;
    // In-flight requests are done or cancelled; the scheduler finishes the queue's cancelled
    // jobs.
    scheduler.close();
    let _ = worker.join();
    Ok(())
}

/// Serves until a signal, then stops accepting, lets in-flight requests finish for
/// [`SHUTDOWN_GRACE`], cancels the rest and returns.
async fn serve(
    addr: SocketAddr,
    app: Arc<routes::App>,
    scheduler: &Arc<slots::Scheduler>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "chatglm serve: listening on http://{}",
        listener.local_addr()?
    );
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        wait_for_signal().await;
        eprintln!("chatglm serve: shutting down");
        let _ = signalled_tx.send(());
    };
    let server = axum::serve(listener, routes::router(app)).with_graceful_shutdown(shutdown);
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        _ = async {
            let _ = signalled_rx.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {}
    }
    // The grace period is over: cancel generations, give their streams a moment to end.
    scheduler.cancel_all();
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
