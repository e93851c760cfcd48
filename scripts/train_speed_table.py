"""Markdown table of `sceneparse benchmark --train` results (results/bench/train_step_*.json) for
docs/training_speed.md. Usage: python scripts/train_speed_table.py [JSON ...]"""
import glob
import json
import sys

files = sys.argv[1:] or sorted(glob.glob("results/bench/train_step_*.json"))
print("| config | CPU (threads) | variant | s/step | images/s | GFLOP/s | of fp32 peak | vs reference fp32 (own process) |")
print("|---|---|---|---|---|---|---|---|")
for path in files:
    r = json.load(open(path))
    base = r["variants"].get("reference fp32, own process", r["variants"].get("reference fp32"))
    for name, v in r["variants"].items():
        if "error" in v:
            print(f"| {r['config']} | {r['cpu']} ({r['threads']}) | {name} | failed: {v['error'][:120]} | | | | |")
            continue
        mark = " (trainer's choice)" if name == r["trainer_path"] else ""
        print(f"| {r['config']} b{r['batch']} OS{r['model']['output_stride']} | {r['cpu']} ({r['threads']}) | {name}{mark} | "
              f"{v['s_per_step']:.2f} | {v['images_per_s']:.2f} | {v['gflops_per_s']:.0f} | "
              f"{100 * v['fraction_of_fp32_peak']:.0f}% | {base['s_per_step'] / v['s_per_step']:.2f}x |")
    print(f"| | fp32 conv peak {r['peak_gflops']:.0f} GFLOP/s; forward {r['forward_gflops_per_image']:.2f} GFLOP/image, "
          "a step counted as 3x forward | | | | | | |")
