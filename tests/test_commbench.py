"""Raw MPI baseline under the real launcher."""
import json
import re

from conftest import horovodrun, python_module


def test_commbench_times_allreduce_under_mpi(tmp_path):
    out = tmp_path / "cb.json"
    proc = horovodrun(2, "mpi", python_module("hvd_mlp.commbench", "--sizes", "4096,2269736", "--repeats", "5",
                                              "--json", out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"2,269,736 +\d+\.\d +\d+ +\d+  <- the MLP's gradient", proc.stdout)
    table = json.loads(out.read_text())
    assert table["ranks"] == 2 and [r["bytes"] for r in table["rows"]] == [4096, 2269736]
    assert all(r["time_us"] > 0 and r["busbw_MBps"] == r["algbw_MBps"] for r in table["rows"])  # 2(N-1)/N = 1


def test_commbench_needs_mpi_ranks():
    proc = horovodrun(2, "gloo", python_module("hvd_mlp.commbench", "--repeats", "1"))
    assert proc.returncode != 0
    assert "hvd_mlp.commbench: error: run it with >= 2 MPI ranks" in proc.stdout + proc.stderr
