"""Measuring a child process's peak memory (used by the ingest benchmark and the memory test)."""

#: Python source defining ``peak_mb()`` for a ``python -c`` child: VmHWM, this address
#: space's peak RSS. ``ru_maxrss`` would carry the parent's peak over fork + exec on Linux,
#: so a child of a big pytest process would report the parent's size instead.
PEAK_RSS_SNIPPET = """
import resource


def peak_mb():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""
