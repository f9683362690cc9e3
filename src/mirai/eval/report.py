"""`mirai compare`: one self-contained HTML report comparing evaluated runs.

A table of mean and 95% CI over seeds for every metric at every rollout length, the difference of each run
to the first (paired t-test over shared seeds), drift curves (probe scores against time) as PNG plots and
side-by-side videos of the same seeds (GIF), all embedded so the file travels alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from ..data.datasets import DataError
from ..video import tile_batch, upscale

# What a report reads from every run's eval.json
EVAL_KEYS = ("summary", "per_seed", "curves", "seeds", "frames", "clip_frames", "run", "samples", "extractor")


def load_eval(run: str | Path) -> dict:
    path = Path(run) / "eval.json" if Path(run).is_dir() else Path(run)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `mirai eval --ckpt {run}` first")
    try:
        result = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not a readable eval.json ({e}); run `mirai eval --ckpt {run}` again") from None
    if not isinstance(result, dict):
        problems = ["not a mapping"]
    else:
        problems = [f"no '{k}'" for k in EVAL_KEYS if k not in result]
        problems = problems or [f"'{k}' is not a mapping" for k in EVAL_KEYS[:3] if not isinstance(result[k], dict)]
        problems = problems or ([] if isinstance(result["seeds"], list) and result["seeds"] else ["no seeds"])
    if problems:
        raise DataError(f"{path} is not a complete eval.json ({', '.join(problems)}); "
                        f"run `mirai eval --ckpt {run}` again")
    return result


def paired_difference(a: dict, b: dict, key: str) -> tuple[float, float, int]:
    """Mean difference b - a over the seeds both have, and the two-sided p-value of a paired t-test."""
    from scipy import stats

    seeds = [s for s in a["per_seed"] if s in b["per_seed"] and key in a["per_seed"][s] and key in b["per_seed"][s]]
    d = np.array([b["per_seed"][s][key] - a["per_seed"][s][key] for s in seeds], dtype=float)
    if len(d) < 2 or np.allclose(d, d[0]):
        return (float(d.mean()) if len(d) else float("nan")), float("nan"), len(d)
    return float(d.mean()), float(stats.ttest_1samp(d, 0.0).pvalue), len(d)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def drift_plots(evals: list[dict], names: list[str]) -> list[tuple[str, str]]:
    """One PNG per probe score: mean over seeds (band: min..max over seeds) against the frame index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for e in evals for c in e["curves"].values() for k in c})
    out = []
    for key in keys:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        for e, name in zip(evals, names):
            curves = np.array([c[key] for c in e["curves"].values() if key in c])
            x = np.arange(curves.shape[1])
            ax.plot(x, curves.mean(0), label=name)
            ax.fill_between(x, curves.min(0), curves.max(0), alpha=0.2)
        ax.axvline(evals[0]["clip_frames"] - 0.5, color="gray", ls=":", lw=1)
        ax.set_xlabel("frame (dotted: training length)")
        ax.set_ylabel(key)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
        out.append((key, _png(fig)))
        plt.close(fig)
    return out


def _gif(frames: np.ndarray) -> str:
    import imageio.v3 as iio

    buf = io.BytesIO()
    iio.imwrite(buf, frames, extension=".gif", duration=125, loop=0)
    return base64.b64encode(buf.getvalue()).decode()


def side_by_side(videos: list[np.ndarray], scale: int = 3) -> np.ndarray:
    """Videos uint8 (N, T, H, W, 3), one row per run: (T, rows * H, N * W, 3)."""

    rows = [tile_batch(v) for v in videos]
    T = min(r.shape[0] for r in rows)
    pad = np.full((T, 2, rows[0].shape[2], 3), 255, dtype=np.uint8)
    stacked = [x for r in rows for x in (r[:T], pad)][:-1]
    return upscale(np.concatenate(stacked, axis=1), scale)


def _cell(s: dict | None) -> str:
    return "" if s is None else f"{s['mean']:.4f} &plusmn; {s['ci95']:.4f}"


def write_report(runs: list[str], out: str | Path, videos: list[np.ndarray] | None = None, title: str = "Mirai comparison",
                 extra_html: str = "") -> Path:
    """One self-contained HTML page; `extra_html` (e.g. the demo's contrasts over training seeds) goes first."""
    evals = [load_eval(r) for r in runs]
    names = [Path(r).name for r in runs]
    keys = sorted({k for e in evals for k in e["summary"]})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    diffs = "".join(f"<th>{html.escape(n)} &minus; {html.escape(names[0])} (p)</th>" for n in names[1:])
    rows = []
    for k in keys:
        cells = "".join(f"<td>{_cell(e['summary'].get(k))}</td>" for e in evals)
        dcells = ""
        for e in evals[1:]:
            d, p, n = paired_difference(evals[0], e, k)
            mark = " class='sig'" if p == p and p < 0.05 else ""
            dcells += f"<td{mark}>{d:+.4f} ({'n/a' if p != p else f'{p:.3f}'}, n={n})</td>"
        rows.append(f"<tr><td>{html.escape(k)}</td>{cells}{dcells}</tr>")
    plots = "".join(f"<figure><img src='data:image/png;base64,{png}'><figcaption>{html.escape(k)}</figcaption></figure>"
                    for k, png in drift_plots(evals, names))
    vids = ""
    if videos:
        vids = (f"<h2>Side by side (rows: {', '.join(map(html.escape, names))}; same seeds and prompts)</h2>"
                f"<img src='data:image/gif;base64,{_gif(side_by_side(videos))}'>")
    meta = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(json.dumps({k: e[k] for k in ('run', 'frames', 'samples', 'seeds', 'extractor')}))}</li>"
                   for n, e in zip(names, evals))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}td.sig{{background:#ffe9a8}}figure{{display:inline-block;margin:6px}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>Mean &plusmn; half-width of the 95% t-interval over seeds; differences are paired over shared seeds (highlighted: p &lt; 0.05).
Names with <code>@extractor</code> use a substitute feature extractor: they follow VBench's formulas but are not VBench scores.
<code>@Nf</code> is the rollout length in frames.</p>
{extra_html}<ul>{meta}</ul>
<table><tr><th>metric</th>{head}{diffs}</tr>{''.join(rows)}</table>
<h2>Drift curves</h2>{plots}{vids}</body></html>"""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
