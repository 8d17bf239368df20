"""An alpha-beta cost model of a data-parallel step, fitted on `bench links` runs and checked against the rest.

A step = compute(samples) + Horovod's overhead + the allreduce's transfer, nothing hidden (hvd_mlp allreduces all
gradients as one group once the last is ready: --allreduce-groups 1):
    compute(s)      = c0 + c1 * s                      s: samples per rank and step (batch x backward passes)
    overhead        = negotiation + fusion copies       measured per step (timeline), median of the fitted runs
    transfer(b, R)  = 2(N-1) alpha + w (8 / (eta R) + 1 / B_host),   w = b * 2(N-1)/N: the ring's bytes on the wire
alpha: the latency of one of the ring's 2(N-1) messages; eta: the share of a link of R bit/s that payload gets
(frame headers, protocol); B_host: what the hosts move per second where the link does not limit (copies, the
kernel's TCP stack): the unshaped runs measure it. c0, c1 are fitted on the fitted runs' step minus its wait for
communication; alpha, eta, B_host by least squares on their per-step transfer (collective) time. Everything per
controller: MPI and Gloo move bytes differently.
"""
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


def transfer_features(wire_bytes: float, rate_bps: float, world: int) -> list:
    return [2 * (world - 1), wire_bytes * 8 / rate_bps if rate_bps else 0.0, wire_bytes]


def fit(rows: list) -> dict:
    """Parameters from runs of one controller (rows as links.measure makes them, at >= 2 message sizes, shaped
    and unshaped)."""
    alpha, inv_eta, inv_host = lstsq([transfer_features(r["wire_bytes"], r["rate_bps"], r["world"]) for r in rows],
                                     [r["collective_s"] for r in rows])
    c0, c1 = lstsq([[1.0, r["samples_per_step"]] for r in rows], [r["step_s"] - r["wait_s"] for r in rows])
    return {"alpha_s": alpha, "eta": 1 / inv_eta if inv_eta > 0 else math.inf,
            "host_Bps": 1 / inv_host if inv_host > 0 else math.inf, "compute_c0_s": c0, "compute_c1_s": c1,
            "overhead_s": statistics.median(r["negotiate_s"] + r["memcpy_s"] for r in rows)}


def transfer_s(model: dict, tensor_bytes: float, rate_bps: float, world: int) -> float:
    wire = tensor_bytes * 2 * (world - 1) / world
    link = wire * 8 / (model["eta"] * rate_bps) if rate_bps else 0.0
    return 2 * (world - 1) * model["alpha_s"] + link + wire / model["host_Bps"]


def step_s(model: dict, samples: float, tensor_bytes: float, rate_bps: float, world: int) -> dict:
    """The predicted step and its parts (s). One rank computes alone: no overhead, no transfer."""
    compute = model["compute_c0_s"] + model["compute_c1_s"] * samples
    comm = model["overhead_s"] + transfer_s(model, tensor_bytes, rate_bps, world) if world > 1 else 0.0
    return {"compute_s": compute, "comm_s": comm, "step_s": compute + comm}


def fit_and_check(rows: list) -> tuple:
    """(a model per controller, every row with its predicted step and role fit|check, a text of both)."""
    models, checked, lines = {}, [], ["cost model (hvd_mlp/costmodel.py), fitted on unshaped and 1 Gbit/s runs:"]
    for controller in sorted({r["controller"] for r in rows}):
        mine = [r for r in rows if r["controller"] == controller]
        fitting = [r for r in mine if r["rate_bps"] in FIT_RATES]
        try:
            model = models[controller] = fit(fitting)
        except (ValueError, ZeroDivisionError):
            lines.append(f"  {controller}: too few runs to fit (needs unshaped and 1G runs, 2 sizes)")
            continue
        lines.append(f"  {controller}: alpha {model['alpha_s'] * 1e6:.0f} us/message, link efficiency "
                     f"{model['eta']:.2f}, host {model['host_Bps'] * 8 / 1e9:.1f} Gbit/s, overhead "
                     f"{model['overhead_s'] * 1e3:.2f} ms/step, compute {model['compute_c0_s'] * 1e3:.1f} ms + "
                     f"{model['compute_c1_s'] * 1e6:.0f} us/sample")
        for r in mine:
            predicted = step_s(model, r["samples_per_step"], r["tensor_bytes"], r["rate_bps"], r["world"])["step_s"]
            checked.append({"name": r["name"], "controller": controller, "step_s": r["step_s"],
                            "predicted_s": predicted, "role": "fit" if r in fitting else "check",
                            "error": predicted / r["step_s"] - 1})
    for role in ("fit", "check"):
        errors = [abs(c["error"]) for c in checked if c["role"] == role]
        if errors:
            lines.append(f"  {role} runs ({len(errors)}): step time error median {100 * statistics.median(errors):.0f}%,"
                         f" worst {100 * max(errors):.0f}% ({max(checked, key=lambda c: abs(c['error']) if c['role'] == role else -1)['name']})")
    return models, checked, "\n".join(lines)


def project(model: dict, samples: float, tensor_bytes: float, rate_bps: float, world: int) -> dict:
    """A step at `world` workers (ring allreduce); negotiation assumed to grow as log2 of the workers (Horovod's
    coordinator gathers and broadcasts the ready list along a tree), fusion copies not at all."""
    scaled = {**model, "overhead_s": model["overhead_s"] * max(1.0, math.log2(world))}
    step = step_s(scaled, samples, tensor_bytes, rate_bps, world)
    alone = step_s(model, samples, tensor_bytes, rate_bps, 1)["step_s"]
    return {**step, "samples_per_s": world * samples / step["step_s"], "efficiency": alone / step["step_s"]}


def projection_table(model: dict, tensor_bytes: float, rates=(1e9, 1e10), batches=(32, 256),
                     workers=(2, 8, 64, 512)) -> str:
    """The fitted model projected to more workers, one rank per host: a markdown table."""
    lines = ["| workers | link | batch/rank | latency ms | bandwidth ms | overhead ms | step ms | efficiency | "
             "samples/s |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in workers:
        for rate in rates:
            for batch in batches:
                p = project(model, batch, tensor_bytes, rate, n)
                latency = 2 * (n - 1) * model["alpha_s"]
                overhead = model["overhead_s"] * max(1.0, math.log2(n))
                lines.append(f"| {n} | {rate / 1e9:g} Gbit/s | {batch} | {latency * 1e3:.2f} | "
                             f"{(p['comm_s'] - latency - overhead) * 1e3:.2f} | {overhead * 1e3:.2f} | "
                             f"{p['step_s'] * 1e3:.1f} | {100 * p['efficiency']:.0f}% | {p['samples_per_s']:,.0f} |")
    return "\n".join(lines)
