"""Opens N idle keep-alive connections to HOST:PORT (each sends one GET /health, reads the answer
and keeps the socket), then prints the memory of every process of the target, before and with
the connections, as JSON: {"conns", "rss_before", "pss_before", "rss", "pss", "processes"}.
PID... are the target's root processes (nginx's master, the Engine's supervisor): their whole
process trees are summed (bench/proctree.py). Used by bench/run.sh.
Usage: python3 bench/idle_conns.py HOST PORT N PID..."""
import json
import socket
import sys
import time

import proctree

host, port, n, roots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [int(x) for x in sys.argv[4:]]
pids = proctree.tree(roots)
rss0, pss0 = proctree.memory(pids)
socks = []
for i in range(n):
    s = socket.create_connection((host, port))
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    got = s.recv(4096)
    assert got.startswith(b"HTTP/1.1 200"), got[:80]
    socks.append(s)
time.sleep(0.5)
pids = proctree.tree(roots)
rss, pss = proctree.memory(pids)
print(json.dumps({"conns": n, "rss_before": rss0, "pss_before": pss0, "rss": rss, "pss": pss,
                  "processes": [name for _, name in proctree.names(pids)]}))
for s in socks:
    s.close()
