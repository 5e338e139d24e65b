"""Named problem shapes shared by the kernel tests and `bench/kernels.py`."""

# (tokens, vocab) for cross-entropy / distillation over given logits.
TEST_LOGITS = (37, 1000)  # neither a multiple of its test block (16, 256)
TEST_BLOCK = (16, 256)
BENCH_LOGITS = (2048, 131072)  # value and gradient against optax
BENCH_LOGITS_QUICK = (512, 32768)

# (tokens, d, vocab) for the fused linear losses.
TEST_LINEAR = (37, 48, 1000)
MEMORY_LINEAR = (8192, 1024, 131072)  # temporary memory, float32, compiled only
BENCH_LINEAR_CPU = (2048, 512, 32768)  # time, sized for a small CPU
BENCH_LINEAR_CPU_QUICK = (512, 256, 8192)
GEMMA2_2B_HEAD = (8192, 2304, 256000)  # bfloat16, GPU
LLAMA3_8B_HEAD = (8192, 4096, 128256)  # bfloat16, GPU
