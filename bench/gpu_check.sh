#!/usr/bin/env bash
# Everything the GPU machine has to check, in one call (a lent GPU's time is short):
#   bash bench/gpu_check.sh OUT_DIR [DATA_DIR] [STEPS]
# 1. the CUDA tests, 2. compute-sanitizer memcheck on the kernel tests,
# 3. the training-step and kernel benchmarks against PyTorch, 4. a per-primitive
# profile, 5. Fashion-MNIST quality runs on the GPU (when DATA_DIR holds the IDX files),
# 3b. (part "tc", issue 22 section 3) the tensor-core kernels: their cuda tests, then the TF32
#    and float16 steps beside PyTorch's allow_tf32 / autocast and the --micro kernel targets.
# 6. (part "host", CPU only) bench/host_overhead.py on an idle machine: the eager step's host cost.
# 7. (part "nccl", issue 21) DataParallel on NCCL with one rank (the lent machine has one GPU):
#      mpiexec -n 1 python3 -m mpi4py tests/distributed/worker.py nccl OUT/nccl
#    NCCL collectives on device arrays, training equal to one process within 1e-5, an overlapped
#    reduction (side stream + events) recorded into a CUDA graph and replayed, and DataParallel +
#    SyncBN with cuda_graph=True recorded. Needs mpi4py and mpich (pip install 'deepgpu[distributed]';
#    the GPU machine has no network: carry the wheels if they are not installed there).
# 7b. (part "resnet50", issue 21) ResNet50's single-GPU training step (batch 64 and 128, 224x224, recorded)
#      timed, and the ring all-reduce model's 8-GPU / multi-node efficiency printed with it in place of the
#      assumed step times: python3 bench/distributed_scaling.py --measure-step --backend cuda --batches 64 128
# 8. (part "mixed", issue 20) bench/mixed_precision.py --backend cuda: a small convnet's step in float32
#    and under mixed_float16 (LossScaleOptimizer), beside PyTorch float32 and autocast float16 + GradScaler.
# 9. (part "input", issue 19) the data-staging cuda tests (tests/test_data_device.py: pinned buffers,
#    second stream, fit on sources and cache("device") on the GPU), then bench/gpu_input.py: one epoch of
#    the seed convnet fed from arrays, device Tensors, a Dataset (staged uploads) and cache("device"),
#    eager and with cuda_graph=True; ms/step and the share of the epoch spent waiting for data.
# 9. (part "seq", issues 16 and 18) bench/seq_gpu.py: kernels/attention.cu beside PyTorch's
#    scaled_dot_product_attention, layernorm.cu beside F.layer_norm, rnn.cu's fused LSTM / GRU cells
#    beside PyTorch's fused cells (forward, forward + backward), then the LSTM / GRU / Transformer
#    training steps recorded and eager beside cuDNN; then compute-sanitizer memcheck on those kernels' tests.
# Each part writes its log under OUT_DIR and prints its last lines; one failing part
# does not stop the others. All five take longer than one 600 s device call: choose
# some with PARTS, e.g. PARTS="tests step profile" then PARTS="fmnist memcheck nccl".
set -u
out=${1:?usage: [PARTS="tests step tc profile fmnist memcheck"] gpu_check.sh OUT_DIR [DATA_DIR] [STEPS]}
data=${2:-}
steps=${3:-30}
parts=" ${PARTS:-tests step tc profile fmnist memcheck} "
want() { [[ "$parts" == *" $1 "* ]]; }
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-build-isolation --no-deps -e . >"$out/pip.log" 2>&1 || tail -5 "$out/pip.log"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv >"$out/gpu.txt" 2>&1

if want tests; then
echo "== cuda tests"
timeout ${TESTS_S:-180} python3 -m pytest -q -m cuda tests --durations=25 -o faulthandler_timeout=45 \
    >"$out/tests_cuda.log" 2>&1
grep -E "passed|failed|error" "$out/tests_cuda.log" | tail -3
grep -E "^FAILED|^ERROR|Timeout|File \"/" "$out/tests_cuda.log" | head -30
fi

if want step; then
echo "== training step (seed convnet) and kernel targets"
timeout 200 python3 bench/gpu_step.py --micro --batches 128 512 --steps "$steps" \
    --only deepgpu-custom deepgpu-fitstep deepgpu-graph torch-eager torch-graph torch-eager-fp32 torch-graph-fp32 \
    --out "$out/gpu_step.json" >"$out/gpu_step.log" 2>&1
grep -E "^batch" "$out/gpu_step.log"
python3 - "$out/gpu_step.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])).get("micro", {})
for k, v in m.items():
    print(k, {a: (round(b, 4) if isinstance(b, float) else b) for a, b in v.items()} if isinstance(v, dict) else v)
EOF
fi

if want tc; then
echo "== tensor cores (TF32, float16): tests, then steps beside PyTorch TF32 / autocast"
timeout ${TC_TESTS_S:-120} python3 -m pytest -q -m cuda tests/test_kernels_tensorcore.py -o faulthandler_timeout=60 \
    >"$out/tests_tensorcore.log" 2>&1
grep -E "passed|failed|error" "$out/tests_tensorcore.log" | tail -2
grep -E "^FAILED|^ERROR|KernelCompileError|error:" "$out/tests_tensorcore.log" | head -15
timeout ${TC_S:-300} python3 bench/gpu_step.py --micro --batches 128 512 --steps "$steps" \
    --only deepgpu-custom deepgpu-graph deepgpu-tf32 deepgpu-graph-tf32 torch-eager-tf32 torch-graph-tf32 \
           deepgpu-fp16 deepgpu-graph-fp16 torch-eager-amp torch-graph-amp torch-graph-fp32 \
    --out "$out/gpu_step_tc.json" >"$out/gpu_step_tc.log" 2>&1
grep -E "^batch" "$out/gpu_step_tc.log"
python3 - "$out/gpu_step_tc.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])).get("micro", {})
for k in ("matmul_4096_tensor_cores", "conv2_seed_fwd_bwd", "error"):
    if k in m:
        print(k, {a: (round(b, 4) if isinstance(b, float) else b) for a, b in m[k].items()} if isinstance(m[k], dict) else m[k])
EOF
fi

if want profile; then
echo "== profile"
timeout 60 python3 bench/gpu_profile.py --batch 128 --json "$out/profile.json" >"$out/profile.log" 2>&1
cat "$out/profile.log" | head -40
fi

if want fmnist && [ -n "$data" ]; then
    echo "== Fashion-MNIST on the GPU"
    for m in cnn dnn; do
        timeout 90 python3 bench/epoch_parity.py --backend cuda --model $m --epochs 3 --cuda-graph \
            --data-dir "$data" --out "$out/fmnist_${m}3.json" 2>&1 | tail -1
    done
    timeout 60 python3 bench/epoch_parity.py --backend cuda --model cnn --epochs 1 --data-dir "$data" \
        --out "$out/fmnist_cnn1.json" 2>&1 | tail -1
    timeout 90 deepgpu train --dataset fashion-mnist --data-dir "$data" --model cnn --epochs 3 --backend cuda \
        --verbose 2 --out /tmp/dg-train >"$out/train_cnn.log" 2>&1
    grep -E "Test loss" "$out/train_cnn.log"
fi

if want host; then
echo "== host cost of the eager step (CPU only, no-op launches; bench/host_overhead.py)"
timeout ${HOST_S:-150} env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/host_overhead.py \
    --steps 200 --rounds 5 --profile 15 >"$out/host_overhead.log" 2>&1
grep -E "^deepgpu|^PyTorch|^==|CuPy routine" "$out/host_overhead.log" | cut -c1-150
fi

if want resnet50; then
echo "== ResNet50 step on the GPU and the data-parallel cost model with it (issue 21)"
timeout ${RESNET_S:-300} python3 bench/distributed_scaling.py --measure-step --backend cuda --batches 64 128 \
    --steps 10 >"$out/resnet50_step.log" 2>&1
echo "exit $?"; grep -E "^ResNet50|ResNet50, batch|Error" "$out/resnet50_step.log" | head -8
fi

if want nccl; then
echo "== NCCL, one rank (issue 21)"
timeout ${NCCL_S:-240} mpiexec -n 1 python3 -m mpi4py tests/distributed/worker.py nccl "$out/nccl" \
    >"$out/nccl.log" 2>&1
echo "exit $?"; tail -5 "$out/nccl.log"
fi

if want mixed; then
echo "== mixed precision step time (issue 20)"
timeout ${MIXED_S:-150} python3 bench/mixed_precision.py --backend cuda --rounds 5 --batch 256 \
    >"$out/mixed_precision.log" 2>&1
echo "exit $?"; tail -8 "$out/mixed_precision.log"
fi

if want input; then
echo "== data onto the device (issue 19)"
timeout ${INPUT_TESTS_S:-120} python3 -m pytest -q -m cuda tests/test_data_device.py >"$out/tests_data_device.log" 2>&1
grep -E "passed|failed|error" "$out/tests_data_device.log" | tail -2
grep -E "^FAILED|^ERROR" "$out/tests_data_device.log" | head -10
for g in "" --graph; do
    timeout ${INPUT_S:-150} python3 bench/gpu_input.py $g >"$out/gpu_input${g}.log" 2>&1
    echo "exit $? (gpu_input.py $g)"; tail -6 "$out/gpu_input${g}.log"
done
fi

if want seq; then
echo "== sequence and attention kernels beside PyTorch, then their steps (issues 16, 18)"
timeout ${SEQ_S:-300} python3 bench/seq_gpu.py --out "$out/seq_gpu.json" >"$out/seq_gpu.log" 2>&1
echo "exit $?"; tail -30 "$out/seq_gpu.log"
timeout ${SEQ_MEMCHECK_S:-240} compute-sanitizer --tool memcheck --print-limit 20 python3 -m pytest -q -m cuda \
    tests/test_kernels_attention.py tests/test_kernels_rnn.py tests/test_kernels_layernorm.py >"$out/memcheck_seq.log" 2>&1
grep -E "ERROR SUMMARY|passed|failed" "$out/memcheck_seq.log" | tail -3
fi

if want memcheck; then
echo "== memcheck (kernel tests)"
timeout ${MEMCHECK_S:-300} compute-sanitizer --tool memcheck --print-limit 20 \
    python3 -m pytest -q -m cuda tests/test_kernels_cuda.py tests/test_kernels_image.py \
    tests/test_kernels_conv_grad_fold.py -k "not convnet_training" \
    >"$out/memcheck.log" 2>&1
grep -E "ERROR SUMMARY|passed|failed" "$out/memcheck.log" | tail -3
fi
