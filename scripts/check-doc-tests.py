#!/usr/bin/env python3
"""Every test our promise documents name exists.

THREATS.md, KEYS.md, SERVICE.md and STREAMING.md back each promise with the test that checks it,
written as `path/to/file.rs::test_name` (or `::module::test_name`); a later `::other_test` or
`…::other_test` in the same paragraph means the same file. This check fails when a named file is
gone or has no `fn test_name`, so a renamed or deleted test cannot leave a promise unbacked
without the test command saying so. A name in a test file's module (tests/x.rs with tests/x/ or a
shared tests/support/ directory) is looked for in that file's test directory.

Usage: scripts/check-doc-tests.py [DOC...]   (default: the four documents)
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["docs/THREATS.md", "docs/KEYS.md", "docs/SERVICE.md", "docs/STREAMING.md"]

# `a/b.rs`, `a/b.rs::x::y`, `::y`, `…::y` inside backticks.
REF = re.compile(r"`((?:[\w./-]+\.(?:rs|py))?(?:(?:…)?::[\w:]+)?)`")


def resolve(path):
    """The file a reference names, relative to the repository or to crates/."""
    for candidate in (path, os.path.join("crates", path)):
        full = os.path.join(ROOT, candidate)
        if os.path.isfile(full):
            return full
    return None


def search_files(full):
    """The file, and for a test or bench file every .rs/.py file of its directory tree."""
    files = [full]
    parent = os.path.dirname(full)
    if os.path.basename(parent) in ("tests", "benches", "fuzz_targets") or "/tests/" in full:
        top = full[: full.index("/tests/") + len("/tests")] if "/tests/" in full else parent
        for dirpath, _, names in os.walk(top):
            files += [os.path.join(dirpath, n) for n in names if n.endswith((".rs", ".py"))]
    return files


def defines(files, name):
    pattern = re.compile(r"\b(?:fn|def)\s+" + re.escape(name) + r"\b")
    for f in files:
        with open(f, encoding="utf-8") as fh:
            if pattern.search(fh.read()):
                return True
    return False


def check(doc):
    problems, count = [], 0
    with open(os.path.join(ROOT, doc), encoding="utf-8") as fh:
        text = fh.read()
    current = None
    for paragraph in re.split(r"\n\s*\n", text):
        current = None
        for m in REF.finditer(paragraph):
            ref = m.group(1)
            if not ref:
                continue
            path, sep, rest = ref.partition("::")
            path = path.rstrip("…")
            if path:
                if not re.search(r"(^|/)(tests|benches|src|fuzz_targets|examples)/", path):
                    continue
                full = resolve(path)
                if full is None:
                    problems.append(f"{doc}: `{ref}`: no file {path}")
                    current = None
                    continue
                current = full
                count += 1
            elif current is None:
                continue
            if not sep:
                continue
            name = rest.split("::")[-1]
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                continue
            count += 1
            if not defines(search_files(current), name):
                rel = os.path.relpath(current, ROOT)
                problems.append(f"{doc}: `{ref}`: no fn {name} in {rel} (or its test directory)")
    return problems, count


def main():
    docs = sys.argv[1:] or DOCS
    problems, total = [], 0
    for doc in docs:
        p, n = check(doc)
        problems += p
        total += n
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(
            f"check-doc-tests: {len(problems)} of {total} references to tests do not resolve; "
            "rename the reference with the test, or restore the test",
            file=sys.stderr,
        )
        return 1
    print(f"check-doc-tests: {total} references to tests and files resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
