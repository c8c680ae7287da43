"""bench/plot_throughput.py RESULTS.tsv OUT.svg [TITLE]: msgs/s against sessions, one line per
server, one panel per message size, from bench/qmqp-throughput.sh's raw results (medians of the
runs that passed). Plain SVG written by hand: no plotting library is needed on the machine."""
import csv
import statistics
import sys
from xml.sax.saxutils import escape

path, out = sys.argv[1], sys.argv[2]
title = sys.argv[3] if len(sys.argv) > 3 else "bench/qmqp-throughput.sh"
rows = [r for r in csv.DictReader(open(path), delimiter="\t") if r["status"] == "ok"]
NAMES = {"sink": "qmqp-sink (stores nothing)", "nullq": "nullq serve", "postfix": "Postfix qmqpd"}
COLORS = {"sink": "#888888", "nullq": "#1f6fb4", "postfix": "#d0621b"}
servers = [s for s in ("sink", "nullq", "postfix") if any(r["server"] == s for r in rows)]
sizes = sorted({int(r["bytes"]) for r in rows})
sessions = sorted({int(r["sessions"]) for r in rows})


def median(server, size, sess):
    vals = [float(r["msgs/s"]) for r in rows
            if r["server"] == server and int(r["bytes"]) == size and int(r["sessions"]) == sess]
    return statistics.median(vals) if vals else None


W, H, PAD_L, PAD_R, PAD_T, PAD_B = 460, 340, 70, 20, 50, 60
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(sizes)}" height="{H + 40}" '
       f'font-family="sans-serif" font-size="12">',
       f'<rect width="100%" height="100%" fill="white"/>',
       f'<text x="10" y="20" font-size="13">{escape(title)}</text>']
for panel, size in enumerate(sizes):
    x0 = panel * W
    top = max([median(s, size, n) or 0 for s in servers for n in sessions] + [1])
    step = 10 ** (len(str(int(top))) - 1)
    top = (int(top / step) + 1) * step
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def px(i):
        return x0 + PAD_L + (plot_w * i / max(len(sessions) - 1, 1))

    def py(v):
        return PAD_T + plot_h - plot_h * v / top

    label = f"{size // 1024} KB messages" if size % 1024 == 0 else f"{size} B messages"
    svg.append(f'<text x="{x0 + PAD_L}" y="{PAD_T - 12}" font-weight="bold">{label}</text>')
    for k in range(6):
        v = top * k / 5
        svg.append(f'<line x1="{x0 + PAD_L}" x2="{x0 + W - PAD_R}" y1="{py(v):.1f}" '
                   f'y2="{py(v):.1f}" stroke="#e5e5e5"/>')
        svg.append(f'<text x="{x0 + PAD_L - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
    for i, n in enumerate(sessions):
        svg.append(f'<text x="{px(i):.1f}" y="{PAD_T + plot_h + 18}" text-anchor="middle">{n}</text>')
    svg.append(f'<text x="{x0 + PAD_L + plot_w / 2}" y="{PAD_T + plot_h + 38}" '
               f'text-anchor="middle">concurrent sessions (qmqp-source -s)</text>')
    svg.append(f'<text transform="translate({x0 + 16},{PAD_T + plot_h / 2}) rotate(-90)" '
               f'text-anchor="middle">messages/s accepted</text>')
    for j, server in enumerate(servers):
        points = [(px(i), py(v)) for i, n in enumerate(sessions)
                  if (v := median(server, size, n)) is not None]
        if not points:
            continue
        d = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        dash = ' stroke-dasharray="5,4"' if server == "sink" else ""
        svg.append(f'<polyline points="{d}" fill="none" stroke="{COLORS[server]}" '
                   f'stroke-width="2"{dash}/>')
        for x, y in points:
            svg.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[server]}"/>')
        ly = H + 10 + 0 * j
        lx = x0 + PAD_L + j * 140
        svg.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly}" y2="{ly}" stroke="{COLORS[server]}" '
                   f'stroke-width="2"{dash}/>')
        svg.append(f'<text x="{lx + 22}" y="{ly + 4}">{escape(NAMES[server])}</text>')
svg.append("</svg>")
open(out, "w").write("\n".join(svg) + "\n")
