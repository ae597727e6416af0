"""Batches: many slides (or archives) through ``ingest``, ``verify``, ``restore`` or ``bench``,
serially in this process or on a dask.distributed cluster, one task per slide.

* :func:`expand_inputs` turns what the user typed (files, folders, globs, ``@list.txt`` or
  a ``.txt`` file listing paths) into the batch's inputs, in order, without repeats;
  :func:`output_for` names each one's output in the output folder (``<stem>.zarr``,
  ``<stem>.tif``, ``<stem>/``).
* The jobs (:class:`IngestJob`, :class:`VerifyJob`, :class:`RestoreJob`, :class:`BenchJob`)
  are picklable callables that do one slide and return its :class:`SlideResult`; a slide
  that fails is a ``failed`` row with its one-line error, never an exception, so the
  others go on. Each output is written complete-or-nothing as a single run writes it.
* :func:`run_batch` runs the jobs, draws one progress bar over the slides, hands each
  finished row to a callback (the command line prints a line per slide) and appends it to
  the summary (:class:`Summary`: CSV or JSON, rewritten after every row, so an interrupted
  batch keeps the rows it finished).
* With a :class:`~distributed.Client`, each slide is one task (``client.submit``); the
  shards (ingest) or tiles (restore) of that slide run inside it on the worker's own
  threads (a slide's ``workers`` setting). A task whose worker dies is rerun elsewhere by
  the scheduler (no ``retries`` needed: jobs never raise): its output's work directory
  lock died with the worker, and the rerun starts that output afresh. Restore tasks for a
  scheduler's GPU workers carry the worker resource ``GPU: 1`` (:func:`task_resources`),
  so each GPU worker runs one restore, with one model loaded per worker process
  (:func:`wsistore.restoration.engine.runner_for` keeps it).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from wsistore.dicom import is_dicom_input
from wsistore.dicomweb import is_dicomweb_url
from wsistore.errors import InputError, first_line
from wsistore.outputs import OutputKind, check_not_input, check_replaceable, occupied, relation
from wsistore.progress import Progress
from wsistore.readers import SLIDE_SUFFIXES, is_archive

if TYPE_CHECKING:
    from distributed import Client

    from wsistore.archive.writer import IngestOptions
    from wsistore.reports.run import BenchOptions
    from wsistore.restoration.pipeline import RestoreOptions

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
#: The worker resource a GPU task asks for (dask-cuda workers: ``resources={"GPU": 1}``).
GPU_RESOURCE = "GPU"
#: Suffixes of the files that list a batch's inputs, one path a line.
LIST_SUFFIXES = (".txt",)
#: The summary's CSV columns: the fields of :class:`SlideResult`, in order.
COLUMNS = ("slide", "output", "status", "error", "bytes_in", "bytes_out", "ratio", "seconds")


@dataclass(frozen=True)
class SlideResult:
    """One row of a batch summary: what became of one slide."""

    slide: str
    output: str
    status: str  # ok, failed or skipped
    error: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    ratio: float = 0.0  # bytes_in / bytes_out
    seconds: float = 0.0


@dataclass(frozen=True)
class Task:
    """One slide of a batch: its input and the output it makes ("" when it makes none)."""

    source: str
    output: str


# -- inputs and outputs -------------------------------------------------------------------
def expand_inputs(items: Sequence[str], archives: bool = False) -> list[Path]:
    """The inputs that ``items`` name, in order, each once: files and archives as given (a
    missing one is kept, to fail as its slide's row), a folder's slides (``archives``: its
    archives), a glob's matches, and the paths listed in ``@FILE`` or a ``.txt`` file
    (relative ones against the list's folder)."""
    found: list[Path] = []
    for item in items:
        found += _expand(item, archives)
    if not found:
        raise InputError("no inputs: " + " ".join(items) if items else "no inputs given")
    return list(dict.fromkeys(found))


def _expand(item: str, archives: bool) -> list[Path]:
    if is_dicomweb_url(item):
        raise InputError(f"{item}: a series on a DICOMweb server is ingested on its own (ingest URL ARCHIVE)")
    if item.startswith("@") or Path(item).suffix.lower() in LIST_SUFFIXES:
        listing = Path(item.removeprefix("@"))
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"cannot read the input list {listing}: {exc.strerror or exc}") from None
        paths = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return [p for line in paths for p in _expand(str(listing.parent / line), archives)]
    if glob.has_magic(item):
        matches = sorted(glob.glob(item))
        if not matches:
            raise InputError(f"no inputs match {item}")
        return [p for match in matches for p in _expand(match, archives)]
    path = Path(item)
    if path.is_dir() and not is_archive(path) and not is_dicom_input(path):  # a DICOM folder is one slide
        children = sorted(path.iterdir())
        if archives:
            chosen = [c for c in children if is_archive(c)]
        else:
            chosen = [c for c in children if c.is_file() and c.suffix.lower() in SLIDE_SUFFIXES]
        if not chosen:
            raise InputError(f"{path} holds no {'archives' if archives else 'slides'}")
        return chosen
    return [path]


def output_for(source: Path, out_dir: Path, suffix: str) -> Path:
    """Where ``source``'s output lands in ``out_dir``: its name without its suffix (``a.svs``,
    ``a.zarr``: ``a``), then ``suffix``."""
    return out_dir / f"{source.stem}{suffix}"


def plan(sources: Sequence[Path], out_dir: Path | None, suffix: str, named: Sequence[str] = ()) -> list[Task]:
    """One :class:`Task` per source. Refused: two sources that would write the same output, an
    output that is (or holds, or lies inside) any of the inputs, and an output folder that is
    an input (a source, or a folder ``named`` on the command line) or lies inside one; it may
    hold them (each output is checked on its own)."""
    tasks = [Task(str(s), str(output_for(s, out_dir, suffix)) if out_dir else "") for s in sources]
    if out_dir is not None:
        folders = [Path(n) for n in named if not n.startswith("@") and not glob.has_magic(n) and Path(n).is_dir()]
        for source in [*folders, *sources]:
            how = relation(out_dir, source)
            if how in ("is", "is inside"):
                raise InputError(f"the output folder {out_dir} {how} the input {source}")
        seen: dict[str, str] = {}
        for task in tasks:
            if task.output in seen:
                raise InputError(f"{seen[task.output]} and {task.source} would both write {task.output}; rename one")
            seen[task.output] = task.source
            check_not_input(task.output, sources)
    return tasks


def size_of(path: str | os.PathLike[str]) -> int:
    """Bytes of a file, or of every file below a folder."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


# -- the jobs -----------------------------------------------------------------------------
def _row(task: Task, start: float, bytes_in: int = 0, bytes_out: int = 0, status: str = OK) -> SlideResult:
    ratio = bytes_in / bytes_out if bytes_out else 0.0
    return SlideResult(task.source, task.output, status, "", bytes_in, bytes_out, ratio, time.perf_counter() - start)


def _guarded(job: Callable[[Task, float], SlideResult], task: Task) -> SlideResult:
    start = time.perf_counter()
    try:
        return job(task, start)
    except Exception as exc:  # a bad slide is a failed row; the batch goes on
        return SlideResult(task.source, task.output, FAILED, _error(exc), seconds=time.perf_counter() - start)


def _error(exc: Exception) -> str:
    """An error in one line, as the command line words it."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return first_line(exc)


@dataclass(frozen=True)
class IngestJob:
    """Archive one slide with ``options``; ``resume``: skip a slide whose archive exists and
    opens sound (metadata, manifest and source size agree) and continue an interrupted one."""

    options: IngestOptions
    resume: bool = False

    def __call__(self, task: Task) -> SlideResult:
        return _guarded(self._run, task)

    def _run(self, task: Task, start: float) -> SlideResult:
        from wsistore.archive.partial import nothing_to_resume
        from wsistore.archive.reader import Archive
        from wsistore.archive.writer import INGEST_OUTPUT, ingest

        bytes_in = Path(task.source).stat().st_size
        out = Path(task.output)
        if self.resume and out.exists() and not self.options.overwrite:
            source = Archive.open(out).metadata.source
            if source.bytes != bytes_in:
                raise InputError(f"{out} archives a different file ({source.bytes} bytes, not {bytes_in})")
            return _row(task, start, bytes_in, size_of(out), SKIPPED)
        resume = self.resume and not nothing_to_resume(out, INGEST_OUTPUT, self.options.overwrite)
        ingest(task.source, out, replace(self.options, resume=resume, progress=False))
        return _row(task, start, bytes_in, size_of(out))


@dataclass(frozen=True)
class VerifyJob:
    """Verify one archive (every shard and chunk against its manifest)."""

    workers: int | None = None

    def __call__(self, task: Task) -> SlideResult:
        return _guarded(self._run, task)

    def _run(self, task: Task, start: float) -> SlideResult:
        from wsistore.archive.reader import Archive
        from wsistore.archive.verify import verify

        report = verify(task.source, workers=self.workers, progress=False)
        bytes_out = size_of(task.source)
        bytes_in = Archive.open(task.source, check=False).metadata.source.bytes
        row = _row(task, start, bytes_in, bytes_out)
        if report.ok:
            return row
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        return replace(row, status=FAILED, error=report.problems[0] + more)


@dataclass(frozen=True)
class RestoreJob:
    """Restore one archive with ``options``; ``resume``: skip an output that exists (outputs
    land complete) and continue an interrupted one."""

    options: RestoreOptions
    resume: bool = False

    def __call__(self, task: Task) -> SlideResult:
        return _guarded(self._run, task)

    def _run(self, task: Task, start: float) -> SlideResult:
        from wsistore.archive.partial import nothing_to_resume
        from wsistore.restoration.pipeline import RESTORE_OUTPUT, restore

        bytes_in = size_of(task.source)
        out = Path(task.output)
        if self.resume and out.exists() and not self.options.overwrite:
            return _row(task, start, bytes_in, size_of(out), SKIPPED)
        resume = self.resume and not nothing_to_resume(out, RESTORE_OUTPUT, self.options.overwrite)
        restore(task.source, out, replace(self.options, resume=resume, progress=False))
        return _row(task, start, bytes_in, size_of(out))


@dataclass(frozen=True)
class BenchJob:
    """The storage-vs-quality report of one input, in its own folder."""

    options: BenchOptions

    def __call__(self, task: Task) -> SlideResult:
        return _guarded(self._run, task)

    def _run(self, task: Task, start: float) -> SlideResult:
        from wsistore.reports.run import DEFAULT_SETTING, run_bench

        options = replace(self.options, inputs=[Path(task.source)], out=Path(task.output), progress=False)
        records = run_bench(options)["records"]
        source = next(r["bytes"] for r in records if r["family"] == "source")
        archived = next(r["bytes"] for r in records if r["family"] == "archive" and r["setting"] == DEFAULT_SETTING)
        return _row(task, start, source, archived)


Job = Callable[[Task], SlideResult]


# -- the summary --------------------------------------------------------------------------
def is_summary(path: Path) -> bool:
    """Whether ``path`` is a batch summary (CSV with :data:`COLUMNS` as its header, or a JSON
    list of such rows): what ``--summary`` may replace."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return False
    if path.suffix.lower() == ".csv":
        return text.splitlines()[:1] == [",".join(COLUMNS)]
    try:
        rows = json.loads(text)
    except ValueError:
        return False
    return isinstance(rows, list) and all(isinstance(r, dict) and tuple(r) == COLUMNS for r in rows)


#: What ``--summary`` writes, and so all it replaces.
SUMMARY_OUTPUT = OutputKind("batch", "a wsistore batch summary", is_summary)


class Summary:
    """The batch's rows in ``path`` (``.csv`` or ``.json``), written again after every row."""

    def __init__(self, path: Path, inputs: Sequence[str] = ()) -> None:
        if path.suffix.lower() not in (".csv", ".json"):
            raise InputError(f"the summary must be a .csv or .json file, got {path}")
        if not path.parent.is_dir():
            raise InputError(f"cannot write the summary {path}: directory {path.parent} does not exist")
        check_not_input(path, inputs, "summary")
        if occupied(path):
            check_replaceable(path, SUMMARY_OUTPUT, option="--summary")
        self.path = path
        self.rows: list[SlideResult] = []
        self._write()

    def add(self, row: SlideResult) -> None:
        """Append ``row`` and rewrite the file (atomically: a kill leaves the previous version)."""
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8", newline="") as f:
            if self.path.suffix.lower() == ".json":
                json.dump([asdict(r) for r in self.rows], f, indent=2)
            else:
                writer = csv.DictWriter(f, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(asdict(r) for r in self.rows)
        os.replace(tmp, self.path)


# -- running ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterOptions:
    """Where a batch runs: this process (neither set), a running scheduler at ``scheduler``,
    or a ``distributed.LocalCluster`` of ``local_workers`` processes (one thread each) on
    127.0.0.1."""

    scheduler: str | None = None
    local_workers: int | None = None

    def __post_init__(self) -> None:
        if self.scheduler and self.local_workers:
            raise InputError("--scheduler and --cluster exclude each other")
        if self.local_workers is not None and self.local_workers < 1:
            raise InputError(f"a local cluster needs at least 1 worker, got {self.local_workers}")

    @property
    def distributed(self) -> bool:
        return bool(self.scheduler or self.local_workers)


def parse_cluster(text: str) -> int:
    """The worker count of ``local:N``."""
    kind, _, n = text.partition(":")
    if kind != "local" or not n.isdigit() or int(n) < 1:
        raise InputError(f"--cluster must be local:N with N workers, got {text!r}")
    return int(n)


@contextmanager
def connect(cluster: ClusterOptions) -> Iterator[Client | None]:
    """A client of the cluster ``cluster`` names (None: run in this process); a local
    cluster is started here and stopped on exit."""
    if not cluster.distributed:
        yield None
        return
    from distributed import Client, LocalCluster

    if cluster.scheduler:
        try:
            client = Client(cluster.scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the scheduler at {cluster.scheduler}: {first_line(exc)}") from None
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=cluster.local_workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as local,
        Client(local) as client,
    ):
        yield client


def task_resources(client: Client, device: str) -> dict[str, float] | None:
    """``{"GPU": 1}`` for a restore on ``device`` when it runs on the cluster's GPUs: a
    ``cuda`` device, or ``auto`` on a cluster whose workers offer the GPU resource; None for
    the CPU. A ``cuda`` restore on a cluster without GPU workers is refused."""
    offered = any(GPU_RESOURCE in w.get("resources", {}) for w in client.scheduler_info()["workers"].values())
    if device.startswith("cuda"):
        if not offered:
            raise InputError(
                f"device {device} on a cluster needs workers with the {GPU_RESOURCE} resource "
                "(dask-cuda's LocalCUDACluster(resources={'GPU': 1}), or dask worker --resources GPU=1)"
            )
        return {GPU_RESOURCE: 1}
    return {GPU_RESOURCE: 1} if device == "auto" and offered else None


def run_batch(
    tasks: Sequence[Task],
    job: Job,
    client: Client | None = None,
    summary: Path | None = None,
    resources: dict[str, float] | None = None,
    on_result: Callable[[SlideResult], None] | None = None,
    progress: bool = True,
    desc: str = "batch",
) -> list[SlideResult]:
    """Run ``job`` on every task, in this process or (``client``) one cluster task each, and
    return the rows in the order of ``tasks``; ``summary`` gets each row as it finishes."""
    sheet = Summary(summary, [t.source for t in tasks]) if summary else None
    rows: dict[int, SlideResult] = {}
    with Progress(len(tasks), desc, "slide", progress) as bar:

        def finished(index: int, row: SlideResult) -> None:
            rows[index] = row
            if sheet:
                sheet.add(row)
            bar.update()
            bar.note(Path(row.slide).name)
            if on_result:
                on_result(row)

        if client is None:
            for index, task in enumerate(tasks):
                finished(index, job(task))
        else:
            _run_on(client, tasks, job, resources, finished)
    return [rows[i] for i in range(len(tasks))]


def _run_on(
    client: Client,
    tasks: Sequence[Task],
    job: Job,
    resources: dict[str, float] | None,
    finished: Callable[[int, SlideResult], None],
) -> None:
    from distributed import as_completed

    futures = {
        client.submit(job, task, key=f"wsistore-{i}-{Path(task.source).stem}", pure=False, resources=resources): i
        for i, task in enumerate(tasks)
    }
    try:
        for future in as_completed(futures):
            index = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # the task's workers kept dying (KilledWorker), or it could not run
                task = tasks[index]
                row = SlideResult(task.source, task.output, FAILED, f"{type(exc).__name__}: {first_line(exc)}")
            finished(index, row)
    finally:
        client.cancel(list(futures))


def counts(rows: Sequence[SlideResult]) -> dict[str, int]:
    """How many rows have each status."""
    return {status: sum(r.status == status for r in rows) for status in (OK, SKIPPED, FAILED)}
