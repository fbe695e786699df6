#!/usr/bin/env python3
"""Lists non-test functions longer than a line limit or with too many
parameters (issue 13's check). Usage: scripts/fn-sizes.py [LINES_MAX] [PARAMS_MAX]"""
import re, subprocess, sys

lines_max = int(sys.argv[1]) if len(sys.argv) > 1 else 100
params_max = int(sys.argv[2]) if len(sys.argv) > 2 else 7
files = subprocess.run(["git", "ls-files", "*.rs"], capture_output=True, text=True).stdout.split()
bad = 0
for path in files:
    # third_party/: vendored upstream code, not written to our rules.
    if "/tests/" in path or path.startswith(("fuzz/", "third_party/")) or "/benches/" in path:
        continue
    text = open(path).read().split("\n")
    # Everything from `#[cfg(test)]` + `mod tests` on is test code.
    end = len(text)
    for i, l in enumerate(text):
        if l.startswith("#[cfg(test)]") and i + 1 < len(text) and re.match(r"(pub(\(\w+\))? )?mod ", text[i + 1]):
            end = i
            break
    i = 0
    while i < end:
        m = re.match(r"^(\s*)(pub(\([a-z]+\))? )?(const )?(async )?(unsafe )?fn (\w+)", text[i])
        if not m:
            i += 1
            continue
        indent, name = m.group(1), m.group(7)
        # Signature up to the opening brace (or `;` for trait items).
        sig, j = text[i], i
        while "{" not in text[j] and not text[j].rstrip().endswith(";"):
            j += 1
            sig += text[j]
        if text[j].rstrip().endswith(";"):
            i = j + 1
            continue
        params = sig[sig.index("(") + 1:]
        depth, args, cur = 1, [], ""
        for ch in params:
            if ch in "(<[":
                depth += 1
            elif ch in ")>]":
                depth -= 1
                if depth == 0:
                    break
            if ch == "," and depth == 1:
                args.append(cur); cur = ""
            else:
                cur += ch
        if cur.strip():
            args.append(cur)
        args = [a for a in args if a.strip() and "self" not in a.split(":")[0]]
        k = j
        while k < len(text) and not (text[k].startswith(indent + "}") and len(text[k].rstrip()) == len(indent) + 1):
            if k == j and text[k].rstrip().endswith("}") and text[k].count("{") == text[k].count("}"):
                break
            k += 1
        n = k - i + 1
        if n > lines_max or len(args) > params_max:
            bad += 1
            print(f"{path}:{i+1}: fn {name}: {n} lines, {len(args)} params")
        i = j + 1
sys.exit(1 if bad else 0)
