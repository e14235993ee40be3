"""The zero-shot prompt template check, shared by `siglip.pipeline`, `siglip serve` and `siglip classify`.

A template is a `str.format` string with exactly one replacement field, `{}` (or `{0}`), where the label goes:
`template.format(label)` is the prompt, as in the reference pipeline. Everything else that `str.format` would
choke on (a named field `{x}`, two fields `{} {}`, a lone `{`, an unknown conversion `{!z}`, a format spec that
does not fit a string `{:d}`) is refused here, up front, with a typed error naming the field, instead of failing
later inside a batch or a request. `{{` and `}}` stay literal braces. No torch here: the CLI imports it to check
`--template` before loading a model.
"""

from __future__ import annotations

import string
from typing import Any

from .errors import InputError

DEFAULT_TEMPLATE = "This is a photo of {}."  # the reference pipeline's default


def template_problem(template: Any) -> str | None:
    """Why `template` is not a usable prompt template, or None when it is."""
    if not isinstance(template, str):
        return f"must be a string, got {type(template).__name__}"
    try:
        fields = [part for part in string.Formatter().parse(template) if part[1] is not None]
    except ValueError as error:  # a lone '{' or '}'
        return f"is not a valid format string ({error})"
    if len(fields) != 1:
        return f"must contain '{{}}' exactly once, where the label goes (it has {len(fields)} fields)"
    _, name, _, conversion = fields[0]
    if name not in ("", "0"):
        return f"must contain '{{}}' where the label goes, not the named field {{{name}}}"
    if conversion not in (None, "s", "r", "a"):
        return f"has an unknown conversion !{conversion}"
    try:
        template.format("label")
    except (ValueError, TypeError, KeyError, IndexError) as error:
        return f"cannot be filled in with a label ({type(error).__name__}: {error})"
    return None


def check_template(template: Any, field: str = "hypothesis_template", error: type[Exception] = InputError) -> str:
    """`template` if it is a usable prompt template, else `error` (InputError by default) naming `field`."""
    problem = template_problem(template)
    if problem is not None:
        shown = template if isinstance(template, str) and len(template) <= 200 else f"{str(template)[:200]}..."
        raise error(f"{field} {problem}: {shown!r} (e.g. 'a photo of {{}}.')")
    return template
