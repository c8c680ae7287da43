#!/usr/bin/env python3
"""bench/plot_e2e.py: the picture of bench/e2e.sh's results, msgs/s against sessions.

Usage: plot_e2e.py OUT.svg RESULTS [RESULTS...]
Each RESULTS file is an `e2e.sh -o` file (its run lines are tab-separated, after `#` comment
lines); each becomes one panel, titled by its filesystem line. One line per server and path:
receive-only (nullq --deliver none, Postfix on hold) and end-to-end (nullq to a Maildir, a
CommuniGate Pro folder, SMTP; Postfix to SMTP), each point the median of the runs. Sessions on a
log scale. Plain SVG written by hand: no plotting library is needed (none is installed here).
"""
import csv
import math
import statistics
import sys

SERIES = [
    # (path, column, label, colour, dashed)
    ("nullq-none", "recv_msgs/s", "nullq receive only (--deliver none)", "#1f77b4", True),
    ("nullq-maildir", "e2e_msgs/s", "nullq end-to-end, Maildir", "#1f77b4", False),
    ("nullq-cgp", "e2e_msgs/s", "nullq end-to-end, CGP folder", "#2ca02c", False),
    ("nullq-smtp", "e2e_msgs/s", "nullq end-to-end, SMTP to smtp-sink", "#9467bd", False),
    ("postfix-hold", "recv_msgs/s", "Postfix receive only (hold)", "#d62728", True),
    ("postfix-smtp", "e2e_msgs/s", "Postfix end-to-end, SMTP to smtp-sink", "#d62728", False),
]


def load(path):
    lines = open(path).read().splitlines()
    command = next((line for line in lines if line.startswith("# bench/e2e.sh")), "")
    fs = next((line.split()[-2] for line in lines if line.startswith("# spool fs:")), "?")
    journal = next((line.split(":", 1)[1].split()[0] for line in lines if line.startswith("# ext4 journal:")), "?")
    where = "fresh loop-mounted ext4" if " -L" in command else "root filesystem"
    title = f"{where} ({fs}, journal: {journal}), end-to-end and receive-only"
    body = [line for line in lines if line and not line.startswith("#") and not line.startswith("|")]
    body = [line for line in body if line.count("\t") >= 10]
    rows = list(csv.DictReader(body, delimiter="\t"))
    return title, rows


def medians(rows, path, col):
    out = {}
    for s in sorted({int(r["sessions"]) for r in rows if r["path"] == path}):
        v = [float(r[col]) for r in rows
             if r["path"] == path and int(r["sessions"]) == s and r["status"] == "ok" and r[col] != "-"]
        if v:
            out[s] = statistics.median(v)
    return out


def panel(title, rows, x0, y0, w, h):
    parts = []
    series = [(label, colour, dashed, medians(rows, path, col)) for path, col, label, colour, dashed in SERIES]
    series = [s for s in series if s[3]]
    sessions = sorted({s for *_, m in series for s in m})
    top = max([v for *_, m in series for v in m.values()] + [1])
    step = 10 ** math.floor(math.log10(top))
    top = math.ceil(top / step) * step
    lo, hi = math.log10(min(sessions)), math.log10(max(sessions))
    px = lambda s: x0 + 60 + (w - 80) * ((math.log10(s) - lo) / (hi - lo) if hi > lo else 0.5)
    py = lambda v: y0 + h - 40 - (h - 70) * v / top
    parts.append(f'<text x="{x0 + w / 2}" y="{y0 + 18}" text-anchor="middle" font-size="13">{esc(title)}</text>')
    parts.append(f'<line x1="{x0 + 60}" y1="{py(0)}" x2="{x0 + w - 20}" y2="{py(0)}" stroke="#000"/>')
    parts.append(f'<line x1="{x0 + 60}" y1="{py(0)}" x2="{x0 + 60}" y2="{py(top)}" stroke="#000"/>')
    for i in range(0, 6):
        v = top * i / 5
        parts.append(f'<line x1="{x0 + 60}" y1="{py(v)}" x2="{x0 + w - 20}" y2="{py(v)}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 + 55}" y="{py(v) + 4}" text-anchor="end" font-size="11">{v:.0f}</text>')
    for s in sessions:
        parts.append(f'<text x="{px(s)}" y="{py(0) + 16}" text-anchor="middle" font-size="11">{s}</text>')
    parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h - 6}" text-anchor="middle" font-size="12">sessions (qmqp-source -s), log scale</text>')
    parts.append(f'<text x="{x0 + 14}" y="{y0 + h / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 {x0 + 14} {y0 + h / 2})">msgs/s (1 KB)</text>')
    for label, colour, dashed, m in series:
        pts = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in sorted(m.items()))
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for s, v in sorted(m.items()):
            parts.append(f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="3" fill="{colour}"/>')
    return parts, series


def esc(t):
    return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: plot_e2e.py OUT.svg RESULTS [RESULTS...]")
    out, files = sys.argv[1], sys.argv[2:]
    w, h, legend_h = 520, 360, 20 * len(SERIES) + 20
    width, height = w * len(files), h + legend_h
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" viewBox="0 0 {width} {height}">',
             f'<rect width="{width}" height="{height}" fill="#fff"/>']
    shown = {}
    for i, f in enumerate(files):
        title, rows = load(f)
        p, series = panel(title, rows, i * w, 0, w, h)
        parts += p
        for label, colour, dashed, _ in series:
            shown[label] = (colour, dashed)
    for j, (label, (colour, dashed)) in enumerate(shown.items()):
        y = h + 10 + 20 * j
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        parts.append(f'<line x1="70" y1="{y}" x2="110" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="118" y="{y + 4}" font-size="12">{esc(label)}</text>')
    parts.append("</svg>")
    open(out, "w").write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
