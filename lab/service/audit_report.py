"""Audits as a person reads them: a text matrix for the terminal, one self-contained HTML page.

The HTML page takes one audit or several and sets them side by side: one row per zero
request (size, flags, disk, in flight), one column per audit, so nbd-server on four storages
or nbdkit's file plugin on ramfs and ext4 compare at a glance. It has no script and loads
nothing: styles inline, the audits' JSON embedded (a `<script type="application/json">` block a
program can read back), reproducers and draft upstream reports in full.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

from lab.domain.units import format_size

BAD, WARN, GOOD, NA = "bad", "warn", "good", "na"


def cell_text(c: dict[str, Any]) -> tuple[str, str]:
    """(short text, tone) for one cell."""
    if c.get("unsafe"):
        where = c.get("stale") or c.get("outside") or {}
        start = where.get("first_bad")
        rel = "" if start is None or not c.get("stale") else f" +{format_size(start - _start(c))}"
        return (f"STALE{rel}" if c.get("stale") else "CHANGED NEIGHBOURS"), BAD
    out = c.get("outcome")
    if out == "ok":
        cls = (c.get("cost") or {}).get("class", "?")
        return f"ok {cls}", GOOD if cls == "cheap" else WARN
    if out == "refused":
        return "refused", NA
    if out in ("not-advertised", "not-allowed", "skipped", "interrupted"):
        return out, NA
    return f"{out} {' '.join(c.get('errors') or [])}".strip(), WARN


def _start(c: dict[str, Any]) -> int:
    from lab.nbd.audit_cells import Group, Size

    return Group(c["index"], Size(c["size"], c["misalign"]), c["flags"], c["disk"], c["inflight"]).ranges()[0][0]


def row_key(c: dict[str, Any]) -> tuple[Any, ...]:
    return (c["size"], c["misalign"], c["inflight"], c["disk"], c["flags"])


def rows(audits: list[dict[str, Any]]) -> list[tuple[str, list[list[dict[str, Any]]]]]:
    """[(request label, [cells of audit 0, cells of audit 1, ...])], in the plans' order."""
    order: dict[tuple[Any, ...], str] = {}
    for a in audits:
        for c in a["cells"]:
            order.setdefault(row_key(c), c["key"])
    out = []
    for key in sorted(order, key=lambda k: (k[0], k[1], k[2], k[3] != "dirty", k[4])):
        out.append((order[key], [[c for c in a["cells"] if row_key(c) == key] for a in audits]))
    return out


def combined(cells: list[dict[str, Any]]) -> tuple[str, str]:
    """One request's cells (first, repeated) as one text: 'ok cheap', or 'ok cheap / STALE +64M' when they differ."""
    if not cells:
        return "-", NA
    texts = [cell_text(c) for c in cells]
    tone = next((t for _, t in texts if t == BAD), texts[0][1])
    words = [t for t, _ in texts]
    return (words[0] if len(set(words)) == 1 else " / ".join(words)), tone


# -- text ---------------------------------------------------------------------------------------

def text(a: dict[str, Any]) -> str:
    s = a["server"]
    store = s.get("storage") if isinstance(s.get("storage"), dict) else {}
    verdict = a["verdict"].upper() if a["verdict"] == "unsafe" else a["verdict"]
    lines = [f"{a['label']} ({s.get('version', '?')}): {verdict}", f"  {a['why']}"]
    if a["status"] != "done":
        lines.append(f"  the audit stopped early ({a['stopped']}): {a['groups']['done']} of "
                     f"{a['groups']['total']} groups done")
    f = a.get("flags") or {}
    lines.append("  flags: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in f.items() if k.startswith("can_")))
    if store:
        lines.append(f"  storage {store.get('place')} ({store.get('filesystem')}): "
                     f"{(store.get('capabilities') or {}).get('line', '')}")
    lines.append("")
    width = max([len(label) for label, _ in rows([a])] + [7])
    lines.append(f"  {'request':{width}}  first / repeated on one connection")
    for label, per in rows([a]):
        t, _ = combined(per[0])
        lines.append(f"  {label:{width}}  {t}")
    for w in a.get("warnings") or []:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)


# -- HTML ---------------------------------------------------------------------------------------

CSS = """
body{font:16px/1.45 system-ui,sans-serif;margin:0;padding:1rem;color:#111;background:#fff}
h1{font-size:1.5rem;margin:.2rem 0 1rem}h2{font-size:1.2rem;margin:1.6rem 0 .5rem}
.cards{display:flex;flex-wrap:wrap;gap:1rem}.card{border:1px solid #bbb;border-radius:8px;padding:.8rem;
flex:1 1 18rem;min-width:0}.verdict{font-size:1.3rem;font-weight:700}.bad{background:#fde2e1;color:#8a0a05}
.warn{background:#fff3cd;color:#5c4400}.good{background:#e3f5e1;color:#14521a}.na{color:#555}
.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:.95rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;white-space:nowrap}
th{background:#f2f2f2;position:sticky;top:0}pre{white-space:pre-wrap;word-break:break-all;background:#f6f6f6;
padding:.6rem;border-radius:6px;font-size:.85rem}small{color:#444}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _card(a: dict[str, Any]) -> str:
    s = a["server"]
    store = s.get("storage") if isinstance(s.get("storage"), dict) else {}
    tone = BAD if a["verdict"] == "unsafe" else (GOOD if a["verdict"] in ("fast", "refused-quickly") else WARN)
    caps = (store.get("capabilities") or {}).get("line", "") if store else ""
    stop = f"<p class='warn'>Stopped early ({_e(a['stopped'])}): {a['groups']['done']} of " \
           f"{a['groups']['total']} groups done.</p>" if a["status"] != "done" else ""
    flags = ", ".join(f"{k[4:]} {'yes' if v else 'no'}" for k, v in (a.get("flags") or {}).items()
                      if k.startswith("can_"))
    return (f"<div class='card'><h2>{_e(a['label'])}</h2><p class='verdict {tone}'>{_e(a['verdict'])}</p>"
            f"<p>{_e(a['why'])}</p>{stop}<p><small>{_e(s.get('version', ''))}<br>"
            f"<code>{_e(' '.join(s.get('argv') or []))}</code><br>flags: {_e(flags)}<br>"
            f"{_e(store.get('filesystem', '') if store else '')} {_e(caps)}<br>"
            f"kernel {_e(a['host'].get('kernel'))}, libnbd {_e(a['host'].get('libnbd'))}</small></p></div>")


def _matrix(audits: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{_e(a['label'])}</th>" for a in audits)
    body = []
    for label, per in rows(audits):
        tds = "".join(f"<td class='{tone}'>{_e(t)}</td>" for t, tone in (combined(cs) for cs in per))
        body.append(f"<tr><th scope='row'>{_e(label)}</th>{tds}</tr>")
    return (f"<div class='scroll'><table><thead><tr><th>request (first / repeated on a connection)</th>{head}</tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table></div>")


def _latency(a: dict[str, Any]) -> str:
    lat = a.get("latency") or {}
    rows_ = "".join(f"<tr><td>{_e(op)}</td><td>{v['n']}</td><td>{v['p50_ms']}</td><td>{v['p90_ms']}</td>"
                    f"<td>{v['p99_ms']}</td><td>{v['max_ms']}</td></tr>" for op, v in lat.items() if v)
    hist = ", ".join(f"&le;{_e(format_size(b['le']))}: {b['count']}" for b in a.get("zero_sizes") or [])
    return (f"<div class='scroll'><table><thead><tr><th>operation</th><th>n</th><th>p50 ms</th><th>p90 ms</th>"
            f"<th>p99 ms</th><th>max ms</th></tr></thead><tbody>{rows_}</tbody></table></div>"
            f"<p><small>zero request sizes: {hist or '-'}</small></p>")


def _details(a: dict[str, Any]) -> str:
    out = [f"<h2>{_e(a['label'])}: latency</h2>", _latency(a)]
    for r in a.get("reproducers") or []:
        out.append(f"<h2>Reproducer: {_e(r['request'])} ({_e(r['position'])})</h2><pre>{_e(r['script'])}</pre>")
    if a.get("upstream_report"):
        out.append(f"<h2>Draft upstream report: {_e(a['label'])}</h2><pre>{_e(a['upstream_report'])}</pre>")
    return "".join(out)


def html_page(audits: list[dict[str, Any]], title: str | None = None) -> str:
    title = title or "Zero audit: " + " | ".join(a["label"] for a in audits)
    data = json.dumps(audits).replace("</", "<\\/")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1><p><small>made {_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} by fastzero-lab's "
            "zero audit: every request read back with 1 MiB on each side; "
            "<b>STALE +X</b>: data left X bytes into a request that answered success.</small></p>"
            f"<div class='cards'>{''.join(_card(a) for a in audits)}</div>"
            f"<h2>Every zero request</h2>{_matrix(audits)}{''.join(_details(a) for a in audits)}"
            f"<script type='application/json' id='audits'>{data}</script></body></html>")
