#!/usr/bin/env python3
"""Finds files that import each other in a cycle, within each crate.

Every `crate::a::b` or `super::x` path in a file's non-test code (in `use`
lines and inline) is resolved to the file of the longest module prefix
that exists; an edge goes from the file to that file. `mod x;` declarations
and re-exports of a child module's items from its parent (`pub use`) are
not imports. Exits 1 and prints each cycle when there is one."""
import os, re, subprocess, sys

def module_file(src, parts):
    """The file of module `parts` under `src`, or None."""
    base = os.path.join(src, *parts) if parts else None
    if not parts:
        for root in ("lib.rs", "main.rs"):
            if os.path.exists(os.path.join(src, root)):
                return os.path.join(src, root)
        return None
    for cand in (base + ".rs", os.path.join(base, "mod.rs")):
        if os.path.exists(cand):
            return cand
    return None

def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel

def resolve(src, parts):
    for n in range(len(parts), -1, -1):
        f = module_file(src, parts[:n])
        if f:
            return f
    return None

def non_test(text):
    lines = text.split("\n")
    for i, l in enumerate(lines):
        if l.startswith("#[cfg(test)]") and i + 1 < len(lines) and re.match(r"(pub(\(\w+\))? )?mod \w+", lines[i + 1]):
            return "\n".join(lines[:i])
    return text

def expand_use(stmt):
    """`use a::{b, c::{d}}` -> ['a::b', 'a::c::d'] (good enough for our code)."""
    stmt = re.sub(r"\s+", "", stmt)
    m = re.match(r"(.*?)\{(.*)\}$", stmt)
    if not m:
        return [stmt]
    prefix, inner = m.group(1), m.group(2)
    out, depth, cur = [], 0, ""
    for ch in inner + ",":
        if ch == "," and depth == 0:
            if cur:
                out += expand_use(prefix + cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    return out

def main():
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*/src/*.rs", "*/src/**/*.rs"], capture_output=True, text=True).stdout.split()
    crates = {}
    # third_party/: vendored upstream code, not written to our rules.
    files = [f for f in files if not f.startswith("third_party/")]
    for f in files:
        src = f[: f.index("/src/") + 4]
        crates.setdefault(src, []).append(f)
    cycles = 0
    for src, fs in sorted(crates.items()):
        edges = {f: set() for f in fs}
        for f in fs:
            text = non_test(open(f).read())
            # Comments (docs included) are not imports.
            text = re.sub(r"//.*", "", text)
            me = module_of(src, f)
            paths = []
            for stmt in re.findall(r"^\s*(pub(?:\([\w:]+\))? )?use\s+([^;]+);", text, re.M):
                if stmt[0].startswith("pub"):
                    continue  # re-exports
                paths += expand_use(stmt[1])
            body = re.sub(r"^\s*(pub(?:\([\w:]+\))? )?use\s+[^;]+;", "", text, flags=re.M)
            paths += re.findall(r"\b((?:crate|super)(?:::\w+)+)", body)
            # Bare paths into child modules (`state::SeqState::new`).
            paths += [p for p in re.findall(r"(?<![\w:])([a-z_]\w*(?:::\w+)+)", body) if p.split("::")[0] not in ("crate", "super", "self")]
            for p in paths:
                parts = [x for x in p.split("::") if x]
                if not parts:
                    continue
                if parts[0] == "self":
                    target = me + parts[1:]
                elif parts[0] == "crate":
                    target = parts[1:]
                elif parts[0] == "super":
                    base = me[:]
                    while parts and parts[0] == "super":
                        base = base[:-1]
                        parts = parts[1:]
                    target = base + parts
                elif module_file(src, me + parts[:1]):
                    target = me + parts  # a child module, by its bare name
                else:
                    continue
                t = resolve(src, [x for x in target if x != "self"])
                if t and t != f and t in edges:
                    edges[f].add(t)
        if os.environ.get("DEBUG_EDGES"):
            for a in sorted(edges):
                print(a, "->", sorted(edges[a]))
        # DFS for cycles, report each strongly connected pair/loop once.
        index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
        def strong(v):
            index[v] = low[v] = counter[0]; counter[0] += 1
            stack.append(v); on.add(v)
            for w in edges[v]:
                if w not in index:
                    strong(w); low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
        sys.setrecursionlimit(10000)
        for v in edges:
            if v not in index:
                strong(v)
        for comp in out:
            cycles += 1
            print("cycle: " + " <-> ".join(comp))
            for a in comp:
                print("   ", a, "->", ", ".join(sorted(t for t in edges[a] if t in comp)))
    sys.exit(1 if cycles else 0)

main()
