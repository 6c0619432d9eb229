"""fastrnn's "cuda" backend against cuDNN (torch.nn.LSTM/GRU on the GPU): now ``fastrnn bench --device cuda``.

    python benchmarks/compare_cuda.py [fastrnn bench flags]

runs ``fastrnn bench --device cuda`` on the grid of issue #6 (T = 1024, B in 1, 8, 64, 256 and
FlashRNN's B = 16, H in 128 ... 1024, 5 rounds, against torch); later flags override these. Float32 with
TF32 off on both sides, CuPy arrays for fastrnn and torch CUDA tensors for cuDNN, a device
synchronise after every call; see ``fastrnn bench --help`` for the method and the outputs.
"""
import sys

from fastrnn.bench.cli import main

GRID = ["--device", "cuda", "--against", "torch", "--seq-lens", "1024", "--batch", "1,8,16,64,256",
        "--hidden", "128,256,512,1024", "--rounds", "5"]

if __name__ == "__main__":
    sys.exit(main([*GRID, *sys.argv[1:]], prog="compare_cuda.py"))
