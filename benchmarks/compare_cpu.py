"""fastrnn against PyTorch, ONNX Runtime and the NumPy reference on the CPU: now ``fastrnn bench``.

    python benchmarks/compare_cpu.py [fastrnn bench flags]      # = fastrnn bench --device cpu [flags]

Kept so that older commands still work; the method, the flags and the outputs are those of
``fastrnn bench --help`` (fastrnn/bench/).
"""
import sys

from fastrnn.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(["--device", "cpu", *sys.argv[1:]], prog="compare_cpu.py"))
