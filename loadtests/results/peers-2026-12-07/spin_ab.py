"""A/B: ours default vs ours with spinning ORT threads vs FastAPI+ORT, c=1 and c=16, interleaved."""

import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from loadtests.bench import bench_models, peer_servers, suite
from loadtests.bench.bench_models import CLASSIFIER
from loadtests.bench.load_generator import run_load
from loadtests.server_process import private_home, start_server

ROOT = Path(__file__).resolve().parents[3]
rounds, seconds = int(sys.argv[1]), float(sys.argv[2])
work = ROOT / ".cache/bench/spin-ab"
logs = work / "logs"
logs.mkdir(parents=True, exist_ok=True)
home = private_home(suite.DEFAULT_HOME, ROOT / ".cache/bench/home-spin-ab")
fp32 = CLASSIFIER.name
model_dir = Path(bench_models.stored(home)[fp32]["path"])
texts = work / "texts.json"
texts.write_text(json.dumps(suite.corpus_sentences()[:256]))
variants = (
    json.loads(sys.argv[3])
    if len(sys.argv) > 3
    else {"default": {}, "spin": {"ORT_ALLOW_SPINNING": "true"}}
)
servers, sides = [], []
try:
    for name, env in variants.items():
        s = start_server(
            home,
            logs / f"{name}.log",
            extra_env={"NLP_MODELS_SERVE": fp32, **suite.SERVER_ENV, **env},
        )
        servers.append(s)
        sides.append((name, s.url, None, fp32, s.process.pid))
    peer = next(p for p in peer_servers.PEERS if p.name == "fastapi-ort")
    peer_servers.ensure_venv(peer)
    p = peer_servers.start_peer(peer, model_dir, logs / "peer.log")
    servers.append(p)
    sides.append(("fastapi-ort", p.url, p.prefix, None, p.process.pid))
    for _, url, prefix, model, _ in sides:
        run_load("http", url, texts, 4, 1.0, "/classify", model, prefix)
    res = {}
    for r in range(rounds):
        shift = r % len(sides)
        for name, url, prefix, model, pid in sides[shift:] + sides[:shift]:
            for c in (1, 16):
                cpu0 = suite.process_tree_cpu(pid)
                got = run_load("http", url, texts, c, seconds, "/classify", model, prefix)
                s = suite.summarize_load(got, suite.process_tree_cpu(pid) - cpu0)
                res.setdefault((name, c), []).append(s)
                print(name, c, round(s["throughput"], 1), round(s["p50_ms"], 2), flush=True)
finally:
    for s in servers:
        s.stop()
print("---", os.getloadavg())
for (name, c), v in sorted(res.items()):
    rate = statistics.median(x["throughput"] for x in v)
    p50 = statistics.median(x["p50_ms"] for x in v)
    cpu = statistics.median(x["server_cpu_s"] / max(x["requests"], 1) * 1000 for x in v)
    print(f"{name:12} c={c:<3} req/s {rate:7.1f}  p50 {p50:6.2f} ms  cpu/req {cpu:6.1f}")
