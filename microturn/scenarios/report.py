"""A self-contained HTML report of one session: an SVG timeline, the metrics, and the expectations.

The file needs nothing else: CSS, script and SVG are inline, fonts are the system's, and it makes no network
request. The timeline has one lane each for the user's speech, the assistant's speech (with its words), the
dialog state (user and assistant rows), tool calls, background tasks, marks and expectations (a green check or
a red cross at the time each refers to; a failed one also draws a red line across every lane). Every message
of the session is embedded as JSON (bytes shown by length); hovering over the timeline lists the messages of
the window under the pointer, and clicking pins them, in full, in the details panel (arrow keys step). The
page opens on the first failed expectation's window; an address ending in ``#t=SECONDS`` (or ``#w=WINDOW``)
opens on that moment instead.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from typing import Any

import msgspec

from microturn.messages import (
    BackgroundUpdate,
    Delegate,
    DialogState,
    Mark,
    Message,
    Playout,
    ToolCall,
    ToolResult,
    UserText,
)
from microturn.runtime import Recording

# the report draws the same windows, runs and utterances the metrics measure, so it reuses their timeline
from .metrics import Metrics, _Timeline, compute_metrics, format_value, metric_rows
from .outcome import USER_EVENT_MARKS, ExpectationOutcome

__all__ = ["LANES", "render_report", "write_report"]

LANES = [
    ("user", "user speech", 46),
    ("assistant", "assistant speech", 52),
    ("dialog", "dialog state", 40),
    ("tools", "tool calls", 30),
    ("background", "background tasks", 30),
    ("marks", "marks", 34),
    ("expectations", "expectations", 30),
]
"""(id, label, height in px) of each lane, top to bottom; each is an SVG ``g`` with id ``lane-<id>``."""

_AXIS = 22
_PAD = 8
_USER_COLORS = {
    "speaking": "#43a047",
    "pausing": "#c5e1a5",
    "thinking": "#ffe082",
    "yielding": "#b0bec5",
    "inviting": "#90caf9",
    "interrupting": "#e53935",
    "away": "#eeeeee",
}
_ASSISTANT_COLORS = {"silent": "#eceff1", "speaking": "#1e88e5", "backchanneling": "#80deea"}
_UPDATE_COLORS = {
    "started": "#90a4ae",
    "progress": "#42a5f5",
    "final": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#ef6c00",
}
_MAX_STRING = 400


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _summarize(value: Any) -> Any:
    """Builtins with bytes replaced by their length and very long strings cut, to keep the file small."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return value if len(value) <= _MAX_STRING else value[: _MAX_STRING - 1] + "…"
    if isinstance(value, dict):
        return {k: _summarize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_summarize(v) for v in value]
    return value


def _messages_json(messages: Sequence[Message]) -> str:
    """[time, tick, seq, source, type, fields] per message, safe to embed in a script element."""
    rows = []
    for m in messages:
        fields = msgspec.to_builtins(m, builtin_types=(bytes, bytearray, memoryview))
        fields.pop("stamp", None)
        fields.pop("type", None)
        s = m.stamp
        rows.append(
            [
                round(s.time, 6) if s else None,
                s.tick if s else None,
                s.seq if s else None,
                s.source if s else None,
                type(m).__name__,
                _summarize(fields),
            ]
        )
    raw = msgspec.json.encode(rows).decode()
    # "<" only occurs inside JSON strings, where \u003c means the same: no "</script>" can close the element
    return raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class _Svg:
    """Collects SVG elements, with the time-to-x mapping."""

    def __init__(self, duration: float, px_per_s: float) -> None:
        self.px = px_per_s
        self.width = math.ceil(_PAD + duration * px_per_s + 40)  # room for the last axis label
        self.parts: list[str] = []

    def x(self, t: float) -> float:
        return round(_PAD + t * self.px, 2)

    def add(self, element: str) -> None:
        self.parts.append(element)


def _tip(text: str) -> str:
    return f' data-tip="{_esc(text)}"'


def _lane_user(svg: _Svg, y: int, h: int, tl: _Timeline, messages: Sequence[Message]) -> None:
    p = tl.period
    for first, last in tl.runs:
        t0, t1 = first * p, (last + 1) * p
        svg.add(
            f'<rect class="speech user" x="{svg.x(t0)}" y="{y + 20}" width="{max(2.0, svg.x(t1) - svg.x(t0))}" '
            f'height="{h - 26}" rx="3"{_tip(f"user speaking {t0:.2f}–{t1:.2f} s")}/>'
        )
    for m in messages:
        if isinstance(m, UserText) and m.stamp is not None:
            t = m.stamp.time
            svg.add(
                f'<text class="said user" x="{svg.x(t)}" y="{y + 13}"{_tip(f"UserText at {t:.2f} s: {m.text}")}>'
                f"{_esc(m.text)}</text>"
            )


def _lane_assistant(svg: _Svg, y: int, h: int, tl: _Timeline, messages: Sequence[Message]) -> None:
    p = tl.period
    words: dict[int, list[tuple[int, str]]] = {}
    for m in messages:
        if isinstance(m, Playout) and m.text:
            words.setdefault(m.utterance_id, []).append((m.tick, m.text))
    for u in tl.utts:
        t0, t1 = u.start(p), u.end(p)
        cls = "speech assistant truncated" if u.truncated else "speech assistant"
        text = " ".join(u.played)
        note = " (cut off)" if u.truncated else ""
        svg.add(
            f'<rect class="{cls}" x="{svg.x(t0)}" y="{y + 4}" width="{max(2.0, svg.x(t1) - svg.x(t0))}" '
            f'height="{h - 8}" rx="3"{_tip(f"utterance {u.uid}{note} {t0:.2f}–{t1:.2f} s: {text}")}/>'
        )
        for i, (tick, word) in enumerate(words.get(u.uid, [])):
            # alternate two baselines so neighbouring words do not overprint each other
            svg.add(
                f'<text class="word" x="{svg.x(tick * p) + 2}" y="{y + (20 if i % 2 == 0 else 38)}">{_esc(word)}</text>'
            )


def _lane_dialog(svg: _Svg, y: int, h: int, messages: Sequence[Message], duration: float) -> None:
    states = [m for m in messages if isinstance(m, DialogState) and m.stamp is not None]
    row = (h - 6) // 2
    for i, ds in enumerate(states):
        t0 = ds.stamp.time  # type: ignore[union-attr]
        t1 = states[i + 1].stamp.time if i + 1 < len(states) else duration  # type: ignore[union-attr]
        if t1 <= t0:
            continue
        x0, w = svg.x(t0), svg.x(t1) - svg.x(t0)
        tip = _tip(f"{t0:.2f}–{t1:.2f} s: floor={ds.floor} user={ds.user} assistant={ds.assistant}")
        svg.add(
            f'<rect class="state user-state {ds.user}" x="{x0}" y="{y + 2}" width="{w}" height="{row}" '
            f'fill="{_USER_COLORS.get(ds.user, "#ddd")}"{tip}/>'
        )
        svg.add(
            f'<rect class="state assistant-state {ds.assistant}" x="{x0}" y="{y + 4 + row}" width="{w}" '
            f'height="{row}" fill="{_ASSISTANT_COLORS.get(ds.assistant, "#ddd")}"{tip}/>'
        )
        if w > 6 * len(ds.user) + 4:
            svg.add(f'<text class="state-label" x="{x0 + 2}" y="{y + row - 2}">{_esc(ds.user)}</text>')


def _lane_tools(svg: _Svg, y: int, h: int, messages: Sequence[Message], metrics: Metrics) -> None:
    results = {m.call_id: m for m in messages if isinstance(m, ToolResult)}
    seen = {t.call_id: t for t in metrics.tools}
    for m in messages:
        if not (isinstance(m, ToolCall) and m.stamp is not None):
            continue
        t0 = m.stamp.time
        result = results.get(m.call_id)
        t1 = result.stamp.time if result is not None and result.stamp is not None else t0
        state = "pending" if result is None else ("ok" if result.ok else "failed")
        outcome = (
            "no result" if result is None else (f"ok: {result.value!r}" if result.ok else f"failed: {result.error}")
        )
        tip = f"{m.call_id} {m.name}({m.args}) at {t0:.2f} s → {outcome}"
        answer = seen.get(m.call_id)
        if answer is not None and answer.latency is not None:
            t2 = t0 + answer.latency
            tip += f"; the user hears the answer at {t2:.2f} s (latency {answer.latency:.2f} s)"
            svg.add(
                f'<rect class="tool-wait" x="{svg.x(t1)}" y="{y + 11}" width="{max(0.0, svg.x(t2) - svg.x(t1))}" '
                f'height="{h - 22}"{_tip(tip)}/>'
            )
        svg.add(
            f'<rect class="tool {state}" x="{svg.x(t0)}" y="{y + 5}" width="{max(4.0, svg.x(t1) - svg.x(t0))}" '
            f'height="{h - 10}" rx="2"{_tip(tip)}/>'
        )
        svg.add(f'<text class="tool-label" x="{svg.x(t0) + 6}" y="{y + h - 10}">{_esc(m.name)}</text>')
    # ToolProgress is matched by name: the report draws it when the catalogue has it, and needs nothing else
    for m in messages:
        if type(m).__name__ == "ToolProgress" and m.stamp is not None:
            fraction = getattr(m, "fraction", None)
            done = f" ({fraction:.0%})" if fraction is not None else ""
            tip = f"{getattr(m, 'call_id', '')} progress at {m.stamp.time:.2f} s{done}: {getattr(m, 'text', '')}"
            svg.add(f'<circle class="tool-progress" cx="{svg.x(m.stamp.time)}" cy="{y + h / 2}" r="3"{_tip(tip)}/>')


def _lane_background(svg: _Svg, y: int, h: int, messages: Sequence[Message]) -> None:
    tasks: dict[str, dict[str, Any]] = {}
    for m in messages:
        if m.stamp is None:
            continue
        if isinstance(m, Delegate):
            tasks.setdefault(m.task_id, {"start": m.stamp.time, "goal": m.goal, "updates": []})
        elif isinstance(m, BackgroundUpdate):
            task = tasks.setdefault(m.task_id, {"start": m.stamp.time, "goal": "", "updates": []})
            task["updates"].append(m)
    for task_id, task in tasks.items():
        t0 = task["start"]
        ends = [u.stamp.time for u in task["updates"] if u.status in ("final", "failed", "cancelled")]
        t1 = ends[0] if ends else max([t0] + [u.stamp.time for u in task["updates"]])
        tip = _tip(f"{task_id}: {task['goal']} ({t0:.2f}–{t1:.2f} s)")
        svg.add(
            f'<rect class="task" x="{svg.x(t0)}" y="{y + 9}" width="{max(4.0, svg.x(t1) - svg.x(t0))}" '
            f'height="{h - 18}" rx="2"{tip}/>'
        )
        svg.add(f'<text class="tool-label" x="{svg.x(t0) + 4}" y="{y + 8}">{_esc(task_id)}</text>')
        for u in task["updates"]:
            svg.add(
                f'<circle class="update {u.status}" cx="{svg.x(u.stamp.time)}" cy="{y + h / 2}" r="5" '
                f'fill="{_UPDATE_COLORS.get(u.status, "#999")}"'
                f"{_tip(f'{task_id} {u.status} ({u.delivery}) at {u.stamp.time:.2f} s: {u.text}')}/>"
            )


def _lane_marks(svg: _Svg, y: int, h: int, top: int, bottom: int, messages: Sequence[Message]) -> None:
    marks = [m for m in messages if isinstance(m, Mark) and m.stamp is not None]
    for i, m in enumerate(marks):
        t = m.stamp.time  # type: ignore[union-attr]
        kind = "user-event" if m.name in USER_EVENT_MARKS else "custom"
        x = svg.x(t)
        svg.add(f'<line class="mark-line {kind}" x1="{x}" x2="{x}" y1="{top}" y2="{bottom}"/>')
        tip = _tip(f"{m.name} at {t:.3f} s: {USER_EVENT_MARKS.get(m.name, 'a custom mark')}")
        svg.add(
            f'<g class="mark {kind}"{tip}>'
            f'<path d="M{x - 5},{y + 4} L{x + 5},{y + 4} L{x},{y + 12} Z"/>'
            f'<text x="{x + 6}" y="{y + 13 + (10 if i % 2 else 0)}">{_esc(m.name)}</text></g>'
        )


def _lane_expectations(
    svg: _Svg, y: int, h: int, top: int, bottom: int, outcomes: Sequence[ExpectationOutcome], duration: float
) -> None:
    for o in outcomes:
        t = o.time if o.time is not None else duration
        x = svg.x(t)
        state = "ok" if o.ok else "failed"
        when = f"at {o.time:.3f} s" if o.time is not None else "(no time: drawn at the end)"
        verdict = "✓ held" if o.ok else "✗ FAILED"
        if not o.ok:
            svg.add(f'<line class="failure-line" x1="{x}" x2="{x}" y1="{top}" y2="{bottom}"/>')
        svg.add(
            f'<g class="expectation {state}" data-t="{t}"'
            f"{_tip(f'{verdict}: {o.name} {when} — observed: {o.observed}')}>"
            f'<circle cx="{x}" cy="{y + h / 2}" r="9"/>'
            f'<text x="{x}" y="{y + h / 2 + 4.5}" text-anchor="middle">{"✓" if o.ok else "✗"}</text></g>'
        )


def _axis(svg: _Svg, height: int, duration: float) -> None:
    step = 1 if svg.px >= 30 else 5 if svg.px >= 8 else 30
    for s in range(0, int(duration) + 1, step):
        x = svg.x(s)
        svg.add(f'<line class="grid" x1="{x}" x2="{x}" y1="{_AXIS - 4}" y2="{height}"/>')
        svg.add(f'<text class="axis" x="{x + 2}" y="{_AXIS - 8}">{s} s</text>')


def render_report(
    recording: Recording,
    outcomes: Sequence[ExpectationOutcome] = (),
    metrics: Metrics | None = None,
    *,
    title: str | None = None,
) -> str:
    """The report of ``recording`` as one self-contained HTML string (``metrics`` computed when not given)."""
    messages = sorted(recording.messages, key=lambda m: m.stamp.seq if m.stamp else -1)
    period = recording.header.tick_period
    if metrics is None:
        metrics = compute_metrics(messages, tick_period=period)
    tl = _Timeline(messages, period)
    timed = [o.time for o in outcomes if o.time is not None]
    duration = max([tl.duration, period, *timed])
    px = min(100.0, max(40.0, 1600.0 / duration))
    svg = _Svg(duration, px)
    height = _AXIS + sum(h for _, _, h in LANES)

    y = _AXIS
    body = []
    for lane, _, h in LANES:
        svg.parts = []
        if lane == "user":
            _lane_user(svg, y, h, tl, messages)
        elif lane == "assistant":
            _lane_assistant(svg, y, h, tl, messages)
        elif lane == "dialog":
            _lane_dialog(svg, y, h, messages, duration)
        elif lane == "tools":
            _lane_tools(svg, y, h, messages, metrics)
        elif lane == "background":
            _lane_background(svg, y, h, messages)
        elif lane == "marks":
            _lane_marks(svg, y, h, _AXIS, height, messages)
        elif lane == "expectations":
            _lane_expectations(svg, y, h, _AXIS, height, outcomes, duration)
        body.append(
            f'<g id="lane-{lane}" class="lane"><rect class="lane-bg" x="0" y="{y}" width="{svg.width}" '
            f'height="{h}"/>{"".join(svg.parts)}</g>'
        )
        y += h
    svg.parts = []
    _axis(svg, height, duration)
    axis = "".join(svg.parts)
    timeline = (
        f'<svg id="timeline" width="{svg.width}" height="{height}" viewBox="0 0 {svg.width} {height}" '
        f'role="img" aria-label="session timeline">'
        f'<g id="axis">{axis}</g>{"".join(body)}'
        f'<rect id="selection" x="-100" y="{_AXIS}" width="{period * px}" height="{height - _AXIS}"/>'
        f'<line id="cursor" x1="-100" x2="-100" y1="{_AXIS}" y2="{height}"/></svg>'
    )
    legend = "".join(
        f'<span class="key"><i style="background:{color}"></i>{_esc(name)}</span>'
        for name, color in [
            *((f"user {k}", c) for k, c in _USER_COLORS.items()),
            *((f"assistant {k}", c) for k, c in _ASSISTANT_COLORS.items()),
        ]
    )
    labels = f'<div class="axis-label" style="height:{_AXIS}px"></div>' + "".join(
        f'<div class="lane-label" style="height:{h}px">{_esc(label)}</div>' for _, label, h in LANES
    )

    failed = [o for o in outcomes if not o.ok]
    if failed:
        n = len(failed)
        banner = f'<div id="banner" class="banner fail">{n} expectation{"s" if n > 1 else ""} failed</div>'
    elif outcomes:
        held = "the expectation held" if len(outcomes) == 1 else f"all {len(outcomes)} expectations held"
        banner = f'<div id="banner" class="banner pass">{held}</div>'
    else:
        banner = '<div id="banner" class="banner none">no expectations were judged</div>'
    items = "".join(
        f'<li class="expectation-item {"ok" if o.ok else "failed"}" data-t="{o.time if o.time is not None else ""}">'
        f'<span class="glyph">{"✓" if o.ok else "✗"}</span> <b>{_esc(o.name)}</b> '
        f'<span class="when">{f"{o.time:.3f} s" if o.time is not None else "no time"}</span>'
        f'<div class="observed">{_esc(o.observed)}</div></li>'
        for o in sorted(outcomes, key=lambda o: (o.ok, o.time if o.time is not None else math.inf))
    )
    expectations = f'<ul id="expectations">{items}</ul>' if outcomes else ""

    rows = "".join(
        f'<tr data-key="{key}"><td>{_esc(label)}</td><td class="num">{format_value(key, value)}</td>'
        f'<td class="num">{n}</td><td>{better}</td></tr>'
        for key, label, value, n, better in metric_rows(metrics)
    )
    event_rows = "".join(
        f"<tr><td>{_esc(e.kind)}</td><td class='num'>{e.time:.3f}</td><td>{_esc(e.origin)}</td>"
        f"<td>{'' if e.takeover is None else ('yes' if e.takeover else 'no')}</td>"
        f"<td class='num'>{'' if e.latency is None else f'{e.latency:.3f}'}</td>"
        f"<td class='num'>{'' if e.stop_latency is None else f'{e.stop_latency:.3f}'}</td></tr>"
        for e in metrics.events
    )
    source = "scenario marks" if metrics.event_source == "marks" else "dialog states (no scenario marks)"
    metrics_html = (
        f'<table id="metrics"><thead><tr><th>metric</th><th>value</th><th>n</th><th>better</th></tr></thead>'
        f"<tbody>{rows}</tbody></table><p class='note'>User events from {source}.</p>"
        f"<details><summary>{len(metrics.events)} user events</summary><table class='events'><thead><tr>"
        f"<th>event</th><th>time (s)</th><th>from</th><th>takeover</th><th>latency (s)</th>"
        f"<th>stop latency (s)</th></tr></thead><tbody>{event_rows}</tbody></table></details>"
    )

    h = recording.header
    heading = title or f"microturn session {h.session_id}"
    info = (
        f"{_esc(h.mode)} · tick {h.tick_period * 1000:.0f} ms · {duration:.1f} s · {len(messages)} messages · "
        f"actors {_esc(', '.join(h.actors))}"
    )
    warning = (
        f'<div class="banner warn">the recording is cut off: {_esc(recording.problem)}</div>'
        if recording.truncated
        else ""
    )
    config = msgspec.json.encode({"period": period, "px": px, "pad": _PAD}).decode()
    return _PAGE.format(
        title=_esc(heading),
        info=info,
        warning=warning,
        banner=banner,
        expectations=expectations,
        labels=labels,
        timeline=timeline,
        legend=legend,
        metrics=metrics_html,
        messages=_messages_json(messages),
        config=config,
        style=_STYLE,
        script=_SCRIPT,
    )


def write_report(
    path: str | os.PathLike[str],
    recording: Recording,
    outcomes: Sequence[ExpectationOutcome] = (),
    metrics: Metrics | None = None,
    *,
    title: str | None = None,
) -> str:
    """Render the report and write it to ``path`` (UTF-8); returns the path written."""
    text = render_report(recording, outcomes, metrics, title=title)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; }
.info { color: #666; margin-bottom: 10px; }
.banner { padding: 8px 12px; border-radius: 4px; font-weight: 600; margin: 8px 0; }
.banner.fail { background: #c62828; color: #fff; }
.banner.pass { background: #2e7d32; color: #fff; }
.banner.none { background: #eceff1; color: #455a64; }
.banner.warn { background: #fff3e0; color: #e65100; }
#expectations { list-style: none; padding: 0; margin: 0 0 12px; }
.expectation-item { padding: 4px 8px; border-left: 4px solid; margin: 2px 0; cursor: pointer; }
.expectation-item.failed { border-color: #c62828; background: #ffebee; }
.expectation-item.ok { border-color: #2e7d32; background: #f1f8e9; }
.expectation-item .glyph { font-weight: 700; }
.expectation-item.failed .glyph { color: #c62828; }
.expectation-item.ok .glyph { color: #2e7d32; }
.expectation-item .when { color: #666; margin-left: 6px; }
.expectation-item .observed { color: #444; font-size: 13px; }
.timeline-box { display: flex; border: 1px solid #cfd8dc; border-radius: 4px; }
.labels { flex: 0 0 130px; border-right: 1px solid #cfd8dc; background: #fafafa; }
.lane-label { box-sizing: border-box; padding: 0 8px; display: flex; align-items: center; font-size: 12px;
  color: #455a64; border-top: 1px solid #eceff1; }
.scroll { overflow-x: auto; flex: 1 1 auto; }
#timeline { display: block; cursor: crosshair; }
.lane-bg { fill: #fff; stroke: #eceff1; }
.grid { stroke: #eceff1; }
.axis { font-size: 10px; fill: #78909c; }
.speech.user { fill: #66bb6a; }
.said.user { font-size: 10px; fill: #2e7d32; }
.speech.assistant { fill: #bbdefb; stroke: #1e88e5; }
.speech.assistant.truncated { fill: #ffe0b2; stroke: #ef6c00; stroke-dasharray: 4 2; }
.word { font-size: 10px; fill: #0d47a1; pointer-events: none; }
.state-label { font-size: 9px; fill: #263238; pointer-events: none; }
.tool.ok { fill: #43a047; } .tool.failed { fill: #e53935; } .tool.pending { fill: #9e9e9e; }
.tool-wait { fill: #c8e6c9; }
.tool-progress { fill: #fff; stroke: #2e7d32; stroke-width: 1.5; }
.tool-label { font-size: 10px; fill: #37474f; pointer-events: none; }
.task { fill: #e1bee7; stroke: #8e24aa; }
.mark path { fill: #7e57c2; } .mark.custom path { fill: #78909c; }
.mark text { font-size: 10px; fill: #4527a0; }
.mark-line { stroke: #b39ddb; stroke-dasharray: 3 3; pointer-events: none; }
.expectation circle { stroke: #fff; stroke-width: 1.5; }
.expectation.ok circle { fill: #2e7d32; } .expectation.failed circle { fill: #c62828; }
.expectation text { fill: #fff; font-weight: 700; font-size: 13px; pointer-events: none; }
.failure-line { stroke: #c62828; stroke-width: 2; opacity: .6; pointer-events: none; }
#cursor { stroke: #37474f; stroke-width: 1; pointer-events: none; }
#selection { fill: #ffeb3b; opacity: .35; pointer-events: none; }
#readout { color: #455a64; font-size: 12px; min-height: 18px; margin: 4px 0; }
#tooltip { position: fixed; display: none; background: #263238; color: #fff; font-size: 12px; padding: 6px 8px;
  border-radius: 4px; max-width: 560px; pointer-events: none; z-index: 10; white-space: pre-wrap; }
#details { margin-top: 10px; }
#details table { border-collapse: collapse; font: 12px ui-monospace, monospace; width: 100%; }
#details td, #details th { border-bottom: 1px solid #eceff1; padding: 2px 6px; text-align: left;
  vertical-align: top; }
#details td.fields { white-space: pre-wrap; word-break: break-word; }
table#metrics, table.events { border-collapse: collapse; margin: 6px 0; }
table#metrics td, table#metrics th, table.events td, table.events th { border-bottom: 1px solid #eceff1;
  padding: 3px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: 12px; }
.legend { font-size: 11px; color: #546e7a; margin: 4px 0; }
.legend .key { margin-right: 10px; white-space: nowrap; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 3px; vertical-align: -1px;
  border: 1px solid #cfd8dc; }
h2 { font-size: 16px; margin: 18px 0 6px; }
button { font: inherit; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("mt-config").textContent);
  const msgs = JSON.parse(document.getElementById("mt-messages").textContent);
  const svg = document.getElementById("timeline");
  const cursor = document.getElementById("cursor");
  const selection = document.getElementById("selection");
  const tooltip = document.getElementById("tooltip");
  const readout = document.getElementById("readout");
  const byTick = new Map();
  let lastTick = 0;
  for (const m of msgs) {
    const k = m[1];
    if (k === null) continue;
    if (!byTick.has(k)) byTick.set(k, []);
    byTick.get(k).push(m);
    if (k > lastTick) lastTick = k;
  }
  const timeAt = (ev) => (ev.clientX - svg.getBoundingClientRect().left - cfg.pad) / cfg.px;
  const tickOf = (t) => Math.max(0, Math.floor(t / cfg.period + 1e-9));
  const fieldsText = (f) => Object.entries(f).map(([k, v]) => k + "=" + JSON.stringify(v)).join(" ");
  const summary = (m) => {
    const s = m[0].toFixed(3) + "  " + m[3] + "  " + m[4] + "  " + fieldsText(m[5]);
    return s.length > 110 ? s.slice(0, 109) + "…" : s;
  };
  const scrollBox = document.querySelector(".scroll");
  let selected = null;
  function show(k, scroll) {
    k = Math.max(0, Math.min(k, lastTick));
    selected = k;
    const x = cfg.pad + k * cfg.period * cfg.px;
    selection.setAttribute("x", x);
    if (scroll && (x < scrollBox.scrollLeft || x > scrollBox.scrollLeft + scrollBox.clientWidth - 40)) {
      scrollBox.scrollLeft = Math.max(0, x - scrollBox.clientWidth / 3);
    }
    const t0 = (k * cfg.period).toFixed(3), t1 = ((k + 1) * cfg.period).toFixed(3);
    document.getElementById("details-title").textContent =
      "window " + k + ": [" + t0 + ", " + t1 + ") s — messages published in it";
    const body = document.getElementById("details-body");
    body.replaceChildren();
    const rows = byTick.get(k) || [];
    for (const m of rows) {
      const tr = document.createElement("tr");
      tr.className = "msg " + m[4];
      const cells = [m[0].toFixed(3), String(m[1]), String(m[2]), m[3], m[4], fieldsText(m[5])];
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        td.textContent = c;
        if (i === 5) td.className = "fields";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
    document.getElementById("details-count").textContent = rows.length + " messages";
  }
  svg.addEventListener("mousemove", (ev) => {
    const t = timeAt(ev);
    const k = tickOf(t);
    const x = cfg.pad + t * cfg.px;
    cursor.setAttribute("x1", x);
    cursor.setAttribute("x2", x);
    const rows = byTick.get(k) || [];
    readout.textContent = "t = " + Math.max(0, t).toFixed(2) + " s · window " + k + " · " + rows.length +
      " messages (click to pin them below)";
    const el = ev.target.closest("[data-tip]");
    const lines = [];
    if (el) lines.push(el.getAttribute("data-tip"), "");
    const shown = rows.filter((m) => m[4] !== "Tick").slice(0, 8);
    for (const m of shown) lines.push(summary(m));
    if (rows.length > shown.length) lines.push("… " + (rows.length - shown.length) + " more");
    tooltip.textContent = lines.join("\n");
    tooltip.style.display = lines.length ? "block" : "none";
    tooltip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 580) + "px";
    tooltip.style.top = (ev.clientY + 14) + "px";
  });
  svg.addEventListener("mouseleave", () => { tooltip.style.display = "none"; });
  svg.addEventListener("click", (ev) => {
    const el = ev.target.closest("[data-t]");
    show(tickOf(el ? parseFloat(el.getAttribute("data-t")) : timeAt(ev)));
  });
  for (const li of document.querySelectorAll(".expectation-item[data-t]")) {
    li.addEventListener("click", () => {
      const t = parseFloat(li.getAttribute("data-t"));
      if (!isNaN(t)) { show(tickOf(t), true); document.getElementById("details").scrollIntoView(); }
    });
  }
  document.getElementById("prev").addEventListener("click", () => show((selected || 0) - 1));
  document.getElementById("next").addEventListener("click", () => show((selected || 0) + 1));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowLeft") show((selected || 0) - 1);
    if (ev.key === "ArrowRight") show((selected || 0) + 1);
  });
  // "#t=12.4" (seconds) or "#w=62" (window) in the address selects that window: links to a moment
  function fromHash() {
    const m = /^#([tw])=([0-9.]+)$/.exec(location.hash);
    if (!m) return false;
    show(m[1] === "t" ? tickOf(parseFloat(m[2])) : parseInt(m[2], 10), true);
    return true;
  }
  window.addEventListener("hashchange", fromHash);
  if (!fromHash()) {
    // otherwise open on the first failure, so what went wrong is on screen at once
    const failed = document.querySelector(".expectation.failed[data-t]");
    show(failed ? tickOf(parseFloat(failed.getAttribute("data-t"))) : 0, true);
  }
  document.body.setAttribute("data-ready", "1");
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
<div class="info">{info}</div>
{warning}
{banner}
{expectations}
<div id="readout">hover over the timeline to see the messages of a window; click to pin them</div>
<div class="timeline-box"><div class="labels">{labels}</div><div class="scroll">{timeline}</div></div>
<div class="legend">dialog state: {legend}</div>
<div id="details">
<h2><span id="details-title">details</span> <button id="prev" type="button">◀</button>
<button id="next" type="button">▶</button> <small id="details-count"></small></h2>
<table><thead><tr><th>time</th><th>tick</th><th>seq</th><th>source</th><th>message</th><th>fields</th></tr></thead>
<tbody id="details-body"></tbody></table>
</div>
<h2>Metrics</h2>
{metrics}
<div id="tooltip"></div>
<script type="application/json" id="mt-config">{config}</script>
<script type="application/json" id="mt-messages">{messages}</script>
<script>{script}</script>
</body>
</html>
"""
