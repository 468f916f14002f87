"""The prune report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched.

`render` takes the JSON form of a report (`PruneReport.to_json()`, or a saved --report-json file),
so a report can be drawn again later: `python -m onnxprune.report_html REPORT.json OUT.html`.
Standard library only. Every string from the report is escaped; the page is also well-formed XML.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from . import paths
from .errors import BadInputError, OnnxPruneError
from .formats import bytes_text, count_text, number_or_none
from .report_html_text import (BAR_W, CARD_H, CARD_W, FROZEN, KEPT, LABEL_W, MAX_FROZEN_ROWS, MAX_LAYER_ROWS,
                               MAX_SCORE_CARDS, NUM_W, REMOVED, TRACK, esc, kept_bar, short_name, value_span)
from .report_html_calib import _calibration, _sensitivity

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d232a;
margin:24px auto;max-width:1200px;padding:0 16px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h1 .mono{font-size:inherit}
h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #d8dde3;padding-bottom:3px}
.mono,.card .t,td.m{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12px}
.sub{color:#5b6570;font-size:13px}.n{font-variant-numeric:tabular-nums}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:baseline}
th{font-weight:600;color:#3d4650;border-bottom:1px solid #d8dde3}td.r,th.r{text-align:right}
.stats td{padding-right:18px}.good{color:#1d7a3a}.bad{color:#b3261e}
.legend span{display:inline-block;width:11px;height:11px;margin:0 4px 0 12px;vertical-align:-1px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(164px,1fr));gap:6px}
.card{border:1px solid #e1e5ea;border-radius:4px;padding:3px 5px 2px;font-size:11px}
.card .t{font-size:10.5px;line-height:1.25;word-break:break-all;max-height:3.75em;overflow:hidden}
.card .c{color:#5b6570;line-height:1.25}
ul{margin:4px 0;padding-left:20px}details{margin:6px 0}summary{cursor:default;color:#3d4650}
svg text{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:11px;fill:#1d232a}
svg.dense text{font-size:9.5px}
"""


def render(report: dict) -> str:
    """The page for a report in its JSON form (PruneReport.to_json() or a --report-json file)."""
    if not isinstance(report, dict):
        raise BadInputError(f"a report must be a JSON object, found {type(report).__name__}")
    rows = [r for r in report.get("group_rows") or [] if isinstance(r, dict)]
    title = f"onnxprune report: {os.path.basename(str(report.get('model', '')))}"
    body = [_header(report), _layers(rows), _scores(rows), _calibration(report.get("calibration") or {},
                                                                    bool(report.get("sensitivity"))),
            _sensitivity(report.get("sensitivity"), rows), _frozen(report, rows)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head>"
            "<meta charset=\"utf-8\"/><meta name=\"viewport\" content=\"width=device-width\"/>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(part for part in body if part) + "\n</body></html>\n")


def save_html(report, path: str) -> None:
    """Write the page of `report` (a PruneReport or its JSON form) to `path`, atomically;
    raises OutputWriteError when it cannot be written."""
    data = report.to_json() if hasattr(report, "to_json") else report
    paths.write_text(path, render(json.loads(json.dumps(data, default=str))))


# -- header: the model, sizes before and after, latency, notes ---------------------------------------

def _header(r: dict) -> str:
    before, after = r.get("before") or {}, r.get("after") or {}
    out = [f"<h1>onnxprune report: <span class=\"mono\">{esc(os.path.basename(str(r.get('model', ''))))}</span></h1>",
           f"<div class=\"sub\">model <span class=\"mono\">{esc(r.get('model', '-'))}</span> &#8594; output "
           f"<span class=\"mono\">{esc(r.get('output') or '(not written)')}</span></div>",
           "<table class=\"stats\"><tr><th></th><th class=\"r\">before</th><th class=\"r\">after</th>"
           "<th class=\"r\">change</th><th>kept</th></tr>"]
    rows = (("params", "params", count_text), ("MACs", "macs", count_text), ("file", "file_bytes", bytes_text))
    for label, key, fmt in rows:
        a, b = before.get(key), after.get(key)
        out.append(f"<tr><td>{label}</td><td class=\"r\">{value_span(a, fmt(a))}</td>"
                   f"<td class=\"r\">{value_span(b, fmt(b))}</td>"
                   f"<td class=\"r\">{_change(a, b)}</td><td>{kept_bar(a, b)}</td></tr>")
    out.append("</table>")
    out.append(f"<div>groups: {value_span(r.get('groups_total'), str(r.get('groups_total', '-')))} found, "
               f"{value_span(r.get('groups_pruned'), str(r.get('groups_pruned', '-')))} pruned "
               f"({esc(r.get('groups_inexact_pruned', 0))} inexact), "
               f"{value_span(r.get('groups_frozen'), str(r.get('groups_frozen', '-')))} frozen; "
               f"{value_span(r.get('channels_removed'), str(r.get('channels_removed', '-')))} channels removed</div>")
    if r.get("nothing_pruned"):
        out.append(f"<p class=\"bad\">{esc(r['nothing_pruned'])}</p>")
    out.append(_validation(r.get("validation") or {}))
    notes = [n for n in r.get("notes") or [] if n]
    if notes:
        out.append("<ul class=\"sub\">" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    timings = r.get("timings_s") or {}
    if isinstance(timings, dict) and timings:
        out.append("<div class=\"sub\">time: " + ", ".join(
            f"{esc(k)} {v:.2f} s" for k, v in timings.items() if number_or_none(v) is not None) + "</div>")
    return "\n".join(out)


def _change(a: Any, b: Any) -> str:
    a, b = number_or_none(a), number_or_none(b)
    if not a or b is None:
        return ""
    pct = (b - a) / a * 100
    return f"<span class=\"n {'good' if pct < 0 else ''}\">{pct:+.1f}%</span>"


def _validation(v: dict) -> str:
    if v.get("skipped"):
        return f"<div class=\"sub\">validation skipped: {esc(v['skipped'])}</div>"
    providers = v.get("providers") or {}
    if not isinstance(providers, dict) or not providers:
        return ""
    out = ["<table><tr><th>provider</th><th class=\"r\">latency before</th><th class=\"r\">after</th>"
           "<th class=\"r\">speed-up</th><th class=\"r\">output change</th></tr>"]
    for name, p in providers.items():
        p = p if isinstance(p, dict) else {}
        if p.get("skipped"):
            out.append(f"<tr><td>{esc(name)}</td><td colspan=\"4\">skipped: {esc(p['skipped'])}</td></tr>")
            continue
        a, b = number_or_none(p.get("latency_before_ms")), number_or_none(p.get("latency_after_ms"))
        rel = number_or_none(p.get("relative_change"))
        speed = f"x{a / max(b, 1e-9):.2f}" if a is not None and b is not None else "-"
        out.append(f"<tr><td>{esc(name)}</td><td class=\"r\">{_ms(a)}</td><td class=\"r\">{_ms(b)}</td>"
                   f"<td class=\"r\">{speed}</td><td class=\"r\">"
                   f"{'-' if rel is None else f'{rel:.3g}'} (relative max abs)</td></tr>")
    return "\n".join(out) + "</table>"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


# -- per layer: channels before and after, in graph order --------------------------------------------

def _layers(rows: list[dict]) -> str:
    drawn = [r for r in rows if (number_or_none(r.get("size")) or 0) > 0]
    if not drawn:
        return "<h2 id=\"layers\">Channels per layer</h2><p class=\"sub\">no channel spaces</p>"
    shown, rest = drawn[:MAX_LAYER_ROWS], drawn[MAX_LAYER_ROWS:]
    # the scale of the prunable groups: a longer frozen space (a classifier) is cut short, marked
    top = max((number_or_none(r.get("size")) or 0 for r in drawn if not r.get("frozen")), default=0) or max(
        number_or_none(r.get("size")) or 0 for r in drawn)
    row_h = 15 if len(shown) <= 60 else 12
    svg = [f"<svg class=\"{'dense' if row_h < 15 else 'rows'}\" width=\"{LABEL_W + BAR_W + NUM_W}\" "
           f"height=\"{row_h * len(shown) + 4}\" role=\"img\" "
           "aria-label=\"channels before and after per layer\">"]
    for i, r in enumerate(shown):
        svg.append(_layer_row(r, i * row_h + 2, row_h, top))
    svg.append("</svg>")
    legend = (f"<div class=\"legend sub\"><span style=\"background:{KEPT}\"></span>kept"
              f"<span style=\"background:{REMOVED}\"></span>removed"
              f"<span style=\"background:{FROZEN}\"></span>frozen (left whole)"
              f"<span style=\"background:{TRACK}\"></span>prunable, kept whole</div>")
    more = ""
    if rest:
        size = sum(int(number_or_none(r.get("size")) or 0) for r in rest)
        gone = sum(int(number_or_none(r.get("pruned")) or 0) for r in rest)
        more = (f"<p class=\"sub\">&#8230; {len(rest)} more groups not drawn: {size} channels, {gone} removed "
                f"({sum(1 for r in rest if r.get('frozen'))} frozen)</p>")
    skipped = len(rows) - len(drawn)
    note = f"<p class=\"sub\">{skipped} frozen spaces of unknown size are not drawn</p>" if skipped else ""
    return ("<h2 id=\"layers\">Channels per layer</h2><div class=\"sub\">each group's root node, in graph order: "
            "channels before &#8594; after</div>" + legend + "".join(svg) + more + note)


def _layer_row(r: dict, y: int, row_h: int, top: float) -> str:
    size, gone = int(number_or_none(r.get("size")) or 0), int(number_or_none(r.get("pruned")) or 0)
    kept = size - gone
    scale = BAR_W / top if top else 0
    clipped = size > top  # only frozen rows are longer than the scale: cut short, marked
    frozen = bool(r.get("frozen"))
    colour = FROZEN if frozen else KEPT if gone else TRACK
    tip = f"#{r.get('id')} {r.get('node')}: {r.get('root')}, {size} -> {kept} channels ({gone} removed)"
    if frozen:
        tip += f"; frozen: {r.get('frozen')}"
    elif r.get("inexact"):
        tip += "; inexact: " + "; ".join(str(x) for x in r.get("inexact") or [])
    label = short_name(f"{r.get('node')}")
    text = f"{size} (frozen)" if frozen else f"{size} &#8594; {kept}" if gone else f"{size}"
    if not frozen and gone and r.get("inexact"):
        text += " inexact"
    base, bar = y + row_h - 4, row_h - 3
    parts = [f"<g><title>{esc(tip)}</title>",
             f"<text x=\"{LABEL_W - 6}\" y=\"{base}\" text-anchor=\"end\">{esc(label)}</text>",
             f"<rect x=\"{LABEL_W}\" y=\"{y}\" width=\"{min(kept, top) * scale:.1f}\" height=\"{bar}\" "
             f"fill=\"{colour}\"/>"]
    if gone:
        parts.append(f"<rect x=\"{LABEL_W + kept * scale:.1f}\" y=\"{y}\" width=\"{gone * scale:.1f}\" "
                     f"height=\"{bar}\" fill=\"{REMOVED}\"/>")
    if clipped:
        x = LABEL_W + BAR_W - 14
        parts.append(f"<path d=\"M{x} {y + bar} l4 {-bar} M{x + 5} {y + bar} l4 {-bar}\" stroke=\"#fff\" "
                     "stroke-width=\"2\"/>")
    parts.append(f"<text x=\"{LABEL_W + min(size, top) * scale + 6:.1f}\" y=\"{base}\" "
                 f"data-group=\"{esc(r.get('id'))}\">"
                 f"{text}</text></g>")
    return "".join(parts)


# -- per group: the score distribution and the cut ---------------------------------------------------

def _hist(r: dict) -> tuple[list[int], list[int], float, float] | None:
    h = r.get("score_hist")
    if not isinstance(h, dict):
        return None
    kept = [int(number_or_none(x) or 0) for x in h.get("kept") or []]
    gone = [int(number_or_none(x) or 0) for x in h.get("removed") or []]
    lo, hi = number_or_none(h.get("lo")), number_or_none(h.get("hi"))
    if not kept or len(kept) != len(gone) or lo is None or hi is None:
        return None
    return kept, gone, lo, hi


def _scores(rows: list[dict]) -> str:
    scored = [r for r in rows if _hist(r)]
    head = ("<h2 id=\"scores\">Scores and the cut</h2><div class=\"sub\">per scored group: how many units score where "
            "(low scores go first), kept and removed stacked; the dashed line is the cut, the highest "
            "score of a removed unit (groups of few units: each unit's score, sorted)</div>")
    if not scored:
        pruned = any((number_or_none(r.get("pruned")) or 0) > 0 for r in rows)
        why = ("the report holds no scores (a saved plan was applied, or an older report)" if pruned
               else "no group was scored")
        return head + f"<p class=\"sub\">{why}</p>"
    shown = scored
    note = ""
    if len(scored) > MAX_SCORE_CARDS:
        most = sorted(scored, key=lambda r: -(number_or_none(r.get("pruned")) or 0))[:MAX_SCORE_CARDS]
        keep = set(id(r) for r in most)
        shown = [r for r in scored if id(r) in keep]
        note = (f"<p class=\"sub\">{len(scored)} scored groups: the {MAX_SCORE_CARDS} losing the most channels "
                "are drawn (graph order); the first card adds up all of them</p>")
    prefix = _common_prefix([str(r.get("node")) for r in shown])
    if prefix:
        note += f"<p class=\"sub\">node names without their common prefix <span class=\"mono\">{esc(prefix)}</span></p>"
    cards = [_all_card(scored)] if len(scored) > 1 else []
    cards += [_card(r, len(prefix)) for r in shown]
    return head + note + "<div class=\"grid\">" + "".join(cards) + "</div>"


def _common_prefix(names: list[str]) -> str:
    """The leading path ('/m/bert/') all names share, up to a '/'; '' for fewer than two names."""
    if len(names) < 2:
        return ""
    shared = os.path.commonprefix(names)
    return shared[:shared.rfind("/") + 1]


def _card(r: dict, cut_prefix: int = 0) -> str:
    kept, gone, lo, hi = _hist(r)  # type: ignore[misc]
    cut = number_or_none(r.get("score_cut"))
    units, lost = int(number_or_none(r.get("units")) or 0), int(number_or_none(r.get("units_pruned")) or 0)
    kind = str(r.get("kind") or "units")
    strip = _strip(r)
    if strip is not None:
        chart = _strip_svg(*strip, cut)
    else:
        chart = _hist_svg(kept, gone, None if cut is None else (cut - lo) / (hi - lo) if hi > lo else 0.5)
    title = f"#{r.get('id')} {short_name(str(r.get('node'))[cut_prefix:], 72)}"
    tip = f"#{r.get('id')} {r.get('node')}: {r.get('root')}; scores {lo:.4g} to {hi:.4g}"
    return (f"<div class=\"card\" title=\"{esc(tip)}\"><div class=\"t mono\">{esc(title)}</div>{chart}"
            f"<div class=\"c\"><span data-group=\"{esc(r.get('id'))}\">{units - lost} of {units} {esc(kind)} kept"
            f"</span>{'' if cut is None else f', cut {cut:.3g}'}</div></div>")


def _strip(r: dict) -> tuple[list[float], list[bool]] | None:
    """A small group's unit scores, sorted, each with whether it was removed (None when not listed)."""
    scores, removed = r.get("unit_scores"), r.get("removed_units")
    if not isinstance(scores, list) or not isinstance(removed, list) or not scores:
        return None
    gone = {int(u) for u in removed if number_or_none(u) is not None}
    pairs = sorted(((number_or_none(v) or 0.0), i in gone) for i, v in enumerate(scores))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _strip_svg(values: list[float], gone: list[bool], cut: float | None) -> str:
    """Sorted scores as bars (removed ones coloured), the cut as a dashed level; the bars start a
    little below the lowest score, so that close scores still differ."""
    lo, hi = min(values), max(values)
    base = max(0.0, lo - 0.25 * (hi - lo)) if hi > lo else 0.0  # the differences show, as in a histogram
    span = (hi - base) or 1.0
    w = CARD_W / len(values)
    out = [f"<svg width=\"{CARD_W}\" height=\"{CARD_H}\" role=\"img\">"]
    for i, (v, g) in enumerate(zip(values, gone)):
        h = max(max(v - base, 0.0) / span * (CARD_H - 3), 1.5)  # a unit scoring near zero still shows
        out.append(f"<rect x=\"{i * w + 1:.1f}\" y=\"{CARD_H - h:.1f}\" width=\"{max(w - 2, 1):.1f}\" "
                   f"height=\"{h:.1f}\" fill=\"{REMOVED if g else KEPT}\"/>")
    if cut is not None:
        y = CARD_H - max(cut - base, 0.0) / span * (CARD_H - 3)
        out.append(f"<line x1=\"0\" y1=\"{y:.1f}\" x2=\"{CARD_W}\" y2=\"{y:.1f}\" stroke=\"#1d232a\" "
                   "stroke-width=\"1.2\" stroke-dasharray=\"3 2\"/>")
    return "".join(out) + "</svg>"


def _all_card(scored: list[dict]) -> str:
    bins = min(len(_hist(r)[0]) for r in scored)  # type: ignore[index]
    kept, gone = [0] * bins, [0] * bins
    for r in scored:
        k, g, _, _ = _hist(r)  # type: ignore[misc]
        for i in range(bins):
            kept[i] += k[i]
            gone[i] += g[i]
    return (f"<div class=\"card\"><div class=\"t\">all {len(scored)} scored groups</div>{_hist_svg(kept, gone, None)}"
            f"<div class=\"c\">each scaled to its own score range; {sum(kept)} kept, {sum(gone)} removed"
            "</div></div>")


def _hist_svg(kept: list[int], gone: list[int], x_cut: float | None) -> str:
    top = max((k + g for k, g in zip(kept, gone)), default=0) or 1
    w = CARD_W / len(kept)
    out = [f"<svg width=\"{CARD_W}\" height=\"{CARD_H}\" role=\"img\">",
           f"<line x1=\"0\" y1=\"{CARD_H - 0.5}\" x2=\"{CARD_W}\" y2=\"{CARD_H - 0.5}\" stroke=\"#c3c9d0\"/>"]
    for i, (k, g) in enumerate(zip(kept, gone)):
        hg, hk = g / top * (CARD_H - 4), k / top * (CARD_H - 4)
        if g:
            out.append(f"<rect x=\"{i * w + 0.5:.1f}\" y=\"{CARD_H - hg:.1f}\" width=\"{w - 1:.1f}\" "
                       f"height=\"{hg:.1f}\" fill=\"{REMOVED}\"/>")
        if k:
            out.append(f"<rect x=\"{i * w + 0.5:.1f}\" y=\"{CARD_H - hg - hk:.1f}\" width=\"{w - 1:.1f}\" "
                       f"height=\"{hk:.1f}\" fill=\"{KEPT}\"/>")
    if x_cut is not None:
        x = max(0.5, min(CARD_W - 0.5, x_cut * CARD_W))
        out.append(f"<line x1=\"{x:.1f}\" y1=\"0\" x2=\"{x:.1f}\" y2=\"{CARD_H}\" stroke=\"#1d232a\" "
                   "stroke-width=\"1.2\" stroke-dasharray=\"3 2\"/>")
    return "".join(out) + "</svg>"


# -- frozen spaces and their reasons -----------------------------------------------------------------

def _frozen(r: dict, rows: list[dict]) -> str:
    frozen = [row for row in rows if row.get("frozen")]
    reasons = [x for x in r.get("frozen_reasons") or [] if isinstance(x, (list, tuple)) and len(x) == 2]
    if not frozen and not reasons:
        return "<h2 id=\"frozen\">Frozen spaces</h2><p class=\"sub\">none</p>"
    out = ["<h2 id=\"frozen\">Frozen spaces</h2>"]
    if reasons:
        out.append("<table><tr><th class=\"r\">groups</th><th>most common reasons</th></tr>")
        out += [f"<tr><td class=\"r\">{esc(count)}</td><td>{esc(reason)}</td></tr>" for reason, count in reasons]
        out.append("</table>")
    if frozen:
        shown = frozen[:MAX_FROZEN_ROWS]
        table = ["<table><tr><th class=\"r\">group</th><th>root</th><th>node</th><th>reason</th></tr>"]
        table += [f"<tr><td class=\"r\">{esc(row.get('id'))}</td><td class=\"m\">{esc(row.get('root'))}</td>"
                  f"<td class=\"m\">{esc(row.get('node'))}</td><td>{esc(row.get('frozen'))}</td></tr>" for row in shown]
        if len(frozen) > len(shown):
            table.append(f"<tr><td></td><td colspan=\"3\">&#8230; {len(frozen) - len(shown)} more</td></tr>")
        table.append("</table>")
        opened = " open=\"open\"" if len(frozen) <= 12 else ""
        out.append(f"<details{opened}><summary>all {len(frozen)} frozen spaces</summary>{''.join(table)}</details>")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """`python -m onnxprune.report_html REPORT.json OUT.html`: draw a saved --report-json file."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0].startswith("-"):
        print("usage: python -m onnxprune.report_html REPORT.json OUT.html", file=sys.stderr)
        return 2
    source, target = argv
    try:
        paths.check_outputs({"OUT.html": target}, {"the report": source})
        try:
            with open(source, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BadInputError(f"cannot read report '{source}': {getattr(exc, 'strerror', None) or exc}") from None
        save_html(data, target)
    except BadInputError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return 2
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
