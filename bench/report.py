"""The report of bench/run.sh: one table per case (medians over the interleaved rounds), the
Engine/nginx ratios, and issue 11's targets with the measured value and met / not met.
A row is valid only if every round had no non-2xx answer and no socket error; an invalid row is
flagged, and so is any target that uses it.
Usage: report.py RESULTS IDLE PROCESSES CONNS DURATION NPROC ELAPSED UPSTREAM-NOTE"""
import json
import statistics
import sys

results, idle_path, procs_path, conns, dur, nproc, elapsed, upstream_note = sys.argv[1:9]

runs, probes = {}, {}
for line in open(results):
    parts = line.split(None, 2)
    if not parts:
        continue
    if parts[0].startswith("probe:"):
        probes.setdefault(parts[0], []).append(json.loads(parts[2]))
        continue
    f = line.split()
    key, rnd, rps, p50, p99, bad, sock, cpu, total = f[:9]
    ins_u, ins_k = (int(f[9]), int(f[10])) if len(f) > 10 else (-1, -1)
    runs.setdefault(key, []).append({"rps": float(rps), "p50": float(p50), "p99": float(p99), "bad": int(bad),
                                     "sock": int(sock), "cpu": float(cpu), "total": int(total),
                                     "ins_u": ins_u, "ins_k": ins_k})


def row(key):
    rs = runs[key]
    m = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99", "cpu", "ins_u", "ins_k")}
    m["bad"] = sum(r["bad"] for r in rs)
    m["sock"] = sum(r["sock"] for r in rs)
    m["valid"] = m["bad"] == 0 and m["sock"] == 0
    m["rounds"] = rs
    return m


R = {k: row(k) for k in runs}
rounds = max(len(v) for v in runs.values())
NAMES = {"nginx": "nginx", "haproxy": "haproxy", "eng-off": "Engine, cache off",
         "eng-on": "Engine, cache on", "eng1-on": "Engine workers: 1, cache on (in-process store)",
         "direct": "direct (upstream nginx)"}
out = []
p = out.append


def ratio(a, b):
    return a / b if b else float("nan")


def table(title, rows):
    """rows: (key, label, reference key or None)."""
    p(f"\n## {title}\n")
    p("| target | req/s | p50 ms | p99 ms | non-2xx | CPU µs/req | req/s vs nginx | CPU vs nginx |")
    p("|---|---|---|---|---|---|---|---|")
    for key, label, ref in rows:
        x = R[key]
        flag = "" if x["valid"] else f" ⚠ INVALID ({x['sock']} socket errors)" if x["bad"] == 0 else " ⚠ INVALID"
        vs = f"{ratio(x['rps'], R[ref]['rps']):.2f}×" if ref else "—"
        cvs = f"{ratio(x['cpu'], R[ref]['cpu']):.2f}×" if ref else "—"
        p(f"| {label}{flag} | {x['rps']:.0f} | {x['p50']:.3f} | {x['p99']:.3f} | {x['bad']} | {x['cpu']:.1f} | {vs} | {cvs} |")


p(f"# bench/run.sh: wrk -t1 -c{conns} -d{dur}, {nproc} cores, median of {rounds} interleaved rounds\n")
p(f"Upstream: nginx serving fixed vLLM answers ({upstream_note}). Every proxy runs one process (haproxy: one "
  f"thread) per core with its access log off. CPU µs/req = CPU of every process of the target "
  f"(utime+stime from /proc, whole process tree) / requests completed. Counted processes:")
for line in open(procs_path):
    name, _, what = line.strip().partition(" ")
    p(f"- {NAMES.get(name, name)}: {what}")
p("\nThe load generator, the upstream and the proxy share the cores: ratios within one run are what counts.")

table("Plain chat, fixed request, passthrough", [
    ("plain:nginx", "nginx", None), ("plain:haproxy", "haproxy (http-no-delay)", "plain:nginx"),
    ("plain:eng-off", "Engine, cache off", "plain:nginx")])
table("Plain chat, every prompt unique (Engine: every lookup misses, every answer stored)", [
    ("unique:nginx", "nginx", None), ("unique:haproxy", "haproxy (http-no-delay)", "unique:nginx"),
    ("unique:eng-on", "Engine, cache on (default: workers 0, shared-memory cache)", "unique:nginx"),
    ("unique:eng1-on", "Engine workers: 1, cache on (in-process store)", "unique:nginx")])
table("Plain chat, Engine cache hits (fixed request) vs nginx passthrough", [
    ("plain:nginx", "nginx passthrough", None),
    ("hits:eng-on", "Engine cache hits (default: workers 0, shared-memory cache)", "plain:nginx"),
    ("hits:eng1-on", "Engine workers: 1, cache hits (in-process store)", "plain:nginx")])
table("stream:true, whole 50-event SSE upstream (CPU per streamed response)", [
    ("stream:nginx", "nginx", None), ("stream:haproxy", "haproxy (http-no-delay)", "stream:nginx"),
    ("stream:eng-off", "Engine, cache off", "stream:nginx"),
    ("stream-unique:nginx", "nginx, unique prompts", None),
    ("stream-unique:haproxy", "haproxy, unique prompts", "stream-unique:nginx"),
    ("stream-unique:eng-on", "Engine, cache on, unique prompts (default: workers 0, shared-memory cache)", "stream-unique:nginx"),
    ("stream-unique:eng1-on", "Engine workers: 1, cache on, unique prompts", "stream-unique:nginx"),
    ("stream-hits:eng-on", "Engine streamed cache hits (default: workers 0, shared-memory cache)", "stream:nginx"),
    ("stream-hits:eng1-on", "Engine workers: 1, streamed cache hits", "stream:nginx")])

p(f"\n## One connection (wrk -t1 -c1 -d{dur}), unique prompts: latency added to the direct upstream\n")
p("| target | req/s | p50 ms | p99 ms | non-2xx | added p50 µs | added p99 µs |\n|---|---|---|---|---|---|---|")
d1 = R["one:direct"]
for key, label in (("one:direct", "direct (upstream nginx)"), ("one:nginx", "nginx"),
                   ("one:eng-off", "Engine, cache off"), ("one:eng-on", "Engine, cache on (every request misses)")):
    x = R[key]
    flag = "" if x["valid"] else " ⚠ INVALID"
    add = "—" if key == "one:direct" else f"{(x['p50'] - d1['p50']) * 1000:+.0f}"
    add99 = "—" if key == "one:direct" else f"{(x['p99'] - d1['p99']) * 1000:+.0f}"
    p(f"| {label}{flag} | {x['rps']:.0f} | {x['p50']:.3f} | {x['p99']:.3f} | {x['bad']} | {add} | {add99} |")


def probe(key):
    rs = probes[key]
    return {k: statistics.median(r[k] for r in rs) for k in rs[0]} | {"rounds": rs}


P = {k: probe(k) for k in probes}
p(f"\n## Streaming probe: 16 concurrent streams × 64 tokens, vllm-sim 10 ms to first token, 5 ms per token, "
  f"unique prompts (median of {rounds} rounds)\n")
p("The gap is the time between two content events as the client reads them; \"added\" is the difference to "
  "direct. A constant delay per event cancels out of gaps: this shows delays that vary (batching, "
  "scheduling), and at tens of µs it is near this machine's noise.\n")
p("| target | streams | TTFT p50 ms | TTFT p99 ms | gap p50 µs | gap p99 µs | gap mean µs | added gap p50 µs | added gap mean µs |")
p("|---|---|---|---|---|---|---|---|---|")
pd = P["probe:direct"]
for key, label in (("probe:direct", "direct (vllm-sim)"), ("probe:nginx", "nginx"),
                   ("probe:eng-off", "Engine, cache off"), ("probe:eng-on", "Engine, cache on (every stream misses)")):
    x = P[key]
    add = "—" if key == "probe:direct" else f"{(x['gap_p50_ms'] - pd['gap_p50_ms']) * 1000:+.0f}"
    addm = "—" if key == "probe:direct" else f"{(x['gap_mean_ms'] - pd['gap_mean_ms']) * 1000:+.0f}"
    p(f"| {label} | {x['streams']:.0f} | {x['ttft_p50_ms']:.2f} | {x['ttft_p99_ms']:.2f} | {x['gap_p50_ms'] * 1000:.0f} | "
      f"{x['gap_p99_ms'] * 1000:.0f} | {x['gap_mean_ms'] * 1000:.0f} | {add} | {addm} |")

if all(r["ins_u"] >= 0 for rs in runs.values() for r in rs):
    p("\n## Instructions per request (perf stat over each wrk run: user / kernel, thousands; median of rounds)\n")
    p("Steadier than CPU time on a shared machine: it does not count waiting for a core or a cache line.\n")
    p("| case | nginx | haproxy | Engine (default config) | Engine workers: 1 | Engine ÷ nginx, user |\n|---|---|---|---|---|---|")
    for case, label in (("plain", "plain, fixed request (Engine: cache off)"), ("unique", "plain, every prompt unique"),
                        ("hits", "cache hits (vs nginx passthrough)"), ("stream", "stream (Engine: cache off)"),
                        ("stream-unique", "stream, every prompt unique"), ("stream-hits", "streamed cache hits (vs nginx)")):
        ref = {"hits": "plain", "stream-hits": "stream"}.get(case, case)
        def cell(key):
            return f"{R[key]['ins_u'] / 1e3:.1f}k / {R[key]['ins_k'] / 1e3:.1f}k" if key in R else "—"
        eng = f"{case}:eng-off" if case in ("plain", "stream") else f"{case}:eng-on"
        ratio_u = f"{ratio(R[eng]['ins_u'], R[ref + ':nginx']['ins_u']):.1f}×" if eng in R else "—"
        p(f"| {label} | {cell(ref + ':nginx')} | {cell(ref + ':haproxy')} | {cell(eng)} | {cell(case + ':eng1-on')} | {ratio_u} |")

if all("ins_u" in P[k] and "ins_k" in P[k] for k in ("probe:nginx", "probe:eng-off", "probe:eng-on")):
    p("\n## Instructions per streamed response, one event per read (the streaming probe; thousands, median of rounds)\n")
    p("vllm-sim writes each of a stream's events on its own, as a real vLLM does, so a proxy reads and "
      "writes once per event; the wrk stream cases above read the fixed upstream's whole stream in one "
      "read. Each probe stream has 64 content events and a connection of its own.\n")
    p("| target | user | kernel | user + kernel | ÷ nginx, user + kernel |\n|---|---|---|---|---|")
    pn = P["probe:nginx"]["ins_u"] + P["probe:nginx"]["ins_k"]
    for key, label in (("probe:nginx", "nginx"), ("probe:eng-off", "Engine, cache off"),
                       ("probe:eng-on", "Engine, cache on (every stream misses)")):
        x = P[key]
        tot = x["ins_u"] + x["ins_k"]
        p(f"| {label} | {x['ins_u'] / 1e3:.1f}k | {x['ins_k'] / 1e3:.1f}k | {tot / 1e3:.1f}k | "
          f"{'—' if key == 'probe:nginx' else f'{tot / pn:.2f}×'} |")

idle = {}
for line in open(idle_path):
    name, _, js = line.strip().partition(" ")
    idle[name] = json.loads(js)
p("\n## Memory: 1,000 idle keep-alive connections (every process of the target summed; measured before any load)\n")
p("| target | processes | RSS idle MB | RSS with 1,000 conns MB | PSS with 1,000 conns MB |\n|---|---|---|---|---|")
for key, label in (("nginx", "nginx"), ("haproxy", "haproxy"), ("eng-on", "Engine, cache on (default config)"),
                   ("eng-off", "Engine, cache off")):
    x = idle[key]
    procs = ", ".join(f"{n}×{x['processes'].count(n)}" for n in sorted(set(x["processes"])))
    p(f"| {label} | {procs} | {x['rss_before'] / 1e6:.1f} | {x['rss'] / 1e6:.1f} | {x['pss'] / 1e6:.1f} |")

# --- Issue 11's targets --------------------------------------------------------------------------------
p("\n## Targets (issue 11; ratios of medians within this run)\n")
p("| target | measured | met |\n|---|---|---|")


def per_round(a, b, f):
    return ", ".join(f(x, y) for x, y in zip(R[a]["rounds"], R[b]["rounds"]))


def check(label, value_text, ok, keys):
    valid = all(R[k]["valid"] for k in keys if k in R)
    verdict = ("met" if ok else "**not met**") if valid else "invalid row (non-2xx or socket errors)"
    p(f"| {label} | {value_text} | {verdict} |")


def rps_target(label, key, ref, floor):
    v = ratio(R[key]["rps"], R[ref]["rps"])
    pr = per_round(key, ref, lambda x, y: f"{x['rps'] / y['rps']:.2f}")
    check(label, f"{v:.2f}× (rounds {pr})", v >= floor, [key, ref])


def cpu_target(label, key, ref):
    a, b = R[key]["cpu"], R[ref]["cpu"]
    check(label, f"{a:.1f} vs {b:.1f} µs ({ratio(a, b):.2f}×)", a <= b, [key, ref])


rps_target("cache on, unique prompts: req/s ≥ 1.0× nginx", "unique:eng-on", "unique:nginx", 1.0)
cpu_target("cache on, unique prompts: CPU µs/req ≤ nginx", "unique:eng-on", "unique:nginx")
rps_target("stream:true, cache off: req/s ≥ 1.0× nginx", "stream:eng-off", "stream:nginx", 1.0)
cpu_target("stream:true, cache off: CPU µs per streamed response ≤ nginx", "stream:eng-off", "stream:nginx")
rps_target("stream:true, cache on, unique prompts: req/s ≥ 1.0× nginx", "stream-unique:eng-on", "stream-unique:nginx", 1.0)
cpu_target("stream:true, cache on, unique prompts: CPU µs per streamed response ≤ nginx", "stream-unique:eng-on",
           "stream-unique:nginx")
for key in ("probe:eng-on", "probe:eng-off"):
    added = (P[key]["gap_p50_ms"] - pd["gap_p50_ms"]) * 1000
    addm = (P[key]["gap_mean_ms"] - pd["gap_mean_ms"]) * 1000
    label = "cache on" if key.endswith("on") else "cache off"
    check(f"per-chunk added gap at low load ≤ 20 µs ({label})", f"p50 {added:+.0f} µs (mean {addm:+.0f} µs)",
          added <= 20, [])
rps_target("cache hits: req/s ≥ 2× nginx", "hits:eng-on", "plain:nginx", 2.0)
rps_target("streamed cache hits: req/s ≥ 1.5× nginx", "stream-hits:eng-on", "stream:nginx", 1.5)
n_add = (R["one:nginx"]["p50"] - d1["p50"]) * 1000
e_add = (R["one:eng-on"]["p50"] - d1["p50"]) * 1000
check("one connection, cache on: added p50 ≤ nginx's added p50 + 20 µs", f"{e_add:+.0f} µs vs nginx {n_add:+.0f} µs",
      e_add <= n_add + 20, ["one:direct", "one:nginx", "one:eng-on"])
er, nr = idle["eng-on"]["rss"], idle["nginx"]["rss"]
ep, np_ = idle["eng-on"]["pss"], idle["nginx"]["pss"]
check(f"RSS with 1,000 idle keep-alive connections ≤ nginx's ({nproc} workers each)",
      f"{er / 1e6:.1f} vs {nr / 1e6:.1f} MB (PSS {ep / 1e6:.1f} vs {np_ / 1e6:.1f} MB)", er <= nr, [])
p("\nExtra rows, one Engine process (workers: 1, in-process store), against the same references:")
for key, ref, floor, what in (("unique:eng1-on", "unique:nginx", 1.0, "unique prompts"),
                              ("hits:eng1-on", "plain:nginx", 2.0, "cache hits"),
                              ("stream-unique:eng1-on", "stream-unique:nginx", 1.0, "stream:true, unique prompts"),
                              ("stream-hits:eng1-on", "stream:nginx", 1.5, "streamed cache hits")):
    x, y = R[key], R[ref]
    p(f"- {what}: {ratio(x['rps'], y['rps']):.2f}× nginx req/s (target {floor}×), "
      f"CPU {x['cpu']:.1f} vs {y['cpu']:.1f} µs/req")
bad = [k for k in R if not R[k]["valid"]]
p(f"\nRows with non-2xx or socket errors: {', '.join(bad) if bad else 'none'}.")
p(f"Run time: {int(elapsed) // 60} min {int(elapsed) % 60} s (build check, start-up and every round).")
print("\n".join(out))
