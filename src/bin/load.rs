//! `switchboard-load`: drives a gateway (or any OpenAI-compatible server, for comparison) and
//! reports latency percentiles, throughput, errors and, given the server's pid, its CPU time per
//! request and peak RSS. Closed loop (`--connections` callers back to back) or open loop (`--rate`
//! requests per second on a fixed schedule; latency counts from the scheduled time, so a stalled
//! server cannot hide its queueing). Modes: `http` (POST /v1/chat/completions), `grpc`
//! (ChatService/Complete), `grpc-stream` (ChatService/StreamComplete, to the last chunk).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use switchboard::proto::{self as pb, chat_service_client::ChatServiceClient};
use tokio::time::Instant;
use tonic::transport::Channel;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Mode {
    Http,
    Grpc,
    GrpcStream,
}

#[derive(Parser, Clone)]
#[command(
    name = "switchboard-load",
    about = "Load generator for Switchboard and OpenAI-compatible servers"
)]
struct Args {
    /// Base URL, e.g. http://127.0.0.1:4000
    #[arg(long, default_value = "http://127.0.0.1:4000")]
    target: String,
    #[arg(long, value_enum, default_value = "http")]
    mode: Mode,
    #[arg(long, default_value = "smart")]
    model: String,
    /// Bearer key.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Concurrent callers (closed loop), or the most requests in flight (open loop).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Open loop: requests per second on a fixed schedule. Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run first and not measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// The server's pid: report its CPU time per request and peak RSS (Linux /proc).
    #[arg(long)]
    pid: Option<u32>,
    /// The prompt sent.
    #[arg(long, default_value = "Hello, how are you?")]
    prompt: String,
}

#[derive(Clone)]
enum Client {
    Http(reqwest::Client, String, Option<String>, Arc<Vec<u8>>),
    Grpc(
        Vec<ChatServiceClient<Channel>>,
        Option<String>,
        Arc<pb::ChatRequest>,
    ),
}

impl Client {
    async fn new(a: &Args) -> anyhow::Result<Client> {
        if a.mode == Mode::Http {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let body =
                serde_json::json!({"model": a.model, "messages": [{"role": "user", "content": a.prompt}]});
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(a.connections)
                .tcp_nodelay(true)
                .build()?;
            let url = format!("{}/v1/chat/completions", a.target.trim_end_matches('/'));
            return Ok(Client::Http(
                client,
                url,
                a.key.clone(),
                Arc::new(serde_json::to_vec(&body)?),
            ));
        }
        // A few HTTP/2 connections, calls spread over them.
        let mut clients = Vec::new();
        for _ in 0..a.connections.clamp(1, 8) {
            let ch = Channel::from_shared(a.target.clone())?
                .tcp_nodelay(true)
                .connect()
                .await?;
            clients.push(ChatServiceClient::new(ch));
        }
        let req = pb::ChatRequest {
            model: a.model.clone(),
            messages: vec![pb::Message {
                role: pb::Role::User as i32,
                content: a.prompt.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        Ok(Client::Grpc(clients, a.key.clone(), Arc::new(req)))
    }

    /// One request to completion; Ok(()) on success.
    async fn call(&self, n: usize, stream: bool) -> Result<(), String> {
        match self {
            Client::Http(c, url, key, body) => {
                let mut r = c
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone());
                if let Some(k) = key {
                    r = r.bearer_auth(k);
                }
                let resp = r.send().await.map_err(|e| e.to_string())?;
                let ok = resp.status().is_success();
                let status = resp.status();
                resp.bytes().await.map_err(|e| e.to_string())?;
                if ok { Ok(()) } else { Err(format!("HTTP {status}")) }
            }
            Client::Grpc(clients, key, req) => {
                let mut c = clients[n % clients.len()].clone();
                let mut request = tonic::Request::new(pb::ChatRequest::clone(req));
                if let Some(k) = key {
                    request.metadata_mut().insert(
                        "authorization",
                        format!("Bearer {k}").parse().map_err(|_| "bad key")?,
                    );
                }
                if stream {
                    let mut s = c
                        .stream_complete(request)
                        .await
                        .map_err(|e| e.code().to_string())?
                        .into_inner();
                    while s.message().await.map_err(|e| e.code().to_string())?.is_some() {}
                    Ok(())
                } else {
                    c.complete(request)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.code().to_string())
                }
            }
        }
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

struct Totals {
    hist: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Totals {
    fn record(&self, measuring: bool, latency: Duration, result: Result<(), String>) {
        if !measuring {
            return;
        }
        match result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let us = latency.as_micros().max(1) as u64;
                let _ = self.hist.lock().unwrap().record(us);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().unwrap().get_or_insert(e);
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let client = Client::new(&a).await?;
    let totals = Arc::new(Totals {
        hist: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let stream = a.mode == Mode::GrpcStream;
    let start = Instant::now();
    let warm_end = start + Duration::from_secs_f64(a.warmup);
    let end = warm_end + Duration::from_secs_f64(a.duration);

    let mut tasks = Vec::new();
    match a.rate {
        None => {
            for n in 0..a.connections {
                let (client, totals, measuring, stop) =
                    (client.clone(), totals.clone(), measuring.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let mut i = n;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let r = client.call(i, stream).await;
                        totals.record(measuring.load(Ordering::Relaxed), t.elapsed(), r);
                        i += a.connections;
                    }
                }));
            }
        }
        Some(rate) => {
            let (client, totals, measuring, stop) =
                (client.clone(), totals.clone(), measuring.clone(), stop.clone());
            let limit = Arc::new(tokio::sync::Semaphore::new(a.connections));
            tasks.push(tokio::spawn(async move {
                let interval = Duration::from_secs_f64(1.0 / rate);
                let mut due = Instant::now();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep_until(due).await;
                    let scheduled = due;
                    due += interval;
                    i += 1;
                    let Ok(permit) = limit.clone().acquire_owned().await else {
                        break;
                    };
                    let (client, totals, measuring) = (client.clone(), totals.clone(), measuring.clone());
                    tokio::spawn(async move {
                        let r = client.call(i, stream).await;
                        // From the scheduled time: queueing behind a slow server counts.
                        totals.record(measuring.load(Ordering::Relaxed), scheduled.elapsed(), r);
                        drop(permit);
                    });
                }
            }));
        }
    }

    tokio::time::sleep_until(warm_end).await;
    let cpu0 = a.pid.and_then(cpu_seconds);
    measuring.store(true, Ordering::Relaxed);
    let measured_from = Instant::now();
    tokio::time::sleep_until(end).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = measured_from.elapsed().as_secs_f64();
    let cpu1 = a.pid.and_then(cpu_seconds);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }

    let h = totals.hist.lock().unwrap().clone();
    let ok = totals.ok.load(Ordering::Relaxed);
    let errors = totals.errors.load(Ordering::Relaxed);
    let loop_kind = match a.rate {
        Some(r) => format!("open loop at {r} req/s"),
        None => format!("closed loop, {} callers", a.connections),
    };
    println!(
        "mode {:?}, {loop_kind}, {:.1} s measured after {:.1} s warm-up",
        a.mode, elapsed, a.warmup
    );
    println!(
        "requests {ok} ok, {errors} errors, {:.0} req/s",
        ok as f64 / elapsed
    );
    let q = |p: f64| h.value_at_quantile(p);
    println!(
        "latency us: p50 {} p90 {} p99 {} p99.9 {} max {}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        h.max()
    );
    if let (Some(pid), Some(c0), Some(c1)) = (a.pid, cpu0, cpu1)
        && ok > 0
    {
        println!(
            "server cpu_us_per_request {:.1} peak_rss_kb {}",
            (c1 - c0) * 1e6 / ok as f64,
            peak_rss_kb(pid).unwrap_or(0)
        );
    }
    if let Some(e) = totals.first_error.lock().unwrap().clone() {
        println!("first error: {e}");
    }
    Ok(())
}
