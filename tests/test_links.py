"""Shaped links between the namespace hosts (hvd_mlp/netns.py, hvd_mlp/links.py) and the cost model fitted on them
(hvd_mlp/costmodel.py): one real run at 1 Gbit/s under horovodrun across two hosts, and the model's logic alone."""

import pytest

from hvd_mlp import bench, costmodel, links, netns
from hvd_mlp.netns import Cluster, namespaces_usable

WHY_NOT = namespaces_usable()
MODEL = {"alpha_s": 150e-6, "eta": 0.9, "host_Bps": 0.6e9, "gamma16_s": 20e-9, "compute_c0_s": 2e-3,
         "compute_c1_s": 1e-10, "overhead_o0_s": 1e-3, "overhead_o1_s": 2e-11}
PARAMETERS = 567_434  # hvd_mlp's default MLP: 2.27 MB of float32 gradients


def row(controller="mpi", rate=1e9, samples=32, variant="plain", world=2, model=MODEL):
    """A run as links.measure records it, made by the model itself: wait = what the step communicated."""
    parameters = 12_730 if variant == "small" else PARAMETERS
    tensor_bytes = parameters * (2 if variant == "fp16" else 4)
    r = {"controller": controller, "rate_bps": rate, "world": world, "samples_per_step": samples,
         "parameters": parameters, "fp16": variant == "fp16", "burst_bytes": netns.burst_bytes(rate),
         "tensor_bytes": tensor_bytes, "wire_bytes": tensor_bytes * 2 * (world - 1) / world,
         "name": f"{controller}-{rate:g}-{samples}-{variant}"}
    step = costmodel.step_s(model, r)
    return {**r, "transfer_s": step["latency_s"] + step["bandwidth_s"], "negotiate_s": 0.7 * step["overhead_s"],
            "memcpy_s": 0.3 * step["overhead_s"], "step_s": step["step_s"], "wait_s": step["step_s"] - step["compute_s"]}


def sweep_rows(controller="mpi", model=MODEL):
    return [row(controller, rate, samples, variant, model=model) for rate in (0, 1e8, 1e9, 1e10)
            for samples in (32, 256) for variant in ("plain", "fp16", "small")]


def test_least_squares_recovers_exact_coefficients():
    features = [[1.0, x, x * x] for x in (0.0, 1.0, 2.0, 5.0)]
    assert costmodel.lstsq(features, [3 - 2 * x + 0.5 * x * x for _, x, _ in features]) == \
        pytest.approx([3, -2, 0.5])


def test_non_negative_least_squares_drops_what_would_go_negative():
    features = [[1.0, x] for x in (1.0, 2.0, 3.0)]
    assert costmodel.lstsq(features, [2.0, 3.0, 3.5])[0] > 0
    assert costmodel.nnls(features, [0.9, 2.0, 3.2]) == pytest.approx([0, 2.9 / 2.8], rel=1e-3)  # free: -0.23


def test_fit_recovers_the_model_from_unshaped_and_1g_runs():
    fitting = [r for r in sweep_rows() if r["rate_bps"] in costmodel.FIT_RATES]
    fitted = costmodel.fit(fitting)
    for key in MODEL:
        assert fitted[key] == pytest.approx(MODEL[key], rel=1e-6), key


def test_fit_and_check_predicts_the_held_out_rates_per_controller():
    gloo = {**MODEL, "alpha_s": 400e-6, "eta": 0.95, "gamma16_s": 30e-9}
    models, checked, text = costmodel.fit_and_check(sweep_rows("mpi") + sweep_rows("gloo", gloo))
    assert models["gloo"]["alpha_s"] == pytest.approx(400e-6) and models["mpi"]["eta"] == pytest.approx(0.9)
    assert {c["role"] for c in checked if "1e+08" in c["name"] or "1e+10" in c["name"]} == {"check"}
    assert all(abs(c["error"]) < 1e-9 for c in checked)
    assert "check runs (24): step time error median 0%" in text


def test_fit_needs_two_sizes_and_a_shaped_rate():
    rows = [row(rate=0, samples=s) for s in (32, 256)] + [row(rate=1e9)]  # unshaped: one message size
    models, checked, text = costmodel.fit_and_check(rows)
    assert models == {} and checked == [] and "mpi: too few runs to fit" in text


def test_projection_one_worker_is_compute_and_more_workers_cost_more():
    alone = costmodel.project(MODEL, 32, PARAMETERS, 1e9, 1)
    assert alone["efficiency"] == 1 and alone["step_s"] == alone["compute_s"]
    steps = [costmodel.project(MODEL, 32, PARAMETERS, 1e9, n) for n in (2, 8, 64, 512)]
    assert [s["efficiency"] for s in steps] == sorted((s["efficiency"] for s in steps), reverse=True)
    # the ring's bytes approach 2x the tensor (at 1 Gbit/s the link, not the host, limits); latency grows with 2(N-1)
    assert steps[-1]["bandwidth_s"] == pytest.approx(2 * 511 / 512 * 4 * PARAMETERS * 8 / (0.9 * 1e9))
    assert steps[-1]["latency_s"] == pytest.approx(2 * 511 * 150e-6)
    assert steps[-1]["overhead_s"] == pytest.approx(9 * (1e-3 + 2e-11 * 32 * PARAMETERS))
    assert costmodel.project(MODEL, 256, PARAMETERS, 1e9, 64)["efficiency"] > steps[2]["efficiency"]
    # at 10 Gbit/s the hosts (0.6 GB/s) are slower than the link: they set the pace
    fast = costmodel.project(MODEL, 32, PARAMETERS, 1e10, 8)
    assert fast["bandwidth_s"] == pytest.approx(2 * 7 / 8 * 4 * PARAMETERS / 0.6e9)


def test_rates_parse_and_bad_input_is_one_line(capsys, tmp_path):
    assert links.rate_list("100M,1G,10g,none,2.5Gbit") == [1e8, 1e9, 1e10, 0, 2.5e9]
    for argv in (["links", "--rates", "fast"], ["links", "--controllers", "nccl"], ["links", "--batches", "0"],
                 ["links", "--rows", "/nonexistent/links.json", "--out", str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_:
            bench.main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("hvd_mlp.bench: error:"), err


@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "namespaces usable")
def test_shaped_1g_link_across_two_hosts_under_horovodrun(tmp_path):
    """MPI across node1 and node2 on links shaped to 1 Gbit/s each way: the timeline's transfers run below the
    rate, and fp16 compression halves the bytes, in the timeline and on the wire (the link's own counter)."""
    measured = {}
    with Cluster(2, tmp_path / "cluster") as cluster:
        cluster.shape(1e9)
        for variant in ("plain", "fp16"):
            run_dir = str(tmp_path / variant)
            sent = links.run_across(cluster, "mpi", links.train_args(32, variant, 10, run_dir))
            measured[variant] = {**links.measure(run_dir), "sent_bytes": sent}
    plain, fp16 = measured["plain"], measured["fp16"]
    assert plain["world"] == 2 and plain["tensor_bytes"] == 4 * PARAMETERS
    # the link sets the pace: a transfer may beat the rate only by the token bucket's burst, let out at once after
    # the step's compute (CI once measured 1.0001 Gbit/s); the floor lies far below it: a busy machine stretches
    # transfers too
    def ceiling(row):
        return 1e9 * row["wire_bytes"] / (row["wire_bytes"] - netns.burst_bytes(1e9))
    assert 0.2e9 < plain["transfer_bps"] < ceiling(plain) and 0 < plain["epoch_bps"] < ceiling(plain), plain
    assert 0 < fp16["transfer_bps"] < ceiling(fp16), fp16
    assert fp16["tensor_bytes"] / plain["tensor_bytes"] == pytest.approx(0.5, abs=0.01)
    # on the wire: the run's every byte (2 epochs x 10 steps, the start's broadcasts, ssh): about half
    assert 0.45 < fp16["sent_bytes"] / plain["sent_bytes"] < 0.65, (fp16["sent_bytes"], plain["sent_bytes"])
    assert plain["sent_bytes"] > 20 * plain["wire_bytes"]


def test_without_namespaces_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(links, "namespaces_usable", lambda: "network namespaces need root")
    with pytest.raises(SystemExit) as exit_:
        bench.main(["links", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == \
        "hvd_mlp.bench: error: bench links builds two hosts with network namespaces: network namespaces need root"
