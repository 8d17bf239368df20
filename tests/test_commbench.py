"""Raw MPI baseline under the real launcher."""
import json
import re
import subprocess

import pytest

from conftest import horovodrun, python_module
from hvd_mlp import commbench


def test_commbench_times_allreduce_under_mpi(tmp_path):
    out = tmp_path / "cb.json"
    proc = horovodrun(2, "mpi", python_module("hvd_mlp.commbench", "--sizes", "4096,2269736", "--repeats", "5",
                                              "--json", out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"2,269,736 +\d+\.\d +\d+ +\d+  <- the MLP's gradient", proc.stdout)
    table = json.loads(out.read_text())
    assert table["ranks"] == 2 and [r["bytes"] for r in table["rows"]] == [4096, 2269736]
    assert all(r["time_us"] > 0 and r["algbw_MBps"] == pytest.approx(r["bytes"] / r["time_us"])
               for r in table["rows"])


@pytest.mark.parametrize("size, bus_over_alg", [(2, 1.0), (4, 1.5), (8, 1.75)])
def test_bus_bandwidth_is_what_a_ring_link_carries(size, bus_over_alg):
    r = commbench.row(8_000_000, 0.002, size)  # 8 MB in 2 ms
    assert r["algbw_MBps"] == pytest.approx(4000) and r["busbw_MBps"] == pytest.approx(4000 * bus_over_alg)


def test_commbench_needs_mpi_ranks():
    proc = horovodrun(2, "gloo", python_module("hvd_mlp.commbench", "--repeats", "1"))
    assert proc.returncode != 0
    assert "hvd_mlp.commbench: error: run it with >= 2 MPI ranks" in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--sizes", "0"], "argument --sizes: each size must be a positive multiple of 4 (float32), got 0"),
    (["--sizes", "4096,-8"], "argument --sizes: each size must be a positive multiple of 4 (float32), got -8"),
    (["--sizes", "6"], "argument --sizes: each size must be a positive multiple of 4 (float32), got 6"),
    (["--sizes", "1k"], "argument --sizes: expected comma-separated whole numbers of bytes, got '1k'"),
    (["--sizes", ""], "argument --sizes: expected comma-separated whole numbers of bytes, got ''"),
    (["--repeats", "0"], "argument --repeats: must be > 0, got 0"),
    (["--json", "{d}"], "argument --json: {d} is a directory, not a file"),
])
def test_bad_arguments_are_one_line(tmp_path, args, message):
    proc = subprocess.run(python_module("hvd_mlp.commbench", *(a.format(d=tmp_path) for a in args)),
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == f"hvd_mlp.commbench: error: {message.format(d=tmp_path)}"


def test_json_in_a_missing_directory_is_refused_before_the_benchmark(tmp_path):
    proc = horovodrun(2, "mpi", python_module("hvd_mlp.commbench", "--json", tmp_path / "missing" / "cb.json"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"hvd_mlp.commbench: error: argument --json: cannot write {tmp_path}/missing/cb.json: No such file or " \
           "directory" in proc.stderr
    assert "raw MPI_Allreduce" not in proc.stdout  # nothing measured, then thrown away
