"""Opens N idle keep-alive connections to HOST:PORT (each sends one GET /health and keeps the
socket), then prints the server's RSS from /proc/PID/status. Used by bench/run.sh."""
import socket
import sys
import time

host, port, n, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
socks = []
for i in range(n):
    s = socket.create_connection((host, port))
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(4096)
    socks.append(s)
time.sleep(0.5)
rss = 0
for line in open(f"/proc/{pid}/status"):
    if line.startswith("VmRSS:"):
        rss = int(line.split()[1]) * 1024
print(f"{n} {rss}")
for s in socks:
    s.close()
