"""Several named models in one job: the names, the heads' graph and its checks (pure functions).

``--model NAME=REF`` names a model; its outputs are ``NAME/OUTPUT``. ``--model NAME=REF@OTHER/OUT``
is a *head*: it gets the rows of model ``OTHER``'s output ``OUT`` instead of pixels, and runs after
it in the worker. Every problem here is a one-line ``SpecError`` found before anything starts: a
name given twice or not a plain word, a head fed from an unknown model or output (the output is
checked once the models are described), a cycle of heads, an output of no named model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import SpecError

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")
_NAMED = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.+)")
_FROM = re.compile(r"(.+)@([A-Za-z][A-Za-z0-9_.\-]*)/([^/]+)")


def parse_model(text: str) -> tuple[str, str, str]:
    """``NAME=REF[@OTHER/OUTPUT]`` -> (name, ref, input); a plain ``REF`` -> ("", REF, "")."""
    named = _NAMED.fullmatch(text)
    if named is None:
        return "", text, ""
    name, ref = named.groups()
    head = _FROM.fullmatch(ref)
    if head is None:
        return name, ref, ""
    return name, head.group(1), f"{head.group(2)}/{head.group(3)}"


def split_named(text: str, flag: str) -> tuple[str, str]:
    """A per-model option value ``NAME=VALUE`` -> (NAME, VALUE); a plain value -> ("", value)."""
    named = _NAMED.fullmatch(text)
    if named is None or not NAME.fullmatch(named.group(1)):
        return "", text
    if not named.group(2):
        raise SpecError(f"--{flag} {text}: no value after {named.group(1)}=")
    return named.group(1), named.group(2)


def split_output(output: str) -> tuple[str, str]:
    """``NAME/OUTPUT`` -> (NAME, OUTPUT)."""
    name, _, rest = output.partition("/")
    return name, rest


def order(models: Sequence[Any]) -> list[Any]:
    """The models in the order a worker runs them: every head after the model it reads."""
    by_name = {m.name: m for m in models}
    done: list[Any] = []
    placed: set[str] = set()
    pending = list(models)
    while pending:
        ready = [m for m in pending if not m.input or split_output(m.input)[0] in placed]
        if not ready:
            cycle = " -> ".join(_cycle(pending, by_name))
            raise SpecError(f"--model: the heads feed each other in a cycle: {cycle}")
        for m in ready:
            done.append(m)
            placed.add(m.name)
        pending = [m for m in pending if m.name not in placed]
    return done


def _cycle(pending: Sequence[Any], by_name: dict[str, Any]) -> list[str]:
    """One cycle among the heads left unplaced, as names (the first repeated at the end)."""
    path: list[str] = []
    node = pending[0]
    while node.name not in path:
        path.append(node.name)
        node = by_name[split_output(node.input)[0]]
    return [*path[path.index(node.name):], node.name]


def check_models(models: Sequence[Any], outputs: Iterable[str], modality: str) -> None:
    """The checks that need no model loaded (``JobSpec.check``)."""
    if modality == "text":
        raise SpecError(f"--modality {modality} runs one model: give one --model")
    names = [m.name for m in models]
    for name in names:
        if not name:
            raise SpecError("give every model a name: --model NAME=REF (or a single --model)")
        if not NAME.fullmatch(name):
            raise SpecError(f"--model {name}=...: a name is a letter then letters, digits, "
                            "'_', '.' or '-'")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SpecError(f"--model: the name {twice[0]!r} is given twice")
    for m in models:
        if not m.input:
            continue
        source, output = split_output(m.input)
        if source not in names:
            raise SpecError(f"--model {m.name}=...@{m.input}: no model is named {source!r}")
        if not output:
            raise SpecError(f"--model {m.name}=...@{m.input}: name the output (NAME/OUTPUT)")
        if m.preprocess is not None:
            raise SpecError(f"model {m.name} is a head (it reads {m.input}): it takes no "
                            "image preprocessing")
    order(models)  # a cycle is refused here
    for output in outputs:
        name, rest = split_output(output)
        if name not in names or not rest:
            raise SpecError(f"--outputs {output}: with several models an output is NAME/OUTPUT "
                            f"(models: {', '.join(names)})")
