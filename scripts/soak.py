#!/usr/bin/env python3
"""The soak's sampler and its report (issue 24); scripts/soak runs both.

  soak.py sample PID PORT CSV INTERVAL   every INTERVAL s until SIGTERM: the server's RSS,
                                         open files, threads (/proc/PID), live sessions
                                         (/health) and tasks and subscriptions (/metrics)
  soak.py report DIR                     DIR/samples.csv and DIR/phases.json -> DIR/soak.svg,
                                         DIR/verdicts.json and DIR/report.md

Standard library only: the SVG is written by hand.
"""
import csv
import json
import os
import re
import signal
import sys
import time
import urllib.request

FIELDS = ["t_s", "rss_kib", "fds", "threads", "sessions", "tasks", "subscriptions"]


def read_proc(pid):
    """(VmRSS in KiB, threads, open files) of a live process."""
    status = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
    return rss, threads, len(os.listdir(f"/proc/{pid}/fd"))


def fetch(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return answer.read().decode()


def gauge(text, name):
    match = re.search(rf"^{name} (\d+)", text, re.M)
    return int(match.group(1)) if match else ""


def sample(pid, port, path, interval):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    started = time.monotonic()
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(FIELDS)
        while not stop:
            at = time.monotonic()
            try:
                rss, threads, fds = read_proc(pid)
            except (FileNotFoundError, ProcessLookupError):
                print("soak sampler: the server is gone", file=sys.stderr)
                return 1
            # /proc first, then the server's own figures: the two HTTP requests are not
            # counted in the open files.
            try:
                sessions = json.loads(fetch(port, "/health"))["connections"]
                metrics = fetch(port, "/metrics")
                tasks, subs = gauge(metrics, "peregrine_runtime_alive_tasks"), gauge(metrics, "peregrine_subscriptions")
            except OSError as error:
                print(f"soak sampler: {error}", file=sys.stderr)
                sessions = tasks = subs = ""
            writer.writerow([round(at - started, 1), rss, fds, threads, sessions, tasks, subs])
            out.flush()
            while not stop and time.monotonic() < at + interval:
                time.sleep(0.2)
    return 0


def load(directory):
    rows = []
    with open(f"{directory}/samples.csv") as f:
        for row in csv.DictReader(f):
            rows.append({k: (float(v) if v != "" else None) for k, v in row.items()})
    phases = json.load(open(f"{directory}/phases.json"))
    return rows, phases


def verdicts(rows, phases):
    """The targets of issue 24, each with its figures and whether it is met."""
    warm, leave = phases["warmup_end_s"], phases["leave_start_s"]
    baseline = [r for r in rows if r["t_s"] < phases["clients_start_s"]]
    measured = [r for r in rows if warm <= r["t_s"] < leave]
    final = rows[-1]
    v = {}
    rss = [r["rss_kib"] for r in measured]
    if rss:
        low, high = min(rss), max(rss)
        ts = [r["t_s"] for r in measured]
        mean_t, mean_r = sum(ts) / len(ts), sum(rss) / len(rss)
        var = sum((t - mean_t) ** 2 for t in ts)
        slope = sum((t - mean_t) * (r - mean_r) for t, r in zip(ts, rss)) / var if var else 0.0
        v["rss"] = {
            "definition": "(max - min) / min of VmRSS over the samples from the end of the warm-up until the clients start leaving",
            "min_kib": low, "max_kib": high, "spread_pct": round((high - low) / low * 100, 2),
            "trend_kib_per_hour": round(slope * 3600, 1),
            "first_kib": rss[0], "last_kib": rss[-1], "samples": len(rss),
        }
        v["rss"]["met"] = v["rss"]["spread_pct"] <= 5.0
    for key in ("fds", "tasks", "threads"):
        base = min((r[key] for r in baseline if r[key] is not None), default=None)
        end = final[key]
        v[key] = {"baseline": base, "end": end, "peak": max((r[key] or 0) for r in rows),
                  "met": base is not None and end is not None and end <= base}
    v["sessions"] = {"peak": max((r["sessions"] or 0) for r in rows), "end": final["sessions"],
                     "met": final["sessions"] == 0}
    v["all_met"] = all(x["met"] for x in v.values() if isinstance(x, dict))
    return v


def svg(rows, phases, path, rss):
    """Panels over time: RSS; RSS in the measured window, zoomed, with the 5% band above
    its minimum; open files; sessions and tasks. Marks the warm-up's end, the moment the
    clients start leaving and the moment the last is gone."""
    width, panel_h, left, right, top, gap = 900, 190, 80, 20, 30, 40
    panels = [
        ("server RSS (MiB)", [("rss_kib", 1 / 1024, "#1f77b4", "RSS")], None),
        ("open files", [("fds", 1, "#d62728", "open files")], None),
        ("live sessions / tasks", [("sessions", 1, "#2ca02c", "sessions"), ("tasks", 1, "#9467bd", "tokio tasks")], None),
    ]
    if rss:
        low = rss["min_kib"] / 1024
        band = (low, low * 1.05)
        zoom = (low * 0.98, max(rss["max_kib"] / 1024, band[1]) * 1.01)
        panels.insert(1, ("RSS after the warm-up, zoomed (MiB); dotted: min and min + 5%",
                          [("rss_kib", 1 / 1024, "#1f77b4", "RSS")], (zoom, band)))
    height = top + len(panels) * (panel_h + gap) + 20
    t_max = max(r["t_s"] for r in rows) or 1
    x = lambda t: left + (width - left - right) * t / t_max
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14" font-weight="bold">peregrine serve under churn: '
           f'{phases.get("title", "")}</text>']
    for n, (title, series, zoom) in enumerate(panels):
        y0 = top + n * (panel_h + gap)
        shown = rows
        if zoom:
            (v_min, v_max), band = zoom
            shown = [r for r in rows if phases["warmup_end_s"] <= r["t_s"] < phases["leave_start_s"]]
        else:
            values = [r[k] * scale for k, scale, _, _ in series for r in rows if r[k] is not None]
            v_min, v_max = 0.0, max(values, default=1) * 1.1 or 1
        y = lambda v: y0 + panel_h - panel_h * (v - v_min) / (v_max - v_min)
        out.append(f'<rect x="{left}" y="{y0}" width="{width - left - right}" height="{panel_h}" fill="none" stroke="#999"/>')
        out.append(f'<text x="{left + 4}" y="{y0 + 14}" font-weight="bold">{title}</text>')
        for i in range(5):
            v = v_min + (v_max - v_min) * i / 4
            out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.{1 if zoom else 0}f}</text>')
            out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        marks = (("warm-up end", phases["warmup_end_s"]), ("clients leave", phases["leave_start_s"]),
                 ("all gone", phases["churn_end_s"]))
        for m, (name, at) in enumerate(marks):
            out.append(f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{y0}" y2="{y0 + panel_h}" stroke="#555" stroke-dasharray="4 3"/>')
            # Labels near the right edge go on the line's left.
            side = (x(at) - 3, "end") if x(at) > width * 0.75 else (x(at) + 3, "start")
            out.append(f'<text x="{side[0]:.1f}" y="{y0 + panel_h - 4 - 13 * m}" text-anchor="{side[1]}" fill="#555">{name}</text>')
        for level in zoom[1] if zoom else ():
            out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="#1f77b4" stroke-dasharray="2 3"/>')
        for k, (key, scale, color, label) in enumerate(series):
            points = " ".join(f"{x(r['t_s']):.1f},{y(r[key] * scale):.1f}" for r in shown if r[key] is not None)
            out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>')
            out.append(f'<text x="{width - right - 4}" y="{y0 + 14 + 14 * k}" text-anchor="end" fill="{color}">{label}</text>')
        if n == len(panels) - 1:
            step = next(m for m in (1, 2, 5, 10, 15, 20, 30, 60, 120) if t_max / 60 / m <= 10) * 60
            for i in range(int(t_max // step) + 1):
                out.append(f'<text x="{x(i * step):.1f}" y="{y0 + panel_h + 14}" text-anchor="middle">{i * step / 60:.0f} min</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


def report(directory):
    rows, phases = load(directory)
    v = verdicts(rows, phases)
    svg(rows, phases, f"{directory}/soak.svg", v.get("rss"))
    json.dump(v, open(f"{directory}/verdicts.json", "w"), indent=2)
    gen = json.load(open(f"{directory}/generator.json"))
    ok = lambda met: "met" if met else "**not met**"
    r = v.get("rss", {})
    lines = [
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| RSS flat within 5% after the warm-up ((max − min) / min) | {r.get('min_kib', 0) / 1024:,.1f} – "
        f"{r.get('max_kib', 0) / 1024:,.1f} MiB: {r.get('spread_pct', '-')}% (trend {r.get('trend_kib_per_hour', '-'):,} KiB/h, "
        f"first {r.get('first_kib', 0) / 1024:,.1f} → last {r.get('last_kib', 0) / 1024:,.1f} MiB) | {ok(r.get('met'))} |",
    ]
    for key, what in (("fds", "open files"), ("tasks", "tokio tasks"), ("threads", "threads")):
        x = v[key]
        lines.append(f"| {what} back to the baseline once clients are gone | baseline {x['baseline']:.0f}, peak "
                     f"{x['peak']:,.0f}, end {x['end']:.0f} | {ok(x['met'])} |")
    s = v["sessions"]
    lines.append(f"| live sessions back to 0 | peak {s['peak']:,.0f}, end {s['end']:.0f} | {ok(s['met'])} |")
    lines.append(f"| no errors in the generator | {gen['errors']} | {ok(gen['errors'] == 0)} |")
    lines += ["", "| generator | count |", "|---|---|"]
    for key in ("visits", "open_peak", "left_clean", "left_abrupt", "left_silent", "silent_reaped", "silent_not_reaped",
                "subscriptions", "recovered", "recovery_gaps", "recovery_resets", "publishes_acked", "deliveries",
                "deliveries_missing", "deliveries_out_of_order", "history_reads", "connect_errors", "subscribe_errors",
                "publish_errors", "history_errors", "unanswered", "undecodable", "errors"):
        lines.append(f"| {key} | {gen[key]:,} |")
    lines.append(f"| server_closed (server ended an active client, by code) | {gen['server_closed'] or 0} |")
    if "connect_failures" in gen:
        lines.append(f"| connect_failures (by reason) | {gen['connect_failures'] or 0} |")
    text = "\n".join(lines) + "\n"
    open(f"{directory}/report.md", "w").write(text)
    print(text)
    return 0 if v["all_met"] and gen["errors"] == 0 else 2


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "sample":
        sys.exit(sample(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])))
    if len(sys.argv) == 3 and sys.argv[1] == "report":
        sys.exit(report(sys.argv[2]))
    sys.exit(__doc__)
