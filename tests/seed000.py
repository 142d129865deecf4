"""Seed 000's network, as the blog post writes it: MobileNet v1's first seven blocks as
attributes ``conv1`` … ``conv7``, returning every block's output (x1 … x7). Shared by the
tests that load the MobileNet v1 checkpoint into it."""

from __future__ import annotations

import torch.nn as nn


def conv_bn(inp: int, out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True))


def conv_dw(inp: int, out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                         nn.ReLU(inplace=True), nn.Conv2d(inp, out, 1, 1, 0, bias=False), nn.BatchNorm2d(out),
                         nn.ReLU(inplace=True))


class SeedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn(3, 32, 2)
        self.conv2 = conv_dw(32, 64, 1)
        self.conv3 = conv_dw(64, 128, 2)
        self.conv4 = conv_dw(128, 128, 1)
        self.conv5 = conv_dw(128, 256, 2)
        self.conv6 = conv_dw(256, 256, 1)
        self.conv7 = conv_dw(256, 512, 2)

    def forward(self, x):
        outs = []
        for i in range(1, 8):
            x = getattr(self, f"conv{i}")(x)
            outs.append(x)
        return tuple(outs)
