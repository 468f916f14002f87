"""The HTML report's calibration part: fidelity on held-out samples, compensation, and the measured
sensitivity curves (relative output error against the fraction of a group removed)."""
from __future__ import annotations

from typing import Any

from .formats import number_or_none
from .report_html_text import CARD_H, CARD_W, KEPT, MAX_SCORE_CARDS, REMOVED, esc, kept_bar, short_name


# -- calibration: fidelity on held-out samples, compensation -----------------------------------------

def _calibration(c: dict, curves: bool = False) -> str:
    if not isinstance(c, dict) or not c:
        return ""
    comp = c.get("compensation") or {}
    on = f" on {esc(comp['consumers'])} consumers" if "consumers" in comp else ""
    out = ["<h2 id=\"calibration\">Calibration</h2>",
           f"<div>{esc(c.get('samples', 0))} calibration samples; "
           f"compensation {esc(comp.get('mode', 'none'))}{on}</div>"]
    fid = c.get("fidelity") or {}
    outputs = fid.get("outputs") or {}
    if not isinstance(outputs, dict) or not outputs:
        out.append("<p class=\"sub\">no fidelity measured (no held-out samples)</p>")
        return "\n".join(out)
    out.append(f"<div class=\"sub\">fidelity of the pruned model on {esc(fid.get('samples', '-'))} held-out "
               "samples" + (" (measured sensitivity curves below)" if curves
                                  else " (the report records no sensitivity curves)") + "</div>")
    out.append("<table><tr><th>output</th><th class=\"r\">cosine mean</th><th class=\"r\">cosine min</th>"
               "<th class=\"r\">relative error</th><th class=\"r\">top-1 agreement</th>"
               "<th>cosine mean, 0 to 1</th></tr>")
    for name, row in outputs.items():
        row = row if isinstance(row, dict) else {}
        mean, low = number_or_none(row.get("cosine_mean")), number_or_none(row.get("cosine_min"))
        rel, top1 = number_or_none(row.get("relative_error")), number_or_none(row.get("top1_agreement"))
        out.append(f"<tr><td class=\"m\">{esc(name)}</td><td class=\"r\">{_fixed(mean, 4)}</td>"
                   f"<td class=\"r\">{_fixed(low, 4)}</td><td class=\"r\">{'-' if rel is None else f'{rel:.3g}'}</td>"
                   f"<td class=\"r\">{'-' if top1 is None else f'{top1 * 100:.1f}%'}</td>"
                   f"<td>{kept_bar(1.0, max(0.0, mean) if mean is not None else None, 120)}</td></tr>")
    return "\n".join(out) + "</table>"


# -- sensitivity: relative output error against the fraction of one group removed --------------------

def _curves(s: dict) -> tuple[list[float], list[tuple[str, dict, list[float]]]]:
    """The fractions and, per group with a full curve, (id, row, errors); malformed rows are left out."""
    fractions = [number_or_none(f) for f in s.get("fractions") or []]
    if not fractions or any(f is None for f in fractions):
        return [], []
    groups = s.get("groups")
    groups = groups if isinstance(groups, dict) else {}
    out = []
    for gid, row in groups.items():
        errs = [number_or_none(e) for e in (row.get("relative_error") or [])] if isinstance(row, dict) else []
        if len(errs) == len(fractions) and all(e is not None for e in errs):
            out.append((str(gid), row, [float(e) for e in errs]))  # type: ignore[arg-type]
    return [float(f) for f in fractions], out  # type: ignore[arg-type]


def _sensitivity(s: Any, rows: list[dict] | None = None) -> str:
    if not isinstance(s, dict) or not s:
        return ""
    nodes = {str(r.get("id")): r.get("node") for r in rows or [] if r.get("node")}
    fractions, curves = _curves(s)
    skipped = [x for x in s.get("skipped") or [] if isinstance(x, dict)]
    head = ["<h2 id=\"sensitivity\">Sensitivity</h2>",
            f"<div class=\"sub\">relative error of all outputs (||y&#8242; &#8722; y|| / ||y||) on "
            f"{esc(s.get('samples', '-'))} samples when only one group loses the fraction of its lowest-scoring "
            f"units; measured in {esc(s.get('seconds', '-'))} s; all cards share one error scale, fraction 0 to "
            f"{esc(max(fractions, default='-'))} across. With --calib and a --target-*, the plan spreads the "
            "target by them.</div>"]
    if skipped:
        reasons = sorted({str(x.get("reason")) for x in skipped})
        head.append(f"<p class=\"sub\">{len(skipped)} groups not measured: {esc('; '.join(reasons))}</p>")
    if not curves:
        return "\n".join(head + ["<p class=\"sub\">no group was measured</p>"])
    top = max(max(e) for _, _, e in curves) or 1.0
    curves.sort(key=lambda c: -c[2][-1])  # most sensitive first
    shown = curves[:MAX_SCORE_CARDS]
    if len(curves) > len(shown):
        head.append(f"<p class=\"sub\">{len(curves)} measured groups: the {len(shown)} most sensitive are drawn</p>")
    cards = [_overview_card(fractions, curves, top)] + [_sens_card(fractions, c, top, nodes.get(c[0])) for c in shown]
    return "\n".join(head) + "<div class=\"grid\">" + "".join(cards) + "</div>"


def _points(fractions: list[float], errs: list[float], top: float, w: float, h: float, pad: float = 2.0) -> str:
    """SVG points of a curve; it starts at (0, 0): removing nothing changes nothing."""
    fmax = max(fractions) or 1.0
    return " ".join(f"{pad + f / fmax * (w - 2 * pad):.1f},{h - pad - e / top * (h - 2 * pad):.1f}"
                    for f, e in zip([0.0, *fractions], [0.0, *errs]))


def _sens_svg(fractions: list[float], lines: list[tuple[list[float], str, float]], top: float, h: int) -> str:
    out = [f"<svg width=\"{CARD_W}\" height=\"{h}\" role=\"img\">",
           f"<line x1=\"0\" y1=\"{h - 0.5}\" x2=\"{CARD_W}\" y2=\"{h - 0.5}\" stroke=\"#c3c9d0\"/>"]
    for errs, colour, width in lines:
        out.append(f"<polyline points=\"{_points(fractions, errs, top, CARD_W, h)}\" fill=\"none\" "
                   f"stroke=\"{colour}\" stroke-width=\"{width:g}\"/>")
    return "".join(out) + "</svg>"


def _overview_card(fractions: list[float], curves: list[tuple[str, dict, list[float]]], top: float) -> str:
    median = [float(sorted(c[2][i] for c in curves)[len(curves) // 2]) if len(curves) % 2
              else 0.5 * sum(sorted(c[2][i] for c in curves)[len(curves) // 2 - 1:len(curves) // 2 + 1])
              for i in range(len(fractions))]
    lines = [(errs, "#9bb7e0", 1.0) for _, _, errs in curves] + [(median, REMOVED, 2.2)]
    return (f"<div class=\"card\"><div class=\"t\">all {len(curves)} measured groups</div>"
            f"{_sens_svg(fractions, lines, top, 2 * CARD_H)}<div class=\"c\">median bold; fractions "
            f"{esc(', '.join(f'{f:g}' for f in fractions))}; error 0 to {top:.3g}</div></div>")


def _sens_card(fractions: list[float], curve: tuple[str, dict, list[float]], top: float, node: Any = None) -> str:
    gid, row, errs = curve
    name = node if node else row.get("root")
    removed = row.get("units_removed") or []
    tip = f"#{gid} {row.get('root')}: " + ", ".join(
        f"{f:g}: {e:.3g}" + (f" ({removed[i]} units)" if i < len(removed) else "")
        for i, (f, e) in enumerate(zip(fractions, errs)))
    kl = [number_or_none(k) for k in row.get("softmax_kl") or []]
    if kl and all(k is not None for k in kl):
        tip += "; softmax KL " + ", ".join(f"{k:.3g}" for k in kl)
    chart = _sens_svg(fractions, [(errs, KEPT, 1.6)], top, 2 * CARD_H)
    return (f"<div class=\"card\" title=\"{esc(tip)}\"><div class=\"t mono\">{esc(f'#{gid} ' + short_name(name, 72))}"
            f"</div>{chart}<div class=\"c\" data-group=\"{esc(gid)}\">"
            f"rel err {errs[-1]:.3g} at {fractions[-1]:g}</div></div>")


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
