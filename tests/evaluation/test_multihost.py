"""Multi-process `jaxdiv.evaluate`: 2 processes x 2 CPU devices joined by `jax.distributed`.

The test writes `.npy` inputs, starts two `_multihost_worker.py` processes on a free localhost
port (each with `--xla_force_host_platform_device_count=2`, so a 4-device global mesh) that
evaluate them memory-mapped, and loads what `evaluate` returned in each. It compares that with
the same calls made here on one device (the bytes, as `evaluate` claims determinism over device
counts) and with float64 NumPy (the values). One test runs every `evaluate` case, so that its
cluster starts once even under `pytest -n`; about 15 s. Both tests are in the slow tier. Each
process reads only its own rows (`make_array_from_process_local_data`), the compiled step
replicates the results to every process, and only process 0 writes `out`. A second test runs the
`jaxdiv eval` command the same way.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxdiv._json import jsonable
from jaxdiv.evaluation import NonFiniteInputError
from jaxdiv.evaluation import evaluate

# Each test starts a cluster of two fresh JAX processes (about 15 s of wall time on 2 cores
# each, more under load): the slow tier. The fast tier covers the same sharded evaluation on 8
# devices of one process (test_multidevice.py).
pytestmark = [pytest.mark.multidevice, pytest.mark.slow]

N_PROCESSES = 2
DEVICES_PER_PROCESS = 2
TIMEOUT_S = 150
WORKER = Path(__file__).with_name("_multihost_worker.py")
ALL = ("mean", "sum", "std", "min", "max", "quantiles", "histogram")
QS = (0.0, 0.1, 0.5, 0.9, 1.0)


def _logits(shape, seed):
  return (3.0 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _probs(shape, seed):
  x = np.exp(_logits(shape, seed).astype(np.float64))
  return (x / x.sum(-1, keepdims=True)).astype(np.float32)


def _log_softmax64(x):
  x = x.astype(np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _kl_from_logits64(p, q):
  lp, lq = _log_softmax64(p), _log_softmax64(q)
  with np.errstate(invalid="ignore"):  # -inf - -inf where both are 0: 0 log(0/0) = 0
    return np.where(lp > -np.inf, np.exp(lp) * (lp - lq), 0.0).sum(-1)


def _js64(p, q, beta):
  p, q = p.astype(np.float64), q.astype(np.float64)
  m = beta * p + (1 - beta) * q
  with np.errstate(divide="ignore", invalid="ignore"):
    kl_pm = np.where(p > 0, p * np.log(p / m), 0.0).sum(-1)
    kl_qm = np.where(q > 0, q * np.log(q / m), 0.0).sum(-1)
  return beta * kl_pm + (1 - beta) * kl_qm


def _entropy_from_logits64(p):
  lp = _log_softmax64(p)
  with np.errstate(invalid="ignore"):
    return -np.where(lp > -np.inf, np.exp(lp) * lp, 0.0).sum(-1)


# Row counts and batch sizes chosen so that the last batch is partial (jaxdiv.evaluation.
# block_rows gives the rows a device computes in one call; a batch is a multiple of 4 of them):
#   kl (n=37, 4096-row blocks, one batch of 16384 rows = 8192 a process): process 0 holds the
#     2500 real rows and process 1 none;
#   js (n=2100, 256-row blocks, batches of 1024 = 512 a process): 1700 = 1024 + 676, so in the
#     last batch process 0 holds 512 real rows and process 1 164;
# and neither count is a multiple of the batch size or the device count.
CASES = [
    {"name": "kl", "divergence": "kl_divergence", "inputs": ["kl_p.npy", "kl_q.npy"],
     "out": "path",
     "kwargs": {"from_logits": True, "batch_size": 1000, "nan_policy": "skip",
                "reductions": ALL, "quantiles": QS, "bins": 7}},
    {"name": "js", "divergence": "js_divergence", "inputs": ["js_p.npy", "js_q.npy"],
     "out": None,
     "kwargs": {"beta": 0.3, "batch_size": 1, "nan_policy": "skip", "reductions": ALL,
                "quantiles": QS, "bins": 5}},
    {"name": "entropy", "divergence": "entropy", "inputs": ["kl_p.npy"], "out": False,
     "kwargs": {"from_logits": True, "batch_size": 700, "nan_policy": "skip",
                "reductions": ("mean", "quantiles", "histogram"), "quantiles": QS}},
    # nan_policy="fail": every process raises the same error after the pass; nothing is written.
    {"name": "kl_fail", "divergence": "kl_divergence", "inputs": ["kl_p.npy", "kl_q.npy"],
     "out": "path", "kwargs": {"from_logits": True, "batch_size": 1000}},
    # Iterators are single-process: refused, in every process, before any collective.
    {"name": "iterator", "divergence": "kl_divergence", "inputs": ["kl_p.npy", "kl_q.npy"],
     "iterator": True, "out": None, "kwargs": {"from_logits": True}},
]
CASES_BY_NAME = {c["name"]: c for c in CASES}
# NaN rows (nan_policy="skip") in either process's part of a batch.
NAN_ROWS = {"kl": {"p": [1500, 1700], "q": [2400]}, "js": {"q": [1290]},
            "entropy": {"p": [1500, 1700]}}


def _write_inputs(workdir: Path) -> dict[str, np.ndarray]:
  kl_p, kl_q = _logits((2500, 37), 0), _logits((2500, 37), 1)
  kl_p[1500, 5] = kl_p[1700, 0] = np.nan
  kl_q[2400, 0] = np.nan
  kl_p[3, :10] = kl_q[3, :10] = -np.inf  # zero probabilities: legitimate in logits
  js_p, js_q = _probs((1700, 2100), 2), _probs((1700, 2100), 3)
  js_q[1290, 7] = np.nan
  arrays = {"kl_p.npy": kl_p, "kl_q.npy": kl_q, "js_p.npy": js_p, "js_q.npy": js_q}
  for name, a in arrays.items():
    np.save(workdir / name, a)
  with open(workdir / "cases.pkl", "wb") as f:
    pickle.dump(CASES, f)
  return arrays


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _worker_env(tmpdir: Path) -> dict[str, str]:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  # The flags the test process compiles with (tests/conftest.py): the per-row results are
  # compared bit for bit with this process's.
  flags += env.get("JAXDIV_TEST_XLA_FLAGS", "").split()
  env["XLA_FLAGS"] = " ".join(flags + [
      f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}"])
  env["JAX_PLATFORMS"] = "cpu"
  env["TMPDIR"] = str(tmpdir)  # where a process that does not write `out` spools its results
  root = str(Path(__file__).resolve().parents[2])
  env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
  return env


def _tail(path: Path, chars: int = 3000) -> str:
  text = path.read_text(errors="replace") if path.exists() else "(no output)"
  return text[-chars:]


def _run_processes(workdir: Path, command) -> list[Path]:
  """Runs `command(i, coordinator)` in each process to completion (a TMPDIR `tmp<i>` each) and
  returns their logs; on a failure or timeout, kills the others and fails with every process's
  exit status and output tail."""
  coordinator = f"localhost:{_free_port()}"
  procs, logs = [], []
  for i in range(N_PROCESSES):
    tmpdir = workdir / f"tmp{i}"
    tmpdir.mkdir()
    log = workdir / f"worker{i}.log"
    logs.append(log)
    with open(log, "w") as f:
      procs.append(subprocess.Popen(command(i, coordinator), env=_worker_env(tmpdir), stdout=f,
                                    stderr=subprocess.STDOUT))
  deadline = time.monotonic() + TIMEOUT_S
  failed_at, timed_out = None, False
  while None in (codes := [p.poll() for p in procs]):  # poll every one: reap and see failures
    now = time.monotonic()
    if failed_at is None and any(c not in (None, 0) for c in codes):
      failed_at = now  # the others may be blocked in a collective: give them a moment
    timed_out = now > deadline
    if timed_out or (failed_at is not None and now > failed_at + 5):
      break
    time.sleep(0.05)
  for p in procs:
    if p.poll() is None:
      p.kill()
      p.wait()
  codes = [p.returncode for p in procs]
  if any(c != 0 for c in codes):
    report = "\n".join(f"--- worker {i}: exit {c} ---\n{_tail(log)}"
                       for i, (c, log) in enumerate(zip(codes, logs)))
    why = f" (timed out after {TIMEOUT_S} s)" if timed_out else ""
    pytest.fail(f"multi-process run failed{why}\n{report}", pytrace=False)
  return logs


def _run_cluster(workdir: Path) -> list[dict]:
  """The `_multihost_worker.py` processes' results."""
  _run_processes(workdir, lambda i, coordinator: [
      sys.executable, str(WORKER), coordinator, str(N_PROCESSES), str(i), str(workdir)])
  results = []
  for i in range(N_PROCESSES):
    with open(workdir / f"result{i}.pkl", "rb") as f:
      results.append(pickle.load(f))
  return results


def _summary_bytes(summary):
  return jsonable(summary)  # NaN -> "nan", so that == compares every value exactly


def _check_cluster(results):
  assert [r["process_index"] for r in results] == [0, 1]
  for r in results:
    assert (r["process_count"], r["device_count"], r["local_device_count"]) == (2, 4, 2), r
    for name, case in r["cases"].items():  # kl_fail and iterator are checked in _check_errors
      assert name in ("kl_fail", "iterator") or "error" not in case, (
          f"process {r['process_index']}, case {name}: {case.get('error')}")
    for case in r["cases"].values():
      if "timing" in case:
        assert (case["timing"]["processes"], case["timing"]["devices"]) == (2, 4)


def _check_per_row(results, refs, arrays):
  expected = {  # float64, independent of jaxdiv
      "kl": _kl_from_logits64(arrays["kl_p.npy"], arrays["kl_q.npy"]),
      "js": _js64(arrays["js_p.npy"], arrays["js_q.npy"], 0.3),
  }
  for name, want in expected.items():
    for rows in NAN_ROWS[name].values():
      want[rows] = np.nan  # nan_policy="skip": NaN in per_row
    ref = refs[name].per_row
    got = results[0]["cases"][name]["per_row"]
    assert got.shape == ref.shape and got.dtype == ref.dtype, name
    np.testing.assert_array_equal(got, ref, err_msg=name)
    assert got.tobytes() == ref.tobytes(), name
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=name)
    other = results[1]["cases"][name]["per_row"]
    if CASES_BY_NAME[name]["out"] is None:  # in memory: every process gets the results
      assert other.tobytes() == ref.tobytes(), name
    else:  # a path: only the process that wrote it gets them (a memmap of the file)
      assert other is None, name


def _check_summaries(results, refs, arrays):
  for case in CASES:
    name = case["name"]
    if name not in NAN_ROWS:
      continue
    ref = _summary_bytes(refs[name].summary)
    for r in results:
      assert _summary_bytes(r["cases"][name]["summary"]) == ref, (name, r["process_index"])
    s = results[0]["cases"][name]["summary"]
    assert s["skipped_rows"] == sum(len(v) for v in NAN_ROWS[name].values()), name
    assert s["nan_results"] == 0 and s["rows"] == refs[name].timing["rows"], name
    for inp, rows in NAN_ROWS[name].items():
      assert s["nonfinite_input_rows"][inp] == len(rows), name
  # out=False: no per-row results anywhere; the summary comes from each process's spool.
  assert all(r["cases"]["entropy"]["per_row"] is None for r in results)
  want = np.delete(_entropy_from_logits64(arrays["kl_p.npy"]), NAN_ROWS["entropy"]["p"])
  assert np.all(np.isfinite(want))
  s = results[0]["cases"]["entropy"]["summary"]
  np.testing.assert_allclose(s["mean"], want.mean(), rtol=1e-5)
  assert sum(s["histogram"]["counts"]) == want.size


def _check_files(workdir, refs):
  # Only process 0 wrote `out`, complete, under its final name; nothing else anywhere: no
  # temporary .partial files, no file from the failed run, no spool left in either TMPDIR.
  assert sorted(os.listdir(workdir / "out0")) == ["kl.npy"]
  assert os.listdir(workdir / "out1") == []
  written = np.load(workdir / "out0" / "kl.npy")
  assert written.shape == (2500,) and written.dtype == np.float32
  assert written.tobytes() == refs["kl"].per_row.tobytes()
  for i in range(N_PROCESSES):
    assert os.listdir(workdir / f"tmp{i}") == [], i


def _check_errors(results, refs):
  for r in results:
    assert r["cases"]["kl_fail"].get("error") == ("NonFiniteInputError", refs["kl_fail"])
    kind, message = r["cases"]["iterator"].get("error", (None, None))
    assert kind == "NotImplementedError" and "single-process" in message, message


def test_evaluate_on_2_processes_of_2_devices(tmp_path):
  arrays = _write_inputs(tmp_path)
  results = _run_cluster(tmp_path)
  # The reference: the same calls on one device of this process, on the same memmaps.
  one = Mesh(np.array(jax.devices("cpu")[:1]), ("data",))
  refs = {}
  for case in CASES:
    if case.get("iterator"):
      continue
    inputs = [np.load(tmp_path / name, mmap_mode="r") for name in case["inputs"]]
    try:
      refs[case["name"]] = evaluate(case["divergence"], *inputs, mesh=one, progress=False,
                                    **case["kwargs"])
    except NonFiniteInputError as e:
      refs[case["name"]] = str(e)
  _check_cluster(results)
  _check_per_row(results, refs, arrays)
  _check_summaries(results, refs, arrays)
  _check_files(tmp_path, refs)
  _check_errors(results, refs)


def test_cli_eval_on_2_processes_of_2_devices(tmp_path, capsys):
  """`jaxdiv eval --coordinator ...` in two processes: process 0 writes the same bytes and the
  same summary as the command run in one process (here, one device), and prints the table;
  process 1 writes and prints nothing."""
  from jaxdiv import cli

  p, q = _logits((1100, 53), 7), _logits((1100, 53), 8)
  np.save(tmp_path / "p.npy", p)
  np.save(tmp_path / "q.npy", q)
  args = [str(tmp_path / "p.npy"), str(tmp_path / "q.npy"), "-d", "kl_divergence",
          "--from-logits", "--batch-size", "300", "--no-progress"]
  single = tmp_path / "single"
  single.mkdir()
  assert cli.main(["eval", *args, "--out", str(single / "kl.npy"),
                   "--summary", str(single / "kl.json")]) == 0
  (tmp_path / "out0").mkdir()

  def command(i, coordinator):
    # Process 1's directory does not exist: it writes nothing, so it does not look.
    out = tmp_path / ("out0" if i == 0 else "missing")
    return [sys.executable, "-m", "jaxdiv", "eval", *args, "--out", str(out / "kl.npy"),
            "--summary", str(out / "kl.json"), "--coordinator", coordinator,
            "--num-processes", str(N_PROCESSES), "--process-id", str(i)]

  logs = _run_processes(tmp_path, command)
  assert sorted(os.listdir(tmp_path / "out0")) == ["kl.json", "kl.npy"]
  assert not (tmp_path / "missing").exists()
  assert np.load(tmp_path / "out0" / "kl.npy").tobytes() == np.load(single / "kl.npy").tobytes()
  np.testing.assert_allclose(np.load(single / "kl.npy"), _kl_from_logits64(p, q), rtol=2e-5,
                             atol=2e-6)
  got, want = (json.loads((d / "kl.json").read_text()) for d in (tmp_path / "out0", single))
  assert got["summary"] == want["summary"]
  assert (got["run"]["processes"], got["run"]["devices"]) == (2, 4)
  assert "kl_divergence" in logs[0].read_text()  # the table
  assert "kl_divergence" not in logs[1].read_text()
  # Half a cluster address, or a process outside it: usage errors, before anything starts.
  assert cli.main(["eval", *args, "--coordinator", "localhost:1"]) == cli.EXIT_USAGE
  assert "go together" in capsys.readouterr().err
  assert cli.main(["eval", *args, "--coordinator", "localhost:1", "--num-processes", "2",
                   "--process-id", "2"]) == cli.EXIT_USAGE
  assert "--process-id must lie in [0, 2)" in capsys.readouterr().err
