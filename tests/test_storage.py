"""Files that must survive: atomic writes, and checkpoints that cannot carry code."""
import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from hvd_mlp import storage
from hvd_mlp.errors import UserError

WRITER = textwrap.dedent("""
    import sys
    from hvd_mlp import storage
    big = {"payload": "x" * 50_000_000, "version": 2}
    print("ready", flush=True)
    while True:
        storage.write_json(sys.argv[1], big, durable=sys.argv[2] == "durable")
""")


@pytest.mark.parametrize("durable", ["durable", "not fsynced"])
def test_kill_during_write_leaves_the_previous_file(tmp_path, durable):
    """SIGKILL at several moments: the file is always a whole version, and at least one kill landed mid-write
    (it left its temporary file behind), so the test did try the torn case. Without the fsyncs too (step traces)."""
    path = tmp_path / "results.json"
    storage.write_json(str(path), {"version": 1})
    for delay in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), durable], stdout=subprocess.PIPE,
                                  text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert json.loads(path.read_text())["version"] in (1, 2)  # never torn
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "results.json"]
    assert leftovers, "no kill landed during a write"
    assert all(name.startswith(".results.json.") for name in leftovers)  # only hidden temp files of killed writers


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "results.json"
    storage.write_json(str(path), {"version": 1})
    with pytest.raises(TypeError):
        storage.write_json(str(path), {"version": object()})  # not serialisable: fails mid-write
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_unwritable_place_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match=f"cannot write {tmp_path}/missing/x.json: No such file or directory"):
        storage.write_json(str(tmp_path / "missing" / "x.json"), {})


class RunsCode:
    def __reduce__(self):
        return (print, ("this ran on load",))


@pytest.mark.parametrize("content, message", [
    ({"model": RunsCode()}, "holds Python objects beyond tensors and plain data"),
    (b"not a checkpoint", "is corrupt or unreadable"),
    ({"model": {}}, "is not an hvd_mlp checkpoint"),
])
def test_checkpoint_loads_weights_only(tmp_path, capsys, content, message):
    path = tmp_path / "c.pt"
    path.write_bytes(content) if isinstance(content, bytes) else torch.save(content, path)
    with pytest.raises(UserError, match=message):
        storage.read_checkpoint(str(path))
    assert "this ran on load" not in capsys.readouterr().out


def test_checkpoint_path_problems_are_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        storage.read_checkpoint(str(tmp_path / "none.pt"))
    with pytest.raises(UserError, match="is a directory"):
        storage.read_checkpoint(str(tmp_path))
