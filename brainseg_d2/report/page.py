"""HTML report of an evaluation, for the Detectron2 evaluator's folder and ``brainseg-evaluate``'s.

Reads the per-case table, the summary and the per-lesion table that either entry
point writes (:class:`~brainseg_d2.evaluation.evaluator.BrainSegEvaluator`:
``brainseg_cases.csv``, ``brainseg_summary.json``, ``brainseg_lesions.csv``, one
row per volume x name x variant; ``brainseg-evaluate``: ``cases.csv``,
``summary.json``, ``lesions.csv``, one row per case x name), aggregates the rows
with the function both entry points use
(:func:`~brainseg_d2.evaluation.case_summary.summarize_cases`), and renders the
Jinja2 template ``brainseg_d2/templates/report.html.j2`` (autoescaped; no HTML is
built here). The page is made so that it cannot mislead:

* every mean has its *n* beside it: the cases whose reference holds the name,
  and the BraTS-convention mean over all *N* cases next to it;
* both-empty scores (Dice 1 by convention) are flagged, and the HD95 penalty
  (374 mm, :data:`~brainseg_d2.evaluation.metrics.HD95_PENALTY_MM`) is labelled as
  a penalty wherever it enters a number;
* a per-name Dice distribution plot (box and points, matplotlib, embedded PNG);
* reference and predicted volumes and reference lesion volumes in mL;
* a baseline's numbers beside the model's when one is given (the demo's FLAIR
  baseline);
* links to the prediction NIfTIs, pictures, CSVs, summary and config (relative
  to the report), and the run: model, config, weights, versions and date;
* regions first, then only the classes/categories that are not a region (no
  duplicated rows), one per-case table per name, so tables fit the page.

Pictures (worst/best case thumbnails, the plot) are embedded as ``data:`` URIs;
the page loads nothing from anywhere else.

Command: ``brainseg-report --input D --output report.html`` (:mod:`brainseg_d2.cli.report`)
(``brainseg-evaluate`` writes ``report.html`` into its output folder itself). An
existing ``--output`` is replaced only if it is a report this module wrote (its
``<meta name="generator">`` says so), and never when it is one of the inputs.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from brainseg_d2.evaluation.results_files import (
    FoundResults,
    find_result_files,
    load_cases,
    load_lesion_volumes,
    load_summary,
)
from brainseg_d2.report.figures import dice_plot, extreme_cases
from brainseg_d2.report.tables import (
    baseline_rows,
    format_number,
    lesion_rows,
    overlap_rows,
    per_case_tables,
    relative_href,
    variants_in,
)
from brainseg_d2.utils.paths import check_not_input

__all__ = [
    "DEFAULT_TITLE",
    "GENERATOR",
    "TEMPLATE",
    "check_replaceable_report",
    "write_report",
]

#: The template, package data of brainseg_d2.
TEMPLATE = "report.html.j2"
#: In every report's head (the template writes it); an existing file is replaced
#: only if it holds this.
GENERATOR = '<meta name="generator" content="brainseg_d2.report">'
_DEFAULT_PENALTY = 374.0  # HD95_PENALTY_MM; the summary's own value wins
DEFAULT_TITLE = "Brain tumour segmentation: evaluation report"


def _lesion_note(settings: Mapping, lesion: Mapping) -> str:
    dilation = settings.get("lesion_dilation_iters", lesion.get("dilation_iters"))
    volume = settings.get("lesion_min_volume_mm3", lesion.get("min_lesion_volume"))
    if dilation is None or volume is None:
        return ("ground truth dilated and small lesions ignored as each case's BraTS task "
                "says (GLI, SSA, PED: 3 dilations, 50 mm³; MEN: 1, 50 mm³; MET: 1, 2 mm³)")
    smallest = format_number(float(volume), "{:g}")
    return (f"ground truth dilated {dilation} times, lesions of {smallest} "
            "mm³ or less ignored")


def _describe(value) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_describe(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    return format_number(value, "{:g}")


def _run_items(
    inputs: FoundResults, summary: Mapping, run_info: Mapping, base: Path, penalty: float
) -> list[dict]:
    items: list[dict] = []

    def add(label: str, value, href: str | None = None) -> None:
        if value is None or value == "":
            return
        items.append({"label": label, "value": _describe(value), "href": href})

    run = dict(summary.get("run") or {})
    if inputs.kind == "evaluator":
        add("Dataset", summary.get("dataset_name"))
        add("Target", summary.get("target"))
        add("Cases", summary.get("num_volumes"))
        add("Model", run.get("model"))
        config = run.get("config")
        if config:
            add("Config", config, relative_href(inputs.cases.parent / config, base))
        weights = run.get("weights")
        add("MODEL.WEIGHTS", f"{weights} (loaded at start; evaluations during training "
            "score the model as trained so far)" if weights
            else "— (the model evaluated in memory)")  # fmt: skip
        add("Output folder", run.get("output_dir"))
        add("Versions", run.get("versions"))
        add("Evaluated", run.get("date"))
        add("Ground truth", summary.get("ground_truth"))
        add("Post-processing (post)", summary.get("postprocess"))
        add("Empty slices", summary.get("empty_slice_policy"))
    else:
        add("Tool", f"{summary.get('tool', 'brainseg-evaluate')} {summary.get('version', '')}")
        add("Model", "not recorded: brainseg-evaluate scores label maps from any tool")
        add("Predictions", summary.get("pred_dir"))
        add("References", summary.get("ref_dir"))
        add("Cases", summary.get("num_cases"))
        add("Label conventions", summary.get("conventions"))
        add("Evaluated", summary.get("date"))
        missing = summary.get("missing_predictions") or []
        add("Missing predictions", f"{len(missing)} (scored Dice 0, HD95 {penalty:g} mm)"
            if missing else "none")  # fmt: skip
        add("Predictions without reference", len(summary.get("unmatched_predictions") or []))
    add("Scoring", summary.get("settings"))
    for label, value in run_info.items():
        if isinstance(value, Path):
            add(label, str(value), relative_href(value, base))
        else:
            add(label, value)
    return items


def _template_environment(template: str | Path | None):
    import jinja2

    if template is None:
        from importlib.resources import files

        folder, name = Path(str(files("brainseg_d2") / "templates")), TEMPLATE
    else:
        folder, name = Path(template).parent, Path(template).name
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    return env.get_template(name)


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------


def write_report(
    source: str | Path | tuple[str | Path, str | Path],
    out_html: str | Path,
    thumbnails: Mapping[str, str | Path] | None = None,
    title: str = DEFAULT_TITLE,
    *,
    num_extremes: int = 3,
    baseline: str | Path | None = None,
    baseline_name: str = "baseline",
    links: Mapping[str, Mapping[str, str | Path]] | None = None,
    run_info: Mapping[str, object] | None = None,
    template: str | Path | None = None,
) -> Path:
    """Write the HTML report of an evaluation (module docstring).

    Args:
        source: an output folder of the evaluator (``brainseg_cases.csv``,
            ``brainseg_summary.json``, ``brainseg_lesions.csv``) or of
            ``brainseg-evaluate`` (``cases.csv``, ``summary.json``,
            ``lesions.csv``), or a ``(cases_csv, summary_json)`` pair.
        out_html: file to write (parent folders are created).
        thumbnails: case id -> image file (PNG/JPEG) shown for the worst and
            best cases; embedded as JPEG data URIs, shrunk to ``THUMB_WIDTH`` px.
        title: page title and heading.
        num_extremes: number of worst and of best cases shown.
        baseline: per-case table of a baseline scored by the same code (the
            evaluator's columns), shown beside the model's region means.
        baseline_name: what the report calls the baseline.
        links: case id -> {label: file} (prediction NIfTI, pictures, ...);
            ``brainseg-evaluate``'s prediction and reference files are linked
            without asking.
        run_info: more run lines, label -> value (a ``Path`` becomes a link).
        template: a Jinja2 template file to render instead of the package's
            ``templates/report.html.j2`` (it gets the same context).

    Returns:
        ``out_html`` as a Path.

    Raises:
        ValueError: missing or unreadable inputs (the message names the file),
            or an ``out_html`` that is an input or a file this module did not write.
    """
    inputs = find_result_files(source)
    out = Path(out_html)
    extra_inputs = [p for p in (baseline,) if p is not None]
    check_replaceable_report(out, [inputs.cases, inputs.summary, *extra_inputs,
                                   *(thumbnails or {}).values()])  # fmt: skip
    rows = load_cases(inputs.cases)
    summary = load_summary(inputs.summary)
    settings = summary.get("settings") or {}
    penalty = float(settings.get("hd95_penalty_mm") or _DEFAULT_PENALTY)
    base = out.parent
    thumbnails = {str(k): Path(v) for k, v in (thumbnails or {}).items()}

    case_links: dict[str, list[dict]] = defaultdict(list)
    for case, files in (links or {}).items():
        case_links[str(case)] += [
            {"label": k, "href": relative_href(v, base)} for k, v in files.items()
        ]
    for row in rows:
        case = row["case_id"]
        if inputs.kind == "brainseg-evaluate" and case not in case_links:
            for label, field in (("prediction", "pred_file"), ("reference", "ref_file")):
                if row.get(field):
                    href = relative_href(row[field], base)
                    case_links[case].append({"label": label, "href": href})

    files = [
        {"label": p.name, "href": relative_href(p, base)}
        for p in (inputs.cases, inputs.lesions, inputs.summary)
        if p is not None and p.is_file()
    ]
    variants = variants_in(rows)
    rank_name, rank_variant, worst, best = extreme_cases(rows, thumbnails, num_extremes)
    baseline_block = None
    if baseline is not None:
        base_rows = load_cases(baseline)
        variant = variants[-1] if variants else ""
        files.append({"label": Path(baseline).name, "href": relative_href(baseline, base)})
        baseline_block = {
            "name": baseline_name,
            "variant": variant or "scored",
            "rows": baseline_rows(rows, base_rows, variant, penalty),
        }
    lesion_settings = settings.get("lesion") if isinstance(settings.get("lesion"), Mapping) else {}
    num_cases = len({r["case_id"] for r in rows})
    variant_note = (
        " (raw: score threshold only; post: after post-processing; a post-processed value is "
        "green where better than raw, red where worse)" if len(variants) > 1 else ""
    )
    from brainseg_d2 import __version__

    context = {
        "generator": _markup(GENERATOR),
        "title": title,
        "intro": f"{num_cases} cases, scored by {inputs.kind} "
        f"({inputs.cases.name}, {inputs.summary.name}).",
        "empty_score": format_number(float(settings.get("empty_score", 1.0)), "{:g}"),
        "penalty": format_number(penalty, "{:g}"),
        "lesion_note": _lesion_note(settings, lesion_settings),
        "run": _run_items(inputs, summary, dict(run_info or {}), base, penalty),
        "files": files,
        "warnings": [str(w) for w in summary.get("warnings") or []],
        "variant_note": variant_note,
        "show_variant": len(variants) > 1,
        "overlap": overlap_rows(rows, penalty),
        "lesionwise": lesion_rows(rows, penalty),
        "plot": dice_plot(rows),
        "baseline": baseline_block,
        "rank_name": rank_name,
        "rank_variant": rank_variant,
        "worst": worst,
        "best": best,
        "per_case": per_case_tables(
            rows, load_lesion_volumes(inputs.lesions), case_links, penalty
        ),
        "per_case_note": "HD95 in mm." if len(variants) < 2 else
        "HD95 in mm; lesion-wise columns of the last variant.",
        "version": __version__,
        "written": time.strftime("%Y-%m-%d %H:%M"),
    }
    page = _template_environment(template).render(**context)
    if GENERATOR not in page[:4096]:
        raise ValueError(f"template {template}: its <head> must hold {GENERATOR}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)  # complete or absent
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _markup(text: str):
    from markupsafe import Markup

    return Markup(text)


def check_replaceable_report(out: Path, inputs: Sequence[str | Path]) -> None:
    """Raise unless ``out`` may be written: not an input, and new or a report of ours.

    Raises:
        ValueError: one line naming ``out`` (and the input it would replace).
    """
    check_not_input(out, inputs, "report")
    if not os.path.lexists(out):
        return
    if not out.is_file() or out.is_symlink():
        raise ValueError(f"report {out} exists and is not a file; choose another --output")
    with open(out, "rb") as f:
        head = f.read(4096)
    if GENERATOR.encode() not in head:
        raise ValueError(
            f"{out} exists and is not a report written by brainseg_d2.report; nothing was "
            "replaced: choose another --output"
        )
