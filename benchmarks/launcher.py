"""Stand-in for /usr/bin/time: run argv[2:], write its peak RSS (KiB), user, sys s to argv[1]."""

import os
import sys

pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss} {usage.ru_utime} {usage.ru_stime}\n")
sys.exit(os.waitstatus_to_exitcode(status))
