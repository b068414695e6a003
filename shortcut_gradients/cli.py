"""What the command lines share: one-line usage errors, lists of integers, and strict JSON."""

import argparse
import json
import math

from shortcut_gradients.plumbing.config import InputError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit 2), like every other bad input."""

    def error(self, message):
        raise InputError(message)


def parse_ints(text: str, flag: str, example: str = "256,1024", minimum: int = 1) -> tuple[int, ...]:
    """'256,1024' -> (256, 1024): comma-separated integers, each at least `minimum`, or one line naming `flag`."""
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if not values or min(values) < minimum:
        kind = "positive integers" if minimum == 1 else f"integers of at least {minimum}"
        raise InputError(f"{flag} takes comma-separated {kind} such as {example}; got {text!r}")
    return values


def finite(value):
    """`value` with every inf, -inf and NaN float replaced by None (JSON's null), through dicts and lists.

    JSON has no number for them; null keeps every parser strict. Where a value is null, the text
    report beside it says which (an overflow is named there)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def to_json(value) -> str:
    """`value` as strict JSON (see finite), indented for reading."""
    return json.dumps(finite(value), indent=2, allow_nan=False)
