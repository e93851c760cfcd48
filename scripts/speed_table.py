"""The speed tables of docs/deployment.md, regenerated from the benchmark JSON of scripts/bench_runtimes.sh.

Reads results/bench/runtimes/<cpu>/*.json (one folder per CPU model: numbers from different CPUs are never
mixed in a table), writes results/bench/runtimes/SPEED.md and, with --docs, replaces the block between
``<!-- speed:start -->`` and ``<!-- speed:end -->`` in docs/deployment.md.

    python scripts/speed_table.py [--docs]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ROOT / "results" / "bench" / "runtimes"
START, END = "<!-- speed:start -->", "<!-- speed:end -->"
MODEL_NAMES = {"camvid": "CamVid PSPNet-Lite0 OS16 (zoo)", "deeplabv3_r50": "DeepLabv3-R50 OS8",
               "pspnet_r50": "PSPNet-R50 OS8", "pspnet_effl0_os8": "PSPNet-Lite0 OS8"}


def _model_key(path: Path) -> str:
    return next((k for k in MODEL_NAMES if path.stem.startswith(k)), path.stem)


def cpu_tables(folder: Path) -> str:
    rows, int8_rows, engine_rows, e2e, meta = [], [], [], [], None
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        if "runtime" in r:
            meta = meta or r
            ips = r["images_per_s"]
            best = r["ours_best"]
            rows.append(f"| {MODEL_NAMES.get(_model_key(path), path.stem)} | {'x'.join(map(str, r['input'][2:]))} | "
                        f"{r['precision']} | {r.get('output', 'logits')} | {r['runtime']} | {ips[r['runtime']]:.2f} | {ips.get('ours_eager', 0):.2f} | "
                        f"{ips.get('ours_compile', float('nan')):.2f} | {ips.get('ours_aot', float('nan')):.2f} | "
                        f"**{r['ratio_ours_over_runtime']:.2f}x** | "
                        f"{100 * r['argmax_agreement_ours_vs_runtime']:.2f}% |")
            if "ratio_int8_over_ours_best" in r:
                int8_rows.append(f"| {MODEL_NAMES.get(_model_key(path), path.stem)} | {r['precision']} | "
                                 f"{r.get('output', 'logits')} | "
                                 f"{ips['ours_int8']:.2f} | {ips[best]:.2f} ({best}) | "
                                 f"**{r['ratio_int8_over_ours_best']:.2f}x** | {ips[r['runtime']]:.2f} |")
            if "ratio_engine_openvino_backend_over_runtime" in r:
                engine_rows.append(f"| {MODEL_NAMES.get(_model_key(path), path.stem)} | {r['precision']} | "
                                   f"{ips['engine_openvino_backend']:.2f} | {ips[r['runtime']]:.2f} | "
                                   f"**{r['ratio_engine_openvino_backend_over_runtime']:.2f}x** | "
                                   f"{100 * r['argmax_agreement_vs_fp32_torch']['engine_openvino_backend']:.2f}% |")
        elif "stages_s_median" in r:
            meta = meta or r
            st = r["stages_s_median"]
            prec = ("int8 (float layers bf16)" if r.get("bf16") else "int8") if r.get("int8") else (
                "bf16" if r.get("bf16") else "fp32")
            e2e.append(f"| {r['backend']}{' compiled' if r.get('compile') else ''} {prec} | "
                       f"{'x'.join(map(str, r['image']))} | " + " | ".join(f"{1000 * st[s]:.1f}" for s in st)
                       + f" | **{1000 * r['total_s_median']:.1f}** | {1000 * r['upsample_argmax_before_s_median']:.1f} |"
                       f" {'yes' if r['labels_equal'] else '%.2f%%' % (100 * r.get('labels_agreement', 0))} |")
    if meta is None:
        return ""
    out = [f"### {meta['cpu']} ({', '.join(meta.get('cpu_flags', [])) or 'no AMX / AVX-512 bf16'}), "
           f"{meta['threads']} threads, batch 1", "",
           "Same weights; the runtime runs the ONNX file of our `export` with its recommended CPU settings; "
           + ("nan: not measured in that run; " if any("| nan |" in r for r in rows) else "")
           + "alternating timed runs in one process, each timed call after an untimed one of the same path "
           "(median). Ratio = our best path's throughput / the runtime's. "
           "Output `logits`: full-resolution logits from every path; `labels`: the label map (runtime: "
           "upsampling + argmax in its graph; ours: low-resolution logits + fused upsample_argmax).", "",
           "| model | input | precision | output | runtime | runtime img/s | ours eager | ours torch.compile | "
           "ours AOTInductor | ours / runtime | argmax agreement |", "|---|---|---|---|---|---|---|---|---|---|---|",
           *rows]
    if int8_rows:
        out += ["", "int8 (`sceneparse quantize`: NNCF, 128 CamVid train images, run by OpenVINO) in the same rounds:", "",
                "| model | rounds' precision | output | int8 img/s | ours img/s | int8 / ours | OpenVINO img/s |",
                "|---|---|---|---|---|---|---|", *int8_rows]
    if engine_rows:
        out += ["", "Our engine with `--backend openvino` (what `predict --backend openvino` runs: OpenVINO's network "
                "to decode-head logits, then our native upsample + argmax) against OpenVINO's own labels graph, "
                "same rounds:", "",
                "| model | precision | our engine + OpenVINO img/s | OpenVINO labels graph img/s | ratio | "
                "labels = fp32 torch |", "|---|---|---|---|---|---|", *engine_rows]
    if e2e:
        out += ["", "`predict` end to end, one CamVid val image (`sceneparse benchmark --end-to-end`), ms:", "",
                "| path | image | decode | normalise | network | upsample + argmax | palette encode | write | total | "
                "upsample + softmax + argmax before | same labels as before |", "|---|---|---|---|---|---|---|---|---|---|---|", *e2e]
    repeats = repeat_rows(folder / "repeats")
    if repeats:
        out += ["", "The same command run again (files in `repeats/`, each a separate process; the table above holds "
                "the last run).", "",
                "| model | precision | output | runtime | ours / runtime, each run | median | range |",
                "|---|---|---|---|---|---|---|", *repeats]
    return "\n".join(out)


def repeat_rows(folder: Path) -> list[str]:
    """One row per repeated comparison: ``repeats/<row>_<run>.json`` files sharing ``<row>``, runs in name order."""
    groups: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        groups.setdefault(path.stem.rsplit("_", 1)[0], []).append(json.loads(path.read_text()))
    rows = []
    for stem, runs in groups.items():
        ratios = [r["ratio_ours_over_runtime"] for r in runs]
        mid = sorted(ratios)[len(ratios) // 2] if len(ratios) % 2 else sum(sorted(ratios)[len(ratios) // 2 - 1:][:2]) / 2
        r = runs[0]
        kinds = {(x["precision"], x.get("output", "logits"), x["runtime"]) for x in runs}
        if len(kinds) > 1:
            raise ValueError(f"{folder}/{stem}_*.json mix precisions / outputs / runtimes: {sorted(kinds)}")
        rows.append(f"| {MODEL_NAMES.get(_model_key(Path(stem)), stem)} | {r['precision']} | {r.get('output', 'logits')} | "
                    f"{r['runtime']} | {', '.join(f'{x:.2f}x' for x in ratios)} | **{mid:.2f}x** | "
                    f"{min(ratios):.2f}-{max(ratios):.2f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", action="store_true", help="also replace the speed block in docs/deployment.md")
    args = p.parse_args()
    text = "\n\n".join(t for t in (cpu_tables(d) for d in sorted(RUNTIMES.iterdir()) if d.is_dir()) if t)
    (RUNTIMES / "SPEED.md").write_text(text + "\n")
    print(text)
    if args.docs:
        page = ROOT / "docs" / "deployment.md"
        doc = page.read_text()
        if START not in doc or END not in doc:
            raise SystemExit(f"{page} has no {START} ... {END} block")
        head, rest = doc.split(START, 1)
        page.write_text(head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1])


if __name__ == "__main__":
    main()
