"""Timeline recording: which file Horovod is told to write, and which steps each epoch's window covers."""
import pytest

from hvd_mlp import recorder as recorder_module
from hvd_mlp.recorder import SETTLE_STEPS, TimelineRecorder
from hvd_mlp.steptrace import Clock, StepTimes


@pytest.mark.parametrize("mode, user_file, env, full_file", [
    ("off", "", None, ""),
    ("window", "", "DYNAMIC", ""),
    ("full", "", "RUN/timeline.json", "RUN/timeline.json"),
    ("off", "/tmp/mine.json", "/tmp/mine.json", "/tmp/mine.json"),  # horovodrun --timeline-filename wins
])
def test_before_init_sets_what_horovod_reads(monkeypatch, mode, user_file, env, full_file):
    monkeypatch.delenv("HOROVOD_TIMELINE", raising=False)
    if user_file:
        monkeypatch.setenv("HOROVOD_TIMELINE", user_file)
    recorder = TimelineRecorder.before_init(mode, "RUN", 40)
    assert __import__("os").environ.get("HOROVOD_TIMELINE") == env
    assert recorder.full_file == full_file and recorder.mode == (mode if not user_file else "full")


@pytest.mark.parametrize("steps, window, first, recorded", [
    (100, 40, SETTLE_STEPS, 40),  # after the settling steps
    (42, 40, 2, 40),  # a short epoch starts earlier to keep the whole window
    (10, 40, 0, 10),  # shorter than the window: all of it
])
def test_window_steps(monkeypatch, steps, window, first, recorded):
    """Which steps the window covers; the step trace keeps exactly those (Horovod's calls stubbed: no hvd.init)."""
    clock = Clock(offset_us=5.0, error_us=1.0, measured_unix_us=0)
    monkeypatch.setattr(recorder_module, "measure_clock", lambda: clock)
    monkeypatch.setattr(recorder_module.hvd, "start_timeline", lambda *a, **k: None)
    monkeypatch.setattr(recorder_module.hvd, "stop_timeline", lambda: None)
    recorder = TimelineRecorder("window", "RUN", window)
    recorder.begin_epoch(3, steps)
    assert (recorder.first, recorder.window.steps, recorder.window.file) == (first, recorded,
                                                                            "RUN/timeline-epoch3.json")
    for step in range(steps):
        recorder.before_step(step)
        recorder.after_step(step, StepTimes(step, step + 0.5, step + 0.7, step + 0.9))
    assert recorder.trace.clock is clock
    assert [s for s, _ in recorder.trace.steps] == list(range(first, first + recorded))
