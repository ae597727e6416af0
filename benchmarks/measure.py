"""Measuring a child process's peak memory and CPU time (used by the ingest benchmark and the memory test)."""

#: Python source defining ``peak_mb()`` for a ``python -c`` child: VmHWM, this address
#: space's peak RSS (``ru_maxrss`` would carry the parent's peak over fork + exec on Linux,
#: so a child of a big pytest process would report the parent's size instead); and
#: ``cpu_seconds()``, its user + system CPU time so far.
PEAK_RSS_SNIPPET = """
import resource


def peak_mb():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
"""
