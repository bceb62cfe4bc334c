#!/usr/bin/env python3
"""The shape of Ark's code, measured (issue 10): lines per module, the files
that name each harvest kind, functions over 80 lines, and import circles
between the modules of each crate.

    python3 bench/shape.py [TREE]      # TREE defaults to the repository

A module is a top-level `src/<name>.rs` or `src/<name>/` of a crate; an
import is any `crate::<name>` (or `super::` to a sibling) in its files. A
kind is "named" where a file compares with or matches on it: `Kind::Zim`,
`KIND_ZIM`, or the kind's string in a comparison.
"""
import os
import re
import sys
from collections import defaultdict

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = ["core", "link", "proto", "agent", "commander", "demo"]
KINDS = ["File", "Zim", "Rss", "Media", "Git"]


def rust_files(src):
    for dirpath, _, files in os.walk(src):
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(dirpath, f)


def module_of(src, path):
    rel = os.path.relpath(path, src)
    top = rel.split(os.sep)[0]
    return top[:-3] if top.endswith(".rs") else top


def code_lines(text):
    """Lines without the unit tests (`#[cfg(test)] mod tests`)."""
    at = text.find("#[cfg(test)]\nmod tests")
    return text[:at] if at >= 0 else text


def code_only(text):
    """[`code_lines`] without comments: a doc link is not an import."""
    return "\n".join(l for l in code_lines(text).split("\n") if not l.lstrip().startswith("//"))


def long_functions(text, limit=80):
    found = []
    lines = code_lines(text).split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(pub(\([a-z]+\))? )?(async )?fn (\w+)", line)
        if not m or line.rstrip().endswith(";"):
            continue
        indent = m.group(1)
        doc = []
        k = i - 1
        while k >= 0 and lines[k].lstrip().startswith(("///", "#[")):
            doc.append(lines[k])
            k -= 1
        reason = any("Long by design" in d for d in doc)
        for j in range(i + 1, len(lines)):
            if lines[j] == indent + "}":
                if j - i + 1 > limit:
                    found.append((m.group(5), j - i + 1, reason))
                break
    return found


def cycles(graph):
    """Strongly connected components with more than one module."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    sys.setrecursionlimit(10000)
    print(f"# Shape of {ROOT}\n")
    kind_files = defaultdict(set)
    print("| crate | module | lines (without unit tests) |")
    print("|---|---|---|")
    report_long, report_cycles, biggest = [], [], []
    for crate in CRATES:
        src = os.path.join(ROOT, crate, "src")
        if not os.path.isdir(src):
            continue
        lines = defaultdict(int)
        graph = defaultdict(set)
        for path in rust_files(src):
            text = open(path, encoding="utf-8").read()
            mod = module_of(src, path)
            body = code_lines(text)
            n = body.count("\n")
            lines[mod] += n
            rel = os.path.relpath(path, ROOT)
            biggest.append((n, rel))
            graph[mod]
            for m in re.findall(r"crate::([a-z_]+)", code_only(text)):
                if m != mod:
                    graph[mod].add(m)
            for name, n, reason in long_functions(text):
                why = " — with its reason" if reason else ""
                report_long.append(f"{rel}: {name} ({n} lines){why}")
            for kind in KINDS:
                upper = kind.upper()
                if re.search(rf"Kind::{kind}\b|KIND_{upper}\b", body):
                    kind_files[kind].add(rel)
        for mod in sorted(lines):
            print(f"| {crate} | {mod} | {lines[mod]} |")
        for comp in cycles({k: {w for w in v if w in graph} for k, v in graph.items()}):
            report_cycles.append(f"{crate}: {' <-> '.join(comp)}")
    print("\n## Files that name each kind\n")
    for kind in KINDS:
        files = sorted(kind_files[kind])
        print(f"- {kind}: {len(files)} — {', '.join(files)}")
    print("\n## Library files over 600 lines (without unit tests)\n")
    for n, rel in sorted(biggest, reverse=True):
        if n > 600:
            print(f"- {rel}: {n}")
    print("\n## Functions over 80 lines\n")
    for line in report_long or ["none"]:
        print(f"- {line}")
    print("\n## Import circles between modules\n")
    for line in report_cycles or ["none"]:
        print(f"- {line}")


if __name__ == "__main__":
    main()
