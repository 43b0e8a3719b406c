"""Sliding-window arithmetic shared by the convolution and pooling kinds."""

from __future__ import annotations

from ..registry import InferContext, Shape


def window(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def windows(
    ctx: InferContext,
    kpath: str,
    sizes: Shape,
    dims: tuple[str, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
) -> Shape | None:
    """Output sizes of a window sliding over ``sizes``; reports a kernel larger than its input."""
    out: list[int] = []
    ok = True
    for size, name, k, s, p in zip(sizes, dims, kernel, stride, padding, strict=True):
        padded = size + 2 * p
        if k > padded:
            with_padding = f" (padding {p} included)" if p else ""
            ctx.issue(f"{kpath}.kernel", f"kernel {k} larger than input {name} {padded}{with_padding}")
            ok = False
        else:
            out.append(window(size, k, s, p))
    return tuple(out) if ok else None


def spatial_dims(rank: int) -> tuple[str, ...]:
    """Names of the spatial dims after the channels: ``length`` or ``height, width``."""
    return ("length",) if rank == 2 else ("height", "width")


def layout(rank: int) -> str:
    return "(C, L)" if rank == 2 else "(C, H, W)"
