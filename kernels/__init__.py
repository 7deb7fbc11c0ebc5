"""Ternary linear and conv2d kernels, registered as torch custom ops ``tritondsl::*``.

The package is the bottom floor of the runtime: it owns the 2-bit packing format
(``packing.py``) that ``backend``'s layers store and the kernels decode, and imports
nothing else of tritondsl.

``ternary_linear`` and ``ternary_conv2d`` run the Triton kernels (picked in
``dispatch``) for CUDA tensors, and for CPU tensors when ``TRITON_INTERPRET=1``; other
CPU tensors take the plain-torch reference (unpack, then F.linear / F.conv2d). Both have
fake implementations, so ``torch.compile`` traces them as single graph nodes.

Importing this package registers the ops and nothing more: the kernel modules (and with
them triton) load on the first call that runs a kernel. The CPU fallback never loads
them, though torch itself imports triton (through torch._dynamo, if installed) the
first time any custom op runs.
"""

from tritondsl.kernels.ops import ternary_conv2d, ternary_linear

__all__ = ["ternary_conv2d", "ternary_linear"]
