"""The tensor arithmetic behind the two rules that adapt pretrained tensors to build options.

``load(..., in_chans=N)`` and ``load(..., img_size=S)`` (``AdaptInputConv``, ``ResamplePosEmbed``
in ``rules``) change what a pretrained tensor holds, not only its name. The arithmetic is
timm's (``adapt_input_conv``, ``resample_abs_pos_embed``), rewritten here with torch alone
because the rules serve every family, and zooadapt's core does not import a family's library
(``.importlinter``: ``core-knows-no-family``); ``tests/test_tensor_ops.py`` compares both with
timm's over a sweep of shapes. The functions run only when tensors exist, so torch is imported
inside them: importing the plugin contract stays torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["adapt_input_conv", "resample_abs_pos_embed"]


def adapt_input_conv(in_chans: int, weight: Any, base_chans: int | None = None) -> Any:
    """A ``[out, I, kh, kw]`` input convolution for ``in_chans`` input channels.

    One channel sums the pretrained ones (per group of ``base_chans`` for a space-to-depth stem,
    where ``I`` is a multiple of it); more repeat them, cut to ``in_chans`` and scaled by
    ``base_chans / in_chans`` so a grey image repeated over the channels gives the same output.
    ``base_chans`` defaults to ``I``. Computed in float32, returned in the weight's dtype.
    """
    from .errors import InvalidArgumentError

    base = weight.shape[1] if base_chans is None else base_chans
    if in_chans < 1 or base < 1:
        raise InvalidArgumentError(f"in_chans={in_chans}: input and pretrained channel counts must be positive")
    if weight.ndim != 4:
        raise InvalidArgumentError(f"in_chans={in_chans}: only a Conv2d weight (4 dimensions) can be adapted, "
                                   f"not one of shape {tuple(weight.shape)}")
    out, held, kh, kw = weight.shape
    if in_chans == base:
        return weight
    dtype = weight.dtype
    adapted = weight.float()  # half precision sums badly on CPU
    if in_chans == 1:
        if held > base:
            if held % base:
                raise InvalidArgumentError(f"in_chans=1: {held} pretrained input channels are no multiple of {base}")
            adapted = adapted.reshape(out, held // base, base, kh, kw).sum(dim=2)
        else:
            adapted = adapted.sum(dim=1, keepdim=True)
    else:
        if held != base:
            raise InvalidArgumentError(
                f"in_chans={in_chans}: a convolution with {held} input channels made from {base} (a space-to-depth "
                "stem) can only be adapted to 1 channel; load it with in_chans=1 or 3")
        adapted = adapted.repeat(1, math.ceil(in_chans / base), 1, 1)[:, :in_chans] * (base / float(in_chans))
    return adapted.to(dtype)


def resample_abs_pos_embed(pos_embed: Any, grid: Sequence[int], num_prefix_tokens: int = 1) -> Any:
    """An absolute position embedding ``[1, prefix + h*w, dim]`` resampled to a ``grid`` (rows, columns).

    The prefix tokens (class, distillation, registers) are kept as they are; the square ``h x h``
    grid behind them is interpolated bicubically with antialiasing, in float32, and returned in
    the embedding's dtype. An embedding already of that size comes back unchanged.
    """
    import torch
    import torch.nn.functional as F

    rows, cols = int(grid[0]), int(grid[1])
    tokens = pos_embed.shape[1]
    if tokens == rows * cols + num_prefix_tokens and rows == cols:
        return pos_embed
    side = int(math.sqrt(tokens - num_prefix_tokens))
    prefix, body = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim, dtype = body.shape[-1], body.dtype
    square = body.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=[rows, cols], mode="bicubic", align_corners=None, antialias=True)
    body = resized.permute(0, 2, 3, 1).reshape(1, -1, dim).to(dtype)
    return torch.cat([prefix, body], dim=1) if num_prefix_tokens else body
