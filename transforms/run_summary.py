"""One run-summary shape for every command (replay, stream, batch, publish).

Per source (``click_stream``, ``transactions``, ``product``, ``customer``):
``read = valid + duplicate + dead_lettered`` — each counted where it happens (read
by the reader, dead letters where they are made, duplicates where they are dropped,
valid where the records are kept), so the identity is a check, not a definition.
The totals over the sources carry the same four names, first on the summary line.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

SOURCES = ("click_stream", "transactions", "product", "customer")
FIELDS = ("read", "valid", "duplicate", "dead_lettered")

Counts = Dict[str, Dict[str, int]]


def query_counters(result) -> Dict[Tuple[str, str], int]:
    """``{(namespace, name): value}`` of a Beam result (committed, else attempted);
    empty when the runner cannot report metrics."""
    out: Dict[Tuple[str, str], int] = {}
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001 - some runners cannot report metrics
        return out
    for c in counters:
        try:
            value = c.committed
        except Exception:  # noqa: BLE001 - committed unsupported
            value = None
        if value is None:
            value = c.attempted
        key = (c.key.metric.namespace, c.key.metric.name)
        out[key] = out.get(key, 0) + int(value or 0)
    return out


def source_counts(read: int = 0, valid: int = 0, duplicate: int = 0,
                  dead_lettered: int = 0) -> Dict[str, int]:
    return {"read": int(read), "valid": int(valid), "duplicate": int(duplicate),
            "dead_lettered": int(dead_lettered)}


def totals(per_source: Counts) -> Dict[str, int]:
    return {f: sum(c.get(f, 0) for c in per_source.values()) for f in FIELDS}


def mismatches(per_source: Counts) -> List[str]:
    """Sources whose counts do not add up (read != valid + duplicate + dead_lettered)."""
    bad = []
    for source, c in per_source.items():
        if c["read"] != c["valid"] + c["duplicate"] + c["dead_lettered"]:
            bad.append(f"{source}: read={c['read']} but valid+duplicate+dead_lettered="
                       f"{c['valid'] + c['duplicate'] + c['dead_lettered']}")
    return bad


def summary_dict(per_source: Counts, **extra: Any) -> Dict[str, Any]:
    """``{read, valid, duplicate, dead_lettered, by_source: {...}, **extra}``."""
    ordered = {s: per_source[s] for s in SOURCES if s in per_source}
    ordered.update({s: c for s, c in per_source.items() if s not in ordered})
    return {**totals(ordered), "by_source": ordered, **extra}


def summary_line(command: str, summary: Mapping[str, Any],
                 extra_keys: Iterable[str] = (), prefix: Optional[str] = None) -> str:
    """``{command} done …: read=… valid=… duplicate=… dead_lettered=… | click_stream
    read=… … | extra=…`` — the same names whatever the command."""
    head = prefix if prefix is not None else f"{command} done:"
    parts = [head + " " + " ".join(f"{f}={summary[f]}" for f in FIELDS)]
    for source, c in summary.get("by_source", {}).items():
        parts.append(source + " " + " ".join(f"{f}={c[f]}" for f in FIELDS))
    extras = " ".join(f"{k}={summary[k]}" for k in extra_keys if k in summary)
    if extras:
        parts.append(extras)
    return " | ".join(parts)
