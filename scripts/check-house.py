#!/usr/bin/env python3
"""The shape of the tree, checked: what a newcomer relies on when reading it.

1. The repository stands alone: every relative path a file cites (a
   Markdown link, a Rust `#[path]` or `include_str!`) names a file of the
   repository, and every upper-case Markdown document a file names (as in
   README or ARCHITECTURE, with the .md ending) is one the repository has.
2. No non-test Rust source file is longer than MAX_LINES lines.
3. No import cycle between the files of a crate: a file never depends,
   directly or through others, on a file that depends on it. A module
   naming its own descendants (declaring and re-exporting them) is
   structure, not a dependency, and is not counted; test modules at the end
   of a file are not counted either.
4. `ARCHITECTURE.md` maps every folder: each folder that holds a tracked
   file is named there (as `path/`), except the data below a fuzz corpus,
   a test's fixtures or a package's generated sources (their parent is
   named).

Exits non-zero and says what is wrong when a check fails.

    python3 scripts/check-house.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

MAX_LINES = 800

ROOT = Path(__file__).resolve().parent.parent

# A cited relative path (a Markdown link, a Rust path attribute or include),
# and an upper-case document name.
RELATIVE = re.compile(
    r"\]\((\.{1,2}/[^)#\s]+)|(?:path = |include_(?:str|bytes)!\()\"(\.{1,2}/[^\"]+)\""
)
DOCUMENT = re.compile(r"\b[A-Z][A-Z_]+\.md\b")


def tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    return [ROOT / p for p in out.decode().split("\0") if p]


def check_citations(files: list[Path]) -> list[str]:
    problems = []
    documents = {f.name for f in files if f.suffix == ".md"}
    for f in files:
        if f.suffix in {".lock"} or "node_modules" in f.parts:
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            cited = [m.group(1) or m.group(2) for m in RELATIVE.finditer(line)]
            outside = [
                c
                for c in cited
                if not (
                    (f.parent / c).resolve().is_relative_to(ROOT)
                    and (f.parent / c).resolve().exists()
                )
            ]
            outside += [d for d in DOCUMENT.findall(line) if d not in documents]
            for cited in outside:
                problems.append(
                    f"{f.relative_to(ROOT)}:{n}: cites {cited}, which is not in the repository"
                )
    return problems


def is_test_source(rel: Path) -> bool:
    parts = rel.parts
    return (
        "tests" in parts
        or "benches" in parts
        or "examples" in parts
        or "fuzz" in parts
        or rel.name in {"tests.rs", "test_support.rs"}
    )


def check_lengths(files: list[Path]) -> list[str]:
    problems = []
    for f in files:
        rel = f.relative_to(ROOT)
        if f.suffix != ".rs" or is_test_source(rel) or not f.exists():
            continue
        lines = production_text(f.read_text(encoding="utf-8")).count("\n")
        if lines > MAX_LINES:
            problems.append(f"{rel}: {lines} lines (at most {MAX_LINES} outside its test module)")
    return problems


TEST_MODULE = re.compile(r"^#\[cfg\(test\)\]\s*\n(?:#\[[^\n]*\]\s*\n)*\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", re.M)


def production_text(text: str) -> str:
    """The file without a trailing `#[cfg(test)] mod … { … }` block."""
    m = TEST_MODULE.search(text)
    return text[: m.start()] if m else text


# --- import cycles -----------------------------------------------------------

def crate_modules(src: Path) -> dict[tuple[str, ...], Path]:
    """Module path (from the crate root) of every file under `src`."""
    modules: dict[tuple[str, ...], Path] = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts in (["lib"], ["main"]):
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        elif parts[0] == "bin":
            continue
        modules[tuple(parts)] = f
    return modules


def strip_comments(text: str) -> str:
    """The code without comments, and with string and char literals emptied."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif (m := RAW_STRING.match(text, i)) is not None:
            end = text.find('"' + m.group(1), m.end())
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif (m := CHAR.match(text, i)) is not None:
            i = m.end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


RAW_STRING = re.compile(r'b?r(#*)"')
CHAR = re.compile(r"b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'")


def expand_use_tree(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    out: list[str] = []

    def walk(prefix: str, t: str) -> None:
        if "{" not in t:
            t = re.sub(r"as\w+$", "", t)
            out.append(prefix + t)
            return
        i = t.index("{")
        head, body = t[:i], t[i + 1 : -1]
        depth, start = 0, 0
        for j, ch in enumerate(body + ","):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                part = body[start:j]
                if part:
                    walk(prefix + head, part)
                start = j + 1

    walk("", tree)
    return out


PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+)")
NAMED = re.compile(r"\b(\w+)((?:::\w+)+)")
USE = re.compile(r"\buse\s+((?:crate|super|self)::[^;]+);")


def references(text: str, here: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Absolute module paths (maybe with a trailing item name) a file names."""
    paths = [p.replace("\n", "") for m in USE.finditer(text) for p in expand_use_tree(m.group(1))]
    body = USE.sub("", text)
    paths += [m.group(1) + m.group(2) for m in PATH.finditer(body)]
    # Names a `use` brought in stand for their full path where the body
    # continues them (`use super::query;` then `query::postgres::Cache`).
    aliases = {p.split("::")[-1]: p for p in paths if not p.endswith("::*")}
    for m in NAMED.finditer(body):
        if m.group(1) in aliases and m.start() > 0 and body[m.start() - 1] != ":":
            paths.append(aliases[m.group(1)] + m.group(2))
    out = []
    for p in paths:
        segs = [s for s in p.split("::") if s]
        if not segs:
            continue
        if segs[0] == "crate":
            resolved = segs[1:]
        else:
            cur = list(here)
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    cur = cur[:-1]
                segs = segs[1:]
            resolved = cur + segs
        out.append(tuple(resolved))
    return out


def deepest_module(path: tuple[str, ...], modules: dict) -> tuple[str, ...] | None:
    for n in range(len(path), -1, -1):
        if path[:n] in modules:
            return path[:n]
    return None


def cycles_in(src: Path) -> list[list[Path]]:
    modules = crate_modules(src)
    edges: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in modules}
    for mod, f in modules.items():
        text = strip_comments(production_text(f.read_text(encoding="utf-8")))
        for ref in references(text, mod):
            target = deepest_module(ref, modules)
            if target is None or target == mod:
                continue
            if target[: len(mod)] == mod:
                continue  # a module naming its own descendants
            edges[mod].add(target)
    # Tarjan's strongly connected components.
    index: dict = {}
    low: dict = {}
    stack: list = []
    on: set = set()
    found: list[list[Path]] = []
    counter = [0]

    def strong(v) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(modules[m].relative_to(ROOT) for m in comp))

    sys.setrecursionlimit(10_000)
    for v in modules:
        if v not in index:
            strong(v)
    return found


def check_cycles() -> list[str]:
    problems = []
    for src in sorted(ROOT.glob("crates/*/src")):
        for comp in cycles_in(src):
            problems.append("import cycle: " + " <-> ".join(str(p) for p in comp))
    return problems


# Folders named through a parent: the data below a fuzz corpus, seeds or
# a test's fixtures, and the generated packages' own source layouts.
NAMED_BY_PARENT = re.compile(r"^(.*?/(?:corpus|seeds|fixtures))(?:/.*)?$|^(sdks/(?:kotlin|swift))/.+$")


def check_map(files: list[Path]) -> list[str]:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    folders = set()
    for f in files:
        rel = f.relative_to(ROOT).parent.as_posix()
        if rel == "." or "node_modules" in rel:
            continue
        match = NAMED_BY_PARENT.match(rel)
        folders.add(next(g for g in match.groups() if g) if match else rel)
    return [
        f"ARCHITECTURE.md does not map the folder `{folder}/`"
        for folder in sorted(folders)
        if f"`{folder}/`" not in text
    ]


def main() -> int:
    files = tracked_files()
    problems = (
        check_citations(files) + check_lengths(files) + check_cycles() + check_map(files)
    )
    for p in problems:
        print(p)
    if problems:
        print(f"\n{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("the house is in order: no outside citations, no file over "
          f"{MAX_LINES} lines, no import cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
