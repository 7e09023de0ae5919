#!/usr/bin/env python3
"""JUnit XML from the text output of `cargo test` (libtest's stable format has no JUnit writer).

Usage: libtest_junit.py LOG OUT.xml [SUITE_NAME]
Each `Running tests/X.rs (...)` line starts a test suite named X; each `test NAME ... ok|FAILED|ignored`
line is a test case. A failed case carries the `---- NAME stdout ----` block libtest prints at the end.
A test binary that crashed (no `test result:` line) is reported as one failed case, so nothing is lost.
"""
import re
import sys
import xml.etree.ElementTree as ET

RUNNING = re.compile(r"^\s*Running (?:unittests )?(\S+)")
CASE = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)")
RESULT = re.compile(r"^test result: ")
FINISHED = re.compile(r"finished in ([0-9.]+)s")
STDOUT = re.compile(r"^---- (\S+) stdout ----$")


def parse(lines):
    suites = []  # [name, [(case, status)], {case: output}, finished, seconds]
    current = None
    capture = None
    for line in lines:
        line = line.rstrip("\n")
        m = RUNNING.match(line)
        if m:
            name = m.group(1).removeprefix("tests/").removesuffix(".rs")
            current = [name, [], {}, False, 0.0]
            suites.append(current)
            capture = None
            continue
        if current is None:
            continue
        m = CASE.match(line)
        if m:
            current[1].append((m.group(1), m.group(2)))
            continue
        m = STDOUT.match(line)
        if m:
            capture = m.group(1)
            current[2][capture] = []
            continue
        if line == "failures:":
            capture = None
            continue
        if RESULT.match(line):
            current[3] = True
            f = FINISHED.search(line)
            current[4] = float(f.group(1)) if f else 0.0
            capture = None
            continue
        if capture is not None:
            current[2][capture].append(line)
    return suites


def to_junit(suites, name):
    root = ET.Element("testsuites", name=name)
    for sname, cases, outputs, finished, seconds in suites:
        failures = sum(1 for _, s in cases if s == "FAILED") + (0 if finished else 1)
        skipped = sum(1 for _, s in cases if s == "ignored")
        ts = ET.SubElement(
            root,
            "testsuite",
            name=sname,
            tests=str(len(cases) + (0 if finished else 1)),
            failures=str(failures),
            skipped=str(skipped),
            time=f"{seconds:.3f}",
        )
        for case, status in cases:
            tc = ET.SubElement(ts, "testcase", classname=sname, name=case)
            if status == "FAILED":
                f = ET.SubElement(tc, "failure", message="test failed")
                f.text = "\n".join(outputs.get(case, []))
            elif status == "ignored":
                ET.SubElement(tc, "skipped")
        if not finished:
            tc = ET.SubElement(ts, "testcase", classname=sname, name="(test binary)")
            ET.SubElement(tc, "failure", message="the test binary ended without a result line (crash?)")
    return ET.ElementTree(root)


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: libtest_junit.py LOG OUT.xml [SUITE_NAME]")
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        suites = parse(f)
    tree = to_junit(suites, sys.argv[3] if len(sys.argv) > 3 else "cargo test")
    ET.indent(tree)
    tree.write(sys.argv[2], encoding="utf-8", xml_declaration=True)
    failed = sum(int(s.get("failures")) for s in tree.getroot())
    total = sum(int(s.get("tests")) for s in tree.getroot())
    print(f"{sys.argv[2]}: {total} test case(s), {failed} failed")


if __name__ == "__main__":
    main()
