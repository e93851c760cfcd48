#!/usr/bin/env bash
# Runs the rows of the papers' ablations (results/camvid/directions.json) one after another, each
# resumable: a row already finished is skipped, one interrupted resumes from its newest checkpoint.
# Run folders live outside the work tree (RUNS, default ~/sceneparse-runs/directions); what is
# committed (eval JSON, log.csv, config) is copied to results/camvid/directions/<row>_s<seed>_*.
#
# Usage: bash scripts/directions_runs.sh GROUP [GROUP ...]
#   (for a queue that outlives edits of the checkout: cp scripts/directions_runs.sh ~/q.sh;
#    REPO=$PWD nohup bash ~/q.sh GROUP ... &)
#   GROUP: dlv3_t5 (DeepLabv3 Table 5: image pooling on/off, eval OS16 / OS8 / MS+flip),
#          dlv3_rates (extra row: ASPP rates 4-8-12, the paper's 6-12-18 scaled from its 33x33 features to
#              CamVid's 23x30 at OS16, with image pooling, 30 epochs)
#          psp_t1 (PSPNet Table 1: dilated FCN vs PSPNet, 60 epochs, eval OS16 / MS+flip),
#          fcn_front (psp_t1's FCN row alone: the front of refine_t2)
#          psp_t2 (PSPNet Table 2: auxiliary weight 0 vs 0.4, 30 epochs; val and the training split)
#          sf (Specialize and Fuse Tables 6-8 + context: single / final with context, final / simple_fix /
#              naive without, 20 epochs; the finest level alone through `sceneparse analyze`)
#          sf_rtau (check row: final without context, its true positives at unity probability >= 0.5 in
#              training, model.head.relabel_tau=0.5; the fuse step keeps tau 0.9)
#          refine_t2 (GRN/LRN Table 2 on the psp_t1 FCN front of the same seed: GRN 10 + 10 epochs at
#              1e-3 / 1e-4 with its auxiliary loss on every unfolded iteration, LRN 20 epochs at 1e-4,
#              parallel fusion (the GRN_ROW run and the LRN row averaged), the front + dense CRF, GRN + LRN,
#              context module; needs psp_t1 first)
#   SF_ROWS (default "single final final_noctx simple_fix naive"): the sf group's rows to run;
#   SEEDS="0 1" (default) picks the seeds; IP=true: dlv3_t5's image-pooling rows only; SUFFIX (e.g. _rerun) repeats rows under other names; EPOCHS_T5 / EPOCHS_T2 / EPOCHS_SF override the budgets;
#   FRONT_SUFFIX (default SUFFIX): the suffix of the FCN front the refine_t2 rows start from;
#   AUX_GRN (default 0.4) the GRN's auxiliary weight (another value trains only the GRN row, named
#   grn_aux<W>_on_fcn), GRN_LR (default 0.001, the paper's; another value: a row grn[_aux<W>]_lr<LR>_on_fcn,
#   the GRN row only), GRN_ROW (default grn_on_fcn) the GRN run the GRN + LRN row starts from, LRN_LR (default
#   0.0001, the paper's; another value: rows lrn_lr<LR>_on_fcn and grn_lrn_lr<LR>_on_fcn), GRN_STAGE=skip (refine_t2
#   without its GRN row: the rows after it, from the GRN_ROW run), LRN_BIAS (default 4) the LRN's centre bias,
#   LRN_CHANNELS (default 1/8 of Table 1's width: Table 1's own, 256-512 channels at full resolution, is
#   about 2.5 TFLOPs per 360x480 image, days per run on a 2-core CPU: GPU work).
set -euo pipefail
cd "${REPO:-$(dirname "$0")/..}"  # REPO: the checkout, when this runs from a copy (a running bash reads its file as it goes)
RUNS=${RUNS:-$HOME/sceneparse-runs/directions}
OUT=results/camvid/directions
SEEDS=${SEEDS:-"0 1"}
SUFFIX=${SUFFIX:-}  # appended to every row name: a repeat of rows beside the committed ones (e.g. _rerun)
MS="--scales 0.5 0.75 1.0 1.25 1.5 1.75 --flip"
# the dense CRF's kernel weights, from a grid on the last 30 training images (python scripts/crf_grid.py FRONT OUT 30)
CRF="--crf --crf-param bilateral_compat=3.0 --crf-param bilateral_sxy=30.0 --crf-param bilateral_srgb=5.0"
SP=${SCENEPARSE:-.venv/bin/sceneparse}
PY=${PYTHON:-$(dirname "$SP")/python}
mkdir -p "$RUNS" "$OUT"

# row NAME SEED CONFIG [key=value ...]: train (resumable), then copy log and config
row() {
  local name=$1$SUFFIX seed=$2 config=$3; shift 3
  local dir=$RUNS/${name}_s$seed
  if [ ! -f "$dir/final.pt" ]; then
    "$SP" train "$config" train.seed=$seed train.eval_interval=100000 "$@" \
      --work-dir "$dir" --no-progress --resume auto >> "$RUNS/${name}_s$seed.out" 2>&1
  fi
  cp "$dir/log.csv" "$OUT/${name}_s${seed}_log.csv"
  cp "$dir/config.yaml" "$OUT/${name}_s${seed}_config.yaml" 2>/dev/null || true
}

# ev NAME SEED TAG [evaluate flags ...]: evaluate final.pt on val once, copy the JSON
ev() {
  local name=$1$SUFFIX seed=$2 tag=$3; shift 3
  local dir=$RUNS/${name}_s$seed
  [ -f "$dir/eval_$tag.json" ] || "$SP" evaluate --checkpoint "$dir/final.pt" "$@" \
      --out "$dir/eval_$tag.json" --no-progress >> "$RUNS/${name}_s$seed.out" 2>&1
  cp "$dir/eval_$tag.json" "$OUT/${name}_s${seed}_eval_$tag.json"
}

for group in "$@"; do
  case $group in
    dlv3_t5)
      E=${EPOCHS_T5:-30}
      for seed in $SEEDS; do
        for ip in ${IP:-true false}; do
          n=dlv3_ip_${ip}_e$E
          row $n $seed configs/camvid/deeplabv3_effl0.yaml train.epochs=$E model.head.image_pooling=$ip
          ev $n $seed os16
          if [ $ip = true ]; then ev $n $seed os8 --output-stride 8; ev $n $seed os16_msflip $MS; fi
        done
      done ;;
    dlv3_rates)
      E=${EPOCHS_T5:-30}
      for seed in $SEEDS; do
        n=dlv3_ip_true_r4_8_12_e$E
        row $n $seed configs/camvid/deeplabv3_effl0.yaml train.epochs=$E model.head.image_pooling=true \
            "model.head.aspp_rates=[4,8,12]"
        ev $n $seed os16
      done ;;
    psp_t1)
      for seed in $SEEDS; do
        row fcn_e60 $seed configs/camvid/fcn_effl0.yaml; ev fcn_e60 $seed os16
        row psp_e60 $seed configs/camvid/pspnet_effl0.yaml; ev psp_e60 $seed os16
        ev psp_e60 $seed os16_msflip $MS
      done ;;
    psp_t2)
      E=${EPOCHS_T2:-30}
      for seed in $SEEDS; do
        for aux in 0.4 0; do
          n=psp_aux${aux}_e$E
          row $n $seed configs/camvid/pspnet_effl0.yaml train.epochs=$E train.aux_weight=$aux
          ev $n $seed os16
          ev $n $seed train --split train  # the check: the fit of the training split with and without it
        done
      done ;;
    sf)
      E=${EPOCHS_SF:-20}
      for seed in $SEEDS; do
        for spec in "single:true:[4]:final" "final:true:[32,16,8,4]:final" "final_noctx:false:[32,16,8,4]:final" \
                    "simple_fix:false:[32,16,8,4]:simple_fix" "naive:false:[32,16,8,4]:naive"; do
          IFS=: read tag ctx strides policy <<< "$spec"
          case " ${SF_ROWS:-single final final_noctx simple_fix naive} " in *" $tag "*) ;; *) continue ;; esac
          n=pyr_${tag}_e$E
          row $n $seed configs/camvid/pyramid_effl0.yaml train.epochs=$E model.head.context=$ctx \
              "model.head.strides=$strides" model.head.relabel_policy=$policy
          cp "$RUNS/${n}${SUFFIX}_s$seed/diagnostics.jsonl" "$OUT/${n}${SUFFIX}_s${seed}_diagnostics.jsonl" 2>/dev/null || true
          ev $n $seed os16
          if [ $tag = final ]; then  # Table 8: the finest level alone, from the same weights
            d=$RUNS/${n}${SUFFIX}_s$seed
            [ -f $d/analyze.json ] || "$SP" analyze --checkpoint $d/final.pt --out $d/analyze.json --no-progress \
                >> "$RUNS/${n}${SUFFIX}_s$seed.out" 2>&1
            python3 -c "import json,sys; a=json.load(open(sys.argv[1])); json.dump({'mIoU': a['level_mIoU'][-1], \
'source': 'sceneparse analyze: level_mIoU of stride 4'}, open(sys.argv[2], 'w'))" $d/analyze.json \
                "$OUT/pyr_final_finest_e${E}${SUFFIX}_s${seed}_eval_os16.json"
          fi
        done
      done ;;
    sf_rtau)
      E=${EPOCHS_SF:-20}
      for seed in $SEEDS; do
        n=pyr_final_noctx_rtau0.5_e$E
        row $n $seed configs/camvid/pyramid_effl0.yaml train.epochs=$E model.head.context=false \
            "model.head.strides=[32,16,8,4]" model.head.relabel_policy=final model.head.relabel_tau=0.5
        cp "$RUNS/${n}${SUFFIX}_s$seed/diagnostics.jsonl" "$OUT/${n}${SUFFIX}_s${seed}_diagnostics.jsonl" 2>/dev/null || true
        ev $n $seed os16
      done ;;
    fcn_front)  # the FCN row of psp_t1 alone (the refinement rows' front)
      for seed in $SEEDS; do
        row fcn_e60 $seed configs/camvid/fcn_effl0.yaml; ev fcn_e60 $seed os16
      done ;;
    refine_t2)
      LRN_CHANNELS=${LRN_CHANNELS:-[32,32,32,64,64,64]}
      for seed in $SEEDS; do
        front=$RUNS/fcn_e60${FRONT_SUFFIX-$SUFFIX}_s$seed/final.pt
        [ -f "$front" ] || { echo "refine_t2 needs the FCN front $front (run psp_t1 first)" >&2; exit 2; }
        aux=${AUX_GRN:-0.4} glr=${GRN_LR:-0.001}
        grn=grn; [ "$aux" = 0.4 ] || grn=${grn}_aux$aux; [ "$glr" = 0.001 ] || grn=${grn}_lr$glr
        grn=${grn}_on_fcn  # a check's own row name
        if [ "${GRN_STAGE:-train}" = train ]; then  # GRN_STAGE=skip: only the rows after the GRN (LRN, GRN + LRN, context)
          row $grn $seed configs/camvid/refine/grn_stage.yaml model.head.front=$front train.epochs=20 \
              train.lr=$glr train.lr_policy=step "train.lr_step_epochs=[10]" train.aux_weight=$aux \
              model.head.supervise_steps=all
          ev $grn $seed os16
          [ "$grn" = grn_on_fcn ] || continue  # the auxiliary-weight check trains the GRN row only
        fi
        llr=${LRN_LR:-0.0001} lrn=lrn grn_lrn=grn_lrn
        [ "$llr" = 0.0001 ] || { lrn=lrn_lr$llr; grn_lrn=grn_lrn_lr$llr; }
        row ${lrn}_on_fcn $seed configs/camvid/refine/lrn_stage.yaml model.head.front=$front model.head.grn=false \
            train.lr=$llr model.head.lrn_center_bias=${LRN_BIAS:-4} "model.head.lrn_channels=$LRN_CHANNELS"
        ev ${lrn}_on_fcn $seed os16
        # the parallel pipeline (Sec. 3.3): the GRN_ROW run and the LRN row, trained apart on one front, averaged;
        # named after both (another GRN_ROW is another row, never a stale merge)
        gr=${GRN_ROW:-grn_on_fcn}
        par=parallel_${gr%_on_fcn}_${lrn}
        pdir=$RUNS/${par}_on_fcn${SUFFIX}_s$seed
        if [ ! -f "$pdir/final.pt" ]; then
          mkdir -p "$pdir"
          "$PY" scripts/merge_parallel.py "$RUNS/${gr}${SUFFIX}_s$seed/final.pt" \
              "$RUNS/${lrn}_on_fcn${SUFFIX}_s$seed/final.pt" "$pdir/final.pt" >> "$pdir.out" 2>&1
        fi
        ev ${par}_on_fcn $seed os16
        SUFFIX=${FRONT_SUFFIX-$SUFFIX} ev fcn_e60 $seed os16_crf $CRF  # +dense CRF: the front itself
        row ${grn_lrn}_on_fcn $seed configs/camvid/refine/lrn_stage.yaml model.head.front=$front \
            model.init_weights=$RUNS/${GRN_ROW:-grn_on_fcn}${SUFFIX}_s$seed/final.pt train.lr=$llr \
            model.head.lrn_center_bias=${LRN_BIAS:-4} "model.head.lrn_channels=$LRN_CHANNELS"
        ev ${grn_lrn}_on_fcn $seed os16
        row context_on_fcn $seed configs/camvid/refine/context_stage.yaml model.head.front=$front
        ev context_on_fcn $seed os16
      done ;;
    *) echo "unknown group '$group' (dlv3_t5, dlv3_rates, psp_t1, fcn_front, psp_t2, sf, sf_rtau, refine_t2)" >&2; exit 2 ;;
  esac
done
echo "done: $*"
