#!/usr/bin/env python3
"""Prints the innermost loop of one function of rustc's `--emit asm` output, as llvm-mca input.

Usage: loop.py FILE.s... --fn SUBSTRING [--has REGEX] [--min N] [--with REGEX] [--not REGEX]

The functions are those whose mangled label contains SUBSTRING; among their loops (a label and
a later branch back to it), the shortest one that contains at least `--min` (default 1)
instructions matching `--has` (default: any), one matching `--with` if given, and none
matching `--not` is printed (`--min`
picks a tile of several rows, e.g. 64 `sdot` for 4 activation rows) (`--not` tells apart the instances of a
generic function, e.g. Q4 tiles shift nibbles and Q8 tiles do not), directives and labels removed, so that
`llvm-mca -mcpu=CPU` reads one iteration (docs/PERFORMANCE.md says how it is used).
"""
import argparse
import re
import sys

ap = argparse.ArgumentParser()
ap.add_argument("files", nargs="+")
ap.add_argument("--fn", required=True)
ap.add_argument("--has", default=".")
ap.add_argument("--not", dest="exclude", default=None)
ap.add_argument("--min", type=int, default=1)
ap.add_argument("--with", dest="also", default=None)
args = ap.parse_args()

bodies = []
for path in args.files:
    lines = open(path).read().splitlines()
    for i, line in enumerate(lines):
        if line.endswith(":") and not line.startswith((".", "\t")) and args.fn in line:
            end = next(
                (j for j in range(i, len(lines)) if lines[j].startswith(".Lfunc_end")),
                len(lines),
            )
            bodies.append(lines[i + 1 : end])
if not bodies:
    sys.exit(f"no function matching {args.fn!r}")

has = re.compile(args.has)
exclude = re.compile(args.exclude) if args.exclude else None
best = None
for body in bodies:
    labels = {}
    for i, line in enumerate(body):
        m = re.match(r"^(\.LBB\w+):", line)
        if m:
            labels[m.group(1)] = i
    for i, line in enumerate(body):
        m = re.match(r"^\s+(b(\.\w+)?|cbn?z|tbn?z)\s.*?(\.LBB\w+)\s*$", line)
        if not m or m.group(3) not in labels or labels[m.group(3)] >= i:
            continue
        start = labels[m.group(3)]
        insns = [
            l.split("//")[0].strip()
            for l in body[start : i + 1]
            if l.startswith("\t") and not l.startswith("\t.")
        ]
        insns = [l for l in insns if l]
        if sum(1 for l in insns if has.search(l)) < args.min:
            continue
        if args.also and not any(re.search(args.also, l) for l in insns):
            continue
        if exclude and any(exclude.search(l) for l in insns):
            continue
        if best is None or len(insns) < len(best):
            best = insns
if best is None:
    sys.exit(f"no loop with {args.has!r} in {args.fn!r}")
print("\n".join(best))
