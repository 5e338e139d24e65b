"""The `jaxdiv` command: `jaxdiv eval` (per-row divergences between two array files, streamed)
and `jaxdiv demo` (teacher/student distillation on scikit-learn's digits, compared).

Errors are one line on stderr, `jaxdiv: error: ...`, with exit status 2 for a bad command line
(including an output that would overwrite an input, or --out equal to --summary) and 1 for bad
data or files (including inputs that are not probabilities without --from-logits, and a run
whose every result is NaN); `JAXDIV_DEBUG=1` shows the traceback instead. An interrupted run
(Ctrl-C) exits with 130 and leaves no output and no temporary file; a second Ctrl-C exits at
once. A closed stdout pipe (`| head`) ends the command quietly with 141.

Nothing heavy is imported here at module level: JAX is imported when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import time
import traceback

EXIT_DATA, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PIPE = 1, 2, 130, 141
_DEFAULT_QUANTILES = "0.01,0.1,0.5,0.9,0.99"
_DEFAULT_CACHE_SIZE = "1G"


class UsageError(Exception):
  """A bad command line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # argparse prints the whole usage; one line is enough
    raise UsageError(f"{message} (see `{self.prog} --help`)")


class _Formatter(argparse.HelpFormatter):
  """Shows an option's default only when it has one worth showing (not None, not False) and
  its help does not already say it."""

  def _get_help_string(self, action):
    text = action.help or ""
    if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
        or action.required or not action.option_strings):
      return text
    return text + " (default: %(default)s)"


def _version() -> str:
  from jaxdiv._version import __version__

  return __version__


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="jaxdiv", description="Entropies and divergences between probability"
                   " distributions, evaluated at scale with JAX.", formatter_class=_Formatter)
  parser.add_argument("--version", action="version", version=f"jaxdiv {_version()}")
  sub = parser.add_subparsers(dest="command", metavar="{eval,demo,list}", parser_class=_Parser)

  ev = sub.add_parser(
      "eval", help="per-row divergence between two array files (streamed, never loaded whole)",
      description="Per-row divergence between two arrays stored in .npy, .npz or .safetensors"
      " files, memory-mapped and streamed in batches through a jitted divergence on every"
      " local device. Prints a summary table at the end.",
      formatter_class=_Formatter)
  ev.add_argument("p", metavar="P", help="first distribution (.npy, .npz, .safetensors)")
  ev.add_argument("q", metavar="Q", nargs="?",
                  help="second distribution, same shape as P (omit for entropies)")
  ev.add_argument("--divergence", "-d", required=True, metavar="NAME",
                  help="the divergence; `jaxdiv list` shows them with their parameters")
  ev.add_argument("--from-logits", action="store_true",
                  help="the inputs are logits (unnormalised log-probabilities)")
  ev.add_argument("--axis", type=int, default=-1, help="the distribution axis")
  ev.add_argument("--alpha", type=float, help="order of the Rényi/Tsallis/alpha divergences")
  ev.add_argument("--beta", type=float, help="mixture weight of the (generalised) JS divergence")
  ev.add_argument("--base", type=float,
                  help="logarithm base of the result, e.g. 2 for bits (default: nats)")
  ev.add_argument("--batch-size", type=int, metavar="N",
                  help="rows per step (default: the largest that fits --memory-budget, at most"
                  " 65536)")
  ev.add_argument("--memory-budget", default="256M", metavar="SIZE",
                  help="host memory for the batches in flight, e.g. 256M, 2G; it also bounds"
                  " the compiled block (rows of up to 1024 entries: 4096-row blocks a device"
                  " where the budget holds 4096 rows for each device, smaller and about half as"
                  " fast below; the last bits of each row's value depend on the block, so on"
                  " the budget and the device count). A batch is at least one block on every"
                  " device (1024 rows of 1024 entries: about 56M a device), which can exceed a"
                  " small budget on many devices")
  ev.add_argument("--out", metavar="FILE.npy",
                  help="write the per-row results (.npy); never an input file")
  ev.add_argument("--summary", metavar="FILE.json",
                  help="write the summary as JSON (NaN as null); never an input file")
  ev.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                  help="fail when inputs taken as probabilities are not (negative entries, rows"
                  " not summing to 1: logits without --from-logits?) and when every result is"
                  " NaN; --no-validate evaluates whatever it is given")
  ev.add_argument("--nan", choices=("fail", "skip", "propagate"), default="fail",
                  help="rows with NaN or inf in the inputs: fail (exit 1, nothing written),"
                  " skip (NaN in --out, left out of the summary) or propagate")
  ev.add_argument("--key", help="array name inside .npz/.safetensors files (both inputs)")
  ev.add_argument("--p-key", help="array name inside P (overrides --key)")
  ev.add_argument("--q-key", help="array name inside Q (overrides --key)")
  ev.add_argument("--quantiles", default=_DEFAULT_QUANTILES,
                  help="comma-separated probabilities for the exact quantiles (empty: none)")
  ev.add_argument("--bins", type=int, default=20, help="histogram bins in the JSON summary")
  ev.add_argument("--compile-cache", metavar="DIR",
                  help="keep the compiled step in DIR (JAX's persistent compilation cache), so"
                  " that the next run with the same divergence, shapes and devices skips"
                  " compiling it (default: $JAXDIV_COMPILE_CACHE if set, empty for none, else"
                  " a cache given to JAX (JAX_COMPILATION_CACHE_DIR, as JAX is set up), else"
                  " $XDG_CACHE_HOME/jaxdiv/xla or ~/.cache/jaxdiv/xla; a folder that cannot be"
                  " written is skipped)")
  ev.add_argument("--no-compile-cache", dest="compile_cache", action="store_const", const="",
                  help="compile the step without a persistent cache")
  ev.add_argument("--compile-cache-size", metavar="SIZE", default=_DEFAULT_CACHE_SIZE,
                  help="keep the compile cache folder (jaxdiv's own, not one given to JAX) under"
                  " SIZE (512M, 2G), removing the entries used least recently first (default:"
                  f" {_DEFAULT_CACHE_SIZE}; 0: no bound)")
  ev.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                  help="progress bar, needs tqdm (default: when stderr is a terminal and tqdm is"
                  " installed)")
  dist = ev.add_argument_group(
      "multi-host", "Run the same command in every process of a jax.distributed cluster: each"
      " reads its own rows; process 0 alone writes --out and --summary and prints the table.")
  dist.add_argument("--distributed", action="store_true",
                    help="join the cluster first; without the three options below, JAX finds"
                    " it from the environment (SLURM, Open MPI, Cloud TPU, ...)")
  dist.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
  dist.add_argument("--num-processes", type=int, metavar="N", help="processes in the cluster")
  dist.add_argument("--process-id", type=int, metavar="I", help="this process, 0 to N - 1")

  demo = sub.add_parser(
      "demo", help="distil students from a teacher on the digits data and compare them",
      description="Trains a small Flax teacher on scikit-learn's digits, distils students with"
      " forward KL, reverse KL and JS, evaluates every divergence between teacher and each"
      " student on the held-out set with jaxdiv.evaluate, prints a table, and writes PNG"
      " plots and summary.json to --out. No download; under two minutes on two CPU cores.",
      formatter_class=_Formatter)
  demo.add_argument("--out", default="jaxdiv-demo", metavar="DIR", help="output directory")
  demo.add_argument("--seed", type=int, default=0, help="random seed")
  demo.add_argument("--quick", action="store_true", help="fewer training steps (smoke test)")

  sub.add_parser("list", help="list the divergences `jaxdiv eval` can compute")
  return parser


# ------------------------------------------------------------------------------------ eval ----

def _fmt(x) -> str:
  if isinstance(x, float):
    if math.isnan(x) or math.isinf(x):
      return str(x)
    return f"{x:.6g}"
  return str(x)


def _table(res, args, shape, dtype) -> str:
  s, t = res.summary, res.timing
  what = s["divergence"] + ("(P)" if args.q is None else "(P‖Q)")
  lines = [f"jaxdiv eval: {what}{' from logits' if args.from_logits else ''},"
           f" {s['rows']:,} rows of {shape[args.axis]:,} ({dtype}),"
           f" {t['devices']} {t['platform']} device{'s' if t['devices'] > 1 else ''}"]
  rows = [("rows", f"{s['rows']:,}")]
  bad = sum(s["nonfinite_input_rows"].values())
  if bad:
    how = "skipped" if s["skipped_rows"] else "kept"
    rows.append(("non-finite input rows", f"{bad:,} ({how})"))
  if s["nan_results"]:
    rows.append(("NaN results", f"{s['nan_results']:,}"))
  for k in ("mean", "std", "min"):
    rows.append((k, _fmt(s[k])))
  for q, v in s.get("quantiles", {}).items():
    rows.append((f"q{float(q) * 100:g}", _fmt(v)))
  rows.append(("max", _fmt(s["max"])))
  rows.append(("time", f"{t['seconds']:.2f} s, {t['rows_per_second']:,.0f} rows/s,"
                       f" {t['bytes_per_second'] / 1e9:.3g} GB/s read"))
  width = max(len(k) for k, _ in rows)
  lines += [f"  {k:<{width}}  {v}" for k, v in rows]
  return "\n".join(lines)


def _check_command(args, spec, params):
  """The checks that need neither the data nor JAX."""
  extra, missing = spec.unknown_and_missing(params)
  if extra:
    raise UsageError(f"{spec.name} takes no --{', --'.join(extra)}"
                     f" (it takes: {', '.join('--' + k for k in spec.params) or 'no parameter'})")
  if missing:
    raise UsageError(f"{spec.name} needs --{', --'.join(missing)}")
  if spec.n_inputs == 2 and args.q is None:
    raise UsageError(f"{spec.name} compares two distributions: give P and Q")
  if spec.n_inputs == 1 and args.q is not None:
    raise UsageError(f"{spec.name} is a function of one distribution: give P only")
  if args.out is not None and not args.out.endswith(".npy"):
    raise UsageError(f"--out must name a .npy file; got {args.out!r}")
  if args.batch_size is not None and args.batch_size < 1:
    raise UsageError(f"--batch-size must be positive; got {args.batch_size}")
  from jaxdiv.evaluation import MAX_BINS

  if not 1 <= args.bins <= MAX_BINS:
    raise UsageError(f"--bins must lie in [1, {MAX_BINS}]; got {args.bins}")
  cluster = (args.coordinator, args.num_processes, args.process_id)
  if any(x is not None for x in cluster) and None in cluster:
    raise UsageError("--coordinator, --num-processes and --process-id go together (or give"
                     " --distributed alone to take them from the environment)")
  if args.num_processes is not None and not 0 <= args.process_id < args.num_processes:
    raise UsageError(f"--process-id must lie in [0, {args.num_processes}); got"
                     f" {args.process_id}")
  if args.progress:
    try:
      import tqdm  # noqa: F401
    except ImportError:
      raise UsageError("--progress needs tqdm: pip install tqdm (or pip install"
                       " 'jaxdiv[demo]')") from None


def _check_destinations(args, paths):
  """Before any work: no output is an input, --out is not --summary, both can be written."""
  from jaxdiv.evaluation import check_destination
  from jaxdiv.evaluation import overwritten_input
  from jaxdiv.evaluation import same_file

  outs = [(flag, path) for flag, path in (("--out", args.out), ("--summary", args.summary))
          if path is not None]
  for flag, path in outs:
    hit = overwritten_input(path, zip("PQ", paths))
    if hit is not None:
      raise UsageError(f"{flag} {path} is the input {hit[0]} ({hit[1]}): it would be"
                       " overwritten; choose another name")
  if len(outs) == 2 and (os.path.realpath(args.out) == os.path.realpath(args.summary)
                         or same_file(args.out, args.summary)):
    raise UsageError(f"--out and --summary name the same file {args.out}; give two names")
  for flag, path in outs:
    check_destination(path, flag)


def _size_option(parse_size, text: str, option: str) -> int:
  try:
    size = parse_size(text)
  except ValueError as e:
    raise UsageError(f"{option}: {e}") from None
  if size < 0:
    raise UsageError(f"{option} must not be negative; got {text}")
  return size


def _run_eval(args, interrupts, program: bool = False) -> int:
  from jaxdiv.evaluation import DIVERGENCES
  from jaxdiv.evaluation import atomic_write_text
  from jaxdiv.evaluation import open_array
  from jaxdiv.evaluation import parse_size

  if args.divergence not in DIVERGENCES:
    raise UsageError(f"unknown divergence {args.divergence!r}; valid names: "
                     + ", ".join(sorted(DIVERGENCES)))
  spec = DIVERGENCES[args.divergence]
  params = {k: getattr(args, k) for k in ("alpha", "beta", "base") if getattr(args, k) is not None}
  _check_command(args, spec, params)
  budget = _size_option(parse_size, args.memory_budget, "--memory-budget")
  cache_bytes = _size_option(parse_size, args.compile_cache_size, "--compile-cache-size")
  try:
    qs = tuple(float(x) for x in args.quantiles.split(",") if x.strip())
  except ValueError as e:
    raise UsageError(f"--quantiles: {e}") from None
  if any(not 0 <= x <= 1 for x in qs):
    raise UsageError(f"--quantiles must lie in [0, 1]; got {args.quantiles}")
  paths = [args.p] if args.q is None else [args.p, args.q]
  # Only process 0 writes: another process (when its id is known before joining the cluster)
  # does not check, so that it neither fails nor leaves process 0 waiting in `initialize`.
  if args.process_id in (None, 0):
    _check_destinations(args, paths)
  keys = [args.p_key or args.key, args.q_key or args.key][:len(paths)]
  arrays = [open_array(path, key) for path, key in zip(paths, keys)]

  import jax
  import numpy as np

  from jaxdiv.evaluation import budget_batch
  from jaxdiv.evaluation import compute_dtype
  from jaxdiv.evaluation import evaluate

  interrupts.check()  # a Ctrl-C during the imports (seconds): stop before any work

  # Inputs stored in float64 are computed in float64 (the CLI owns its process's JAX config).
  if any(np.dtype(a.dtype) == np.float64 for a in arrays):
    jax.config.update("jax_enable_x64", True)
  if program:  # not from `main(argv)` in a caller's process, whose JAX config is the caller's
    _use_compile_cache(jax, args.compile_cache, cache_bytes)
  if args.distributed or args.coordinator is not None:
    _join_cluster(jax, args.coordinator, args.num_processes, args.process_id)
  lead = jax.process_index() == 0
  shape = arrays[0].shape
  batch_size, max_block_rows = 1024, None
  if len(shape) and -len(shape) <= args.axis < len(shape):
    itemsizes = [compute_dtype(a.dtype).itemsize for a in arrays]  # of the buffers in flight
    # The rows the budget holds, over the devices, also bound the compiled block (4096 rows
    # for n <= 1024 where they fit, the faster block on a CPU; see
    # jaxdiv.evaluation.block_rows), whatever the batch size, so that a row's bits depend on
    # the budget and the device count alone.
    batch_size, max_block_rows = budget_batch(budget, shape[args.axis], itemsizes,
                                              jax.device_count())
  if args.batch_size is not None:
    batch_size = args.batch_size

  names = tuple(paths) + (("Q",) if len(paths) == 1 else ())
  if names[0] == names[1]:  # P and Q from one file: their counts and messages apart
    names = tuple(f"{path}[{key}]" if key and keys[0] != keys[1] else f"{path} ({which})"
                  for path, key, which in zip(paths, keys, "PQ"))
  written = []  # the files this run committed: removed again if it is interrupted after
  try:
    res = evaluate(
        spec.name, *arrays, batch_size=batch_size, axis=args.axis,
        from_logits=args.from_logits, out=args.out if args.out is not None else False,
        # The summary is process 0's: the others skip what needs the per-row results again.
        reductions=("mean", "sum", "std", "min", "max") + (("quantiles", "histogram") if lead
                                                           else ()),
        quantiles=qs, bins=args.bins, nan_policy=args.nan, progress=args.progress, names=names,
        validate=args.validate, max_block_rows=max_block_rows, **params)
    if args.out is not None and lead:
      written.append(args.out)
    if not lead:  # the summary, the table and the files are process 0's
      return 0
    interrupts.check()
    if args.summary is not None:
      from jaxdiv._json import jsonable

      doc = {"divergence": spec.name, "inputs": paths, "keys": keys, "axis": args.axis,
             "from_logits": args.from_logits, "parameters": params, "nan_policy": args.nan,
             "summary": res.summary, "run": res.timing}
      with atomic_write_text(args.summary, before_commit=interrupts.check) as f:
        json.dump(jsonable(doc), f, indent=2, allow_nan=False)
        f.write("\n")
      written.append(args.summary)
    interrupts.check()
  except KeyboardInterrupt:
    for path in written:
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    raise
  print(_table(res, args, shape, arrays[0].dtype))
  if written:
    print("  wrote " + ", ".join(written))
  return 0


def _default_compile_cache() -> str | None:
  """$XDG_CACHE_HOME/jaxdiv/xla (a relative $XDG_CACHE_HOME is ignored, as the XDG spec says),
  else ~/.cache/jaxdiv/xla; None where the home folder is unknown."""
  base = os.environ.get("XDG_CACHE_HOME", "")
  if not os.path.isabs(base):
    home = os.path.expanduser("~")
    if not os.path.isabs(home):
      return None
    base = os.path.join(home, ".cache")
  return os.path.join(base, "jaxdiv", "xla")


# JAX's entries in a persistent cache folder: `<name>-<64 hex digits>-cache`, and `-atime`
# in place of `-cache` beside each where JAX bounds the folder itself.
_CACHE_ENTRY, _CACHE_ATIME = "-cache", "-atime"
_CACHE_NAME = re.compile(r".+-[0-9a-f]{64}-cache")


def _trim_compile_cache(path: str, max_bytes: int) -> None:
  """Removes the entries of the compile cache folder `path` used least recently until those
  left hold at most `max_bytes` (0: no bound).

  JAX's own bound (`jax_compilation_cache_max_size`) needs the `filelock` package, and fails
  every write to a folder holding an entry it did not time itself. Last use: the later of an
  entry's access and modification times (Linux's default `relatime` mounts update the access
  time of a file read at least once a day). Only JAX's entry files are removed (regular files
  named as JAX names them, `<name>-<64 hex digits>-cache`); one that another process removed
  first, or that cannot be removed, is passed over: keeping the folder small never fails a
  run."""
  if max_bytes <= 0:
    return
  entries = []
  try:
    with os.scandir(path) as it:
      for e in it:
        if not _CACHE_NAME.fullmatch(e.name):
          continue
        try:
          if not e.is_file(follow_symlinks=False):
            continue
          st = e.stat(follow_symlinks=False)
        except OSError:  # removed meanwhile
          continue
        entries.append((max(st.st_atime_ns, st.st_mtime_ns), e.path, st.st_size))
  except OSError:
    return
  total = sum(size for _, _, size in entries)
  for _, entry, size in sorted(entries):
    if total <= max_bytes:
      break
    with contextlib.suppress(OSError):
      os.remove(entry)
      total -= size
    with contextlib.suppress(OSError):
      os.remove(entry[:-len(_CACHE_ENTRY)] + _CACHE_ATIME)


def _jax_cache_dir(jax) -> str | None:
  try:
    return getattr(jax.config, "jax_compilation_cache_dir", None) or None
  except Exception:  # pylint: disable=broad-except  # a JAX that reads its flags otherwise
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or None


def _use_compile_cache(jax, flag: str | None, max_bytes: int = 0) -> str | None:
  """Sets JAX's persistent compilation cache for this process (the program's: the command owns
  its process's JAX configuration) and returns its folder, or None for none.

  The folder: `--compile-cache DIR` (`flag`; empty, from `--no-compile-cache`: none, one given
  to JAX included), else $JAXDIV_COMPILE_CACHE (empty: none), else a cache JAX was given
  (`JAX_COMPILATION_CACHE_DIR`, perhaps remote, used as it is with JAX's settings), else
  $XDG_CACHE_HOME/jaxdiv/xla (~/.cache/jaxdiv/xla). A folder of ours that cannot be made or
  written is left alone and the run compiles as without a cache; in one that can, every
  compilation is kept, however short, unless JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says
  otherwise: the step's takes ~0.3-0.4 s on a CPU, below JAX's default threshold of 1 s, and it
  is most of a short run's time. A folder of ours is first trimmed to `max_bytes`
  (:func:`_trim_compile_cache`; 0: no bound), before this run reads it."""
  if flag is None:
    flag = os.environ.get("JAXDIV_COMPILE_CACHE")
  if flag == "":
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  given = _jax_cache_dir(jax)
  if flag is None and given is not None:
    return given
  path = flag or _default_compile_cache()
  if path is None:
    return None
  # One spelling a folder: JAX's cache keys hold it ("~/x", "x" and "/home/me/x" would miss
  # each other's entries).
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None
  if not (os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)):
    return None
  _trim_compile_cache(path, max_bytes)
  jax.config.update("jax_compilation_cache_dir", path)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path


def _join_cluster(jax, coordinator, num_processes, process_id):
  """`jax.distributed.initialize`, with gloo collectives on CPU (jax's default since 0.4.3x;
  set in case an install differs)."""
  try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  except (AttributeError, KeyError, ValueError):  # renamed or removed: keep the default
    pass
  jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def _run_list() -> int:
  from jaxdiv.evaluation import DIVERGENCES

  for name, spec in sorted(DIVERGENCES.items()):
    args = "P" if spec.n_inputs == 1 else "P Q"
    opts = " ".join(f"--{k} X" if k in spec.required else f"[--{k} X]" for k in spec.params)
    print(f"{name:26s} {args:4s} {opts}")
  return 0


def _run_demo(args) -> int:
  try:
    import flax  # noqa: F401
    import matplotlib  # noqa: F401
    import optax  # noqa: F401
    import sklearn  # noqa: F401
  except ImportError as e:
    missing = (e.name or str(e)).split(".")[0]
    print(f"jaxdiv: error: `jaxdiv demo` needs the demo extra ({missing} is missing): pip"
          " install 'jaxdiv[demo]'", file=sys.stderr)
    return EXIT_DATA
  from jaxdiv.demo import run as demo_run

  return demo_run.main(out=args.out, seed=args.seed, quick=args.quick)


def main(argv: list[str] | None = None) -> int:
  """Entry point of the `jaxdiv` console script; returns the exit status."""
  started = time.perf_counter()
  debug = bool(os.environ.get("JAXDIV_DEBUG"))
  try:
    from jaxdiv import _interrupt

    parser = build_parser()
    try:
      args = parser.parse_args(argv)
    except SystemExit:  # --help, --version
      _interrupt.release_early()
      raise
    if args.command == "eval":
      with _interrupt.handled(exit_on_second=True) as interrupts:
        status = _run_eval(args, interrupts, program=argv is None)
        if argv is None:  # the program: its result is out; a Ctrl-C now only ends it sooner
          sys.stdout.flush()
          interrupts.done_status = status
      if argv is None and not (args.distributed or args.coordinator is not None):
        # Python's shutdown (JAX's teardown, then default signal handlers again) could only
        # turn a late Ctrl-C into a death by SIGINT after success: the result is out, end now.
        sys.stderr.flush()
        os._exit(status)
      return status
    _interrupt.release_early()
    if args.command == "demo":
      return _run_demo(args)
    if args.command == "list":
      return _run_list()
    parser.print_help()
    return EXIT_USAGE
  except UsageError as e:
    print(f"jaxdiv: error: {e}", file=sys.stderr)
    return EXIT_USAGE
  except KeyboardInterrupt:
    print(f"jaxdiv: interrupted after {time.perf_counter() - started:.1f} s; nothing was"
          " written", file=sys.stderr)
    if argv is None:
      # The program: its outputs and temporaries are already removed. Python's shutdown (JAX's
      # teardown, with the default SIGINT handler back) would turn a second Ctrl-C arriving
      # now into a death by SIGINT instead of 130: end at once.
      for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
          stream.flush()
      os._exit(EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED
  except BrokenPipeError:
    # The reader of stdout left (`| head`): say nothing more, and keep Python's exit-time
    # flush of stdout from failing again.
    with contextlib.suppress(OSError):
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_PIPE
  except SystemExit:
    raise
  except BaseException as e:
    if debug:
      traceback.print_exc()
    text = getattr(e, "cli_message", None) or str(e)
    msg = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    if not isinstance(e, (ValueError, TypeError, OSError)):
      msg = f"{type(e).__name__}: {msg}"
    print(f"jaxdiv: error: {msg}", file=sys.stderr)
    return EXIT_DATA


if __name__ == "__main__":
  sys.exit(main())
