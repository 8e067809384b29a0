"""Cold start: wall time from process start to the first result line of `edgecell run`.

    python -m edgecell.benchmarks.cold_start MODEL IMAGE [--runs 7] [--backend litert]

Each run is a fresh Python process (`python -m edgecell run MODEL IMAGE --json`), timed until its
first JSON line arrives, so imports, model load and the first inference all count, as on a device
that starts the counter when the microscope is switched on. Also reports how long `import
edgecell.cli` takes and whether TensorFlow was imported (it must not be, on the runtime path).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from edgecell.benchmarks.stats import summarize


def first_result_seconds(model: str, image: str, backend: str = "auto") -> float:
    cmd = [sys.executable, "-m", "edgecell", "run", model, image, "--json", "--backend", backend]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.wait(timeout=60)
    if not line or not json.loads(line).get("ok"):
        raise RuntimeError(f"edgecell run gave no result: {line!r}")
    return elapsed


def import_seconds() -> tuple[float, bool]:
    code = ("import time, sys; t = time.perf_counter(); import edgecell.cli, edgecell.model, edgecell.pipeline; "
            "print(time.perf_counter() - t, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), out[1] == "True"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    first_result_seconds(args.model, args.image, args.backend)  # warm the OS file cache once
    times = [first_result_seconds(args.model, args.image, args.backend) * 1e3 for _ in range(args.runs)]
    imports = [import_seconds() for _ in range(3)]
    report = {"model": args.model, "backend": args.backend, "runs": args.runs,
              "first_result_ms": summarize(times),
              "import_ms": round(min(t for t, _ in imports) * 1e3, 1),
              "tensorflow_imported": any(tf for _, tf in imports)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
