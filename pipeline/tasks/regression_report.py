"""A regression run's (a surrogate's) report section: what the eval stage measures for it, and how
report.json's figures read in the terminal, report.md and report.html.

report.json holds `regression.{train,heldout}` ({"rel_l2": {median, p95, p99, max, mean}, "max_abs",
"r2", "r2_mean", "within_tolerance", "samples"}), the tolerance, the parameter names and the
figures' data under `regression.details`; `speed` (the simulator's samples/s while labeling, the
student's on this CPU) and `speedup` (student over simulator at batch 1 and 1024).
"""

from __future__ import annotations

from html import escape

from pipeline.errors import UserError
from pipeline.tasks.report_format import fmt, html_table, kwargs_text, markdown_table, ms, sci, text_table

TITLE = "Surrogate report"
TRIAL_KEYS = ("rel_l2", "max_abs", "r2_mean", "within_tolerance")


# -- measuring ------------------------------------------------------------------------------------
def heatmap_axes(names: list[str], heatmap: list[str] | None) -> tuple[int, int]:
    chosen = heatmap or names[:2]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise UserError(f"eval.heatmap names {', '.join(unknown)}, not parameters of this run ({', '.join(names)}).")
    return names.index(chosen[0]), names.index(chosen[-1])


def build(ctx) -> dict:
    """The section's fields, from the eval stage's context (pipeline.evaluate.stage.EvalContext):
    errors on the training and held-out shards, the figures' data, and speed."""
    card = ctx.card
    # Named parameters (vectors); a field's inputs have channels, not names, and no parameter grid.
    names = [p["name"] for p in (card.parameters or []) if "name" in p]
    if not names and len(card.input_shape) == 1:
        names = [str(i) for i in range(card.input_shape[0])]
    axes = heatmap_axes(names, ctx.cfg.eval.heatmap) if names else (0, 0)
    values = ctx.evaluate_splits(keep_worst=False)
    details = ctx.heldout_details(names, axes)
    speed = {"teacher": ctx.teacher_speed()}
    student = ctx.student_speed()
    if student is not None:
        speed["student"] = student
    return {"regression": {**values, "tolerance": ctx.cfg.task.tolerance, "parameters": names, "details": details,
                           "target_transform": card.target_transform},
            "speed": speed, "speedup": speedup(speed["teacher"], student) if student is not None else None}


def speedup(teacher: dict, student: dict) -> dict:
    rate = teacher.get("samples_per_s")
    if not rate:
        return {"batch1": None, "batch256": None, "batch1024": None}
    return {f"batch{b}": student[f"samples_per_s_batch{b}"] / rate for b in (1, 256, 1024)
            if f"samples_per_s_batch{b}" in student}


# -- reading --------------------------------------------------------------------------------------
def error_table(report) -> list[list[str]]:
    rows = [["split", "samples", "rel. L2 median", "p95", "p99", "max", "max |error|", "R² (mean)",
             f"within {report.regression.get('tolerance', '')}"]]
    order = {"train": 0, "heldout": 1, "test": 2}  # pipeline order; report.json stores keys sorted
    for split, m in sorted(report.regression.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])):
        if not isinstance(m, dict) or "rel_l2" not in m:
            continue
        r = m["rel_l2"] or {}
        rows.append([split, f"{m['samples']:,}", *(sci(r.get(q)) for q in ("median", "p95", "p99", "max")),
                     sci(m.get("max_abs")), fmt(m.get("r2_mean"), 5), fmt(m.get("within_tolerance"))])
    return rows


def gate_line(report) -> str | None:
    if report.gate_passed is None:
        return None
    q, value = report.rel_error_quantile, report.gate_value
    if value is None:
        return f"promotion gate: held-out relative L2 error {q} <= {report.max_rel_error}: FAILED (no held-out shards)"
    verdict = "passed" if report.gate_passed else "FAILED"
    return f"promotion gate: held-out relative L2 error {q} {value:.3g} <= {report.max_rel_error}: {verdict}"


def gate_html(report) -> str:
    return escape(gate_line(report) or "")


def summary_lines(report) -> list[str]:
    lines = []
    speed, x = report.speed or {}, report.speedup or {}
    t, s = speed.get("teacher") or {}, speed.get("student") or {}
    if t.get("samples_per_s") and s:
        lines.append(f"speed: simulator {t['samples_per_s']:,.0f} samples/s while labeling (all actors; "
                     f"{t.get('samples_per_s_per_actor') or 0:,.0f} per actor), student "
                     f"{s['samples_per_s_batch1024']:,.0f} samples/s at batch 1024 ({s['threads_batch1024']} threads, "
                     f"{x['batch1024']:,.0f}x faster; {x.get('batch256') or 0:,.0f}x at batch 256) and {s['samples_per_s_batch1']:,.0f} at batch 1 (1 thread)")
    lines.append(f"parameters: student {report.params.get('student', 0):,}")
    for split in ("train", "heldout"):
        vrmse = ((report.regression or {}).get(split) or {}).get("vrmse")
        if vrmse:
            lines.append(f"{split} VRMSE per output channel (1.0: no better than the field's mean): " + ", ".join(
                f"channel {v['channel']} median {v['median']:.3g}, p95 {v['p95']:.3g}" for v in vrmse))
    transform = (report.regression or {}).get("target_transform")
    if transform and transform.get("channels"):
        from pipeline.tasks.target_transforms import transform_words

        lines.append("targets: per output channel, " + "; ".join(
            f"{transform_words(c['name'], c['value'])} ({c.get('reason', '')})" for c in transform["channels"])
            + " before standardising; errors are measured on physical values")
    elif transform and transform.get("name"):
        from pipeline.tasks.target_transforms import transform_words

        lines.append(f"targets: transform {transform_words(transform['name'], transform['value'])} before "
                     f"standardising ({transform.get('reason', '')}); errors are measured on physical values")
    for split, message in (report.first_errors or {}).items():
        if message:
            lines.append(f"{report.rejected_rows.get(split, 0)} {split} rows rejected; the simulator's first failure: {message}")
    lines += [line for line in [gate_line(report)] if line]
    return lines


def terminal(report) -> str:
    return "\n".join([text_table(error_table(report)), "", *summary_lines(report)])


def intro_markdown(report) -> str:
    t, s = report.teacher, report.student
    return (f"Simulator `{t.get('arch')}` (version {t.get('version')}, fingerprint `{str(t.get('fingerprint'))[:12]}`); "
            f"student `{s.get('arch')}` {kwargs_text(s)}, trained {s.get('epochs')} epochs.")


def intro_html(report) -> str:
    t, s = report.teacher, report.student
    return (f"Simulator <code>{escape(str(t.get('arch')))}</code> (version {escape(str(t.get('version')))}, "
            f"fingerprint <code>{escape(str(t.get('fingerprint'))[:12])}</code>); student "
            f"<code>{escape(str(s.get('arch')))}</code> {escape(kwargs_text(s))} "
            f"({report.params.get('student', 0):,} parameters), trained {s.get('epochs')} epochs.")


def markdown_lines(report) -> list[str]:
    return ["## Relative error", "", markdown_table(error_table(report)), "",
            *[f"- {line}" for line in summary_lines(report)], ""]


def html_head(report) -> list[str]:
    lines = "".join(f"<li>{escape(line)}</li>" for line in summary_lines(report) if not line.startswith("promotion"))
    return ["<h2>Relative error</h2>", html_table(error_table(report)), f"<ul>{lines}</ul>"]


def html_tail(report, figs: dict[str, tuple[str, bytes]], figure_html) -> list[str]:
    parts = [figure_html(caption, png) for name, (caption, png) in figs.items() if name != "sweep"]
    if report.sweep and report.sweep.get("trials"):
        parts += ["<h2>Capacity sweep</h2>", html_table(sweep_table(report.sweep))]
        if "sweep" in figs:
            parts.append(figure_html(*figs["sweep"]))
    return parts


def figures(report) -> dict[str, tuple[str, bytes]]:
    from pipeline.tasks import regression_plots

    out = regression_plots.figures(report)
    if report.sweep and report.sweep.get("trials"):
        out["sweep"] = (("Capacity sweep: the held-out relative error against student size; the star marks the "
                         "smallest student within the bar."), sweep_figure(report.sweep))
    return out


# -- the capacity sweep ---------------------------------------------------------------------------
def trial_figures(values: dict[str, dict]) -> dict:
    """What a sweep trial records of its splits' metric values."""
    return {key: {s: v.get(key) for s, v in values.items()} for key in TRIAL_KEYS}


def trial_value(trial: dict, quantile: str) -> float | None:
    return (trial["rel_l2"]["heldout"] or {}).get(quantile)


def sweep_table(sweep: dict) -> list[list[str]]:
    q = sweep.get("quantile", "p95")
    rows = [["student", "params", f"train rel. L2 {q}", f"heldout rel. L2 {q}", "heldout median",
             "batch-1 latency", "epochs", ""]]
    smallest = (sweep.get("smallest") or {}).get("name")
    for t in sorted(sweep["trials"], key=lambda t: t["params"]):
        lat = t.get("latency") or {}
        train, held = t["rel_l2"]["train"] or {}, t["rel_l2"]["heldout"] or {}
        mark = f"◀ smallest within {sweep['target']:.3g}" if t["name"] == smallest else ""
        rows.append([t["name"], f"{t['params']:,}", sci(train.get(q)), sci(held.get(q)), sci(held.get("median")),
                     ms(lat.get("batch1_ms")), str(t.get("epochs", "")), mark])
    return rows


def sweep_figure(sweep: dict) -> bytes:
    from pipeline.tasks import regression_plots

    return regression_plots.sweep(sweep)


def trial_line(trial: dict, quantile: str) -> str:
    value = trial_value(trial, quantile)
    return f"held-out relative L2 error {quantile} {'–' if value is None else f'{value:.3g}'}"


def sweep_result_line(sweep: dict) -> str:
    return f"within held-out relative L2 error {sweep.get('quantile', 'p95')} {sweep['target']:.3g}"
