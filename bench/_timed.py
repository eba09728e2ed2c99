"""Run argv and write its wall time (start to exit, perf_counter) to a file: `_timed.py OUT CMD ARG...`.

Used inside `nbdkit --run` by bench/_common.bare_copy (overhead.py, throughput.py) so the bare
copy is clocked exactly as the lab clocks its own (client start to client exit), with none of
nbdkit's start or stop in the figure.
"""

import subprocess
import sys
import time

out, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False).returncode
elapsed = time.perf_counter() - t0
with open(out, "w") as f:
    f.write(f"{elapsed:.6f} {rc}\n")
sys.exit(rc)
