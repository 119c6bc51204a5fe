# Runs before main.py on a board.  Kept minimal on purpose: a bug here cannot be fixed
# remotely.  Boot-loop protection (failed-boot counter -> SAFE mode) lives in
# lunanode/health.py so it also covers the unix port.  Put /lib first on the path.
import sys

if "/lib" not in sys.path:
    sys.path.insert(0, "/lib")
