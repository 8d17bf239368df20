"""An alpha-beta cost model of a data-parallel step, fitted on `bench links` runs and checked against the rest.

A step = compute + Horovod's overhead + the allreduce's transfer, nothing hidden (hvd_mlp allreduces all gradients
as one group once the last is ready: --allreduce-groups 1). Per rank, N ranks, s samples a step, P parameters, a
tensor of b bytes (e elements), w = b 2(N-1)/N bytes each way on the wire (ring allreduce):
    compute   = c0 + c1 s P                                        an MLP's work: samples x parameters
    overhead  = o0 + o1 s P      negotiation (it waits for the slowest rank: grows with compute) + fusion copies
    transfer  = 2(N-1) alpha + max(link, host)                     the ring pipelines the link with the host's work
    link      = (w - burst) 8 / (eta R)                            R bit/s; burst: what the shaper lets out at once
    host      = w / B_host + gamma16 e16                           e16 = e (N-1)/N when the tensor is float16
alpha: one ring message's latency; eta: the share of the rate payload gets (headers, protocol); B_host: what the
hosts move per second where no link limits (copies, TCP stack); gamma16: the cost of adding float16 on a CPU
(float32's is inside B_host). Fitted per controller, in stages, each by (non-negative) least squares: alpha, B_host
and gamma16 on the unshaped runs' median transfer times (the `small` variant's model gives a third message size;
the median, as a peer descheduled by a busy machine stretches single transfers), eta on the shaped runs where the
link limits, c0..o1 on all the fitted runs' steps. FIT_RATES are fitted; every other rate is held out and predicted.
"""
import itertools
import math
import statistics

FIT_RATES = (0, 1e9)  # fitted on unshaped and 1 Gbit/s runs; checked on every other rate


def lstsq(features: list, targets: list) -> list:
    """Least-squares coefficients of targets ~ features . coef (normal equations; a few unknowns)."""
    if not features or len(features) < len(features[0]):
        raise ValueError("fewer runs than unknowns")
    k = len(features[0])
    a = [[sum(f[i] * f[j] for f in features) for j in range(k)] for i in range(k)]
    y = [sum(f[i] * t for f, t in zip(features, targets)) for i in range(k)]
    for col in range(k):  # Gauss-Jordan with partial pivoting
        pivot = max(range(col, k), key=lambda r: abs(a[r][col]))
        a[col], a[pivot], y[col], y[pivot] = a[pivot], a[col], y[pivot], y[col]
        if abs(a[col][col]) < 1e-300:
            raise ValueError("the runs do not determine the model (vary bytes and rate)")
        for r in range(k):
            if r != col:
                factor = a[r][col] / a[col][col]
                a[r] = [x - factor * p for x, p in zip(a[r], a[col])]
                y[r] -= factor * y[col]
    return [y[i] / a[i][i] for i in range(k)]


def nnls(features: list, targets: list) -> list:
    """Least squares with every coefficient >= 0 (a latency or a cost cannot be negative): the best fit over the
    subsets of features, the others held at 0. A few unknowns: 2^k small solves."""
    k, best = len(features[0]), None
    for size in range(k, 0, -1):
        for kept in itertools.combinations(range(k), size):
            try:
                coef = lstsq([[f[i] for i in kept] for f in features], targets)
            except ValueError:
                continue
            if min(coef) < 0:
                continue
            full = [0.0] * k
            for i, c in zip(kept, coef):
                full[i] = c
            residual = sum((t - sum(c * x for c, x in zip(full, f))) ** 2 for f, t in zip(features, targets))
            if best is None or residual < best[0]:
                best = (residual, full)
    if best is None:
        raise ValueError("no non-negative fit")
    return best[1]


def ring(world: int) -> float:
    return 2 * (world - 1) / world


def host_features(r: dict) -> list:
    e16 = r["tensor_bytes"] / 2 * ring(r["world"]) / 2 if r["fp16"] else 0.0
    return [2 * (r["world"] - 1), r["wire_bytes"], e16]


def link_s(model: dict, wire_bytes: float, rate_bps: float, burst_bytes: float) -> float:
    return max(0.0, wire_bytes - burst_bytes) * 8 / (model["eta"] * rate_bps) if rate_bps else 0.0


def fit(rows: list) -> dict:
    """Parameters from runs of one controller (rows as links.measure makes them): unshaped runs of two message
    sizes or dtypes, shaped runs where the link limits."""
    unshaped = [r for r in rows if not r["rate_bps"]]
    if len({r["wire_bytes"] for r in unshaped}) < 2:
        raise ValueError("needs unshaped runs of two message sizes")
    alpha, inv_host, gamma16 = nnls([host_features(r) for r in unshaped], [r["transfer_s"] for r in unshaped])
    model = {"alpha_s": alpha, "host_Bps": 1 / inv_host if inv_host else math.inf, "gamma16_s": gamma16}
    limited = []
    for r in rows:
        if r["rate_bps"]:
            link_1 = link_s({"eta": 1.0}, r["wire_bytes"], r["rate_bps"], r["burst_bytes"])
            if link_1 > host_s(model, r):  # the link, not the hosts, sets this transfer's pace
                limited.append((link_1, r["transfer_s"] - 2 * (r["world"] - 1) * alpha))
    if not limited:
        raise ValueError("no shaped run where the link limits")
    model["eta"] = sum(x * x for x, _ in limited) / sum(x * y for x, y in limited)
    work = [[1.0, r["samples_per_step"] * r["parameters"]] for r in rows]
    model["compute_c0_s"], model["compute_c1_s"] = nnls(work, [r["step_s"] - r["wait_s"] for r in rows])
    model["overhead_o0_s"], model["overhead_o1_s"] = nnls(work, [r["negotiate_s"] + r["memcpy_s"] for r in rows])
    return model


def host_s(model: dict, r: dict) -> float:
    _, wire, e16 = host_features(r)
    return wire / model["host_Bps"] + model["gamma16_s"] * e16


def step_s(model: dict, r: dict, overhead_scale: float = 1.0) -> dict:
    """The predicted step and its parts (s) for a run r (its world, rate, burst, bytes, fp16, samples_per_step,
    parameters). One rank computes alone: no overhead, no transfer."""
    work = r["samples_per_step"] * r["parameters"]
    compute = model["compute_c0_s"] + model["compute_c1_s"] * work
    if r["world"] == 1:
        return {"compute_s": compute, "latency_s": 0.0, "bandwidth_s": 0.0, "overhead_s": 0.0, "step_s": compute}
    latency = 2 * (r["world"] - 1) * model["alpha_s"]
    bandwidth = max(link_s(model, r["wire_bytes"], r["rate_bps"], r["burst_bytes"]), host_s(model, r))
    overhead = overhead_scale * (model["overhead_o0_s"] + model["overhead_o1_s"] * work)
    return {"compute_s": compute, "latency_s": latency, "bandwidth_s": bandwidth, "overhead_s": overhead,
            "step_s": compute + latency + bandwidth + overhead}


def fit_and_check(rows: list) -> tuple:
    """(a model per controller, every row with its predicted step and role fit|check, a text of both)."""
    models, checked, lines = {}, [], ["cost model (hvd_mlp/costmodel.py), fitted on unshaped and 1 Gbit/s runs:"]
    for controller in sorted({r["controller"] for r in rows}):
        mine = [r for r in rows if r["controller"] == controller]
        fitting = [r for r in mine if r["rate_bps"] in FIT_RATES]
        try:
            model = models[controller] = fit(fitting)
        except (ValueError, ZeroDivisionError):
            lines.append(f"  {controller}: too few runs to fit (needs unshaped runs of 2 sizes and 1G runs)")
            continue
        lines.append(f"  {controller}: alpha {model['alpha_s'] * 1e6:.0f} us/message, link efficiency "
                     f"{model['eta']:.2f}, host {model['host_Bps'] * 8 / 1e9:.1f} Gbit/s, float16 adds "
                     f"{model['gamma16_s'] * 1e9:.1f} ns/element, overhead {model['overhead_o0_s'] * 1e3:.2f} ms + "
                     f"{model['overhead_o1_s'] * 1e12:.1f} ps/(sample x parameter), compute "
                     f"{model['compute_c0_s'] * 1e3:.2f} ms + {model['compute_c1_s'] * 1e12:.1f} ps/(sample x parameter)")
        for r in mine:
            predicted = step_s(model, r)["step_s"]
            checked.append({"name": r["name"], "controller": controller, "step_s": r["step_s"],
                            "predicted_s": predicted, "role": "fit" if r in fitting else "check",
                            "error": predicted / r["step_s"] - 1})
    for role in ("fit", "check"):
        mine = [c for c in checked if c["role"] == role]
        if mine:
            worst = max(mine, key=lambda c: abs(c["error"]))
            lines.append(f"  {role} runs ({len(mine)}): step time error median "
                         f"{100 * statistics.median(abs(c['error']) for c in mine):.0f}%, worst "
                         f"{100 * worst['error']:+.0f}% ({worst['name']})")
    return models, checked, "\n".join(lines)


def project(model: dict, samples: float, parameters: int, rate_bps: float, world: int) -> dict:
    """A step at `world` workers, one per host, on links of rate_bps without a shaper's burst, float32 gradients;
    the overhead assumed to grow as log2 of the workers (Horovod's coordinator gathers and broadcasts the ready
    list along a tree; the slowest of more ranks is later)."""
    run = {"world": world, "rate_bps": rate_bps, "burst_bytes": 0, "tensor_bytes": 4 * parameters, "fp16": False,
           "wire_bytes": 4 * parameters * ring(world), "samples_per_step": samples, "parameters": parameters}
    step = step_s(model, run, max(1.0, math.log2(world)))
    alone = step_s(model, {**run, "world": 1})["step_s"]
    return {**step, "samples_per_s": world * samples / step["step_s"], "efficiency": alone / step["step_s"]}


def projection_table(model: dict, parameters: int, rates=(1e9, 1e10), batches=(32, 256),
                     workers=(2, 8, 64, 512)) -> str:
    """The fitted model projected to more workers, one rank per host: a markdown table."""
    lines = ["| workers | link | batch/rank | latency ms | bandwidth ms | overhead ms | step ms | efficiency | "
             "samples/s |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n, rate, batch in itertools.product(workers, rates, batches):
        p = project(model, batch, parameters, rate, n)
        lines.append(f"| {n} | {rate / 1e9:g} Gbit/s | {batch} | {p['latency_s'] * 1e3:.2f} | "
                     f"{p['bandwidth_s'] * 1e3:.2f} | {p['overhead_s'] * 1e3:.2f} | {p['step_s'] * 1e3:.1f} | "
                     f"{100 * p['efficiency']:.0f}% | {p['samples_per_s']:,.0f} |")
    return "\n".join(lines)
