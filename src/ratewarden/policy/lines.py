"""Where each key of a TOML document is written: ``("rule", 1, "limits") -> 17``.

``tomllib`` returns plain dicts without positions, so the loader asks this index for the line of
the value it rejects. It understands ``[table]``, ``[[array.of.tables]]``, dotted keys and the
keys of a one-line inline table (``match = { path = "/x", methods = ["POST"] }``); a value it
cannot place is reported at the line of its nearest enclosing key.
"""

from __future__ import annotations

import re

__all__ = ["LineIndex"]

Path = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*(\]\]?)\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*=""")
_INLINE_KEY = re.compile(r"""(?:^|[{,])\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*=""")


def _split_dotted(text: str) -> tuple[str, ...]:
    parts = re.findall(r"""\s*("[^"]*"|'[^']*'|[^.\s]+)\s*(?:\.|$)""", text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


class LineIndex:
    def __init__(self, text: str) -> None:
        self.lines: dict[Path, int] = {}
        self.aliases: dict[Path, Path] = {}
        counts: dict[tuple[str, ...], int] = {}
        ctx: Path = ()
        in_multiline = False
        depth = 0
        for n, line in enumerate(text.splitlines(), start=1):
            if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                in_multiline = not in_multiline
                if not in_multiline:
                    continue
            if in_multiline and not _KEY.match(line):
                continue
            if depth > 0:
                depth += _depth(line)
                continue
            h = _HEADER.match(line)
            if h and not _KEY.match(line):
                names = _split_dotted(h.group(2))
                for end in range(1, len(names) + 1):
                    self.lines.setdefault(names[:end], n)
                if h.group(1) == "[[":
                    i = counts.get(names, 0)
                    counts[names] = i + 1
                    ctx = (*names, i)
                else:
                    ctx = names
                self.lines.setdefault(ctx, n)
                continue
            k = _KEY.match(line)
            if k:
                path = (*ctx, *_split_dotted(k.group(1)))
                self.lines.setdefault(path, n)
                rest = line[k.end() :]
                if "{" in rest:
                    inner = rest[rest.find("{") :]
                    for m in _INLINE_KEY.finditer(inner):
                        key = m.group(1)
                        self.lines.setdefault((*path, key[1:-1] if key[:1] in "\"'" else key), n)
                depth = max(0, _depth(rest))

    def alias(self, effective: Path, source: Path) -> None:
        """Report errors under ``effective`` at the line of ``source`` (profile overrides)."""
        self.aliases[effective] = source

    def line(self, path: Path) -> int:
        for end in range(len(path), 0, -1):
            prefix = path[:end]
            if prefix in self.aliases:
                src = self.aliases[prefix] + path[end:]
                return self.line(src) if src != path else 0
            if prefix in self.lines:
                return self.lines[prefix]
        return 0


def _depth(text: str) -> int:
    """Net open brackets on a line, ignoring those inside strings and comments."""
    d = 0
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#":
            break
        elif c in "[{":
            d += 1
        elif c in "]}":
            d -= 1
        i += 1
    return d
