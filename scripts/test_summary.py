# test_summary.py: adds up the JUnit/xUnit XML files that scripts/test.sh's test phases wrote and prints
# one closing line "tests: N passed, N failed, N skipped" (swift test's XCTest and Swift Testing files,
# pytest's). Usage: python3 scripts/test_summary.py RESULTS_DIR [PREFIX_OF_A_FAILED_PHASE ...]
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def count(path: Path) -> tuple[int, int, int]:
    """(tests, failed, skipped) in one JUnit/xUnit file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return tests, failed, skipped


def main() -> int:
    results = Path(sys.argv[1])
    failed_phases = sys.argv[2:]
    tests = failed = skipped = 0
    failed_by_prefix = {p: 0 for p in failed_phases}
    for f in sorted(results.glob("*.xml")):
        try:
            t, fl, sk = count(f)
        except (ET.ParseError, ValueError) as e:
            print(f"test_summary: cannot read {f}: {e}", file=sys.stderr)
            continue
        tests, failed, skipped = tests + t, failed + fl, skipped + sk
        for p in failed_by_prefix:
            if f.name.startswith(p):
                failed_by_prefix[p] += fl
    passed = max(tests - failed - skipped, 0)
    # A phase that failed yet recorded no failing test (crash, timeout, no XML) counts as one failure.
    failed += sum(1 for n in failed_by_prefix.values() if n == 0)
    print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
