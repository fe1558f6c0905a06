"""The ``transferkit`` command line. User mistakes print one clear line and exit 2."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path

from .errors import (
    JobsFailed,
    TransferkitError,
    TransferkitWarning,
    WorkerDied,
    check,
    check_seed_range,
    interrupts_ignored,
    quiet,
    warn,
)


def _print_json(obj) -> None:
    """``obj`` on stdout as ``--format json`` writes it (as the run's JSON files are: NaN as null)."""
    from .io import json_text
    print(json_text(obj), end="")


def _domains(args) -> None:
    from .data import list_domains, list_shifts
    if args.format == "json":
        _print_json({"domains": list_domains(), "shifts": list_shifts()})
        return
    print(f"{'domain':<12} {'images':>7} {'classes':>7} {'channels':>8} {'size':>5}  description")
    for d in list_domains():
        plugin = f" (registered by {d['registered_in']})" if d["registered_in"] else ""
        print(f"{d['name']:<12} {d['size'] or '?':>7} {len(d['classes']):>7} {d['channels']:>8} "
              f"{d['image_size']:>5}  {d['description']}{plugin}")
    print("\nshifts (append to any domain, e.g. mnist+blur, mnist+rotation+noise):")
    for s in list_shifts():
        print(f"  {s['name']:<14} {s['description']}")
    print("\nuser data: folder:PATH (one subfolder per class), npz:PATH (arrays x, y); unlabelled images: "
          "`unlabeled: folder:PATH` (images at any depth) or `unlabeled: npz:PATH` (x only) in a config")


def _show(args) -> None:
    import torch
    check_seed_range(args.seed, "--seed")

    from .data import has_colour_shift, load_domain
    from .plots import check_png, sample_grid
    check_png(args.out, "sample grid")  # before the domain is read (a digits build can take a minute)
    channels = args.channels or (3 if has_colour_shift(args.domain) else None)  # as `run` loads it (channels: auto)
    drawn = _drawn_of_folder(args, channels)
    domain, labels = drawn or (load_domain(args.domain, seed=args.seed, size=args.size, channels=channels), None)
    labels = domain.labels if labels is None else labels  # of every image, drawn or not
    counts = torch.bincount(labels, minlength=domain.num_classes).tolist()
    path = sample_grid(domain, args.out, per_class=args.per_class, seed=args.seed,
                       title=f"{domain.name}  ({len(labels)} images, {domain.num_classes} classes)")
    shown = ", ".join(f"{c} {n}" for c, n in zip(domain.class_names[:20], counts))
    more = f", ... ({domain.num_classes - 20} more)" if domain.num_classes > 20 else ""
    print(f"{domain.name}: {len(labels)} images, {domain.num_classes} class{'es' if domain.num_classes != 1 else ''} "
          f"({shown}{more}) -> {path}")
    if domain.num_classes == 1:
        base = args.domain.split("+")[0]
        hint = (f" (is {base} one level above the class folders, as a zip extracted into a folder of its own?)"
                if base.startswith("folder:") else
                " (its labels 'y' hold one class id, or its 'class_names' one name)" if base.startswith("npz:")
                else "")
        print(f"  one class: a run needs two or more{hint}")


def _drawn_of_folder(args, channels):
    """``(the images show draws, the labels of every image)`` of a plain ``folder:PATH`` (no
    shift, no @grouped, no sub-folders of class folders): only the files drawn are decoded, so a
    folder of 30,000 files is not read for a grid of 80. None for any other domain."""
    import torch

    from .data import check_spec
    from .domain import Domain
    from .grouped import parse_grouped
    from .splits import _per_class
    from .userdata import (
        NARROW_FILES,
        _check_size_channels,
        _class_files,
        _folder,
        _read_images,
        _warn_if_dark,
        folder_keys,
    )

    base, shifts, _ = check_spec(args.domain)
    if not base.startswith("folder:") or shifts or parse_grouped(args.domain) or args.per_class < 1:
        return None
    _check_size_channels(args.size, channels)
    root = _folder(base[len("folder:"):])
    classes, files = _class_files(root)
    if any(group is not None for _, _, group in files):  # the grid keeps a group's frames together: read them all
        return None
    labels = torch.tensor([label for _, label, _ in files])
    keys = folder_keys(root, files)  # as load_domain keys the files
    listed = Domain(args.domain, torch.zeros(1, 1, 1, 1).expand(len(files), -1, -1, -1), labels, classes, keys=keys)
    drawn = torch.nonzero(_per_class(listed, min(args.per_class, int(listed.class_counts().max())),
                                     args.seed)).flatten()  # as sample_grid draws them from the whole folder
    read = _read_images([files[i][0] for i in drawn], args.size, channels, f"in {str(root)!r}")
    _warn_if_dark(read, f"image folder {str(root)!r} (the {len(drawn)} images drawn)", NARROW_FILES)
    return Domain(args.domain, read, labels[drawn], classes, provenance={"origin": base, "files": len(files)}), labels


def _methods(args) -> None:
    import json
    import textwrap

    from .methods import METHODS, get_method
    from .methods.base import load_outside_families, method_doc
    load_outside_families()
    if args.format == "json":
        _print_json([{"name": name, "description": cls.description, "streams": list(cls.streams),
                      **({"options": _option_entries(name, cls), "doc": method_doc(cls)} if args.names else {})}
                     for name, cls in ([(n, get_method(n)) for n in args.names] or sorted(METHODS.items()))])
        return
    if not args.names:
        for name, cls in sorted(METHODS.items()):
            print(f"{name:<16} streams={','.join(cls.streams):<24} {cls.description or '(no description)'}")
        print("\n`transferkit methods NAME...` shows the options of the named methods, with their defaults")
        return
    for name in args.names:
        cls = get_method(name)
        print(f"{name}: {cls.description or '(no description)'}\n  streams: {', '.join(cls.streams)}")
        options = _option_entries(name, cls)
        print(f"  options (a config's `options: {{{name}: {{...}}}}`, or keyword arguments):" if options
              else "  options: none")
        for option, e in options.items():
            if e.get("required"):
                print(f"    {option} (required)")
                continue
            choices = f"  (fixed by the name {name})" if e.get("fixed") else \
                f"  (one of {', '.join(json.dumps(c) for c in e['choices'])})" if e.get("choices") else ""
            print(f"    {option}: {e['repr'] if 'repr' in e else json.dumps(e['default'])}{choices}")
        print(textwrap.indent(method_doc(cls) or "no description", "  ") + "\n")


def _option_entries(name: str, cls) -> dict[str, dict]:
    """Each option of method ``cls`` (named ``name``) as ``methods`` shows it: ``required``, or its
    ``default`` (a JSON value; ``null`` with its Python ``repr`` where it is none) with its ``choices``,
    or ``fixed`` by the name."""
    import inspect
    import json

    from .methods.base import method_options, option_choices
    entries = {}
    for option, default in method_options(cls).items():
        if default is inspect.Parameter.empty:
            entries[option] = {"required": True}
            continue
        if option in cls.fixed_options:
            entry = {"default": cls.fixed_options[option][0], "fixed": True}
        else:
            entry = {"default": list(default) if isinstance(default, tuple) else default}
            if option_choices(option):
                entry["choices"] = list(option_choices(option))
        try:
            json.dumps(entry["default"])
        except TypeError:
            entry.update(default=None, repr=repr(default))
        entries[option] = entry
    return entries


def _runtime(args, device: str | None = None) -> None:
    """Apply --workers / --device (as environment defaults every config and worker sees) and
    join the process group when started by torchrun (--nproc), with the backend of ``device``
    (a run's config; by default --device or ``$TRANSFERKIT_DEVICE``)."""
    _apply_runtime_flags(args)
    from .distributed import init_distributed
    from .runtime import default_device
    init_distributed(device or default_device())


#: Where --workers / --device put their values for the command (its configs and worker processes);
#: :func:`main` gives them back their earlier values when the command ends.
RUNTIME_FLAG_ENVIRONMENT = ("TRANSFERKIT_WORKERS", "TRANSFERKIT_DEVICE")


def _apply_runtime_flags(args) -> None:
    """--workers / --device as the environment defaults every config and worker of this command sees."""
    from .frozen import limit_from_env
    _runtime_flag_checks(args)  # a clear error now rather than inside a worker
    limit_from_env()  # $TRANSFERKIT_FROZEN_MEMO_MB, read by the first job that memoises: named before any work
    if getattr(args, "workers", None):
        os.environ["TRANSFERKIT_WORKERS"] = str(args.workers)
    if getattr(args, "device", None):
        os.environ["TRANSFERKIT_DEVICE"] = args.device


def _names_option(name: str, option: str) -> bool:
    """``name`` (a word's text before any ``=``) is ``option`` as argparse takes it: whole or a prefix."""
    return len(name) >= 3 and option.startswith(name)


def _argv_without(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option`` and its value, however argparse took it: ``--opt V``,
    ``--opt=V`` or a prefix of the option's name (``--res`` for ``--resume``)."""
    rest, skip = [], False
    for a in argv:
        name = a.split("=", 1)[0]
        if skip:
            skip = False
        elif _names_option(name, option):
            skip = "=" not in a
        else:
            rest.append(a)
    return rest


def _relaunch_with_torchrun(nproc: int, argv: list[str]) -> int:
    """``--nproc N``: start N processes with torchrun (torch.distributed.run), gloo on CPU. An
    error of a rank is printed here once, after torchrun ends, and is the exit status (2 for a
    user's error, as without ``--nproc``), not one copy per rank and torchrun's traceback."""
    import subprocess
    import tempfile

    from .distributed import EXIT_DIR_ENV, LAUNCHER_ENV, rank_errors
    _remove_folders_of_killed_launchers()
    with tempfile.TemporaryDirectory(prefix=f"{_NPROC_FOLDER}{os.getpid()}-") as folder:  # torchrun's log folder too
        cmd = [*_python_c(_TORCHRUN), "--standalone", f"--nproc_per_node={nproc}",
               f"--log-dir={Path(folder) / 'torchrun'}", "--no-python", *_python_c(_RANK, "-u"),
               *_argv_without(argv, "--nproc")]
        child = subprocess.Popen(cmd, env={**os.environ, LAUNCHER_ENV: str(os.getpid()),  # ranks end with this
                                           EXIT_DIR_ENV: folder})
        code = _wait_for_torchrun(child)
        errors = rank_errors(folder)
        killed = [e for e in errors if "was killed by" in e[2] and e[1] == 1]  # _record_killed_ranks': the cause
        errors = killed + [e for e in errors if e not in killed]
    for text in dict.fromkeys(text for _, _, text in errors if text):  # each error once (every rank may meet it)
        print(f"transferkit: error: {text}", file=sys.stderr)
    return errors[0][1] if errors else code


#: the name of a ``--nproc`` launcher's temporary folder, before its process id
_NPROC_FOLDER = "transferkit-nproc-"


def _remove_folders_of_killed_launchers() -> None:
    """Remove the temporary folders that ``--nproc`` launchers killed with SIGKILL left (a
    launcher removes its own when it ends): those whose process id is no longer running."""
    import shutil
    import tempfile

    from .io import process_running
    for folder in Path(tempfile.gettempdir()).glob(f"{_NPROC_FOLDER}*-*"):
        pid = folder.name[len(_NPROC_FOLDER):].split("-", 1)[0]
        if pid.isdigit() and folder.is_dir() and not process_running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


#: what the process that ``--nproc`` starts runs: torchrun, whose report of a failed rank is left out when
#: the rank left its error for the launcher to print
_TORCHRUN = "import sys; from transferkit.cli import _torchrun; sys.exit(_torchrun(sys.argv[1:]))"

#: what each rank of ``--nproc`` runs: this command, without its ``--nproc``
_RANK = "from transferkit.cli import entry; entry()"


def _python_c(code: str, *flags: str) -> list[str]:
    """``python -c code`` importing what this process imports: ``-c`` puts the working directory first
    on ``sys.path``, where the ``transferkit`` command has its own folder (a ``yaml.py`` in the working
    directory broke every rank of ``--nproc``, not one process), so it is taken out again unless this
    process has it too (``python -m transferkit.cli``); with ``PYTHONSAFEPATH`` set, it is not there."""
    here = os.getcwd() in {os.path.abspath(p) for p in sys.path}
    off = "import sys\nif sys.path[:1] == ['']:\n    del sys.path[0]\n"
    return [sys.executable, *flags, "-c", code if here else off + code]


def _torchrun(argv: list[str]) -> int:
    """torchrun's ``run`` on ``argv``: 0, or 1 when a rank failed; a rank that failed without leaving
    its error (a crash) gets torchrun's report of it, ranks that ended with a killed launcher one line."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from .distributed import EXIT_DIR_ENV, LAUNCHER_ENV, rank_errors
    for name in list(logging.root.manager.loggerDict):  # "Sending process closing signal": the report says it
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parse_args(argv))
    except ChildFailedError as e:
        folder, launcher = os.environ.get(EXIT_DIR_ENV), os.environ.get(LAUNCHER_ENV, "")
        if folder:  # a rank killed by a signal leaves no error: the others' (a lost connection) would be the cause
            _record_killed_ranks(folder, e.failures, {r for r, _, _ in rank_errors(folder)})
        if launcher.isdigit() and os.getppid() != int(launcher):  # killed (SIGKILL): its ranks ended with it
            print(f"transferkit: error: the transferkit --nproc process (pid {launcher}) was killed, and its "
                  f"processes stopped with it; the run directory keeps the finished jobs (`--resume RUN_DIR` "
                  f"goes on)", file=sys.stderr)
        elif not (folder and rank_errors(folder)):
            print(f"transferkit: error: a process of --nproc failed:\n{e}", file=sys.stderr)
        return 1
    except SignalException as e:  # SIGTERM or Ctrl-C: the ranks, stopped, say what was kept
        return 128 + int(e.sigval)
    return 0


def _record_killed_ranks(folder: str, failures: dict, reported: set) -> None:
    """Leave, for the launcher to print first, the error of each rank that a SIGKILL ended before
    it could leave its own (e.g. the out-of-memory killer's; torchrun stops the others of a failed
    rank with SIGTERM, which is not one)."""
    from .io import write_json
    for rank, failure in sorted(failures.items()):
        if failure.exitcode == -getattr(signal, "SIGKILL", 9) and rank not in reported:  # Windows has no SIGKILL
            write_json(Path(folder) / f"rank-{rank}.json", {
                "code": 1,
                "error": f"the process of rank {rank} of --nproc was killed by {failure.signal_name()} (out of memory? "
                         f"the system log says), without an error of its own; the other processes' errors follow from "
                         f"losing it. The run directory keeps the finished jobs (`--resume RUN_DIR` goes on)"})


def _wait_for_torchrun(child) -> int:
    """``child``'s (torchrun's) exit status; a SIGTERM or Ctrl-C here stops it and its ranks first."""
    import subprocess
    try:
        return child.wait()
    except KeyboardInterrupt as e:  # SIGTERM (or Ctrl-C) here: torchrun passes a SIGTERM on to its ranks, so
        if isinstance(e, Terminated):  # they stop as a single process does; a killed torchrun would orphan them
            child.terminate()
        else:  # a Ctrl-C reaches torchrun too (one process group); a SIGINT sent to this process alone does not
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def _checked_for_torchrun(args) -> bool:
    """Before ``--nproc`` starts processes: check what they would run (a bad config, plan or
    name is one error line here, not one per rank and a torchrun traceback); ``False`` when
    the command needs no processes (``bench list``, ``--print-plan``)."""
    from .runtime import check_processes_have_gpus, default_device
    if args.command == "run":
        if args.print_config:
            return False
        from .preflight import check_names
        _runtime_flag_checks(args)
        cfg = _run_config(args)
        check_names(cfg, args.resume)
        check(cfg.workers == 1, f"workers {cfg.workers} (the config's workers: key, --set workers= or "
                                f"TRANSFERKIT_WORKERS) and --nproc {args.nproc} do not combine: under --nproc every "
                                f"process runs each job data-parallel, one job after another; set workers: 1 (--set "
                                f"workers=1) or leave out --nproc")
        check_processes_have_gpus(cfg.device, args.nproc)  # CUDA that is not there: one line, not one per rank
    elif args.command in ("bench", "demo"):
        name = "demo" if args.command == "demo" else args.name
        if name == "list" or args.print_plan:
            return False
        from .bench import resumed_plan
        _check_list_format(args)
        _apply_runtime_flags(args)  # the plan's stage devices are --device's, as each process builds them
        _check_bench_resume(args)
        _resume_bench_device(getattr(args, "resume", None))
        resumed_plan(name, args.quick, args.set, getattr(args, "resume", None))  # --set against a resumed plan
        check_processes_have_gpus(args.device or default_device(), args.nproc)
    return True


def _runtime_flag_checks(args) -> None:
    """--workers / --nproc / --device, those of them the command has (``episodes``: --device alone)."""
    workers = getattr(args, "workers", None)
    check(workers is None or workers >= 1, f"--workers must be >= 1, got {workers}")
    check(not ((workers or 1) > 1 and getattr(args, "nproc", 1) > 1),
          f"--workers {workers} and --nproc {getattr(args, 'nproc', 1)} do not combine: under --nproc every "
          f"process runs each job data-parallel, one job after another; give one of them")
    check(getattr(args, "device", None) is None or args.device.strip() != "",
          f"--device {getattr(args, 'device', None)!r} names no device (an unset shell variable?): give one, "
          f"e.g. --device cpu, or leave --device out")
    if getattr(args, "device", None):
        from .runtime import check_device_name
        check_device_name(args.device)


def _report(args) -> None:
    from .report import write_report
    from .results import failed_line, read_results, unfinished_run
    args.run_dirs = [str(Path(d).parent) if Path(d).name == "results.json" and Path(d).is_file() else d
                     for d in args.run_dirs]  # a results.json stands for its run directory
    names = [Path(d).resolve().name for d in args.run_dirs]
    several = args.out is not None and len(args.run_dirs) > 1
    check(not several or len(set(names)) == len(names),
          f"--out with several run directories writes one sub-folder per directory name; these repeat: {names}")
    _check_report_out(args.out)
    skipped, stopped = [], []
    for run_dir, name in zip(args.run_dirs, names):  # several: the finished ones are written, the others named
        try:  # write_report refuses what check_run_dir does
            html, md = write_report(run_dir, out=Path(args.out) / name if several else args.out)
        except TransferkitError as e:
            if len(args.run_dirs) == 1:
                raise
            skipped.append(str(e))
            print(f"transferkit: skipped {run_dir}: {e}", file=sys.stderr)
            continue
        print(f"report: {html}\nmarkdown: {md}")
        partial = unfinished_run(Path(run_dir))
        if partial is not None:  # exit 2, as `summary` of a stopped run
            stopped.append(f"the report shows the finished jobs only{partial['unfinished']}")
            continue
        data = read_results(Path(run_dir) / "results.json")  # exit 2 as `summary` for failed jobs or no rows
        failed = data.get("failed") if isinstance(data.get("failed"), list) else []
        if not data["rows"] or failed:
            why = "no job finished: the report has no table" if not data["rows"] else \
                "the report shows the finished rows only"
            listed = f"; {len(failed)} job(s) failed: {'; '.join(map(failed_line, failed))}" if failed else ""
            stopped.append(f"{run_dir}: {why}{listed}")
    check(not skipped, f"{len(skipped)} of {len(args.run_dirs)} directories have no report (named above): "
                       f"{'; '.join(skipped)}" + "".join(f". {line}" for line in stopped))
    check(not stopped, "; ".join(stopped))


def _check_report_out(out: str | None) -> None:
    """``report --out`` is a directory: an existing file, or a name like ``paper.html``, is refused."""
    if out is None:
        return
    path = Path(out)
    check(not path.exists() or path.is_dir(), f"--out {out} is a file; --out is the directory the report goes to "
                                              f"(report.html, report.md and report_files/ are written in it)")
    check(path.suffix.lower() not in (".html", ".htm", ".md"),
          f"--out {out} looks like a file name; --out is the directory the report goes to (it writes report.html "
          f"and report.md in it): give e.g. --out {path.with_suffix('')}")


def _damaged_config(path: Path) -> str | None:
    """What is wrong with a run's ``config.yaml`` that is not a mapping of keys (emptied or cut
    by a full disk or an editor), or None."""
    import yaml
    try:
        stored = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        return f"is not valid YAML ({' '.join(str(e).split())})"
    except OSError as e:
        return f"is unreadable ({e})"
    return None if isinstance(stored, dict) else "is empty" if stored is None else "is not a mapping of keys"


def _resumed_device(device: str, stored: Path) -> str:
    """``--device`` for a resume of the run whose config is ``stored``: its own device when
    ``auto`` picks that one on this machine (or the run's ``auto`` picks ``device``), so that
    ``--device auto`` resumes a cpu run on a machine without a GPU."""
    import yaml

    from .runtime import resolve_device
    with contextlib.suppress(yaml.YAMLError, UnicodeDecodeError, OSError, AttributeError, TransferkitError):
        then = yaml.safe_load(stored.read_text(encoding="utf-8")).get("device")
        if "auto" in (device, then) and isinstance(then, str) and resolve_device(then) == resolve_device(device):
            return then
    return device


def _resume_bench_device(resume: str | None) -> None:
    """``--device auto`` (or ``$TRANSFERKIT_DEVICE``) resumes a benchmark whose runs ran on the
    device it picks here: the runs' own spelling of it is taken (:func:`_resumed_device`)."""
    device = os.environ.get("TRANSFERKIT_DEVICE")
    run = next(Path(resume).glob("**/config.yaml"), None) if resume and device else None
    if run is not None:
        os.environ["TRANSFERKIT_DEVICE"] = _resumed_device(device, run)


def _flag_sets(flag: str, value, keys: set[str], overrides: list[str], sections=()) -> list[str]:
    """The entries of ``overrides`` (``--set KEY=VALUE``) that set what ``--flag value`` sets: of ``keys``, and
    of ``sections`` a whole section naming the flag's key (``'train={device: cpu}'``). The flag wins over each,
    wherever each was written; one warning names those of another value."""
    import yaml

    unset = object()

    def set_value(entry: str):  # what the entry sets the flag's key to (unset: nothing)
        key, _, text = (part.strip() for part in entry.partition("="))
        if key in keys:
            return text
        with contextlib.suppress(yaml.YAMLError, ValueError):
            section = yaml.safe_load(text) if key in sections else None
            if isinstance(section, dict) and flag in section:
                return section[flag]
        return unset
    values = {a: set_value(a) for a in overrides}
    given = [a for a in overrides if values[a] is not unset]
    beaten = [a for a in given if str(values[a]) != str(value)]
    if beaten:
        warn(f"--{flag} {value} wins over --set {', --set '.join(beaten)}")
    return given


def _stage_devices(overrides: list[str], device: str | None, cls, config: Path | None = None) -> list[str]:
    """``overrides`` with each stage device of ``cls`` (a section with a ``device``: ``train``, ``pretrain``)
    set to ``--device`` where it is given: in ``--set STAGE.device=...``, in ``--set 'STAGE={device: ...}'``
    and in the config file ``config`` (where it is not a copy of the file's own ``device``, which the flag
    follows, nor the default one, which follows ``device`` anyway: :func:`~transferkit.config.unset_stage_device`).
    The flag wins over a stage's key, with a warning where they differ."""
    from .config import config_data, stage_sections, unset_stage_device
    stages = stage_sections(cls)
    if not device or not stages:
        return list(overrides)
    out = []
    if config is not None:
        with contextlib.suppress(TransferkitError):  # load_config refuses a file it cannot read, in its turn
            data = config_data(config)
            for stage in sorted(stages):
                given = data.get(stage).get("device") if isinstance(data.get(stage), dict) else None
                followed = (device, data.get("device"))  # the flag's, or the file's that the flag replaces
                if isinstance(given, str) and given not in followed and not unset_stage_device(given):
                    warn(f"--device {device} wins over {stage}.device={given} of config file {config}")
                    out.append(f"{stage}.device={device}")
    replaced = _flag_sets("device", device, {f"{stage}.device" for stage in stages}, overrides, stages)
    for a in overrides:
        key = a.partition("=")[0].strip()
        if a not in replaced:
            out.append(a)
        elif "." in key:
            out.append(f"{key}={device}")
        else:  # a whole section: as written, its device following the flag
            out += [a, f"{key}.device={device}"]
    return out


def _run_config(args):
    """The config ``transferkit run`` runs (checked), from the file, ``--set``, ``--workers``
    / ``--device`` / ``--out`` and, with ``--resume``, the run's own ``config.yaml``."""
    import json

    from .config import ExperimentConfig, config_file, load_config
    from .results import unfinished_hint
    config, overrides = None if args.config is None else config_file(args.config), list(args.set)
    # --workers / --device win over the config file's keys (a run's config.yaml names both)
    resume = Path(args.resume) if args.resume else None
    stored = resume is not None and (resume / "config.yaml").is_file()
    device = getattr(args, "device", None)
    device = _resumed_device(device, resume / "config.yaml") if stored and device else device
    flags = {k: v for k, v in (("workers", getattr(args, "workers", None)), ("device", device),
                               ("out_dir", getattr(args, "out", None))) if v}
    for key, value in flags.items():  # the flag wins over a --set of its key, wherever each was written
        given = _flag_sets("out" if key == "out_dir" else key, value, {key}, overrides)
        overrides = [a for a in overrides if a not in given]
    flags = {k: json.dumps(v) if k == "out_dir" else v for k, v in flags.items()}  # a path as a string, never
    # YAML's reading of it (2026 a number, a ': ' a mapping)
    overrides = _stage_devices(overrides, device, ExperimentConfig, config) + [f"{k}={v}" for k, v in flags.items()]
    damage = _damaged_config(resume / "config.yaml") if stored else None
    check(not damage, f"--resume {resume}: its config.yaml {damage}; if it was damaged, move it away and give the "
                      f"config the run ran with: transferkit run CONFIG --resume {resume} (each finished job is "
                      f"checked against it)")
    if config is None and stored:  # resume with the run's own config
        config = resume / "config.yaml"
    folder = resume is not None and resume.is_dir()
    bench = _benchmark_of(resume) if folder and not stored else None
    check(bench is None, f"--resume {resume}: it is a directory of benchmark {bench!r}, which `transferkit bench "
                         f"{bench} --resume {resume}` continues; a run needs a directory of its own (leave out "
                         f"--resume, or give a new or empty one)")
    # a run that has written no file yet (killed while reading its data) leaves only its lock
    empty = folder and not any(p.name != ".lock" for p in resume.iterdir())
    lost = folder and ((resume / "jobs").is_dir() or (resume / "data.json").is_file())
    if not (resume is None or stored or config is not None):  # its hints read the folder's files: only now
        raise TransferkitError(f"--resume {resume}: {_not_a_run(resume, folder and not (empty or lost))}")
    cfg = load_config(config, overrides)
    if stored and not device:  # the run's own device: one this machine lacks gets advice for the run
        from .runtime import resolve_device
        try:
            resolve_device(cfg.device)
        except TransferkitError:
            raise TransferkitError(f"--resume {resume}: the run began on {cfg.device} (its config.yaml), which this "
                                   f"machine does not have: resume it on a machine that has it; here, start a new "
                                   f"run (--device cpu), whose rows differ from its") from None
    if resume is not None and not (not resume.exists() or stored or empty or lost):  # a new directory starts a
        raise TransferkitError(  # run there; an existing one must be a run directory (its hints read its files)
            f"--resume {resume}: {_no_config(resume)}{'' if resume.is_file() else unfinished_hint(resume)}")
    return cfg


def _not_a_run(resume: Path, other_folder: bool) -> str:
    """Why ``--resume`` of ``resume`` (a file, a folder of other files when ``other_folder``, or
    a missing or run-less folder) has no run to continue without a config."""
    from .io import directory_holder
    from .results import only_its_lock, unfinished_hint
    if resume.is_file():
        return "a file, not a run directory"
    if only_its_lock(resume):  # or one working there now, which the hint names
        hint = unfinished_hint(resume)[2:]
        return hint if directory_holder(resume) else (f"{hint} (or give its config: transferkit run CONFIG --resume "
                                                      f"{resume} starts it in this directory)")
    if other_folder:  # giving a config would be refused below: say what the folder is
        return f"{_no_config(resume)}{unfinished_hint(resume) or '; a new run needs a new or empty directory'}"
    return ((_no_config(resume) if resume.is_dir() else
             "no such run directory") + f" (to start a new run there, or to resume one whose config.yaml "
                                        f"was lost, give its config: transferkit run CONFIG --resume {resume}; "
                                        f"each finished job is checked against it)")


def _no_config(resume: Path) -> str:
    return f"not a run directory (no config.yaml{_config_copy_hint(resume)})"


def _benchmark_of(folder: Path) -> str | None:
    """The benchmark whose directory ``folder`` is (its ``plan.json``, or the ``benchmark`` of the
    config its ``results.json`` keeps), or None."""
    from .io import read_json
    from .results import bench_plan
    plan = bench_plan(folder)
    if plan is not None:
        return str(plan.get("benchmark") or "NAME")  # an unreadable plan is still a benchmark's
    try:
        stored = read_json(folder / "results.json")
    except TransferkitError:  # none, or unreadable
        return None
    config = stored.get("config") if isinstance(stored, dict) else None
    return str(config["benchmark"]) if isinstance(config, dict) and "benchmark" in config else None


def _config_copy_hint(run_dir: Path) -> str:
    """Where a lost config.yaml can be restored from: results.json keeps a copy (a benchmark
    directory, whose copy is its plan, is refused before: :func:`_benchmark_of`)."""
    from .io import read_json
    try:
        stored = read_json(run_dir / "results.json")
    except TransferkitError:  # none, or unreadable: no copy to offer
        return ""
    config = stored.get("config") if isinstance(stored, dict) else None
    if not isinstance(config, dict):
        return ""
    return ("; its results.json keeps a copy of the config under \"config\": write that back as config.yaml, "
            "e.g. python -c \"import json; from transferkit.config import ExperimentConfig, dump_config, from_dict; "
            "print(dump_config(from_dict(ExperimentConfig, json.load(open('results.json'))['config'])))\" "
            "> config.yaml, in that directory")


def _run(args) -> None:
    _apply_runtime_flags(args)  # before the config: its stages' devices default to --device
    from .distributed import init_distributed, is_main_process
    from .errors import progress
    from .experiment import run_experiment
    from .preflight import check_names
    from .results import summarize
    from .tables import markdown_table
    cfg = _run_config(args)
    check_names(cfg, args.resume)  # a misspelt method's error before the "reading ..." line, not after it
    if args.print_config:  # the config as it would run (file, --set, --workers / --device); no work, no directory
        from .config import dump_config
        print(dump_config(cfg), end="")
        return
    init_distributed(cfg.device)  # nccl for a config's (or resumed run's) cuda, not only --device's
    if is_main_process():  # decoding a large folder takes a while before the run's first line
        progress(f"reading {f'source {cfg.source}' if cfg.source is not None else 'the network ' + cfg.pretrained} "
                 f"and target {cfg.target}{f' and unlabeled {cfg.unlabeled}' if cfg.unlabeled is not None else ''} ...")
    if args.resume and not Path(args.resume).exists() and is_main_process():
        print(f"transferkit: {args.resume} does not exist; starting a new run there", file=sys.stderr)
    try:
        run_dir, rows = run_experiment(cfg, run_dir=args.resume, log=progress)
    except JobsFailed as e:  # the finished rows' table, then the error that names the failed jobs (exit 2)
        if e.rows and is_main_process():
            print("\n" + markdown_table(summarize(e.rows), e.rows, cfg.to_dict()))
        raise
    if is_main_process():
        print("\n" + markdown_table(summarize(rows), rows, cfg.to_dict()))
        _results_line(Path(run_dir) / "results.json")


def _check_list_format(args) -> None:
    """``bench --format json`` is ``bench list``'s: a suite's run writes its rows in results.json."""
    form = getattr(args, "format", "text")  # a Namespace made by hand may have none
    check(form == "text",
          f"--format {form} is for `transferkit bench list`; a benchmark's rows are written as JSON in its "
          f"results.json (`transferkit summary DIR --format json` prints its table's)")


def _check_bench_resume(args) -> None:
    """``--resume`` continues a benchmark directory: a missing one (a typo) is refused, not
    started as a new, possibly hours-long, benchmark."""
    resume = args.resume
    check(resume is None or Path(resume).exists(),
          f"--resume {resume}: no such benchmark directory (--resume continues one); to start a new benchmark "
          f"leave out --resume (it goes to --out, default runs: OUT/bench-{getattr(args, 'name', 'demo')}"
          f"[-quick]/<time>), or "
          f"create the directory first (mkdir -p {resume}) to start one there")


def _bench(args) -> None:
    _runtime(args)
    from .bench import load_suites, plan_yaml, resumed_plan, run_benchmark
    from .errors import progress
    if args.name == "list":
        ignored = ((["--quick"] if args.quick else []) + ([f"--resume {args.resume}"] if args.resume else [])
                   + (["--print-plan"] if args.print_plan else []) + [f"--set {a}" for a in args.set])
        if ignored:
            warn(f"`bench list` only lists the suites: it ignores {', '.join(ignored)} (give a suite's name to run "
                 f"it with them)")
        if args.format == "json":
            _print_json([{"name": name, "description": description}
                         for name, (_, description, _) in sorted(load_suites().items())])
            return
        for name, (_, description, _) in sorted(load_suites().items()):
            print(f"{name:<12} {description}")
        return
    _check_list_format(args)
    _check_bench_resume(args)
    _resume_bench_device(args.resume)
    plan = load_suites().get(args.name)  # an unknown name is refused with the suites' names below
    args.set = _stage_devices(args.set, os.environ["TRANSFERKIT_DEVICE"] if args.device else None,
                              plan and type(plan[2](args.quick)))
    if args.print_plan:
        print(plan_yaml(resumed_plan(args.name, args.quick, args.set, args.resume)), end="")
        return
    bench_dir, rows = run_benchmark(args.name, quick=args.quick, out_dir=args.out, run_dir=args.resume,
                                    log=progress, overrides=args.set, log_table=False)
    from .distributed import is_main_process
    if is_main_process():
        from .results import summarize
        from .tables import markdown_table
        if rows:
            print("\n" + markdown_table(summarize(rows), rows))
        others = _other_outputs(bench_dir)
        if others:
            print(others)
        _results_line(bench_dir / "results.json")  # last: scripts read the path from it


def _results_line(path: Path, label: str = "results", more: str = "") -> None:
    """Print ``label: PATH`` (and ``more``) on stdout, the last line of a long command, and keep the
    path for the line that says where the results are if stdout was closed (:class:`_StdoutKept`)."""
    print(f"{label}: {path}{more}")
    if isinstance(sys.stdout, _StdoutKept):
        sys.stdout.results = path


def _other_outputs(bench_dir: Path) -> str:
    """The suite's own tables and figures beside results.json / .md, in words (or "")."""
    tables = sorted(p.name for p in bench_dir.glob("*.md") if p.name != "results.md")
    figures = sorted(p.relative_to(bench_dir).as_posix() for p in bench_dir.glob("**/*.png")
                     if "jobs" not in p.relative_to(bench_dir).parts)
    said = ([f"tables {', '.join(tables)}"] if tables else []) + (
        [f"figures {', '.join(figures[:6])}{f' and {len(figures) - 6} more' if len(figures) > 6 else ''}"]
        if figures else [])
    return f"{'; '.join(said)}: in {bench_dir}" if said else ""


def _demo(args) -> None:
    args.name = "demo"
    _bench(args)


def _episodes(args) -> None:
    from .errors import progress
    from .fewshot_eval import FEWSHOT_HEADS, episodes_note, run_episodes
    from .io import write_json, write_text
    from .results import stopped_lines, summarize
    from .runtime import default_device
    from .tables import markdown_table
    split = lambda text: [t.strip() for t in text.split(",") if t.strip()]  # noqa: E731
    for flag, values, least in (("--n-way", [args.n_way], 2), ("--k-shot", args.k_shot, 1),
                                ("--n-query", [args.n_query], 1), ("--episodes", [args.episodes], 1)):
        check(all(v >= least for v in values), f"{flag} must be >= {least}, got {' '.join(map(str, values))}")
    check_seed_range(args.seed, "--seed")
    twice = sorted({k for k in args.k_shot if args.k_shot.count(k) > 1})
    check(not twice, f"--k-shot lists {' '.join(map(str, twice))} more than once (each K is scored once)")
    run_dir, heads = Path(args.run_dir), split(args.heads)
    check(heads, f"--heads {args.heads!r} names no head (one or more of {', '.join(FEWSHOT_HEADS)}, comma-separated)")
    _runtime_flag_checks(args)
    rows, run = run_episodes(run_dir, split(args.methods) if args.methods else None, heads, args.n_way,
                             args.k_shot, args.n_query, args.episodes, args.seed, progress, args.trust_pickles,
                             args.device or default_device())
    plan = {"n_way": args.n_way, "k_shot": args.k_shot, "n_query": args.n_query, "episodes": args.episodes,
            "seed": args.seed, "heads": heads, "device": rows[0].get("device", "cpu")}  # a GPU's may differ
    stopped = [f"{line} These episodes score its models so far: run `transferkit episodes` again once it has "
               f"finished." for line in stopped_lines(run)]  # the resume writes results.json, not episodes.json
    notes = [episodes_note(rows)] + stopped
    summary = summarize(rows)
    config = {**(run.get("config") if isinstance(run.get("config"), dict) else {}), "episodes": plan}
    table = markdown_table(summary, rows, config, notes=notes)
    kept = _keep_other_episodes(run_dir, plan, rows)
    write_json(run_dir / "episodes.json", {"name": f"{run_dir.name} episodes", "config": config, "rows": rows,
                                           "summary": summary, "notes": notes})
    write_text(run_dir / "episodes.md", f"# {run_dir.name}: episodes\n\n{table}")
    print("\n" + table)
    _results_line(run_dir / "episodes.json", "episodes", " (table: episodes.md)"
                  + (f" (the previous ones, of {kept})" if kept else ""))


def _keep_other_episodes(run_dir: Path, plan: dict, rows: list[dict]) -> str | None:
    """Move an ``episodes.json`` (and ``.md``) of another plan (its device too: an older file's is the CPU) or
    of methods the new one lacks aside, to the first free ``episodes-N``, so that a new plan never overwrites
    finished episodes; what was kept where. The same plan of more methods (a run scored again as it finishes
    jobs) replaces it."""
    from .config import ADDED_EPISODE_FIELDS
    from .io import read_json
    old = run_dir / "episodes.json"
    if not old.is_file():
        return None
    try:
        data = read_json(old)
    except TransferkitError:  # unreadable: kept aside all the same
        data = {}
    data = data if isinstance(data, dict) else {}
    methods = lambda rs: sorted({str(r.get("method")) for r in rs if isinstance(r, dict)})  # noqa: E731
    before = (data.get("config") or {}).get("episodes") if isinstance(data.get("config"), dict) else None
    before = {**ADDED_EPISODE_FIELDS, **before} if isinstance(before, dict) else before  # older files: on the CPU
    if before == plan and set(methods(data.get("rows") or [])) <= set(methods(rows)):
        return None  # the same episodes again, or of more methods (a run's models so far, then more): replaced
    n = 1
    while (run_dir / f"episodes-{n}.json").exists() or (run_dir / f"episodes-{n}.md").exists():
        n += 1
    old.replace(run_dir / f"episodes-{n}.json")
    if (run_dir / "episodes.md").is_file():
        (run_dir / "episodes.md").replace(run_dir / f"episodes-{n}.md")
    return f"another plan or other methods, kept as episodes-{n}.json"


def _summary(args) -> None:
    from .compare import combine_runs, with_revisions
    from .errors import warn
    from .results import check_run_dir, failed_line, read_results, summarize, text_notes, unfinished_run
    from .tables import csv_table, latex_table, markdown_table, md_cell, table_parts
    for given in args.results:  # a folder with no results.json is refused in the words of `report`
        if Path(given).is_dir():
            check_run_dir(given)
    path = Path(args.results[0]) if len(args.results) == 1 else " + ".join(args.results)
    data = (combine_runs(args.results) if len(args.results) > 1 else unfinished_run(path)
            or read_results(path / "results.json" if path.is_dir() else path))
    config = data.get("config")
    if len(args.results) == 1:  # combine_runs gives combined runs' rows theirs (and reads odd configs as none)
        config = config if isinstance(config, dict) else None  # a list is no config, as a report reads it
        data = {**data, "rows": with_revisions(data["rows"], config)}
    failed = f"; {len(data['failed'])} job(s) failed (results.json's \"failed\")" if data.get("failed") else ""
    check(data["rows"], f"{path} has no rows: no job of that run or benchmark finished{failed}")
    differ = data.get("data_differ") or []  # combined runs that name one domain spec but read other data
    for line in differ:
        warn(line)
    differ = differ + (data.get("config_differ") or [])
    notes = text_notes(data)  # a results file's own lines, as written
    summary = summarize(data["rows"])
    if args.format in ("json", "csv"):  # the table's lines as text, beside the numbers
        parts = table_parts(summary, data["rows"], config, differ + notes, markdown=False)
        lines = ([f"Classes: {parts['classes']}."] if parts["classes"] else []) + parts["notes"]
        if args.format == "json":  # the summary entries (results.json's "summary") and the table's lines
            _print_json({"summary": summary, "notes": lines})
        else:  # the numbers alone on stdout; what the table's lines say goes to stderr
            print(csv_table(summary), end="")
            for line in lines:
                print(f"note: {line}", file=sys.stderr)
    elif args.format == "latex":
        print(latex_table(summary, data["rows"], config, differ + notes), end="")
    else:
        print(markdown_table(summary, data["rows"], config, [md_cell(line) for line in differ] + notes))
    check(not data.get("unfinished"), f"the table shows the finished jobs only{data.get('unfinished')}")
    failed = data.get("failed") or []  # the table holds the finished rows only: exit 2, as the run itself did
    check(not failed, f"{len(failed)} job(s) of this run or benchmark failed: {'; '.join(map(failed_line, failed))}"
                      f"; the table shows the finished rows only (after a fix, resume the directory to run them)")


def _runtime_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--workers", type=int, metavar="N",
                   help="run independent jobs in N processes (default: for run, the config's workers; else "
                        "$TRANSFERKIT_WORKERS, else 1); the rows are those of one process with as many torch threads: "
                        "set OMP_NUM_THREADS (unset, each worker gets cores / N)")
    s.add_argument("--device", help="cpu | cuda | cuda:N | mps | auto (default: for run, the config's device; "
                                    "else $TRANSFERKIT_DEVICE, else cpu)")
    s.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel training in N processes (torchrun, torch.distributed; default 1): "
                        "batch_size is the global batch and BatchNorm statistics are per process, so the rows "
                        "differ from one process's (docs/scale.md)")
    _portable_kernels_flag(s)


def _portable_kernels_flag(s: argparse.ArgumentParser) -> None:
    """``--portable-kernels``, for each command whose numbers are compared across machines."""
    s.add_argument("--portable-kernels", action="store_true",
                   help="cap torch's CPU kernels at AVX2 (ATen, MKL, oneDNN), so that a seed gives the same numbers "
                        "on x86 machines with other native kernels (AVX-512, AMX); MKL honours its cap on Intel "
                        "processors only; see docs/scale.md")


def _listing_format(s: argparse.ArgumentParser, which: str = "") -> None:
    """``--format text|json`` of a listing (``summary`` has its own, with ``json`` among them)."""
    s.add_argument("--format", choices=("text", "json"), default="text",
                   help=f"text: the listing{which} for reading (default); json: the same as one JSON document, "
                        f"for scripts")


class _Version(argparse.Action):
    """``--version``: ``transferkit VERSION (revision COMMIT[+dirty])``, the revision as results.json
    records it (:func:`~transferkit.runtime.source_revision`, looked up only when asked), the version
    alone where there is none (an installed wheel)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from . import __version__
        from .runtime import source_revision
        revision = source_revision()
        print(f"transferkit {__version__}{f' (revision {revision})' if revision else ''}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transferkit", description="Label-efficient transfer learning across "
                                "domains and tasks.")
    p.add_argument("--version", action=_Version, help="print the version (and the git revision of a source checkout) "
                                                     "and exit")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("domains", help="list named domains and shifts",
                       description="List the named domains (DOMAIN: built-in, and those the modules of "
                                   "TRANSFERKIT_PLUGINS register) and shifts (DOMAIN+SHIFT, e.g. mnist+yuv); "
                                   "your own data: folder:PATH (class sub-folders) or npz:FILE (x, y). Any of these "
                                   "names goes to a config's source / target and to `transferkit show`.")
    _listing_format(s)
    s.set_defaults(func=_domains)
    s = sub.add_parser("show", help="save a picture of samples per class",
                       description="Draw up to --per-class random images of each class of DOMAIN into a PNG.")
    s.add_argument("domain", help="a domain name as `transferkit domains` lists it (mnist, mnist+yuv, folder:PATH)")
    s.add_argument("--out", default="grid.png", metavar="FILE", help="the PNG file to write (default: grid.png)")
    s.add_argument("--per-class", type=int, default=8, metavar="N", help="images per class (default: 8)")
    s.add_argument("--size", type=int, default=28, metavar="PX", help="image side in pixels (default: 28)")
    s.add_argument("--seed", type=int, default=0, help="which images (and random shifts) are drawn (default: 0)")
    s.add_argument("--channels", type=int, choices=(1, 3),
                   help="convert to 1 or 3 channels (default: as stored; 3 for a colour shift, yuv/hsv, on a grey "
                        "domain, as `run` does)")
    s.set_defaults(func=_show)
    s = sub.add_parser("methods", help="list methods, or show the named methods' options and documentation",
                       description="List the methods (built-in, and those the modules of TRANSFERKIT_PLUGINS "
                                   "register); with NAMES, each one's options with their defaults and its "
                                   "documentation (set them with --set options.NAME.OPTION=VALUE).")
    s.add_argument("names", nargs="*", help="methods to describe (options with their defaults, the docstring)")
    _listing_format(s)
    s.set_defaults(func=_methods)
    s = sub.add_parser("run", help="run an experiment from a YAML config",
                       description="Run every (method, repeat) job of a config: pre-train the backbone on the "
                                   "source (cached across runs in $TRANSFERKIT_CACHE, default ~/.cache/transferkit), "
                                   "transfer with each method, evaluate on the target's test split. Writes "
                                   "OUT_DIR/NAME/<timestamp>/ (config.yaml, jobs/, models/, metrics.jsonl, "
                                   "results.json, results.md) and prints the table. `--print-config` shows every "
                                   "key with its value; `transferkit methods NAME` a method's options "
                                   "(--set options.NAME.OPTION=VALUE).",
                       epilog="example: transferkit run --set source=mnist --set target=mnist+yuv --set k=5 "
                              "--set 'methods=[finetune,dann]' --set train.steps=100")
    s.add_argument("config", nargs="?", help="YAML file, or the name of one that ships with transferkit (cross_task, "
                                             "demo, label_efficiency); omit to use the defaults with --set, "
                                             "or, with --resume, the run's own config.yaml")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=100 (repeatable)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue this run directory, skipping finished jobs")
    s.add_argument("--out", help="parent folder of a new run: it goes to OUT/NAME/<timestamp>/ (default: the "
                                 "config's out_dir, runs; the same as --set out_dir=OUT)")
    s.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file, --set, --workers, --device, --out) as YAML and exit")
    _runtime_flags(s)
    s.set_defaults(func=_run)
    for name, helptext in (("bench", "run a benchmark suite (see `transferkit bench list`)"),
                           ("demo", "the main job: syndigits -> mnist, k=5")):
        s = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + (
            ": its rows, tables and figures go to a directory that --resume finishes" if name == "bench" else
            " as a benchmark (`transferkit bench demo`): the README's table"))
        if name == "bench":
            s.add_argument("name", help="the suite to run (demo, flex, uda, uda_tune, fewshot, zeroshot, represent), "
                                        "or list: each suite in a line")
        s.add_argument("--quick", action="store_true", help="a few-minute version")
        s.add_argument("--out", default="runs",
                       help="parent folder of a new benchmark: it goes to OUT/bench-NAME[-quick]/<timestamp>/ "
                            "(default: runs)")
        s.add_argument("--resume", metavar="DIR", help="continue this benchmark directory (it must exist)")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a field of the benchmark's plan as --print-plan shows it (flex: --set "
                            "seeds=5 is a count; uda: --set seeds=0,1,2 lists the seeds)" if name == "bench" else
                       argparse.SUPPRESS)  # demo's plan has no field: --set is refused, saying so
        s.add_argument("--print-plan", action="store_true", help="print the plan (seeds, budgets) as YAML and exit")
        if name == "bench":
            _listing_format(s, " (of `bench list`)")
        _runtime_flags(s)
        s.set_defaults(func=_bench if name == "bench" else _demo)
    s = sub.add_parser("report", help="write an HTML + markdown report of runs or benchmarks",
                       description="Write report.html and report.md of each RUN_DIR: its table, the lines under "
                                   "it, per-class and confusion figures and training curves.")
    s.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a run or benchmark directory (finished, or stopped: its finished jobs)")
    s.add_argument("--out", metavar="DIR", help="output directory (default: inside each RUN_DIR; with several "
                                                "RUN_DIRs, one sub-folder per directory name)")
    s.set_defaults(func=_report)
    helptext = ("N-way K-shot episodes on a run's target test split with each finished job's frozen embedding "
                "(mean and 95 %% interval over the episodes)")
    s = sub.add_parser("episodes", help=helptext, description=helptext[0].upper() + helptext[1:].replace("%%", "%")
                       + ".")
    s.add_argument("run_dir", metavar="RUN_DIR", help="a transferkit run directory (finished, or stopped)")
    s.add_argument("--methods", metavar="NAMES",
                   help="the methods to score, comma-separated (default: every method with a model)")
    s.add_argument("--heads", default="prototype", metavar="NAMES",
                   help="few-shot heads, comma-separated: prototype, linear, cosine (default: prototype)")
    s.add_argument("--n-way", type=int, default=5, metavar="N", help="classes per episode (default: 5)")
    s.add_argument("--k-shot", type=int, nargs="+", default=[1, 5], metavar="K",
                   help="support images per class (default: 1 5)")
    s.add_argument("--n-query", type=int, default=15, metavar="N", help="query images per class (default: 15)")
    s.add_argument("--episodes", type=int, default=600, metavar="N", help="episodes (default: 600)")
    s.add_argument("--seed", type=int, default=0, help="draws the episodes, the same for every model (default: 0)")
    s.add_argument("--trust-pickles", action="store_true",
                   help="read a job that saved only its pickled model (models/*.pt; runs before 2026-12-07): "
                        "unpickling runs whatever code the file names, so only for run directories you trust "
                        "(default: each job's network file, models/*.safetensors, which runs no code)")
    s.add_argument("--device", help="cpu | cuda | cuda:N | mps | auto: where the embeddings and the heads are "
                                    "computed (default: $TRANSFERKIT_DEVICE, else cpu)")
    _portable_kernels_flag(s)
    s.set_defaults(func=_episodes)
    helptext = "print the table of a results.json (or of a run directory); of several, one table with a run column"
    s = sub.add_parser("summary", help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
    s.add_argument("results", nargs="+", metavar="RESULTS",
                   help="a results.json, or a run or benchmark directory holding one (exit 2 when some of its jobs "
                        "failed; a run directory not finished: the table of its finished jobs, exit 2); "
                        "several: one table, each row naming its run (seeds of one method are averaged "
                        "within a run, never across runs)")
    s.add_argument("--format", choices=("md", "csv", "latex", "json"), default="md",
                   help="md: the markdown table with its notes (default); csv: the summary's numbers, one line per "
                        "table row, as fractions (the notes go to stderr); latex: a booktabs tabular, the notes as "
                        "%% comments; json: {\"summary\": results.json's summary entries, \"notes\": the lines "
                        "under the table}")
    s.set_defaults(func=_summary)
    return p


CLOSED_PIPE = 141  # the shell's status for a process killed by SIGPIPE (128 + 13)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, docker, Slurm) or SIGHUP (a closed terminal or SSH
    session) stops a command as Ctrl-C does: finished jobs and checkpoints are kept and a
    directory stopped before any work is removed; the exit status is 128 + the signal's number."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__()
        self.signum = int(signum)


def _terminate(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_handled(handler, ctrl_c: bool = False):
    """``handler`` for SIGTERM, for SIGHUP unless it is ignored (``nohup``) or handled already, and with
    ``ctrl_c`` for SIGINT unless it is ignored (a background job); the main thread only (only it may
    set handlers); the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hangup = getattr(signal, "SIGHUP", None)  # none on Windows
    wanted = [(signal.SIGTERM, None), (hangup, signal.SIG_DFL)] + ([(signal.SIGINT, signal.default_int_handler)]
                                                                    if ctrl_c else [])
    caught = [s for s, default in wanted if s is not None and (default is None or signal.getsignal(s) is default)]
    previous = {s: signal.signal(s, handler) for s in caught}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _sigterm_as_interrupt():
    """SIGTERM, and SIGHUP unless it is ignored (``nohup``) or handled already, raise :class:`Terminated`."""
    return _signals_handled(_terminate)


@contextlib.contextmanager
def _stops_held():
    """Ctrl-C (SIGINT, unless ignored), SIGTERM and SIGHUP (as :func:`_sigterm_as_interrupt` takes
    it) recorded inside, not raised: yields the list of the signals that came, in order."""
    held: list[int] = []
    with _signals_handled(lambda signum, frame: held.append(signum), ctrl_c=True):
        yield held


def _is_full_or_denied(e: OSError) -> bool:
    """A full disk or quota, a file too large, a read-only or write-protected place: after a fix, a
    resume goes on from what was kept."""
    import errno

    from .io import STORAGE_FULL
    return e.errno in (*STORAGE_FULL, errno.EACCES, errno.EPERM)


def _resume_hint(args, argv: list[str]) -> str | None:
    """What a stopped command kept and the command that goes on from there; None in the
    processes of ``--nproc`` that leave it to rank 0 (the launcher and the other ranks)."""
    runtime = _loaded("runtime")  # not loaded: stopped while the library loaded, before any directory

    if os.environ.get("RANK", "0") != "0" or (getattr(args, "nproc", 1) > 1 and "WORLD_SIZE" not in os.environ):
        return None
    if not hasattr(args, "resume"):  # a command that keeps no run (episodes, report, summary): nothing to go on from
        return ""
    d = (runtime and runtime.work_dir()) or (Path(args.resume) if args.resume else None)  # a resume stopped early
    if d is None:  # a new run or benchmark stopped before its directory: removed, as nothing was kept
        return "it stopped before its first job, and nothing was kept: start it again"
    if not (d.is_dir() and any(p.name != ".lock" for p in d.iterdir())):
        return f"nothing was kept in {d} (no job had finished): start it again"
    rest = _argv_without(argv, "--resume")  # the same command, with this directory as its --resume
    per_node = os.environ.get("LOCAL_WORLD_SIZE", "1")  # a rank of --nproc N: its argv has lost the --nproc
    nproc = ["--nproc", per_node] if per_node.isdigit() and int(per_node) > 1 else []
    return f"{_kept(d)}; go on with: {shlex.join(['transferkit', *rest, *nproc, '--resume', str(d)])}"


def _kept(d: Path) -> str:
    """What a stopped run or benchmark's directory ``d`` keeps: its finished jobs (``jobs/``), the
    checkpoints of unfinished ones (``checkpoints/``), or its config alone (a resume starts the jobs again)."""
    jobs = any(p.suffix == ".json" for p in d.rglob("jobs/*"))
    checkpoints = any(p.is_file() for c in d.rglob("checkpoints") for p in c.rglob("*"))
    if jobs or checkpoints:
        kept = " and ".join(what for what, held in (("finished jobs", jobs), ("checkpoints", checkpoints)) if held)
        return f"{kept} are kept in {d}" + ("" if jobs else " (no job had finished)")
    return f"no job had finished nor written a checkpoint; {d} keeps the run's config"


def _split_set_value(argv: list[str]) -> str | None:
    """The first ``--set`` value that opens a YAML list or mapping which the words after it close
    (``--set k=[1, 5]`` unquoted reaches the program as ``k=[1,`` and ``5]``), or None (a value
    that nothing closes is YAML's to name)."""
    def open_brackets(text: str) -> bool:
        return text.count("[") > text.count("]") or text.count("{") > text.count("}")
    for i, flag in enumerate(argv):
        name, glued, value = flag.partition("=")  # argparse takes --set V, --set=V and a prefix (--se V)
        if not _names_option(name, "--set"):
            continue
        rest = i + 1 if glued else i + 2
        value = value if glued else (argv[i + 1] if i + 1 < len(argv) else "")
        if not open_brackets(value):
            continue
        joined = value
        for word in argv[rest:]:
            if word.startswith("--"):
                break
            joined += " " + word
            if not open_brackets(joined):
                return value
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    split = _split_set_value(argv)
    if split:
        print(f"transferkit: error: --set {split} was cut at a space by the shell (the rest came as other "
              f"words): quote the whole value, e.g. --set 'k=[1, 5, 10]'", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    if getattr(args, "nproc", 1) < 1:
        print(f"transferkit: error: --nproc must be >= 1, got {args.nproc}", file=sys.stderr)
        return 2
    from .runtime import note_work_dir, one_line_warnings, own_invocation

    if os.environ.get("RANK", "0") != "0":  # a rank of --nproc other than 0: rank 0 shows the warnings once
        warnings.filterwarnings("ignore", category=TransferkitWarning)
    note_work_dir(None)  # a directory of an earlier command in this process is not this one's
    default_format = one_line_warnings()
    flag_defaults = {key: os.environ.get(key) for key in RUNTIME_FLAG_ENVIRONMENT}
    try:
        # nor are an earlier command's rows its own; a closed stdout does not stop a run or benchmark
        with _sigterm_as_interrupt(), own_invocation(new=True), _stdout_kept(args):
            return _dispatch(args, argv)
    except WorkerDied as e:  # as an interruption: what was kept and the command that goes on
        hint = _resume_hint(args, argv)
        return _error(f"{e.reason}{f'; {hint}' if hint else ''}")
    except TransferkitError as e:
        return _error(str(e))
    except BrokenPipeError:  # `transferkit summary ... | head` closed the pipe: not an error of ours
        return _error("", CLOSED_PIPE)
    except OSError as e:  # the file system: a folder that cannot be made, a full disk, an existing file
        from .runtime import work_dir
        begun = hasattr(args, "resume") and work_dir() is not None  # a run or benchmark that kept something
        hint = _resume_hint(args, argv) if _is_full_or_denied(e) and begun else None
        return _error(f"{e}{_cache_hint(e)}{f'; {hint}' if hint else ''}")
    except KeyboardInterrupt as e:
        return _stopped(args, argv, e)
    except TransferkitWarning as e:  # python -W error: a warning raised as an error is one line too
        return _error(str(e))
    except Exception:
        from .distributed import peer_failed
        if peer_failed():  # under --nproc: another rank's error closed the process group under this one
            return 1
        raise
    finally:
        warnings.formatwarning = default_format
        for key, value in flag_defaults.items():  # --workers / --device hold for this command, not the next one
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _StdoutKept:
    """``sys.stdout`` (or ``sys.stderr``) for a long command: the first :class:`BrokenPipeError` (its reader has gone:
    ``| head``, a closed ``less``, a dying ``tee``) points the descriptor at ``os.devnull``, so that
    later prints and the interpreter's last flush raise nothing, and the work goes on."""

    def __init__(self, stream):
        self.stream, self.closed, self.results = stream, False, None

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextlib.contextmanager
def _stdout_kept(args):
    """Around a long command (run, bench, demo, episodes; not their listings or printed configs,
    which a closed pipe ends quietly): a closed stdout, or stderr (``2>&1 | tee log`` where tee
    died), does not stop the work (:class:`_StdoutKept`); at the end one stderr line says so, and
    where the results are (:func:`_results_line`), where stderr is still read."""
    long = args.func in (_run, _bench, _demo, _episodes) and not getattr(args, "print_config", False) \
        and not getattr(args, "print_plan", False) and getattr(args, "name", None) != "list"
    if not long or sys.stdout is None or isinstance(sys.stdout, _StdoutKept):  # None: print() writes nothing
        yield
        return
    kept = sys.stdout = _StdoutKept(sys.stdout)
    err = sys.stderr = _StdoutKept(sys.stderr) if sys.stderr is not None else None
    try:
        yield
    finally:
        kept.flush()  # what is buffered for stdout, before the line below
        if sys.stdout is kept:
            sys.stdout = kept.stream
        if kept.closed and not (err is not None and err.closed):
            where = f"; the results are in {kept.results}" if kept.results else ""
            print(f"transferkit: stdout was closed (its reader stopped reading); the command went on without it{where}",
                  file=sys.stderr, flush=True)
        if err is not None and sys.stderr is err:
            sys.stderr = err.stream


def _stopped(args, argv: list[str], e: KeyboardInterrupt) -> int:
    """Say that Ctrl-C or :class:`Terminated` stopped the command, with what it kept and the
    command that goes on, and return its exit status. Reads only the modules loaded whole: after
    a Ctrl-C while torch loads, importing it again fails."""
    distributed = _loaded("distributed")
    with interrupts_ignored():  # the line saying what was kept is printed whole
        hint = _resume_hint(args, argv)
        if hint is not None and not (distributed and distributed.peer_failed()):  # under --nproc, rank 0 alone
            # says what was kept, unless torchrun stopped it for another rank's error (which the launcher prints)
            what = f"terminated ({signal.Signals(e.signum).name})" if isinstance(e, Terminated) else "interrupted"
            print(f"transferkit: {what}{f'; {hint}' if hint else ''}", file=sys.stderr)
    return 128 + e.signum if isinstance(e, Terminated) else 130


def _loaded(name: str):
    """The module ``transferkit.name`` if it is loaded (whole: a failed import leaves none), else None."""
    return sys.modules.get(f"{__package__}.{name}")


def _cache_hint(error: OSError) -> str:
    """Where ``error`` concerns transferkit's cache: the variable that places it, and the fix. A
    copy's (``filename`` -> ``filename2``) full disk, quota or read-only file system is its
    destination's: a copy out of the cache into a full run directory is not the cache's doing."""
    import errno

    from .io import cache_dir
    if error.errno == errno.EFBIG:  # the process's file-size limit, wherever the file is
        return " (a file larger than this process may write: raise the file-size limit, e.g. ulimit -f unlimited)"
    cache = cache_dir()
    writing = error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) and error.filename2 is not None
    name = error.filename2 if writing else error.filename
    if name is None or not (Path(name) == cache or cache in Path(name).parents):
        return f" (the file system of {Path(name).parent} is full or read-only)" if writing else ""
    where = f"TRANSFERKIT_CACHE={os.environ['TRANSFERKIT_CACHE']}" if os.environ.get("TRANSFERKIT_CACHE") \
        else f"the cache {cache} (TRANSFERKIT_CACHE unset)"
    return f" (in transferkit's cache: {where}; set TRANSFERKIT_CACHE to a directory you can write to)"


def _dispatch(args, argv: list[str]) -> int:
    if getattr(args, "portable_kernels", False):  # before any torch operation; workers inherit it
        from .runtime import portable_kernels
        portable_kernels()
    if getattr(args, "nproc", 1) > 1 and "WORLD_SIZE" not in os.environ:
        with quiet():  # rank 0 gives them, reading the same config or plan
            checked = _checked_for_torchrun(args)
        if not checked:  # listing and printing need no processes
            args.func(args)
            return 0
        return _relaunch_with_torchrun(args.nproc, argv)
    args.func(args)
    return 0


def _error(text: str, code: int = 2) -> int:
    """Say ``transferkit: error: text`` on stderr (under ``--nproc``, the launcher says it once for
    every rank; ``""``: nothing to say) and return the exit status ``code``."""
    from .distributed import record_rank_error
    if not record_rank_error(code, text) and text:
        print(f"transferkit: error: {text}", file=sys.stderr)
    return code


def entry() -> None:
    """The ``transferkit`` command: exits with :func:`main`'s status. After a closed pipe,
    stdout's descriptor is pointed at ``/dev/null`` first, so that the interpreter's last flush
    raises nothing (the Python docs' recipe), and glibc keeps freed memory
    (:func:`~transferkit.runtime.keep_freed_memory`). Only here, in the process's entry point:
    ``main`` called in-process (a test, a notebook) touches neither a file descriptor nor the
    caller's allocator. A Ctrl-C or SIGTERM while torch loads (the command's first seconds) is held
    until it has loaded (:func:`_stops_held`), then stops the command as one later does: its one line
    (:func:`_stopped_early`) and exit status (that process ends at once, with ``os._exit``)."""
    for stream in (sys.stdout, sys.stderr):  # a table's ± or × on an ASCII terminal: '?', not a UnicodeEncodeError
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        with _stops_held() as held:  # a handler that raises inside numpy's or torch's C start-up is lost, or
            _help_early(sys.argv[1:])  # --help exits here, before torch loads
            from .runtime import keep_freed_memory  # turns into an ImportError: the stop waits for the load
        if held:
            raise KeyboardInterrupt if held[0] == signal.SIGINT else Terminated(held[0])
        with _sigterm_as_interrupt():
            keep_freed_memory()  # large activations reuse freed heap instead of faulting fresh pages in (the process's)
            code = main()
    except KeyboardInterrupt as e:  # main's own stop is main's: this is one before it, or between its steps
        code = _stopped_early(e)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # an import cut short can leave CPython's mark of an unhandled Ctrl-C set: it would end
        # the process by SIGINT after the line; nothing that needs the interpreter's exit has started
    if code == 130 or code - 128 in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):  # stopped: a second Ctrl-C
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # would only print tracebacks of the interpreter's exit
    if code == CLOSED_PIPE:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


def _help_early(argv: list[str]) -> None:
    """Where ``argv`` holds ``-h`` or ``--help``, parse it before the library loads: the help (of any
    command), or the usage error argparse meets first, is printed and the process exits (argparse's
    ``SystemExit``) without importing torch, about 1.5 s of the 1.6 s ``transferkit --help`` took
    (2026-12-08). Otherwise, or where a ``--set`` value was cut by the shell (:func:`main` names it),
    nothing happens here: :func:`main` parses the same words with the same parser."""
    if any(word in ("-h", "--help") for word in argv) and not _split_set_value(argv):
        build_parser().parse_args(argv)


def _stopped_early(e: KeyboardInterrupt) -> int:
    """:func:`_stopped` for a stop before :func:`main` could read its arguments: they are read
    here, silently (a mistake in them, or --help, leaves a plain "interrupted")."""
    argv = sys.argv[1:]
    with interrupts_ignored(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            args = argparse.Namespace()
    return _stopped(args, argv, e)


if __name__ == "__main__":
    entry()
