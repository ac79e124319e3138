#!/usr/bin/env bash
# Runs the in-memory hot-path benches (criterion) and prints a Markdown table
# of ns per packet and the ratio to the baseline measured in the same run,
# plus the Maglev build figures, with the machine they ran on.
#
#   scripts/bench-nat.sh            # all benches
#   scripts/bench-nat.sh --quick    # shorter measurement (noisier)
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
if [ "${1:-}" = "--quick" ]; then
    args=(-- --warm-up-time 1 --measurement-time 2)
fi
export CARGO_TERM_COLOR=never
cargo bench --locked --bench nat "${args[@]}" >&2
cargo bench --locked --bench maglev "${args[@]}" >&2 || true

python3 - <<'PY'
import json, os, platform, re, subprocess, glob

def est(path):
    with open(path) as f:
        e = json.load(f)
    return e["mean"]["point_estimate"], e["mean"]["confidence_interval"]

def bench_dirs(group):
    out = {}
    for p in glob.glob(f"target/criterion/{group}/**/new/estimates.json", recursive=True):
        name = os.path.relpath(os.path.dirname(os.path.dirname(p)), f"target/criterion/{group}")
        # criterion stores "established/1k" as "established_1k"
        out[re.sub(r"^(established6|established|reply|dns)_", r"\1/", name)] = est(p)
    return out

cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p' | head -1"], capture_output=True, text=True).stdout.strip()
cores = os.cpu_count()
print(f"Machine: {cpu}, {cores} vCPUs, Linux {platform.release()}, rustc {subprocess.run(['rustc','--version'],capture_output=True,text=True).stdout.split()[1]}")
print()
nat = bench_dirs("nat")
base = nat.get("baseline")
print("| bench (batches of 64 frames) | ns per packet | 95% CI | ratio to baseline |")
print("|---|---|---|---|")
order = ["baseline", "established/1k", "established/1k+dns", "established/1M", "reply/1k", "new_flow", "dns/answer"]
for name in order + sorted(set(nat) - set(order)):
    if name not in nat:
        continue
    mean, ci = nat[name]
    ns = mean / 64
    ratio = f"{ns / (base[0] / 64):.1f}x" if base else "n/a"
    print(f"| {name} | {ns:.2f} | {ci['lower_bound']/64:.2f}-{ci['upper_bound']/64:.2f} | {ratio} |")
mg = {}
for group in ("maglev", "maglev_build", "maglev_pick"):
    mg.update({f"{group}/{k}": v for k, v in bench_dirs(group).items()})
if mg:
    print()
    print("| Maglev bench | mean |")
    print("|---|---|")
    for name, (mean, _) in sorted(mg.items()):
        unit = f"{mean/1e6:.3f} ms" if mean > 1e5 else f"{mean:.1f} ns"
        print(f"| {name} | {unit} |")
PY
