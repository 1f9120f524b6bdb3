"""The OSC address space as a Markdown table, generated from the parameter registry.

``python -m studiod.controllers.docs`` prints the table for the embedded default session
(16 channels); the README's "OSC API" section pastes it. Repeated strips are folded into one
row with a placeholder: ``{n}`` a channel number, ``{group}`` a group bus, ``{fx}`` an FX bus,
``{system}`` a monitor system.
"""

from __future__ import annotations

from studiod.controllers.osc import osc_type
from studiod.dsp.layout import build_layout
from studiod.dsp.registry import ENUM, FADER, TOGGLE, Param, Registry
from studiod.dsp.session import Session, default_session


def _template(address: str, session: Session) -> tuple[str, str]:
    """(address with placeholders, what the placeholder stands for)."""
    parts = address.split("/")
    groups = {g.name for g in session.groups}
    fx = {f.name: f.kind for f in session.fx}
    systems = {m.name for m in session.systems}
    scope = ""
    if parts[1] == "ch":
        parts[2] = "{n}"
        scope = f"channels 1…{len(session.channels)}"
        if len(parts) > 4 and parts[3] == "send" and parts[4] in fx:
            parts[4] = "{fx}"
    elif parts[1] == "bus" and parts[2] in groups:
        parts[2] = "{group}"
        scope = "groups: " + ", ".join(g.name for g in session.groups)
    elif parts[1] == "fx" and parts[2] in fx:
        kind = fx[parts[2]]
        parts[2] = "{fx}"
        scope = f"{kind} FX buses"
    elif parts[1] == "monitor" and len(parts) > 3 and parts[2] in systems:
        parts[2] = "{system}"
        scope = "monitor systems"
    return "/".join(parts), scope


def _range(p: Param) -> str:
    if p.kind == ENUM:
        return " \\| ".join(p.choices)
    if p.kind == TOGGLE:
        return "0 \\| 1"
    low = "-inf" if p.taper == FADER else f"{p.minimum:g}"
    return f"{low} … {p.maximum:g}"


def _default(p: Param) -> str:
    if p.kind == ENUM:
        return p.choices[int(p.default)]
    if p.kind == TOGGLE:
        return str(int(p.default))
    return f"{p.default:g}"


def address_table(registry: Registry, session: Session) -> str:
    """Markdown table: address, OSC type, unit, range, default, description."""
    entries: dict[str, tuple[Param, list[str]]] = {}
    for p in registry:
        address, scope = _template(p.address, session)
        _, scopes = entries.setdefault(address, (p, []))
        if scope and scope not in scopes:
            scopes.append(scope)
    rows = []
    for address, (p, scopes) in entries.items():
        scope = " and ".join(scopes).replace(" FX buses and ", ", ")
        what = p.description + (f" ({scope})" if scope else "")
        rows.append(
            f"| `{address}` | {osc_type(p)} | {p.unit} | {_range(p)} | {_default(p)} | {what} |"
        )
    head = [
        "| Address | Type | Unit | Range | Default | What |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(head + rows)


def main() -> None:
    session = default_session()
    print(address_table(build_layout(session).registry, session))


if __name__ == "__main__":
    main()
