"""What a benchmark target costs the machine: every process of it, found as a process tree.

A target is named by the pid bench/run.sh started (nginx's master, haproxy, the Engine's
supervisor) and is that process plus all its descendants, read from /proc at the moment of the
call: nginx's workers, the Engine's workers and the private redis-server its supervisor spawns
(that one listens on a Unix socket only, so looking processes up by TCP port would miss it).

  python3 bench/proctree.py cpu PID...    CPU ticks (utime+stime, all threads) of every process
                                          in the trees, summed; divide by CLK_TCK for seconds
  python3 bench/proctree.py mem PID...    "RSS PSS" in bytes, summed over the trees
  python3 bench/proctree.py list PID...   "pid name" per process (what `cpu` and `mem` count)

Caveats, none of which applies to a steady benchmark: a process that exits between two `cpu`
calls takes its ticks with it (its parent only gets them once it reaps it); ticks are 10 ms, so
a measured interval should hold a few hundred of them (a 5 s run at full load holds ~1000).
RSS counts pages shared between processes (nginx's forked workers, the Engine's common binary) once
per process, as `ps` does; PSS splits them and is the fairer sum.
"""
import os
import sys


def stat_fields(pid):
    """Fields after the command name (which may hold spaces and parentheses)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def tree(roots):
    """Every live pid in the trees under `roots` (roots included)."""
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                children.setdefault(int(stat_fields(p)[1]), []).append(int(p))
            except OSError:
                pass  # gone meanwhile
    seen, stack = [], list(roots)
    while stack:
        p = stack.pop()
        if p in seen or not os.path.exists(f"/proc/{p}"):
            continue
        seen.append(p)
        stack += children.get(p, [])
    return seen


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            f = stat_fields(p)
            total += int(f[11]) + int(f[12])  # utime, stime (fields 14 and 15 of /proc/PID/stat)
        except OSError:
            pass
    return total


def memory(pids):
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def names(pids):
    out = []
    for p in pids:
        try:
            with open(f"/proc/{p}/comm") as f:
                out.append((p, f.read().strip()))
        except OSError:
            pass
    return out


if __name__ == "__main__":
    what, roots = sys.argv[1], [int(x) for x in sys.argv[2:]]
    pids = tree(roots)
    if what == "cpu":
        print(cpu_ticks(pids))
    elif what == "mem":
        print(*memory(pids))
    elif what == "list":
        for p, n in names(pids):
            print(p, n)
    else:
        sys.exit(f"proctree.py: unknown command {what}")
