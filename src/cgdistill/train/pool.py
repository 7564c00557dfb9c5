"""The image history pool (Shrivastava et al., 2017) that CycleGAN feeds its discriminators from."""

from __future__ import annotations

import torch


class ImagePool:
    """Keeps up to ``size`` generated images; each query returns, per image, either it or (half the
    time, once full) a stored older one that it replaces. Randomness comes from the pool's own
    generator so that a resumed run draws the same choices."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(1, generator=self.generator).item() > 0.5:
                index = int(torch.randint(0, self.size, (1,), generator=self.generator).item())
                out.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The pool as named CPU tensors (stored images and RNG state) for a checkpoint."""
        tensors = {f"{prefix}.rng": self.generator.get_state()}
        if self.images:
            tensors[f"{prefix}.images"] = torch.cat(self.images, 0).to("cpu", torch.float32).contiguous()
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], prefix: str, device: torch.device) -> None:
        self.generator.set_state(tensors[f"{prefix}.rng"])
        stored = tensors.get(f"{prefix}.images")
        self.images = [] if stored is None else [img.unsqueeze(0).to(device) for img in stored]
