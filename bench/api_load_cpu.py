"""Where the CPU goes in a phase of bench.api_load, and what the controller was asked.

A snapshot reads utime+stime of every process from ``/proc`` and sorts it into the
bench's own parts: the controller (its process group: the gunicorn master and each
worker, or the development server), each agent (its process group, children
included), this cluster's PostgreSQL (the postmaster named in its ``postmaster.pid``
and its children: backends, WAL writer, checkpointer), the bench process itself, and
everything else on the machine (other sessions). The difference of two snapshots is
the CPU each part used over the measured window; a process that ended between them
takes its time with it (none should in the steady phases).

The controller's JSON access lines (``controller.log``) give the requests per route
in the same window, with their mean duration, grouped as the brief of issue 14 asks:
reads, polls, submits, agent calls.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
READS = {"/api/v1/me", "/api/v1/jobs", "/api/v1/ledger/entries"}


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    cpu_s: float
    sys_s: float  # the kernel's share of cpu_s (system calls, context switches)
    cmd: str


def processes() -> dict[int, Proc]:
    out: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # The command may hold spaces and parentheses: the fields follow the last ')'.
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        f = raw[raw.rindex(")") + 2:].split()
        out[int(entry.name)] = Proc(int(entry.name), int(f[1]), int(f[2]),
                                    (int(f[11]) + int(f[12])) / TICK, int(f[12]) / TICK, comm)
    return out


def postmaster(db_url: str) -> int | None:
    """The pid of the cluster's postmaster: the first line of ``<data>/postmaster.pid``
    beside the socket directory named in the URL."""
    host = db_url.split("host=", 1)[-1].split("&", 1)[0]
    try:
        return int((Path(host).parent / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def snapshot(groups: dict[str, int], db_url: str) -> dict[str, float]:
    """CPU seconds so far per part. ``groups`` names process groups (name -> pgid);
    the controller's is split into its leader (``<name>.master``) and each other
    process (``<name>.w<i>``, in pid order)."""
    procs = processes()
    pg = postmaster(db_url)
    by_pgid = {v: k for k, v in groups.items()}
    cpu: dict[str, float] = defaultdict(float)
    workers: dict[str, list[Proc]] = defaultdict(list)
    for p in procs.values():
        if p.pgid in by_pgid:
            name = by_pgid[p.pgid]
            if name == "controller":
                cpu["controller(kernel)"] += p.sys_s
                if p.pid == p.pgid:
                    cpu["controller.master"] += p.cpu_s
                else:
                    workers[name].append(p)
            else:
                cpu[name] += p.cpu_s
        elif pg is not None and (p.pid == pg or p.ppid == pg):
            cpu["postgresql"] += p.cpu_s
        elif p.pid == os.getpid():
            cpu["bench"] += p.cpu_s
        else:
            cpu["other"] += p.cpu_s
    for name, ps in workers.items():
        for i, p in enumerate(sorted(ps, key=lambda p: p.pid)):
            cpu[f"{name}.w{i}"] += p.cpu_s
    return dict(cpu)


def usage(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """``part=cores`` over the window, largest first, and the machine's total."""
    used = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    used = {k: v for k, v in used.items() if v > 0}
    kernel = used.pop("controller(kernel)", 0.0)
    parts = " ".join(f"{k}={v / seconds:.2f}" for k, v in
                     sorted(used.items(), key=lambda kv: -kv[1]))
    return (f"cpu_cores {parts} total={sum(used.values()) / seconds:.2f} "
            f"controller_kernel={kernel / seconds:.2f}")


def group(route: str, method: str) -> str:
    if route in READS and method == "GET":
        return "read"
    if route == "/api/v1/jobs/<job_id>" and method == "GET":
        return "poll"
    if route == "/api/v1/jobs" and method == "POST":
        return "submit"
    if route.startswith("/api/v1/tasks") or route.startswith("/api/v1/agent"):
        return "agent"
    return "other"


def routes(log: Path, start_wall: float, end_wall: float) -> str:
    """Requests per second per route in the window, and their mean duration in ms, from
    the controller's JSON access lines."""
    count: Counter[str] = Counter()
    ms: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    groups: Counter[str] = Counter()
    if not log.exists():
        return "routes none"
    for line in log.read_text(errors="replace").splitlines():
        if '"route"' not in line:
            continue
        try:
            rec = json.loads(line)
            ts = datetime.fromisoformat(rec["ts"]).replace(tzinfo=UTC).timestamp()
        except (ValueError, KeyError):
            continue
        if not start_wall <= ts < end_wall:
            continue
        key = f"{rec['method']} {rec['route']}"
        count[key] += 1
        ms[key] += float(rec.get("duration_ms", 0.0))
        cpu[key] += float(rec.get("cpu_ms", 0.0))
        groups[group(rec["route"], rec["method"])] += 1
    span = end_wall - start_wall
    lines = [f"routes_per_s {' '.join(f'{k}={v / span:.1f}' for k, v in groups.most_common())}"]
    # cpu_ms is there only when the access line carries it (a profiling build).
    lines += [f"  {k}: {v / span:.1f}/s mean {ms[k] / v:.1f} ms"
              + (f" cpu {cpu[k] / v:.2f} ms" if cpu[k] else "")
              for k, v in count.most_common()]
    return "\n".join(lines)
