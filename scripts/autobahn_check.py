#!/usr/bin/env python3
"""Judge Autobahn|Testsuite reports written by scripts/autobahn.sh.

    scripts/autobahn_check.py [server|client|all] [--reports DIR]
    scripts/autobahn_check.py --self-test

Reads <reports>/servers/index.json (server testing, wstest fuzzingclient) and
<reports>/clients/index.json (client testing, wstest fuzzingserver). Exits 1 unless
every case has `behavior` and `behaviorClose` equal to OK, or INFORMATIONAL where the
suite itself reports INFORMATIONAL. NON-STRICT, FAILED, UNIMPLEMENTED, WRONG CODE,
UNCLEAN, a missing report, a report with zero cases, and cases that autobahn.sh
selected (expected-cases.json) but that have no result all fail.
"""

import argparse
import json
import os
import re
import sys
import tempfile
import unittest

ACCEPTED = ("OK", "INFORMATIONAL")
# Always shown in the summary, in this order; any other verdict is appended.
BEHAVIORS = ("OK", "INFORMATIONAL", "NON-STRICT", "FAILED", "UNIMPLEMENTED")
SIDES = {
    "server": ("servers", "fuzzingclient"),
    "client": ("clients", "fuzzingserver"),
}
DEFAULT_REPORTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "autobahn", "reports")


def case_key(case_id):
    """Sort "9.10.2" after "9.2.1"."""
    return [int(p) if p.isdigit() else p for p in re.split(r"[.]", case_id)]


def count(verdicts, always=()):
    counts = {v: 0 for v in always}
    for v in verdicts:
        counts[v] = counts.get(v, 0) + 1
    order = list(always) + sorted(v for v in counts if v not in always)
    return ", ".join("%d %s" % (counts[v], v) for v in order)


def case_details(side_dir, entry):
    """Short explanation from the per-case report file, if present."""
    name = entry.get("reportfile")
    if not name:
        return ""
    path = os.path.join(side_dir, name)
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return ""
    parts = []
    for key in ("description", "result", "resultClose", "wasNotCleanReason"):
        if report.get(key):
            parts.append("%s: %s" % (key, report[key]))
    expected_close = (report.get("expectedClose") or {}).get("closeCode")
    if expected_close is not None and entry.get("behaviorClose") != "OK":
        parts.append("close code: expected one of %s, got %s" % (expected_close, report.get("remoteCloseCode")))
    parts.append("report: %s" % path)
    return "\n      ".join(parts)


def check_side(reports, side, out):
    """Returns (passed, failed) case counts; failed > 0 or a missing report fails the side."""
    subdir, mode = SIDES[side]
    side_dir = os.path.join(reports, subdir)
    label = "%s (%s)" % (side, mode)
    index_path = os.path.join(side_dir, "index.json")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        print("%s: FAILED: no report at %s" % (label, index_path), file=out)
        return 0, 1
    except ValueError as e:
        print("%s: FAILED: unreadable %s: %s" % (label, index_path, e), file=out)
        return 0, 1

    expected = None
    expected_path = os.path.join(side_dir, "expected-cases.json")
    if os.path.exists(expected_path):
        with open(expected_path, encoding="utf-8") as f:
            expected = json.load(f)

    if not index:
        print("%s: FAILED: 0 cases (no agent in %s)" % (label, index_path), file=out)
        return 0, max(1, len(expected or ()))

    passed = failed = 0
    for agent in sorted(index):
        cases = index[agent]
        name = label if len(index) == 1 else "%s [%s]" % (label, agent)
        ids = sorted(cases, key=case_key)
        behaviors = [cases[c].get("behavior", "MISSING") for c in ids]
        closes = [cases[c].get("behaviorClose", "MISSING") for c in ids]
        print(
            "%s: %d cases: %s; behaviorClose: %s"
            % (name, len(ids), count(behaviors, BEHAVIORS), count(closes, ("OK",)) or "none"),
            file=out,
        )
        problems = []
        for c in ids:
            b = cases[c].get("behavior", "MISSING")
            bc = cases[c].get("behaviorClose", "MISSING")
            if b == "OK" and bc == "OK":
                passed += 1
                continue
            ok = b in ACCEPTED and bc in ACCEPTED
            passed += ok
            failed += not ok
            line = "  %-13s %-8s behavior=%s behaviorClose=%s" % ("informational" if ok else "FAIL", c, b, bc)
            if not ok:
                details = case_details(side_dir, cases[c])
                if details:
                    line += "\n      " + details
            problems.append(line)
        missing = sorted(set(expected or ()) - set(ids), key=case_key)
        if missing:
            failed += len(missing)
            problems.append("  FAIL          %d selected cases have no result: %s" % (len(missing), " ".join(missing)))
        if not ids:
            failed += max(1, len(expected or ()))
            problems.append("  FAIL          0 cases in the report")
        for line in problems:
            print(line, file=out)
    return passed, failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("side", nargs="?", default="all", choices=("server", "client", "all"))
    parser.add_argument("--reports", default=os.path.normpath(DEFAULT_REPORTS), help="default: autobahn/reports")
    parser.add_argument("--self-test", action="store_true", help="run this checker's own tests")
    args = parser.parse_args(argv)
    if args.self_test:
        result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
        return 0 if result.wasSuccessful() else 1
    sides = ("server", "client") if args.side == "all" else (args.side,)
    passed = failed = 0
    for side in sides:
        p, f = check_side(args.reports, side, sys.stdout)
        passed += p
        failed += f
    print("autobahn: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


class SelfTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.reports = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, subdir, cases, expected=None, agent="peregrine"):
        d = os.path.join(self.reports, subdir)
        os.makedirs(d, exist_ok=True)
        index = {agent: {c: {"behavior": b, "behaviorClose": bc, "reportfile": "x_%s.json" % c.replace(".", "_")}
                         for c, (b, bc) in cases.items()}} if cases is not None else {}
        with open(os.path.join(d, "index.json"), "w") as f:
            json.dump(index, f)
        if expected is not None:
            with open(os.path.join(d, "expected-cases.json"), "w") as f:
                json.dump(expected, f)

    def check(self, side="server"):
        import io
        out = io.StringIO()
        passed, failed = check_side(self.reports, side, out)
        return passed, failed, out.getvalue()

    def test_all_ok(self):
        self.write("servers", {"1.1.1": ("OK", "OK"), "9.10.1": ("OK", "OK"), "9.2.1": ("OK", "OK")})
        p, f, text = self.check()
        self.assertEqual((p, f), (3, 0))
        self.assertIn("server (fuzzingclient): 3 cases: 3 OK, 0 INFORMATIONAL, 0 NON-STRICT, 0 FAILED, "
                      "0 UNIMPLEMENTED; behaviorClose: 3 OK", text)

    def test_informational_accepted(self):
        self.write("clients", {"1.1.1": ("OK", "OK"), "7.1.6": ("INFORMATIONAL", "INFORMATIONAL")})
        p, f, text = self.check("client")
        self.assertEqual((p, f), (2, 0))
        self.assertIn("informational 7.1.6", text)

    def test_non_strict_failed_unimplemented_fail(self):
        for verdict in ("NON-STRICT", "FAILED", "UNIMPLEMENTED", "WRONG CODE"):
            self.write("servers", {"1.1.1": ("OK", "OK"), "2.1": (verdict, "OK")})
            p, f, text = self.check()
            self.assertEqual((p, f), (1, 1), verdict)
            self.assertIn("FAIL          2.1", text)

    def test_bad_close_fails(self):
        self.write("servers", {"1.1.1": ("OK", "UNCLEAN"), "1.1.2": ("OK", "WRONG CODE")})
        p, f, text = self.check()
        self.assertEqual((p, f), (0, 2))
        self.assertIn("behaviorClose: 0 OK, 1 UNCLEAN, 1 WRONG CODE", text)

    def test_missing_report_fails(self):
        self.assertEqual(self.check()[:2], (0, 1))

    def test_zero_cases_fail(self):
        self.write("servers", None)
        self.assertEqual(self.check()[:2], (0, 1))
        self.write("servers", {})
        self.assertEqual(self.check()[:2], (0, 1))

    def test_missing_selected_cases_fail(self):
        self.write("servers", {"1.1.1": ("OK", "OK")}, expected=["1.1.1", "1.1.2", "2.1"])
        p, f, text = self.check()
        self.assertEqual((p, f), (1, 2))
        self.assertIn("2 selected cases have no result: 1.1.2 2.1", text)

    def test_main_exit_code(self):
        self.write("servers", {"1.1.1": ("OK", "OK")})
        self.write("clients", {"1.1.1": ("OK", "OK")})
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()) as out:
            self.assertEqual(main(["--reports", self.reports]), 0)
        self.assertTrue(out.getvalue().endswith("autobahn: 2 passed, 0 failed\n"))
        self.write("clients", {"1.1.1": ("NON-STRICT", "OK")})
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(main(["--reports", self.reports]), 1)
            self.assertEqual(main(["server", "--reports", self.reports]), 0)


if __name__ == "__main__":
    sys.exit(main())
