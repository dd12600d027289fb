#!/usr/bin/env python3
# kv_tokenize_bench.py HOST PORT N WORDS: the cost of POST /tokenize for a chat request (system +
# user of WORDS x "wordI alpha beta"), N times in sequence on one keep-alive connection.
# Cost of asking a server's /tokenize for a chat request, sequential on one keep-alive connection.
import sys, time, json, http.client, statistics
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
words = int(sys.argv[4]) if len(sys.argv) > 4 else 120
LONG = ' '.join(f'word{i} alpha beta' for i in range(words))
c = http.client.HTTPConnection(host, port)
lat = []
for k in range(n):
    body = json.dumps({"model": "sim-model", "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": f"{k} " + LONG}]})
    t = time.perf_counter()
    c.request("POST", "/tokenize", body, {"content-type": "application/json"})
    r = c.getresponse(); d = r.read()
    lat.append((time.perf_counter() - t) * 1e3)
cnt = json.loads(d)["count"]
lat.sort()
print(f"{n} /tokenize chat requests ({cnt} tokens): p50 {statistics.median(lat):.2f} ms p90 {lat[int(.9*n)]:.2f} ms p99 {lat[int(.99*n)-1]:.2f} ms mean {statistics.mean(lat):.2f} ms")
