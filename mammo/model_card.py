"""A model card per registered version, as Markdown and as a self-contained HTML page.

The card is built from what was recorded (``CardInputs``: the run's configs and data counts,
the clinical evaluations of ``mammo.clinical``, the subgroup table, the promotion decision)
into one list of blocks, rendered twice, so the two formats never disagree.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Block = tuple[str, Any]  # ("h1"|"h2"|"p"|"ul"|"table"|"img", content)
CALIBRATION_PNG = "calibration.png"

INTENDED_USE = (
    "Research and evaluation of a breast-level cancer score for screening mammography: each "
    "breast of a screening exam gets a probability of cancer from its views. It is not a "
    "medical device, does not localise lesions and does not replace a radiologist's reading; "
    "any use in a screening programme needs that programme's own prospective evaluation."
)


@dataclass(frozen=True)
class CardInputs:
    model: str
    version: str
    run_id: str
    data: Mapping[str, Any]  # location, hash, counts (rows per split), sites, machines
    configs: Mapping[str, Mapping[str, Any]]  # "training", "preprocessing", "split"
    threshold: float | None
    aggregation: str
    evaluations: Mapping[str, Mapping[str, Any] | None]  # "validation", "holdout"
    subgroups: Sequence[Mapping[str, Any]] = ()
    decision: Mapping[str, Any] | None = None
    synthetic: bool = False
    calibration_png: bytes | None = None
    notes: Sequence[str] = field(default_factory=tuple)


def blocks(card: CardInputs) -> list[Block]:
    out: list[Block] = [("h1", f"Model card: {card.model} version {card.version}")]
    out.append(("p", f"MLflow run `{card.run_id}`; data manifest `{card.data.get('hash', '')}`."))
    out += [("h2", "Intended use"), ("p", INTENDED_USE)]
    out += [("h2", "Data"), ("p", f"Decoded set: `{card.data.get('location', '')}`.")]
    for key, title in (("counts", "Split"), ("sites", "Site"), ("machines", "Machine")):
        rows = card.data.get(key) or []
        if rows:
            header = [title, "images", "patients", "breasts", "positive breasts"]
            out.append(("table", (header, [[r[k] for k in _COUNT_KEYS] for r in rows])))
    out.append(("h2", "Preprocessing and training"))
    for name, values in card.configs.items():
        out.append(("table", ([name, "value"], [[k, _cell(v)] for k, v in values.items()])))
    out.append(("h2", "Operating point"))
    threshold = "none (not a binary model)" if card.threshold is None else f"{card.threshold:.4f}"
    out.append(
        (
            "p",
            f"Threshold {threshold}, chosen once on the validation breasts (best F1) and only "
            f"applied to the holdout; views aggregated per breast by {card.aggregation}.",
        )
    )
    out += [("h2", "Performance (breast level, 95 % intervals)"), ("table", _performance(card))]
    if card.calibration_png is not None:
        out += [("h2", "Calibration"), ("img", (CALIBRATION_PNG, card.calibration_png))]
    if card.subgroups:
        out += [("h2", "Subgroups (holdout)"), ("table", _subgroups(card.subgroups))]
    out.append(("h2", "Promotion decision"))
    out += _decision(card.decision)
    out += [("h2", "Known limitations"), ("ul", _limitations(card))]
    return out


_COUNT_KEYS = ("name", "images", "patients", "breasts", "positive_breasts")


def _performance(card: CardInputs) -> tuple[list[str], list[list[str]]]:
    names = [k for k, v in card.evaluations.items() if v]
    evals = [card.evaluations[k] or {} for k in names]
    rows: list[list[str]] = [
        ["breasts (positive)", *[f"{e['n_breasts']} ({e['n_positive']})" for e in evals]],
        ["AUC, DeLong", *[_ci(e["auc"]["value"], e["auc"]["delong"]) for e in evals]],
        ["AUC, bootstrap", *[_ci(e["auc"]["value"], e["auc"]["bootstrap"]) for e in evals]],
        ["pF1", *[_ci(e["pf1"]["value"], e["pf1"]["bootstrap"]) for e in evals]],
    ]
    point_rows = (
        ("sensitivity", "sensitivity"),
        ("specificity", "specificity"),
        ("recall rate", "recall_rate"),
        ("PPV (as observed)", "ppv"),
        ("PPV at screening prevalence", "ppv_screening"),
        ("cancers detected per 1,000, screening prevalence", "cancer_detection_per_1000"),
    )
    for label, key in point_rows:
        cells = []
        for e in evals:
            point = e.get("operating_point") or {}
            figure = point.get(key)
            cells.append(_ci(figure["value"], figure["bootstrap"]) if figure else "n/a")
        rows.append([f"{label} at the threshold", *cells])
    for family, label in (
        ("sensitivity_at_specificity", "sensitivity at specificity"),
        ("specificity_at_sensitivity", "specificity at sensitivity"),
    ):
        keys = list((evals[0].get(family) or {}).keys()) if evals else []
        for key in keys:
            cells = [_ci(e[family][key]["value"], e[family][key]["bootstrap"]) for e in evals]
            rows.append([f"{label} {key}", *cells])
    for key, label in (("brier", "Brier score"), ("ece", "expected calibration error")):
        rows.append([label, *[_num(e["calibration"][key]) for e in evals]])
    slopes = [
        f"{_num(e['calibration']['slope'])} / {_num(e['calibration']['intercept'])}" for e in evals
    ]
    rows.append(["calibration slope / intercept", *slopes])
    return ["figure", *names], rows


def _subgroups(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    paired = any(r.get("champion") for r in rows)
    header = ["column", "value", "breasts", "positive", "AUC", "sensitivity", "specificity"]
    if paired:
        header += ["champion AUC", "champion sensitivity"]
    body = []
    for r in rows:
        line = [str(r["column"]), str(r["value"]), str(r["n_breasts"]), str(r["n_positive"])]
        if not r["sufficient"]:
            line += [str(r["text"])] + [""] * (len(header) - 5)
        else:
            ch = r["challenger"]
            line += [_num(ch["auc"]), _num(ch["sensitivity"]), _num(ch["specificity"])]
            if paired:
                champion = r.get("champion") or {}
                line += [_num(champion.get("auc")), _num(champion.get("sensitivity"))]
        body.append(line)
    return header, body


def _decision(decision: Mapping[str, Any] | None) -> list[Block]:
    if decision is None:
        return [("p", "Not decided yet: `mammo promote --data OUT` decides and updates this card.")]
    protocol = decision["protocol"]
    champion = decision.get("champion") or {}
    against = f"champion version {champion['version']}" if champion else "no champion (first model)"
    out: list[Block] = [
        ("p", f"**{decision['outcome']}** against {against}: {decision['reason']}"),
        (
            "p",
            f"Protocol {protocol['name']} v{protocol['version']} (`{protocol['source']}`, "
            f"content hash `{protocol['hash'][:16]}`), decided {decision['decided_at']}.",
        ),
    ]
    rules = [
        [r["name"], "pass" if r["passed"] else "FAIL", r["observed"], r["required"]]
        for r in decision["rules"]
    ]
    out.append(("table", (["rule", "result", "observed", "required"], rules)))
    return out


def _limitations(card: CardInputs) -> list[str]:
    notes = list(card.notes)
    if card.synthetic:
        notes.insert(
            0,
            "Trained and evaluated on synthetic images made by `mammo synth`: these figures say "
            "nothing about performance on real mammograms.",
        )
    holdout = card.evaluations.get("holdout")
    if holdout and int(holdout["n_positive"]) < 20:
        notes.append(
            f"The holdout has {holdout['n_positive']} positive breasts: every interval is wide."
        )
    notes.append(
        "Observed PPV and recall rate reflect the data's own cancer prevalence; the screening "
        "figures re-weight sensitivity and specificity to the configured screening prevalence."
    )
    notes.append(
        "Subgroups below the protocol's minimum size are reported as insufficient, not as "
        "evidence of equal performance."
    )
    return notes


def to_markdown(items: Sequence[Block]) -> str:
    lines: list[str] = []
    for kind, content in items:
        if kind == "h1":
            lines += [f"# {content}", ""]
        elif kind == "h2":
            lines += [f"## {content}", ""]
        elif kind == "p":
            lines += [str(content), ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in content] + [""]
        elif kind == "img":
            lines += [f"![{content[0]}]({content[0]})", ""]
        elif kind == "table":
            header, rows = content
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def to_html(items: Sequence[Block], title: str) -> str:
    parts = [
        "<!doctype html>",
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:.2em .6em;text-align:left}</style></head><body>",
    ]
    for kind, content in items:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(str(content))}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in content) + "</ul>")
        elif kind == "img":
            data = base64.b64encode(content[1]).decode()
            parts.append(f"<img alt='{content[0]}' src='data:image/png;base64,{data}'>")
        elif kind == "table":
            header, rows = content
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                for row in rows
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render(card: CardInputs) -> tuple[str, str]:
    """(markdown, html) of the card."""
    items = blocks(card)
    return to_markdown(items), to_html(items, f"{card.model} v{card.version}")


def _inline(text: str) -> str:
    """Escape, then the two Markdown marks the card uses: **bold** and `code`."""
    escaped = html.escape(text)
    for mark, tag in (("**", "strong"), ("`", "code")):
        pieces = escaped.split(mark)
        escaped = "".join(
            piece if i % 2 == 0 else f"<{tag}>{piece}</{tag}>" for i, piece in enumerate(pieces)
        )
    return escaped


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _cell(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _num(value: object) -> str:
    if value is None:
        return "n/a"
    number = float(value)  # type: ignore[arg-type]
    return "undefined" if math.isnan(number) else f"{number:.3f}"


def _ci(value: object, interval: Sequence[float] | None) -> str:
    if interval is None:
        return _num(value)
    return f"{_num(value)} [{_num(interval[0])}, {_num(interval[1])}]"


def data_summary(frame: Any, location: str, data_hash: str) -> dict[str, Any]:
    """Counts for the card's Data section from manifest rows with a ``split`` column: images,
    patients, breasts and positive breasts per split, per site and per machine."""
    from mammo.contract import CANCER, LATERALITY, MACHINE_ID, PATIENT_ID, SITE_ID, SPLIT

    def count(rows: Any, name: object) -> dict[str, Any]:
        breasts = rows.groupby([PATIENT_ID, LATERALITY])[CANCER].max()
        return {
            "name": str(name),
            "images": len(rows),
            "patients": int(rows[PATIENT_ID].nunique()),
            "breasts": len(breasts),
            "positive_breasts": int((breasts > 0).sum()),
        }

    summary: dict[str, Any] = {"location": location, "hash": data_hash}
    for key, column in (("counts", SPLIT), ("sites", SITE_ID), ("machines", MACHINE_ID)):
        if column in frame.columns:
            summary[key] = [count(rows, name) for name, rows in frame.groupby(column, sort=True)]
    summary["counts"] = [*summary.get("counts", []), count(frame, "all")]
    return summary
