"""The image input space as an object (pipeline/inputs/space.py): augmented views, mixups and smooth
noise around the seed images (pipeline/inputs/images.py), stored uint8 [C, H, W], decoded ÷ 255,
shown as thumbnails; active rounds warp and blend the worst rows and may rank generated inputs."""

from __future__ import annotations

import numpy as np

from pipeline.inputs import image_recipes, images
from pipeline.inputs.space import InputSpace, register_space


class ImageSpace(InputSpace):
    name = images.NAME
    stored_item_bytes = 1
    # The exported student takes float images (÷ 255), as the teacher does: what a server feeds a model.
    exported_takes_stored = False
    uses_seed_images = True
    ranks_generated_inputs = True

    def seed_images(self, cfg) -> np.ndarray:
        from pipeline.inputs.seeds import load_seed

        return load_seed(cfg).train_images

    stores_recipes = True

    def generation(self, cfg, seed_images, split: str, seed: int, count: int, index: int, recipes: bool = False):
        return (images.generate_recipes if recipes else images.generate_inputs), (seed_images, cfg.data, seed, count)

    def remake(self, recipes: np.ndarray, seed_images: np.ndarray) -> np.ndarray:
        return image_recipes.render(recipes, seed_images)

    def recipe_libraries(self) -> dict[str, str]:
        return image_recipes.library_versions()

    def decode_module(self, shape, parameters):
        return images.ImageDecode(shape)

    def numpy_decoder(self, shape):
        return lambda stored: images.decode_numpy(stored, shape)

    def thumbnail(self, x: np.ndarray) -> bytes:
        return images.thumbnail(x)

    def propose_around(self, cfg, worst, sample_ids, teacher_classes, count, round_, seed):
        from pipeline.inputs.proposals import propose_images

        return propose_images(worst, sample_ids, teacher_classes, count, cfg.adapt, cfg.data, round_, seed)


IMAGES = register_space(ImageSpace())
