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
