#!/usr/bin/env python3
"""Draws benches/soak.sh's figures (JSON) as an SVG: RSS, boot time and
datadir size against transactions sent, next to the curve measured before
history moved to disk (issue 16: 200,000 transfers in four rounds).

    benches/soak_plot.py soak.json soak.svg
"""
import json
import sys

# Issue 16's measurement, before: history rebuilt in RAM at every boot.
BEFORE = {
    "txs": [50_000, 100_000, 150_000, 200_000],
    "rss_mib": [84, 149, 199, 250],
    "boot_s": [0.65, 0.82, 1.30, 1.68],
    "datadir_mib": [129, 193, 257, 321],
}
PANELS = [
    ("rss_mib", "RSS at the end of a round (MiB)"),
    ("boot_s", "boot time (s)"),
    ("datadir_mib", "datadir (MiB)"),
]
W, H, PAD = 360, 240, 46


def scale(values, lo, hi, out_lo, out_hi):
    span = (hi - lo) or 1
    return [out_lo + (v - lo) * (out_hi - out_lo) / span for v in values]


def panel(x0, key, title, rows):
    xs_now = [r["txs"] for r in rows]
    ys_now = [r[key] for r in rows]
    x_max = max(xs_now + BEFORE["txs"])
    y_max = max(ys_now + BEFORE[key]) * 1.1
    out = [f'<g transform="translate({x0},0)">',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="black"/>',
           f'<line x1="{PAD}" y1="30" x2="{PAD}" y2="{H - PAD}" stroke="black"/>']
    for i in range(5):
        y_val = y_max * i / 4
        y = scale([y_val], 0, y_max, H - PAD, 30)[0]
        out.append(f'<text x="{PAD - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{y_val:.3g}</text>')
        x_val = x_max * i / 4
        x = scale([x_val], 0, x_max, PAD, W - 10)[0]
        out.append(f'<text x="{x:.1f}" y="{H - PAD + 14}" text-anchor="middle" font-size="10">{x_val / 1e6:.2g}M</text>')
    out.append(f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" font-size="11">transactions sent</text>')
    for xs, ys, colour in ((BEFORE["txs"], BEFORE[key], "#c0392b"), (xs_now, ys_now, "#2471a3")):
        px = scale(xs, 0, x_max, PAD, W - 10)
        py = scale(ys, 0, y_max, H - PAD, 30)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(px, py))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in zip(px, py))
    out.append("</g>")
    return out


def main():
    rows = json.load(open(sys.argv[1]))
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(PANELS)}" height="{H + 24}" font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>']
    for i, (key, title) in enumerate(PANELS):
        svg.extend(panel(i * W, key, title, rows))
    svg.append(f'<text x="10" y="{H + 18}" font-size="11" fill="#c0392b">before (history in RAM, issue 16)</text>')
    svg.append(f'<text x="260" y="{H + 18}" font-size="11" fill="#2471a3">now (history on disk)</text>')
    svg.append("</svg>")
    open(sys.argv[2], "w").write("\n".join(svg))


if __name__ == "__main__":
    main()
