"""The demo's answer as text: the endpoints table (printed, Markdown, HTML), every arm's differences, the reference
answer shipped with the base, and whether this run reproduced the reference's arms for the seeds both have.

A contrast with one training seed has a difference and no interval: every table says "no CI" there, never NaN."""

from __future__ import annotations

import numpy as np

from .plan import ENDPOINTS, PRIMARY_ENDPOINT

# The reproduction check: a run from the same base, settings and seeds on the same kind of CPU gives the same
# numbers to the last digit (every step is seeded); CPU kinds round differently (AVX2 runs fp32, AVX-512 with native
# bf16 runs bf16 autocast), so elsewhere the check reports how far apart they are.
REPRODUCED_WITHIN = 1e-6
# What must match for a run to be a reproduction of the reference at all (the seeds are matched one by one).
COMPARED_SETTINGS = ("sampling_seeds", "samples", "eval_length", "shared", "stages", "arms")


def interval(c: dict, digits: int = 3) -> str:
    if c["ci95"] is None:
        return "no CI"
    lo, hi = c["ci95"]
    return f"({lo:+.{digits}f}, {hi:+.{digits}f})"


def p_value(c: dict) -> str:
    return "-" if c["p"] is None else f"{c['p']:.2g}"


def arm_mean(results: dict, arm: str, metric: str) -> float:
    return float(np.mean([v[metric] for v in results["arms"][arm].values()]))


def endpoint_rows(results: dict, arm: str = "foresight") -> list[list[str]]:
    """[metric, baseline, arm, difference (95% CI), p, seeds better] per endpoint the results hold."""
    rows = []
    for m in ENDPOINTS:
        c = results["contrasts"].get(arm, {}).get(m)
        if c is not None:
            rows.append([m, f"{arm_mean(results, 'baseline', m):.3f}", f"{arm_mean(results, arm, m):.3f}",
                         f"{c['mean_diff']:+.3f} {interval(c)}", p_value(c), f"{c['seeds_better']} of {c['n']}"])
    return rows


HEADER = ["metric", "baseline", "foresight", "difference (95% CI)", "p", "seeds better"]


def markdown_table(results: dict, arm: str = "foresight") -> str:
    """results.md: the endpoints of one arm against the baseline (means over training seeds, each the mean over
    its sampling seeds), for a README or an issue."""
    head = ["metric", "baseline", arm] + HEADER[3:]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in endpoint_rows(results, arm)]
    return "\n".join(lines) + f"\n\n{results['verdict']}\n"


def arms_table(results: dict) -> str:
    """With arms beyond the two (the ablation, the dose): every arm's paired difference from the baseline on each
    endpoint (Markdown; empty for two arms)."""
    arms = [a for a in results["contrasts"] if a != "foresight"]
    if not arms:
        return ""
    rows = []
    for arm in ["foresight"] + arms:
        cells = []
        for m in ENDPOINTS:
            c = results["contrasts"][arm].get(m)
            ci = "" if c is None or c["ci95"] is None else f" {interval(c)}"
            cells.append("" if c is None else f"{c['mean_diff']:+.3f}{ci}")
        rows.append(f"| {arm} | " + " | ".join(cells) + " |")
    n = results["contrasts"]["foresight"][PRIMARY_ENDPOINT]["n"]
    return (f"\nEvery arm minus the baseline, paired over {n} training seed(s)"
            f"{' (95% CI)' if n >= 2 else ' (one seed: no interval)'}:\n\n"
            f"| arm | {' | '.join(ENDPOINTS)} |\n|---|{'---|' * len(ENDPOINTS)}\n" + "\n".join(rows) + "\n")


def long_horizon_table(lh: dict) -> str:
    """results.md's long-horizon part: identity and motion kept per horizon (real clips, each arm), and the declared
    endpoints at H* with their paired intervals."""
    arms = list(lh["arms"])
    horizons = sorted({int(k.split("@")[1][:-1]) for k in lh["real"]})
    mean = lambda arm, m: float(np.mean([v[m] for v in lh["arms"][arm].values()]))  # noqa: E731
    lines = [f"\nLong horizon: H* = {lh['horizon']}x ({lh['why']}).\n",
             "| horizon | identity: real | " + " | ".join(f"identity: {a}" for a in arms)
             + " | motion: real (px/frame) | " + " | ".join(f"motion kept: {a}" for a in arms) + " |",
             "|" + "---|" * (3 + 2 * len(arms))]
    for h in horizons:
        lines.append(f"| {h}x | {lh['real'][f'identity@{h}x']:.3f} | "
                     + " | ".join(f"{mean(a, f'identity@{h}x'):.3f}" for a in arms)
                     + f" | {lh['real'][f'motion@{h}x']:.3f} | "
                     + " | ".join(f"{mean(a, f'motion_kept@{h}x'):.3f}" for a in arms) + " |")
    for arm, by_metric in lh["contrasts"].items():
        for m in lh["endpoints"]:
            c = by_metric[m]
            lines.append(f"\n{arm} - baseline, {m}: {c['mean_diff']:+.4f} {interval(c, 4)}, p {p_value(c)}, "
                         f"{c['seeds_better']} of {c['n']} training seeds better")
    return "\n".join(lines) + "\n"


def long_horizon_lines(lh: dict | None) -> list[str]:
    """The declared long-horizon endpoints as printed: H*, why, and foresight - baseline at it (nothing for the
    results of a demo made before the long horizon existed)."""
    if lh is None:
        return []
    c = lh["contrasts"]["foresight"]
    return [f"  long horizon: H* = {lh['horizon']}x ({lh['why']})"] + [
        f"    {m}: foresight - baseline {c[m]['mean_diff']:+.3f} {interval(c[m])}" for m in lh["endpoints"]]


def contrast_table(contrasts: dict) -> str:
    """The endpoints' contrasts (HTML), for the report."""
    rows = []
    for arm, by_metric in contrasts.items():
        for m in ENDPOINTS:
            c = by_metric.get(m)
            if c is not None:
                rows.append(f"<tr><td>{arm}</td><td>{m}</td><td>{c['mean_diff']:+.4f}</td><td>{interval(c, 4)}</td>"
                            f"<td>{p_value(c)}</td><td>{c['seeds_better']} of {c['n']}</td></tr>")
    return ("<h2>Paired contrasts over training seeds (arm &minus; baseline)</h2><table><tr><th>arm</th><th>metric</th>"
            "<th>mean diff</th><th>95% CI</th><th>p</th><th>seeds better</th></tr>" + "".join(rows) + "</table>")


def text_table(rows: list[list[str]], header: list[str] = HEADER, indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + rows]


def design(results: dict) -> str:
    plan = results["plan"]["demo"]
    return (f"{len(plan['seeds'])} training seed(s) x {len(plan['sampling_seeds'])} sampling seeds x "
            f"{plan['samples']} videos")


# --------------------------------------------------------------------------------------------------
# The reference answer and the reproduction check


def reproduction(results: dict, reference: dict) -> dict:
    """How this run compares with the reference for the (arm, training seed) pairs both hold: the largest absolute
    difference over the metrics both have, and where. `comparable` is False (with the setting that differs) when
    the two were not made with the same evaluation and stages."""
    mine, theirs = results["plan"]["demo"], reference["plan"]["demo"]
    differs = [k for k in COMPARED_SETTINGS if k != "arms" and mine.get(k) != theirs.get(k)]
    differs += [f"arms.{a}" for a in mine["arms"] if a in theirs["arms"] and mine["arms"][a] != theirs["arms"][a]]
    pairs, worst = 0, (0.0, None)
    for arm, seeds in results["arms"].items():
        for seed, metrics in seeds.items():
            ref = reference["arms"].get(arm, {}).get(seed)
            if ref is None:
                continue
            pairs += 1
            for m in set(metrics) & set(ref):
                d = abs(metrics[m] - ref[m])
                if d > worst[0] or worst[1] is None:
                    worst = (d, f"{m}, {arm} seed {seed}")
    return {"comparable": not differs, "differs": differs, "pairs": pairs, "max_abs_diff": worst[0],
            "where": worst[1], "reproduced": bool(pairs) and not differs and worst[0] <= REPRODUCED_WITHIN}


def reproduction_line(check: dict, reference: dict, cpu: str) -> str:
    if not check["comparable"]:
        return (f"reproduction: not checked: this run's settings differ from the reference's "
                f"({', '.join(check['differs'])})")
    if not check["pairs"]:
        return "reproduction: not checked: this run has no training seed the reference has"
    if check["reproduced"]:
        return (f"reproduction: the reference's arms for these seeds are reproduced ({check['pairs']} arm x seed "
                f"pairs, every metric within {REPRODUCED_WITHIN:g}; max |difference| {check['max_abs_diff']:.2g})")
    return (f"reproduction: NOT reproduced within {REPRODUCED_WITHIN:g}: max |difference| {check['max_abs_diff']:.4g} "
            f"({check['where']}). The reference was made on {reference.get('cpu')}, this run on {cpu}; CPU kinds "
            f"round differently, so only the same kind is expected to match to the last digit")


def summary_lines(results: dict, reference: dict | None) -> list[str]:
    """What `mirai demo` prints at the end: the reference answer (when the base ships one), this run's table and
    verdict, the reproduction check, and what an interval takes."""
    lines = []
    if reference is not None:
        lines += [f"The answer shipped with the base ({design(reference)}; `{reference.get('command')}`, "
                  f"{reference.get('minutes', 0):.1f} min on {reference.get('cpu')}):"]
        lines += text_table(endpoint_rows(reference)) + [f"  verdict: {reference['verdict']}", ""]
    lines += [f"This run ({design(results)}; {results['minutes']:.1f} min on {results['cpu']}):"]
    lines += text_table(endpoint_rows(results))
    extra = [a for a in results["contrasts"] if a != "foresight"]
    for arm in extra:
        lines += [f"  {arm} minus baseline:"] + text_table(endpoint_rows(results, arm))
    lines += [f"  verdict: {results['verdict']}"] + long_horizon_lines(results.get("long_horizon"))
    if reference is not None:
        lines += [reproduction_line(results["reproduction"], reference, results["cpu"])]
    n = len(results["plan"]["demo"]["seeds"])
    if n < 2:
        per_seed = results["minutes"] / n
        lines += [f"An interval needs 2 or more training seeds: `mirai demo --seeds 0 1 2` (the seeds done here are "
                  f"reused; about {per_seed * (3 - n):.0f} more min on this machine at this run's {per_seed:.1f} min "
                  f"per training seed)"]
    return lines
