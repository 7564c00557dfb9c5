"""Exact tiled execution of a ResNet generator: any image size in bounded memory, equal to one pass.

Instance norm normalises each channel over the *whole* image, so a tile run alone gets other
statistics than the same pixels inside the full image (the seams of naive tiling). Here every
normalisation layer's per-channel statistics are gathered over the whole image first (sum and sum
of squares in float64, tile by tile) and only then applied, and each tile is computed on a region
grown by the receptive field of the layers between two normalisations (its halo): inside the image
a tile sees its real neighbours, at the image edge the padding of the one-pass run (reflect or
zeros). Batch norm in eval mode is already pointwise: it tiles with halos alone.

What runs where (docs/usage-translate-compare.md, "Large images"):

- **Encoder** (stem, two stride-2 convs), in tiles: one pass over the image per norm layer, each
  recomputing the cheap full- and half-resolution layers before it; the last pass keeps the
  1/4-resolution conv output whole (16x fewer positions than the image, 4*ngf channels).
- **Residual blocks**, on that kept bottleneck (about 88% of the teacher's MACs, computed once):
  a second bottleneck-sized buffer holds the branch; convs run in row strips written back in place
  (only the halo rows above a strip are saved), norms gather statistics strip by strip.
- **Decoder** (two upsamplings, the 7x7 head), in tiles again: one pass per norm layer, read from
  the kept bottleneck; the last pass writes 8-bit tiles into the output image.

A generator with half-resolution ends (``GeneratorConfig.ends``) tiles the same way: its 2x2 pixel
shuffles are layers of known geometry too (``ops.Shuffle``), exact on any region of whole blocks.

Memory: two bottleneck buffers at the dtype the one-pass run holds activations in (bf16 under
autocast, else fp32), the 8-bit image in and out, and one tile's working set. When the budget
cannot hold the two buffers they live in unlinked temporary files read back in strips (the OS page
cache holds them while it has room), and the process keeps only a tile, a strip and a band of rows.
The tile plan is a pure function of (image size, generator config, bytes per element, budget):
:func:`plan_tiles`.

Precision: both runs normalise with a scale and shift from float64 sums (``nets.norm``): under
bf16/fp16 autocast the engine's one pass does so too (``nets.norm.float64_statistics``), so a tiled
run differs from it only where a convolution, run on another region, rounds one accumulator to the
other side of a bf16 step; in fp32 one pass keeps torch's kernel and the two differ by float
rounding only.

The parts: ``plan`` (the plan for one image, a pure function of size, architecture, precision and
budget), ``ops`` (the generator as layers of known geometry, run on regions), ``stores`` (where the
1/4-resolution activations live) and ``run`` (``TiledGenerator``, the passes). Whether an image
tiles at all, and on which engine, is translate's policy (``cgdistill.policy``).
"""
