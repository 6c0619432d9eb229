"""pytest-benchmark: one training step (embedding -> 2-layer LSTM -> linear, Adam) with torch.nn.LSTM and with
fastrnn.torch on each CPU backend; the model and step of benchmarks/torch_training_step.py.

    pytest benchmarks/test_bench_torch.py --benchmark-autosave    # B=32, T=128, H=512
    pytest benchmarks --benchmark-disable -q                      # smoke (CI): a tiny model, each step once
"""
import pytest

torch = pytest.importorskip("torch")
torch_training_step = pytest.importorskip("torch_training_step")

FULL = dict(vocabulary=1000, width=256, hidden=512, B=32, T=128)
SMOKE = dict(vocabulary=20, width=4, hidden=8, B=2, T=5)
IMPLS = ["torch"] + [f"fastrnn[{b}]" for b in ("numba", "cpp")
                     if b in torch_training_step.fastrnn.available_backends()]


@pytest.mark.parametrize("impl", IMPLS)
def test_training_step(benchmark, request, impl):
    size = SMOKE if request.config.getoption("benchmark_disable", False) else FULL
    backends = [impl[len("fastrnn["):-1]] if impl != "torch" else []
    model, optimizer = torch_training_step.competitors(size["vocabulary"], size["width"], size["hidden"],
                                                      backends)[impl]
    tokens = next(torch_training_step.batches(size["vocabulary"], size["B"], size["T"]))
    first = torch_training_step.train_step(model, optimizer, tokens)     # compiles, sets up, outside the timing
    assert first == pytest.approx(torch.log(torch.tensor(float(size["vocabulary"]))).item(), rel=0.2)
    benchmark.group = "torch-training-step"
    benchmark(torch_training_step.train_step, model, optimizer, tokens)


torch_streaming_inference = pytest.importorskip("torch_streaming_inference")
STREAM_FULL = dict(cell="lstm", T=1, B=1, H=512, calls=20)
STREAM_SMOKE = dict(cell="gru", T=2, B=2, H=8, calls=2)
STREAM_IMPLS = ["torch"] + [f"fastrnn[{b}{p}]" for b in ("cpp", "numba") for p in ("", "+packed")
                            if b in torch_streaming_inference.fastrnn.available_backends()]


@pytest.mark.parametrize("impl", STREAM_IMPLS)
def test_streaming_inference(benchmark, request, impl):
    """A stream fed in chunks, eval and no_grad (benchmarks/torch_streaming_inference.py): torch.nn against
    fastrnn.torch packing per call and after pack()."""
    size = STREAM_SMOKE if request.config.getoption("benchmark_disable", False) else STREAM_FULL
    backends = [b for b in ("cpp", "numba") if impl.startswith(f"fastrnn[{b}")]
    models = torch_streaming_inference.competitors(size["cell"], size["H"], backends)
    chunks, state = torch_streaming_inference.inputs(size["cell"], size["T"], size["B"], size["H"], size["calls"])
    want = torch_streaming_inference.stream(models["torch"], chunks, state)
    got = torch_streaming_inference.stream(models[impl], chunks, state)     # packs, compiles: outside the timing
    assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())
    benchmark.group = f"torch-streaming-{size['cell']}"
    benchmark(torch_streaming_inference.stream, models[impl], chunks, state)
