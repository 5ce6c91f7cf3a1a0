"""How close the int8 model gets to this CPU's int8 arithmetic peak: an ESTIMATE for
the workstation benchmark (`make bench`), from the CPU's ISA flags and clock.

The device benchmark (`python -m edge_runtime bench`) does not carry it: it
is a reading aid for the workstation's results.md, not a device figure.
"""

from __future__ import annotations

from edge_runtime.bench import cpuinfo


def int8_peak(flags: set, machine: str, clock_ghz: float | None) -> dict | None:
    """An ESTIMATE of one core's int8 multiply-accumulate peak from its ISA. Pure.

    MACs per cycle assume the widest int8 dot-product instruction the flags
    advertise issued every cycle on the stated number of vector units; real
    parts differ (e.g. some have two 512-bit units, some split 512-bit work
    into two 256-bit halves), so this is an order of magnitude, not a spec.
    """
    m = machine.lower()
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        isa, per_cycle, how = "AVX-512 VNNI", 64, "one 512-bit VPDPBUSD (64 int8 MACs) per cycle"
    elif "avx_vnni" in flags:
        isa, per_cycle, how = "AVX-VNNI", 64, "two 256-bit VPDPBUSD (32 int8 MACs each) per cycle"
    elif "avx2" in flags:
        isa, per_cycle, how = "AVX2", 32, "two 256-bit VPMADDUBSW (+VPMADDWD) per cycle, ~32 int8 MACs"
    elif "i8mm" in flags:
        isa, per_cycle, how = "NEON I8MM", 64, "two 128-bit SMMLA (32 int8 MACs each) per cycle"
    elif "asimddp" in flags:
        isa, per_cycle, how = "NEON dot product", 32, "two 128-bit SDOT (16 int8 MACs each) per cycle"
    elif m in ("aarch64", "arm64") or "asimd" in flags or "neon" in flags:
        isa, per_cycle, how = "NEON", 8, "one 128-bit SMLAL (8 int8 MACs via int16) per cycle, as on a Cortex-A72"
    elif "sse4_1" in flags or "ssse3" in flags:
        isa, per_cycle, how = "SSSE3/SSE4", 16, "one 128-bit PMADDUBSW (16 int8 MACs) per cycle"
    else:
        return None
    out = {"isa": isa, "macs_per_cycle_per_core": per_cycle, "assumption": how, "clock_ghz": clock_ghz,
           "gmacs_per_s_per_core": round(per_cycle * clock_ghz, 1) if clock_ghz else None}
    return out


def efficiency(macs_per_image: int | None, latency_us: float | None, peak: dict | None) -> dict | None:
    """Achieved MAC rate of one single-thread image and its share of the estimated peak. Pure."""
    if not macs_per_image or not latency_us:
        return None
    achieved = macs_per_image / (latency_us * 1e-6) / 1e9
    per_core = (peak or {}).get("gmacs_per_s_per_core")
    return {"macs_per_image": int(macs_per_image), "latency_us": latency_us,
            "achieved_gmacs_per_s": round(achieved, 2),
            "peak_gmacs_per_s_per_core": per_core,
            "fraction_of_peak": round(achieved / per_core, 4) if per_core else None,
            "note": "ESTIMATE: MACs per image / measured 1-thread latency, against a peak "
                    "inferred from the CPU's ISA flags and clock (see 'peak.assumption')."}


def peak_verdict(fraction_of_peak: float) -> str:
    """How to read a measured share of the estimated peak, for people. Pure.

    A share above 1 can't be a real efficiency: the estimate assumed fewer
    int8 MACs per cycle, or a lower clock, than this core delivers (one seen
    here: an AMD EPYC that /proc/cpuinfo reports at 2.6 GHz ran this
    model at 1.6-1.7x one 512-bit VNNI instruction per cycle at that clock,
    in three runs). Saying "164% of peak" would read as a measurement error.
    """
    if fraction_of_peak <= 1.0:
        return f"about {fraction_of_peak:.0%} of peak"
    return (f"{fraction_of_peak:.1f}x the estimated peak: this core does more int8 MACs per cycle, "
            "or runs at a higher clock, than the estimate assumes, so the estimate is too low for it")


def int8_peak_here(machine: dict) -> dict | None:
    """int8_peak for this machine, at the clock `edge_runtime.bench.machine_info` found."""
    return int8_peak(cpuinfo()["flags"], machine.get("machine") or "", machine.get("clock_ghz"))
