"""A classification run's report section: what the eval stage measures for it, and how report.json's
figures read in the terminal, report.md and report.html.

report.json holds `agreement.{train,heldout}.{top1,top5,kl,js,samples}`, `accuracy.{teacher,student}`,
calibration, reliability bins, per-class agreement and the confusion matrix per split, the CPU
latency of both models and the gallery of the worst held-out rows.
"""

from __future__ import annotations

from html import escape

from pipeline.tasks.report_format import faster, fmt, html_table, kwargs_text, markdown_table, ms

TITLE = "Distillation report"
AGREEMENT_KINDS = ("top1", "top5", "kl", "js")


# -- measuring ------------------------------------------------------------------------------------
def sections(values: dict[str, dict]) -> dict:
    """Split -> computed metric values, reshaped into the report's sections."""
    from pipeline.tasks.metrics import per_class_agreement

    out = {"agreement": {}, "calibration": {}, "reliability": {}, "per_class_agreement": {}, "confusion": {}}
    for split, v in values.items():
        out["agreement"][split] = {**{k: v[k] for k in AGREEMENT_KINDS}, "samples": v["samples"]}
        sources = {"student_vs_teacher": "ece", "teacher": "teacher_ece", "student": "student_ece"}
        present = {name: v[kind] for name, kind in sources.items() if kind in v}
        out["calibration"][split] = {name: (c or {}).get("ece") for name, c in present.items()}
        out["reliability"][split] = {name: c["bins"] for name, c in present.items() if c}
        out["per_class_agreement"][split] = per_class_agreement(v["confusion"])
        out["confusion"][split] = v["confusion"]
    return out


def build(ctx) -> dict:
    """The section's fields, from the eval stage's context (pipeline.evaluate.stage.EvalContext):
    the shards' metrics with the held-out worst rows, the real test split (the teacher runs on it),
    and both models' CPU latency."""
    values = ctx.evaluate_splits(keep_worst=True)
    gallery = {"split": "heldout", "input_space": ctx.card.input_space,
               "parameters": [p["name"] for p in ctx.card.parameters or []],
               "rows": values["heldout"].pop("worst", [])}
    test = ctx.evaluate_real()
    values["test"] = test
    return {**sections(values),
            "accuracy": {"teacher": test.get("teacher_accuracy"), "student": test.get("student_accuracy"),
                         "test_samples": test["samples"]},
            "latency": ctx.latency(), "gallery": gallery, "classes": list(ctx.teacher_card.classes)}


# -- reading --------------------------------------------------------------------------------------
def agreement_table(report) -> list[list[str]]:
    rows = [["split", "samples", "top-1 agreement", "top-5 agreement", "KL(teacher‖student)", "JS", "ECE vs teacher"]]
    for split, m in report.agreement.items():
        ece = report.calibration.get(split, {}).get("student_vs_teacher")
        rows.append([split, f"{m['samples']:,}", fmt(m["top1"]), fmt(m["top5"]), fmt(m["kl"], 5),
                     fmt(m.get("js"), 5), fmt(ece)])
    return rows


def calibration_line(report) -> str | None:
    test = report.calibration.get("test", {})
    if "teacher" not in test:
        return None
    return f"calibration on real test data (ECE): teacher {fmt(test['teacher'])}, student {fmt(test.get('student'))}"


def latency_lines(report) -> list[str]:
    lat = report.latency
    if not lat:
        return []
    t, s, x = lat["teacher"], lat["student"], lat["speedup"]
    return [(f"CPU latency ({lat['threads']} thread(s)), batch 1: teacher {ms(t['batch1_ms'])}, "
             f"student {ms(s['batch1_ms'])} ({faster(x['batch1'])}); batch 256: teacher "
             f"{ms(t['batch256_ms'])}, student {ms(s['batch256_ms'])} ({faster(x['batch256'])})")]


def _size_ratio(teacher: int, student: int) -> str:
    if student <= teacher:
        return f"{teacher / student:.1f}x fewer"
    return f"{student / teacher:.1f}x more"


def weakest_classes(report, split: str = "heldout", limit: int = 3) -> list[tuple[str, float]]:
    values = report.per_class_agreement.get(split) or []
    pairs = [(report.classes[i], v) for i, v in enumerate(values) if v is not None and i < len(report.classes)]
    return sorted(pairs, key=lambda p: p[1])[:limit]


def gate_line(report) -> str | None:
    if report.gate_passed is None:
        return None
    top1 = report.agreement.get("heldout", {}).get("top1")
    if top1 is None:
        return (f"promotion gate: held-out top-1 agreement >= {report.min_agreement}: FAILED "
                "(no held-out shards to measure it on; set data.heldout_shards)")
    verdict = "passed" if report.gate_passed else "FAILED"
    return f"promotion gate: held-out top-1 agreement {top1:.4f} >= {report.min_agreement}: {verdict}"


def gate_html(report) -> str:
    top1 = report.agreement.get("heldout", {}).get("top1")
    measured = "no held-out shards" if top1 is None else f"held-out top-1 agreement {top1:.4f}"
    return f"{escape(measured)} against a bar of {report.min_agreement}."


def summary_lines(report) -> list[str]:
    from pipeline.tasks.metrics import top_confusions  # torchmetrics: imported when a report is shown

    p, a = report.params, report.accuracy
    lines = []
    if a.get("teacher") is not None:
        lines.append(f"test accuracy: teacher {fmt(a['teacher'])}, student {fmt(a['student'])} "
                     f"({a['test_samples']} real test inputs)")
    if p.get("teacher"):
        lines.append(f"parameters: teacher {p['teacher']:,}, student {p['student']:,} "
                     f"({_size_ratio(p['teacher'], p['student'])})")
    else:
        lines.append(f"parameters: student {p['student']:,} (the teacher has no countable weights)")
    lines += [line for line in [calibration_line(report)] if line]
    lines += latency_lines(report)
    weakest = weakest_classes(report)
    if weakest:
        lines.append("weakest held-out classes: " + ", ".join(f"{c} {v:.3f}" for c, v in weakest))
    confusions = top_confusions(report.confusion.get("heldout"), report.classes, limit=3)
    if confusions:
        lines.append("most frequent held-out disagreements (teacher → student): "
                     + ", ".join(f"{c['teacher']}→{c['student']} ({c['count']})" for c in confusions))
    lines += [line for line in [gate_line(report)] if line]
    return lines


def terminal(report) -> str:
    from pipeline.tasks.report_format import text_table

    return "\n".join([text_table(agreement_table(report)), "", *summary_lines(report)])


def intro_markdown(report) -> str:
    t, s = report.teacher, report.student
    return (f"Teacher `{t.get('kind', 'torch')} {t.get('arch') or ''}` (fingerprint `{str(t.get('fingerprint'))[:12]}`, "
            f"dataset {t.get('dataset')}); student `{s.get('arch')}` {kwargs_text(s)}, trained {s.get('epochs')} epochs.")


def intro_html(report) -> str:
    t, s = report.teacher, report.student
    teacher_params = report.params.get("teacher")
    size = f"{teacher_params:,} parameters, " if teacher_params else ""
    shape = (f"width {s.get('width')}, depth {s.get('depth')}" if s.get("width") is not None
             else escape(kwargs_text(s)))
    return (f"Teacher <code>{escape(str(t.get('kind', 'torch')))} {escape(str(t.get('arch') or ''))}</code> ({size}"
            f"fingerprint <code>{escape(str(t.get('fingerprint'))[:12])}</code>, dataset {escape(str(t.get('dataset')))}); "
            f"student <code>{escape(str(s.get('arch')))}</code> {shape} "
            f"({report.params.get('student', 0):,} parameters), trained {s.get('epochs')} epochs.")


def markdown_lines(report) -> list[str]:
    return ["## Student–teacher agreement", "", markdown_table(agreement_table(report)), "",
            *[f"- {line}" for line in summary_lines(report)], ""]


def html_head(report) -> list[str]:
    summary = "".join(f"<li>{escape(line)}</li>" for line in summary_lines(report) if not line.startswith("promotion"))
    return ["<h2>Student–teacher agreement</h2>", html_table(agreement_table(report)), f"<ul>{summary}</ul>"]


def _per_class_table(report) -> str:
    splits = [s for s, v in report.per_class_agreement.items() if v]
    if not splits or not report.classes:
        return ""
    rows = [["class", *splits]]
    for i, name in enumerate(report.classes):
        rows.append([name, *("–" if report.per_class_agreement[s][i] is None else f"{report.per_class_agreement[s][i]:.4f}"
                             for s in splits)])
    return "<h2>Agreement per class</h2>" + html_table(rows)


def _confusions(report) -> str:
    from pipeline.tasks.metrics import top_confusions

    pairs = top_confusions(report.confusion.get("heldout"), report.classes, limit=8)
    if not pairs:
        return ""
    rows = [["teacher's class", "student's class", "held-out inputs"]]
    rows += [[p["teacher"], p["student"], f"{p['count']:,}"] for p in pairs]
    return "<h2>Most frequent disagreements</h2>" + html_table(rows)


def _definitions() -> str:
    from pipeline.tasks.metrics import METRICS

    items = "".join(f"<li><code>{escape(k.name)}</code>: {escape(k.description)}</li>" for k in METRICS.values())
    return f'<h2>Definitions</h2><ul class="muted">{items}</ul>'


def html_tail(report, figs: dict[str, tuple[str, bytes]], figure_html) -> list[str]:
    """After the gallery and the rounds: latency, the figures, per-class agreement, confusions, the
    sweep (its own figure beside its table) and the metrics' definitions."""
    parts = []
    if latency_lines(report):
        lat = report.latency
        rows = [["model", "batch 1", "batch 256"]]
        for who in ("teacher", "student"):
            rows.append([who, f"{lat[who]['batch1_ms']:.3f} ms", f"{lat[who]['batch256_ms']:.3f} ms"])
        rows.append(["speed-up", f"{lat['speedup']['batch1']:.1f}x", f"{lat['speedup']['batch256']:.1f}x"])
        parts += ["<h2>CPU latency</h2>", html_table(rows),
                  f"<p class='muted'>{lat['threads']} torch thread(s); {escape(lat.get('method', ''))}.</p>"]
    parts += [figure_html(caption, png) for name, (caption, png) in figs.items() if name != "sweep"]
    parts += [_per_class_table(report), _confusions(report)]
    if report.sweep and report.sweep.get("trials"):
        parts += ["<h2>Capacity sweep</h2>", html_table(sweep_table(report.sweep))]
        if "sweep" in figs:
            parts.append(figure_html(*figs["sweep"]))
    return parts + [_definitions()]


def figures(report) -> dict[str, tuple[str, bytes]]:
    from pipeline.tasks import classification_plots as plots

    out = {}
    if any(report.per_class_agreement.values()) and report.classes:
        out["per_class"] = ("Disagreement (1 − top-1 agreement) within each of the teacher's classes.",
                            plots.per_class_disagreement(report.per_class_agreement, report.classes))
    if report.reliability:
        out["reliability"] = (("Reliability diagrams: how often a prediction made with a given confidence is "
                              "right (against true labels, left) or agrees with the teacher (right)."),
                              plots.reliability(report.reliability, report.calibration))
    split = next((s for s in ("heldout", "train") if report.confusion.get(s)), None)
    if split and report.classes:
        out["confusion"] = ((f"Student against teacher on the {split} shards: which class the student picks "
                            "instead of the teacher's."), plots.confusion(report.confusion[split], report.classes, split))
    if report.sweep and report.sweep.get("trials"):
        teacher_ms = (report.latency or {}).get("teacher", {}).get("batch1_ms")
        out["sweep"] = (("Capacity sweep: agreement against student size and CPU latency; the star marks the "
                        "smallest student reaching the target."),
                        plots.sweep(report.sweep, report.params.get("teacher"), teacher_ms))
    return out


# -- the capacity sweep ---------------------------------------------------------------------------
def trial_figures(values: dict[str, dict]) -> dict:
    """What a sweep trial records of its splits' metric values."""
    splits = list(values)
    return {**{kind: {s: values[s][kind] for s in splits} for kind in AGREEMENT_KINDS},
            "agreement": {s: values[s]["top1"] for s in splits}}


def trial_value(trial: dict, quantile: str) -> float | None:
    return trial["agreement"]["heldout"]


def sweep_table(sweep: dict) -> list[list[str]]:
    rows = [["student", "params", "train top-1", "heldout top-1", "heldout KL", "batch-1 latency",
             "batch-256 latency", "epochs", ""]]
    smallest = (sweep.get("smallest") or {}).get("name")
    for t in sorted(sweep["trials"], key=lambda t: t["params"]):
        lat = t.get("latency") or {}
        mark = f"◀ smallest reaching {sweep['target']}" if t["name"] == smallest else ""
        rows.append([t["name"], f"{t['params']:,}", fmt(t["agreement"]["train"]), fmt(t["agreement"]["heldout"]),
                     fmt(t.get("kl", {}).get("heldout"), 5), ms(lat.get("batch1_ms")), ms(lat.get("batch256_ms")),
                     str(t.get("epochs", "")), mark])
    return rows


def sweep_figure(sweep: dict) -> bytes:
    from pipeline.tasks import classification_plots as plots

    teacher = sweep.get("teacher") or {}
    return plots.sweep(sweep, teacher.get("params"), (teacher.get("latency") or {}).get("batch1_ms"))


def trial_line(trial: dict, quantile: str) -> str:
    return f"held-out top-1 agreement {trial['agreement']['heldout']:.4f}"


def sweep_result_line(sweep: dict) -> str:
    return f"reaching held-out agreement {sweep['target']}"
