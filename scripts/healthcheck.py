"""The container's healthcheck (compose.yaml, Dockerfile): healthy while the service answers, also while
its first start's calibration runs (`starting`); on failure one line saying why, never a traceback.
Usage: python -I scripts/healthcheck.py [URL]   (default http://127.0.0.1:8000/api/v1/health)"""

import json
import sys
import urllib.request

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/api/v1/health"
try:
    with urllib.request.urlopen(URL, timeout=4) as answer:
        status = json.load(answer).get("status")
except Exception as e:  # any failure: one line for `docker inspect`
    sys.exit(f"unhealthy: {URL}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": "))
if status not in ("ok", "starting"):
    sys.exit(f"unhealthy: {URL} says status {status!r}")
print(f"{status}: {URL}")
