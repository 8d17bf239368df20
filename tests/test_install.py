"""The distributed stack itself: the patched Horovod build, and real collectives under horovodrun."""
import os
import re
import subprocess
import sys

from conftest import HOROVODRUN, horovodrun


def test_check_build_lists_pytorch_mpi_gloo():
    out = subprocess.run([HOROVODRUN, "--check-build"], capture_output=True, text=True, timeout=120).stdout
    for name in ("PyTorch", "MPI", "Gloo"):
        assert re.search(rf"\[X\] {name}", out), out


def test_allreduce_and_broadcast_under_horovodrun(controller):
    script = os.path.join(os.path.dirname(__file__), "dist_smoke.py")
    proc = horovodrun(2, controller, [sys.executable, script], timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = sorted(re.findall(r"SMOKE rank=(\d) size=2 sum=3 avg=0.5 bcast=101 controller=(\w+)", proc.stdout))
    assert lines == [("0", controller), ("1", controller)], proc.stdout


def test_horovod_carries_the_elastic_patches():
    """Patches 5 and 6 of scripts/install.sh (docs/install.md): without them an elastic job does not grow back."""
    import inspect

    import horovod.runner.elastic.discovery as discovery
    import horovod.torch.elastic as torch_elastic
    why = "this venv's Horovod lacks install.sh's patch {}: run scripts/install.sh (its wheel cache key changed)"
    assert "whitelist host listed again by the discovery" in inspect.getsource(discovery), why.format(5)
    assert "meet again" in inspect.getsource(torch_elastic), why.format(6)
