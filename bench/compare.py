#!/usr/bin/env python3
"""Side-by-side gateway benchmark: one session, one machine, the same fake upstream for all.

Roles are pinned with taskset: the load generator and the fake upstream share core 0, the proxy
under test runs alone on core 1. Targets, all on the OpenAI HTTP surface (non-streaming chat
unless noted):

  direct      the fake upstream itself (no hop)
  nginx       nginx as a plain reverse proxy (the floor any proxy hop costs)
  switchboard Switchboard, single node (master key)
  cluster     Switchboard with Redis and etcd, a virtual key with a budget and rpm/tpm limits
  rcluster    the same on a three-primary Redis Cluster instead of one Redis (with --redis-cluster)
  litellm     the LiteLLM proxy from PyPI, one worker (skipped with --no-litellm)

Measured per target: closed-loop throughput and server CPU per request (64 callers), the same for
20-chunk streams, added latency at concurrency 1 against `direct` (interleaved rounds: median of
round medians and pooled p99), streaming time-to-first-chunk overhead, the highest open-loop rate
with p99 under 5 ms and under 50 ms and no error, and RSS idle and under load. Then 10,000
concurrent slow streams through one Switchboard replica (peak RSS, streams short of chunks).

For the targets with Redis, the Redis commands per request (from INFO commandstats, every node).

Usage: bench/compare.py [--skip-build] [--no-litellm] [--redis-cluster] [--quick]
Writes bench/results/<UTC time>.md and prints it. Needs: nginx, redis-server, etcd, taskset; for
LiteLLM, python3 -m venv (the script installs litellm 1.109.1 into bench/.litellm-venv).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET_DIR, "release")
MASTER = "sk-bench-master-key-0123456789abcdef"
LITELLM_VERSION = "1.109.1"
CORE_LOAD, CORE_PROXY = "0", "1"
# Requests per second the open-loop generator sustains on the core it shares with the upstream
# (measured against the upstream alone with 64 callers: p99 0.8 ms at 20,000/s, 2.2 ms at 40,000/s).
GENERATOR_CEILING = 40000

procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args, core, log, env=None):
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.Popen(["taskset", "-c", core] + args, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    procs.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_http(url, timeout=90, headers=None):
    end = time.time() + timeout
    while time.time() < end:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up in {timeout} s")


def post(url, body, key):
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def wait_idle(limit=0.5, timeout=30):
    """Waits until the 1-minute load average's recent trend says the machine is quiet."""
    end = time.time() + timeout
    while time.time() < end:
        with open("/proc/loadavg") as f:
            if float(f.read().split()[0]) < limit + 1.0:
                return
        time.sleep(1)


def rss_kb(pid, field="VmRSS:"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def load(url, key, *extra, pid=None):
    args = [os.path.join(BIN, "switchboard-load"), "--target", url, "--json"] + list(extra)
    if key:
        args += ["--key", key]
    if pid:
        args += ["--pid", str(pid)]
    out = subprocess.run(["taskset", "-c", CORE_LOAD] + args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class Target:
    def __init__(self, name, url, key, pid, redis_ports=()):
        self.name, self.url, self.key, self.pid = name, url, key, pid
        self.redis_ports = list(redis_ports)


# Commands a client sends that scripts never call: each is one round trip. (INFO commandstats also
# counts every command a Lua script runs, under that command's own name.) The gateway's only other
# top-level commands, EXISTS/HGET/PTTL of the spend checkpoint, run once a second, not per request.
ROUND_TRIP_COMMANDS = {"evalsha", "eval", "evalsha_ro", "eval_ro", "script", "ping", "scan", "subscribe",
                       "hello", "client"}


def redis_calls(ports):
    """(round trips, commands including those run inside scripts) so far, summed over `ports`."""
    trips = total = 0
    for port in ports:
        out = subprocess.run(["redis-cli", "-p", str(port), "info", "commandstats"], capture_output=True,
                             text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("cmdstat_") and "calls=" in line:
                name = line[len("cmdstat_"):].split(":")[0].split("|")[0]
                calls = int(line.split("calls=")[1].split(",")[0])
                total += calls
                trips += calls if name in ROUND_TRIP_COMMANDS else 0
    return trips, total


def start_redis(log, tmp, cluster):
    """One redis-server, or a three-primary Redis Cluster; returns the node ports."""
    if not cluster:
        port = free_port()
        spawn(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], CORE_LOAD, log)
        return [port]
    ports = [free_port() for _ in range(3)]
    for port in ports:
        d = os.path.join(tmp, f"redis-{port}")
        os.makedirs(d)
        spawn(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d,
               "--cluster-enabled", "yes", "--cluster-port", str(free_port())], CORE_LOAD, log)
    for port in ports:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
                break
            time.sleep(0.1)
    subprocess.run(["redis-cli", "--cluster", "create"] + [f"127.0.0.1:{p}" for p in ports]
                   + ["--cluster-replicas", "0", "--cluster-yes"], capture_output=True, check=True)
    for port in ports:
        for _ in range(200):
            info = subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True).stdout
            if "cluster_state:ok" in info:
                break
            time.sleep(0.1)
    return ports


def measure(t, direct, quick):
    dur = "3" if quick else "8"
    r = {"name": t.name}
    # Idle RSS after one request.
    load(t.url, t.key, "--connections", "1", "--duration", "0.2", "--warmup", "0")
    r["rss_idle_mb"] = rss_kb(t.pid) / 1024 if t.pid else None
    wait_idle()
    closed = load(t.url, t.key, "--connections", "64", "--duration", dur, "--warmup", "1", pid=t.pid)
    r["rps"], r["cpu_us"], r["errors"] = closed["rps"], closed.get("cpu_us_per_request"), closed["errors"]
    if t.redis_ports:
        # A run without warm-up, so that every request Redis served is counted by the load tool.
        before = redis_calls(t.redis_ports)
        run = load(t.url, t.key, "--connections", "64", "--duration", "2", "--warmup", "0")
        after, n = redis_calls(t.redis_ports), max(1, run["ok"] + run["errors"])
        r["redis_per_request"] = ((after[0] - before[0]) / n, (after[1] - before[1]) / n)
    r["rss_load_mb"] = (closed.get("peak_rss_kb") or 0) / 1024 if t.pid else None
    stream = load(
        t.url, t.key, "--mode", "http-stream", "--connections", "64", "--duration", dur, "--warmup", "1",
        "--expect-chunks", "20", pid=t.pid,
    )
    r["stream_rps"], r["stream_cpu_us"] = stream["rps"], stream.get("cpu_us_per_request")
    r["stream_errors"] = stream["errors"] + stream.get("short_streams", 0)
    if t.name in ("switchboard", "cluster", "rcluster"):
        g = load(t.url, t.key, "--mode", "grpc", "--connections", "64", "--duration", dur, "--warmup", "1", pid=t.pid)
        gs = load(t.url, t.key, "--mode", "grpc-stream", "--connections", "64", "--duration", dur, "--warmup", "1",
                  "--expect-chunks", "20", pid=t.pid)
        r["grpc"] = {"rps": g["rps"], "cpu_us": g.get("cpu_us_per_request"), "p99_us": g["latency_us"]["p99"],
                     "stream_rps": gs["rps"], "stream_cpu_us": gs.get("cpu_us_per_request"),
                     "errors": g["errors"] + gs["errors"] + gs.get("short_streams", 0)}
    if t.name != "direct":
        rounds = "3" if quick else "5"
        c = load(t.url, t.key, "--compare", direct.url, "--connections", "1", "--rounds", rounds,
                 "--duration", "2", "--warmup", "0.5")
        r["added_p50_us"], r["added_p99_us"] = c["added_p50_us"], c["added_p99_us"]
        r["p50_us"] = c["target"]["median_of_round_p50_us"]
        r["p99_us"] = c["target"]["pooled"]["p99"]
        cs = load(t.url, t.key, "--compare", direct.url, "--mode", "http-stream", "--connections", "1",
                  "--rounds", rounds, "--duration", "2", "--warmup", "0.5")
        r["added_ttfc_us"] = cs["added_ttfc_p50_us"]
    else:
        c = load(t.url, t.key, "--connections", "1", "--duration", "5", "--warmup", "0.5")
        r["p50_us"], r["p99_us"] = c["latency_us"]["p50"], c["latency_us"]["p99"]
    # Highest open-loop rate with p99 under each bound and no error. The generator shares core 0
    # with the upstream and cannot drive much more than GENERATOR_CEILING: rates are capped there.
    best = {5000: 0, 50000: 0}
    fracs = [0.3, 0.6, 0.9] if quick else [0.2, 0.4, 0.6, 0.75, 0.9, 1.0]
    rates = sorted({min(GENERATOR_CEILING, max(1.0, round(closed["rps"] * f))) for f in fracs})
    for rate in rates:
        o = load(t.url, t.key, "--rate", f"{rate:.0f}", "--connections", "64", "--duration", "3",
                 "--warmup", "0.5")
        for bound in best:
            if o["errors"] == 0 and o["latency_us"]["p99"] <= bound:
                best[bound] = max(best[bound], o["rps"])
    r["max_rps_p99_5ms"], r["max_rps_p99_50ms"] = best[5000], best[50000]
    return r


def many_streams(sb_bin, upstream_bin, quick, tmp, log):
    """10,000 concurrent slow streams through one replica: peak RSS and short streams. Over gRPC, so
    the callers' side is multiplexed on a few connections: 10,000 HTTP/1.1 connections on each side
    would not fit the 20,000 descriptors a process may open on this machine type."""
    n = 2000 if quick else 10000
    up = free_port()
    spawn([upstream_bin, "--listen", f"127.0.0.1:{up}", "--chunks", "20", "--chunk-delay-ms", "250"], CORE_LOAD, log)
    cfg = os.path.join(tmp, "streams.yaml")
    with open(cfg, "w") as f:
        f.write(f"model_list:\n  - model_name: smart\n    litellm_params: {{model: openai/gpt-4o-mini, "
                f"api_base: \"http://127.0.0.1:{up}/v1\", api_key: k}}\n"
                f"router_settings: {{stream_idle_timeout: 30}}\n")
    port = free_port()
    gw = spawn([sb_bin, "serve", "--config", cfg, "--listen", f"127.0.0.1:{port}"], CORE_PROXY, log,
               {"RUST_LOG": "warn"})
    wait_http(f"http://127.0.0.1:{port}/health/readiness")
    r = load(f"http://127.0.0.1:{port}", None, "--mode", "grpc-stream", "--connections", str(n), "--once",
             "--expect-chunks", "20", pid=gw.pid)
    stop(gw)
    return {"streams": n, "ok": r["ok"], "errors": r["errors"], "short": r["short_streams"],
            "peak_rss_mb": r["peak_rss_kb"] / 1024, "chunks": r["chunks"], "seconds": r["seconds"],
            "first_error": r["first_error"]}


def litellm_bin():
    venv = os.path.join(ROOT, "bench", ".litellm-venv")
    exe = os.path.join(venv, "bin", "litellm")
    if os.path.exists(exe):
        return exe
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = os.path.join(venv, "bin", "pip")
    subprocess.run([pip, "install", "-q", "uv"], check=True)
    # 1.109.1 pins certifi and litellm-proxy-extras releases the registry here does not serve.
    overrides = os.path.join(venv, "overrides.txt")
    with open(overrides, "w") as f:
        f.write("certifi>=2024.1.1\nlitellm-proxy-extras>=0.4.0\n")
    subprocess.run([os.path.join(venv, "bin", "uv"), "pip", "install", "--python", os.path.join(venv, "bin", "python"),
                    "--override", overrides, f"litellm[proxy]=={LITELLM_VERSION}", "opentelemetry-sdk"], check=True)
    return exe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams-only", action="store_true", help="only the concurrent-streams run")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--redis-cluster", action="store_true", help="also measure Switchboard on a Redis Cluster")
    ap.add_argument("--quick", action="store_true", help="shorter runs (for trying the script)")
    a = ap.parse_args()
    for tool in ["taskset", "nginx", "redis-server", "etcd"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install nginx redis-server etcd-server util-linux")
    if not a.skip_build:
        subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="sb-bench-")
    log = open(os.path.join(tmp, "processes.log"), "w")
    sb_bin, upstream_bin = os.path.join(BIN, "switchboard"), os.path.join(BIN, "fake-upstream")
    results, targets = [], []
    try:
        if a.streams_only:
            print(json.dumps(many_streams(sb_bin, upstream_bin, a.quick, tmp, log)))
            return
        up = free_port()
        spawn([upstream_bin, "--listen", f"127.0.0.1:{up}", "--chunks", "20"], CORE_LOAD, log)
        upstream = f"http://127.0.0.1:{up}"
        wait_http(f"{upstream}/v1/models")
        direct = Target("direct", upstream, None, None)
        targets.append(direct)

        nport = free_port()
        nconf = os.path.join(tmp, "nginx.conf")
        with open(nconf, "w") as f:
            # One process (no master), so its CPU time is the proxy's.
            f.write(f"""master_process off; worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 20000; }}
http {{ access_log off;
  upstream up {{ server 127.0.0.1:{up}; keepalive 128; }}
  server {{ listen 127.0.0.1:{nport};
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
                  proxy_buffering off; }} }} }}
""")
        ng = spawn(["nginx", "-c", nconf, "-p", tmp], CORE_PROXY, log)
        wait_http(f"http://127.0.0.1:{nport}/v1/models")
        targets.append(Target("nginx", f"http://127.0.0.1:{nport}", None, ng.pid))

        dep = (f"model_list:\n  - model_name: smart\n    litellm_params: {{model: openai/gpt-4o-mini, "
               f"api_base: \"{upstream}/v1\", api_key: sk-upstream, input_cost_per_token: 0.00000015, "
               f"output_cost_per_token: 0.0000006}}\n")
        single_cfg = os.path.join(tmp, "single.yaml")
        with open(single_cfg, "w") as f:
            f.write(dep + f"general_settings: {{master_key: {MASTER}}}\n")
        sport = free_port()
        sb = spawn([sb_bin, "serve", "--config", single_cfg, "--listen", f"127.0.0.1:{sport}"], CORE_PROXY, log,
                   {"RUST_LOG": "warn"})
        wait_http(f"http://127.0.0.1:{sport}/health/readiness")
        targets.append(Target("switchboard", f"http://127.0.0.1:{sport}", MASTER, sb.pid))

        rports = start_redis(log, tmp, cluster=False)
        eport, epeer = free_port(), free_port()
        spawn(["etcd", "--data-dir", os.path.join(tmp, "etcd"), "--listen-client-urls", f"http://127.0.0.1:{eport}",
               "--advertise-client-urls", f"http://127.0.0.1:{eport}", "--listen-peer-urls",
               f"http://127.0.0.1:{epeer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{epeer}",
               "--initial-cluster", f"default=http://127.0.0.1:{epeer}"], CORE_LOAD, log)
        fleets = [("cluster", rports)]
        if a.redis_cluster:
            fleets.append(("rcluster", start_redis(log, tmp, cluster=True)))
        for name, ports in fleets:
            # Each fleet target has its own etcd prefix, so their keys and leaders never mix.
            cfg = os.path.join(tmp, f"{name}.yaml")
            urls = ",".join(f"redis://127.0.0.1:{p}" for p in ports)
            with open(cfg, "w") as f:
                f.write(dep + f"router_settings: {{redis_url: \"{urls}\", redis_cluster: {str(name == 'rcluster').lower()}}}\n"
                        f"general_settings: {{master_key: {MASTER}, etcd_endpoints: \"127.0.0.1:{eport}\", "
                        f"etcd_prefix: /{name}}}\n")
            cport = free_port()
            cl = spawn([sb_bin, "serve", "--config", cfg, "--listen", f"127.0.0.1:{cport}"], CORE_PROXY, log,
                       {"RUST_LOG": "warn"})
            wait_http(f"http://127.0.0.1:{cport}/health/readiness", timeout=60)
            key = post(f"http://127.0.0.1:{cport}/key/generate",
                       {"max_budget": 1000000, "rpm_limit": 100000000, "tpm_limit": 10000000000}, MASTER)["key"]
            targets.append(Target(name, f"http://127.0.0.1:{cport}", key, cl.pid, ports))

        if not a.no_litellm:
            lcfg = os.path.join(tmp, "litellm.yaml")
            with open(lcfg, "w") as f:
                f.write(dep + f"general_settings: {{master_key: {MASTER}}}\n")
            lport = free_port()
            ll = spawn([litellm_bin(), "--config", lcfg, "--host", "127.0.0.1", "--port", str(lport),
                        "--num_workers", "1"], CORE_PROXY, log, {"LITELLM_TELEMETRY": "False"})
            wait_http(f"http://127.0.0.1:{lport}/health/liveliness", timeout=120)
            targets.append(Target("litellm", f"http://127.0.0.1:{lport}", MASTER, ll.pid))

        for t in targets:
            print(f"measuring {t.name} ...", file=sys.stderr, flush=True)
            results.append(measure(t, direct, a.quick))
            if t.pid and t.name != "switchboard":
                pass
        print("measuring 10,000 concurrent streams ...", file=sys.stderr, flush=True)
        streams = many_streams(sb_bin, upstream_bin, a.quick, tmp, log)
    finally:
        for p in reversed(procs):
            stop(p)
    write_report(results, streams, a)


def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def write_report(results, streams, a):
    now = datetime.now(timezone.utc)
    by = {r["name"]: r for r in results}
    lines = [
        f"# Gateway comparison, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores; load generator and fake upstream pinned to core {CORE_LOAD}, the proxy "
        f"under test to core {CORE_PROXY}. OpenAI-compatible HTTP, non-streaming chat unless noted; streams are "
        "20 SSE chunks. CPU is the proxy's user+system time per request. Command: `bench/compare.py"
        + (" --quick" if a.quick else "") + "`.",
        "",
        "| target | req/s (64 callers) | CPU us/req | stream CPU us | p50 us (c=1) | p99 us (c=1) | added p50 us | "
        "added p99 us | added TTFC us | max req/s p99<5ms | max req/s p99<50ms | RSS idle MB | RSS load MB | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append("| " + " | ".join([
            r["name"], fmt(r["rps"]), fmt(r["cpu_us"], 1), fmt(r["stream_cpu_us"], 1), fmt(r["p50_us"]),
            fmt(r["p99_us"]), fmt(r.get("added_p50_us")), fmt(r.get("added_p99_us")), fmt(r.get("added_ttfc_us")),
            fmt(r["max_rps_p99_5ms"]), fmt(r["max_rps_p99_50ms"]), fmt(r["rss_idle_mb"], 1),
            fmt(r["rss_load_mb"], 1), str(r["errors"] + r["stream_errors"]),
        ]) + " |")
    lines.append("")
    lines.append(f"- Open-loop rates are capped at {GENERATOR_CEILING:,}/s, about what the generator can drive from the "
                 "core it shares with the upstream: a target at that figure was not the limit.")
    sb, ng = by.get("switchboard"), by.get("nginx")
    if sb and ng and sb["cpu_us"] and ng["cpu_us"]:
        lines.append(f"- Switchboard single node / nginx CPU per request: {sb['cpu_us'] / ng['cpu_us']:.2f}x; "
                     f"throughput {sb['rps'] / ng['rps']:.2f}x of nginx's.")
    for name in ("cluster", "rcluster"):
        if by.get(name, {}).get("redis_per_request") is not None:
            trips, total = by[name]["redis_per_request"]
            lines.append(f"- {name}: {trips:.2f} Redis round trips per request, {total:.1f} commands run including "
                         "those inside the Lua scripts (INFO commandstats on every node over a 2 s closed-loop run, "
                         "64 callers; budgets and rpm/tpm limits on).")
    cl, rc = by.get("cluster"), by.get("rcluster")
    if cl and rc and cl["cpu_us"] and rc["cpu_us"]:
        lines.append(f"- Redis Cluster / one Redis: CPU per request {rc['cpu_us'] / cl['cpu_us']:.2f}x, added p50 "
                     f"{fmt(rc.get('added_p50_us'))} vs {fmt(cl.get('added_p50_us'))} us, added p99 "
                     f"{fmt(rc.get('added_p99_us'))} vs {fmt(cl.get('added_p99_us'))} us.")
    for name in ("switchboard", "cluster", "rcluster"):
        g = by.get(name, {}).get("grpc")
        if g:
            lines.append(f"- {name} over gRPC (64 callers): unary {fmt(g['rps'])} req/s at {fmt(g['cpu_us'], 1)} us CPU "
                         f"per request; 20-chunk streams {fmt(g['stream_rps'])}/s at {fmt(g['stream_cpu_us'], 1)} us "
                         f"CPU per stream; {g['errors']} errors.")
    if sb and "litellm" in by and by["litellm"]["rps"]:
        lines.append(f"- Switchboard / LiteLLM throughput on the same core: {sb['rps'] / by['litellm']['rps']:.0f}x.")
    lines.append(f"- {streams['streams']:,} concurrent gRPC streams (20 chunks, 250 ms apart) through one replica: "
                 f"{streams['ok']:,} completed in {streams['seconds']:.1f} s (5 s each), {streams['errors']} errors, "
                 f"{streams['short']} short of chunks, {streams['chunks']:,} chunks, peak RSS "
                 f"{streams['peak_rss_mb']:.0f} MB" + (f"; first error: {streams['first_error']}" if streams['first_error'] else "") + ".")
    text = "\n".join(lines) + "\n"
    out_dir = os.path.join(ROOT, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{now:%Y-%m-%dT%H%M}.md")
    with open(path, "w") as f:
        f.write(text)
    print(text)
    print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
