//! `switchboard-load`: drives a gateway (or any OpenAI-compatible server, for comparison) and
//! reports latency percentiles, throughput, errors and, given the server's pid, its CPU time per
//! request and peak RSS. Closed loop (`--connections` callers back to back) or open loop (`--rate`
//! requests per second on a fixed schedule; latency counts from the scheduled time, so a stalled
//! server cannot hide its queueing). Modes: `http` (POST /v1/chat/completions), `http-stream` (the
//! same with `stream: true`, read to `[DONE]`), `grpc` (ChatService/Complete), `grpc-stream`
//! (ChatService/StreamComplete, to the last chunk). Streams also report time to first chunk, and
//! with `--expect-chunks` every stream that delivered fewer chunks.
//!
//! `--compare URL` measures added latency: rounds alternate between the baseline (`--compare`,
//! e.g. the upstream itself) and the target, so both see the same machine noise; it reports the
//! median of the rounds' medians and the pooled p99 of each, and their difference.

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
    HttpStream,
    Grpc,
    GrpcStream,
}

impl Mode {
    fn streams(self) -> bool {
        matches!(self, Mode::HttpStream | Mode::GrpcStream)
    }
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
    /// Seconds measured (per round with --compare).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run first and not measured (per round with --compare).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// The server's pid: report its CPU time per request and peak RSS (Linux /proc).
    #[arg(long)]
    pid: Option<u32>,
    /// The prompt sent.
    #[arg(long, default_value = "Hello, how are you?")]
    prompt: String,
    /// Baseline URL (same mode, model and key): interleaved rounds against it and the target.
    #[arg(long)]
    compare: Option<String>,
    /// Rounds with --compare.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Streams: chunks each stream must deliver; fewer counts as dropped.
    #[arg(long)]
    expect_chunks: Option<u64>,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Every caller makes exactly one call, all at once, and the run ends when all are done (for
    /// N concurrent streams); --duration and --warmup do not apply.
    #[arg(long)]
    once: bool,
}

#[derive(Clone)]
enum Client {
    Http {
        client: reqwest::Client,
        url: String,
        key: Option<String>,
        body: Arc<Vec<u8>>,
    },
    Grpc(
        Vec<ChatServiceClient<Channel>>,
        Option<String>,
        Arc<pb::ChatRequest>,
    ),
}

/// One call's outcome: chunks received (streams) and when the first arrived.
struct Done {
    chunks: u64,
    first: Option<Duration>,
}

impl Client {
    async fn new(a: &Args, target: &str) -> anyhow::Result<Client> {
        if matches!(a.mode, Mode::Http | Mode::HttpStream) {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut body =
                serde_json::json!({"model": a.model, "messages": [{"role": "user", "content": a.prompt}]});
            if a.mode == Mode::HttpStream {
                body["stream"] = true.into();
            }
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(a.connections)
                .tcp_nodelay(true)
                .build()?;
            return Ok(Client::Http {
                client,
                url: format!("{}/v1/chat/completions", target.trim_end_matches('/')),
                key: a.key.clone(),
                body: Arc::new(serde_json::to_vec(&body)?),
            });
        }
        // A few HTTP/2 connections, calls spread over them (about 100 streams each at most: servers
        // cap concurrent streams per connection).
        let mut clients = Vec::new();
        for _ in 0..a.connections.div_ceil(100).clamp(a.connections.clamp(1, 8), 256) {
            let ch = Channel::from_shared(target.to_string())?
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

    /// One request to completion.
    async fn call(&self, n: usize, stream: bool) -> Result<Done, String> {
        let started = Instant::now();
        match self {
            Client::Http {
                client,
                url,
                key,
                body,
            } => {
                let mut r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone());
                if let Some(k) = key {
                    r = r.bearer_auth(k);
                }
                let mut resp = r.send().await.map_err(|e| e.to_string())?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(format!("HTTP {status}"));
                }
                if !stream {
                    resp.bytes().await.map_err(|e| e.to_string())?;
                    return Ok(Done {
                        chunks: 0,
                        first: None,
                    });
                }
                // Count SSE `data:` events (not `[DONE]`); an event may span reads.
                let (mut chunks, mut first, mut done, mut tail) = (0u64, None, false, Vec::<u8>::new());
                while let Some(bytes) = resp.chunk().await.map_err(|e| e.to_string())? {
                    first.get_or_insert_with(|| started.elapsed());
                    tail.extend_from_slice(&bytes);
                    while let Some(end) = tail.windows(2).position(|w| w == b"\n\n") {
                        let event: Vec<u8> = tail.drain(..end + 2).collect();
                        if event.starts_with(b"data: [DONE]") {
                            done = true;
                        } else if event.starts_with(b"data:") {
                            chunks += 1;
                        }
                    }
                }
                if done {
                    Ok(Done { chunks, first })
                } else {
                    Err("stream ended without [DONE]".into())
                }
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
                    let (mut chunks, mut first) = (0u64, None);
                    while let Some(chunk) = s.message().await.map_err(|e| e.code().to_string())? {
                        first.get_or_insert_with(|| started.elapsed());
                        // The gateway's own final route-only chunk is not an upstream chunk.
                        if !chunk.choices.is_empty() || chunk.usage.is_some() {
                            chunks += 1;
                        }
                    }
                    Ok(Done { chunks, first })
                } else {
                    c.complete(request)
                        .await
                        .map(|_| Done {
                            chunks: 0,
                            first: None,
                        })
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

fn rss_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// What one phase measured.
struct Report {
    hist: Histogram<u64>,
    ttfc: Histogram<u64>,
    ok: u64,
    errors: u64,
    /// Streams that delivered fewer than `--expect-chunks` chunks.
    short_streams: u64,
    chunks: u64,
    elapsed: f64,
    cpu_us_per_request: Option<f64>,
    first_error: Option<String>,
}

struct Totals {
    hist: Mutex<Histogram<u64>>,
    ttfc: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: AtomicU64,
    short_streams: AtomicU64,
    chunks: AtomicU64,
    expect_chunks: Option<u64>,
    first_error: Mutex<Option<String>>,
}

impl Totals {
    fn record(&self, measuring: bool, latency: Duration, result: Result<Done, String>) {
        if !measuring {
            return;
        }
        match result {
            Ok(done) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let _ = self
                    .hist
                    .lock()
                    .unwrap()
                    .record(latency.as_micros().max(1) as u64);
                if let Some(first) = done.first {
                    let _ = self.ttfc.lock().unwrap().record(first.as_micros().max(1) as u64);
                }
                self.chunks.fetch_add(done.chunks, Ordering::Relaxed);
                if self.expect_chunks.is_some_and(|n| done.chunks < n) {
                    self.short_streams.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().unwrap().get_or_insert(e);
            }
        }
    }
}

/// Runs `client` for `warmup` then `duration` seconds and reports what was measured.
async fn phase(a: &Args, client: &Client, pid: Option<u32>) -> Report {
    let totals = Arc::new(Totals {
        hist: Mutex::new(histogram()),
        ttfc: Mutex::new(histogram()),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        short_streams: AtomicU64::new(0),
        chunks: AtomicU64::new(0),
        expect_chunks: a.expect_chunks,
        first_error: Mutex::new(None),
    });
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let stream = a.mode.streams();
    let warm_end = Instant::now() + Duration::from_secs_f64(a.warmup);
    let end = warm_end + Duration::from_secs_f64(a.duration);

    let mut tasks = Vec::new();
    if a.once {
        let cpu0 = pid.and_then(cpu_seconds);
        let started = Instant::now();
        for n in 0..a.connections {
            let (client, totals) = (client.clone(), totals.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = client.call(n, stream).await;
                totals.record(true, t.elapsed(), r);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        measuring.store(false, Ordering::Relaxed);
        return totals.report(started.elapsed().as_secs_f64(), cpu0, pid.and_then(cpu_seconds));
    }
    match a.rate {
        None => {
            for n in 0..a.connections {
                let (client, totals, measuring, stop) =
                    (client.clone(), totals.clone(), measuring.clone(), stop.clone());
                let step = a.connections;
                tasks.push(tokio::spawn(async move {
                    let mut i = n;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let r = client.call(i, stream).await;
                        totals.record(measuring.load(Ordering::Relaxed), t.elapsed(), r);
                        i += step;
                    }
                }));
            }
        }
        Some(rate) => {
            // A fixed pool of callers takes the schedule's slots in turn, with no task or timer
            // per request: slot i is due at start + i/rate. A caller behind schedule sends at once
            // and its latency counts from the slot's due time, so a server that falls behind is
            // charged for the queueing (no coordinated omission), with at most `connections` in
            // flight. A caller ahead of schedule sleeps, and counts from when it woke: the timer's
            // lateness is the generator's, not the server's.
            let start = Instant::now();
            let next = Arc::new(AtomicU64::new(0));
            for _ in 0..a.connections {
                let (client, totals, measuring, stop, next) = (
                    client.clone(),
                    totals.clone(),
                    measuring.clone(),
                    stop.clone(),
                    next.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        let from = if due > Instant::now() {
                            tokio::time::sleep_until(due).await;
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            Instant::now()
                        } else {
                            due
                        };
                        let r = client.call(i as usize, stream).await;
                        totals.record(measuring.load(Ordering::Relaxed), from.elapsed(), r);
                    }
                }));
            }
        }
    }

    tokio::time::sleep_until(warm_end).await;
    let cpu0 = pid.and_then(cpu_seconds);
    measuring.store(true, Ordering::Relaxed);
    let measured_from = Instant::now();
    tokio::time::sleep_until(end).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = measured_from.elapsed().as_secs_f64();
    let cpu1 = pid.and_then(cpu_seconds);
    stop.store(true, Ordering::Relaxed);
    // Long streams in flight finish (and are counted) before the phase ends.
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    totals.report(elapsed, cpu0, cpu1)
}

impl Totals {
    fn report(&self, elapsed: f64, cpu0: Option<f64>, cpu1: Option<f64>) -> Report {
        let ok = self.ok.load(Ordering::Relaxed);
        Report {
            hist: self.hist.lock().unwrap().clone(),
            ttfc: self.ttfc.lock().unwrap().clone(),
            ok,
            errors: self.errors.load(Ordering::Relaxed),
            short_streams: self.short_streams.load(Ordering::Relaxed),
            chunks: self.chunks.load(Ordering::Relaxed),
            elapsed,
            cpu_us_per_request: match (cpu0, cpu1) {
                (Some(c0), Some(c1)) if ok > 0 => Some((c1 - c0) * 1e6 / ok as f64),
                _ => None,
            },
            first_error: self.first_error.lock().unwrap().clone(),
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    let q = |p: f64| h.value_at_quantile(p);
    serde_json::json!({"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99_9": q(0.999), "max": h.max()})
}

fn report_json(a: &Args, r: &Report) -> serde_json::Value {
    let mut v = serde_json::json!({
        "mode": format!("{:?}", a.mode),
        "loop": a.rate.map_or_else(|| format!("closed:{}", a.connections), |r| format!("open:{r}")),
        "ok": r.ok,
        "errors": r.errors,
        "seconds": r.elapsed,
        "rps": r.ok as f64 / r.elapsed.max(1e-9),
        "latency_us": percentiles(&r.hist),
        "first_error": r.first_error,
    });
    if a.mode.streams() {
        v["ttfc_us"] = percentiles(&r.ttfc);
        v["chunks"] = r.chunks.into();
        v["short_streams"] = r.short_streams.into();
    }
    if let Some(pid) = a.pid {
        v["cpu_us_per_request"] = r.cpu_us_per_request.into();
        v["peak_rss_kb"] = rss_kb(pid, "VmHWM:").into();
        v["rss_kb"] = rss_kb(pid, "VmRSS:").into();
    }
    v
}

fn print_text(a: &Args, r: &Report) {
    let loop_kind = match a.rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None => format!("closed loop, {} callers", a.connections),
    };
    println!(
        "mode {:?}, {loop_kind}, {:.1} s measured after {:.1} s warm-up",
        a.mode, r.elapsed, a.warmup
    );
    println!(
        "requests {} ok, {} errors, {:.0} req/s",
        r.ok,
        r.errors,
        r.ok as f64 / r.elapsed.max(1e-9)
    );
    let line = |name: &str, h: &Histogram<u64>| {
        let q = |p: f64| h.value_at_quantile(p);
        println!(
            "{name} us: p50 {} p90 {} p99 {} p99.9 {} max {}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            h.max()
        );
    };
    line("latency", &r.hist);
    if a.mode.streams() {
        line("first chunk", &r.ttfc);
        println!("chunks {} short streams {}", r.chunks, r.short_streams);
    }
    if let (Some(pid), Some(cpu)) = (a.pid, r.cpu_us_per_request) {
        println!(
            "server cpu_us_per_request {cpu:.1} peak_rss_kb {}",
            rss_kb(pid, "VmHWM:").unwrap_or(0)
        );
    }
    if let Some(e) = &r.first_error {
        println!("first error: {e}");
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Interleaved rounds of baseline and target: added latency with shared noise.
async fn compare(a: &Args, baseline_url: &str) -> anyhow::Result<()> {
    let target = Client::new(a, &a.target).await?;
    let baseline = Client::new(a, baseline_url).await?;
    let (mut pooled_t, mut pooled_b) = (histogram(), histogram());
    let (mut ttfc_t, mut ttfc_b) = (histogram(), histogram());
    let (mut medians_t, mut medians_b) = (Vec::new(), Vec::new());
    let (mut ttfc_medians_t, mut ttfc_medians_b) = (Vec::new(), Vec::new());
    let mut errors = 0;
    for _ in 0..a.rounds.max(1) {
        for (client, pooled, ttfc, medians, ttfc_medians) in [
            (
                &baseline,
                &mut pooled_b,
                &mut ttfc_b,
                &mut medians_b,
                &mut ttfc_medians_b,
            ),
            (
                &target,
                &mut pooled_t,
                &mut ttfc_t,
                &mut medians_t,
                &mut ttfc_medians_t,
            ),
        ] {
            let r = phase(a, client, None).await;
            errors += r.errors;
            medians.push(r.hist.value_at_quantile(0.5));
            pooled.add(&r.hist)?;
            if a.mode.streams() {
                ttfc_medians.push(r.ttfc.value_at_quantile(0.5));
                ttfc.add(&r.ttfc)?;
            }
        }
    }
    let (m_t, m_b) = (median(medians_t), median(medians_b));
    let (p99_t, p99_b) = (pooled_t.value_at_quantile(0.99), pooled_b.value_at_quantile(0.99));
    let mut v = serde_json::json!({
        "mode": format!("{:?}", a.mode),
        "rounds": a.rounds,
        "errors": errors,
        "target": {"median_of_round_p50_us": m_t, "pooled": percentiles(&pooled_t)},
        "baseline": {"median_of_round_p50_us": m_b, "pooled": percentiles(&pooled_b)},
        "added_p50_us": m_t as i64 - m_b as i64,
        "added_p99_us": p99_t as i64 - p99_b as i64,
    });
    if a.mode.streams() {
        let (f_t, f_b) = (median(ttfc_medians_t), median(ttfc_medians_b));
        v["added_ttfc_p50_us"] = (f_t as i64 - f_b as i64).into();
        v["target"]["ttfc_median_of_round_p50_us"] = f_t.into();
        v["baseline"]["ttfc_median_of_round_p50_us"] = f_b.into();
    }
    if a.json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(baseline) = a.compare.clone() {
        return compare(&a, &baseline).await;
    }
    let client = Client::new(&a, &a.target).await?;
    let r = phase(&a, &client, a.pid).await;
    if a.json {
        println!("{}", report_json(&a, &r));
    } else {
        print_text(&a, &r);
    }
    Ok(())
}
